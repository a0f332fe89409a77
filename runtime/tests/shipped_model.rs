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
