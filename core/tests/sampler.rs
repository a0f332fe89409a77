//! Sampler identities, and each step against a direct f64 transcription of
//! the docs/MODEL_FORMAT.md equations.
use fewstep_core::rng::batch_noise;
use fewstep_core::sampler::{addim_noise_scale, interpolate_table};
use fewstep_core::{AlphaSigma, Prediction, Schedule, XVar, addim_step, ddim_step, inverse_ddim};

const D: usize = 3 * 5 * 7;

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n * D];
    batch_noise(seed, 0, D, &mut v);
    v
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn schedules() -> [Schedule; 3] {
    [
        Schedule::Cosine,
        Schedule::ShiftedCosine { factor: 0.25 },
        Schedule::InterpolatedCosine {
            factor_lo: 0.5,
            factor_hi: 2.0,
        },
    ]
}

/// DDIM straight from the spec, in f64.
fn ddim_reference(z: &[f32], x: &[f32], t: AlphaSigma, s: AlphaSigma) -> Vec<f32> {
    z.iter()
        .zip(x)
        .map(|(&z, &x)| {
            let (z, x) = (f64::from(z), f64::from(x));
            (s.alpha * x + (s.sigma / t.sigma) * (z - t.alpha * x)) as f32
        })
        .collect()
}

/// aDDIM straight from the spec (per-sample norm), in f64.
fn addim_reference(z: &[f32], x: &[f32], t: AlphaSigma, s: AlphaSigma, xvar: f64) -> Vec<f32> {
    let mut out = Vec::new();
    for (zs, xs) in z.chunks(D).zip(x.chunks(D)) {
        let eps: Vec<f64> = zs
            .iter()
            .zip(xs)
            .map(|(&z, &x)| (f64::from(z) - t.alpha * f64::from(x)) / t.sigma)
            .collect();
        let norm_sq: f64 = eps.iter().map(|e| e * e).sum();
        let zvar = (s.alpha - t.alpha * s.sigma / t.sigma).powi(2) * xvar;
        let scale = (s.sigma * s.sigma + (D as f64 / norm_sq) * zvar).sqrt();
        out.extend(
            xs.iter()
                .zip(&eps)
                .map(|(&x, e)| (s.alpha * f64::from(x) + scale * e) as f32),
        );
    }
    out
}

#[test]
fn ddim_and_addim_match_the_spec_equations() {
    let x = noise(1, 4);
    let z0 = noise(2, 4);
    for schedule in schedules() {
        for (t, s) in [(1.0, 0.75), (0.6, 0.2), (0.3, 0.0), (0.02, 0.01)] {
            let (at, as_) = (schedule.alpha_sigma(t), schedule.alpha_sigma(s));
            let mut z = z0.clone();
            ddim_step(&mut z, &x, at, as_).unwrap();
            let want = ddim_reference(&z0, &x, at, as_);
            assert!(max_abs_diff(&z, &want) < 1e-5, "ddim {schedule} {t}->{s}");

            for xvar in [
                XVar::Analytic,
                XVar::Constant(0.3),
                XVar::Table(&[0.0, 0.2, 0.05]),
            ] {
                let v = xvar.at(&schedule, t);
                let mut z = z0.clone();
                addim_step(&mut z, &x, D, at, as_, v).unwrap();
                let want = addim_reference(&z0, &x, at, as_, v);
                assert!(
                    max_abs_diff(&z, &want) < 1e-4,
                    "addim {schedule} {t}->{s} {xvar:?}"
                );
            }
        }
    }
}

#[test]
fn inverse_ddim_inverts_ddim() {
    let x = noise(3, 2);
    let z_t = noise(4, 2);
    for schedule in schedules() {
        for (t, s) in [(1.0, 0.5), (0.5, 0.25), (0.3, 0.0), (0.9, 0.8)] {
            let (at, as_) = (schedule.alpha_sigma(t), schedule.alpha_sigma(s));
            let mut z_s = z_t.clone();
            ddim_step(&mut z_s, &x, at, as_).unwrap();
            inverse_ddim(&mut z_s, &z_t, at, as_).unwrap();
            assert!(
                max_abs_diff(&z_s, &x) < 2e-4,
                "{schedule} {t}->{s}: {}",
                max_abs_diff(&z_s, &x)
            );
        }
    }
}

#[test]
fn addim_with_zero_xvar_is_ddim() {
    let x = noise(5, 3);
    let z0 = noise(6, 3);
    let schedule = Schedule::Cosine;
    let (at, as_) = (schedule.alpha_sigma(0.7), schedule.alpha_sigma(0.4));
    let mut a = z0.clone();
    let mut b = z0.clone();
    addim_step(&mut a, &x, D, at, as_, 0.0).unwrap();
    ddim_step(&mut b, &x, at, as_).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
}

