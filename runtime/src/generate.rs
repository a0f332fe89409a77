//! Generation: the builder-style request and the sampling loop. All math is
//! `fewstep_core`'s; this module only moves buffers between it and tract.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fewstep_core::drive::{
    Conditioning, ConditioningError, DriveError, Edit, Finished, Flow, Sampling, Workspace, drive,
};
use fewstep_core::{LengthMismatch, SamplerChoice, SamplingPlan, XVar};

use crate::error::GenerateError;
use crate::exec::{Execution, PoolWait, Runner};
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
    pool_wait: PoolWait,
    progress: Option<ProgressFn<'a>>,
    cancel: Option<CancelToken>,
    memory_budget: Option<u64>,
    init: Option<Vec<f32>>,
    strength: f64,
    mask: Option<Vec<f32>>,
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
            .field("pool_wait", &self.pool_wait)
            .field("memory_budget", &self.memory_budget)
            .field("init", &self.init.as_ref().map(Vec::len))
            .field("strength", &self.strength)
            .field("mask", &self.mask.as_ref().map(Vec::len))
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
            pool_wait: PoolWait::default(),
            progress: None,
            cancel: None,
            memory_budget: None,
            init: None,
            strength: 1.0,
            mask: None,
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

    /// What the call's helper threads do between the parallel parts of a
    /// forward (with more than one thread; default [`PoolWait::Sleep`]).
    /// `Spin` is faster for a call that has the cores to itself, and much
    /// slower when other threads need them: `docs/PERFORMANCE.md`,
    /// "Spinning or sleeping helpers".
    pub fn pool_wait(mut self, wait: PoolWait) -> Self {
        self.pool_wait = wait;
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
    /// Checked before every operator of every network evaluation, so a
    /// cancel from another thread takes effect within one operator; a
    /// cancelled call returns the `x_hat` of the last completed step, flagged
    /// partial ([`GenerateError::Cancelled`] if no step completed).
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Image editing: start from this image instead of pure noise
    /// (`[N,C,H,W]` or one `[C,H,W]` image for the whole batch, in the
    /// model's data range). With [`Self::strength`] below 1 it is img2img;
    /// with [`Self::mask`] it is inpainting.
    pub fn init(mut self, image: Vec<f32>) -> Self {
        self.init = Some(image);
        self
    }
    /// img2img strength `s` in `(0, 1]`: how much of the path from noise to
    /// data is walked again (default 1: all of it, the init image only
    /// matters under a mask). A multistep consistency model with `T` steps
    /// starts at its segment boundary `ceil(s T) / T`; a diffusion model
    /// starts at `t = s` with the requested steps spread over `[0, s]`.
    /// Needs [`Self::init`].
    pub fn strength(mut self, s: f64) -> Self {
        self.strength = s;
        self
    }
    /// Inpainting mask, values in `[0, 1]`: 1 = generate, 0 = keep the init
    /// image (exactly, in the output). `[N,C,H,W]`, `[C,H,W]`, `[N,H,W]` or
    /// `[H,W]` (broadcast over the batch and channels). Needs [`Self::init`].
    pub fn mask(mut self, mask: Vec<f32>) -> Self {
        self.mask = Some(mask);
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

        // The init image and mask (img2img / inpainting), broadcast to the
        // batch, and the plan started part-way.
        let img = meta.image;
        let plane = img.height as usize * img.width as usize;
        let init = match req.init.take() {
            Some(init) => Some(broadcast(init, batch, d, d, "init image")?),
            None => {
                if req.mask.is_some() {
                    return Err(GenerateError::MaskWithoutInit);
                }
                if req.strength != 1.0 {
                    return Err(GenerateError::StrengthWithoutInit);
                }
                None
            }
        };
        let mask = match req.mask.take() {
            Some(mask) => Some(broadcast(mask, batch, d, plane, "mask")?),
            None => None,
        };
        let plan = plan.with_strength(meta.student_steps, req.strength)?;

        let conditioning = match req.labels.as_deref() {
            None => Conditioning::None,
            Some([one]) => Conditioning::Label(*one),
            Some(many) => Conditioning::PerImage(many),
        };
        let sampling = Sampling {
            schedule: &meta.schedule,
            prediction: meta.prediction,
            plan,
            xvar: match &meta.addim_xvar {
                Some(table) => XVar::Table(table),
                None => XVar::Analytic,
            },
            image_len: d,
            num_classes: meta.num_classes,
            conditioning,
            guidance: req.guidance,
            clip: req.clip.then_some(meta.data_range),
            edit: init.as_deref().map(|init| Edit {
                init,
                mask: mask.as_deref(),
            }),
        };
        // Labels and guidance are checked before any thread pool is leased.
        sampling
            .conditioning
            .check(meta.num_classes, batch, req.guidance)
            .map_err(|e| conditioning_error(e, req.guidance))?;
        let lens = sampling.buffer_lens(batch);
        let mut out = vec![0f32; lens.out];
        let mut net_in = vec![0f32; lens.net_in];
        let mut label_rows = vec![0i64; lens.labels];

        let mut runner = Runner::new(self, req.execution, threads)?
            .cancel_with(req.cancel.clone())
            .wait(req.pool_wait);
        if req.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(GenerateError::Cancelled);
        }
        // With a token, a cancel may stop a forward part-way; the result is
        // then the last completed step's x_hat, kept here.
        let mut latest: Option<(Vec<f32>, u32)> = None;
        let mut network = |z: &[f32], t: f64, labels: Option<&[i64]>, out: &mut [f32]| {
            runner.forward(z, t as f32, labels, z.len() / d, out)
        };
        let mut progress = req.progress.take();
        let cancel = req.cancel.take();
        let finished = drive(
            &sampling,
            &mut Workspace {
                z: &mut z,
                out: &mut out,
                net_in: &mut net_in,
                labels: &mut label_rows,
            },
            &mut network,
            |r| {
                if let Some(cb) = progress.as_mut() {
                    cb(&Progress {
                        step: r.step,
                        steps: r.steps,
                        t: r.t,
                        s: r.s,
                        x_hat: r.x_hat,
                    });
                }
                match &cancel {
                    Some(c) if c.is_cancelled() => Flow::Stop,
                    Some(_) => {
                        let (copy, step) = latest.get_or_insert_with(|| (Vec::new(), 0));
                        copy.clear();
                        copy.extend_from_slice(r.x_hat);
                        *step = r.step;
                        Flow::Continue
                    }
                    None => Flow::Continue,
                }
            },
        );
        let (partial, done) = match finished {
            Ok(Finished::Complete) => (false, plan.steps()),
            Ok(Finished::Stopped { steps_done }) => (true, steps_done),
            // Cancelled inside a forward, after at least one step.
            Err(DriveError::Network(GenerateError::Cancelled)) if latest.is_some() => {
                let (x_hat, step) = latest.take().unwrap_or_default();
                z = x_hat;
                (true, step)
            }
            Err(e) => return Err(drive_error(e, req.guidance)),
        };
        Ok(Images::new(
            z,
            batch,
            meta.image,
            meta.data_range,
            partial,
            done,
        ))
    }
}

