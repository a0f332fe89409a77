//! f16 weight storage: models may store weights as IEEE half and compute in
//! f32 (tract computes f16 in software, far slower). Round-to-nearest-even.

use crate::LengthMismatch;
pub use half::f16;
use half::slice::HalfFloatSliceExt;

/// `dst[i] = f16(src[i])`, round to nearest even; out-of-range values become ±inf.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> Result<(), LengthMismatch> {
    LengthMismatch::check(dst.len(), src.len())?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// `dst[i] = f32(src[i])` (exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> Result<(), LengthMismatch> {
    LengthMismatch::check(dst.len(), src.len())?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// True when every value survives the trip to f16 without overflowing to inf
/// (a model whose weights do not is refused f16 export).
pub fn fits_f16(src: &[f32]) -> bool {
    src.iter()
        .all(|&v| !v.is_finite() || f16::from_f32(v).is_finite())
}
