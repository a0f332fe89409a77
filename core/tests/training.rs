//! Algorithm 1 math: times, annealing, weights, and the target identities.
use fewstep_core::rng::batch_noise;
use fewstep_core::sampler::{ddim_coeffs, inverse_ddim_coeffs};
use fewstep_core::training::*;
use fewstep_core::{Schedule, ddim_step, inverse_ddim};

const D: usize = 64;

fn noise(seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; D];
    batch_noise(seed, 0, D, &mut v);
    v
}

#[test]
fn annealing_follows_the_paper_formula() {
    let a = TeacherAnneal::PAPER;
    assert!((a.teacher_steps(0) - 64.0).abs() < 1e-9);
    assert!((a.teacher_steps(100_000) - 1280.0).abs() < 1e-9);
    assert!((a.teacher_steps(10_000_000) - 1280.0).abs() < 1e-9);
    // Geometric midpoint at half the annealing.
    assert!((a.teacher_steps(50_000) - (64.0f64 * 1280.0).sqrt()).abs() < 1e-9);
    assert_eq!(a.steps_per_segment(0, 4), 16);
    assert_eq!(a.steps_per_segment(100_000, 4), 320);
    assert_eq!(
        a.steps_per_segment(0, 1000),
        1,
        "never below one step per segment"
    );
    let fixed = TeacherAnneal::fixed(128.0);
    assert_eq!(fixed.teacher_steps(0), 128.0);
    assert_eq!(fixed.teacher_steps(7), 128.0);
}

#[test]
fn times_lie_on_the_segment_grid() {
    let (big_t, n) = (4, 16);
    for step in 0..big_t {
        for n_rel in 1..=n {
            let tm = ConsistencyTimes::new(step, n_rel, big_t, n).unwrap();
            assert_eq!(tm.t_step, f64::from(step) / 4.0);
            assert!((tm.t - (tm.t_step + f64::from(n_rel) / 64.0)).abs() < 1e-15);
            assert!((tm.t - tm.s - 1.0 / 64.0).abs() < 1e-15);
            assert!(
                tm.t_step <= tm.s && tm.s < tm.t && tm.t <= (f64::from(step) + 1.0) / 4.0 + 1e-15
            );
        }
    }
    assert_eq!(ConsistencyTimes::new(0, 1, 4, 16).unwrap().s, 0.0);
    assert!((ConsistencyTimes::new(3, 16, 4, 16).unwrap().t - 1.0).abs() < 1e-15);
    assert!(ConsistencyTimes::new(4, 1, 4, 16).is_err());
    assert!(ConsistencyTimes::new(0, 0, 4, 16).is_err());
    assert!(ConsistencyTimes::new(0, 17, 4, 16).is_err());
    assert!(ConsistencyTimes::new(0, 1, 0, 16).is_err());
    // Uniforms cover every index, including the edges.
    assert_eq!(uniform_index(0.0, 4), 0);
    assert_eq!(uniform_index(0.999_999, 4), 3);
    assert_eq!(uniform_index(1.0, 4), 3);
    let tm = ConsistencyTimes::from_uniforms(0.99, 0.0, 4, 16).unwrap();
    assert_eq!((tm.t_step, tm.s), (0.75, 0.75));
}

#[test]
fn ct_with_n_rel_one_targets_x_exactly_eq9() {
    // CT: x_teacher = x, so z_s = DDIM_{t->s}(x, z_t); with n_rel = 1, s = t_step
    // and the target invDDIM_{t->s}(z_s, z_t) is x, whatever x_ref is.
    let x = noise(1);
    let eps = noise(2);
    let x_ref = noise(3);
    for schedule in [Schedule::Cosine, Schedule::ShiftedCosine { factor: 0.5 }] {
        for step in 0..4 {
            let tm = ConsistencyTimes::new(step, 1, 4, 32).unwrap();
            assert_eq!(tm.s, tm.t_step);
            let (at, as_) = (schedule.alpha_sigma(tm.t), schedule.alpha_sigma(tm.s));
            let z_t: Vec<f64> = x
                .iter()
                .zip(&eps)
                .map(|(&x, &e)| at.alpha * f64::from(x) + at.sigma * f64::from(e))
                .collect();
            let ddim = ddim_coeffs(at, as_);
            let z_s: Vec<f64> = x
                .iter()
                .zip(&z_t)
                .map(|(&x, &z)| ddim.x * f64::from(x) + ddim.z * z)
                .collect();
            let c = ConsistencyTargetCoeffs::new(&schedule, tm);
            assert_eq!(
                c.x_ref, 0.0,
                "s == t_step: z_ref = z_s exactly, x_ref drops out"
            );
            for i in 0..D {
                let target = c.apply(f64::from(x_ref[i]), z_s[i], z_t[i]);
                assert!(
                    (target - f64::from(x[i])).abs() < 1e-6,
                    "step {step}: {target} vs {}",
                    x[i]
                );
            }
        }
    }
}

