//! Exact-denoiser models: the runtime's samples equal an independent f64
//! step-by-step computation, for every prediction type and schedule kind,
//! and many-step samples match the known data distribution.

mod common;

use common::*;
use fewstep::{CancelToken, Execution, Model, PoolWait, SamplerChoice};

const SCHEDULES: [Sched; 3] = [
    Sched::Cosine,
    Sched::Shifted(0.5),
    Sched::Interpolated(0.25, 2.0),
];

fn load(spec: &GaussSpec) -> Model {
    Model::from_bytes(&spec.bytes()).expect("test model loads")
}

#[test]
fn ddim_and_addim_match_reference_for_every_prediction_and_schedule() {
    for pred in ["x", "eps", "v"] {
        for sched in SCHEDULES {
            let spec = GaussSpec::new(2, 3, 4, pred, sched);
            let model = load(&spec);
            let z0 = test_noise(3 * spec.d(), 11);
            for (choice, reference) in [
                (SamplerChoice::Ddim, RefSampler::Ddim),
                (SamplerChoice::Addim, RefSampler::Addim(None)),
            ] {
                let got = model
                    .generate()
                    .noise(z0.clone())
                    .steps(6)
                    .sampler(choice)
                    .threads(1)
                    .run()
                    .unwrap();
                assert!(!got.is_partial());
                assert_eq!(got.dims(), [3, 2, 3, 4]);
                let want = reference_sample(&spec, &z0, 6, reference, None, 1.0, false);
                let err = max_abs_diff(got.data(), &want);
                assert!(err < 5e-4, "{pred} {sched:?} {choice:?}: max error {err}");
            }
        }
    }
}

#[test]
fn auto_sampler_is_addim_for_diffusion_and_ddim_for_consistency_models() {
    let spec = GaussSpec::new(1, 4, 4, "v", Sched::Cosine);
    let model = load(&spec);
    let z0 = test_noise(2 * spec.d(), 3);
    let got = model.generate().noise(z0.clone()).steps(5).run().unwrap();
    let addim = reference_sample(&spec, &z0, 5, RefSampler::Addim(None), None, 1.0, false);
    let ddim = reference_sample(&spec, &z0, 5, RefSampler::Ddim, None, 1.0, false);
    assert!(max_abs_diff(got.data(), &addim) < 2e-3);
    assert!(
        max_abs_diff(got.data(), &ddim) > 1e-2,
        "aDDIM must differ from DDIM here"
    );

    let mut cm = spec.clone();
    cm.student_steps = 4;
    let model = load(&cm);
    let got = model.generate().noise(z0.clone()).run().unwrap();
    assert_eq!(got.steps_done(), 4);
    let ddim = reference_sample(&cm, &z0, 4, RefSampler::Ddim, None, 1.0, false);
    assert!(max_abs_diff(got.data(), &ddim) < 2e-3);
}

#[test]
fn addim_uses_the_models_xvar_table() {
    static TABLE: [f64; 3] = [0.0, 0.05, 0.2];
    let spec = GaussSpec::new(1, 4, 4, "eps", Sched::Cosine);
    let mut proto = spec.build();
    set_meta(&mut proto, "fewstep.addim_xvar", Some("0,0.05,0.2"));
    let model = Model::from_proto(&proto, None).unwrap();
    let z0 = test_noise(2 * spec.d(), 5);
    let got = model.generate().noise(z0.clone()).steps(4).run().unwrap();
    let want = reference_sample(
        &spec,
        &z0,
        4,
        RefSampler::Addim(Some(&TABLE)),
        None,
        1.0,
        false,
    );
    assert!(max_abs_diff(got.data(), &want) < 2e-3);
    let analytic = reference_sample(&spec, &z0, 4, RefSampler::Addim(None), None, 1.0, false);
    assert!(max_abs_diff(got.data(), &analytic) > 1e-2);
}

#[test]
fn many_step_samples_match_the_data_distribution() {
    // x ~ N(mu, s2) per pixel with one mu and s2 for all pixels: pool all
    // pixels of all images.
    for (choice, steps) in [(SamplerChoice::Ddim, 100), (SamplerChoice::Addim, 100)] {
        let mut spec = GaussSpec::new(1, 8, 8, "v", Sched::Cosine);
        spec.mu = vec![vec![0.3; 64]];
        spec.s2 = vec![0.25; 64];
        let model = load(&spec);
        let out = model
            .generate()
            .seed(1)
            .batch(32)
            .steps(steps)
            .sampler(choice)
            .run()
            .unwrap();
        let v = out.data();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        // 2048 samples: sd of the mean 0.011, of the variance ~0.008.
        assert!((mean - 0.3).abs() < 0.05, "{choice:?}: mean {mean}");
        assert!((var - 0.25).abs() < 0.04, "{choice:?}: variance {var}");
    }
}

