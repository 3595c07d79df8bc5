#!/usr/bin/env bash
# The nightly regression run, locally: local model folders and --data-dir instead of the Hub.
# Scores teacher and student, writes the reports, compares against the baseline and exits as
# `harness compare` does: 0 no regression, 1 regression, 2 error.
#
#   scripts/nightly.sh                    # the shared MiniLM pair on STS-B and SST-2
#   SEED_REGRESSION=1 scripts/nightly.sh  # cripple the student (inputs cut to 8 tokens): the gate must trip
#
# Settings (environment): TEACHER, STUDENT, TASKS, DATA_DIR, OUT, BASELINE, EXTRA (more `run` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER=${TEACHER:-../shared/models/all-MiniLM-L6-v2}
STUDENT=${STUDENT:-../shared/models/paraphrase-MiniLM-L3-v2}
TASKS=${TASKS:-stsb,sst2}
DATA_DIR=${DATA_DIR:-../shared/data/glue}
OUT=${OUT:-nightly-results}
BASELINE=${BASELINE:-baselines/minilm-l6-vs-l3.json}
EXTRA=${EXTRA:-}

if [ "${SEED_REGRESSION:-0}" = "1" ]; then
  # A real regression, not an edited file: both models see only the first 8 tokens.
  EXTRA="$EXTRA --max-length 8"
  OUT="$OUT-seeded"
fi

cargo build --release -p harness --quiet
HARNESS=target/release/harness

# shellcheck disable=SC2086
"$HARNESS" run --teacher "$TEACHER" --student "$STUDENT" --task "$TASKS" --data-dir "$DATA_DIR" --out "$OUT" $EXTRA
"$HARNESS" report "$OUT/results.json" --format md,html,csv,json > /dev/null

set +e
"$HARNESS" compare --baseline "$BASELINE" --current "$OUT/results.json" | tee "$OUT/compare.md"
status=${PIPESTATUS[0]}
set -e
case $status in
  0) echo "nightly: no regression" ;;
  1) echo "nightly: REGRESSION against $BASELINE" ;;
  *) echo "nightly: compare failed (exit $status)" ;;
esac
exit "$status"
