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

impl SamplerChoice {
    /// Every choice, in the order CLIs list them.
    pub const ALL: [SamplerChoice; 3] = [
        SamplerChoice::Auto,
        SamplerChoice::Ddim,
        SamplerChoice::Addim,
    ];

    /// `auto`, `ddim` or `addim`: the one spelling every CLI and the C layer use.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerChoice::Auto => "auto",
            SamplerChoice::Ddim => "ddim",
            SamplerChoice::Addim => "addim",
        }
    }
}

impl fmt::Display for SamplerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// A validated plan: `steps` uniform steps from a start time to `t = 0` with
/// one sampler. Step `k` (counting down from `steps`) starts at
/// `t = scale * k / grid`: a plain plan has `grid = steps`, `scale = 1` and
/// starts at `t = 1`; an edit ([`SamplingPlan::with_strength`]) starts lower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingPlan {
    steps: u32,
    grid: u32,
    scale: f64,
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
        Ok(Self {
            steps,
            grid: steps,
            scale: 1.0,
            sampler,
        })
    }

    /// The same plan started part-way, for image editing (img2img): strength
    /// `s` in `(0, 1]` is how much of the path from noise to data is walked.
    ///
    /// - A multistep consistency model (`T >= 1`) may only start on one of its
    ///   segment boundaries: it starts at `k / T` with `k = ceil(s T)` and
    ///   takes `k` of its `T` steps (so never 0 steps for `s > 0`).
    /// - A diffusion model starts at `t = s` and spreads this plan's steps
    ///   uniformly over `[0, s]`.
    ///
    /// `s = 1` returns the plan unchanged.
    pub fn with_strength(self, model: StudentSteps, strength: f64) -> Result<Self, PlanError> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(PlanError::BadStrength);
        }
        if strength == 1.0 {
            return Ok(self);
        }
        if model.is_diffusion() {
            Ok(Self {
                scale: strength,
                ..self
            })
        } else {
            let trained = model.0;
            // A tolerance so that e.g. 0.3 * 10 = 3.0000000000000004 is 3 steps.
            let k = libm::ceil(strength * f64::from(trained) - 1e-9).clamp(1.0, f64::from(trained));
            Ok(Self {
                steps: k as u32,
                grid: trained,
                scale: 1.0,
                sampler: self.sampler,
            })
        }
    }

    /// The time the plan starts from (1 for a plain plan).
    pub fn start_time(&self) -> f64 {
        self.scale * f64::from(self.steps) / f64::from(self.grid)
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
            grid: self.grid,
            scale: self.scale,
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
    grid: u32,
    scale: f64,
    next: u32,
}

impl Iterator for PlanIter {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        if self.next >= self.steps {
            return None;
        }
        let k = self.steps - self.next;
        let n = f64::from(self.grid);
        let step = Step {
            index: self.next,
            t: self.scale * (f64::from(k) / n),
            s: self.scale * (f64::from(k - 1) / n),
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
    /// An img2img strength outside `(0, 1]` (or not a number).
    BadStrength,
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
            Self::BadStrength => f.write_str(
                "strength must be in (0, 1]: the share of the path from noise to data to walk",
            ),
        }
    }
}

impl core::error::Error for PlanError {}
