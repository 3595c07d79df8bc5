#!/usr/bin/env bash
# distill-harness on Slurm: a job array runs one shard per array task (`--shard auto` reads
# SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT) into its own
# folder on a shared file system; a dependent job merges them when every task has ended.
#
#   sbatch deploy/slurm/harness-array.sh            # submits the array and the merge
#
# Settings (environment): TEACHER, STUDENT, TASKS, DATA_DIR, RESULTS (shared folder),
# HARNESS (the binary), SHARDS (array size). HF_TOKEN is passed through when set.
#SBATCH --job-name=distill-harness
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=06:00:00
#SBATCH --output=distill-harness-%A_%a.out
set -euo pipefail

TEACHER=${TEACHER:-bert-base}
STUDENT=${STUDENT:-distilbert}
TASKS=${TASKS:-sst2,mrpc,stsb,qnli,rte}
DATA_DIR=${DATA_DIR:-$HOME/data/glue}
RESULTS=${RESULTS:-$HOME/distill-harness-results}
HARNESS=${HARNESS:-harness}
SHARDS=${SHARDS:-3}
export HARNESS_HUB_RETRIES=${HARNESS_HUB_RETRIES:-5}

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # Not inside the array yet: submit it, and the merge after it.
  mkdir -p "$RESULTS"
  array=$(sbatch --parsable --array=0-$((SHARDS - 1)) --export=ALL "$0")
  sbatch --dependency=afterany:"$array" --job-name=distill-harness-merge --export=ALL \
    --wrap="$HARNESS merge $RESULTS/shards/shard-* --out $RESULTS/merged"
  echo "submitted array $array ($SHARDS shards) and its merge; reports in $RESULTS/merged"
  exit 0
fi

"$HARNESS" run --teacher "$TEACHER" --student "$STUDENT" --task "$TASKS" --data-dir "$DATA_DIR" \
  --shard auto --out "$RESULTS/shards/shard-$SLURM_ARRAY_TASK_ID"
