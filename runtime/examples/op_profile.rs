//! Where a tract forward spends its time, per operator: runs the optimised
//! batch-`N` plan of an ONNX model `REPS` times on one thread and prints the
//! wall time of each op kind (and the ten slowest nodes), summed over the
//! runs, in CPU time. It is the per-node view `perf` cannot give (perf names kernels, not
//! the graph nodes that call them).
//!
//! ```sh
//! cargo run --release -p fewstep --example op_profile -- bench/models/unet_gn21.onnx 50 [BATCH]
//! ```
//!
//! `CONV=winograd` rewrites the 3×3 convolutions first, as the
//! runtime does (default here: `direct`); `GN=tract` keeps tract's own
//! `GroupNormalization` instead of fewstep's fused one; `MALLOPT=1` tunes the allocator
//! first, as the CLI does. `THREADS=k` runs inside a k-thread executor (wall
//! time), `INSTALL=1` on one of that pool's threads, `SPIN=1` there with
//! the other threads kept awake (as the runtime does).
//!
//! The model's first input is `[N, C, H, W]` image noise and its second, if
//! any, the `[N]` time; a model stamped by fewstep (`z`, `t`, `label`) works
//! as well as a raw export.

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};
use tract_onnx::tract_hir::infer::Factoid;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: op_profile MODEL.onnx [REPS] [BATCH]";
    let path = args.next().ok_or(usage)?;
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let batch: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    if reps == 0 || batch == 0 {
        return Err("REPS and BATCH must be at least 1".into());
    }
    if std::env::var_os("MALLOPT").is_some() {
        eprintln!("allocator tuned: {}", fewstep::tune_allocator());
    }
    // GN=tract: tract's own GroupNormalization (eleven generic operators)
    // instead of fewstep's fused one.
    let tract_gn = std::env::var("GN").is_ok_and(|g| g == "tract");
    let onnx = if tract_gn {
        tract_onnx::onnx()
    } else {
        fewstep::onnx()
    };
    let mut model = onnx.model_for_path(&path)?;
    let image: Vec<usize> = model
        .input_fact(0)?
        .shape
        .dims()
        .skip(1)
        .map(|d| {
            d.concretize()
                .and_then(|d| d.as_i64())
                .and_then(|d| usize::try_from(d).ok())
        })
        .collect::<Option<_>>()
        .ok_or("input 0 needs known C, H, W")?;
    let mut z_shape = vec![batch];
    z_shape.extend(&image);
    model = model.with_input_fact(0, f32::fact(&z_shape).into())?;
    let inputs = model.inputs.len();
    if inputs > 1 {
        model = model.with_input_fact(1, f32::fact([batch]).into())?;
    }
    if inputs > 2 {
        model = model.with_input_fact(2, i64::fact([batch]).into())?;
    }
    let mut typed = model.into_typed()?.into_decluttered()?;
    let conv = if std::env::var("CONV").is_ok_and(|c| c == "winograd") {
        fewstep::ConvAlgorithm::Winograd
    } else {
        fewstep::ConvAlgorithm::Direct
    };
    let (fused, rewritten) = fewstep::rewrite_graph(&mut typed, conv)?;
    eprintln!("{fused} SiLUs fused into their group norm");
    eprintln!("{rewritten} convolutions rewritten as Winograd");
    let plan = typed.into_optimized()?.into_runnable()?;
    let z = Tensor::from_shape(&z_shape, &vec![0.1f32; z_shape.iter().product()])?;
    let mut values = tvec![z.into_tvalue()];
    if inputs > 1 {
        values.push(Tensor::from_shape(&[batch], &vec![0.5f32; batch])?.into_tvalue());
    }
    if inputs > 2 {
        values.push(Tensor::from_shape(&[batch], &vec![0i64; batch])?.into_tvalue());
    }

    // THREADS=k (k > 1): run inside a k-thread tract executor and time in
    // wall-clock (the other threads' CPU time is not this thread's).
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let clock: fn() -> Duration = if threads > 1 { wall_time } else { cpu_time };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?,
    );
    let executor = if threads > 1 {
        Executor::MultiThread(pool.clone())
    } else {
        Executor::SingleThread
    };
    let run = || {
        multithread_tract_scope(executor, || {
            profile(&path, batch, reps, threads, clock, &plan, values)
        })
    };
    // INSTALL=1: run the forwards on one of the pool's own threads (as the
    // runtime does), not on the calling thread.
    if std::env::var_os("SPIN").is_some() {
        fewstep::with_awake_pool(&pool, run)?;
    } else if std::env::var_os("INSTALL").is_some() {
        pool.install(run)?;
    } else {
        run()?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn profile(
    path: &str,
    batch: usize,
    reps: usize,
    threads: usize,
    clock: fn() -> Duration,
    plan: &Arc<TypedRunnableModel>,
    values: TVec<TValue>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let cpu_time = clock;
    let mut state = SimpleState::new(plan)?;
    state.run(values.clone())?; // warm-up: allocations, caches
    let mut per_node: HashMap<usize, (String, String, Duration)> = HashMap::new();
    let t0 = cpu_time();
    for _ in 0..reps {
        state.run_plan_with_eval(values.clone(), |ctx, op_state, node, input| {
            let t = cpu_time();
            let out = eval(ctx, op_state, node, input);
            let entry = per_node.entry(node.id).or_insert_with(|| {
                (
                    node.op().name().to_string(),
                    node.name.clone(),
                    Duration::ZERO,
                )
            });
            entry.2 += cpu_time().saturating_sub(t);
            out
        })?;
    }
    let total = cpu_time().saturating_sub(t0);
    let per = |d: Duration| d.as_secs_f64() * 1e3 / reps as f64;

    let mut by_kind: HashMap<&str, (usize, Duration)> = HashMap::new();
    for (kind, _, d) in per_node.values() {
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += *d;
    }
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1.1));
    println!(
        "{path}: batch {batch}, {:.2} ms per forward ({} nodes), {threads} thread(s), {}",
        per(total),
        per_node.len(),
        if threads > 1 { "wall time" } else { "CPU time" }
    );
    println!("{:>9} {:>6} {:>5}  op", "ms", "%", "nodes");
    for (kind, (n, d)) in &kinds {
        let share = 100.0 * d.as_secs_f64() / total.as_secs_f64();
        println!("{:>9.3} {share:>6.1} {n:>5}  {kind}", per(*d));
    }
    let mut nodes: Vec<_> = per_node.values().collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(n.2));
    println!("slowest nodes (TOP=n shows more):");
    let top: usize = std::env::var("TOP")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    for (kind, name, d) in nodes.iter().take(top) {
        println!("{:>9.3}  {kind:<16} {name}", per(*d));
    }
    Ok(())
}

fn wall_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// This thread's CPU time: unlike wall time, it does not count the time
/// other processes hold the core, so a busy machine skews the split less.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
