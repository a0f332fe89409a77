#!/usr/bin/env bash
# One prepared command for a short GPU window (issue 20 §2). On a machine with
# an NVIDIA GPU it:
#   1. puts the running driver's libcuda and an NVRTC on the loader's path
#      (never a toolkit's compat/ or stubs/ libcuda: on the H200 machine that
#      gave CUDA_ERROR_SYSTEM_DRIVER_MISMATCH) and writes a cubecl.toml that
#      logs each kernel compilation and asks cubecl to cache PTX and autotune
#      results (the autotune cache was seen on disk in session 13, a PTX
#      cache was not);
#   2. measures examples/s of the PyTorch twin (bench/trainer_vs_torch.py),
#      `small` and `medium` presets, then `fewstep-train bench --backend cuda`
#      on `small`, with a monitor line every 30 s (kernels compiled so far, GPU
#      use): Burn's CUDA backend JIT-compiles every kernel with NVRTC, about
#      one a second on the H200 machine (session 13: 272 kernels in 240 s, the
#      tiny preset's first two steps not done), so the first steps take minutes;
#   3. with the time left, trains a class-conditional Fashion-MNIST teacher
#      (`small`), distils it to a 4-step student (CD, Algorithm 1), and exports
#      both (f16);
#   4. leaves the ONNX files, loss curves, sample grids and the log under
#      $OUT (default: gpu-check-out/), at most 8 files.
# Every phase has its own deadline inside BUDGET seconds; a run killed at its
# deadline keeps its last checkpoint (checkpoints are written atomically).
#
# The GPU machine may have no Rust toolchain and no internet: build the
# trainer here and carry the binary and the data:
#
#   cargo build --release -p fewstep-trainer --features cuda
#   mkdir -p .gpu && strip -o .gpu/fewstep-train target/release/fewstep-train
#   cp /usr/share/datasets/fashion-mnist/train-* .gpu/
#   # on the GPU machine, from the repository root:
#   TRAIN=.gpu/fewstep-train DATA=.gpu bash scripts/gpu-check.sh
#
# Knobs (environment): TRAIN (binary), DATA (idx folder), BATCH (128),
# BUDGET (seconds for everything, 520), BENCH_LIMIT (deadline of the CUDA
# bench, 300), TEACHER_SHARE (percent of the
# training time that goes to the teacher, 60), BENCH_STEPS (10 timed steps),
# PYTHON (a python with torch, default python3), BACKEND (cuda),
# TORCH_DEVICE (cuda), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
train=${TRAIN:-target/release/fewstep-train}
data=${DATA:-/usr/share/datasets/fashion-mnist}
batch=${BATCH:-128}
budget=${BUDGET:-520}
teacher_share=${TEACHER_SHARE:-60}
bench_steps=${BENCH_STEPS:-10}
bench_limit=${BENCH_LIMIT:-300}
python=${PYTHON:-python3}
# A dry run on a CPU: BACKEND=flex TORCH_DEVICE=cpu BUDGET=240.
backend=${BACKEND:-cuda}
torch_device=${TORCH_DEVICE:-cuda}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
log="$out/gpu-check.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
left() { echo $((budget - ($(date +%s) - t0))); }
# Runs "$@" for at most $1 seconds, its output into the log.
timed() {
    local limit=$1
    shift
    local s=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    say "   [rc $rc after $(($(date +%s) - s)) s; $(left) s of the budget left]"
    return "$rc"
}

say "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log" || true
nproc | sed 's/^/cpus: /' | tee -a "$log"
# cudarc opens libcuda.so / libnvrtc.so(.13) by name: put every folder that
# holds one on the loader's path (the driver's mount, the toolkit, pip's wheels).
libdirs=$(find /usr/local/nvidia /usr/local/cuda /usr/local/cuda-* /usr/lib/x86_64-linux-gnu /opt \
    \( -name 'libnvrtc.so*' -o -name 'libcuda.so*' \) -printf '%h\n' 2>/dev/null | grep -v -e /compat -e /stubs | sort -u)
say "CUDA library folders: $(echo $libdirs)"
export LD_LIBRARY_PATH="$(echo $libdirs | tr ' ' ':')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$train" --version 2>&1 | tee -a "$log" || { say "no trainer binary at $train"; exit 1; }
[ -e "$data" ] || { say "no dataset at $data (set DATA)"; exit 1; }
export RUST_BACKTRACE=1 CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
compile_log=/tmp/cubecl-compile.log
if [ ! -e cubecl.toml ]; then
    cat > cubecl.toml <<EOF
