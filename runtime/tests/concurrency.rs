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
        .label((g % 4) as i64)
        .threads(1 + g % 2)
        .execution(execution);
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