#[test]
fn seeded_noise_is_cores_per_image_stream_and_independent_of_batch() {
    let spec = GaussSpec::new(3, 4, 4, "x", Sched::Cosine);
    let model = load(&spec);
    let d = spec.d();
    let mut z0 = vec![0f32; 4 * d];
    fewstep::fewstep_core::rng::batch_noise(42, 0, d, &mut z0);
    let seeded = model.generate().seed(42).batch(4).steps(3).run().unwrap();
    let given = model.generate().noise(z0).steps(3).run().unwrap();
    assert_eq!(seeded.data(), given.data());
    // Image 2 of seed 42 alone (first_image 2) and within batches of 3 and 4.
    let alone = model
        .generate()
        .seed(42)
        .first_image(2)
        .steps(3)
        .run()
        .unwrap();
    let three = model.generate().seed(42).batch(3).steps(3).run().unwrap();
    assert_eq!(alone.image(0), seeded.image(2));
    assert_eq!(three.image(2), seeded.image(2));
}

#[test]
fn deterministic_across_batch_sizes_threads_and_execution_modes() {
    let spec = GaussSpec::new(2, 4, 4, "eps", Sched::Shifted(2.0));
    let model = load(&spec);
    let base = model
        .generate()
        .seed(9)
        .batch(5)
        .steps(4)
        .threads(1)
        .run()
        .unwrap();
    for threads in [1, 2, 3] {
        for batch in [1, 2, 5] {
            for wait in PoolWait::ALL {
                let r = model
                    .generate()
                    .seed(9)
                    .batch(batch)
                    .steps(4)
                    .threads(threads)
                    .pool_wait(wait)
                    .run()
                    .unwrap();
                for i in 0..batch {
                    assert_eq!(
                        r.image(i),
                        base.image(i),
                        "threads {threads} batch {batch} {wait}"
                    );
                }
            }
        }
    }
    for wait in PoolWait::ALL {
        assert_eq!(wait.as_str().parse::<PoolWait>(), Ok(wait));
    }
    assert!(
        "busy"
            .parse::<PoolWait>()
            .unwrap_err()
            .contains("spin or sleep")
    );
    let one_thread_model = Model::from_bytes(&spec.bytes()).unwrap().with_threads(1);
    let r = one_thread_model
        .generate()
        .seed(9)
        .batch(5)
        .steps(4)
        .run()
        .unwrap();
    assert_eq!(r.data(), base.data());
    let zero = Model::from_bytes(&spec.bytes()).unwrap().with_threads(0);
    assert!(matches!(
        zero.generate().run().unwrap_err(),
        fewstep::GenerateError::ZeroThreads
    ));
    let batched = model
        .generate()
        .seed(9)
        .batch(5)
        .steps(4)
        .threads(2)
        .execution(Execution::Batched)
        .run()
        .unwrap();
    let err = batched
        .data()
        .iter()
        .zip(base.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-5, "batched vs per-image: {err}");
}

#[test]
fn labels_select_the_class_and_guidance_matches_reference() {
    let spec = GaussSpec::new(1, 3, 3, "v", Sched::Cosine).conditional(3);
    let model = load(&spec);
    assert!(model.is_conditional());
    let z0 = test_noise(3 * spec.d(), 8);
    let labels = [0usize, 2, 1];
    for (w, clip) in [(1.0f32, false), (2.5, false), (3.0, true)] {
        for exec in [Execution::PerImage, Execution::Batched] {
            let got = model
                .generate()
                .noise(z0.clone())
                .labels(labels.iter().map(|&l| l as i64).collect())
                .guidance(w)
                .clip(clip)
                .steps(5)
                .execution(exec)
                .run()
                .unwrap();
            let want = reference_sample(
                &spec,
                &z0,
                5,
                RefSampler::Addim(None),
                Some(&labels),
                f64::from(w),
                clip,
            );
            let err = max_abs_diff(got.data(), &want);
            assert!(err < 3e-3, "w {w} clip {clip} {exec:?}: error {err}");
        }
    }
    // One label for all images; no label means the null label.
    let one = model
        .generate()
        .noise(z0.clone())
        .label(1)
        .steps(5)
        .run()
        .unwrap();
    let want = reference_sample(
        &spec,
        &z0,
        5,
        RefSampler::Addim(None),
        Some(&[1]),
        1.0,
        false,
    );
    assert!(max_abs_diff(one.data(), &want) < 3e-3);
    let none = model.generate().noise(z0.clone()).steps(5).run().unwrap();
    let want = reference_sample(
        &spec,
        &z0,
        5,
        RefSampler::Addim(None),
        Some(&[3]),
        1.0,
        false,
    );
    assert!(max_abs_diff(none.data(), &want) < 3e-3);
}

