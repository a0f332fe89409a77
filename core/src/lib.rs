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
//! | [`plan`] | Algorithm 2 / 3 sampling plans as `(t, s)` iterators |
//! | [`training`] | Algorithm 1: teacher-step annealing, times, weights, pseudo-Huber, target |
//! | [`guidance`] | classifier-free guidance |
//! | [`rng`] | Philox4x32-10 + Box–Muller: noise of image `i` independent of batch and platform |
//! | [`format`] | model format v1: metadata keys and value parsers |
//! | [`f16`] | half-precision weight storage |
//!
//! The equations are those of `MODEL_FORMAT.md` and `ALGORITHMS.md`.
//!
//! ## Sampling a multistep consistency model (Algorithm 2)
//!
//! ```
//! use fewstep_core::{Prediction, Schedule, SamplingPlan, ddim_step, rng::batch_noise};
//!
//! let schedule: Schedule = "cosine".parse()?;
//! let (batch, d) = (2, 3 * 8 * 8);
//! let mut z = vec![0.0f32; batch * d];
//! batch_noise(42, 0, d, &mut z); // image i of seed 42, whatever the batch
//! let plan = SamplingPlan::multistep_consistency(4)?;
//! let mut out = vec![0.0f32; z.len()];
//! for step in plan.iter() {
//!     let (at, as_) = (schedule.alpha_sigma(step.t), schedule.alpha_sigma(step.s));
//!     // `out` = network(z, t): here a stand-in v-prediction of zero.
//!     out.iter_mut().for_each(|o| *o = 0.0);
//!     Prediction::V.output_to_x_hat(&z, &mut out, at)?; // out now holds x_hat
//!     ddim_step(&mut z, &out, at, as_)?;
//! }
//! assert!(z.iter().all(|v| v.is_finite()));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

pub mod f16;
pub mod format;
pub mod guidance;
pub mod plan;
pub mod prediction;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod training;

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