#[test]
fn addim_tends_to_ddim_as_s_approaches_t() {
    let x = noise(7, 2);
    let z0 = noise(8, 2);
    let schedule = Schedule::Cosine;
    let t = 0.6;
    let at = schedule.alpha_sigma(t);
    let mut prev = f32::INFINITY;
    for gap in [0.3, 0.1, 0.03, 0.01, 0.001] {
        let as_ = schedule.alpha_sigma(t - gap);
        let mut a = z0.clone();
        let mut b = z0.clone();
        addim_step(&mut a, &x, D, at, as_, XVar::Analytic.at(&schedule, t)).unwrap();
        ddim_step(&mut b, &x, at, as_).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < prev, "gap {gap}: {d} not below {prev}");
        prev = d;
    }
    assert!(prev < 1e-6, "{prev}");
}

#[test]
fn addim_noise_scale_edge_cases() {
    let s = Schedule::Cosine;
    let (at, as_) = (s.alpha_sigma(0.5), s.alpha_sigma(0.25));
    assert_eq!(addim_noise_scale(at, as_, 0.0, 10, 5.0), as_.sigma);
    assert_eq!(addim_noise_scale(at, as_, 0.1, 10, 0.0), as_.sigma);
    assert!(addim_noise_scale(at, as_, 0.1, 10, 5.0) > as_.sigma);
}

#[test]
fn length_mismatches_are_errors_not_panics() {
    let s = Schedule::Cosine;
    let (at, as_) = (s.alpha_sigma(0.5), s.alpha_sigma(0.25));
    let mut z = vec![0.0; 10];
    assert!(ddim_step(&mut z, &[0.0; 9], at, as_).is_err());
    assert!(inverse_ddim(&mut z, &[0.0; 11], at, as_).is_err());
    assert!(addim_step(&mut z, &[0.0; 10], 3, at, as_, 0.1).is_err());
    assert!(addim_step(&mut z, &[0.0; 10], 0, at, as_, 0.1).is_err());
    assert!(addim_step(&mut z, &[0.0; 9], 5, at, as_, 0.1).is_err());
    let err = ddim_step(&mut z, &[0.0; 9], at, as_).unwrap_err();
    assert_eq!(
        format!("{err}"),
        "buffer length mismatch: expected 10, got 9"
    );
}

#[test]
fn predictions_round_trip_and_agree_on_x_hat() {
    let x = noise(9, 1);
    let eps = noise(10, 1);
    for schedule in schedules() {
        for t in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let at = schedule.alpha_sigma(t);
            let z: Vec<f32> = x
                .iter()
                .zip(&eps)
                .map(|(&x, &e)| (at.alpha * f64::from(x) + at.sigma * f64::from(e)) as f32)
                .collect();
            for p in [Prediction::X, Prediction::Eps, Prediction::V] {
                // The ideal output for (x, eps) converts back to x.
                let c = p.target_coeffs(at);
                let mut out: Vec<f32> = x
                    .iter()
                    .zip(&eps)
                    .map(|(&x, &e)| c.apply(f64::from(x), f64::from(e)) as f32)
                    .collect();
                let out0 = out.clone();
                p.output_to_x_hat(&z, &mut out, at).unwrap();
                // eps at t=0 divides by alpha ~ 1 but amplifies z rounding by
                // sigma/alpha; at t=1 eps amplifies by 1/alpha ~ 1800.
                let tol = if p == Prediction::Eps && t == 1.0 {
                    0.5
                } else {
                    2e-5
                };
                assert!(
                    max_abs_diff(&out, &x) < tol,
                    "{p} {schedule} t={t}: {}",
                    max_abs_diff(&out, &x)
                );
                // And x_hat -> output inverts output -> x_hat.
                p.x_hat_to_output(&z, &mut out, at).unwrap();
                let tol = if t == 0.0 || t == 1.0 { 0.5 } else { 1e-3 };
                assert!(max_abs_diff(&out, &out0) < tol, "{p} {schedule} t={t} back");
            }
        }
    }
    assert_eq!("v".parse::<Prediction>(), Ok(Prediction::V));
    assert!("V".parse::<Prediction>().is_err());
}

#[test]
fn xvar_table_interpolates_linearly() {
    let table = [0.0, 1.0, 3.0];
    assert_eq!(interpolate_table(&table, 0.0), 0.0);
    assert_eq!(interpolate_table(&table, 0.25), 0.5);
    assert_eq!(interpolate_table(&table, 0.5), 1.0);
    assert_eq!(interpolate_table(&table, 0.75), 2.0);
    assert_eq!(interpolate_table(&table, 1.0), 3.0);
    assert_eq!(interpolate_table(&table, 2.0), 3.0);
    assert_eq!(interpolate_table(&[0.7], 0.3), f64::from(0.7f32));
    assert_eq!(interpolate_table(&[], 0.3), 0.0);
    let s = Schedule::Cosine;
    assert!((XVar::Analytic.at(&s, 0.5) - 0.1 / 3.0).abs() < 1e-12);
}
