//! Multistep consistency training and distillation: Algorithm 1 of
//! `ALGORITHMS.md`, one optimiser step at a time.
//!
//! The split between host and tensors:
//! - the teacher's ODE step (no gradient) runs on the host: the frozen
//!   teacher's output is read back, and `z_s = aDDIM_{t->s}(x_teacher, z_t, xvar)`
//!   is formed per example with `fewstep-core`'s coefficients;
//! - the reference `x_ref = stopgrad(f(z_s, s))` is read back too, and the
//!   target `invDDIM_{t->t_step}(DDIM_{s->t_step}(x_ref, z_s), z_t)` is formed
//!   per element in f64 with [`ConsistencyTargetCoeffs::apply`] (the
//!   coefficients grow like `1 / (t - t_step)`, so f64 avoids cancellation);
//! - only `x_hat = f(z_t, t)` and the loss `w(t) pseudo_huber(x_hat - target)`
//!   are tensors with gradient.
//!
//! Every random choice comes from counter-based streams keyed by the seed and
//! the step, so `--resume` repeats the uninterrupted run.

use crate::algorithms::train::{BACKEND_RNG, Trainer, dropout_seed};
use crate::checkpoint::{Checkpoint, StepLog};
use crate::config::{ConsistencyConfig, ConsistencyMode, ModelConfig, TrainConfig, TrainingMode};
use crate::data::Dataset;
use crate::network::model::UNet;
use crate::sample::evaluate;
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fewstep_core::SamplerKind;
use fewstep_core::guidance::guide_in_place;
use fewstep_core::rng::{GaussianStream, UniformStream};
use fewstep_core::training::forward_noise;
use fewstep_core::training::{
    ConsistencyTargetCoeffs, ConsistencyTimes, LossWeight, teacher_step_coeffs, teacher_xvar,
    training_label, uniform_index,
};
use fewstep_core::{Prediction, Schedule};

/// Seed offset of the per-step Gaussian noise of consistency runs.
const NOISE_SEED_SALT: u64 = 0x636f_6e73_6973_0003;

/// The frozen teacher of a distillation: a diffusion model without autodiff.
pub struct Teacher<'a, B: Backend> {
    /// The network (EMA weights of the teacher checkpoint).
    pub model: &'a UNet<B>,
    /// Its configuration (same interface as the student's).
    pub cfg: &'a ModelConfig,
    /// Guidance scale (1 = none); needs a class-conditional model.
    pub guidance: f64,
    /// aDDIM or DDIM steps.
    pub sampler: SamplerKind,
    /// `eta` of the aDDIM xvar.
    pub xvar_frac: f64,
    /// Device of `model`.
    pub device: &'a B::Device,
}

impl<B: Backend> std::fmt::Debug for Teacher<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teacher")
            .field("guidance", &self.guidance)
            .field("sampler", &self.sampler)
            .field("xvar_frac", &self.xvar_frac)
            .finish_non_exhaustive()
    }
}

/// `x_hat` of a teacher at `(z, t)` for every example: the guided one (for
/// the ODE step) and the unguided conditional one (for `xvar`, as the paper
/// prescribes). Equal when there is no guidance.
pub fn teacher_x_hat<B: Backend>(
    teacher: &Teacher<'_, B>,
    z: &[f32],
    t: &[f64],
    labels: &[i64],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let cfg = teacher.cfg;
    let schedule = cfg.schedule()?;
    let pred = cfg.prediction()?;
    let d = cfg.image_len();
    let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let labels = (!labels.is_empty()).then_some(labels);
    let cond = evaluate(teacher.model, cfg, z, &tf, labels, teacher.device)?;
    let guided = match labels {
        Some(l) if teacher.guidance != 1.0 => {
            let null = vec![cfg.num_classes as i64; l.len()];
            let uncond = evaluate(teacher.model, cfg, z, &tf, Some(&null), teacher.device)?;
            let mut g = cond.clone();
            guide_in_place(&mut g, &uncond, teacher.guidance as f32)
                .map_err(|e| anyhow!("guidance: {e}"))?;
            Some(g)
        }
        _ => None,
    };
    let to_x = |mut out: Vec<f32>| -> Result<Vec<f32>> {
        for (i, (zc, oc)) in z.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            pred.output_to_x_hat(zc, oc, schedule.alpha_sigma(t[i]))
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(out)
    };
    let cond = to_x(cond)?;
    let guided = match guided {
        Some(g) => to_x(g)?,
        None => cond.clone(),
    };
    Ok((guided, cond))
}

