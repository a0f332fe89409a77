//! Spinning or sleeping helper threads (`PoolWait`): wall time and CPU time
//! per image, at 1 and 2 threads per call, with one caller and with twice
//! as many busy threads as cores (oversubscribed callers). The numbers behind
//! the default (`docs/PERFORMANCE.md`, "Spinning or sleeping helpers").
//!
//!   cargo run --release -p fewstep --example pool_wait -- [MODEL.onnx] [SECONDS]
//!
//! CPU time is the process's user + system time (Linux `/proc/self/stat`,
//! 10 ms ticks): what the battery pays.
use std::sync::Arc;
use std::time::{Duration, Instant};

use fewstep::{Model, PoolWait};

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "examples/models/fmnist-cd4.onnx".into());
    let seconds: f64 = args.next().map_or(3.0, |s| s.parse().expect("SECONDS"));
    let model = Arc::new(Model::load(&path).expect("model loads"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("model {path}, {cores} cores, batch 1, {seconds} s per row");
    println!(
        "| threads per call | callers | busy threads / cores | wait | ms per image (wall, per caller) | images/s (all callers) | CPU ms per image |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|");
    for threads in [1usize, 2] {
        // One caller, then enough callers for twice as many threads as cores.
        for callers in [1usize, (2 * cores).div_ceil(threads)] {
            for wait in PoolWait::ALL {
                if threads == 1 && wait == PoolWait::Sleep {
                    continue; // no helpers: the same as spin
                }
                // Warm-up: plans, pools, kernel choices.
                model
                    .generate()
                    .threads(threads)
                    .pool_wait(wait)
                    .run()
                    .unwrap();
                let cpu0 = cpu_seconds();
                let t0 = Instant::now();
                let deadline = t0 + Duration::from_secs_f64(seconds);
                let per_caller: Vec<(usize, Duration)> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..callers)
                        .map(|c| {
                            let model = Arc::clone(&model);
                            s.spawn(move || {
                                let start = Instant::now();
                                let mut n = 0usize;
                                while Instant::now() < deadline {
                                    model
                                        .generate()
                                        .seed((c * 100_000 + n) as u64)
                                        .threads(threads)
                                        .pool_wait(wait)
                                        .run()
                                        .unwrap();
                                    n += 1;
                                }
                                (n, start.elapsed())
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let wall = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds() - cpu0;
                let images: usize = per_caller.iter().map(|(n, _)| n).sum();
                let ms_per_image = per_caller
                    .iter()
                    .map(|(n, d)| d.as_secs_f64() * 1e3 / *n as f64)
                    .sum::<f64>()
                    / callers as f64;
                println!(
                    "| {threads} | {callers} | {:.1} | {wait} | {ms_per_image:.1} | {:.1} | {:.1} |",
                    (threads * callers) as f64 / cores as f64,
                    images as f64 / wall,
                    cpu * 1e3 / images as f64,
                );
            }
        }
    }
}
