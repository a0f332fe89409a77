//! Winograd F(2×2, 3×3) convolutions (the default) against tract's direct
//! convolution, on a small convolutional network with the shapes that matter:
//! an odd image height (a cropped tile row), asymmetric padding, a bias that
//! tract folds with a time embedding, and layers too narrow to rewrite.

mod common;

use common::*;
use fewstep::{ConvAlgorithm, Execution, Model};

/// `z [N,3,9,12]`, `t [N]` → four 3×3 convolutions (3→32→40→32→3) with
/// ReLUs, the time added after the first. The last three have ≥ 16 input
/// channels, so they are the ones rewritten.
fn conv_net() -> Model {
    let mut g = Graph::default();
    g.input("z", FLOAT, &[None, Some(3), Some(9), Some(12)]);
    g.input("t", FLOAT, &[None]);
    g.output("out", FLOAT, &[None, Some(3), Some(9), Some(12)]);
    let layers: [(usize, usize, [i64; 4]); 4] = [
        (3, 32, [1, 1, 1, 1]),
        (32, 40, [1, 1, 1, 1]),
        (40, 32, [0, 1, 2, 1]),
        (32, 3, [1, 1, 1, 1]),
    ];
    g.init_i64("shape4", &[4], &[-1, 1, 1, 1]);
    g.node("Reshape", &["t", "shape4"], "t4");
    let mut x = "z".to_string();
    for (i, (cin, cout, pads)) in layers.into_iter().enumerate() {
        let scale = 1.0 / (9.0 * cin as f32).sqrt();
        let w: Vec<f32> = test_noise(cout * cin * 9, 10 + i as u64)
            .iter()
            .map(|v| v * scale)
            .collect();
        let b: Vec<f32> = test_noise(cout, 20 + i as u64)
            .iter()
            .map(|v| 0.1 * v)
            .collect();
        g.init_f32(&format!("w{i}"), &[cout as i64, cin as i64, 3, 3], &w);
        g.init_f32(&format!("b{i}"), &[cout as i64], &b);
        let conv = format!("conv{i}");
        g.node_attrs(
            "Conv",
            &[&x, &format!("w{i}"), &format!("b{i}")],
            &conv,
            vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &pads)],
        );
        x = match i {
            0 => {
                g.node("Add", &[&conv, "t4"], "conv0t");
                g.node("Relu", &["conv0t"], "act0");
                "act0".into()
            }
            3 => conv,
            _ => {
                let act = format!("act{i}");
                g.node("Relu", &[&conv], &act);
                act
            }
        };
    }
    g.node("Identity", &[&x], "out");
    let p = g.finish(&[
        ("fewstep.format", "1".into()),
        ("fewstep.prediction", "v".into()),
        ("fewstep.schedule", "cosine".into()),
        ("fewstep.student_steps", "0".into()),
        ("fewstep.image", "3,9,12".into()),
    ]);
    Model::from_proto(&p, None).expect("the test network loads")
}

fn sample(model: &Model, batch: usize, threads: usize, execution: Execution) -> Vec<f32> {
    model
        .generate()
        .batch(batch)
        .seed(5)
        .steps(2)
        .threads(threads)
        .execution(execution)
        .run()
        .expect("generates")
        .into_data()
}

#[test]
fn only_wide_3x3_convolutions_are_rewritten() {
    let model = conv_net();
    assert_eq!(model.conv_algorithm(), ConvAlgorithm::Winograd);
    assert_eq!(model.winograd_convolutions().unwrap(), (3, 4));
}

#[test]
fn winograd_matches_the_direct_convolution() {
    let winograd = conv_net();
    let direct = conv_net().with_conv_algorithm(ConvAlgorithm::Direct);
    let a = sample(&winograd, 3, 1, Execution::PerImage);
    let b = sample(&direct, 3, 1, Execution::PerImage);
    assert!(a.iter().all(|v| v.is_finite()));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(scale > 0.1, "a non-trivial output: {scale}");
    assert!(err < 1e-5 * scale.max(1.0), "max |difference| {err}");
    assert!(a != b, "the rewrite ran (different rounding)");
    // Switching back gives the direct result exactly.
    let back = winograd.with_conv_algorithm(ConvAlgorithm::Direct);
    assert_eq!(sample(&back, 3, 1, Execution::PerImage), b);
}

#[test]
fn winograd_is_deterministic_across_batch_and_threads() {
    let model = conv_net();
    let one = sample(&model, 3, 1, Execution::PerImage);
    assert_eq!(sample(&model, 3, 2, Execution::PerImage), one);
    let d = 3 * 9 * 12;
    assert_eq!(sample(&model, 1, 1, Execution::PerImage)[..], one[..d]);
    // Fewer images than threads: still the same plan, the same bits.
    assert_eq!(sample(&model, 1, 2, Execution::PerImage)[..], one[..d]);
    // One batch-3 plan: transforms and products over all images at once.
    let batched = sample(&model, 3, 2, Execution::Batched);
    let err = batched
        .iter()
        .zip(&one)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-5, "batched vs per image: {err}");
}
