"""The harness's engine (candle) against ONNX Runtime on the same random-weight BERT-base and
DistilBERT, f32, 2 threads, same shapes (issue 6). Called by scripts/bench-vs-ort.sh.

1. Random weights (numpy, seeded) in Hugging Face tensor names -> one model.safetensors per model,
   with config.json and a placeholder vocab.txt, so `harness profile --model DIR` loads them.
2. The same weights as an ONNX graph built with onnx.helper (no torch): embeddings, then per layer
   Q/K/V projections, scaled dot-product attention with the padding mask, output projection,
   LayerNormalization, GELU (erf) feed-forward. Input: input_ids and attention_mask (int64);
   output: the last hidden states.
3. Rounds alternate ONNX Runtime (intra-op threads = 2, all graph optimisations) and
   `harness profile` over every shape; each side reports its median latency per shape; the
   script prints sequences/s per side (medians over rounds) and the median over rounds of
   candle / ORT with its range; the two sides take turns to run first.
4. With --ort-int8, ONNX Runtime's own int8 model runs in the same rounds: the f32 graph through
   onnxruntime.quantization.quantize_dynamic (int8 weights per tensor, activations quantized
   per call, MatMulInteger / DynamicQuantizeMatMul kernels), what ORT users deploy for a
   quantized CPU model; the table gains its speed and candle / ORT int8.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def random_bert(cfg, rng, distil):
    """Tensors named as transformers' BertModel / DistilBertModel save them."""
    h, inner, vocab = (cfg["dim"], cfg["hidden_dim"], cfg["vocab_size"]) if distil else (
        cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"])
    layers = cfg["n_layers"] if distil else cfg["num_hidden_layers"]
    w = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)
    ones = lambda n: np.ones(n, np.float32)
    zeros = lambda n: np.zeros(n, np.float32)
    t = {}
    if distil:
        t["embeddings.word_embeddings.weight"] = w(vocab, h)
        t["embeddings.position_embeddings.weight"] = w(cfg["max_position_embeddings"], h)
        t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"] = ones(h), zeros(h)
        for i in range(layers):
            p = f"transformer.layer.{i}."
            for n in ["q_lin", "k_lin", "v_lin", "out_lin"]:
                t[p + f"attention.{n}.weight"], t[p + f"attention.{n}.bias"] = w(h, h), w(h)
            t[p + "sa_layer_norm.weight"], t[p + "sa_layer_norm.bias"] = ones(h), zeros(h)
            t[p + "ffn.lin1.weight"], t[p + "ffn.lin1.bias"] = w(inner, h), w(inner)
            t[p + "ffn.lin2.weight"], t[p + "ffn.lin2.bias"] = w(h, inner), w(h)
            t[p + "output_layer_norm.weight"], t[p + "output_layer_norm.bias"] = ones(h), zeros(h)
    else:
        t["embeddings.word_embeddings.weight"] = w(vocab, h)
        t["embeddings.position_embeddings.weight"] = w(cfg["max_position_embeddings"], h)
        t["embeddings.token_type_embeddings.weight"] = w(cfg["type_vocab_size"], h)
        t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"] = ones(h), zeros(h)
        for i in range(layers):
            p = f"encoder.layer.{i}."
            for n in ["query", "key", "value"]:
                t[p + f"attention.self.{n}.weight"], t[p + f"attention.self.{n}.bias"] = w(h, h), w(h)
            t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"] = w(h, h), w(h)
            t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"] = ones(h), zeros(h)
            t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = w(inner, h), w(inner)
            t[p + "output.dense.weight"], t[p + "output.dense.bias"] = w(h, inner), w(h)
            t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"] = ones(h), zeros(h)
    return t, h, inner, layers


