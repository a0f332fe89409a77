#!/usr/bin/env python3
"""onnxruntime's side of the start-up comparison (issue 16 §1): for one
model, the time to create a session and run its first forward, and to run
four forwards (what fewstep's first 4-step image runs), then the median of
8 more forwards, on --threads threads, graph optimisations on
(ORT_ENABLE_ALL), batch --batch (default 1); and the peak
RSS of that over the RSS after importing onnxruntime (Linux), to set
beside fewstep's peak RSS over its own start (`bench/generate_memory.sh`).

    python3 -m venv /work/venv-ort && /work/venv-ort/bin/pip install onnxruntime numpy
    /work/venv-ort/bin/python bench/startup_ort.py MODEL.onnx [--threads 1] [--runs 3]

fewstep's side: cargo run --release -p fewstep --example startup -- MODEL.onnx
Each run is a fresh process (the caches onnxruntime keeps in a process
would otherwise make the second run look like a warm start).
"""
import argparse
import json
import subprocess
import sys
import time


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def one_run(path, threads, batch):
    t0 = time.perf_counter()
    import numpy as np
    import onnxruntime as ort

    imported = time.perf_counter()
    rss_imported = status_mib("VmRSS:")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    created = time.perf_counter()
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        if "int64" in i.type:
            feeds[i.name] = np.zeros(shape, np.int64)
        else:
            feeds[i.name] = np.full(shape, 0.5, np.float32)
    sess.run(None, feeds)
    first = time.perf_counter()
    for _ in range(3):
        sess.run(None, feeds)
    four = time.perf_counter()
    # Steady state: the median of 8 more forwards.
    times = []
    for _ in range(8):
        a = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - a)
    times.sort()
    ms = lambda a, b: (b - a) * 1e3
    return {
        "rss_after_import_mib": rss_imported,
        "peak_over_import_mib": status_mib("VmHWM:") - rss_imported,
        "import": ms(t0, imported),
        "session": ms(imported, created),
        "first_forward": ms(created, first),
        "session_to_first_forward": ms(imported, first),
        "session_to_four_forwards": ms(imported, four),
        "per_forward": (times[3] + times[4]) / 2 * 1e3,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the runs as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one_run(a.model, a.threads, a.batch)))
        return
    rows = []
    for _ in range(a.runs):
        out = subprocess.run(
            [sys.executable, __file__, a.model, "--threads", str(a.threads),
             "--batch", str(a.batch), "--child"],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    if a.json:
        print(json.dumps(rows))
        return
    for key in rows[0]:
        vals = ", ".join(f"{r[key]:.1f}" for r in rows)
        unit = "MiB" if key.endswith("_mib") else "ms"
        print(f"{key:>26}: {vals} {unit}")


if __name__ == "__main__":
    main()
