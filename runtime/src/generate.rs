//! Generation: the builder-style request and the sampling loop. All math is
//! `fewstep_core`'s; this module only moves buffers between it and tract.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fewstep_core::{SamplerChoice, SamplerKind, SamplingPlan, XVar, addim_step, ddim_step};

use crate::error::GenerateError;
use crate::exec::{Execution, Runner};
use crate::images::Images;
use crate::model::Model;

/// Steps a diffusion model (`fewstep.student_steps = 0`) takes when the
/// caller does not say.
pub const DEFAULT_DIFFUSION_STEPS: u32 = 32;

/// A cancellation flag, cheap to clone and share with another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not cancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the generation holding this token to stop after its current step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the progress callback sees after each step.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Steps completed (1-based: 1 after the first network evaluation).
    pub step: u32,
    /// Total steps of the plan.
    pub steps: u32,
    /// The step's start time.
    pub t: f64,
    /// The step's end time.
    pub s: f64,
    /// The current clean-data estimate `x_hat`, `[N,C,H,W]` in data space
    /// (after guidance and optional clipping).
    pub x_hat: &'a [f32],
}

/// Where the initial noise comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    /// Per-image streams of core's portable RNG (`fewstep_core::rng`): image
    /// `i` of seed `S` is the same at any batch size.
    Seed(u64),
    /// Caller-given `z_1`, `[N,C,H,W]`.
    Values(Vec<f32>),
}

type ProgressFn<'a> = Box<dyn FnMut(&Progress<'_>) + 'a>;

/// A generation request (builder style). Run it with [`GenerateRequest::run`]
/// when made by [`Model::generate`], or [`Model::run`].
pub struct GenerateRequest<'a> {
    model: Option<&'a Model>,
    batch: Option<usize>,
    noise: Noise,
    first_image: u64,
    steps: Option<u32>,
    sampler: SamplerChoice,
    labels: Option<Vec<i64>>,
    guidance: f32,
    clip: bool,
    threads: Option<usize>,
    execution: Execution,
    progress: Option<ProgressFn<'a>>,
    cancel: Option<CancelToken>,
    memory_budget: Option<u64>,
}

impl std::fmt::Debug for GenerateRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("batch", &self.batch)
            .field("noise", &self.noise)
            .field("steps", &self.steps)
            .field("sampler", &self.sampler)
            .field("labels", &self.labels)
            .field("guidance", &self.guidance)
            .field("clip", &self.clip)
            .field("threads", &self.threads)
            .field("execution", &self.execution)
            .field("memory_budget", &self.memory_budget)
            .finish_non_exhaustive()
    }
}

