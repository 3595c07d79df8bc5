#!/usr/bin/env bash
# The seven LLM accuracy tasks on every example (issue 17's full run), SmolLM2-135M-Instruct
# dequantized (teacher) against its Q4_1 GGUF (student), as shards of one plan that several
# sessions or machines can share, then merged strictly.
#
#   scripts/llm-full-run.sh run I [I ...]   # run these shards (0-based, of $SHARDS)
#   scripts/llm-full-run.sh merge           # merge every shard folder into $OUT/merged
#
# Every shard of one plan must come from the same commit (`harness merge` refuses others), so
# the harness is built at $COMMIT in a worktree of its own (target/full-run-$COMMIT), whatever
# main holds now; run it from the repository root, where the model path is the same for every
# shard. Shard folders land in $OUT/shard-I with the `/usr/bin/time -v` figures beside them;
# `pack` writes bench/llm-full-run/shard-I.tar.gz for a commit, `unpack` restores them.
#
#   COMMIT   the commit every shard is built from (default: the one the first shards used)
#   SHARDS   how many shards the plan is cut into (default 6: MMLU's two cells alone, the
#            other tasks' teacher and student cells in two shards each)
#   OUT      where shard folders go (default target/llm-full-run)
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=${COMMIT:-7614e8270bcb774ec437dfc7715d6d5863eb14b3}
SHARDS=${SHARDS:-6}
OUT=${OUT:-target/llm-full-run}
PACKED=bench/llm-full-run
MODEL=target/models/SmolLM2-135M-Instruct-Q4_1
TASKS=arc_easy,arc_challenge,piqa,winogrande,boolq,lambada_openai,mmlu

build() {
  local tree=target/full-run-$COMMIT
  if [ ! -x "$tree/target/release/harness" ]; then
    [ -d "$tree" ] || git worktree add --detach "$tree" "$COMMIT" >&2
    (cd "$tree" && cargo build --release --locked -p harness >&2)
  fi
  echo "$tree/target/release/harness"
}

case "${1:-}" in
  run)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 run I [I ...]" >&2; exit 2; }
    scripts/fetch-smollm2.sh >/dev/null
    bin=$(build)
    mkdir -p "$OUT"
    echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o 'avx512[a-z_0-9]*\|avx_vnni\|avx2\|fma' /proc/cpuinfo | sort -u | xargs)" >&2
    for i in "$@"; do
      echo "shard $i/$SHARDS from $(date -u +%FT%TZ)" >&2
      /usr/bin/time -v -o "$OUT/shard-$i.time" "$bin" run --teacher "$MODEL" --dequantize-teacher \
        --student "$MODEL" --task "$TASKS" --data-dir ../shared/data \
        --shard "$i/$SHARDS" --out "$OUT/shard-$i" --quiet >"$OUT/shard-$i.stdout"
      echo "shard $i/$SHARDS done $(date -u +%FT%TZ)" >&2
    done
    ;;
  pack)
    mkdir -p "$PACKED"
    for d in "$OUT"/shard-*/; do
      i=$(basename "$d"); i=${i#shard-}
      [ -f "$d/results.json" ] || continue
      tar -czf "$PACKED/shard-$i.tar.gz" -C "$OUT" "shard-$i" "shard-$i.time" "shard-$i.stdout"
      echo "$PACKED/shard-$i.tar.gz"
    done
    ;;
  unpack)
    mkdir -p "$OUT"
    for t in "$PACKED"/shard-*.tar.gz; do tar -xzf "$t" -C "$OUT"; done
    ls "$OUT"
    ;;
  merge)
    bin=$(build)
    "$bin" merge "$OUT"/shard-*/ --out "$OUT/merged" ${MERGE_FLAGS:-}
    ;;
  *)
    sed -n 2,19p "$0" >&2
    exit 2
    ;;
esac
