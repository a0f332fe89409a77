//! Training math for Algorithm 1 (multistep consistency training and
//! distillation) and diffusion pretraining, as pure functions on scalars.
//!
//! The trainer draws random numbers and holds tensors; every formula it
//! applies to them comes from here, as scalars or affine coefficients.

use crate::LengthMismatch;
use crate::prediction::Prediction;
use crate::sampler::{addim_noise_scale, ddim_coeffs, inverse_ddim_coeffs};
use crate::schedule::{AlphaSigma, Schedule};
use core::fmt;

/// The annealed teacher step count
/// `N_teacher(i) = exp(ln N0 + clip(i / I_anneal, 0, 1) (ln N1 - ln N0))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeacherAnneal {
    /// Teacher steps at iteration 0 (paper: 64).
    pub start: f64,
    /// Teacher steps after annealing (paper: 1280).
    pub end: f64,
    /// Iterations over which the count grows (paper: 100k); 0 means `end` at once.
    pub anneal_iters: u64,
}

impl TeacherAnneal {
    /// The paper's schedule: 64 -> 1280 over 100k iterations.
    pub const PAPER: TeacherAnneal = TeacherAnneal {
        start: 64.0,
        end: 1280.0,
        anneal_iters: 100_000,
    };

    /// Iterations of the annealing for a run of `total_iters` when the user
    /// does not say: half of them, as in the paper (100k of 200k).
    pub fn default_iters(total_iters: u64) -> u64 {
        total_iters / 2
    }

    /// A fixed teacher step count (the ablation of paper Table 2).
    pub fn fixed(steps: f64) -> Self {
        Self {
            start: steps,
            end: steps,
            anneal_iters: 0,
        }
    }

    /// `N_teacher(i)`, a real number.
    pub fn teacher_steps(&self, iteration: u64) -> f64 {
        let frac = if self.anneal_iters == 0 {
            1.0
        } else {
            (iteration as f64 / self.anneal_iters as f64).clamp(0.0, 1.0)
        };
        // The endpoints exactly, not through exp(ln(.)).
        if frac <= 0.0 {
            return self.start;
        }
        if frac >= 1.0 {
            return self.end;
        }
        let (l0, l1) = (libm::log(self.start), libm::log(self.end));
        libm::exp(l0 + frac * (l1 - l0))
    }

    /// `N_per_segment = round(N_teacher(i) / T)`, at least 1.
    pub fn steps_per_segment(&self, iteration: u64, student_steps: u32) -> u32 {
        let per = libm::round(self.teacher_steps(iteration) / f64::from(student_steps.max(1)));
        if per.is_finite() && per >= 1.0 {
            per.min(f64::from(u32::MAX)) as u32
        } else {
            1
        }
    }
}

/// The times of one Algorithm 1 example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsistencyTimes {
    /// Start time `t = t_step + n_rel / (T N)`.
    pub t: f64,
    /// Teacher-step end `s = t - 1 / (T N)`.
    pub s: f64,
    /// Segment lower end `t_step = step / T`.
    pub t_step: f64,
}

impl ConsistencyTimes {
    /// Maps `(step, n_rel)` to `(t, s, t_step)` for `T` student steps and
    /// `N = steps_per_segment` teacher steps per segment.
    /// Requires `step < T`, `1 <= n_rel <= N`.
    pub fn new(
        step: u32,
        n_rel: u32,
        student_steps: u32,
        steps_per_segment: u32,
    ) -> Result<Self, TrainingError> {
        if student_steps == 0 || steps_per_segment == 0 {
            return Err(TrainingError::ZeroSteps);
        }
        if step >= student_steps {
            return Err(TrainingError::StepOutOfRange {
                step,
                student_steps,
            });
        }
        if n_rel == 0 || n_rel > steps_per_segment {
            return Err(TrainingError::NRelOutOfRange {
                n_rel,
                steps_per_segment,
            });
        }
        let big_t = f64::from(student_steps);
        let total = big_t * f64::from(steps_per_segment);
        let t_step = f64::from(step) / big_t;
        // `s` is formed on the same grid as `t` so that n_rel = 1 gives
        // s == t_step exactly (the identities of eq. 9 rely on it).
        let t = t_step + f64::from(n_rel) / total;
        let s = t_step + f64::from(n_rel - 1) / total;
        Ok(Self { t, s, t_step })
    }

