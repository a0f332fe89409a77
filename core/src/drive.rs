//! The one sampling loop: a [`SamplingPlan`] run against a network the caller
//! wraps in [`Network`], on buffers the caller owns ([`Workspace`]).
//!
//! Everything between two network evaluations happens here, once for the
//! whole workspace: classifier-free guidance, the output → `x_hat`
//! conversion, clipping, inpainting's known region, progress and
//! cancellation ([`Flow`]), and the DDIM / aDDIM step. The runtime (tract) and
//! the trainer's preview sampler (Burn) are thin [`Network`] adapters around
//! [`drive()`]. No allocation.
//!
//! The equations are those of `docs/MODEL_FORMAT.md` (sections 4 and 5).
//!
//! Image editing: [`Edit`] gives an init image (img2img, started part-way by
//! [`SamplingPlan::with_strength`]) and optionally a mask (inpainting:
//! `1` = generate, `0` = keep). The known region is kept consistent by
//! replacing `x_hat` there with the init image before every step: with the
//! deterministic step rule, the known pixels of `z_t` then stay exactly
//! `alpha_t x0 + sigma_t eps` for the request's own noise `eps` — the same as
//! re-noising them to each step's time with that noise. The output equals the
//! init image bit for bit where the mask is `0`.

use core::fmt;

use crate::format::DataRange;
use crate::guidance::guide_in_place;
use crate::plan::{SamplerKind, SamplingPlan};
use crate::prediction::Prediction;
use crate::sampler::{XVar, addim_step, ddim_step};
use crate::schedule::Schedule;

/// What the samples are conditioned on. One type for the runtime, the C
/// layer and the trainer; [`Conditioning::write_rows`] is the one place that
/// turns it into the label input a network sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Conditioning<'a> {
    /// No class: unconditional samples (a class-conditional model is given
    /// its null label, `num_classes`).
    #[default]
    None,
    /// One class for every image, `0..num_classes`.
    Label(i64),
    /// One class per image, `0..num_classes`.
    PerImage(&'a [i64]),
}

impl<'a> Conditioning<'a> {
    /// From a list of labels: none, one for all, or one per image.
    pub fn from_labels(labels: &'a [i64]) -> Self {
        match labels {
            [] => Conditioning::None,
            [one] => Conditioning::Label(*one),
            many => Conditioning::PerImage(many),
        }
    }

    /// Checks this conditioning and a guidance scale against a model with
    /// `num_classes` classes (0: unconditional) and a batch, without writing.
    pub fn check(
        &self,
        num_classes: u32,
        batch: usize,
        guidance: f32,
    ) -> Result<(), ConditioningError> {
        if !guidance.is_finite() {
            return Err(ConditioningError::BadGuidance);
        }
        let guided = guidance != 1.0;
        if num_classes == 0 {
            if !matches!(self, Conditioning::None) {
                return Err(ConditioningError::Unconditional { what: "labels" });
            }
            if guided {
                return Err(ConditioningError::Unconditional { what: "guidance" });
            }
            return Ok(());
        }
        let labels: &[i64] = match self {
            Conditioning::None => &[],
            Conditioning::Label(l) => core::slice::from_ref(l),
            Conditioning::PerImage(ls) => ls,
        };
        if let Some(&bad) = labels
            .iter()
            .find(|&&l| l < 0 || l >= i64::from(num_classes))
        {
            return Err(ConditioningError::LabelOutOfRange {
                label: bad,
                num_classes,
            });
        }
        if let Conditioning::PerImage(ls) = self
            && ls.len() != batch
        {
            return Err(ConditioningError::LabelCount {
                actual: ls.len(),
                batch,
            });
        }
        Ok(())
    }

    /// The label input rows for a batch: one per image, then (guided) one
    /// null label per image, for one batched forward of conditional and
    /// unconditional rows. `rows` must hold [`label_rows`] entries.
    pub fn write_rows(
        &self,
        num_classes: u32,
        batch: usize,
        guidance: f32,
        rows: &mut [i64],
    ) -> Result<(), ConditioningError> {
        self.check(num_classes, batch, guidance)?;
        let need = label_rows(num_classes, batch, guidance);
        if rows.len() != need {
            return Err(ConditioningError::RowBuffer {
                expected: need,
                actual: rows.len(),
            });
        }
        if num_classes == 0 {
            return Ok(());
        }
        let null = i64::from(num_classes);
        let (cond, uncond) = rows.split_at_mut(batch);
        match self {
            Conditioning::None => cond.fill(null),
            Conditioning::Label(l) => cond.fill(*l),
            Conditioning::PerImage(ls) => cond.copy_from_slice(ls),
        }
        uncond.fill(null);
        Ok(())
    }
}

