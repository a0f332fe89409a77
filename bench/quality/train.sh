#!/usr/bin/env bash
# Trains every model of docs/RESULTS.md: the Fashion-MNIST teacher and its
# students (CD and CT at T = 1..16, progressive distillation, the two
# ablations), the emoji teacher and its CD students, and the shipped model
# (a larger teacher and its 4-step CD student). Then exports each run to ONNX.
#
#   TRAIN=target/release/fewstep-train BACKEND=flex RUNS=runs/quality \
#     bash bench/quality/train.sh            # CPU (resumable: re-run to continue)
#   BACKEND=cuda ... bash bench/quality/train.sh   # a CUDA build (--features cuda)
#
# Budgets are optimiser steps (env below); every comparison in the table uses
# the same batch and the same number of steps (PD: DISTILL_STEPS/4 per stage, so
# its 4-step student has the same total as CD/CT at T = 4). Phases run their
# jobs concurrently, JOBS at a time (the CPU backend uses about one core per
# job; PARALLEL=0 runs them one after another). STUDENT_OPTS are passed to every
# student run (CD, CT, PD), e.g. "--lr 2e-4 --warmup 20 --ema-decay 0.99";
# TEACHER_OPTS to every teacher, e.g. "--lr 5e-4 --warmup 50".
# ONLY (an extended regex) keeps the runs whose name matches it. Each run
# writes log.csv, loss.png, samples.png and a checkpoint; a finished run is
# skipped.
set -euo pipefail

TRAIN=${TRAIN:-target/release/fewstep-train}
BACKEND=${BACKEND:-flex}
RUNS=${RUNS:-runs/quality}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
EMOJI=${EMOJI:-data/emoji}
BATCH=${BATCH:-128}
TEACHER_STEPS=${TEACHER_STEPS:-6000}
DISTILL_STEPS=${DISTILL_STEPS:-2000}
EMOJI_TEACHER_STEPS=${EMOJI_TEACHER_STEPS:-$TEACHER_STEPS}
SHIP_TEACHER_STEPS=${SHIP_TEACHER_STEPS:-$TEACHER_STEPS}
SHIP_DISTILL_STEPS=${SHIP_DISTILL_STEPS:-$DISTILL_STEPS}
SAMPLE_EVERY=${SAMPLE_EVERY:-1000}
PARALLEL=${PARALLEL:-1}
JOBS=${JOBS:-$(nproc)}
ONLY=${ONLY:-}
read -r -a student_opts <<<"${STUDENT_OPTS:-}"
read -r -a teacher_opts <<<"${TEACHER_OPTS:-}"
PHASES=${PHASES:-"teachers students export"}
PD_STAGE_STEPS=$((DISTILL_STEPS / 4))

mkdir -p "$RUNS"
common=(--backend "$BACKEND" --batch "$BATCH" --sample-every "$SAMPLE_EVERY" --quiet)
pids=()
names=()

