//! # fewstep-core
//!
//! The sampler and training math of *Multistep Consistency Models* (Heek,
//! Hoogeboom, Salimans 2024) for the fewstep runtime and trainer, in one place.
//! `#![no_std]`, no allocation: slice functions work in place on caller
//! buffers; scalar and coefficient functions serve tensor code.
//!
//! | module | what |
//! |---|---|
//! | [`schedule`] | `cosine`, `shifted_cosine:<f>`, `interpolated_cosine:<lo>:<hi>`; `logsnr`, `alpha_sigma`, `snr` |
//! | [`prediction`] | `x` / `eps` / `v` outputs to `x_hat` and back |
//! | [`sampler`] | `ddim_step`, `inverse_ddim`, `addim_step` (analytic or tabled `xvar`) |
//! | [`mod@drive`] | the one sampling loop: guidance, `x_hat`, clipping, img2img / inpainting, progress, DDIM / aDDIM; [`Conditioning`] |
//! | [`plan`] | Algorithm 2 / 3 sampling plans as `(t, s)` iterators |
//! | [`training`] | Algorithm 1: teacher-step annealing, times, weights, pseudo-Huber, target |
//! | [`guidance`] | classifier-free guidance |
//! | [`rng`] | Philox4x32-10 + Box–Muller: noise of image `i` independent of batch and platform |
//! | [`format`] | model format v1: metadata keys and value parsers |
//! | [`mod@f16`] | half-precision weight storage |
//!
//! The equations are those of `docs/MODEL_FORMAT.md` and `ALGORITHMS.md`.
//!
//! ## Sampling a multistep consistency model (Algorithm 2)
//!
//! [`drive()`] runs the plan; the caller wraps its network (here a stand-in
//! v-prediction of zero) and owns the buffers.
//!
//! ```
//! use fewstep_core::drive::{Flow, Sampling, Workspace};
//! use fewstep_core::{Conditioning, Prediction, Schedule, SamplingPlan, XVar, drive, rng::batch_noise};
//!
//! let schedule: Schedule = "cosine".parse()?;
//! let sampling = Sampling {
//!     schedule: &schedule,
//!     prediction: Prediction::V,
//!     plan: SamplingPlan::multistep_consistency(4)?,
//!     xvar: XVar::Analytic,
//!     image_len: 3 * 8 * 8,
//!     num_classes: 0,
//!     conditioning: Conditioning::None,
//!     guidance: 1.0,
//!     clip: None,
//!     edit: None,
//! };
//! let lens = sampling.buffer_lens(2);
//! let mut z = vec![0.0f32; lens.z];
//! batch_noise(42, 0, sampling.image_len, &mut z); // image i of seed 42, whatever the batch
//! let mut out = vec![0.0f32; lens.out];
//! let mut network = |_z: &[f32], _t: f64, _labels: Option<&[i64]>, out: &mut [f32]| {
//!     out.fill(0.0);
//!     Ok::<(), ()>(())
//! };
//! let ws = &mut Workspace { z: &mut z, out: &mut out, net_in: &mut [], labels: &mut [] };
//! drive(&sampling, ws, &mut network, |report| {
//!     println!("step {}/{}", report.step, report.steps);
//!     Flow::Continue
//! })
//! .map_err(|e| format!("{e:?}"))?;
//! assert!(z.iter().all(|v| v.is_finite()));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

pub mod drive;
pub mod f16;
pub mod format;
pub mod guidance;
pub mod plan;
pub mod prediction;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod training;

pub use drive::{Conditioning, Network, drive};
pub use plan::{PlanError, SamplerChoice, SamplerKind, SamplingPlan, Step, StudentSteps};
pub use prediction::Prediction;
pub use sampler::{XVar, addim_step, ddim_step, inverse_ddim};
pub use schedule::{AlphaSigma, Schedule};

use core::fmt;

/// Two buffers that must have matching lengths do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthMismatch {
    /// The length required.
    pub expected: usize,
    /// The length given.
    pub actual: usize,
}

impl LengthMismatch {
    /// `Ok` when `actual == expected`.
    #[inline]
    pub fn check(expected: usize, actual: usize) -> Result<(), LengthMismatch> {
        if expected == actual {
            Ok(())
        } else {
            Err(LengthMismatch { expected, actual })
        }
    }
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buffer length mismatch: expected {}, got {}",
            self.expected, self.actual
        )
    }
}

impl core::error::Error for LengthMismatch {}