    /// Draws `step ~ U{0..T-1}` and `n_rel ~ U{1..N}` from two uniforms in
    /// `[0, 1)` (the trainer's RNG) and maps them to times.
    pub fn from_uniforms(
        u_step: f64,
        u_n_rel: f64,
        student_steps: u32,
        steps_per_segment: u32,
    ) -> Result<Self, TrainingError> {
        let step = uniform_index(u_step, student_steps);
        let n_rel = 1 + uniform_index(u_n_rel, steps_per_segment);
        Self::new(step, n_rel, student_steps, steps_per_segment)
    }
}

/// The times of one progressive-distillation example (Salimans & Ho 2022)
/// in a stage with `N` student steps: the student's grid point `t = k / N`
/// (`k` in `1..=N`), and the teacher's two steps on the grid of `2N`,
/// `t -> u = t - 1/(2N) -> s = t - 1/N` (the uniform grid of the sampling
/// plans, so a distilled student steps where the plans evaluate it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressiveTimes {
    /// The student's start time `t = k / N`.
    pub t: f64,
    /// The teacher's midpoint `u = (2k - 1) / (2N)`.
    pub u: f64,
    /// The student's end time `s = (k - 1) / N`.
    pub s: f64,
}

impl ProgressiveTimes {
    /// The times of grid point `k` (`1..=N`) for `N = student_steps`.
    pub fn new(k: u32, student_steps: u32) -> Result<Self, TrainingError> {
        if student_steps == 0 {
            return Err(TrainingError::ZeroSteps);
        }
        if k == 0 || k > student_steps {
            return Err(TrainingError::StepOutOfRange {
                step: k,
                student_steps,
            });
        }
        let n = f64::from(student_steps);
        Ok(Self {
            t: f64::from(k) / n,
            u: (2.0 * f64::from(k) - 1.0) / (2.0 * n),
            s: f64::from(k - 1) / n,
        })
    }

    /// Draws `k ~ U{1..N}` from one uniform in `[0, 1)` (the trainer's RNG).
    pub fn from_uniform(u: f64, student_steps: u32) -> Result<Self, TrainingError> {
        Self::new(1 + uniform_index(u, student_steps), student_steps)
    }
}

/// The progressive-distillation target `x~ = invDDIM_{t->s}(z_s, z_t)`: the
/// `x` from which one DDIM step `t -> s` reaches the teacher's two-step
/// result `z_s`, as `x~ = z_s * z_s + z_t * z_t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressiveTargetCoeffs {
    /// Coefficient of the teacher's `z_s`.
    pub z_s: f64,
    /// Coefficient of `z_t`.
    pub z_t: f64,
}

impl ProgressiveTargetCoeffs {
    /// The coefficients for `times` (finite since `s < t`).
    pub fn new(schedule: &Schedule, times: ProgressiveTimes) -> Self {
        let c = inverse_ddim_coeffs(schedule.alpha_sigma(times.t), schedule.alpha_sigma(times.s));
        Self {
            z_s: c.z_s,
            z_t: c.z_t,
        }
    }

    /// The target for one element.
    #[inline]
    pub fn apply(&self, z_s: f64, z_t: f64) -> f64 {
        self.z_s * z_s + self.z_t * z_t
    }
}

/// `floor(u * n)` clamped to `0..n-1` (a `u` of exactly 1.0 or above stays in range).
pub fn uniform_index(u: f64, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let i = libm::floor(u.clamp(0.0, 1.0) * f64::from(n));
    (i as u32).min(n - 1)
}

/// The forward process for one sample: `z_t = alpha_t x + sigma_t eps`,
/// element by element in f64 (the one definition the trainer's batches,
/// the xvar measurement and the sampling driver's img2img share).
pub fn forward_noise(
    x: &[f32],
    eps: &[f32],
    at: AlphaSigma,
    z_t: &mut [f32],
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(x.len(), eps.len())?;
    LengthMismatch::check(x.len(), z_t.len())?;
    for ((z, &xi), &ei) in z_t.iter_mut().zip(x).zip(eps) {
        *z = noised(at, xi, ei);
    }
    Ok(())
}