impl Default for GenerateRequest<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GenerateRequest<'a> {
    /// One image, seed 0, the model's default steps and sampler, no labels,
    /// no guidance, no clipping, all available threads.
    pub fn new() -> Self {
        GenerateRequest {
            model: None,
            batch: None,
            noise: Noise::Seed(0),
            first_image: 0,
            steps: None,
            sampler: SamplerChoice::Auto,
            labels: None,
            guidance: 1.0,
            clip: false,
            threads: None,
            execution: Execution::default(),
            progress: None,
            cancel: None,
            memory_budget: None,
        }
    }

    /// Number of images (default 1, or what caller noise holds).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = Some(n);
        self
    }
    /// Seeded noise (the default, seed 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.noise = Noise::Seed(seed);
        self
    }
    /// With a seed: the index of the first image (image `k` of this batch is
    /// image `first + k` of the seed). Default 0.
    pub fn first_image(mut self, first: u64) -> Self {
        self.first_image = first;
        self
    }
    /// Caller-given initial noise `z_1`, `[N,C,H,W]` flattened.
    pub fn noise(mut self, z: Vec<f32>) -> Self {
        self.noise = Noise::Values(z);
        self
    }
    /// Step count (default: `T` for a consistency model, 32 for diffusion).
    pub fn steps(mut self, n: u32) -> Self {
        self.steps = Some(n);
        self
    }
    /// Sampler (default `auto`).
    pub fn sampler(mut self, s: SamplerChoice) -> Self {
        self.sampler = s;
        self
    }
    /// One class label for every image, `0..num_classes`. Without a label
    /// a class-conditional model generates unconditionally (its null label).
    pub fn label(mut self, label: i64) -> Self {
        self.labels = Some(vec![label]);
        self
    }
    /// A class label per image (or a single one for all), each `0..num_classes`.
    pub fn labels(mut self, labels: Vec<i64>) -> Self {
        self.labels = Some(labels);
        self
    }
    /// Classifier-free guidance scale `w` (1 = none).
    pub fn guidance(mut self, w: f32) -> Self {
        self.guidance = w;
        self
    }
    /// Clip `x_hat` to the model's data range at every step.
    pub fn clip(mut self, on: bool) -> Self {
        self.clip = on;
        self
    }
    /// Threads for this call (default: available parallelism).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
    /// Execution strategy (default [`Execution::PerImage`]).
    pub fn execution(mut self, e: Execution) -> Self {
        self.execution = e;
        self
    }
    /// Refuse the request up front if its estimated memory
    /// ([`Model::memory_estimate`]) exceeds `bytes` (default: the model's
    /// budget, [`crate::DEFAULT_MEMORY_BUDGET`] unless set).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }
    /// Called after every step with an `x_hat` preview.
    pub fn on_progress(mut self, f: impl FnMut(&Progress<'_>) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
    /// Checked between steps; a cancelled call returns the latest `x_hat`
    /// flagged partial.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Runs a request made by [`Model::generate`].
    ///
    /// # Errors
    /// Any [`GenerateError`]; a request made by `GenerateRequest::new()` has
    /// no model: use [`Model::run`] for it.
    pub fn run(self) -> Result<Images, GenerateError> {
        match self.model {
            Some(m) => m.run(self),
            None => Err(GenerateError::NoModel),
        }
    }
}

impl Model {
    /// Starts a generation request on this model: `model.generate().batch(4).seed(1).run()`.
    pub fn generate(&self) -> GenerateRequest<'_> {
        GenerateRequest {
            model: Some(self),
            ..GenerateRequest::new()
        }
    }

    /// Resolves the plan a request would run (steps and sampler), without
    /// running it.
    pub fn plan(
        &self,
        steps: Option<u32>,
        sampler: SamplerChoice,
    ) -> Result<SamplingPlan, GenerateError> {
        Ok(SamplingPlan::resolve(
            self.meta.student_steps,
            steps,
            sampler,
            DEFAULT_DIFFUSION_STEPS,
        )?)
    }

    /// Runs a request.
    pub fn run(&self, mut req: GenerateRequest<'_>) -> Result<Images, GenerateError> {
        let meta = &self.meta;
        let d = meta.image_len();
        let plan = self.plan(req.steps, req.sampler)?;

        // Threads and the memory budget, before anything is allocated.
        let threads = match req.threads.or(self.default_threads) {
            Some(0) => return Err(GenerateError::ZeroThreads),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let asked = match &req.noise {
            Noise::Seed(_) => req.batch.unwrap_or(1),
            Noise::Values(z) => req.batch.unwrap_or(z.len() / d.max(1)),
        };
        let guided_estimate = meta.num_classes > 0 && req.guidance != 1.0;
        self.check_memory(
            asked,
            guided_estimate,
            req.execution,
            threads,
            req.memory_budget.unwrap_or_else(|| self.memory_budget()),
        )?;

        // Batch and initial noise.
        let (batch, mut z) = match std::mem::replace(&mut req.noise, Noise::Seed(0)) {
            Noise::Seed(seed) => {
                let n = req.batch.unwrap_or(1);
                if n == 0 {
                    return Err(GenerateError::ZeroBatch);
                }
                let mut z = vec![0f32; n * d];
                fewstep_core::rng::batch_noise(seed, req.first_image, d, &mut z);
                (n, z)
            }
            Noise::Values(z) => {
                let n = req.batch.unwrap_or(z.len() / d.max(1));
                if n == 0 {
                    return Err(GenerateError::ZeroBatch);
                }
                if z.len() != n * d {
                    return Err(GenerateError::NoiseShape {
                        expected: n * d,
                        actual: z.len(),
                        batch: n,
                        image_len: d,
                    });
                }
                if z.iter().any(|v| !v.is_finite()) {
                    return Err(GenerateError::NoiseNotFinite);
                }
                (n, z)
            }
        };

        // Labels (one per image) and guidance.
        let k = meta.num_classes;
        if !req.guidance.is_finite() {
            return Err(GenerateError::BadGuidance(req.guidance));
        }
        let guided = req.guidance != 1.0;
        let labels: Option<Vec<i64>> = if k == 0 {
            if req.labels.is_some() {
                return Err(GenerateError::Unconditional { what: "labels" });
            }
            if guided {
                return Err(GenerateError::Unconditional { what: "guidance" });
            }
            None
        } else {
            // Classes are 0..k. The null label k (the unconditional model
            // that guidance uses) is not a class: a request without labels
            // gets it, so there is one way to ask for unconditional samples.
            let given = match req.labels.take() {
                Some(given) => {
                    if let Some(&bad) = given.iter().find(|&&l| l < 0 || l >= i64::from(k)) {
                        return Err(GenerateError::LabelOutOfRange {
                            label: bad,
                            num_classes: k,
                        });
                    }
                    given
                }
                None => vec![i64::from(k)],
            };
            let per_image = match given.len() {
                1 => vec![given[0]; batch],
                n if n == batch => given,
                n => return Err(GenerateError::LabelCount { actual: n, batch }),
            };
            if guided {
                // cond rows then null-label rows: one batched forward of 2N.
                let mut both = per_image;
                both.extend(std::iter::repeat_n(i64::from(k), batch));
                Some(both)
            } else {
                Some(per_image)
            }
        };
        let rows = if guided { 2 * batch } else { batch };

        let mut runner = Runner::new(self, req.execution, threads)?;

        let xvar = match &meta.addim_xvar {
            Some(table) => XVar::Table(table),
            None => XVar::Analytic,
        };
        let mut net_in = vec![0f32; if guided { rows * d } else { 0 }];
        let mut out = vec![0f32; rows * d];
        let steps = plan.steps();
        if req.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(GenerateError::Cancelled);
        }
        for step in plan.iter() {
            let done = step.index + 1;
            let at = meta.schedule.alpha_sigma(step.t);
            let as_ = meta.schedule.alpha_sigma(step.s);
            let t32 = step.t as f32;
            if guided {
                net_in[..batch * d].copy_from_slice(&z);
                net_in[batch * d..].copy_from_slice(&z);
                runner.forward(&net_in, t32, labels.as_deref(), rows, &mut out)?;
            } else {
                runner.forward(&z, t32, labels.as_deref(), rows, &mut out)?;
            }
            if out.iter().any(|v| !v.is_finite()) {
                return Err(GenerateError::NonFinite {
                    step: done,
                    t: step.t,
                });
            }
            if guided {
                let (cond, uncond) = out.split_at_mut(batch * d);
                fewstep_core::guidance::guide_in_place(cond, uncond, req.guidance)?;
            }
            let x_hat = &mut out[..batch * d];
            meta.prediction.output_to_x_hat(&z, x_hat, at)?;
            if req.clip {
                for v in x_hat.iter_mut() {
                    *v = meta.data_range.clamp(*v);
                }
            }
            if let Some(cb) = req.progress.as_mut() {
                cb(&Progress {
                    step: done,
                    steps,
                    t: step.t,
                    s: step.s,
                    x_hat,
                });
            }
            let last = done == steps;
            if !last && req.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                out.truncate(batch * d);
                return Ok(Images::new(
                    out,
                    batch,
                    meta.image,
                    meta.data_range,
                    true,
                    done,
                ));
            }
            match plan.sampler() {
                SamplerKind::Ddim => ddim_step(&mut z, x_hat, at, as_)?,
                SamplerKind::Addim => {
                    addim_step(&mut z, x_hat, d, at, as_, xvar.at(&meta.schedule, step.t))?
                }
            }
        }
        Ok(Images::new(
            z,
            batch,
            meta.image,
            meta.data_range,
            false,
            steps,
        ))
    }
}