# written by scripts/gpu-check.sh: cubecl's settings (Burn's CUDA backend)
[compilation]
cache = "local"
[compilation.logger]
level = "basic"
file = "$compile_log"
[autotune]
cache = "local"
EOF
fi
# A line every 30 s: kernels compiled so far, GPU use.
( while sleep 30; do
    say "   [monitor $(($(date +%s) - t0)) s] kernels compiled: $(cat "$compile_log" 2>/dev/null | wc -l); GPU: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
done ) &
monitor=$!
trap 'kill $monitor 2>/dev/null' EXIT

say "== throughput, batch $batch (examples/s; the PyTorch twin, then fewstep-train bench on CUDA)"
for preset in small medium; do
    timed 90 "$python" bench/trainer_vs_torch.py --preset "$preset" --batch "$batch" --device "$torch_device" \
        --warmup 3 --steps "$bench_steps" || say "PyTorch twin ($preset) failed"
done
timed "$bench_limit" "$train" bench --data "$data" --preset small --batch "$batch" --warmup 3 \
    --steps "$bench_steps" --backend "$backend" || say "fewstep bench (small) failed or ran out of time"
if grep -q '^error: CUDA: ' "$log"; then
    say "the trainer cannot use CUDA here (the error above); stopping"
    exit 2
fi
# Checkpoint about every 30 s of training, from the measured `small` rate
# (a run stopped at its deadline keeps its last checkpoint).
small_rate=$(grep -o 'preset small batch [0-9]* [0-9x]*: [0-9.]* examples/s' "$log" | tail -1 \
    | sed 's/.*: \([0-9.]*\) examples.*/\1/')
every=$(awk -v r="${small_rate:-0}" -v b="$batch" 'BEGIN { e = int(r / b * 30); print (e < 20 ? 20 : e) }')
say "checkpoint every $every steps (small: ${small_rate:-?} examples/s)"

# What is left, less ~60 s for two exports and the copies.
train_time=$(($(left) - 60))
if [ "$train_time" -lt 60 ]; then
    say "no time left to train ($train_time s)"
    exit 0
fi
teacher_time=$((train_time * teacher_share / 100))

say "== teacher: small preset, class-conditional, batch $batch, $teacher_time s"
timed "$teacher_time" "$train" diffusion --data "$data" --out "$out/teacher" --preset small \
    --class-cond --batch "$batch" --lr 5e-4 --warmup 100 --steps 1000000 --dropout 0 \
    --sample-every "$every" --sample-steps 32 --sample-count 100 --backend "$backend" --quiet
# Keep what the last checkpoint holds (the run was stopped at its deadline).
tail -2 "$out/teacher/log.csv" 2>/dev/null | tee -a "$log"
timed 60 "$train" export --ckpt "$out/teacher" --out "$out/teacher.onnx" --f16 || say "teacher export failed"

student_time=$(($(left) - 30))
if [ -e "$out/teacher.onnx" ] && [ "$student_time" -ge 30 ]; then
    say "== student: CD to 4 steps (fixed 128-step aDDIM teacher), batch $batch, $student_time s"
    timed "$student_time" "$train" consistency --mode cd --init "$out/teacher" --student-steps 4 \
        --teacher-steps-fixed 128 --out "$out/student" --steps 1000000 --batch "$batch" \
        --lr 2e-4 --warmup 20 --ema-decay 0.99 --dropout 0 --sample-every "$(( every / 2 > 10 ? every / 2 : 10 ))" --sample-count 100 \
        --backend "$backend" --quiet
    tail -2 "$out/student/log.csv" 2>/dev/null | tee -a "$log"
    timed 30 "$train" export --ckpt "$out/student" --out "$out/student-cd4.onnx" --f16 \
        || say "student export failed"
fi

# At most 8 files come back: this log, two models, two loss curves, two
# grids, and both runs' log.csv in one file.
: > "$out/runs-log.csv"
for run in teacher student; do
    cp "$out/$run/loss.png" "$out/$run-loss.png" 2>/dev/null || true
    cp "$(ls -1 "$out/$run"/samples/*.png 2>/dev/null | tail -1)" "$out/$run-samples.png" 2>/dev/null || true
    { echo "# $run"; cat "$out/$run/log.csv" 2>/dev/null; } >> "$out/runs-log.csv"
done
ls -la "$out" | tee -a "$log"
say "done in $(($(date +%s) - t0)) s: $out"
# The checkpoints (weights + AdamW state) are too large to bring back whole.
rm -rf "$out/teacher" "$out/student"