/// How many label rows a forward pass takes: 0 for an unconditional model,
/// `batch` without guidance, `2 batch` with it.
pub fn label_rows(num_classes: u32, batch: usize, guidance: f32) -> usize {
    if num_classes == 0 {
        0
    } else {
        network_rows(batch, guidance)
    }
}

/// Rows of one network evaluation: `2 batch` under guidance (`w != 1`:
/// conditional and unconditional in one call), else `batch`.
pub fn network_rows(batch: usize, guidance: f32) -> usize {
    if guidance != 1.0 { 2 * batch } else { batch }
}

/// Why a [`Conditioning`] does not fit a model or batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditioningError {
    /// Labels or guidance asked of a model without classes.
    Unconditional {
        /// `"labels"` or `"guidance"`.
        what: &'static str,
    },
    /// A label outside `0..num_classes`.
    LabelOutOfRange {
        /// The label given.
        label: i64,
        /// The model's class count.
        num_classes: u32,
    },
    /// Per-image labels whose count is not the batch.
    LabelCount {
        /// Labels given.
        actual: usize,
        /// Images in the batch.
        batch: usize,
    },
    /// A guidance scale that is not a finite number.
    BadGuidance,
    /// The label row buffer has the wrong length.
    RowBuffer {
        /// Rows needed.
        expected: usize,
        /// Rows given.
        actual: usize,
    },
}

impl fmt::Display for ConditioningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unconditional { what } => {
                write!(
                    f,
                    "this model is unconditional (no classes): {what} cannot be used"
                )
            }
            Self::LabelOutOfRange { label, num_classes } => write!(
                f,
                "label {label} is out of range: this model has {num_classes} classes, numbered from 0"
            ),
            Self::LabelCount { actual, batch } => {
                write!(
                    f,
                    "{actual} labels for a batch of {batch}: give one label, or one per image"
                )
            }
            Self::BadGuidance => f.write_str("guidance must be a finite number"),
            Self::RowBuffer { expected, actual } => {
                write!(
                    f,
                    "label row buffer holds {actual} entries, {expected} needed"
                )
            }
        }
    }
}

impl core::error::Error for ConditioningError {}

/// A network evaluation: `z` holds `rows` samples of `image_len` values at
/// time `t`; `labels` has one entry per row for a class-conditional model
/// (`None` otherwise); the raw output (the model's [`Prediction`]) goes to
/// `out`, as long as `z`.
pub trait Network {
    /// The adapter's own error.
    type Error;
    /// Evaluates the network once.
    fn forward(
        &mut self,
        z: &[f32],
        t: f64,
        labels: Option<&[i64]>,
        out: &mut [f32],
    ) -> Result<(), Self::Error>;
}

impl<E, F> Network for F
where
    F: FnMut(&[f32], f64, Option<&[i64]>, &mut [f32]) -> Result<(), E>,
{
    type Error = E;
    fn forward(
        &mut self,
        z: &[f32],
        t: f64,
        labels: Option<&[i64]>,
        out: &mut [f32],
    ) -> Result<(), E> {
        self(z, t, labels, out)
    }
}

/// An image edit: start from `init` instead of pure noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edit<'a> {
    /// The init image `x0` in data space, `batch * image_len` values. It is
    /// noised to the plan's start time with the workspace's noise (img2img);
    /// at start time 1 it is not used outside the mask's known region.
    pub init: &'a [f32],
    /// Inpainting mask, `batch * image_len` values in `[0, 1]`: `1` =
    /// generate, `0` = keep the init image; in between blends `x_hat`.
    pub mask: Option<&'a [f32]>,
}

/// One sampling run: the model's parameters and the caller's request.
#[derive(Debug, Clone, Copy)]
pub struct Sampling<'a> {
    /// The model's noise schedule.
    pub schedule: &'a Schedule,
    /// What the network outputs.
    pub prediction: Prediction,
    /// Which steps, with which rule.
    pub plan: SamplingPlan,
    /// aDDIM's `xvar` (unused by DDIM).
    pub xvar: XVar<'a>,
    /// Values per image, `C*H*W`.
    pub image_len: usize,
    /// The model's class count (0: unconditional).
    pub num_classes: u32,
    /// Labels.
    pub conditioning: Conditioning<'a>,
    /// Classifier-free guidance scale (1 = none).
    pub guidance: f32,
    /// Clip `x_hat` to this range after every evaluation.
    pub clip: Option<DataRange>,
    /// img2img / inpainting.
    pub edit: Option<Edit<'a>>,
}

/// The buffer lengths [`drive`] needs for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLens {
    /// `z`: `batch * image_len`.
    pub z: usize,
    /// `out`: one network evaluation's output, `rows * image_len`.
    pub out: usize,
    /// `net_in`: `rows * image_len` under guidance, else 0.
    pub net_in: usize,
    /// `labels`: [`label_rows`].
    pub labels: usize,
}