/// One value of the forward process, `alpha_t x + sigma_t eps` (f64, then f32).
#[inline]
pub fn noised(at: AlphaSigma, x: f32, eps: f32) -> f32 {
    (at.alpha * f64::from(x) + at.sigma * f64::from(eps)) as f32
}

/// `x - x_hat = x * x + eps * eps + out * out` for `z_t = alpha_t x + sigma_t
/// eps` and the prediction's `x_hat = a z_t + b out`: the diffusion loss's
/// residual as coefficients for tensor code. Expanded in f64 so that
/// `1 - a alpha` (`= sigma²` for v) carries no f32 cancellation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualCoeffs {
    /// Coefficient of the clean data `x`: `1 - a alpha_t`.
    pub x: f64,
    /// Coefficient of the noise `eps`: `-a sigma_t`.
    pub eps: f64,
    /// Coefficient of the network output: `-b`.
    pub out: f64,
}

/// [`ResidualCoeffs`] at time `t`'s `alpha_sigma`.
pub fn residual_coeffs(prediction: Prediction, at: AlphaSigma) -> ResidualCoeffs {
    let c = prediction.x_hat_coeffs(at);
    ResidualCoeffs {
        x: 1.0 - c.a * at.alpha,
        eps: -c.a * at.sigma,
        out: -c.b,
    }
}

/// The class label one training example is trained on: the null label
/// (index `num_classes`) with probability `dropout` (`drop_u` uniform in
/// `[0, 1)`: dropped when `drop_u < dropout`), so the model also learns the
/// unconditional output classifier-free guidance needs; the null label too
/// for a label outside `0..num_classes`.
pub fn training_label(label: usize, num_classes: usize, drop_u: f64, dropout: f64) -> usize {
    if drop_u < dropout || label >= num_classes {
        num_classes
    } else {
        label
    }
}

/// The loss weight `w(t) = SNR(t) + 1` (with a v- or x-loss this is the
/// v-loss weighting of the paper).
pub fn loss_weight(schedule: &Schedule, t: f64) -> f64 {
    schedule.snr(t) + 1.0
}

/// The weight `w(t)` of Algorithm 1's loss `w(t) · pseudo_huber(x_diff)`.
///
/// The paper calls its weighting "v-loss (equivalent to SNR + 1 weighting)"
/// and uses the unsquared l2 distance; its text allows two readings
/// (`ALGORITHMS.md`), to be settled by measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LossWeight {
    /// `w = SNR(t) + 1`, as Algorithm 1 is written (`snr1`).
    #[default]
    SnrPlusOne,
    /// `w = sqrt(SNR(t) + 1)` (`sqrt-snr1`): then `w ||x_hat - x||` is the
    /// v-space distance `||v_hat - v||`, so low-noise examples weigh less
    /// than with `snr1`.
    SqrtSnrPlusOne,
}

impl LossWeight {
    /// Every weighting, in the order of their names.
    pub const ALL: [LossWeight; 2] = [LossWeight::SnrPlusOne, LossWeight::SqrtSnrPlusOne];

    /// `w(t)` under `schedule`.
    pub fn at(self, schedule: &Schedule, t: f64) -> f64 {
        match self {
            LossWeight::SnrPlusOne => loss_weight(schedule, t),
            LossWeight::SqrtSnrPlusOne => libm::sqrt(loss_weight(schedule, t)),
        }
    }

    /// `snr1` or `sqrt-snr1` (what [`core::str::FromStr`] parses).
    pub fn as_str(self) -> &'static str {
        match self {
            LossWeight::SnrPlusOne => "snr1",
            LossWeight::SqrtSnrPlusOne => "sqrt-snr1",
        }
    }
}

impl core::str::FromStr for LossWeight {
    type Err = TrainingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossWeight::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or(TrainingError::UnknownLossWeight)
    }
}

impl fmt::Display for LossWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pseudo-Huber on a squared norm: `sqrt(||v||² + c²) - c`.
pub fn pseudo_huber(norm_sq: f64, c: f64) -> f64 {
    libm::sqrt(norm_sq + c * c) - c
}

/// The paper's `c` for the pseudo-Huber loss (ImageNet).
pub const PAPER_HUBER_C: f64 = 1e-4;