/// The teacher's step of one batch: `z_s = aDDIM_{t->s}(x_teacher, z_t, xvar)`
/// per example, with `xvar = eta ||x_xvar - x||² / d` (`x_xvar`: the unguided
/// teacher output; `xvar = 0` gives DDIM). Returns `z_s` and the xvars.
#[allow(clippy::too_many_arguments)]
pub fn teacher_ode_step(
    schedule: &Schedule,
    d: usize,
    x: &[f32],
    z_t: &[f32],
    x_teacher: &[f32],
    x_xvar: &[f32],
    t: &[f64],
    s: &[f64],
    xvar_frac: f64,
) -> (Vec<f32>, Vec<f64>) {
    let mut z_s = vec![0f32; z_t.len()];
    let mut xvars = Vec::with_capacity(t.len());
    for i in 0..t.len() {
        let r = i * d..(i + 1) * d;
        let (at_t, at_s) = (schedule.alpha_sigma(t[i]), schedule.alpha_sigma(s[i]));
        let diff_sq: f64 = x_xvar[r.clone()]
            .iter()
            .zip(&x[r.clone()])
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let xvar = teacher_xvar(xvar_frac, diff_sq, d);
        // eps_hat = (z_t - alpha_t x_teacher) / sigma_t: the eps-output that
        // would give x_teacher at z_t.
        let to_eps = Prediction::Eps.output_coeffs(at_t);
        let eps_sq: f64 = z_t[r.clone()]
            .iter()
            .zip(&x_teacher[r.clone()])
            .map(|(&z, &xt)| to_eps.apply(f64::from(z), f64::from(xt)).powi(2))
            .sum();
        let c = teacher_step_coeffs(at_t, at_s, xvar, d, eps_sq);
        for ((o, &z), &xt) in z_s[r.clone()]
            .iter_mut()
            .zip(&z_t[r.clone()])
            .zip(&x_teacher[r])
        {
            *o = (c.x * f64::from(xt) + c.z * f64::from(z)) as f32;
        }
        xvars.push(xvar);
    }
    (z_s, xvars)
}

/// Host-side inputs of one Algorithm 1 batch, up to the student.
#[derive(Debug, Clone)]
pub struct ConsistencyBatch {
    /// Clean data, `B * d`.
    pub x: Vec<f32>,
    /// `z_t = alpha_t x + sigma_t eps`.
    pub z_t: Vec<f32>,
    /// The teacher's step `z_s`.
    pub z_s: Vec<f32>,
    /// `(t, s, t_step)` per example.
    pub times: Vec<ConsistencyTimes>,
    /// Labels (null label where dropped); empty when unconditional.
    pub labels: Vec<i64>,
    /// `xvar` of each example's teacher step.
    pub xvar: Vec<f64>,
}

