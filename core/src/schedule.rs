//! Variance-preserving noise schedules (`docs/MODEL_FORMAT.md`, "3. The schedule").
//!
//! Every schedule is a function `logsnr(t)` on diffusion time `t ∈ [0, 1]`
//! (1 is pure noise). `alpha_t² = sigmoid(logsnr)`, `sigma_t² = sigmoid(-logsnr)`.
//! Scalar schedule math runs in `f64`: it is evaluated a handful of times per
//! step, and the coefficients it produces are what decide sampler accuracy.

use core::fmt;
use core::str::FromStr;

/// Lowest logSNR of the cosine schedule (at `t = 1`).
pub const COSINE_LOGSNR_MIN: f64 = -15.0;
/// Highest logSNR of the cosine schedule (at `t = 0`).
pub const COSINE_LOGSNR_MAX: f64 = 15.0;

/// A noise schedule as named in the `fewstep.schedule` metadata key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `cosine`: `logsnr(t) = -2 ln tan(a t + b)`, logSNR spanning [-15, 15].
    Cosine,
    /// `shifted_cosine:<f>`: `cosine(t) + 2 ln f` (simple diffusion's resolution
    /// shift, `f = noise_resolution / image_resolution`).
    ShiftedCosine {
        /// The shift factor `f > 0`.
        factor: f64,
    },
    /// `interpolated_cosine:<f_lo>:<f_hi>`: `cosine(t) + 2 (t ln f_lo + (1 - t) ln f_hi)`.
    InterpolatedCosine {
        /// Shift factor that applies at `t = 1` (high noise).
        factor_lo: f64,
        /// Shift factor that applies at `t = 0` (low noise).
        factor_hi: f64,
    },
}

/// `alpha_t` and `sigma_t` of a variance-preserving schedule at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaSigma {
    /// Signal scale `alpha_t`.
    pub alpha: f64,
    /// Noise scale `sigma_t`.
    pub sigma: f64,
}

impl AlphaSigma {
    /// `alpha_t, sigma_t` from a logSNR value, computed with a numerically
    /// stable sigmoid so neither underflows to 0 for |logsnr| up to ~1400.
    pub fn from_logsnr(logsnr: f64) -> Self {
        Self {
            alpha: libm::sqrt(sigmoid(logsnr)),
            sigma: libm::sqrt(sigmoid(-logsnr)),
        }
    }

    /// `SNR = alpha² / sigma²`.
    pub fn snr(self) -> f64 {
        (self.alpha * self.alpha) / (self.sigma * self.sigma)
    }
}

/// `1 / (1 + exp(-x))` without overflow for large |x|.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// The cosine schedule's `(a, b)` such that `logsnr(t) = -2 ln tan(a t + b)`.
fn cosine_ab() -> (f64, f64) {
    let b = libm::atan(libm::exp(-COSINE_LOGSNR_MAX / 2.0));
    let a = libm::atan(libm::exp(-COSINE_LOGSNR_MIN / 2.0)) - b;
    (a, b)
}

impl Schedule {
    /// logSNR at time `t`. `t` is clamped to `[0, 1]`, so callers never see the
    /// tangent's pole or a NaN from a slightly out-of-range time.
    pub fn logsnr(&self, t: f64) -> f64 {
        let t = if t.is_nan() { 1.0 } else { t.clamp(0.0, 1.0) };
        let (a, b) = cosine_ab();
        let cosine = -2.0 * libm::log(libm::tan(a * t + b));
        match *self {
            Schedule::Cosine => cosine,
            Schedule::ShiftedCosine { factor } => cosine + 2.0 * libm::log(factor),
            Schedule::InterpolatedCosine {
                factor_lo,
                factor_hi,
            } => cosine + 2.0 * (t * libm::log(factor_lo) + (1.0 - t) * libm::log(factor_hi)),
        }
    }

    /// `alpha_t` and `sigma_t` at time `t`.
    pub fn alpha_sigma(&self, t: f64) -> AlphaSigma {
        AlphaSigma::from_logsnr(self.logsnr(t))
    }

    /// `SNR(t) = exp(logsnr(t))`.
    pub fn snr(&self, t: f64) -> f64 {
        libm::exp(self.logsnr(t))
    }

    /// Parses a `fewstep.schedule` value: `cosine`, `shifted_cosine:<f>` or
    /// `interpolated_cosine:<f_lo>:<f_hi>` (factors finite and > 0).
    pub fn parse(text: &str) -> Result<Self, ScheduleParseError> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or("");
        let schedule = match name {
            "cosine" => Schedule::Cosine,
            "shifted_cosine" => Schedule::ShiftedCosine {
                factor: parse_factor(parts.next())?,
            },
            "interpolated_cosine" => Schedule::InterpolatedCosine {
                factor_lo: parse_factor(parts.next())?,
                factor_hi: parse_factor(parts.next())?,
            },
            _ => return Err(ScheduleParseError::UnknownName),
        };
        if parts.next().is_some() {
            return Err(ScheduleParseError::TooManyParameters);
        }
        Ok(schedule)
    }
}

fn parse_factor(part: Option<&str>) -> Result<f64, ScheduleParseError> {
    let part = part.ok_or(ScheduleParseError::MissingParameter)?;
    let value: f64 = part
        .trim()
        .parse()
        .map_err(|_| ScheduleParseError::BadNumber)?;
    if !value.is_finite() || value <= 0.0 {
        return Err(ScheduleParseError::NonPositiveFactor);
    }
    Ok(value)
}

impl FromStr for Schedule {
    type Err = ScheduleParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Writes the metadata form that [`Schedule::parse`] reads back.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Cosine => f.write_str("cosine"),
            Schedule::ShiftedCosine { factor } => write!(f, "shifted_cosine:{factor}"),
            Schedule::InterpolatedCosine {
                factor_lo,
                factor_hi,
            } => write!(f, "interpolated_cosine:{factor_lo}:{factor_hi}"),
        }
    }
}

/// Why a schedule string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleParseError {
    /// Not `cosine`, `shifted_cosine` or `interpolated_cosine`.
    UnknownName,
    /// A shift factor is missing (e.g. `shifted_cosine` without `:<f>`).
    MissingParameter,
    /// More `:`-separated parameters than the schedule takes.
    TooManyParameters,
    /// A shift factor is not a number.
    BadNumber,
    /// A shift factor is zero, negative or not finite.
    NonPositiveFactor,
}

impl fmt::Display for ScheduleParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownName => {
                "unknown schedule (expected cosine, shifted_cosine:<f> or interpolated_cosine:<f_lo>:<f_hi>)"
            }
            Self::MissingParameter => "schedule is missing a shift factor",
            Self::TooManyParameters => "schedule has too many parameters",
            Self::BadNumber => "schedule shift factor is not a number",
            Self::NonPositiveFactor => "schedule shift factor must be finite and > 0",
        })
    }
}

impl core::error::Error for ScheduleParseError {}
