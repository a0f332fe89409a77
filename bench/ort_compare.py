#!/usr/bin/env python3
"""Run the reference U-Net in onnxruntime with the same thread count as the
fewstep benchmark and print fewstep/onnxruntime time ratios.

    pip install onnx onnxruntime numpy
    python3 ../shared/bench/gen_unet.py bench/models          # once
    FEWSTEP_BENCH_THREADS=2 CARGO_TARGET_DIR=/work/tgt-runtime cargo bench -p fewstep
    python3 bench/ort_compare.py --threads 2 --criterion /work/tgt-runtime/criterion

onnxruntime: median of --runs calls of one forward at batch 1 and 8 (after
warm-up), intra_op_num_threads = inter_op_num_threads = --threads, graph
optimisations on (ORT_ENABLE_ALL). fewstep: the median point estimates that
`cargo bench -p fewstep` left in criterion's directory (one network
evaluation = one step). Ratio < 1 means fewstep is faster.
"""
import argparse, glob, json, os, statistics, sys, time

import numpy as np
import onnxruntime as ort


def ort_median_ms(path, batch, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    x = np.full((batch, 3, 32, 32), 0.1, np.float32)
    t = np.full((batch,), 0.5, np.float32)
    feed = dict(zip(names, [x, t]))
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def criterion_ms(crit_dir, group):
    """full_id -> median ms, for one criterion group."""
    out = {}
    for bj in glob.glob(os.path.join(crit_dir, "**", "new", "benchmark.json"), recursive=True):
        meta = json.load(open(bj))
        if meta.get("group_id", "") != group:
            continue
        est = json.load(open(os.path.join(os.path.dirname(bj), "estimates.json")))
        out[meta["full_id"][len(group) + 1:]] = est["median"]["point_estimate"] / 1e6
    return out


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--model", default=os.path.join(here, "models", "unet_gn21.onnx"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--mallopt", action="store_true", help="compare the FEWSTEP_BENCH_MALLOPT=1 run")
    ap.add_argument("--conv", default="winograd", choices=["winograd", "direct"],
                    help="compare the FEWSTEP_BENCH_CONV run (fewstep rows only)")
    ap.add_argument("--criterion", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
    a = ap.parse_args()
    if not os.path.exists(a.model):
        sys.exit(f"no model at {a.model}: run python3 shared/bench/gen_unet.py bench/models")
    print(f"onnxruntime {ort.__version__}, {a.threads} thread(s), model {a.model}, fewstep conv {a.conv}")
    ort_ms = {b: ort_median_ms(a.model, b, a.threads, a.runs) for b in (1, 8)}
    group = (f"unet_gn21/threads{a.threads}" + ("_mallopt" if a.mallopt else "")
             + ("_direct" if a.conv == "direct" else ""))
    crit = criterion_ms(a.criterion, group)
    rows = [
        ("onnxruntime forward", 1, ort_ms[1], None),
        ("onnxruntime forward", 8, ort_ms[8], None),
    ]
    for key, batch, steps in [
        ("tract_bare_forward/b1", 1, 1),
        ("fewstep_plan_forward/b1", 1, 1),
        ("fewstep_1_step/b1/PerImage", 1, 1),
        ("fewstep_8_steps/b1/PerImage", 1, 8),
        ("tract_bare_forward/b8", 8, 1),
        ("fewstep_1_step/b8/PerImage", 8, 1),
        ("fewstep_1_step/b8/Batched", 8, 1),
        ("fewstep_8_steps/b8/PerImage", 8, 8),
    ]:
        if key in crit:
            per_step = crit[key] / steps
            rows.append((key + ("  (per step)" if steps > 1 else ""), batch, per_step, per_step / ort_ms[batch]))
    # The sampler's own overhead: a 1-step generate against fewstep's plan
    # run bare (same graph, same threads).
    if "fewstep_plan_forward/b1" in crit and "fewstep_1_step/b1/PerImage" in crit:
        bare, gen = crit["fewstep_plan_forward/b1"], crit["fewstep_1_step/b1/PerImage"]
        print(f"sampler overhead at batch 1: {gen - bare:+.3f} ms ({100 * (gen / bare - 1):+.1f} %)")
    if len(rows) == 2:
        print(f"(no criterion results for group {group} under {a.criterion}: run cargo bench -p fewstep first)")
    print(f"{'what':42s} {'batch':>5s} {'ms':>9s} {'x onnxruntime':>14s}")
    for what, batch, ms, ratio in rows:
        r = f"{ratio:.2f}" if ratio is not None else "1.00"
        print(f"{what:42s} {batch:5d} {ms:9.2f} {r:>14s}")


if __name__ == "__main__":
    main()
