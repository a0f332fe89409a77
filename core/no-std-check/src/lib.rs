//! Links fewstep-core into a `#![no_std]` static library and exercises the
//! sampling driver so the code is really compiled, not just type-checked.
#![no_std]

use fewstep_core::drive::{Conditioning, Flow, Sampling, Workspace, drive};
use fewstep_core::{Prediction, SamplingPlan, Schedule, XVar, rng::image_noise};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Samples one image of `len` values into `z` from seeded noise with a fake
/// x-prediction network (`x_hat = 0`), using `out` (`len` values) as the
/// driver's output buffer; returns 0 on success.
///
/// # Safety
/// `z` and `out` must each point to `len` writable f32 values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_no_std_demo(
    z: *mut f32,
    out: *mut f32,
    len: usize,
    seed: u64,
) -> i32 {
    if z.is_null() || out.is_null() {
        return 1;
    }
    // SAFETY: the caller guarantees `len` f32 values behind each pointer.
    let (z, out) = unsafe {
        (
            core::slice::from_raw_parts_mut(z, len),
            core::slice::from_raw_parts_mut(out, len),
        )
    };
    image_noise(seed, 0, z);
    let schedule = Schedule::Cosine;
    let Ok(plan) = SamplingPlan::multistep_consistency(4) else {
        return 2;
    };
    let sampling = Sampling {
        schedule: &schedule,
        prediction: Prediction::X,
        plan,
        xvar: XVar::Analytic,
        image_len: len,
        num_classes: 0,
        conditioning: Conditioning::None,
        guidance: 1.0,
        clip: None,
        edit: None,
    };
    let mut network = |_: &[f32], _: f64, _: Option<&[i64]>, out: &mut [f32]| {
        out.fill(0.0);
        Ok::<(), ()>(())
    };
    let ws = &mut Workspace {
        z,
        out,
        net_in: &mut [],
        labels: &mut [],
    };
    match drive(&sampling, ws, &mut network, |_| Flow::Continue) {
        Ok(_) => 0,
        Err(_) => 3,
    }
}
