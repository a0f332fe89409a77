//! Sampling plans: which `(t, s)` steps to take, with which sampler.
//!
//! Algorithm 2 (a multistep consistency model with `T` student steps) and
//! Algorithm 3 (a diffusion model with `n` steps) walk the same uniform grid
//! `t = k/n -> s = (k-1)/n` for `k = n..1`; they differ in the step rule.

use core::fmt;
use core::str::FromStr;

/// `fewstep.student_steps`: `T >= 1` for a multistep consistency model, `0` for
/// a diffusion model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StudentSteps(pub u32);

impl StudentSteps {
    /// A diffusion model (any step count, DDIM or aDDIM).
    pub const DIFFUSION: StudentSteps = StudentSteps(0);

    /// True for a diffusion model (`student_steps = 0`).
    pub fn is_diffusion(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for StudentSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The per-step update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Deterministic DDIM.
    Ddim,
    /// The paper's adjusted DDIM (Algorithm 3).
    Addim,
}

impl SamplerKind {
    /// `ddim` or `addim`.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Addim => "addim",
        }
    }
}

impl FromStr for SamplerKind {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ddim" => Ok(SamplerKind::Ddim),
            "addim" => Ok(SamplerKind::Addim),
            _ => Err(PlanError::UnknownSampler),
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller asks for; resolved against the model into a [`SamplingPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SamplerChoice {
    /// A consistency model's own `T` DDIM steps; aDDIM for a diffusion model.
    #[default]
    Auto,
    /// Force DDIM.
    Ddim,
    /// Force aDDIM.
    Addim,
}

impl FromStr for SamplerChoice {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SamplerChoice::Auto),
            "ddim" => Ok(SamplerChoice::Ddim),
            "addim" => Ok(SamplerChoice::Addim),
            _ => Err(PlanError::UnknownSampler),
        }
    }
}

/// One step of a plan: from time `t` to time `s < t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 0 for the first step (from `t = 1`).
    pub index: u32,
    /// Start time.
    pub t: f64,
    /// End time.
    pub s: f64,
}

/// A validated plan: `steps` uniform steps from `t = 1` to `t = 0` with one
/// sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingPlan {
    steps: u32,
    sampler: SamplerKind,
}

impl SamplingPlan {
    /// Algorithm 2: a multistep consistency model samples with exactly `T`
    /// DDIM steps.
    pub fn multistep_consistency(student_steps: u32) -> Result<Self, PlanError> {
        Self::new(student_steps, SamplerKind::Ddim)
    }

    /// Algorithm 3 (and plain DDIM): `n` steps on the uniform grid.
    pub fn new(steps: u32, sampler: SamplerKind) -> Result<Self, PlanError> {
        if steps == 0 {
            return Err(PlanError::ZeroSteps);
        }
        Ok(Self { steps, sampler })
    }

    /// Resolves a caller's request against a model: a consistency model
    /// (`T >= 1`) takes only `T` steps (requested `None` means `T`) and DDIM
    /// under `Auto`; a diffusion model takes any `n >= 1`, aDDIM under `Auto`.
    pub fn resolve(
        model: StudentSteps,
        requested_steps: Option<u32>,
        choice: SamplerChoice,
        default_diffusion_steps: u32,
    ) -> Result<Self, PlanError> {
        if model.is_diffusion() {
            let steps = requested_steps.unwrap_or(default_diffusion_steps);
            let sampler = match choice {
                SamplerChoice::Ddim => SamplerKind::Ddim,
                SamplerChoice::Auto | SamplerChoice::Addim => SamplerKind::Addim,
            };
            Self::new(steps, sampler)
        } else {
            let trained = model.0;
            let steps = requested_steps.unwrap_or(trained);
            if steps == 0 {
                return Err(PlanError::ZeroSteps);
            }
            if steps != trained {
                return Err(PlanError::StepsNotTrained {
                    requested: steps,
                    trained,
                });
            }
            let sampler = match choice {
                SamplerChoice::Addim => SamplerKind::Addim,
                SamplerChoice::Auto | SamplerChoice::Ddim => SamplerKind::Ddim,
            };
            Self::new(steps, sampler)
        }
    }

    /// Number of steps (network evaluations).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The step rule.
    pub fn sampler(&self) -> SamplerKind {
        self.sampler
    }

    /// The `(t, s)` steps, from `t = 1` down to `s = 0`.
    pub fn iter(&self) -> PlanIter {
        PlanIter {
            steps: self.steps,
            next: 0,
        }
    }
}

impl IntoIterator for &SamplingPlan {
    type Item = Step;
    type IntoIter = PlanIter;
    fn into_iter(self) -> PlanIter {
        self.iter()
    }
}

/// Iterator over a plan's steps.
#[derive(Debug, Clone)]
pub struct PlanIter {
    steps: u32,
    next: u32,
}

impl Iterator for PlanIter {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        if self.next >= self.steps {
            return None;
        }
        let k = self.steps - self.next;
        let n = f64::from(self.steps);
        let step = Step {
            index: self.next,
            t: f64::from(k) / n,
            s: f64::from(k - 1) / n,
        };
        self.next += 1;
        Some(step)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.steps - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for PlanIter {}

/// Why a plan could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// A step count of 0.
    ZeroSteps,
    /// A consistency model asked for a step count it was not trained for.
    StepsNotTrained {
        /// What the caller asked for.
        requested: u32,
        /// The model's `fewstep.student_steps`.
        trained: u32,
    },
    /// Not `auto`, `ddim` or `addim`.
    UnknownSampler,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSteps => f.write_str("steps must be at least 1"),
            Self::StepsNotTrained { requested, trained } => write!(
                f,
                "this multistep consistency model was trained for {trained} steps; {requested} steps were requested"
            ),
            Self::UnknownSampler => f.write_str("unknown sampler (expected auto, ddim or addim)"),
        }
    }
}

impl core::error::Error for PlanError {}
