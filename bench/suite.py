#!/usr/bin/env python3
"""The runtime's benchmark suite (issue 16 §2): fewstep against onnxruntime,
side by side on the same files, per step and from process start.

    bash bench/suite.sh            # generates what is missing, then runs this

Models: the benchmark U-Net (bench/models/unet_gn21.onnx, 32×32×3), the
shipped Fashion-MNIST model and the 45 k-parameter one, the PyTorch exports
(runtime/tests/data/torch/, TorchScript and dynamo, 16×16×3), and the
suite models bench/torch_export/export_unet.py --suite writes into
bench/suite_models/ (a 64×64 attention U-Net, a ~10 GFLOP one, a 32×32 dynamo
export) when they are there. Raw exports are stamped (v, cosine) with the
fewstep CLI first; onnxruntime runs the same stamped file.

Cells:
- start → first image, 1 thread, batch 1: fewstep's read + decode + build +
  first 4-step image (`runtime/examples/startup.rs`) against onnxruntime's
  session creation + 4 forwards (`bench/startup_ort.py`, import excluded);
  median of --runs fresh processes each.
- per step, {1, 2} threads × batch {1, 8}: fewstep's second 4-step image over
  4 (its default execution: image by image, up to THREADS at once) against
  onnxruntime's median forward at that batch; one process each.
GFLOP/s is effective: `fewstep info`'s multiply-adds per step (those of the
direct convolutions) × 2 × batch over the time. Winograd convolutions do
fewer (2.25× fewer multiplies), so a share above 100 % is possible. The
peak is cores × the clock /proc/cpuinfo reports × 32 FLOP per cycle (two
256-bit FMA pipes per core); boost clocks make the real peak higher.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEWSTEP = os.path.join(ROOT, "target/release/fewstep")
STARTUP = os.path.join(ROOT, "target/release/examples/startup")
ORT = os.path.join(ROOT, "bench/startup_ort.py")
STAMPED = os.path.join(ROOT, "bench/suite_models/stamped")

# (label, path, image C,H,W or None when the file is a fewstep model already)
MODELS = [
    ("U-Net 32×32×3 (bench)", "bench/models/unet_gn21.onnx", "3,32,32", ["--rename", "x=z"]),
    ("shipped Fashion-MNIST (3.9 M, f16)", "examples/models/fmnist-cd4.onnx", None, []),
    ("Fashion-MNIST 45 k", "runtime/tests/data/fmnist-tiny-cd4.onnx", None, []),
    ("PyTorch TorchScript export 16×16×3", "runtime/tests/data/torch/unet_torchscript.onnx", "3,16,16", []),
    ("PyTorch dynamo export 16×16×3", "runtime/tests/data/torch/unet_dynamo.onnx", "3,16,16", []),
    ("PyTorch dynamo export 32×32×3", "bench/suite_models/unet32_torch_dynamo.onnx", "3,32,32", []),
    ("U-Net 64×64×3, attention at 16², 8²", "bench/suite_models/unet64_attn.onnx", "3,64,64", []),
    ("phone-sized U-Net 64×64×3 (~10 GFLOP)", "bench/suite_models/unet64_phone.onnx", "3,64,64", []),
]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def prepare(path, image, extra):
    """The fewstep model to run: the file itself, or a stamped copy."""
    if image is None:
        return path
    os.makedirs(STAMPED, exist_ok=True)
    out = os.path.join(STAMPED, os.path.basename(path))
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(path):
        run([FEWSTEP, "stamp", "--prediction", "v", "--schedule", "cosine",
             "--student-steps", "4", "--image", image, *extra, path, out])
    return out


def macs_per_step(model):
    m = re.search(r"per step and image: (\d+) multiply-adds", run([FEWSTEP, "info", model]))
    return int(m.group(1)) if m else None


def fewstep_run(model, threads, batch):
    line = run([STARTUP, model, "winograd", "estimate", str(threads), str(batch)])
    field = lambda name: float(re.search(name + r" ([\d.]+)", line).group(1))
    return {"start_to_first_image": field("start to first image"), "per_step": field("per step")}


def ort_runs(model, threads, batch, runs):
    out = run([sys.executable, ORT, model, "--threads", str(threads), "--batch", str(batch),
               "--runs", str(runs), "--json"])
    return json.loads(out.strip().splitlines()[-1])


def fma_peak_gflops():
    mhz = [float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz")]
    return len(os.sched_getaffinity(0)) * statistics.mean(mhz) * 32 / 1e3 if mhz else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per start-up cell")
    ap.add_argument("--only", help="run the models whose label contains this")
    a = ap.parse_args()
    os.chdir(ROOT)
    peak = fma_peak_gflops()
    start_rows, step_rows = [], []
    for label, path, image, extra in MODELS:
        if a.only and a.only not in label:
            continue
        if not os.path.exists(path):
            print(f"skipped (not generated): {label} ({path})", file=sys.stderr)
            continue
        model = prepare(path, image, extra)
        macs = macs_per_step(model)
        print(f"== {label}", file=sys.stderr)
        fs = [fewstep_run(model, 1, 1)["start_to_first_image"] for _ in range(a.runs)]
        ort = [r["session_to_four_forwards"] for r in ort_runs(model, 1, 1, a.runs)]
        f, o = statistics.median(fs), statistics.median(ort)
        start_rows.append(f"| {label} | {f:.0f} | {o:.0f} | {f / o:.2f}× |")
        for threads in (1, 2):
            for batch in (1, 8):
                f = fewstep_run(model, threads, batch)["per_step"]
                o = ort_runs(model, threads, batch, 1)[0]["per_forward"]
                gf = lambda ms: 2 * macs * batch / ms / 1e6 if macs else float("nan")
                step_rows.append(
                    f"| {label} | {threads} | {batch} | {f:.2f} | {o:.2f} | {f / o:.2f}× "
                    f"| {gf(f):.1f} ({gf(f) / peak:.0%}) | {gf(o):.1f} ({gf(o) / peak:.0%}) |")
    print(f"Machine: {len(os.sched_getaffinity(0))} cores, FMA peak at the reported clock "
          f"{peak:.0f} GFLOP/s.\n")
    print("Start → first 4-step image, 1 thread, batch 1 (ms, median of "
          f"{a.runs} processes):\n")
    print("| model | fewstep | onnxruntime (session + 4 forwards) | ratio |")
    print("|---|---:|---:|---:|")
    print("\n".join(start_rows))
    print("\nPer step (ms; effective GFLOP/s, direct-convolution FLOPs, and share of the FMA peak):\n")
    print("| model | threads | batch | fewstep | onnxruntime | ratio | fewstep GFLOP/s | onnxruntime GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(step_rows))


if __name__ == "__main__":
    main()