# run NAME ARGS...: one training job, logged to $RUNS/NAME.log; resumes a
# started run and skips a finished one (its log says "done:").
run() {
  local name=$1
  shift
  local log="$RUNS/$name.log"
  if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
    return
  fi
  if [ -f "$log" ] && grep -q '^done:' "$log"; then
    echo "skip $name (done)"
    return
  fi
  local resume=()
  [ -f "$RUNS/$name/checkpoint.fsck" ] && resume=(--resume)
  if [ "$PARALLEL" = 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
      wait -n || true
    done
  fi
  echo "start $name ($(date -u +%H:%M:%S)): $*"
  if [ "$PARALLEL" = 1 ]; then
    "$TRAIN" "$@" --out "$RUNS/$name" "${resume[@]}" >>"$log" 2>&1 &
    pids+=($!)
    names+=("$name")
  else
    "$TRAIN" "$@" --out "$RUNS/$name" "${resume[@]}" >>"$log" 2>&1 || echo "FAILED $name (see $log)"
  fi
}

# wait_all: waits for the phase's jobs and reports each one from its log (a
# finished run's log ends with "done:"; a failed one with its error).
wait_all() {
  wait || true
  local name
  for name in "${names[@]}"; do
    if grep -q '^done:' "$RUNS/$name.log"; then
      echo "ok $name: $(grep '^done:' "$RUNS/$name.log" | tail -n 1)"
    else
      echo "FAILED $name: $(tail -n 1 "$RUNS/$name.log")"
    fi
  done
  pids=()
  names=()
}

teachers() {
  run fmnist-teacher diffusion --data "$FMNIST" --preset tiny --class-cond \
    --steps "$TEACHER_STEPS" "${common[@]}" "${teacher_opts[@]}"
  run emoji-teacher diffusion --data "$EMOJI" --size 32 --channels 3 --preset tiny \
    --base-channels 16 --class-cond --steps "$EMOJI_TEACHER_STEPS" "${common[@]}" "${teacher_opts[@]}"
  run ship-teacher diffusion --data "$FMNIST" --preset small --class-cond \
    --steps "$SHIP_TEACHER_STEPS" "${common[@]}" "${teacher_opts[@]}"
  wait_all
  # The aDDIM xvar table of each teacher (exported as fewstep.addim_xvar),
  # measured once: its log says "stored".
  local t
  for t in fmnist-teacher emoji-teacher ship-teacher; do
    [ -n "$ONLY" ] && ! [[ $t =~ $ONLY ]] && continue
    grep -qs '^stored' "$RUNS/$t.xvar.log" && continue
    if [ -f "$RUNS/$t/checkpoint.fsck" ]; then
      "$TRAIN" xvar --ckpt "$RUNS/$t" >"$RUNS/$t.xvar.log" 2>&1 ||
        echo "FAILED xvar $t: $(tail -n 1 "$RUNS/$t.xvar.log")"
    fi
  done
  # aDDIM with less extra variance: copies of the Fashion-MNIST teacher whose
  # xvar table is eta * E||x_hat - x||^2 / d at eta 0.25 and 0.1 (the default
  # 0.75 adds a weak teacher's large error as variance; RESULTS.md compares).
  local e d
  for e in 0.25 0.1; do
    d="fmnist-teacher-xv$e"
    [ -n "$ONLY" ] && ! [[ $d =~ $ONLY ]] && continue
    [ -f "$RUNS/fmnist-teacher/checkpoint.fsck" ] || continue
    grep -qs '^stored' "$RUNS/$d.xvar.log" && continue
    mkdir -p "$RUNS/$d"
    cp "$RUNS/fmnist-teacher/checkpoint.fsck" "$RUNS/$d/"
    "$TRAIN" xvar --ckpt "$RUNS/$d" --xvar-frac "$e" >"$RUNS/$d.xvar.log" 2>&1 ||
      echo "FAILED xvar $d: $(tail -n 1 "$RUNS/$d.xvar.log")"
  done
}

students() {
  local T ft="$RUNS/fmnist-teacher"
  # Most informative first: the paper's CD targets (T = 8, 4), then the rest.
  for T in 8 4 2 1 16; do
    run "fmnist-cd$T" consistency --mode cd --student-steps "$T" --init "$ft" \
      --steps "$DISTILL_STEPS" "${common[@]}" "${student_opts[@]}"
  done
  run fmnist-pd progressive --init "$ft" --target-steps 1 --start-steps 64 \
    --stage-steps "$PD_STAGE_STEPS" "${common[@]}" "${student_opts[@]}"
  for T in 4 8 2 1 16; do
    run "fmnist-ct$T" consistency --mode ct --student-steps "$T" --init "$ft" \
      --steps "$DISTILL_STEPS" "${common[@]}" "${student_opts[@]}"
  done
  # Ablations at T = 4: a fixed teacher step count (paper Table 2) and a DDIM
  # teacher instead of aDDIM (paper Table 4).
  run fmnist-cd4-fixed128 consistency --mode cd --student-steps 4 --init "$ft" \
    --teacher-steps-fixed 128 --steps "$DISTILL_STEPS" "${common[@]}" "${student_opts[@]}"
  run fmnist-cd4-ddimteacher consistency --mode cd --student-steps 4 --init "$ft" \
    --teacher-sampler ddim --steps "$DISTILL_STEPS" "${common[@]}" "${student_opts[@]}"
  for T in 1 2 4 8; do
    run "emoji-cd$T" consistency --mode cd --student-steps "$T" --init "$RUNS/emoji-teacher" \
      --data "$EMOJI" --size 32 --channels 3 --steps "$DISTILL_STEPS" "${common[@]}" \
      "${student_opts[@]}"
  done
  run ship-cd4 consistency --mode cd --student-steps 4 --init "$RUNS/ship-teacher" \
    --steps "$SHIP_DISTILL_STEPS" "${common[@]}" "${student_opts[@]}"
  wait_all
}

export_all() {
  mkdir -p "$RUNS/onnx"
  local d name
  for d in "$RUNS"/*/; do
    name=$(basename "$d")
    [ "$name" = onnx ] && continue
    if [ -f "$d/checkpoint.fsck" ]; then
      "$TRAIN" export --ckpt "$d" --out "$RUNS/onnx/$name.onnx" >/dev/null ||
        echo "FAILED export $name"
    fi
    # Progressive distillation keeps every stage: export each.
    local s
    for s in "$d"/stage-*.fsck; do
      [ -f "$s" ] || continue
      "$TRAIN" export --ckpt "$s" --out "$RUNS/onnx/$name-$(basename "$s" .fsck).onnx" >/dev/null ||
        echo "FAILED export $s"
    done
  done
  ls -l "$RUNS/onnx"
}

for phase in $PHASES; do
  echo "== $phase ($(date -u +%H:%M:%S))"
  case $phase in
  teachers) teachers ;;
  students) students ;;
  export) export_all ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
echo "== finished ($(date -u +%H:%M:%S))"
