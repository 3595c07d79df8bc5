#!/usr/bin/env bash
# Alternating A/B of harness binaries on one model: each round runs every binary in turn
# through `harness profile` and prints sequences/s per shape, so slow drifts of this shared
# machine hit every binary alike (issue 6; BENCHMARKS.md).
#
#   scripts/ab-profile.sh MODEL ROUNDS BATCHES BINARY...
#   scripts/ab-profile.sh target/bench-vs-ort/bert-base 3 1,8 /tmp/harness-old target/release/harness
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n 2,7p "$0"; exit 2; }
model=$1 rounds=$2 batches=$3
shift 3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for _ in $(seq "$rounds"); do
    for bin in "$@"; do
        "$bin" profile --model "$model" --batch-sizes "$batches" --seq-lens 128 \
            --min-iterations 5 --min-time-s 3 --out "$out" --quiet >/dev/null
        python3 - "$out/profile.json" "$bin" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
points = doc["models"][0]["points"]
print(sys.argv[2], " | ".join(f'{p["batch_size"]}x{p["seq_len"]} {p["sequences_per_s"]:.2f}' for p in points))
PY
    done
done