#[test]
fn progress_once_per_step_with_x_hat_preview() {
    let spec = GaussSpec::new(1, 4, 4, "x", Sched::Cosine);
    let model = load(&spec);
    let z0 = test_noise(2 * spec.d(), 1);
    let mut seen = Vec::new();
    let mut last_preview = Vec::new();
    let out = model
        .generate()
        .noise(z0.clone())
        .steps(7)
        .sampler(SamplerChoice::Ddim)
        .on_progress(|p| {
            seen.push((p.step, p.steps, p.t, p.s));
            last_preview = p.x_hat.to_vec();
        })
        .run()
        .unwrap();
    assert_eq!(seen.len(), 7);
    for (k, &(step, steps, t, s)) in seen.iter().enumerate() {
        assert_eq!(step as usize, k + 1);
        assert_eq!(steps, 7);
        assert!((t - (7 - k) as f64 / 7.0).abs() < 1e-12);
        assert!((s - (6 - k) as f64 / 7.0).abs() < 1e-12);
    }
    assert_eq!(last_preview.len(), out.data().len());
    // At the last step (t = 1/7 -> 0) z_0 is alpha_0 x_hat + tiny: close to x_hat.
    let diff = last_preview
        .iter()
        .zip(out.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-2, "{diff}");
}

#[test]
fn cancel_returns_the_latest_x_hat_flagged_partial() {
    let spec = GaussSpec::new(1, 4, 4, "eps", Sched::Cosine);
    let model = load(&spec);
    let z0 = test_noise(spec.d(), 4);
    let token = CancelToken::new();
    let t2 = token.clone();
    let mut previews: Vec<Vec<f32>> = Vec::new();
    let out = model
        .generate()
        .noise(z0.clone())
        .steps(10)
        .cancel(token)
        .on_progress(|p| {
            previews.push(p.x_hat.to_vec());
            if p.step == 3 {
                t2.cancel();
            }
        })
        .run()
        .unwrap();
    assert!(out.is_partial());
    assert_eq!(out.steps_done(), 3);
    assert_eq!(previews.len(), 3);
    assert_eq!(out.data(), previews[2].as_slice());
    // The partial result is the step-3 x_hat, not z: compare with a full run's
    // step-3 preview.
    let mut full = Vec::new();
    let r = model
        .generate()
        .noise(z0)
        .steps(10)
        .on_progress(|p| {
            if p.step == 3 {
                full = p.x_hat.to_vec();
            }
        })
        .run()
        .unwrap();
    assert!(!r.is_partial());
    assert_eq!(full, out.data());

    let cancelled = CancelToken::new();
    cancelled.cancel();
    let err = model.generate().cancel(cancelled).run().unwrap_err();
    assert!(matches!(err, fewstep::GenerateError::Cancelled), "{err}");
}

#[test]
fn f16_weights_load_fold_to_f32_and_match() {
    let spec = GaussSpec::new(2, 4, 4, "v", Sched::Cosine);
    let mut half = spec.clone();
    half.f16_weights = true;
    // Means exactly representable in f16 so both models are the same.
    let q: Vec<f32> = spec.mu[0]
        .iter()
        .map(|&m| (m * 64.0).round() / 64.0)
        .collect();
    let mut spec = spec;
    spec.mu = vec![q.clone()];
    half.mu = vec![q];
    let m32 = load(&spec);
    let m16 = load(&half);
    assert!(
        m16.computes_in_f32().unwrap(),
        "f16 weights must be folded to f32 constants"
    );
    let a = m32.generate().seed(2).batch(2).steps(4).run().unwrap();
    let b = m16.generate().seed(2).batch(2).steps(4).run().unwrap();
    assert_eq!(a.data(), b.data());
}

#[test]
fn model_is_shared_between_threads() {
    let spec = GaussSpec::new(1, 4, 4, "x", Sched::Cosine);
    let model = std::sync::Arc::new(load(&spec));
    let want = model.generate().seed(5).batch(2).steps(3).run().unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let m = model.clone();
            std::thread::spawn(move || {
                m.generate()
                    .seed(5)
                    .batch(2)
                    .steps(3)
                    .threads(2)
                    .run()
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().data(), want.data());
    }
}

#[test]
fn output_encodings() {
    let spec = GaussSpec::new(1, 2, 3, "x", Sched::Cosine);
    let model = load(&spec);
    let out = model.generate().seed(1).batch(3).steps(2).run().unwrap();
    let rgb = out.rgb8(1).unwrap();
    assert_eq!(rgb.len(), 2 * 3 * 3);
    let range = fewstep::fewstep_core::format::DataRange::default();
    let img = out.image(1).unwrap();
    for p in 0..6 {
        let want = range.to_u8(img[p]);
        assert_eq!(
            &rgb[p * 3..p * 3 + 3],
            &[want, want, want],
            "gray expanded to RGB"
        );
    }
    let png = out.png_grid().unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let npy = fewstep::npy_bytes(out.data(), &out.dims());
    let (values, shape) = fewstep::parse_npy(&npy).unwrap();
    assert_eq!(shape, vec![3, 1, 2, 3]);
    assert_eq!(values, out.data());
}
