//! Measures fewstep's own per-step overhead over a bare tract forward of the
//! same graph, in a form that can run under `valgrind --tool=callgrind`
//! (instruction counts do not depend on what else the machine is doing).
//!
//! ```sh
//! python3 ../shared/bench/gen_unet.py bench/models
//! cargo build --release -p fewstep --example overhead_probe
//! P=target/release/examples/overhead_probe M=bench/models/unet_gn21.onnx
//! $P plan $M 30; $P fewstep $M 30          # wall time per forward / step
//! for m in plan fewstep; do for r in 1 3; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$m.$r $P $m $M $r
//! done; done   # (Collected(3) - Collected(1)) / 2 = instructions per step
//! ```
//!
//! `bare`: `into_optimized` plan of the raw graph at batch 1, constant input.
//! `bare-rand`: the same with Gaussian input. `plan`: the graph fewstep
//! runs (its fused group norms and, unless `CONV=direct`, Winograd
//! convolutions), bare: the baseline of fewstep's own overhead since those
//! rewrites. `fewstep`: a seeded `generate`
//! call of N steps through the public API, 1 thread. `FTZ=1` sets the x86
//! flush-to-zero / denormals-are-zero flags first (to test for denormal
//! slow paths). `MALLOPT=1` tunes glibc's allocator first, as the CLI does.
//! `CONV=direct|winograd` sets how 3×3 convolutions run (default: winograd);
//! `THREADS=k` gives `fewstep` (and `plan`, `bare`) k threads (default 1);
//! `CALLS=1` makes `fewstep`
//! REPS separate 1-step calls instead of one REPS-step call.
//! `compare`: the largest difference of a sample, Winograd against direct.
//! `POOL=1` runs `bare` inside a *one-thread* `Executor::MultiThread` pool:
//! tract-linalg 0.23.9 then dispatches its matrix products to rayon's
//! *global* pool (all cores), so that "one thread" is not one thread.

use std::error::Error;
use std::time::Instant;

use fewstep::fewstep_core::format::ImageShape;
use fewstep::fewstep_core::rng::GaussianStream;
use fewstep::fewstep_core::{Prediction, Schedule, StudentSteps};
use fewstep::{Model, StampOptions};
use tract_onnx::prelude::*;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: overhead_probe bare|bare-rand|plan|fewstep|compare MODEL.onnx [REPS]";
    let mode = args.next().ok_or(usage)?;
    let path = args.next().ok_or(usage)?;
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    if reps == 0 {
        return Err("REPS must be at least 1".into());
    }
    if std::env::var_os("FTZ").is_some() {
        set_flush_to_zero();
    }
    if std::env::var_os("MALLOPT").is_some() {
        eprintln!("allocator tuned: {}", fewstep::tune_allocator());
    }
    let bytes = std::fs::read(&path)?;
    let mut proto = fewstep::decode(&bytes)?;
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
    let mut model: Model = fewstep::stamp(&mut proto, &opts, None)?;
    if let Some(conv) = std::env::var_os("CONV") {
        let conv: fewstep::ConvAlgorithm = conv.to_string_lossy().parse()?;
        model = model.with_conv_algorithm(conv);
    }
    let bytes = fewstep::encode(&proto);
    match mode.as_str() {
        "bare" | "bare-rand" | "plan" => {
            let onnx = if mode == "plan" {
                fewstep::onnx()
            } else {
                tract_onnx::onnx()
            };
            let mut typed = onnx
                .model_for_read(&mut &bytes[..])?
                .with_input_fact(0, f32::fact([1, 3, 32, 32]).into())?
                .with_input_fact(1, f32::fact([1]).into())?
                .into_typed()?
                .into_decluttered()?;
            if mode == "plan" {
                fewstep::rewrite_graph(&mut typed, model.conv_algorithm())?;
            }
            let plan = typed.into_optimized()?.into_runnable()?;
            let mut zv = vec![0.1f32; 3 * 32 * 32];
            if mode == "bare-rand" {
                GaussianStream::new(1, 0).fill(&mut zv);
            }
            let z = Tensor::from_shape(&[1, 3, 32, 32], &zv)?;
            let t = Tensor::from_shape(&[1], &[0.5f32])?;
            let t0 = Instant::now();
            let threads: usize = match std::env::var("THREADS") {
                Ok(t) => t.parse()?,
                Err(_) => 1,
            };
            let pool = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?,
            );
            let pooled = std::env::var_os("POOL").is_some();
            for _ in 0..reps {
                let inputs = tvec![z.clone().into_tvalue(), t.clone().into_tvalue()];
                if threads > 1 {
                    // As the runtime runs one image on several threads.
                    fewstep::with_awake_pool(&pool, || {
                        tract_linalg::multithread::multithread_tract_scope(
                            tract_linalg::multithread::Executor::MultiThread(pool.clone()),
                            || plan.run(inputs),
                        )
                    })?;
                } else if pooled {
                    tract_linalg::multithread::multithread_tract_scope(
                        tract_linalg::multithread::Executor::MultiThread(pool.clone()),
                        || plan.run(inputs),
                    )?;
                } else {
                    plan.run(inputs)?;
                }
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            eprintln!("{mode}: {ms:.2} ms/forward");
        }
        "fewstep" => {
            let threads: usize = match std::env::var("THREADS") {
                Ok(t) => t.parse()?,
                Err(_) => 1,
            };
            // Warm-up: the plan and the thread pool.
            model.generate().batch(1).steps(1).threads(threads).run()?;
            let t0 = Instant::now();
            if std::env::var_os("CALLS").is_some() {
                for _ in 0..reps {
                    model
                        .generate()
                        .batch(1)
                        .seed(1)
                        .steps(1)
                        .threads(threads)
                        .run()?;
                }
            } else {
                model
                    .generate()
                    .batch(1)
                    .seed(1)
                    .steps(u32::try_from(reps)?)
                    .threads(threads)
                    .run()?;
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            eprintln!("fewstep: {ms:.2} ms/step ({threads} thread(s))");
        }
        "compare" => {
            // Largest difference of a 1-step sample, Winograd against the
            // direct convolution, at `reps` images.
            let run = |m: &Model| {
                m.generate()
                    .batch(reps)
                    .seed(1)
                    .steps(1)
                    .threads(1)
                    .run()
                    .map(|i| i.into_data())
            };
            let model = model.with_conv_algorithm(fewstep::ConvAlgorithm::Direct);
            let reference = run(&model)?;
            let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
            let model = model.with_conv_algorithm(fewstep::ConvAlgorithm::Winograd);
            let got = run(&model)?;
            let err = got
                .iter()
                .zip(&reference)
                .fold(0f32, |a, (g, r)| a.max((g - r).abs()));
            eprintln!("winograd: max |difference| {err:.3e} (max |value| {scale:.3})");
        }
        other => return Err(format!("unknown mode {other:?}; {usage}").into()),
    }
    Ok(())
}

fn set_flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: only sets the FTZ (bit 15) and DAZ (bit 6) flags of this
        // thread's MXCSR; no memory is touched.
        #[allow(deprecated)]
        unsafe {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            _mm_setcsr(_mm_getcsr() | 0x8040);
        }
        eprintln!("flush-to-zero / denormals-are-zero on");
    }
}