/// Expands an init image or mask to `batch * d` values: it may hold the
/// whole batch (`batch * d`), one image for all (`d`), or — for a mask
/// (`plane < d`) — one `H*W` plane per image or for all, repeated over the
/// channels.
fn broadcast(
    values: Vec<f32>,
    batch: usize,
    d: usize,
    plane: usize,
    what: &'static str,
) -> Result<Vec<f32>, GenerateError> {
    let n = values.len();
    if n == batch * d {
        return Ok(values);
    }
    let per_image = |v: &[f32]| -> Vec<f32> {
        if v.len() == d {
            v.to_vec()
        } else {
            v.iter().copied().cycle().take(d).collect()
        }
    };
    if n == d || n == plane {
        let one = per_image(&values);
        return Ok(one.repeat(batch));
    }
    if plane < d && n == batch * plane {
        return Ok(values.chunks_exact(plane).flat_map(per_image).collect());
    }
    Err(GenerateError::EditShape {
        what,
        actual: n,
        batch,
        image_len: d,
        plane: (plane < d).then_some(plane),
    })
}

fn conditioning_error(e: ConditioningError, guidance: f32) -> GenerateError {
    match e {
        ConditioningError::Unconditional { what } => GenerateError::Unconditional { what },
        ConditioningError::LabelOutOfRange { label, num_classes } => {
            GenerateError::LabelOutOfRange { label, num_classes }
        }
        ConditioningError::LabelCount { actual, batch } => {
            GenerateError::LabelCount { actual, batch }
        }
        ConditioningError::BadGuidance => GenerateError::BadGuidance(guidance),
        ConditioningError::RowBuffer { expected, actual } => {
            GenerateError::Length(LengthMismatch { expected, actual })
        }
    }
}

fn drive_error(e: DriveError<GenerateError>, guidance: f32) -> GenerateError {
    match e {
        DriveError::Network(e) => e,
        DriveError::Buffer {
            expected, actual, ..
        } => GenerateError::Length(LengthMismatch { expected, actual }),
        DriveError::EmptyBatch => GenerateError::ZeroBatch,
        DriveError::Conditioning(c) => conditioning_error(c, guidance),
        DriveError::InitNotFinite => GenerateError::InitNotFinite,
        DriveError::MaskValue { index } => GenerateError::MaskValue { index },
        DriveError::NonFinite { step, t } => GenerateError::NonFinite { step, t },
    }
}
