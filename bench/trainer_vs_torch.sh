#!/usr/bin/env bash
# Training throughput, fewstep-train against its PyTorch twin
# (bench/trainer_vs_torch.py), one after the other on this machine: the
# preset's U-Net at each batch size and thread count, examples/s and ratio.
#
#   bash bench/trainer_vs_torch.sh [preset] [batches] [threads] [backends]
#   bash bench/trainer_vs_torch.sh small "16 64" "1 2" "flex"
#
# PyTorch is installed on demand into $FEWSTEP_TORCH_VENV (default
# ~/.cache/fewstep/torch-venv); tests and CI never need it. The `tch`
# backend needs a binary built with `--features tch` (docs/PERFORMANCE.md);
# set FEWSTEP_TRAIN to use another fewstep-train binary.
set -euo pipefail
cd "$(dirname "$0")/.."

preset=${1:-small}
batches=${2:-16 64}
threads_list=${3:-1 2}
backends=${4:-flex}
data=${FEWSTEP_DATA:-/usr/share/datasets/fashion-mnist}
warmup=${WARMUP:-1}
steps=${STEPS:-4}
train=${FEWSTEP_TRAIN:-target/release/fewstep-train}
venv=${FEWSTEP_TORCH_VENV:-$HOME/.cache/fewstep/torch-venv}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "installing PyTorch into $venv (several GB, once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch
fi
if [ ! -x "$train" ]; then
    cargo build --release -p fewstep-trainer
fi

# f32 FMA peak of one core: 2 FMA pipes x lanes x 2 FLOP x clock. Lanes: 8
# (256-bit FMA datapaths: AVX2 cores, and AMD Zen 4, whose AVX-512 is
# double-pumped 256-bit); set FMA_LANES=16 for cores with two 512-bit FMA
# units (Intel server parts), or PEAK_GFLOPS outright.
lanes=${FMA_LANES:-8}
mhz=$(awk -F: '/cpu MHz/ {print $2; exit}' /proc/cpuinfo)
peak=${PEAK_GFLOPS:-$(awk -v m="$mhz" -v l="$lanes" 'BEGIN {printf "%.1f", 2 * l * 2 * m / 1000}')}
echo "machine: $(nproc) cores at ${mhz# } MHz, f32 FMA peak ~${peak} GFLOP/s per core ($lanes lanes x 2 FMA/cycle)"
# One table row: batch, threads, path, examples/s (uses $torch_rate, $gflop).
row() {
    python3 - "$preset" "$@" "$torch_rate" "$gflop" "$peak" <<'EOF'
import sys
p, b, t, path, r, ref, g, peak = sys.argv[1:]
r, ref, g, peak = float(r), float(ref), float(g), float(peak)
share = 100 * r * g / (peak * int(t))
print(f"| {p} | {b} | {t} | {path} | {r:.2f} | {r / ref:.2f}x | {r * g:.1f} | {share:.0f} % |")
EOF
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

printf '| preset | batch | threads | path | examples/s | vs PyTorch | GFLOP/s | share of peak |\n'
printf '|---|---:|---:|---|---:|---:|---:|---:|\n'
for b in $batches; do
    for t in $threads_list; do
        json=$("$venv/bin/python" bench/trainer_vs_torch.py --preset "$preset" --batch "$b" \
            --threads "$t" --warmup "$warmup" --steps "$steps" --json)
        torch_rate=$(echo "$json" | field examples_per_s)
        gflop=$(echo "$json" | field gflop_per_example)
        row "$b" "$t" "pytorch $(echo "$json" | field torch) eager" "$torch_rate"
        for backend in $backends; do
            out=$(RAYON_NUM_THREADS=$t OMP_NUM_THREADS=$t "$train" bench --data "$data" \
                --preset "$preset" --batch "$b" --warmup "$warmup" --steps "$steps" \
                --backend "$backend" 2>&1 | tail -1)
            rate=$(echo "$out" | sed -n 's/.*: \([0-9.]*\) examples\/s.*/\1/p')
            row "$b" "$t" "fewstep-train $backend" "${rate:-0}"
        done
    done
done
