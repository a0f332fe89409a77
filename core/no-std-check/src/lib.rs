//! Links fewstep-core into a `#![no_std]` static library and exercises the
//! sampler so the code is really compiled, not just type-checked.
#![no_std]

use fewstep_core::{Schedule, SamplingPlan, ddim_step, rng::image_noise};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Samples `len` values of `z` from noise with a fake denoiser (`x_hat = 0`);
/// returns 0 on success.
///
/// # Safety
/// `z` must point to `len` writable f32 values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_no_std_demo(z: *mut f32, len: usize, seed: u64) -> i32 {
    if z.is_null() {
        return 1;
    }
    // SAFETY: the caller guarantees `z` points to `len` f32 values.
    let z = unsafe { core::slice::from_raw_parts_mut(z, len) };
    image_noise(seed, 0, z);
    let schedule = Schedule::Cosine;
    let Ok(plan) = SamplingPlan::multistep_consistency(4) else { return 2 };
    let zeros = [0.0f32; 64];
    for step in plan.iter() {
        for chunk in z.chunks_mut(64) {
            let x_hat = &zeros[..chunk.len()];
            if ddim_step(chunk, x_hat, schedule.alpha_sigma(step.t), schedule.alpha_sigma(step.s)).is_err() {
                return 3;
            }
        }
    }
    0
}