impl ConsistencyBatch {
    /// Forms `z_t` and the teacher step for given data, noise, times and
    /// labels. `teacher` is `None` for CT (`x_teacher = x`).
    pub fn build<Bt: Backend>(
        cfg: &ModelConfig,
        teacher: Option<&Teacher<'_, Bt>>,
        x: Vec<f32>,
        eps: &[f32],
        times: Vec<ConsistencyTimes>,
        labels: Vec<i64>,
    ) -> Result<Self> {
        let schedule = cfg.schedule()?;
        let d = cfg.image_len();
        let n = times.len();
        if x.len() != n * d || eps.len() != n * d || !(labels.is_empty() || labels.len() == n) {
            bail!("internal: consistency batch of {n} examples has mismatched buffers");
        }
        let mut z_t = vec![0f32; n * d];
        for (i, tm) in times.iter().enumerate() {
            let r = i * d..(i + 1) * d;
            forward_noise(
                &x[r.clone()],
                &eps[r.clone()],
                schedule.alpha_sigma(tm.t),
                &mut z_t[r],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let t: Vec<f64> = times.iter().map(|tm| tm.t).collect();
        let s: Vec<f64> = times.iter().map(|tm| tm.s).collect();
        let (z_s, xvar) = match teacher {
            None => teacher_ode_step(&schedule, d, &x, &z_t, &x, &x, &t, &s, 0.0),
            Some(te) => {
                let (guided, cond) = teacher_x_hat(te, &z_t, &t, &labels)?;
                let frac = match te.sampler {
                    SamplerKind::Addim => te.xvar_frac,
                    SamplerKind::Ddim => 0.0,
                };
                teacher_ode_step(&schedule, d, &x, &z_t, &guided, &cond, &t, &s, frac)
            }
        };
        Ok(Self {
            x,
            z_t,
            z_s,
            times,
            labels,
            xvar,
        })
    }

    /// Draws step `step`'s batch: data, `(step, n_rel)` under the annealed
    /// teacher step count, label dropout, noise; then the teacher step.
    #[allow(clippy::too_many_arguments)]
    pub fn draw<Bt: Backend>(
        data: &Dataset,
        cfg: &ModelConfig,
        ccfg: &ConsistencyConfig,
        batch: usize,
        label_dropout: f64,
        seed: u64,
        teacher: Option<&Teacher<'_, Bt>>,
        choices: &mut UniformStream,
        step: u64,
    ) -> Result<Self> {
        let d = data.image_len();
        let k = cfg.num_classes;
        let per_segment = ccfg.anneal().steps_per_segment(step, ccfg.student_steps);
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut x = Vec::with_capacity(batch * d);
        let mut times = Vec::with_capacity(batch);
        let mut labels = Vec::with_capacity(if k > 0 { batch } else { 0 });
        for _ in 0..batch {
            let i = uniform_index(choices.next_f64(), n) as usize;
            let (u_step, u_n) = (choices.next_f64(), choices.next_f64());
            let drop = choices.next_f64();
            x.extend_from_slice(data.image(i));
            times.push(
                ConsistencyTimes::from_uniforms(u_step, u_n, ccfg.student_steps, per_segment)
                    .map_err(|e| anyhow!("{e}"))?,
            );
            if k > 0 {
                let label = training_label(data.labels[i] as usize, k, drop, label_dropout);
                labels.push(label as i64);
            }
        }
        let mut eps = vec![0f32; batch * d];
        GaussianStream::new(seed ^ NOISE_SEED_SALT, step).fill(&mut eps);
        Self::build(cfg, teacher, x, &eps, times, labels)
    }
}

/// The loss of one batch and what it was built from.
pub struct ConsistencyLoss<B: Backend> {
    /// Mean over the batch of `w(t) pseudo_huber(x_hat - target)` (`[1]`).
    pub loss: Tensor<B, 1>,
    /// Per example (`[B]`).
    pub per_example: Tensor<B, 1>,
    /// The target `invDDIM_{t->t_step}(DDIM_{s->t_step}(x_ref, z_s), z_t)`.
    pub target: Vec<f32>,
    /// `x_ref = f(z_s, s)` (no gradient).
    pub x_ref: Vec<f32>,
}

impl<B: Backend> std::fmt::Debug for ConsistencyLoss<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsistencyLoss").finish_non_exhaustive()
    }
}

fn col<B: Backend>(v: Vec<f32>, device: &B::Device) -> Tensor<B, 4> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n, 1, 1, 1]), device)
}

