//! Resource limits: a request whose estimated memory exceeds the budget is
//! refused up front with `GenerateError::MemoryBudget` (never an OOM kill,
//! never a capacity-overflow panic), from the Rust API and the CLI.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fewstep::{DEFAULT_MEMORY_BUDGET, Execution, GenerateError, Model};

fn model() -> Model {
    Model::from_bytes(&GaussSpec::new(3, 8, 8, "v", Sched::Cosine).bytes()).unwrap()
}

fn assert_refused(r: Result<fewstep::Images, GenerateError>, batch: usize) -> (u64, u64) {
    match r {
        Err(GenerateError::MemoryBudget {
            needed,
            budget,
            batch: b,
        }) => {
            assert_eq!(b, batch);
            assert!(
                needed > budget || needed == u64::MAX,
                "{needed} <= {budget}"
            );
            (needed, budget)
        }
        Err(e) => panic!("batch {batch}: wrong error {e}"),
        Ok(_) => panic!("batch {batch}: not refused"),
    }
}

#[test]
fn huge_batches_are_refused_quickly_before_allocating() {
    let m = model();
    for batch in [1usize << 30, 1 << 40, usize::MAX / 2, usize::MAX] {
        let t0 = Instant::now();
        let r = m.generate().batch(batch).threads(1).run();
        let (needed, budget) = assert_refused(r, batch);
        assert_eq!(budget, DEFAULT_MEMORY_BUDGET);
        assert!(needed > DEFAULT_MEMORY_BUDGET);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "batch {batch} took {:?}",
            t0.elapsed()
        );
    }
    // Even an unlimited budget cannot make a batch whose size overflows run.
    let r = m
        .generate()
        .batch(usize::MAX)
        .threads(1)
        .memory_budget(u64::MAX)
        .run();
    assert_refused(r, usize::MAX);
    // The message names the batch and both sizes.
    let e = m.generate().batch(1 << 40).run().unwrap_err().to_string();
    assert!(
        e.contains("batch of 1099511627776") && e.contains("memory budget of 512 MiB"),
        "{e}"
    );
}

#[test]
fn the_budget_is_configurable_per_request_and_per_model() {
    let m = model();
    let one = m.memory_estimate(1, false, Execution::PerImage, 1).total();
    let two = m.memory_estimate(2, false, Execution::PerImage, 1).total();
    assert!(one > 0 && two > one, "{one} {two}");
    // A budget between the two: batch 1 runs, batch 2 is refused.
    let budget = (one + two) / 2;
    let img = m
        .generate()
        .batch(1)
        .threads(1)
        .steps(2)
        .memory_budget(budget)
        .run()
        .unwrap();
    assert_eq!(img.batch(), 1);
    let r = m
        .generate()
        .batch(2)
        .threads(1)
        .steps(2)
        .memory_budget(budget)
        .run();
    assert_eq!(assert_refused(r, 2), (two, budget));

    // The same through the model's default; a request's own budget wins.
    let m = model().with_memory_budget(budget);
    assert_eq!(m.memory_budget(), budget);
    assert_refused(m.generate().batch(2).threads(1).steps(2).run(), 2);
    m.generate()
        .batch(2)
        .threads(1)
        .steps(2)
        .memory_budget(two)
        .run()
        .unwrap();
}

#[test]
fn the_estimate_counts_guidance_threads_and_execution() {
    let spec = GaussSpec::new(3, 8, 8, "v", Sched::Cosine).conditional(3);
    let m = Model::from_bytes(&spec.bytes()).unwrap();
    let plain = m.memory_estimate(8, false, Execution::PerImage, 1);
    let guided = m.memory_estimate(8, true, Execution::PerImage, 1);
    assert!(guided.buffers > plain.buffers);
    // Per image with one thread: one image's activations at a time.
    assert_eq!(plain.activations, guided.activations);
    let four = m.memory_estimate(8, false, Execution::PerImage, 4);
    assert_eq!(four.activations, 4 * plain.activations);
    let batched = m.memory_estimate(8, false, Execution::Batched, 1);
    assert_eq!(batched.activations, 8 * plain.activations);
    // Saturates instead of overflowing.
    assert_eq!(
        m.memory_estimate(usize::MAX, true, Execution::Batched, 1)
            .total(),
        u64::MAX
    );
    // Guidance is refused for its doubled size, without guidance it fits.
    let budget = m.memory_estimate(8, false, Execution::PerImage, 1).total();
    m.generate()
        .batch(8)
        .label(1)
        .threads(1)
        .steps(2)
        .memory_budget(budget)
        .run()
        .unwrap();
    let r = m
        .generate()
        .batch(8)
        .label(1)
        .guidance(2.0)
        .threads(1)
        .steps(2)
        .memory_budget(budget)
        .run();
    assert_refused(r, 8);
}

#[test]
fn absurd_thread_counts_are_refused_not_spawned() {
    let m = model();
    for threads in [1usize << 20, u32::MAX as usize, usize::MAX] {
        let t0 = Instant::now();
        let r = m.generate().threads(threads).steps(2).run();
        assert_refused(r, 1);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
    let e = m.memory_estimate(1, false, Execution::PerImage, 8);
    assert_eq!(e.thread_stacks, 8 * (2 << 20));
    assert_eq!(
        m.memory_estimate(1, false, Execution::PerImage, 1)
            .thread_stacks,
        0
    );
}

#[test]
fn endless_and_special_files_are_refused_not_read() {
    for path in ["/dev/zero", "/dev/urandom", "/tmp"] {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        let t0 = Instant::now();
        let e = Model::load(path).unwrap_err();
        assert!(matches!(e, fewstep::LoadError::Io { .. }), "{path}: {e}");
        assert!(e.to_string().contains(path), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}

#[test]
fn cli_memory_budget_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, GaussSpec::new(3, 8, 8, "v", Sched::Cosine).bytes()).unwrap();
    let out = dir.path().join("o.npy");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fewstep"))
            .args(["generate", "--model", model.to_str().unwrap()])
            .args(["--steps", "2", "--quiet", "--threads", "1", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    // A huge batch under the default budget: a one-line error, exit 1.
    let o = run(&["--batch", "100000000000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("over the memory budget of 512 MiB"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A small explicit budget refuses a small batch.
    let o = run(&["--batch", "4", "--memory-budget", "1K"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("over the memory budget of 0 MiB"), "{err}");
    // A generous one runs.
    let o = run(&["--batch", "4", "--memory-budget", "512M"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A bad size is an argument error (exit 2) naming the value.
    let o = run(&["--memory-budget", "12X"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown unit `X`"), "{err}");
}
