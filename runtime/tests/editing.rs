//! Image editing with exact-denoiser models: img2img at strength 1 is the
//! plain generation, the known region of an inpainting is kept to the bit,
//! broadcast forms agree, and every wrong input is a named error.

mod common;

use common::*;
use fewstep::{GenerateError, Model, SamplerChoice};

fn load(spec: &GaussSpec) -> Model {
    Model::from_bytes(&spec.bytes()).expect("test model loads")
}

/// A consistency model (T = 4) of `c×4×4` images, with 3 classes.
fn cm(c: usize) -> GaussSpec {
    let mut spec = GaussSpec::new(c, 4, 4, "v", Sched::Cosine).conditional(3);
    spec.student_steps = 4;
    spec
}

fn init_image(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0)
        .collect()
}

#[test]
fn strength_one_is_plain_generation_to_the_bit() {
    for spec in [cm(2), GaussSpec::new(1, 4, 4, "eps", Sched::Shifted(0.5))] {
        let model = load(&spec);
        let d = spec.d();
        let plain = model.generate().seed(5).batch(3).run().unwrap();
        let edited = model
            .generate()
            .seed(5)
            .batch(3)
            .init(init_image(3, d))
            .strength(1.0)
            .run()
            .unwrap();
        assert_eq!(plain.data(), edited.data());
        assert_eq!(plain.steps_done(), edited.steps_done());
    }
}

#[test]
fn img2img_starts_on_a_segment_boundary() {
    let spec = cm(1);
    let model = load(&spec);
    let d = spec.d();
    let init = init_image(1, d);
    for (s, k) in [(0.1, 1), (0.25, 1), (0.3, 2), (0.5, 2), (0.75, 3), (0.9, 4)] {
        let mut times = Vec::new();
        let out = model
            .generate()
            .seed(1)
            .init(init.clone())
            .strength(s)
            .label(2)
            .on_progress(|p| times.push(p.t))
            .run()
            .unwrap();
        assert_eq!(out.steps_done(), k, "strength {s}");
        let want: Vec<f64> = (1..=k).rev().map(|j| f64::from(j) / 4.0).collect();
        assert_eq!(times, want, "strength {s}");
    }
    // A diffusion model starts at t = s.
    let spec = GaussSpec::new(1, 4, 4, "x", Sched::Cosine);
    let model = load(&spec);
    let mut first = None;
    model
        .generate()
        .init(init)
        .strength(0.4)
        .steps(8)
        .on_progress(|p| {
            first.get_or_insert(p.t);
        })
        .run()
        .unwrap();
    assert!((first.unwrap() - 0.4).abs() < 1e-12);
}

#[test]
fn low_strength_stays_near_the_init_image() {
    // The data model is a Gaussian; a small strength moves the init image
    // much less than a plain sample differs from it.
    let spec = GaussSpec::new(1, 4, 4, "eps", Sched::Cosine);
    let model = load(&spec);
    let d = spec.d();
    let init = init_image(4, d);
    let dist = |a: &[f32]| {
        a.iter()
            .zip(&init)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let near = model
        .generate()
        .seed(2)
        .batch(4)
        .init(init.clone())
        .strength(0.1)
        .steps(4)
        .run()
        .unwrap();
    let far = model.generate().seed(2).batch(4).steps(4).run().unwrap();
    assert!(
        dist(near.data()) < 0.3 * dist(far.data()),
        "{} vs {}",
        dist(near.data()),
        dist(far.data())
    );
}

#[test]
fn inpainting_keeps_the_known_region_to_the_bit() {
    let spec = cm(3);
    let model = load(&spec);
    let d = spec.d();
    let plane = 16;
    let init = init_image(2, d);
    // [H,W] mask: the left half is kept.
    let mask: Vec<f32> = (0..plane)
        .map(|i| if i % 4 < 2 { 0.0 } else { 1.0 })
        .collect();
    for sampler in [SamplerChoice::Ddim, SamplerChoice::Addim] {
        for strength in [1.0, 0.5] {
            let out = model
                .generate()
                .seed(9)
                .batch(2)
                .label(1)
                .sampler(sampler)
                .init(init.clone())
                .mask(mask.clone())
                .strength(strength)
                .run()
                .unwrap();
            for (i, (&v, &x0)) in out.data().iter().zip(&init).enumerate() {
                if mask[i % plane] == 0.0 {
                    assert_eq!(
                        v.to_bits(),
                        x0.to_bits(),
                        "{sampler:?} s={strength} value {i}"
                    );
                }
            }
            let changed = out
                .data()
                .iter()
                .zip(&init)
                .enumerate()
                .filter(|(i, (v, x))| mask[i % plane] == 1.0 && v != x)
                .count();
            assert_eq!(changed, 2 * d / 2, "every generated value is new");
        }
    }
}

#[test]
fn mask_and_init_broadcast_forms_agree() {
    let spec = cm(2);
    let model = load(&spec);
    let d = spec.d();
    let plane = 16;
    let one = init_image(1, d);
    let hw: Vec<f32> = (0..plane).map(|i| if i < 8 { 0.0 } else { 1.0 }).collect();
    let run = |init: Vec<f32>, mask: Vec<f32>| {
        model
            .generate()
            .seed(3)
            .batch(2)
            .init(init)
            .mask(mask)
            .run()
            .unwrap()
            .into_data()
    };
    let full_init = one.repeat(2);
    let chw_mask: Vec<f32> = hw.repeat(2);
    let nhw_mask: Vec<f32> = hw.repeat(2);
    let nchw_mask: Vec<f32> = hw.repeat(4);
    let a = run(one.clone(), hw.clone());
    assert_eq!(a, run(full_init.clone(), hw.clone()));
    assert_eq!(a, run(one.clone(), chw_mask));
    assert_eq!(a, run(one.clone(), nhw_mask));
    assert_eq!(a, run(full_init, nchw_mask));
}

#[test]
fn editing_errors_are_named() {
    let spec = cm(1);
    let model = load(&spec);
    let d = spec.d();
    let err = |r: Result<fewstep::Images, GenerateError>| r.unwrap_err();
    let e = err(model.generate().batch(2).init(vec![0.0; 3]).run());
    assert!(
        matches!(
            e,
            GenerateError::EditShape {
                what: "init image",
                actual: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("init image has 3 values"), "{e}");
    let rgb = load(&cm(3));
    let e = err(rgb
        .generate()
        .init(vec![0.0; 3 * 16])
        .mask(vec![1.0; 5])
        .run());
    assert!(
        e.to_string().contains("mask has 5 values") && e.to_string().contains("H*W"),
        "{e}"
    );
    let e = err(model.generate().mask(vec![1.0; d]).run());
    assert!(matches!(e, GenerateError::MaskWithoutInit), "{e}");
    let e = err(model.generate().strength(0.5).run());
    assert!(matches!(e, GenerateError::StrengthWithoutInit), "{e}");
    for s in [0.0, -1.0, 1.5, f64::NAN] {
        let e = err(model.generate().init(vec![0.0; d]).strength(s).run());
        assert!(
            matches!(e, GenerateError::Plan(fewstep::PlanError::BadStrength)),
            "{s}: {e}"
        );
    }
    let mut m = vec![1.0; d];
    m[4] = 2.0;
    let e = err(model.generate().init(vec![0.0; d]).mask(m).run());
    assert!(matches!(e, GenerateError::MaskValue { index: 4 }), "{e}");
    let mut x = vec![0.0; d];
    x[1] = f32::NAN;
    let e = err(model.generate().init(x).run());
    assert!(matches!(e, GenerateError::InitNotFinite), "{e}");
}
