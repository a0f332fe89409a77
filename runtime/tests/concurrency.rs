//! One shared model, 8 threads x 100 generations: every result is
//! bit-identical to the same generation run serially. Covers both execution
//! modes, several threads inside a call (shared thread pools), guidance and
//! labels, and generations that build new batch plans concurrently.

mod common;

use std::sync::Arc;

use common::*;
use fewstep::{Execution, Model};

const THREADS: usize = 8;
const GENERATIONS: usize = 100;

/// Generation `g`: its seed, batch, label, guidance, execution mode and
/// per-call thread count all vary with `g`.
fn generate(m: &Model, g: usize) -> Vec<f32> {
    let execution = if g % 4 == 3 {
        Execution::Batched
    } else {
        Execution::PerImage
    };
    let mut req = m
        .generate()
        .seed(500 + g as u64)
        .batch(1 + g % 3)
        .steps(2 + (g % 2) as u32)
        .threads(1 + g % 2)
        .execution(execution);
    // Classes 0..3, or no label (the null label).
    if g % 4 != 3 {
        req = req.label((g % 4) as i64);
    }
    if g.is_multiple_of(5) {
        req = req.guidance(1.5);
    }
    req.run().unwrap().data().to_vec()
}

#[test]
fn eight_threads_by_100_generations_match_a_serial_run() {
    let spec = GaussSpec::new(3, 4, 4, "v", Sched::Cosine).conditional(3);
    let model = Arc::new(Model::from_bytes(&spec.bytes()).unwrap());
    let serial: Vec<Vec<f32>> = (0..GENERATIONS).map(|g| generate(&model, g)).collect();
    // The comparison can fail: different generations differ.
    assert_ne!(serial[0], serial[3]);
    assert_ne!(serial[1][..48], serial[4][..48]);

    // A fresh model, so plans and thread pools are also built concurrently.
    let model = Arc::new(Model::from_bytes(&spec.bytes()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let model = model.clone();
            std::thread::spawn(move || {
                // Each thread starts at a different generation.
                (0..GENERATIONS)
                    .map(|k| {
                        let g = (k + 13 * i) % GENERATIONS;
                        (g, generate(&model, g))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for h in handles {
        for (g, out) in h.join().expect("a generation thread panicked") {
            // Bitwise: compare the bit patterns, not float equality.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&serial[g]), "generation {g}");
            checked += 1;
        }
    }
    assert_eq!(checked, THREADS * GENERATIONS);
}

/// One request of the mixed test: every setting that selects a different
/// code path varies with `g` (threads: the default, 1, 2, 3; batch 1..=4;
/// both execution modes; guidance; one label, per-image labels or none;
/// a progress callback; a cancellation at step 2).
#[derive(Debug, Clone, Copy)]
struct Mixed {
    threads: Option<usize>,
    batch: usize,
    execution: Execution,
    guidance: f32,
    labels: u8,
    progress: bool,
    cancel_at: Option<u32>,
}

impl Mixed {
    fn of(g: usize) -> Self {
        Mixed {
            threads: [None, Some(1), Some(2), Some(3)][g % 4],
            batch: 1 + (g / 4) % 4,
            execution: if (g / 3) % 3 == 2 {
                Execution::Batched
            } else {
                Execution::PerImage
            },
            guidance: if (g / 2) % 3 == 1 { 2.0 } else { 1.0 },
            labels: (g % 3) as u8,
            progress: g % 5 < 3,
            cancel_at: (g % 7 == 6).then_some(2),
        }
    }

    /// Runs it: the images, whether partial, and the progress calls seen.
    fn run(self, m: &Model, seed: u64) -> (Vec<u32>, bool, u32) {
        let mut calls = 0u32;
        let token = fewstep::CancelToken::new();
        let mut req = m
            .generate()
            .seed(seed)
            .batch(self.batch)
            .execution(self.execution)
            .guidance(self.guidance);
        if let Some(t) = self.threads {
            req = req.threads(t);
        }
        req = match self.labels {
            0 => req,
            1 => req.label(7),
            _ => req.labels((0..self.batch as i64).map(|i| (i * 3) % 10).collect()),
        };
        if let Some(at) = self.cancel_at {
            let flag = token.clone();
            req = req.cancel(token).on_progress(move |p| {
                if p.step == at {
                    flag.cancel();
                }
            });
        } else if self.progress {
            req = req.on_progress(|p| {
                assert!(p.step >= 1 && p.step <= p.steps);
                calls += 1;
            });
        }
        let images = req.run().unwrap_or_else(|e| panic!("{self:?}: {e}"));
        let bits = images.data().iter().map(|x| x.to_bits()).collect();
        (bits, images.is_partial(), calls)
    }
}

/// The previously shipped 4-step Fashion-MNIST model (tests/data; its
/// matrix products are large enough to be split across threads, unlike the
/// Gaussian test models', and it is 45 k parameters, so hundreds of calls
/// stay cheap), shared by 6 threads
/// running every mix of settings at once, twice: each result is bit-identical to
/// the same request run alone. Before pools were leased per call, 4-11 % of
/// such calls panicked inside tract ("RefCell already borrowed", issue 19).
#[test]
fn six_callers_mixing_every_setting_match_a_serial_run() {
    const CALLERS: usize = 6;
    const PER_CALLER: usize = 24;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmnist-tiny-cd4.onnx");
    let bytes = std::fs::read(path).expect("the test model");
    let model = Model::from_bytes(&bytes).expect("loads");
    let serial: Vec<_> = (0..PER_CALLER)
        .map(|g| Mixed::of(g).run(&model, 900 + g as u64))
        .collect();
    // The comparison can fail: different requests differ.
    assert_ne!(serial[0].0[..784], serial[1].0[..784]);
    for (g, (_, partial, calls)) in serial.iter().enumerate() {
        let m = Mixed::of(g);
        assert_eq!(*partial, m.cancel_at.is_some(), "{m:?}");
        if m.progress && m.cancel_at.is_none() {
            assert_eq!(*calls, 4, "{m:?}: one progress call per step");
        }
    }

    // Round 0 on a fresh model (plans and pools are also made concurrently),
    // round 1 on the same model with its plans and idle pools in place.
    let model = Arc::new(Model::from_bytes(&bytes).expect("loads"));
    let mut checked = 0;
    for round in 0..2 {
        let handles: Vec<_> = (0..CALLERS)
            .map(|i| {
                let model = model.clone();
                std::thread::spawn(move || {
                    (0..PER_CALLER)
                        .map(|k| {
                            let g = (k + 5 * i + round) % PER_CALLER;
                            (g, Mixed::of(g).run(&model, 900 + g as u64))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (g, got) in h.join().expect("a caller panicked") {
                assert!(
                    got == serial[g],
                    "round {round}: request {g} ({:?}) differs from its serial run",
                    Mixed::of(g)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * CALLERS * PER_CALLER);
}