def onnx_graph(t, cfg, h, layers, heads, distil, eps):
    """The encoder as an ONNX graph (opset 20) over the same tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(kind, inputs, **attrs):
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(x, wname, bname):
        # x @ W^T + b with W stored (out, in): transpose once, at export.
        return op("Add", [op("MatMul", [x, const(t[wname].T.copy())]), const(t[bname])])

    def layer_norm(x, wname, bname):
        return op("LayerNormalization", [x, const(t[wname]), const(t[bname])], axis=-1, epsilon=eps)

    ids, mask = "input_ids", "attention_mask"
    seq = op("Gather", [op("Shape", [ids]), const(np.array(1, np.int64))], axis=0)
    positions = op("Range", [const(np.array(0, np.int64)), seq, const(np.array(1, np.int64))])
    x = op("Add", [op("Gather", [const(t["embeddings.word_embeddings.weight"]), ids]),
                   op("Gather", [const(t["embeddings.position_embeddings.weight"]), positions])])
    if not distil:
        x = op("Add", [x, const(t["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")
    # (1 - mask) * -1e9 as (batch, 1, 1, seq).
    maskf = op("Cast", [mask], to=TensorProto.FLOAT)
    bias = op("Mul", [op("Sub", [const(np.array(1.0, np.float32)), maskf]), const(np.array(-1e9, np.float32))])
    bias = op("Unsqueeze", [bias, const(np.array([1, 2], np.int64))])
    d = h // heads
    split_shape = const(np.array([0, 0, heads, d], np.int64))
    merge_shape = const(np.array([0, 0, h], np.int64))
    scale = const(np.array(1.0 / np.sqrt(d), np.float32))
    for i in range(layers):
        if distil:
            p = f"transformer.layer.{i}."
            q, k, v, o = (p + f"attention.{n}" for n in ["q_lin", "k_lin", "v_lin", "out_lin"])
            ln1, ff1, ff2, ln2 = p + "sa_layer_norm", p + "ffn.lin1", p + "ffn.lin2", p + "output_layer_norm"
        else:
            p = f"encoder.layer.{i}."
            q, k, v = (p + f"attention.self.{n}" for n in ["query", "key", "value"])
            o, ln1 = p + "attention.output.dense", p + "attention.output.LayerNorm"
            ff1, ff2, ln2 = p + "intermediate.dense", p + "output.dense", p + "output.LayerNorm"
        heads_of = lambda y: op("Transpose", [op("Reshape", [y, split_shape])], perm=[0, 2, 1, 3])
        qh = heads_of(linear(x, q + ".weight", q + ".bias"))
        kt = op("Transpose", [op("Reshape", [linear(x, k + ".weight", k + ".bias"), split_shape])], perm=[0, 2, 3, 1])
        vh = heads_of(linear(x, v + ".weight", v + ".bias"))
        scores = op("Add", [op("Mul", [op("MatMul", [qh, kt]), scale]), bias])
        ctx = op("MatMul", [op("Softmax", [scores], axis=-1), vh])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(op("Add", [linear(ctx, o + ".weight", o + ".bias"), x]), ln1 + ".weight", ln1 + ".bias")
        inner = op("Gelu", [linear(x, ff1 + ".weight", ff1 + ".bias")])
        x = layer_norm(op("Add", [linear(inner, ff2 + ".weight", ff2 + ".bias"), x]), ln2 + ".weight", ln2 + ".bias")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", h])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=False)
    return model


def export(kind, out_dir, seed):
    from safetensors.numpy import save_file
    import onnx

    src = os.path.join(ROOT, "harness", "configs",
                       "distilbert-base-uncased.json" if kind == "distilbert" else "bert-base-uncased.json")
    cfg = json.load(open(src))
    distil = kind == "distilbert"
    rng = np.random.default_rng(seed)
    t, h, inner, layers = random_bert(cfg, rng, distil)
    d = os.path.join(out_dir, kind)
    os.makedirs(d, exist_ok=True)
    save_file(t, os.path.join(d, "model.safetensors"))
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        for i in range(cfg["vocab_size"]):
            f.write((specials[i] if i < len(specials) else f"tok{i}") + "\n")
    heads = cfg["n_heads"] if distil else cfg["num_attention_heads"]
    eps = 1e-12
    model = onnx_graph(t, cfg, h, layers, heads, distil, eps)
    onnx.save(model, os.path.join(d, "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data")
    return d, cfg


def ort_int8_model(d):
    """ONNX Runtime's dynamic int8 quantization of d/model.onnx, made once."""
    out = os.path.join(d, "model-int8.onnx")
    if not os.path.exists(out):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(os.path.join(d, "model.onnx"), out, weight_type=QuantType.QInt8)
    return out


