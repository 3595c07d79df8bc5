#!/usr/bin/env bash
# candle (the harness's engine) against ONNX Runtime on random-weight BERT-base and DistilBERT,
# f32, 2 threads, shapes 1x128, 8x128, 32x128; alternating rounds, median ratio per shape
# (issue 6). Needs Python 3 with numpy, safetensors, onnx and onnxruntime (a venv is made in
# target/bench-venv when PYTHON is not given); torch + transformers, when present, check that
# the ONNX graph is the same model.
#
#   scripts/bench-vs-ort.sh [--shapes 1x128,8x128,32x128] [--rounds 3] [--models bert-base,distilbert]
#                           [--quantize q8_0]   (the harness side quantized; ORT stays f32)
#                           [--ort-int8]        (also ORT's own dynamic int8 model)
#
# HARNESS=path/to/harness runs that binary instead of building this tree (another commit's,
# for a before/after on the same host).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ ! -x target/bench-venv/bin/python ]]; then
        python3 -m venv target/bench-venv
        target/bench-venv/bin/pip install -q numpy safetensors onnx onnxruntime
    fi
    PYTHON=target/bench-venv/bin/python
fi
if [[ -z "${HARNESS:-}" ]]; then
    cargo build --release -p harness
    HARNESS=target/release/harness
fi
# The host's CPU and the flags that choose the kernels, for the record next to the table.
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -ow 'avx2\|fma\|avx512[a-z_0-9]*\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')${AVX2_ONLY:+ (hidden by scripts/avx2-only.sh: AVX-512$([[ $AVX2_ONLY == avx2 ]] && echo ' and AVX-VNNI'); both sides at ${AVX2_ONLY^^})}" >&2
exec "$PYTHON" scripts/bench_vs_ort.py --harness "$HARNESS" "$@"