/// The paper's `eta` ("xvar_frac") for the CD teacher's aDDIM step.
pub const PAPER_XVAR_FRAC: f64 = 0.75;

/// `xvar = eta * ||x_teacher - x||² / d` (0 for consistency training).
pub fn teacher_xvar(xvar_frac: f64, diff_norm_sq: f64, dim: usize) -> f64 {
    if dim == 0 {
        return 0.0;
    }
    xvar_frac * diff_norm_sq / dim as f64
}

/// The teacher's ODE step `z_s = aDDIM_{t->s}(x_teacher, z_t, xvar)` for one
/// example, as `z_s = x * x_teacher + z * z_t` (needs `||eps_hat||²`, with
/// `eps_hat = (z_t - alpha_t x_teacher) / sigma_t`, from the caller's tensors).
pub fn teacher_step_coeffs(
    at_t: AlphaSigma,
    at_s: AlphaSigma,
    xvar: f64,
    dim: usize,
    eps_hat_norm_sq: f64,
) -> TeacherStepCoeffs {
    let scale = addim_noise_scale(at_t, at_s, xvar, dim, eps_hat_norm_sq);
    TeacherStepCoeffs {
        x: at_s.alpha - scale * at_t.alpha / at_t.sigma,
        z: scale / at_t.sigma,
    }
}

/// `z_s = x * x_teacher + z * z_t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeacherStepCoeffs {
    /// Coefficient of `x_teacher`.
    pub x: f64,
    /// Coefficient of `z_t`.
    pub z: f64,
}

/// The Algorithm 1 target `invDDIM_{t->t_step}(DDIM_{s->t_step}(x_ref, z_s), z_t)`
/// as `x_ref * x_ref + z_s * z_s + z_t * z_t`; the loss compares it with `x_hat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsistencyTargetCoeffs {
    /// Coefficient of `x_ref = stopgrad(f(z_s, s))`.
    pub x_ref: f64,
    /// Coefficient of `z_s`.
    pub z_s: f64,
    /// Coefficient of `z_t`.
    pub z_t: f64,
}

impl ConsistencyTargetCoeffs {
    /// Composes `z_ref = DDIM_{s->t_step}(x_ref, z_s)` with
    /// `invDDIM_{t->t_step}(z_ref, z_t)`.
    pub fn new(schedule: &Schedule, times: ConsistencyTimes) -> Self {
        let at_t = schedule.alpha_sigma(times.t);
        let at_s = schedule.alpha_sigma(times.s);
        let at_step = schedule.alpha_sigma(times.t_step);
        let z_ref = ddim_coeffs(at_s, at_step);
        let inv = inverse_ddim_coeffs(at_t, at_step);
        Self {
            x_ref: inv.z_s * z_ref.x,
            z_s: inv.z_s * z_ref.z,
            z_t: inv.z_t,
        }
    }

    /// The target for one element.
    #[inline]
    pub fn apply(&self, x_ref: f64, z_s: f64, z_t: f64) -> f64 {
        self.x_ref * x_ref + self.z_s * z_s + self.z_t * z_t
    }
}

/// Why a training quantity could not be formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingError {
    /// `T = 0` or `N = 0`.
    ZeroSteps,
    /// `step >= T`.
    StepOutOfRange {
        /// The segment index given.
        step: u32,
        /// `T`.
        student_steps: u32,
    },
    /// `n_rel` not in `1..=N`.
    NRelOutOfRange {
        /// The relative teacher step given.
        n_rel: u32,
        /// `N`.
        steps_per_segment: u32,
    },
    /// A loss weighting name other than `snr1` or `sqrt-snr1`.
    UnknownLossWeight,
}

impl fmt::Display for TrainingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSteps => {
                f.write_str("student steps and teacher steps per segment must be >= 1")
            }
            Self::StepOutOfRange {
                step,
                student_steps,
            } => write!(
                f,
                "segment {step} out of range for {student_steps} student steps"
            ),
            Self::NRelOutOfRange {
                n_rel,
                steps_per_segment,
            } => write!(
                f,
                "n_rel {n_rel} out of range 1..={steps_per_segment} teacher steps per segment"
            ),
            Self::UnknownLossWeight => f.write_str("loss weight must be snr1 or sqrt-snr1"),
        }
    }
}

impl core::error::Error for TrainingError {}
