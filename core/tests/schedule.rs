use fewstep_core::Schedule;
use fewstep_core::schedule::ScheduleParseError;

fn all() -> [Schedule; 3] {
    [
        Schedule::Cosine,
        Schedule::ShiftedCosine { factor: 0.5 },
        Schedule::InterpolatedCosine {
            factor_lo: 0.25,
            factor_hi: 2.0,
        },
    ]
}

#[test]
fn cosine_endpoints_are_the_clip_values() {
    let s = Schedule::Cosine;
    assert!((s.logsnr(0.0) - 15.0).abs() < 1e-9);
    assert!((s.logsnr(1.0) + 15.0).abs() < 1e-9);
    assert!(s.logsnr(0.5).abs() < 1e-12);
    // Out-of-range and NaN times are clamped, never NaN.
    assert_eq!(s.logsnr(-0.5), s.logsnr(0.0));
    assert_eq!(s.logsnr(1.5), s.logsnr(1.0));
    assert!(s.logsnr(f64::NAN).is_finite());
}

#[test]
fn logsnr_is_strictly_decreasing_and_variance_preserving() {
    for schedule in all() {
        let mut prev = f64::INFINITY;
        for i in 0..=1000 {
            let t = f64::from(i) / 1000.0;
            let l = schedule.logsnr(t);
            assert!(l < prev, "{schedule}: logsnr not decreasing at t={t}");
            prev = l;
            let at = schedule.alpha_sigma(t);
            assert!((at.alpha * at.alpha + at.sigma * at.sigma - 1.0).abs() < 1e-12);
            assert!(at.alpha > 0.0 && at.sigma > 0.0);
            assert!((at.snr() / schedule.snr(t) - 1.0).abs() < 1e-9);
        }
    }
}

#[test]
fn shifts_move_logsnr_by_the_stated_amount() {
    let base = Schedule::Cosine;
    let shifted = Schedule::ShiftedCosine { factor: 0.5 };
    let interp = Schedule::InterpolatedCosine {
        factor_lo: 0.25,
        factor_hi: 2.0,
    };
    for t in [0.0, 0.3, 1.0] {
        assert!((shifted.logsnr(t) - base.logsnr(t) - 2.0 * 0.5f64.ln()).abs() < 1e-12);
    }
    assert!((interp.logsnr(1.0) - base.logsnr(1.0) - 2.0 * 0.25f64.ln()).abs() < 1e-12);
    assert!((interp.logsnr(0.0) - base.logsnr(0.0) - 2.0 * 2.0f64.ln()).abs() < 1e-12);
}

#[test]
fn schedule_strings_round_trip_and_errors_are_typed() {
    for schedule in all() {
        let text = format!("{schedule}");
        assert_eq!(text.parse::<Schedule>(), Ok(schedule), "{text}");
    }
    use ScheduleParseError::*;
    for (text, err) in [
        ("", UnknownName),
        ("linear", UnknownName),
        ("cosine:2", TooManyParameters),
        ("shifted_cosine", MissingParameter),
        ("shifted_cosine:", BadNumber),
        ("shifted_cosine:abc", BadNumber),
        ("shifted_cosine:0", NonPositiveFactor),
        ("shifted_cosine:-1", NonPositiveFactor),
        ("shifted_cosine:inf", NonPositiveFactor),
        ("shifted_cosine:NaN", NonPositiveFactor),
        ("interpolated_cosine:1", MissingParameter),
        ("interpolated_cosine:1:2:3", TooManyParameters),
    ] {
        assert_eq!(Schedule::parse(text), Err(err), "{text:?}");
        assert!(!format!("{err}").is_empty());
    }
}
