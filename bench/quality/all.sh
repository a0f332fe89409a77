#!/usr/bin/env bash
# The one command behind docs/RESULTS.md: trains every model of its tables at
# the budgets stated there, scores them through the runtime and rewrites the
# page's generated part, its grids and its plots.
#
#   bash bench/quality/all.sh        # hours on a 2-core CPU; re-run to resume
#
# Everything is resumable: finished runs (their log says "done:"), measured
# xvar tables and rows already in docs/results/results.jsonl are skipped, so a
# run interrupted by the end of a session continues where it stopped. The
# budgets (env, with the values of the published rows):
#   Fashion-MNIST teacher 1100 x 32, emoji teacher 1000 x 32 (lr 5e-4, warm-up 50);
#   Fashion-MNIST students 400 x 16 (PD: 100 x 16 per halving), emoji students
#   250 x 16 (lr 2e-4, warm-up 20, EMA 0.99); N = 500 (Fashion-MNIST) and
#   200 (emoji) samples per row.
set -euo pipefail
cd "$(dirname "$0")/../.."

TRAIN=${TRAIN:-target/release/fewstep-train}
RUNS=${RUNS:-runs/quality}
EMOJI=${EMOJI:-data/emoji}
JOBS=${JOBS:-$(nproc)}
export TRAIN RUNS EMOJI JOBS

[ -x "$TRAIN" ] || cargo build --release -p fewstep-trainer
[ -d "$EMOJI" ] || python3 scripts/emoji_dataset.py --out "$EMOJI"

student_opts="--lr 2e-4 --warmup 20 --ema-decay 0.99"
BATCH=32 TEACHER_STEPS=${TEACHER_STEPS:-1100} EMOJI_TEACHER_STEPS=${EMOJI_TEACHER_STEPS:-1000} \
  TEACHER_OPTS="--lr 5e-4 --warmup 50" SAMPLE_EVERY=250 PHASES=teachers \
  ONLY='^(fmnist|emoji)-teacher' bash bench/quality/train.sh
BATCH=16 DISTILL_STEPS=${DISTILL_STEPS:-400} SAMPLE_EVERY=100 STUDENT_OPTS="$student_opts" \
  PHASES=students ONLY='^fmnist-' bash bench/quality/train.sh
BATCH=16 DISTILL_STEPS=${EMOJI_DISTILL_STEPS:-250} SAMPLE_EVERY=125 STUDENT_OPTS="$student_opts" \
  PHASES="students export" ONLY='^emoji-' bash bench/quality/train.sh

# One row at a time per core, one runtime thread each.
N=${N:-500} ONLY=fmnist DOC=docs bash bench/quality/eval.sh
N=${EMOJI_N:-200} ONLY=emoji DOC=docs bash bench/quality/eval.sh