def ort_medians(d, shapes, iters, threads, seed, model="model.onnx"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(os.path.join(d, model), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out = {}
    for b, s in shapes:
        ids = rng.integers(1000, 30000, (b, s), dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones((b, s), np.int64)}
        sess.run(None, feed)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        out[(b, s)] = float(np.median(times))
    return out


def harness_medians(binary, d, shapes, iters, prof_dir, quantize=None):
    batches = sorted({b for b, _ in shapes})
    seqs = sorted({s for _, s in shapes})
    quant = ["--quantize", quantize] if quantize else []
    subprocess.run([binary, "profile", "--model", d, "--batch-sizes", ",".join(map(str, batches)),
                    "--seq-lens", ",".join(map(str, seqs)), "--min-iterations", str(iters),
                    "--min-time-s", "0", "--warmup", "1", "--out", prof_dir, "--quiet"] + quant,
                   check=True, stdout=subprocess.DEVNULL)
    doc = json.load(open(os.path.join(prof_dir, "profile.json")))
    return {(p["batch_size"], p["seq_len"]): p["latency_ms"]["p50"] / 1e3
            for p in doc["models"][0]["points"]}


def check_against_transformers(d, kind):
    """The ONNX graph must be the model the harness runs: when transformers is installed,
    compare ORT's hidden states with transformers' on the same safetensors (the harness
    matches transformers by its parity tests). Skipped, and said so, without transformers."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError:
        print(f"(not checked: {kind}'s ONNX graph against transformers; pip install torch transformers)")
        return
    import onnxruntime as ort

    model = AutoModel.from_pretrained(d).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (2, 16), dtype=np.int64)
    mask = np.ones((2, 16), np.int64)
    mask[1, 10:] = 0
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    sess = ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    diff = float(np.abs((got - want) * mask[:, :, None]).max())
    assert diff < 1e-3, f"{kind}: ONNX graph differs from transformers by {diff}"
    print(f"({kind}: ONNX graph matches transformers, max |diff| {diff:.1e})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", required=True)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-vs-ort"))
    ap.add_argument("--models", default="bert-base,distilbert")
    ap.add_argument("--shapes", default="1x128,8x128,32x128")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantize", help="profile the harness side with its linear layers in this "
                    "block format (q8_0, ...); ONNX Runtime stays f32")
    ap.add_argument("--ort-int8", action="store_true", help="also run ONNX Runtime's dynamic "
                    "int8 quantization of the same graph")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    side = f"candle {args.quantize}" if args.quantize else "candle"
    head = f"| model | batch x seq | {side} (seq/s) | ONNX Runtime f32 (seq/s) | candle / ORT |"
    rule = "|---|---|---:|---:|---:|"
    if args.ort_int8:
        head += " ONNX Runtime int8 (seq/s) | candle / ORT int8 |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for kind in args.models.split(","):
        d, _ = export(kind, args.work, seed=7)
        check_against_transformers(d, kind)
        int8 = ort_int8_model(d) if args.ort_int8 else None
        ratios = {s: [] for s in shapes}
        cand = {s: [] for s in shapes}
        orts = {s: [] for s in shapes}
        orts8 = {s: [] for s in shapes}
        ratios8 = {s: [] for s in shapes}
        for r in range(args.rounds):
            # Alternate which side runs first, so that a drift of the host's speed within a
            # round does not always favour the same side.
            harness = lambda: harness_medians(args.harness, d, shapes, args.iters,
                                              os.path.join(d, f"profile-{r}"), args.quantize)
            if r % 2 == 1:
                c = harness()
            o = ort_medians(d, shapes, args.iters, args.threads, seed=r)
            o8 = ort_medians(d, shapes, args.iters, args.threads, r, int8) if int8 else {}
            if r % 2 == 0:
                c = harness()
            for s in shapes:
                cand[s].append(s[0] / c[s])
                orts[s].append(s[0] / o[s])
                ratios[s].append(o[s] / c[s])
                if int8:
                    orts8[s].append(s[0] / o8[s])
                    ratios8[s].append(o8[s] / c[s])
        # Each figure is the median over rounds; a ratio also gives its range over rounds
        # ([min-max]), so that a difference can be told from the host's noise.
        def ratio(values):
            return f"{np.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"
        for s in shapes:
            row = (f"| {kind} | {s[0]} x {s[1]} | {np.median(cand[s]):.2f} | {np.median(orts[s]):.2f} | "
                   f"{ratio(ratios[s])} |")
            if int8:
                row += f" {np.median(orts8[s]):.2f} | {ratio(ratios8[s])} |"
            print(row, flush=True)


if __name__ == "__main__":
    sys.exit(main())