impl Sampling<'_> {
    /// The buffers a batch of `batch` images needs.
    pub fn buffer_lens(&self, batch: usize) -> BufferLens {
        let rows = network_rows(batch, self.guidance);
        let d = self.image_len;
        BufferLens {
            z: batch * d,
            out: rows * d,
            net_in: if rows > batch { rows * d } else { 0 },
            labels: label_rows(self.num_classes, batch, self.guidance),
        }
    }
}

/// Caller-owned buffers, sized by [`Sampling::buffer_lens`].
#[derive(Debug)]
pub struct Workspace<'a> {
    /// In: the initial noise `eps` (`z_1`). Out: the images (or, when
    /// stopped early, the latest `x_hat`).
    pub z: &'a mut [f32],
    /// Network output; after each evaluation its first `batch * image_len`
    /// values hold `x_hat`.
    pub out: &'a mut [f32],
    /// The guided network input (`z` twice).
    pub net_in: &'a mut [f32],
    /// The label input rows.
    pub labels: &'a mut [i64],
}

/// What a progress callback sees after each network evaluation.
#[derive(Debug)]
pub struct StepReport<'a> {
    /// Steps done (1 after the first evaluation).
    pub step: u32,
    /// The plan's step count.
    pub steps: u32,
    /// The step's start time.
    pub t: f64,
    /// The step's end time.
    pub s: f64,
    /// The clean-data estimate `x_hat`, `batch * image_len` values, after
    /// guidance, clipping and the known region.
    pub x_hat: &'a [f32],
}

/// A progress callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop before the next step (ignored after the last one).
    Stop,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Every step ran; `z` holds the samples.
    Complete,
    /// Stopped by the callback; `z` holds the `x_hat` of step `steps_done`.
    Stopped {
        /// Network evaluations made.
        steps_done: u32,
    },
}

/// Why [`drive`] failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DriveError<E> {
    /// The network adapter failed.
    Network(E),
    /// A buffer has the wrong length.
    Buffer {
        /// Which buffer: `z`, `out`, `net_in`, `labels`, `init` or `mask`.
        which: &'static str,
        /// Length needed.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// `z` is empty or `image_len` is 0.
    EmptyBatch,
    /// Labels or guidance do not fit the model.
    Conditioning(ConditioningError),
    /// The init image holds a NaN or infinity.
    InitNotFinite,
    /// A mask value outside `[0, 1]` (or NaN).
    MaskValue {
        /// Index of the first bad value.
        index: usize,
    },
    /// The network returned a NaN or infinity.
    NonFinite {
        /// The step (1-based).
        step: u32,
        /// Its start time.
        t: f64,
    },
}