/// [`fewstep_core::training::pseudo_huber`] applied elementwise to a tensor
/// of squared norms: `sqrt(||v||² + c²) - c`, on tensors so that the loss
/// keeps its gradient (the test below checks it against core's function).
pub fn pseudo_huber_tensor<B: Backend>(norm_sq: Tensor<B, 1>, c: f64) -> Tensor<B, 1> {
    let c = c as f32;
    (norm_sq + c * c).sqrt() - c
}

/// `x_hat` of the network output `out` at `z` (times per example), as tensors.
pub(crate) fn x_hat_tensor<B: Backend>(
    pred: Prediction,
    schedule: &Schedule,
    z: Tensor<B, 4>,
    out: Tensor<B, 4>,
    t: &[f64],
    device: &B::Device,
) -> Tensor<B, 4> {
    let c: Vec<_> = t
        .iter()
        .map(|&t| pred.x_hat_coeffs(schedule.alpha_sigma(t)))
        .collect();
    let a = col(c.iter().map(|c| c.a as f32).collect(), device);
    let b = col(c.iter().map(|c| c.b as f32).collect(), device);
    z * a + out * b
}

/// Algorithm 1's loss for `model` on a prepared batch. Both network
/// evaluations run under the same backend seed (`dropout_seed`), so they share
/// one dropout mask.
pub fn consistency_loss<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    huber_c: f64,
    weight: LossWeight,
    batch: &ConsistencyBatch,
    dropout_seed: u64,
    device: &B::Device,
) -> Result<ConsistencyLoss<B>> {
    let schedule = cfg.schedule()?;
    let pred = cfg.prediction()?;
    let n = batch.times.len();
    let d = cfg.image_len();
    let shape = [n, cfg.channels, cfg.height, cfg.width];
    let tensor4 = |v: &[f32]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), shape), device);
    let times1 = |f: fn(&ConsistencyTimes) -> f64| {
        let v: Vec<f32> = batch.times.iter().map(|tm| f(tm) as f32).collect();
        Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
    };
    let labels = || {
        (!batch.labels.is_empty()).then(|| {
            Tensor::<B, 1, Int>::from_data(TensorData::new(batch.labels.clone(), [n]), device)
        })
    };
    let z_t = tensor4(&batch.z_t);
    let (out_ref, out_t) = {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, dropout_seed);
        let out_ref = model.forward(tensor4(&batch.z_s), times1(|tm| tm.s), labels());
        // Read back (detached) before the second evaluation draws its masks.
        let out_ref = crate::export::onnx::tensor_values(&out_ref)?;
        B::seed(device, dropout_seed);
        let out_t = model.forward(z_t.clone(), times1(|tm| tm.t), labels());
        (out_ref, out_t)
    };
    let mut x_ref = out_ref;
    let mut target = vec![0f32; n * d];
    let mut w = Vec::with_capacity(n);
    for (i, tm) in batch.times.iter().enumerate() {
        let r = i * d..(i + 1) * d;
        pred.output_to_x_hat(
            &batch.z_s[r.clone()],
            &mut x_ref[r.clone()],
            schedule.alpha_sigma(tm.s),
        )
        .map_err(|e| anyhow!("{e}"))?;
        let c = ConsistencyTargetCoeffs::new(&schedule, *tm);
        for j in r {
            target[j] = c.apply(
                f64::from(x_ref[j]),
                f64::from(batch.z_s[j]),
                f64::from(batch.z_t[j]),
            ) as f32;
        }
        w.push(weight.at(&schedule, tm.t) as f32);
    }
    let t: Vec<f64> = batch.times.iter().map(|tm| tm.t).collect();
    let x_hat = x_hat_tensor(pred, &schedule, z_t, out_t, &t, device);
    let diff = x_hat - tensor4(&target);
    let norm_sq = diff.square().sum_dim(1).sum_dim(2).sum_dim(3).reshape([n]);
    let huber = pseudo_huber_tensor(norm_sq, huber_c);
    let w = Tensor::<B, 1>::from_data(TensorData::new(w, [n]), device);
    let per_example = huber * w;
    Ok(ConsistencyLoss {
        loss: per_example.clone().mean(),
        per_example,
        target,
        x_ref,
    })
}

