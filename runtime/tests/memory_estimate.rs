//! `Model::memory_estimate` is an upper bound of what a generation really
//! takes, and not a wild one: each request's heap peak over the heap in use
//! after the load, counted by a global allocator, against the estimate, for
//! both executions, one and two threads, with and without guidance
//! (`bench/generate_memory.sh` measures the same with RSS, in release).
//!
//! The allocator counts the whole process: the tests here take turns
//! (`SERIAL`), and nothing else runs in this binary.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::Counting;
use fewstep::{Execution, Model};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn tiny_model() -> Model {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fmnist-tiny-cd4.onnx"
    );
    Model::load(path).expect("load the 45 k model")
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The estimate may over-count (im2col and packing scratch are budgeted at
/// the worst case), but not by more than this: session 11 measured 1.7–4.3×
/// in release; 10–16× was the defect this guards against.
const MAX_OVER_ESTIMATE: f64 = 6.0;

#[test]
fn the_estimate_bounds_the_measured_heap_peak() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let model = tiny_model();
    let classes = model.metadata().num_classes as i64;
    let mut table = Vec::new();
    for execution in [Execution::PerImage, Execution::Batched] {
        for (batch, threads) in [(1, 1), (4, 1), (4, 2), (8, 2)] {
            for guided in [false, true] {
                if guided && classes == 0 {
                    continue;
                }
                let mut request = model
                    .generate()
                    .batch(batch)
                    .seed(7)
                    .threads(threads)
                    .execution(execution);
                if guided {
                    request = request
                        .labels((0..batch as i64).map(|i| i % classes).collect())
                        .guidance(2.0);
                }
                // A plan already built is not built again: then the
                // estimate's plan term is not what bounds the request.
                let rows = if guided { 2 * batch } else { batch };
                let planned = model.planned_batches().contains(&rows);
                let base = Counting::reset_peak();
                let images = request.run().expect("generate");
                let heap = (Counting::peak() - base) as u64;
                assert_eq!(images.data().len(), batch * model.metadata().image_len());
                drop(images);
                let estimate = model.memory_estimate(batch, guided, execution, threads);
                let bound = if planned {
                    estimate.total() - estimate.plan
                } else {
                    estimate.total()
                };
                table.push((execution, batch, threads, guided, heap, bound));
            }
        }
    }
    for &(execution, batch, threads, guided, heap, estimate) in &table {
        let ratio = estimate as f64 / heap.max(1) as f64;
        eprintln!(
            "{execution:?} batch {batch} threads {threads} guided {guided}: \
             heap peak {heap} B, estimate {estimate} B ({ratio:.2}x)"
        );
        assert!(
            estimate >= heap,
            "{execution:?} batch {batch} threads {threads} guided {guided}: \
             the estimate {estimate} B is below the measured heap peak {heap} B"
        );
        assert!(
            ratio <= MAX_OVER_ESTIMATE,
            "{execution:?} batch {batch} threads {threads} guided {guided}: \
             the estimate {estimate} B is {ratio:.1}x the measured heap peak {heap} B"
        );
    }
}

/// Each batch size a batched request asks for builds a plan with its own
/// packed weights; the model keeps two besides batch 1, so an app asking
/// for many sizes does not grow by a plan per size (it did: +28 MiB per
/// size for the shipped model).
#[test]
fn batched_plans_are_bounded() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let model = tiny_model();
    assert_eq!(
        model.planned_batches(),
        vec![1],
        "the load builds the batch-1 plan"
    );
    let batched = |batch: usize| {
        model
            .generate()
            .batch(batch)
            .seed(3)
            .threads(1)
            .execution(Execution::Batched)
            .run()
            .expect("generate");
        Counting::reset_peak()
    };
    batched(2);
    let two_plans = batched(3);
    assert_eq!(model.planned_batches(), vec![1, 2, 3]);
    batched(2);
    assert_eq!(
        model.planned_batches(),
        vec![1, 3, 2],
        "2 is the most recent"
    );
    for batch in 4..=8 {
        batched(batch);
    }
    let after_many = batched(9);
    assert_eq!(model.planned_batches(), vec![1, 8, 9]);
    // Seven more sizes, still two plans' worth of heap (one plan of this
    // model keeps ~1.7 MB).
    let growth = after_many.saturating_sub(two_plans);
    assert!(
        growth < 1 << 20,
        "the heap grew by {growth} B over seven more batch sizes"
    );
    // Per-image requests of any batch use the batch-1 plan only.
    model
        .generate()
        .batch(5)
        .threads(2)
        .run()
        .expect("generate");
    assert_eq!(model.planned_batches(), vec![1, 8, 9]);
}