impl<E: fmt::Display> fmt::Display for DriveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Network(e) => write!(f, "{e}"),
            Self::Buffer {
                which,
                expected,
                actual,
            } => write!(
                f,
                "buffer `{which}` holds {actual} values, {expected} needed"
            ),
            Self::EmptyBatch => f.write_str("nothing to sample: the batch is empty"),
            Self::Conditioning(e) => write!(f, "{e}"),
            Self::InitNotFinite => f.write_str("the init image holds a NaN or infinite value"),
            Self::MaskValue { index } => {
                write!(
                    f,
                    "mask value {index} is outside [0, 1] (1 = generate, 0 = keep)"
                )
            }
            Self::NonFinite { step, t } => {
                write!(
                    f,
                    "the network returned a non-finite value at step {step} (t = {t})"
                )
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for DriveError<E> {}

impl<E> From<ConditioningError> for DriveError<E> {
    fn from(e: ConditioningError) -> Self {
        DriveError::Conditioning(e)
    }
}

fn check_len<E>(which: &'static str, expected: usize, actual: usize) -> Result<(), DriveError<E>> {
    if expected == actual {
        Ok(())
    } else {
        Err(DriveError::Buffer {
            which,
            expected,
            actual,
        })
    }
}

/// Runs `sampling` to the end (or until `on_step` says [`Flow::Stop`]).
///
/// `ws.z` comes in holding the noise `eps` of every image and leaves
/// holding the images. The batch is `ws.z.len() / image_len`.
pub fn drive<N: Network>(
    sampling: &Sampling<'_>,
    ws: &mut Workspace<'_>,
    network: &mut N,
    mut on_step: impl FnMut(&StepReport<'_>) -> Flow,
) -> Result<Finished, DriveError<N::Error>> {
    let d = sampling.image_len;
    if d == 0 || ws.z.is_empty() {
        return Err(DriveError::EmptyBatch);
    }
    if !ws.z.len().is_multiple_of(d) {
        return Err(DriveError::Buffer {
            which: "z",
            expected: ws.z.len().div_ceil(d) * d,
            actual: ws.z.len(),
        });
    }
    let batch = ws.z.len() / d;
    let lens = sampling.buffer_lens(batch);
    check_len("out", lens.out, ws.out.len())?;
    check_len("net_in", lens.net_in, ws.net_in.len())?;
    check_len("labels", lens.labels, ws.labels.len())?;
    sampling
        .conditioning
        .write_rows(sampling.num_classes, batch, sampling.guidance, ws.labels)?;
    let labels: Option<&[i64]> = (sampling.num_classes > 0).then_some(&*ws.labels);
    let guided = lens.net_in > 0;
    let schedule = sampling.schedule;
    let plan = sampling.plan;

    // The edit: check it, and noise the init image to the start time.
    let mut known: Option<(&[f32], &[f32])> = None;
    if let Some(edit) = sampling.edit {
        check_len("init", lens.z, edit.init.len())?;
        if edit.init.iter().any(|v| !v.is_finite()) {
            return Err(DriveError::InitNotFinite);
        }
        if let Some(mask) = edit.mask {
            check_len("mask", lens.z, mask.len())?;
            if let Some(index) = mask.iter().position(|m| !(0.0..=1.0).contains(m)) {
                return Err(DriveError::MaskValue { index });
            }
            known = Some((edit.init, mask));
        }
        let start = plan.start_time();
        // At t = 1 the plain noise is kept as it is, so strength 1 is the
        // plain generation of the same seed to the bit.
        if start < 1.0 {
            noise_to(ws.z, edit.init, schedule, start);
        }
    }

    let steps = plan.steps();
    let image = ..batch * d;
    for step in plan.iter() {
        let done = step.index + 1;
        let at = schedule.alpha_sigma(step.t);
        let as_ = schedule.alpha_sigma(step.s);
        if guided {
            ws.net_in[image].copy_from_slice(ws.z);
            ws.net_in[batch * d..].copy_from_slice(ws.z);
            network
                .forward(ws.net_in, step.t, labels, ws.out)
                .map_err(DriveError::Network)?;
        } else {
            network
                .forward(ws.z, step.t, labels, ws.out)
                .map_err(DriveError::Network)?;
        }
        if ws.out.iter().any(|v| !v.is_finite()) {
            return Err(DriveError::NonFinite {
                step: done,
                t: step.t,
            });
        }
        if guided {
            let (cond, uncond) = ws.out.split_at_mut(batch * d);
            guide_in_place(cond, uncond, sampling.guidance).map_err(|e| DriveError::Buffer {
                which: "out",
                expected: e.expected,
                actual: e.actual,
            })?;
        }
        let x_hat = &mut ws.out[image];
        sampling
            .prediction
            .output_to_x_hat(ws.z, x_hat, at)
            .map_err(|e| DriveError::Buffer {
                which: "out",
                expected: e.expected,
                actual: e.actual,
            })?;
        if let Some(range) = sampling.clip {
            x_hat.iter_mut().for_each(|v| *v = range.clamp(*v));
        }
        if let Some((init, mask)) = known {
            keep_known(x_hat, init, mask);
        }
        let flow = on_step(&StepReport {
            step: done,
            steps,
            t: step.t,
            s: step.s,
            x_hat,
        });
        if flow == Flow::Stop && done < steps {
            ws.z.copy_from_slice(x_hat);
            return Ok(Finished::Stopped { steps_done: done });
        }
        // The single DDIM / aDDIM dispatch of the workspace.
        let stepped = match plan.sampler() {
            SamplerKind::Ddim => ddim_step(ws.z, x_hat, at, as_),
            SamplerKind::Addim => {
                addim_step(ws.z, x_hat, d, at, as_, sampling.xvar.at(schedule, step.t))
            }
        };
        stepped.map_err(|e| DriveError::Buffer {
            which: "z",
            expected: e.expected,
            actual: e.actual,
        })?;
    }
    if let Some((init, mask)) = known {
        // aDDIM's last step adds a little noise even at s = 0: the known
        // region is put back exactly.
        keep_known(ws.z, init, mask);
    }
    Ok(Finished::Complete)
}

/// `x <- m x + (1 - m) x0`, exact where `m` is 0 or 1.
fn keep_known(x: &mut [f32], init: &[f32], mask: &[f32]) {
    for ((v, &x0), &m) in x.iter_mut().zip(init).zip(mask) {
        if m == 0.0 {
            *v = x0;
        } else if m != 1.0 {
            *v = m * *v + (1.0 - m) * x0;
        }
    }
}

/// The forward process in place: `z <- alpha_t x + sigma_t z`, where `z`
/// holds the noise `eps` (`z_t = alpha_t x + sigma_t eps`, core's
/// [`crate::training::noised`]).
pub fn noise_to(z: &mut [f32], x: &[f32], schedule: &Schedule, t: f64) {
    let at = schedule.alpha_sigma(t);
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = crate::training::noised(at, xi, *zi);
    }
}