/// A consistency run: the student's [`Trainer`] (its `mode` holds the
/// settings) and, for CD, the frozen teacher.
pub struct ConsistencyTrainer<B: AutodiffBackend> {
    /// The student.
    pub trainer: Trainer<B>,
    /// Settings (a copy of the trainer's mode).
    pub ccfg: ConsistencyConfig,
    /// The frozen teacher (CD).
    pub teacher: Option<UNet<B::InnerBackend>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for ConsistencyTrainer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsistencyTrainer")
            .field("trainer", &self.trainer)
            .field("ccfg", &self.ccfg)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> ConsistencyTrainer<B> {
    /// The teacher as [`Teacher`], for CD.
    fn teacher(&self) -> Option<Teacher<'_, B::InnerBackend>> {
        let model = self.teacher.as_ref()?;
        Some(Teacher {
            model,
            cfg: &self.trainer.model_cfg,
            guidance: self.ccfg.teacher_guidance,
            sampler: self.ccfg.teacher_sampler,
            xvar_frac: self.ccfg.xvar_frac,
            device: &self.trainer.device,
        })
    }

    /// The batch of step `step`, drawn from `choices` (which it advances).
    pub fn batch(
        &self,
        data: &Dataset,
        choices: &mut UniformStream,
        step: u64,
    ) -> Result<ConsistencyBatch> {
        let tr = &self.trainer;
        if self.ccfg.mode == ConsistencyMode::Cd && self.teacher.is_none() {
            bail!("internal: consistency distillation without a teacher");
        }
        let teacher = self.teacher();
        ConsistencyBatch::draw(
            data,
            &tr.model_cfg,
            &self.ccfg,
            tr.train.batch,
            tr.train.label_dropout,
            tr.train.seed,
            teacher.as_ref(),
            choices,
            step,
        )
    }

    /// One optimiser step; returns its log entry.
    pub fn step(&mut self, data: &Dataset) -> Result<StepLog> {
        let mut choices = self.trainer.choices.clone();
        let batch = self.batch(data, &mut choices, self.trainer.step)?;
        self.trainer.choices = choices;
        let tr = &self.trainer;
        let loss = consistency_loss(
            &tr.model,
            &tr.model_cfg,
            self.ccfg.huber_c,
            self.ccfg.loss_weight,
            &batch,
            dropout_seed(tr.train.seed, tr.step),
            &tr.device,
        )?;
        self.trainer.apply_loss(loss.loss)
    }

    /// The loss of the current weights (no update) on `batches` batches
    /// drawn as at step `at_step` from a separate stream keyed by `seed`;
    /// for comparing a student before and after training.
    pub fn eval_loss(&self, data: &Dataset, at_step: u64, batches: u64, seed: u64) -> Result<f64> {
        let mut choices = UniformStream::new(seed, 1);
        let mut total = 0.0;
        for b in 0..batches {
            let batch = self.batch(data, &mut choices, at_step + b)?;
            let tr = &self.trainer;
            let loss = consistency_loss(
                &tr.model,
                &tr.model_cfg,
                self.ccfg.huber_c,
                self.ccfg.loss_weight,
                &batch,
                dropout_seed(seed, b),
                &tr.device,
            )?;
            let v: f64 = loss.loss.into_scalar().elem();
            total += v;
        }
        Ok(total / batches.max(1) as f64)
    }
}

