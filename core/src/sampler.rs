//! One step of the deterministic samplers: DDIM, its inverse, and aDDIM.
//!
//! Each step is exposed twice from one definition: as coefficients on scalars
//! (what the trainer applies to tensors) and as in-place loops over caller
//! slices (what the runtime uses). Coefficients are computed in `f64` once per
//! step; the loops run in `f32` and allocate nothing.

use crate::LengthMismatch;
use crate::schedule::{AlphaSigma, Schedule};

/// `DDIM_{t->s}(x, z_t) = x_coeff * x + z_coeff * z_t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimCoeffs {
    /// Coefficient of `x_hat`: `alpha_s - alpha_t sigma_s / sigma_t`.
    pub x: f64,
    /// Coefficient of `z_t`: `sigma_s / sigma_t`.
    pub z: f64,
}

/// DDIM coefficients for a step from `t` to `s`:
/// `z_s = alpha_s x + (sigma_s / sigma_t)(z_t - alpha_t x)`.
pub fn ddim_coeffs(t: AlphaSigma, s: AlphaSigma) -> DdimCoeffs {
    let ratio = s.sigma / t.sigma;
    DdimCoeffs {
        x: s.alpha - t.alpha * ratio,
        z: ratio,
    }
}

/// `invDDIM_{t->s}(z_s, z_t) = z_s_coeff * z_s + z_t_coeff * z_t`: the `x` for
/// which `DDIM_{t->s}(x, z_t) = z_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverseDdimCoeffs {
    /// Coefficient of `z_s`: `1 / (alpha_s - alpha_t sigma_s / sigma_t)`.
    pub z_s: f64,
    /// Coefficient of `z_t`: `-(sigma_s / sigma_t) / (alpha_s - alpha_t sigma_s / sigma_t)`.
    pub z_t: f64,
}

/// Inverse-DDIM coefficients for the pair of times `t` (start) and `s` (end).
/// Infinite when `s == t` (the DDIM step is then the identity and has no inverse).
pub fn inverse_ddim_coeffs(t: AlphaSigma, s: AlphaSigma) -> InverseDdimCoeffs {
    let fwd = ddim_coeffs(t, s);
    InverseDdimCoeffs {
        z_s: 1.0 / fwd.x,
        z_t: -fwd.z / fwd.x,
    }
}

/// One DDIM step in place: `z <- DDIM_{t->s}(x_hat, z)`.
pub fn ddim_step(
    z: &mut [f32],
    x_hat: &[f32],
    t: AlphaSigma,
    s: AlphaSigma,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(z.len(), x_hat.len())?;
    let c = ddim_coeffs(t, s);
    let (cx, cz) = (c.x as f32, c.z as f32);
    for (zi, &xi) in z.iter_mut().zip(x_hat) {
        *zi = cx * xi + cz * *zi;
    }
    Ok(())
}

/// Inverse DDIM in place: `z_s <- invDDIM_{t->s}(z_s, z_t)`, the clean-data
/// estimate that carries `z_t` to `z_s` in one DDIM step.
pub fn inverse_ddim(
    z_s: &mut [f32],
    z_t: &[f32],
    t: AlphaSigma,
    s: AlphaSigma,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(z_s.len(), z_t.len())?;
    let c = inverse_ddim_coeffs(t, s);
    let (cs, ct) = (c.z_s as f32, c.z_t as f32);
    for (zs, &zt) in z_s.iter_mut().zip(z_t) {
        *zs = cs * *zs + ct * zt;
    }
    Ok(())
}

/// Where aDDIM gets `xvar(t) = tr(Var[x | z_t]) / d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XVar<'a> {
    /// The paper's analytic estimate `0.1 / (2 + SNR(t))`.
    Analytic,
    /// An empirical table (`fewstep.addim_xvar`): value `i` holds at
    /// `t = i / (n - 1)`, linearly interpolated in between. Must not be empty.
    Table(&'a [f32]),
    /// A fixed value for every `t` (`0` turns aDDIM into DDIM).
    Constant(f64),
}

impl XVar<'_> {
    /// `xvar` at time `t` under `schedule`.
    pub fn at(&self, schedule: &Schedule, t: f64) -> f64 {
        match *self {
            XVar::Analytic => 0.1 / (2.0 + schedule.snr(t)),
            XVar::Table(table) => interpolate_table(table, t),
            XVar::Constant(v) => v,
        }
    }
}

