//! Time to first image, broken down (issue 16 §1): reading the file,
//! protobuf decoding, building the model (tract parse and declutter, then
//! the batch-1 plan: fewstep's graph rewrites, Winograd kernel timing,
//! tract's optimisation), the first 4-step image and a second one.
//!
//!   cargo run --release -p fewstep --example startup -- MODEL.onnx [winograd|direct] [estimate|measure|FILE] [THREADS] [BATCH]
//!
//! With `direct`, the model is built with Winograd first (as `Model` always
//! is) and re-planned for the direct convolution inside "first image". The
//! third argument is the Winograd kernel choice (`fewstep::KernelTuning`):
//! estimated (the default), timed, or timed once and kept in FILE. THREADS
//! (default 1) and BATCH (default 1) shape both images (the default
//! execution: image by image, up to THREADS at once). The last field,
//! "per step", is the second image's time over its 4 steps.
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: startup MODEL.onnx [winograd|direct]");
    let conv = args.next().unwrap_or_else(|| "winograd".into());
    let tuning = match args.next().as_deref() {
        None | Some("estimate") => fewstep::KernelTuning::Estimate,
        Some("measure") => fewstep::KernelTuning::Measure,
        Some(file) => fewstep::KernelTuning::Cached(file.into()),
    };
    fewstep::set_kernel_tuning(tuning.clone());
    let threads: usize = args.next().map_or(1, |a| a.parse().expect("THREADS"));
    let batch: usize = args.next().map_or(1, |a| a.parse().expect("BATCH"));
    let t0 = Instant::now();
    let bytes = std::fs::read(&path).expect("read the model");
    let read = t0.elapsed();
    let proto = fewstep::decode(&bytes).expect("decode");
    let decoded = t0.elapsed();
    let mut model = fewstep::Model::from_proto(&proto, None).expect("build");
    let built = t0.elapsed();
    if conv == "direct" {
        model = model.with_conv_algorithm(fewstep::ConvAlgorithm::Direct);
    }
    let steps = 4;
    let run = |seed| {
        model
            .generate()
            .steps(steps)
            .seed(seed)
            .batch(batch)
            .threads(threads)
            .run()
            .expect("generate")
    };
    run(0);
    let first = t0.elapsed();
    run(1);
    let second = t0.elapsed();
    println!(
        "{path} ({conv}, {tuning:?}, {threads} threads, batch {batch}): read {:.1} ms | decode {:.1} | build {:.1} | first image {:.1} | second image {:.1} | start to first image {:.1} ms | per step {:.2} ms",
        ms(read),
        ms(decoded - read),
        ms(built - decoded),
        ms(first - built),
        ms(second - first),
        ms(first),
        ms(second - first) / f64::from(steps)
    );
}
