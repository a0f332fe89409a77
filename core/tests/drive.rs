//! The sampling driver: the same numbers as the step functions by hand,
//! guidance rows, img2img and inpainting, stopping, and every error.

use fewstep_core::drive::{
    BufferLens, Conditioning, ConditioningError, DriveError, Edit, Finished, Flow, Sampling,
    Workspace, drive, label_rows,
};
use fewstep_core::format::DataRange;
use fewstep_core::rng::batch_noise;
use fewstep_core::{
    Prediction, SamplerKind, SamplingPlan, Schedule, StudentSteps, XVar, addim_step, ddim_step,
};

const D: usize = 12;

fn cosine() -> Schedule {
    "cosine".parse().unwrap()
}

/// A made-up v-prediction network that depends on z, t and the label.
fn net(z: &[f32], t: f64, labels: Option<&[i64]>, out: &mut [f32]) -> Result<(), &'static str> {
    for (i, (o, &zi)) in out.iter_mut().zip(z).enumerate() {
        let row = i / D;
        let l = labels.map_or(0.0, |l| l[row] as f32);
        *o = 0.3 * zi - 0.2 * (t as f32) + 0.05 * l + 0.01 * (i % D) as f32;
    }
    Ok(())
}

fn sampling<'a>(schedule: &'a Schedule, plan: SamplingPlan, num_classes: u32) -> Sampling<'a> {
    Sampling {
        schedule,
        prediction: Prediction::V,
        plan,
        xvar: XVar::Analytic,
        image_len: D,
        num_classes,
        conditioning: Conditioning::None,
        guidance: 1.0,
        clip: None,
        edit: None,
    }
}

struct Buffers {
    z: Vec<f32>,
    out: Vec<f32>,
    net_in: Vec<f32>,
    labels: Vec<i64>,
}

impl Buffers {
    fn new(lens: BufferLens, seed: u64) -> Self {
        let mut z = vec![0.0; lens.z];
        batch_noise(seed, 0, D, &mut z);
        Buffers {
            z,
            out: vec![0.0; lens.out],
            net_in: vec![0.0; lens.net_in],
            labels: vec![0; lens.labels],
        }
    }
    fn ws(&mut self) -> Workspace<'_> {
        Workspace {
            z: &mut self.z,
            out: &mut self.out,
            net_in: &mut self.net_in,
            labels: &mut self.labels,
        }
    }
}

fn run(s: &Sampling<'_>, batch: usize, seed: u64) -> (Vec<f32>, Finished) {
    let mut b = Buffers::new(s.buffer_lens(batch), seed);
    let f = drive(s, &mut b.ws(), &mut net, |_| Flow::Continue).unwrap();
    (b.z, f)
}

/// The loop written out by hand with the step functions.
fn by_hand(
    schedule: &Schedule,
    plan: SamplingPlan,
    batch: usize,
    seed: u64,
    labels: Option<&[i64]>,
) -> Vec<f32> {
    let mut z = vec![0.0; batch * D];
    batch_noise(seed, 0, D, &mut z);
    for step in plan.iter() {
        let (at, as_) = (schedule.alpha_sigma(step.t), schedule.alpha_sigma(step.s));
        let mut out = vec![0.0; z.len()];
        net(&z, step.t, labels, &mut out).unwrap();
        Prediction::V.output_to_x_hat(&z, &mut out, at).unwrap();
        match plan.sampler() {
            SamplerKind::Ddim => ddim_step(&mut z, &out, at, as_).unwrap(),
            SamplerKind::Addim => addim_step(
                &mut z,
                &out,
                D,
                at,
                as_,
                XVar::Analytic.at(schedule, step.t),
            )
            .unwrap(),
        }
    }
    z
}

#[test]
fn matches_the_step_functions_by_hand() {
    let schedule = cosine();
    for kind in [SamplerKind::Ddim, SamplerKind::Addim] {
        let plan = SamplingPlan::new(5, kind).unwrap();
        let (z, f) = run(&sampling(&schedule, plan, 0), 3, 7);
        assert_eq!(f, Finished::Complete);
        assert_eq!(z, by_hand(&schedule, plan, 3, 7, None), "{kind}");
    }
}

