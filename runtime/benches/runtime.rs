//! Per-step latency of `fewstep` on the reference U-Net (`unet_gn21` from
//! `shared/bench/gen_unet.py`) at batch 1 and 8, against a bare tract
//! forward of the same graph; and the latency of a cancel from another
//! thread in the middle of a forward (`cancel_to_return`).
//!
//! The model is looked for at `$FEWSTEP_BENCH_MODEL`, else
//! `bench/models/unet_gn21.onnx` (generate it with
//! `python3 ../shared/bench/gen_unet.py bench/models`); without it the bench
//! prints a message and measures nothing. Threads: `$FEWSTEP_BENCH_THREADS`
//! (default: all cores). `FEWSTEP_BENCH_MALLOPT=1` calls
//! `fewstep::tune_allocator()` first. `FEWSTEP_BENCH_CONV=direct` runs
//! fewstep's rows with tract's direct convolutions instead of Winograd (its
//! criterion group gets a `_direct` suffix).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fewstep::fewstep_core::format::ImageShape;
use fewstep::fewstep_core::{Prediction, Schedule, StudentSteps};
use fewstep::{ConvAlgorithm, Execution, Model, PoolWait, StampOptions};
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("FEWSTEP_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/models/unet_gn21.onnx")
        });
    p.exists().then_some(p)
}