/// Linear interpolation in a table sampled at `t = i / (n - 1)`; `t` is
/// clamped to [0, 1]; a one-entry table is constant; an empty table gives 0.
pub fn interpolate_table(table: &[f32], t: f64) -> f64 {
    match table.len() {
        0 => 0.0,
        1 => f64::from(table[0]),
        n => {
            let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
            let pos = t * (n - 1) as f64;
            let lo = (libm::floor(pos) as usize).min(n - 2);
            let frac = pos - lo as f64;
            f64::from(table[lo]) * (1.0 - frac) + f64::from(table[lo + 1]) * frac
        }
    }
}

/// The noise scale aDDIM puts on `eps_hat` for one sample:
/// `sqrt(sigma_s² + (d / ||eps_hat||²) zvar)` with
/// `zvar = (alpha_s - alpha_t sigma_s / sigma_t)² xvar`. With `xvar = 0` this is
/// `sigma_s`, i.e. DDIM. A zero `eps_hat` gets `sigma_s` (the term it scales is 0).
pub fn addim_noise_scale(
    t: AlphaSigma,
    s: AlphaSigma,
    xvar: f64,
    dim: usize,
    eps_hat_norm_sq: f64,
) -> f64 {
    let x_coeff = ddim_coeffs(t, s).x;
    let zvar = x_coeff * x_coeff * xvar;
    if eps_hat_norm_sq > 0.0 && zvar > 0.0 {
        libm::sqrt(s.sigma * s.sigma + (dim as f64 / eps_hat_norm_sq) * zvar)
    } else {
        s.sigma
    }
}

/// One aDDIM step in place over a batch: `z <- aDDIM_{t->s}(x_hat, z, xvar)`,
/// `z` and `x_hat` holding whole samples of `sample_len` values each;
/// `||eps_hat||` is taken per sample, `d = sample_len`.
pub fn addim_step(
    z: &mut [f32],
    x_hat: &[f32],
    sample_len: usize,
    t: AlphaSigma,
    s: AlphaSigma,
    xvar: f64,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(z.len(), x_hat.len())?;
    if sample_len == 0 || !z.len().is_multiple_of(sample_len) {
        return Err(LengthMismatch {
            expected: sample_len,
            actual: z.len(),
        });
    }
    for (zs, xs) in z
        .chunks_exact_mut(sample_len)
        .zip(x_hat.chunks_exact(sample_len))
    {
        addim_sample_step(zs, xs, t, s, xvar);
    }
    Ok(())
}

/// aDDIM on one sample (slices already of equal length).
fn addim_sample_step(z: &mut [f32], x_hat: &[f32], t: AlphaSigma, s: AlphaSigma, xvar: f64) {
    let inv_sigma_t = (1.0 / t.sigma) as f32;
    let alpha_t = t.alpha as f32;
    // Pass 1: ||eps_hat||², eps_hat = (z - alpha_t x_hat) / sigma_t, in eight
    // f32 lanes (vectorisable) folded into f64.
    let mut lanes = [0.0f32; 8];
    let mut zc = z.chunks_exact(8);
    let mut xc = x_hat.chunks_exact(8);
    for (zb, xb) in (&mut zc).zip(&mut xc) {
        for k in 0..8 {
            let e = (zb[k] - alpha_t * xb[k]) * inv_sigma_t;
            lanes[k] += e * e;
        }
    }
    let mut norm_sq: f64 = lanes.iter().map(|&v| f64::from(v)).sum();
    for (&zi, &xi) in zc.remainder().iter().zip(xc.remainder()) {
        let e = f64::from((zi - alpha_t * xi) * inv_sigma_t);
        norm_sq += e * e;
    }
    let scale = addim_noise_scale(t, s, xvar, z.len(), norm_sq);
    // Pass 2: z_s = alpha_s x_hat + scale * eps_hat
    //             = (alpha_s - scale alpha_t / sigma_t) x_hat + (scale / sigma_t) z.
    let cz = (scale / t.sigma) as f32;
    let cx = (s.alpha - scale * t.alpha / t.sigma) as f32;
    for (zi, &xi) in z.iter_mut().zip(x_hat) {
        *zi = cx * xi + cz * *zi;
    }
}