#[test]
fn labels_and_guidance_rows() {
    let schedule = cosine();
    let plan = SamplingPlan::new(3, SamplerKind::Ddim).unwrap();
    let per = [1i64, 0, 2];
    let mut s = sampling(&schedule, plan, 3);
    s.conditioning = Conditioning::PerImage(&per);
    let (z, _) = run(&s, 3, 1);
    assert_eq!(z, by_hand(&schedule, plan, 3, 1, Some(&per)));

    // No labels on a class-conditional model: the null label (3) for all.
    s.conditioning = Conditioning::None;
    let (z, _) = run(&s, 3, 1);
    assert_eq!(z, by_hand(&schedule, plan, 3, 1, Some(&[3, 3, 3])));

    // Guidance w: cond rows then null rows, combined before x_hat.
    s.conditioning = Conditioning::Label(2);
    s.guidance = 2.5;
    let lens = s.buffer_lens(3);
    assert_eq!((lens.out, lens.net_in, lens.labels), (6 * D, 6 * D, 6));
    let mut b = Buffers::new(lens, 1);
    let mut seen = Vec::new();
    drive(
        &s,
        &mut b.ws(),
        &mut |z: &[f32], t, l: Option<&[i64]>, o: &mut [f32]| {
            seen.push(l.unwrap().to_vec());
            net(z, t, l, o)
        },
        |_| Flow::Continue,
    )
    .unwrap();
    assert_eq!(seen[0], vec![2, 2, 2, 3, 3, 3]);
    // The net is affine in the label, so guidance w = scale on the label term.
    let z_guided = b.z.clone();
    s.guidance = 1.0;
    let mut direct = Buffers::new(s.buffer_lens(3), 1);
    // label' = 3 + 2.5 (2 - 3) = 0.5: not an integer, so compare by formula.
    drive(
        &s,
        &mut direct.ws(),
        &mut |z: &[f32], t, _l: Option<&[i64]>, o: &mut [f32]| {
            for (i, (o, &zi)) in o.iter_mut().zip(z).enumerate() {
                *o = 0.3 * zi - 0.2 * (t as f32) + 0.05 * 0.5 + 0.01 * (i % D) as f32;
            }
            Ok::<(), ()>(())
        },
        |_| Flow::Continue,
    )
    .unwrap();
    for (a, b) in z_guided.iter().zip(&direct.z) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn conditioning_errors() {
    let c = Conditioning::from_labels(&[1, 2]);
    assert_eq!(
        c.check(3, 3, 1.0),
        Err(ConditioningError::LabelCount {
            actual: 2,
            batch: 3
        })
    );
    assert_eq!(
        Conditioning::Label(3).check(3, 1, 1.0),
        Err(ConditioningError::LabelOutOfRange {
            label: 3,
            num_classes: 3
        })
    );
    assert_eq!(
        Conditioning::Label(-1).check(3, 1, 1.0),
        Err(ConditioningError::LabelOutOfRange {
            label: -1,
            num_classes: 3
        })
    );
    assert_eq!(
        Conditioning::Label(0).check(0, 1, 1.0),
        Err(ConditioningError::Unconditional { what: "labels" })
    );
    assert_eq!(
        Conditioning::None.check(0, 1, 2.0),
        Err(ConditioningError::Unconditional { what: "guidance" })
    );
    assert_eq!(
        Conditioning::None.check(3, 1, f32::NAN),
        Err(ConditioningError::BadGuidance)
    );
    assert_eq!(Conditioning::from_labels(&[]), Conditioning::None);
    assert_eq!(Conditioning::from_labels(&[4]), Conditioning::Label(4));
    assert_eq!(label_rows(0, 4, 3.0), 0);
    let mut rows = [0i64; 3];
    assert!(matches!(
        Conditioning::None.write_rows(3, 4, 1.0, &mut rows),
        Err(ConditioningError::RowBuffer {
            expected: 4,
            actual: 3
        })
    ));
}

#[test]
fn buffer_and_edit_errors() {
    let schedule = cosine();
    let plan = SamplingPlan::new(2, SamplerKind::Ddim).unwrap();
    let s = sampling(&schedule, plan, 0);
    let mut b = Buffers::new(s.buffer_lens(2), 0);
    b.out.pop();
    let e = drive(&s, &mut b.ws(), &mut net, |_| Flow::Continue).unwrap_err();
    assert_eq!(
        e,
        DriveError::Buffer {
            which: "out",
            expected: 2 * D,
            actual: 2 * D - 1
        }
    );
    assert!(e.to_string().contains("`out`"), "{e}");

    let mut empty = Buffers::new(s.buffer_lens(0), 0);
    assert_eq!(
        drive(&s, &mut empty.ws(), &mut net, |_| Flow::Continue),
        Err(DriveError::EmptyBatch)
    );

    let init = vec![0.5f32; 2 * D];
    let mut bad_mask = vec![1.0f32; 2 * D];
    bad_mask[5] = 1.5;
    let mut s2 = s;
    s2.edit = Some(Edit {
        init: &init,
        mask: Some(&bad_mask),
    });
    let mut b = Buffers::new(s.buffer_lens(2), 0);
    assert_eq!(
        drive(&s2, &mut b.ws(), &mut net, |_| Flow::Continue),
        Err(DriveError::MaskValue { index: 5 })
    );
    let mut nan_mask = bad_mask.clone();
    nan_mask[5] = f32::NAN;
    s2.edit = Some(Edit {
        init: &init,
        mask: Some(&nan_mask),
    });
    assert_eq!(
        drive(&s2, &mut b.ws(), &mut net, |_| Flow::Continue),
        Err(DriveError::MaskValue { index: 5 })
    );
    let short = vec![0.0f32; D];
    s2.edit = Some(Edit {
        init: &short,
        mask: None,
    });
    assert!(matches!(
        drive(&s2, &mut b.ws(), &mut net, |_| Flow::Continue),
        Err(DriveError::Buffer { which: "init", .. })
    ));
    let mut nan_init = init.clone();
    nan_init[0] = f32::INFINITY;
    s2.edit = Some(Edit {
        init: &nan_init,
        mask: None,
    });
    assert_eq!(
        drive(&s2, &mut b.ws(), &mut net, |_| Flow::Continue),
        Err(DriveError::InitNotFinite)
    );

    // A network error comes back as it is; a non-finite output is named.
    assert_eq!(
        drive(
            &s,
            &mut b.ws(),
            &mut |_: &[f32], _, _: Option<&[i64]>, _: &mut [f32]| Err("boom"),
            |_| Flow::Continue
        ),
        Err(DriveError::Network("boom"))
    );
    let e = drive(
        &s,
        &mut b.ws(),
        &mut |_: &[f32], _, _: Option<&[i64]>, o: &mut [f32]| {
            o[3] = f32::NAN;
            Ok::<(), ()>(())
        },
        |_| Flow::Continue,
    )
    .unwrap_err();
    assert_eq!(e, DriveError::NonFinite { step: 1, t: 1.0 });
}

#[test]
fn stop_returns_the_latest_x_hat() {
    let schedule = cosine();
    let plan = SamplingPlan::new(4, SamplerKind::Ddim).unwrap();
    let s = sampling(&schedule, plan, 0);
    let mut b = Buffers::new(s.buffer_lens(2), 3);
    let mut last = Vec::new();
    let f = drive(&s, &mut b.ws(), &mut net, |r| {
        last = r.x_hat.to_vec();
        if r.step == 2 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    assert_eq!(f, Finished::Stopped { steps_done: 2 });
    assert_eq!(b.z, last);
    // Stop at once: one evaluation.
    let mut b = Buffers::new(s.buffer_lens(2), 3);
    let f = drive(&s, &mut b.ws(), &mut net, |_| Flow::Stop).unwrap();
    assert_eq!(f, Finished::Stopped { steps_done: 1 });
    // Stop on the last step is too late: the run completes.
    let mut b = Buffers::new(s.buffer_lens(2), 3);
    let f = drive(&s, &mut b.ws(), &mut net, |r| {
        if r.step == 4 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    assert_eq!(f, Finished::Complete);
    assert_eq!(b.z, by_hand(&schedule, plan, 2, 3, None));
}

#[test]
fn clip_limits_every_x_hat() {
    let schedule = cosine();
    let plan = SamplingPlan::new(3, SamplerKind::Ddim).unwrap();
    let mut s = sampling(&schedule, plan, 0);
    s.clip = Some(DataRange::default());
    let mut b = Buffers::new(s.buffer_lens(2), 3);
    // x_hat = alpha z - sigma out = large: clipped to [-1, 1].
    drive(
        &s,
        &mut b.ws(),
        &mut |_: &[f32], _, _: Option<&[i64]>, o: &mut [f32]| {
            o.fill(-50.0);
            Ok::<(), ()>(())
        },
        |r| {
            assert!(r.x_hat.iter().all(|v| (-1.0..=1.0).contains(v)));
            Flow::Continue
        },
    )
    .unwrap();
    // The last DDIM step ends at s = 0 where sigma is small but not 0
    // (bounded logSNR), so z_0 is x_hat plus a trace of z.
    assert!(b.z.iter().all(|v| (v - 1.0).abs() < 2e-3), "{:?}", b.z);
}

#[test]
fn strength_plans() {
    let t4 = StudentSteps(4);
    let plain = SamplingPlan::multistep_consistency(4).unwrap();
    for (s, k) in [
        (1.0, 4),
        (0.75, 3),
        (0.5, 2),
        (0.51, 3),
        (0.01, 1),
        (0.25, 1),
    ] {
        let p = plain.with_strength(t4, s).unwrap();
        assert_eq!(p.steps(), k, "strength {s}");
        let times: Vec<f64> = p.iter().map(|st| st.t).collect();
        let want: Vec<f64> = (1..=k).rev().map(|j| j as f64 / 4.0).collect();
        assert_eq!(
            times, want,
            "strength {s}: segment boundaries of the T = 4 grid"
        );
        assert_eq!(p.start_time(), k as f64 / 4.0);
        assert_eq!(p.iter().last().unwrap().s, 0.0);
    }
    // 0.3 * 10 is 3.0000000000000004 in f64: still 3 steps.
    let p10 = SamplingPlan::multistep_consistency(10).unwrap();
    assert_eq!(p10.with_strength(StudentSteps(10), 0.3).unwrap().steps(), 3);

    let diff = SamplingPlan::new(8, SamplerKind::Addim).unwrap();
    let p = diff.with_strength(StudentSteps::DIFFUSION, 0.4).unwrap();
    assert_eq!(p.steps(), 8);
    assert!((p.start_time() - 0.4).abs() < 1e-15);
    let t: Vec<f64> = p.iter().map(|st| st.t).collect();
    assert!(
        (t[0] - 0.4).abs() < 1e-15 && (t[7] - 0.05).abs() < 1e-15,
        "{t:?}"
    );
    assert_eq!(
        diff.with_strength(StudentSteps::DIFFUSION, 1.0).unwrap(),
        diff
    );
    for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(
            diff.with_strength(StudentSteps::DIFFUSION, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn img2img_at_strength_one_is_plain_generation() {
    let schedule = cosine();
    let plan = SamplingPlan::multistep_consistency(4).unwrap();
    let plain = run(&sampling(&schedule, plan, 0), 2, 9).0;
    let init: Vec<f32> = (0..2 * D).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut s = sampling(
        &schedule,
        plan.with_strength(StudentSteps(4), 1.0).unwrap(),
        0,
    );
    s.edit = Some(Edit {
        init: &init,
        mask: None,
    });
    assert_eq!(run(&s, 2, 9).0, plain);
}

#[test]
fn img2img_starts_from_the_noised_init() {
    // An exact denoiser of a point mass at c: x_hat = c whatever z is, so
    // the first evaluation sees z_start = alpha x0 + sigma eps.
    let schedule = cosine();
    let plan = SamplingPlan::multistep_consistency(4)
        .unwrap()
        .with_strength(StudentSteps(4), 0.5)
        .unwrap();
    let init: Vec<f32> = (0..D).map(|i| i as f32 / D as f32).collect();
    let mut s = sampling(&schedule, plan, 0);
    s.prediction = Prediction::X;
    s.edit = Some(Edit {
        init: &init,
        mask: None,
    });
    let mut b = Buffers::new(s.buffer_lens(1), 4);
    let eps = b.z.clone();
    let mut first = None;
    drive(
        &s,
        &mut b.ws(),
        &mut |z: &[f32], t, _: Option<&[i64]>, o: &mut [f32]| {
            if first.is_none() {
                first = Some((t, z.to_vec()));
            }
            o.fill(0.25);
            Ok::<(), ()>(())
        },
        |_| Flow::Continue,
    )
    .unwrap();
    let (t, z) = first.unwrap();
    assert_eq!(t, 0.5);
    let at = schedule.alpha_sigma(0.5);
    for i in 0..D {
        let want = fewstep_core::training::noised(at, init[i], eps[i]);
        assert_eq!(z[i], want);
    }
    assert!(b.z.iter().all(|&v| (v - 0.25).abs() < 2e-3), "{:?}", b.z);
}

#[test]
fn inpainting_keeps_the_known_region_to_the_bit() {
    let schedule = cosine();
    let init: Vec<f32> = (0..2 * D)
        .map(|i| ((i * 7 % 11) as f32 / 5.0) - 1.0)
        .collect();
    let mask: Vec<f32> = (0..2 * D)
        .map(|i| if i % D < D / 2 { 0.0 } else { 1.0 })
        .collect();
    for kind in [SamplerKind::Ddim, SamplerKind::Addim] {
        for strength in [1.0, 0.5] {
            let plan = SamplingPlan::new(4, kind)
                .unwrap()
                .with_strength(StudentSteps::DIFFUSION, strength)
                .unwrap();
            let mut s = sampling(&schedule, plan, 0);
            s.edit = Some(Edit {
                init: &init,
                mask: Some(&mask),
            });
            let mut b = Buffers::new(s.buffer_lens(2), 11);
            drive(&s, &mut b.ws(), &mut net, |r| {
                for i in 0..2 * D {
                    if mask[i] == 0.0 {
                        assert_eq!(r.x_hat[i].to_bits(), init[i].to_bits());
                    }
                }
                Flow::Continue
            })
            .unwrap();
            for i in 0..2 * D {
                if mask[i] == 0.0 {
                    assert_eq!(
                        b.z[i].to_bits(),
                        init[i].to_bits(),
                        "{kind} s={strength} i={i}"
                    );
                } else {
                    assert_ne!(b.z[i], init[i]);
                }
            }
        }
    }
}

#[test]
fn inpainting_with_ddim_keeps_known_z_on_the_forward_path() {
    // x_hat replacement + DDIM: the known pixels of z_t stay on the forward
    // path of x0 with the request's own eps (the re-noising view):
    // z_t - alpha_t x0 = (sigma_t / sigma_1)(eps - alpha_1 x0), where
    // alpha_1 is small but not 0 (the schedule's logSNR is bounded).
    let schedule = cosine();
    let init: Vec<f32> = (0..D).map(|i| (i as f32 * 0.3).cos()).collect();
    let mask: Vec<f32> = (0..D).map(|i| if i < 4 { 0.0 } else { 1.0 }).collect();
    let plan = SamplingPlan::new(6, SamplerKind::Ddim).unwrap();
    let mut s = sampling(&schedule, plan, 0);
    s.edit = Some(Edit {
        init: &init,
        mask: Some(&mask),
    });
    let mut b = Buffers::new(s.buffer_lens(1), 5);
    let eps = b.z.clone();
    drive(
        &s,
        &mut b.ws(),
        &mut |z: &[f32], t, l: Option<&[i64]>, o: &mut [f32]| {
            if t < 1.0 {
                let (at, a1) = (schedule.alpha_sigma(t), schedule.alpha_sigma(1.0));
                for i in 0..4 {
                    let x0 = f64::from(init[i]);
                    let want =
                        at.alpha * x0 + at.sigma / a1.sigma * (f64::from(eps[i]) - a1.alpha * x0);
                    assert!(
                        (f64::from(z[i]) - want).abs() < 1e-5,
                        "t {t} i {i}: {} vs {want}",
                        z[i]
                    );
                }
            }
            net(z, t, l, o)
        },
        |_| Flow::Continue,
    )
    .unwrap();
}