#[test]
fn target_coefficients_equal_the_composed_slice_steps() {
    // invDDIM_{t->t_step}(DDIM_{s->t_step}(x_ref, z_s), z_t) built from the
    // slice functions equals the coefficient form, for several (step, n_rel).
    let schedule = Schedule::Cosine;
    let x_ref = noise(4);
    let z_s = noise(5);
    let z_t = noise(6);
    for (step, n_rel) in [(0, 5), (1, 16), (2, 9), (3, 2)] {
        let tm = ConsistencyTimes::new(step, n_rel, 4, 16).unwrap();
        let (at, as_, au) = (
            schedule.alpha_sigma(tm.t),
            schedule.alpha_sigma(tm.s),
            schedule.alpha_sigma(tm.t_step),
        );
        let mut z_ref = z_s.clone();
        ddim_step(&mut z_ref, &x_ref, as_, au).unwrap();
        inverse_ddim(&mut z_ref, &z_t, at, au).unwrap();
        let c = ConsistencyTargetCoeffs::new(&schedule, tm);
        for i in 0..D {
            let want = c.apply(f64::from(x_ref[i]), f64::from(z_s[i]), f64::from(z_t[i]));
            let tol = 1e-5 * inverse_ddim_coeffs(at, au).z_s.abs();
            assert!((f64::from(z_ref[i]) - want).abs() < tol, "({step},{n_rel})");
        }
    }
}

#[test]
fn teacher_step_with_zero_xvar_is_ddim() {
    let s = Schedule::Cosine;
    let (at, as_) = (s.alpha_sigma(0.5), s.alpha_sigma(0.49));
    let c = teacher_step_coeffs(at, as_, 0.0, D, 12.0);
    let d = ddim_coeffs(at, as_);
    assert!((c.x - d.x).abs() < 1e-15 && (c.z - d.z).abs() < 1e-15);
    assert_eq!(teacher_xvar(0.75, 8.0, 4), 1.5);
    assert_eq!(teacher_xvar(0.75, 8.0, 0), 0.0);
}

#[test]
fn weights_and_pseudo_huber() {
    let s = Schedule::Cosine;
    assert!((loss_weight(&s, 0.5) - 2.0).abs() < 1e-12);
    assert_eq!(pseudo_huber(0.0, 1e-4), 0.0);
    // Quadratic near zero, linear far away.
    let c = 1.0;
    assert!((pseudo_huber(1e-6, c) - 0.5e-6).abs() < 1e-12);
    assert!((pseudo_huber(1e6, 1e-4) - 1e3).abs() < 1e-3);
}

#[test]
fn annealing_runs_over_half_of_training_by_default() {
    assert_eq!(
        TeacherAnneal::default_iters(200_000),
        TeacherAnneal::PAPER.anneal_iters
    );
    assert_eq!(TeacherAnneal::default_iters(7), 3);
    assert_eq!(TeacherAnneal::default_iters(0), 0);
}

#[test]
fn loss_weightings_parse_and_weigh() {
    let s = Schedule::Cosine;
    for w in LossWeight::ALL {
        assert_eq!(w.as_str().parse::<LossWeight>(), Ok(w));
        assert_eq!(format!("{w}"), w.as_str());
    }
    assert_eq!(LossWeight::default(), LossWeight::SnrPlusOne);
    for bad in ["", "snr", "SNR1", "sqrt_snr1", "v"] {
        assert_eq!(
            bad.parse::<LossWeight>(),
            Err(TrainingError::UnknownLossWeight)
        );
    }
    for t in [0.1, 1.0 / 3.0, 0.5, 0.9] {
        let snr = s.snr(t);
        assert!((LossWeight::SnrPlusOne.at(&s, t) - (snr + 1.0)).abs() < 1e-9 * (snr + 1.0));
        assert!((LossWeight::SqrtSnrPlusOne.at(&s, t) - (snr + 1.0).sqrt()).abs() < 1e-9);
    }
    let t = 1.0 / 3.0;
    // sqrt(SNR + 1) ||x_hat - x|| is the v-space distance: v = alpha eps - sigma x,
    // and at fixed z_t, v_hat - v = -(x_hat - x) / sigma, |1/sigma| = sqrt(SNR + 1).
    let (alpha, sigma) = (s.alpha_sigma(t).alpha, s.alpha_sigma(t).sigma);
    let ratio = 1.0 / sigma;
    assert!((LossWeight::SqrtSnrPlusOne.at(&s, t) - ratio).abs() < 1e-6);
    assert!((alpha * alpha / (sigma * sigma) - s.snr(t)).abs() < 1e-6);
}

