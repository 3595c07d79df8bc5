#!/usr/bin/env python3
"""ONNX Runtime's MatMul on one product's shape, timed as `examples/f32_gemm_timing` times the
harness's packed GEMM: median and best GFLOP/s over a fixed wall time (issue 16).

    scripts/ort-matmul.py M K N [--threads 2] [--seconds 2]

Needs numpy, onnx and onnxruntime (e.g. PYTHON of scripts/bench-vs-ort.sh).
"""
import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("m", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((a.k, a.n)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [a.m, a.k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [a.m, a.n])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((a.m, a.k)).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"x": x})
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        t = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    times.sort()
    gflop = 2 * a.m * a.k * a.n / 1e9
    print(f"ORT {a.m} x {a.k} -> {a.n}, {a.threads} threads: median {gflop / times[len(times) // 2]:.1f} "
          f"GFLOP/s, best {gflop / times[0]:.1f} ({len(times)} calls)")


if __name__ == "__main__":
    main()
