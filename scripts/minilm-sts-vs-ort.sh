#!/usr/bin/env bash
# The harness against ONNX Runtime on real models and real data (issue 16): all-MiniLM-L6-v2 and
# paraphrase-MiniLM-L3-v2 on the STS-B dev set, batch-1 pass end to end and batch-32 throughput,
# 2 threads, f32. The ONNX Runtime side is scripts/minilm_sts_vs_ort.py (graph built from each
# checkpoint's safetensors, tokenizers, mean pooling, cosine in numpy; its Spearman must equal
# the harness's); the harness side is one `harness run` of the pair on stsb. Needs ../shared.
# Python: numpy, safetensors, onnx, onnxruntime, tokenizers (a venv in target/bench-venv when
# PYTHON is not given).
#
#   scripts/minilm-sts-vs-ort.sh [--threads 2] [--rounds 1]
#
# With --rounds N the two sides alternate N times (ORT first in odd rounds, the harness first in
# even ones, so that a VM slowing down for a few minutes does not land on one side only); each
# round's table is printed, then per model the median of the rounds' ratios with their range.
#
# HARNESS=path/to/harness runs that binary instead of building this tree (another commit's,
# for a before/after on the same host).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2
ROUNDS=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) echo "unknown option $1 (use --threads N, --rounds N)" >&2; exit 2 ;;
    esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive whole number, got '$ROUNDS'" >&2; exit 2; }
if [[ -z "${PYTHON:-}" ]]; then
    if [[ ! -x target/bench-venv/bin/python ]]; then
        python3 -m venv target/bench-venv
    fi
    target/bench-venv/bin/pip install -q numpy safetensors onnx onnxruntime tokenizers
    PYTHON=target/bench-venv/bin/python
fi
if [[ -z "${HARNESS:-}" ]]; then
    cargo build --release -p harness
    HARNESS=target/release/harness
fi
W=target/minilm-vs-ort
mkdir -p "$W"
L6=../shared/models/all-MiniLM-L6-v2
L3=../shared/models/paraphrase-MiniLM-L3-v2
DATA=../shared/data/glue
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -ow 'avx2\|fma\|avx512[a-z_0-9]*\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')${AVX2_ONLY:+ (hidden by scripts/avx2-only.sh: AVX-512$([[ $AVX2_ONLY == avx2 ]] && echo ' and AVX-VNNI'); both sides at ${AVX2_ONLY^^})}" >&2
ort() {
    for m in "$L6" "$L3"; do
        "$PYTHON" scripts/minilm_sts_vs_ort.py --model "$m" --data "$DATA/STS-B/dev.tsv" \
            --threads "$THREADS" --json "$1/ort-$(basename "$m").json" >/dev/null
    done
}
harness() {
    rm -rf "$1/harness"
    RAYON_NUM_THREADS="$THREADS" "$HARNESS" run --teacher "$L6" --student "$L3" --task stsb \
        --data-dir "$DATA" --out "$1/harness" --quiet >/dev/null
}
rm -rf "$W"/round-*
for r in $(seq 1 "$ROUNDS"); do
    R="$W/round-$r"
    mkdir -p "$R"
    if (( r % 2 == 1 )); then ort "$R"; harness "$R"; else harness "$R"; ort "$R"; fi
done
"$PYTHON" - "$W" "$ROUNDS" <<'PY'
import json, os, statistics, sys
w, rounds = sys.argv[1], int(sys.argv[2])
ratios = {}
for rnd in range(1, rounds + 1):
    d = os.path.join(w, f"round-{rnd}")
    r = json.load(open(os.path.join(d, "harness", "results.json")))["tasks"]["stsb"]
    if rounds > 1:
        print(f"\nround {rnd} ({'ORT' if rnd % 2 else 'harness'} first):\n")
    print("| model | spearman harness / ORT | batch-1 pass harness / ORT (s) | ORT / harness | batch-32 pairs/s harness / ORT | harness / ORT | peak RSS harness / ORT (MiB) |")
    print("|---|---|---|---:|---|---:|---|")
    for role in ["teacher", "student"]:
        cell = r[role]
        name = os.path.basename(cell["checkpoint"]["resolved"].rstrip("/"))
        o = json.load(open(os.path.join(d, f"ort-{name}.json")))
        p = cell["profile"]
        laps = p.get("throughput_laps_per_s") or [p["throughput_per_s"]]
        b1 = o["batch1_pass_s"] / p["batch1_pass_s"]
        b32 = p["throughput_per_s"] / o["batch32_pairs_per_s_median"]
        ratios.setdefault(name, []).append((b1, b32))
        print(f"| {name} | {cell['metrics']['spearman']:.4f} / {o['spearman_batch1']:.4f} "
              f"| {p['batch1_pass_s']:.1f} / {o['batch1_pass_s']:.1f} | {b1:.2f} "
              f"| {p['throughput_per_s']:.0f} (laps {min(laps):.0f}-{max(laps):.0f}) / {o['batch32_pairs_per_s_median']:.0f} "
              f"(laps {min(o['batch32_pairs_per_s_laps']):.0f}-{max(o['batch32_pairs_per_s_laps']):.0f}) "
              f"| {b32:.2f} "
              f"| {p['peak_rss_bytes'] / 2**20:.0f} / {o['peak_rss_mib']:.0f} |")
if rounds > 1:
    print(f"\nmedian of {rounds} rounds [range]:\n")
    print("| model | batch-1 pass ORT / harness | batch-32 throughput harness / ORT |")
    print("|---|---:|---:|")
    for name, rs in ratios.items():
        b1 = [x for x, _ in rs]
        b32 = [y for _, y in rs]
        print(f"| {name} | {statistics.median(b1):.2f} [{min(b1):.2f}-{max(b1):.2f}] "
              f"| {statistics.median(b32):.2f} [{min(b32):.2f}-{max(b32):.2f}] |")
PY
