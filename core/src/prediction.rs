//! What the network outputs (`fewstep.prediction`) and how it becomes `x_hat`.
//!
//! Every conversion is affine in `(z, out)`, so it is exposed as coefficients
//! ([`Prediction::x_hat_coeffs`]) that tensor code (the trainer) applies to
//! whole batches, and as slice functions that apply the same coefficients.

use crate::LengthMismatch;
use crate::schedule::AlphaSigma;
use core::fmt;
use core::str::FromStr;

/// The quantity a network predicts from `z_t = alpha_t x + sigma_t eps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prediction {
    /// Clean data `x`.
    X,
    /// The noise `eps`.
    Eps,
    /// `v = alpha_t eps - sigma_t x` (Salimans & Ho 2022).
    V,
}

/// `x_hat = z * z_coeff + out * out_coeff`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine2 {
    /// Coefficient of the first operand.
    pub a: f64,
    /// Coefficient of the second operand.
    pub b: f64,
}

impl Affine2 {
    /// `a * p + b * q`.
    #[inline]
    pub fn apply(self, p: f64, q: f64) -> f64 {
        self.a * p + self.b * q
    }
}

impl Prediction {
    /// The metadata spelling: `x`, `eps` or `v`.
    pub fn as_str(self) -> &'static str {
        match self {
            Prediction::X => "x",
            Prediction::Eps => "eps",
            Prediction::V => "v",
        }
    }

    /// Coefficients `(a, b)` with `x_hat = a * z + b * out`.
    /// `x`: `out`; `eps`: `(z - sigma out) / alpha`; `v`: `alpha z - sigma out`.
    pub fn x_hat_coeffs(self, at: AlphaSigma) -> Affine2 {
        match self {
            Prediction::X => Affine2 { a: 0.0, b: 1.0 },
            Prediction::Eps => Affine2 {
                a: 1.0 / at.alpha,
                b: -at.sigma / at.alpha,
            },
            Prediction::V => Affine2 {
                a: at.alpha,
                b: -at.sigma,
            },
        }
    }

    /// Coefficients `(a, b)` with `target = a * x + b * eps`: what the network
    /// should output for clean data `x` noised with `eps` (training targets).
    pub fn target_coeffs(self, at: AlphaSigma) -> Affine2 {
        match self {
            Prediction::X => Affine2 { a: 1.0, b: 0.0 },
            Prediction::Eps => Affine2 { a: 0.0, b: 1.0 },
            Prediction::V => Affine2 {
                a: -at.sigma,
                b: at.alpha,
            },
        }
    }

    /// Coefficients `(a, b)` with `out = a * z + b * x_hat`: the output that
    /// would have produced `x_hat` at `z` (inverse of [`Self::x_hat_coeffs`]).
    pub fn output_coeffs(self, at: AlphaSigma) -> Affine2 {
        match self {
            Prediction::X => Affine2 { a: 0.0, b: 1.0 },
            // eps = (z - alpha x) / sigma
            Prediction::Eps => Affine2 {
                a: 1.0 / at.sigma,
                b: -at.alpha / at.sigma,
            },
            // v = (alpha z - x) / sigma, from x = alpha z - sigma v
            Prediction::V => Affine2 {
                a: at.alpha / at.sigma,
                b: -1.0 / at.sigma,
            },
        }
    }

    /// Turns a network output into `x_hat`, in place: `out[i] <- x_hat[i]`.
    pub fn output_to_x_hat(
        self,
        z: &[f32],
        out: &mut [f32],
        at: AlphaSigma,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(z.len(), out.len())?;
        if self == Prediction::X {
            return Ok(());
        }
        let c = self.x_hat_coeffs(at);
        let (a, b) = (c.a as f32, c.b as f32);
        for (o, &zi) in out.iter_mut().zip(z) {
            *o = a * zi + b * *o;
        }
        Ok(())
    }

    /// Turns `x_hat` back into the output that produced it, in place.
    pub fn x_hat_to_output(
        self,
        z: &[f32],
        x_hat: &mut [f32],
        at: AlphaSigma,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(z.len(), x_hat.len())?;
        let c = self.output_coeffs(at);
        let (a, b) = (c.a as f32, c.b as f32);
        for (o, &zi) in x_hat.iter_mut().zip(z) {
            *o = a * zi + b * *o;
        }
        Ok(())
    }

    /// Parses `x`, `eps` or `v`.
    pub fn parse(text: &str) -> Result<Self, PredictionParseError> {
        match text {
            "x" => Ok(Prediction::X),
            "eps" => Ok(Prediction::Eps),
            "v" => Ok(Prediction::V),
            _ => Err(PredictionParseError),
        }
    }
}

impl FromStr for Prediction {
    type Err = PredictionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prediction type was not `x`, `eps` or `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictionParseError;

impl fmt::Display for PredictionParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown prediction type (expected x, eps or v)")
    }
}

impl core::error::Error for PredictionParseError {}