#[test]
fn training_label_drops_to_the_null_label_at_the_dropout_rate() {
    use fewstep_core::training::training_label;
    // Kept below the rate's threshold, dropped at or above it.
    assert_eq!(training_label(3, 10, 0.5, 0.1), 3);
    assert_eq!(training_label(3, 10, 0.05, 0.1), 10);
    assert_eq!(training_label(3, 10, 0.1, 0.1), 3);
    // No dropout: every valid label is kept; a label out of range is the null one.
    assert_eq!(training_label(9, 10, 0.0, 0.0), 9);
    assert_eq!(training_label(10, 10, 0.9, 0.0), 10);
    assert_eq!(training_label(42, 10, 0.9, 0.1), 10);
    // Over many uniform draws, the dropped share is the rate.
    let dropped = (0..10_000)
        .filter(|i| training_label(1, 10, (f64::from(*i) + 0.5) / 10_000.0, 0.25) == 10)
        .count();
    assert_eq!(dropped, 2_500);
}

#[test]
fn forward_noise_and_residual_coeffs_match_their_definitions() {
    use fewstep_core::Prediction;
    use fewstep_core::training::{forward_noise, noised, residual_coeffs};
    let schedule = fewstep_core::Schedule::Cosine;
    let x = [0.3f32, -0.7, 1.0];
    let eps = [1.2f32, 0.1, -0.4];
    for t in [0.05, 0.5, 0.95] {
        let at = schedule.alpha_sigma(t);
        let mut z = [0f32; 3];
        forward_noise(&x, &eps, at, &mut z).unwrap();
        for j in 0..3 {
            let want = at.alpha * f64::from(x[j]) + at.sigma * f64::from(eps[j]);
            assert_eq!(z[j], want as f32);
            assert_eq!(noised(at, x[j], eps[j]), z[j]);
        }
        for pred in [Prediction::X, Prediction::Eps, Prediction::V] {
            // Any network output: the residual from the coefficients equals
            // x - x_hat computed from the prediction's own conversion.
            let out = [0.9f32, -0.2, 0.05];
            let mut x_hat = out;
            pred.output_to_x_hat(&z, &mut x_hat, at).unwrap();
            let r = residual_coeffs(pred, at);
            for j in 0..3 {
                let by_coeffs =
                    r.x * f64::from(x[j]) + r.eps * f64::from(eps[j]) + r.out * f64::from(out[j]);
                let direct = f64::from(x[j]) - f64::from(x_hat[j]);
                assert!(
                    (by_coeffs - direct).abs() < 1e-5,
                    "{pred:?} t={t}: {by_coeffs} vs {direct}"
                );
            }
        }
    }
    let mut short = [0f32; 2];
    assert!(forward_noise(&x, &eps, schedule.alpha_sigma(0.5), &mut short).is_err());
}

#[test]
fn progressive_times_halve_the_student_grid() {
    let tm = ProgressiveTimes::new(3, 4).unwrap();
    assert_eq!((tm.t, tm.u, tm.s), (0.75, 0.625, 0.5));
    let first = ProgressiveTimes::new(1, 4).unwrap();
    assert_eq!((first.u, first.s), (0.125, 0.0));
    assert_eq!(
        ProgressiveTimes::new(0, 4),
        Err(TrainingError::StepOutOfRange {
            step: 0,
            student_steps: 4
        })
    );
    assert_eq!(
        ProgressiveTimes::new(5, 4),
        Err(TrainingError::StepOutOfRange {
            step: 5,
            student_steps: 4
        })
    );
    assert_eq!(ProgressiveTimes::new(1, 0), Err(TrainingError::ZeroSteps));
    // u in [0, 1) maps onto k in 1..=N; 1.0 stays on the last point.
    assert_eq!(ProgressiveTimes::from_uniform(0.0, 4).unwrap().t, 0.25);
    assert_eq!(ProgressiveTimes::from_uniform(0.999, 4).unwrap().t, 1.0);
    assert_eq!(ProgressiveTimes::from_uniform(1.0, 4).unwrap().t, 1.0);
}

#[test]
fn progressive_target_inverts_one_ddim_step() {
    // One DDIM step t -> s from the target reaches the teacher's z_s.
    let schedule = Schedule::Cosine;
    let tm = ProgressiveTimes::new(2, 4).unwrap();
    let c = ProgressiveTargetCoeffs::new(&schedule, tm);
    let (z_t, z_s) = (noise(11), noise(12));
    let target: Vec<f32> = z_s
        .iter()
        .zip(&z_t)
        .map(|(&s, &t)| c.apply(f64::from(s), f64::from(t)) as f32)
        .collect();
    let step = ddim_coeffs(schedule.alpha_sigma(tm.t), schedule.alpha_sigma(tm.s));
    for ((&x, &zt), &zs) in target.iter().zip(&z_t).zip(&z_s) {
        let back = step.x * f64::from(x) + step.z * f64::from(zt);
        assert!((back - f64::from(zs)).abs() < 1e-4, "{back} vs {zs}");
    }
}