impl<B: AutodiffBackend> ConsistencyTrainer<B> {
    /// A new run: the student starts from the teacher checkpoint's EMA
    /// weights (with a fresh optimiser); for CD the same weights are the
    /// frozen teacher. `dropout` overrides the teacher's dropout.
    pub fn new(
        teacher: &Checkpoint,
        ccfg: ConsistencyConfig,
        train: TrainConfig,
        data: &Dataset,
        dropout: Option<f64>,
        device: B::Device,
    ) -> Result<Self> {
        ccfg.validate()?;
        if !matches!(teacher.meta.mode, TrainingMode::Diffusion) {
            bail!(
                "--init must be a diffusion checkpoint, this one is a {} run",
                teacher.meta.mode.describe()
            );
        }
        let mut cfg = teacher.meta.model.clone();
        if let Some(p) = dropout {
            cfg.dropout = p;
        }
        cfg.validate()?;
        if ccfg.mode == ConsistencyMode::Cd && ccfg.teacher_guidance != 1.0 && cfg.num_classes == 0
        {
            bail!("--teacher-guidance needs a class-conditional teacher");
        }
        let mut trainer = Trainer::<B>::new(cfg.clone(), train, data, device.clone())?;
        trainer.model = teacher.load_ema::<B>(UNet::new(&cfg, &device), &device)?;
        trainer.ema = teacher.load_ema::<B::InnerBackend>(UNet::new(&cfg, &device), &device)?;
        trainer.mode = TrainingMode::Consistency(ccfg.clone());
        let teacher =
            match ccfg.mode {
                ConsistencyMode::Cd => Some(teacher.load_ema::<B::InnerBackend>(
                    UNet::new(&teacher.meta.model, &device),
                    &device,
                )?),
                ConsistencyMode::Ct => None,
            };
        Ok(Self {
            trainer,
            ccfg,
            teacher,
        })
    }

    /// Resumes a consistency run; CD reloads its teacher from the
    /// checkpoint it started from (which must be unchanged).
    pub fn from_checkpoint(ckpt: Checkpoint, device: B::Device) -> Result<Self> {
        let TrainingMode::Consistency(ccfg) = ckpt.meta.mode.clone() else {
            bail!(
                "this checkpoint is a {} run, not a consistency run",
                ckpt.meta.mode.describe()
            );
        };
        let teacher = match ccfg.mode {
            ConsistencyMode::Cd => Some(load_teacher::<B::InnerBackend>(
                &ccfg.init,
                ccfg.init_step,
                &ckpt.meta.model,
                &device,
            )?),
            ConsistencyMode::Ct => None,
        };
        let trainer = Trainer::<B>::from_checkpoint(ckpt, device)?;
        Ok(Self {
            trainer,
            ccfg,
            teacher,
        })
    }
}

/// Loads the EMA weights of the teacher checkpoint at `path`, checking that
/// it is still the one a run started from (`step`) and fits `cfg`.
pub fn load_teacher<B: Backend>(
    path: &str,
    step: u64,
    cfg: &ModelConfig,
    device: &B::Device,
) -> Result<UNet<B>> {
    let ckpt = Checkpoint::load(std::path::Path::new(path))
        .with_context(|| format!("loading the teacher {path}"))?;
    if ckpt.meta.step != step {
        bail!(
            "the teacher {path} is now at step {} but this run started from step {step}: restore it to resume",
            ckpt.meta.step
        );
    }
    let mut tcfg = ckpt.meta.model.clone();
    tcfg.dropout = cfg.dropout;
    if &tcfg != cfg {
        bail!("the teacher {path} has a different network than this run");
    }
    ckpt.load_ema::<B>(UNet::new(&ckpt.meta.model, device), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fewstep_core::training::{PAPER_HUBER_C, pseudo_huber};

    #[test]
    fn pseudo_huber_tensor_is_cores_pseudo_huber_elementwise() {
        let norm_sq = [0.0f32, 1e-9, 0.25, 3.0, 1200.0];
        let device = Default::default();
        for c in [PAPER_HUBER_C, 0.03, 1.0] {
            let t = Tensor::<crate::Cpu, 1>::from_data(
                TensorData::new(norm_sq.to_vec(), [norm_sq.len()]),
                &device,
            );
            let got = pseudo_huber_tensor(t, c)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for (&n, &g) in norm_sq.iter().zip(&got) {
                let want = pseudo_huber(f64::from(n), c);
                assert!(
                    (f64::from(g) - want).abs() <= 1e-6 * (1.0 + want),
                    "c = {c}, ||v||² = {n}: {g} vs {want}"
                );
            }
        }
    }
}
