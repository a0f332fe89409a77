//! The model the README's first command samples (examples/models/) loads,
//! says what it is, and generates sane images in its 4 steps.

use fewstep::Model;
use std::path::PathBuf;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/models/fmnist-cd4.onnx")
}

#[test]
fn shipped_fmnist_cd4_model_generates_in_four_steps() {
    let model = Model::load(shipped()).expect("the shipped model loads");
    let meta = model.metadata();
    assert_eq!(meta.student_steps.0, 4, "a 4-step consistency model");
    assert_eq!(
        (meta.image.channels, meta.image.height, meta.image.width),
        (1, 28, 28)
    );
    assert_eq!(meta.num_classes, 10);

    // Two images per class, as the quickstart's grid asks for them.
    let labels: Vec<i64> = (0..20).map(|i| i % 10).collect();
    let mut steps = 0;
    let images = model
        .generate()
        .batch(20)
        .seed(0)
        .labels(labels)
        .threads(1)
        .on_progress(|_| steps += 1)
        .run()
        .expect("generation runs");
    assert_eq!(steps, 4, "one progress call per network evaluation");
    let x = images.data();
    assert_eq!(x.len(), 20 * 28 * 28);
    assert!(x.iter().all(|v| v.is_finite()));
    // A trained model gives images, not noise: near the data range [-1, 1]
    // (unclipped x_hat overshoots a little) and a dark background
    // (Fashion-MNIST's is -1).
    assert!(
        x.iter().all(|v| v.abs() <= 2.5),
        "values far outside [-1, 1]"
    );
    let inside = x.iter().filter(|v| v.abs() <= 1.05).count();
    assert!(
        inside as f64 > 0.8 * x.len() as f64,
        "{inside} of {}",
        x.len()
    );
    let dark = x.iter().filter(|v| **v < -0.5).count();
    assert!(
        dark as f64 > 0.3 * x.len() as f64,
        "only {dark} dark pixels"
    );
}

/// A cancel from another thread lands inside a network evaluation (16
/// images of the 3.9 M-parameter model on one thread take far longer than
/// the 5 ms the canceller waits): the call stops at the next operator and
/// returns the last completed step's estimate, flagged partial.
#[test]
fn cancel_from_another_thread_stops_inside_a_forward() {
    let model = Model::load(shipped()).expect("the shipped model loads");
    let token = fewstep::CancelToken::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            if rx.recv().is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(5));
                token.cancel();
            }
        })
    };
    let mut previews: Vec<Vec<f32>> = Vec::new();
    let out = model
        .generate()
        .batch(16)
        .seed(3)
        .threads(1)
        .cancel(token)
        .on_progress(|p| {
            previews.push(p.x_hat.to_vec());
            if p.step == 1 {
                tx.send(()).ok();
            }
        })
        .run()
        .expect("a cancelled call with a completed step returns its estimate");
    canceller.join().unwrap();
    assert!(out.is_partial());
    assert!(
        out.steps_done() < 4,
        "stopped before the end: {}",
        out.steps_done()
    );
    assert_eq!(out.steps_done() as usize, previews.len());
    assert_eq!(out.data(), previews.last().unwrap().as_slice());
}
