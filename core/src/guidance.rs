//! Classifier-free guidance (diffusers' convention: `w = 1` is no guidance,
//! `w = 0` is the unconditional model).

use crate::LengthMismatch;

/// `out_uncond + w (out_cond - out_uncond)` for one value.
#[inline]
pub fn guide(cond: f32, uncond: f32, scale: f32) -> f32 {
    uncond + scale * (cond - uncond)
}

/// Combines conditional and unconditional outputs in place: `cond <- guided`.
/// Works on the raw network output of any prediction type (the combination
/// is affine, so it commutes with the conversion to `x_hat`).
pub fn guide_in_place(cond: &mut [f32], uncond: &[f32], scale: f32) -> Result<(), LengthMismatch> {
    LengthMismatch::check(cond.len(), uncond.len())?;
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = guide(*c, u, scale);
    }
    Ok(())
}
