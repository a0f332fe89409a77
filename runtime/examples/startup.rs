//! Time to first image, broken down (issue 16 §1): reading the file,
//! protobuf decoding, building the model (tract parse and declutter, then
//! the batch-1 plan: fewstep's graph rewrites, Winograd kernel timing,
//! tract's optimisation), the first 4-step image and a second one.
//!
//!   cargo run --release -p fewstep --example startup -- MODEL.onnx [winograd|direct] [estimate|measure|FILE]
//!
//! With `direct`, the model is built with Winograd first (as `Model` always
//! is) and re-planned for the direct convolution inside "first image". The
//! third argument is the Winograd kernel choice (`fewstep::KernelTuning`):
//! estimated (the default), timed, or timed once and kept in FILE.
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
    model.generate().seed(0).threads(1).run().expect("generate");
    let first = t0.elapsed();
    model.generate().seed(1).threads(1).run().expect("generate");
    let second = t0.elapsed();
    println!(
        "{path} ({conv}, {tuning:?}): read {:.1} ms | decode {:.1} | build {:.1} | first image {:.1} | second image {:.1} | start to first image {:.1} ms",
        ms(read),
        ms(decoded - read),
        ms(built - decoded),
        ms(first - built),
        ms(second - first),
        ms(first)
    );
}