fn threads() -> usize {
    std::env::var("FEWSTEP_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The raw export stamped in memory (x renamed to z, v / cosine / diffusion).
fn stamped(path: &PathBuf) -> (Model, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read model");
    let mut proto = fewstep::decode(&bytes).expect("decode");
    let opts = StampOptions {
        prediction: Prediction::V,
        schedule: Schedule::Cosine,
        student_steps: StudentSteps(0),
        image: ImageShape {
            channels: 3,
            height: 32,
            width: 32,
        },
        num_classes: None,
        data_range: None,
        renames: vec![("x".into(), "z".into())],
    };
    let model = fewstep::stamp(&mut proto, &opts, None).expect("stamp");
    (model, fewstep::encode(&proto))
}

/// A bare tract plan of the graph at a concrete batch size.
fn bare_plan(bytes: &[u8], batch: usize) -> Arc<TypedRunnableModel> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact([batch, 3, 32, 32]).into()))
        .and_then(|m| m.with_input_fact(1, f32::fact([batch]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("bare tract plan")
}

/// The batch-1 plan fewstep runs (its fused group norms and, with
/// Winograd, its convolutions), built the way the runtime builds it.
fn fewstep_plan(bytes: &[u8], conv: ConvAlgorithm) -> Arc<TypedRunnableModel> {
    let mut typed = fewstep::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, 32, 32]).into()))
        .and_then(|m| m.with_input_fact(1, f32::fact([1]).into()))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .expect("fewstep graph");
    fewstep::rewrite_graph(&mut typed, conv).expect("fewstep's rewrites");
    typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("fewstep plan")
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!(
            "fewstep bench: no model (set FEWSTEP_BENCH_MODEL or run `python3 shared/bench/gen_unet.py bench/models`); skipping"
        );
        return;
    };
    let k = threads();
    let tuned = std::env::var_os("FEWSTEP_BENCH_MALLOPT").is_some() && fewstep::tune_allocator();
    eprintln!("fewstep bench: {k} thread(s), allocator tuned: {tuned}");
    let (model, bytes) = stamped(&path);
    // One thread means tract's SingleThread executor: tract-linalg 0.23.9
    // sends the matrix products of a *one-thread* MultiThread pool to rayon's
    // global pool (all cores), which made earlier "1 thread" bare rows use 2.
    let pool = (k > 1).then(|| {
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(k)
                .build()
                .expect("pool"),
        )
    });
    let executor = match &pool {
        Some(pool) => Executor::MultiThread(pool.clone()),
        None => Executor::SingleThread,
    };
    // How fewstep computes 3×3 convolutions (the bare tract rows are always
    // tract's direct convolution).
    let conv: ConvAlgorithm = std::env::var("FEWSTEP_BENCH_CONV")
        .ok()
        .map(|c| c.parse().expect("FEWSTEP_BENCH_CONV: winograd or direct"))
        .unwrap_or_default();
    let model = model.with_conv_algorithm(conv);
    let suffix = format!(
        "{}{}",
        if tuned { "_mallopt" } else { "" },
        match conv {
            ConvAlgorithm::Winograd => "",
            ConvAlgorithm::Direct => "_direct",
        }
    );
    let mut g = c.benchmark_group(format!("unet_gn21/threads{k}{suffix}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));

    for batch in [1usize, 8] {
        // Bare tract: one forward of the whole batch, threads in the matmuls.
        let plan = bare_plan(&bytes, batch);
        let z =
            Tensor::from_shape(&[batch, 3, 32, 32], &vec![0.1f32; batch * 3 * 32 * 32]).unwrap();
        let t = Tensor::from_shape(&[batch], &vec![0.5f32; batch]).unwrap();
        g.bench_function(format!("tract_bare_forward/b{batch}"), |b| {
            b.iter(|| {
                multithread_tract_scope(executor.clone(), || {
                    plan.run(tvec![z.clone().into_tvalue(), t.clone().into_tvalue()])
                        .unwrap()
                })
            })
        });
        // fewstep's own batch-1 plan, bare, run as the runtime runs one
        // image (on the pool, its other threads awake): the baseline of the
        // sampler's own overhead.
        if batch == 1 {
            let plan = fewstep_plan(&bytes, conv);
            let forward = || {
                multithread_tract_scope(executor.clone(), || {
                    plan.run(tvec![z.clone().into_tvalue(), t.clone().into_tvalue()])
                        .unwrap()
                })
            };
            g.bench_function("fewstep_plan_forward/b1", |b| {
                b.iter(|| match &pool {
                    Some(pool) => fewstep::with_awake_pool(pool, forward),
                    None => forward(),
                })
            });
        }
        // fewstep, one step (a full generate call: noise, forward, sampler).
        for exec in [Execution::PerImage, Execution::Batched] {
            if batch == 1 && exec == Execution::Batched {
                continue;
            }
            model.prepare_batch(batch).unwrap();
            g.bench_function(format!("fewstep_1_step/b{batch}/{exec:?}"), |b| {
                b.iter(|| {
                    model
                        .generate()
                        .batch(batch)
                        .seed(1)
                        .steps(1)
                        .threads(k)
                        .pool_wait(PoolWait::Spin)
                        .pool_wait(PoolWait::Spin)
                        .execution(exec)
                        .run()
                        .unwrap()
                })
            });
        }
        // fewstep, eight steps (per-step = time / 8).
        g.bench_function(format!("fewstep_8_steps/b{batch}/PerImage"), |b| {
            b.iter(|| {
                model
                    .generate()
                    .batch(batch)
                    .seed(1)
                    .steps(8)
                    .threads(k)
                    .pool_wait(PoolWait::Spin)
                    .run()
                    .unwrap()
            })
        });
    }
    // Cancel latency: a second thread cancels 3 ms into the second step's
    // forward (one forward of the U-Net is ~10-40 ms); the time measured is
    // from `cancel()` to the call's return with the step-1 estimate.
    for batch in [1usize, 8] {
        g.bench_function(format!("cancel_to_return/b{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let token = fewstep::CancelToken::new();
                    let (tx, rx) = std::sync::mpsc::channel::<()>();
                    let canceller = {
                        let token = token.clone();
                        std::thread::spawn(move || {
                            rx.recv().ok()?;
                            std::thread::sleep(Duration::from_millis(3));
                            token.cancel();
                            Some(std::time::Instant::now())
                        })
                    };
                    let out = model
                        .generate()
                        .batch(batch)
                        .seed(1)
                        .steps(8)
                        .threads(k)
                        .pool_wait(PoolWait::Spin)
                        .pool_wait(PoolWait::Spin)
                        .cancel(token)
                        .on_progress(|p| {
                            if p.step == 1 {
                                tx.send(()).ok();
                            }
                        })
                        .run()
                        .unwrap();
                    let returned = std::time::Instant::now();
                    let cancelled_at = canceller.join().unwrap().expect("cancelled");
                    assert!(out.is_partial());
                    total += returned.saturating_duration_since(cancelled_at);
                }
                total
            })
        });
    }
    g.finish();
    if let Some(kib) = peak_rss_kib() {
        eprintln!("fewstep bench: peak RSS {:.1} MiB", kib as f64 / 1024.0);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
