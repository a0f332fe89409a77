//! Diffusion pretraining (the teacher): `t ~ U(0, 1)`,
//! `z_t = alpha_t x + sigma_t eps`, loss `(SNR(t) + 1) ||x - x_hat||²`
//! (the v-loss), AdamW with warm-up, global gradient-norm clipping, an EMA of
//! the weights, label dropout for guidance.
//!
//! Every formula comes from `fewstep-core`: per-example coefficients are
//! computed on the host in f64 and uploaded as `[B, 1, 1, 1]` tensors.
//! Every random choice comes from counter-based streams keyed by the seed and
//! the step, so a resumed run repeats the uninterrupted one exactly.

use crate::algorithms::optim::{Optim, optimizer};
use crate::checkpoint::{Checkpoint, Meta, StepLog, XvarTable};
use crate::config::{ModelConfig, TrainConfig, TrainingMode};
use crate::data::Dataset;
use crate::network::model::UNet;
use anyhow::{Result, bail};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fewstep_core::rng::{GaussianStream, UniformStream};
use fewstep_core::training::residual_coeffs;
use fewstep_core::training::{loss_weight, training_label, uniform_index};
use fewstep_core::{Prediction, Schedule};

/// Burn's CPU backends keep one global RNG (weight init, dropout masks).
/// Every seed-then-draw sequence holds this lock, so trainers running in
/// parallel threads (tests) cannot interleave their draws.
pub static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn backend_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seed offset of the per-step Gaussian noise streams.
const NOISE_SEED_SALT: u64 = 0x6e6f_6973_6500_0001;
/// Seed offset of the backend RNG (dropout masks).
const DROPOUT_SEED_SALT: u64 = 0x6472_6f70_0000_0002;

/// The backend RNG seed for step `step`'s dropout masks. Re-seeding with the
/// same value before a second evaluation reproduces the same masks
/// ("synchronized dropout").
pub fn dropout_seed(seed: u64, step: u64) -> u64 {
    (seed ^ DROPOUT_SEED_SALT)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step)
}

/// Host-side inputs of one diffusion training batch.
#[derive(Debug, Clone)]
pub struct DiffusionBatch {
    /// Clean images, `B * d`.
    pub x: Vec<f32>,
    /// Noise, `B * d`.
    pub eps: Vec<f32>,
    /// Times in (0, 1).
    pub t: Vec<f32>,
    /// Labels (with the null label where dropped); empty when unconditional.
    pub labels: Vec<i64>,
    /// Per example: `alpha_t`, `sigma_t`.
    pub alpha: Vec<f32>,
    /// Per example `sigma_t`.
    pub sigma: Vec<f32>,
    /// `x - x_hat = cx x + ce eps + co out`, per example.
    pub cx: Vec<f32>,
    /// See `cx`.
    pub ce: Vec<f32>,
    /// See `cx`.
    pub co: Vec<f32>,
    /// Loss weight `SNR(t) + 1`.
    pub w: Vec<f32>,
}

/// Per-example `alpha_t`, `sigma_t`, core's `x - x_hat` coefficients
/// ([`residual_coeffs`]) and the loss weight.
fn diff_coeffs(pred: Prediction, schedule: &Schedule, t: f64) -> [f64; 6] {
    let at = schedule.alpha_sigma(t);
    let r = residual_coeffs(pred, at);
    [
        at.alpha,
        at.sigma,
        r.x,
        r.eps,
        r.out,
        loss_weight(schedule, t),
    ]
}

/// Draws step `step`'s batch from the data, advancing `choices`.
#[allow(clippy::too_many_arguments)]
pub fn draw_batch(
    data: &Dataset,
    model_cfg: &ModelConfig,
    train: &TrainConfig,
    choices: &mut UniformStream,
    step: u64,
) -> Result<DiffusionBatch> {
    let schedule = model_cfg.schedule()?;
    let pred = model_cfg.prediction()?;
    let d = data.image_len();
    let b = train.batch;
    let k = model_cfg.num_classes;
    let mut out = DiffusionBatch {
        x: Vec::with_capacity(b * d),
        eps: vec![0.0; b * d],
        t: Vec::with_capacity(b),
        labels: Vec::with_capacity(if k > 0 { b } else { 0 }),
        alpha: Vec::with_capacity(b),
        sigma: Vec::with_capacity(b),
        cx: Vec::with_capacity(b),
        ce: Vec::with_capacity(b),
        co: Vec::with_capacity(b),
        w: Vec::with_capacity(b),
    };
    let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
    for _ in 0..b {
        let i = uniform_index(choices.next_f64(), n) as usize;
        let t = choices.next_f64();
        let drop = choices.next_f64();
        out.x.extend_from_slice(data.image(i));
        if k > 0 {
            let label = training_label(data.labels[i] as usize, k, drop, train.label_dropout);
            out.labels.push(label as i64);
        }
        let [alpha, sigma, cx, ce, co, w] = diff_coeffs(pred, &schedule, t);
        out.t.push(t as f32);
        out.alpha.push(alpha as f32);
        out.sigma.push(sigma as f32);
        out.cx.push(cx as f32);
        out.ce.push(ce as f32);
        out.co.push(co as f32);
        out.w.push(w as f32);
    }
    GaussianStream::new(train.seed ^ NOISE_SEED_SALT, step).fill(&mut out.eps);
    Ok(out)
}

fn col<B: Backend>(v: &[f32], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len(), 1, 1, 1]), device)
}

/// The weighted loss of one batch on any backend (`[1]`).
pub fn diffusion_loss<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    batch: &DiffusionBatch,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = batch.t.len();
    let shape = [n, cfg.channels, cfg.height, cfg.width];
    let x = Tensor::<B, 4>::from_data(TensorData::new(batch.x.clone(), shape), device);
    let eps = Tensor::<B, 4>::from_data(TensorData::new(batch.eps.clone(), shape), device);
    let z = x.clone() * col(&batch.alpha, device) + eps.clone() * col(&batch.sigma, device);
    let t = Tensor::<B, 1>::from_data(TensorData::new(batch.t.clone(), [n]), device);
    let labels = (!batch.labels.is_empty()).then(|| {
        Tensor::<B, 1, Int>::from_data(TensorData::new(batch.labels.clone(), [n]), device)
    });
    let out = model.forward(z, t, labels);
    let diff =
        x * col(&batch.cx, device) + eps * col(&batch.ce, device) + out * col(&batch.co, device);
    let mse = diff
        .square()
        .mean_dim(1)
        .mean_dim(2)
        .mean_dim(3)
        .reshape([n]);
    let w = Tensor::<B, 1>::from_data(TensorData::new(batch.w.clone(), [n]), device);
    (mse * w).mean()
}

/// Collects the float parameters of a module, flattened, in visit order.
struct Collect<B: Backend> {
    out: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.out.push(t.reshape([n]));
    }
}

/// `ema <- decay * ema + (1 - decay) * model`, parameter by parameter in
/// visit order (the two modules have the same structure).
struct EmaUpdate<B: Backend> {
    model: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdate<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let dims = ema.dims();
        let new = match self.model.next() {
            Some(m) => ema * self.decay + m.reshape(dims) * (1.0 - self.decay),
            None => ema,
        };
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Global gradient norm over all parameters, then scaling when above `max`.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    sums: Vec<Tensor<B::InnerBackend, 1>>,
    scale: Option<f64>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    self.sums.push(g.square().sum());
                }
            }
            Some(s) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads.register(param.id, g * s);
                }
            }
        }
    }
}

/// Clips the gradients to global norm `max` (0: no clipping); returns the
/// norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend>(
    model: &UNet<B>,
    grads: &mut GradientsParams,
    max: f64,
) -> f64 {
    let mut v = GradNorm::<B> {
        grads,
        sums: Vec::new(),
        scale: None,
    };
    model.visit(&mut v);
    let norm = if v.sums.is_empty() {
        0.0
    } else {
        let total: f64 = Tensor::cat(std::mem::take(&mut v.sums), 0)
            .sum()
            .into_scalar()
            .elem();
        total.sqrt()
    };
    if max > 0.0 && norm > max && norm.is_finite() {
        v.scale = Some(max / norm);
        model.visit(&mut v);
    }
    norm
}

/// Learning rate at step `step` (linear warm-up, then constant).
pub fn learning_rate(train: &TrainConfig, step: u64) -> f64 {
    if train.warmup == 0 {
        train.lr
    } else {
        train.lr * ((step + 1) as f64 / train.warmup as f64).min(1.0)
    }
}

/// EMA decay at step `step`: `min(decay, (1 + step) / (10 + step))`, so the
/// average is not dominated by the random initialisation early on.
pub fn ema_decay(train: &TrainConfig, step: u64) -> f64 {
    train
        .ema_decay
        .min((1.0 + step as f64) / (10.0 + step as f64))
}

/// A training run in memory: model, EMA, optimiser, and position.
pub struct Trainer<B: AutodiffBackend> {
    /// Network shape.
    pub model_cfg: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// The trained network.
    pub model: UNet<B>,
    /// The exported average of its weights.
    pub ema: UNet<B::InnerBackend>,
    /// AdamW.
    pub optim: Optim<B>,
    /// Steps done.
    pub step: u64,
    /// Data/time/label-dropout choices.
    pub choices: UniformStream,
    /// One entry per step done.
    pub log: Vec<StepLog>,
    /// Dataset provenance.
    pub data_source: String,
    /// Class names of the dataset.
    pub class_names: Vec<String>,
    /// Seconds of training so far (over resumes).
    pub train_seconds: f64,
    /// What the run trains (diffusion unless a consistency or progressive
    /// run set it); stored in the checkpoint.
    pub mode: TrainingMode,
    /// The aDDIM xvar table `fewstep-train xvar` measured on the weights of
    /// the checkpoint this run resumed from, if any (see [`Trainer::measured_xvar`]).
    pub addim_xvar: Option<XvarTable>,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> std::fmt::Debug for Trainer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("model_cfg", &self.model_cfg)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh run; the backend is seeded from `train.seed` for the init.
    pub fn new(
        model_cfg: ModelConfig,
        train: TrainConfig,
        data: &Dataset,
        device: B::Device,
    ) -> Result<Self> {
        model_cfg.validate()?;
        train.validate()?;
        check_data(&model_cfg, data)?;
        let model = {
            let _rng = backend_rng_lock();
            B::seed(&device, train.seed);
            UNet::<B>::new(&model_cfg, &device)
        };
        let ema = model.valid();
        let optim = optimizer::<B>(&train);
        Ok(Self {
            choices: UniformStream::new(train.seed, 0),
            model_cfg,
            train,
            model,
            ema,
            optim,
            step: 0,
            log: Vec::new(),
            data_source: data.source.clone(),
            class_names: data.class_names.clone(),
            train_seconds: 0.0,
            mode: TrainingMode::Diffusion,
            addim_xvar: None,
            device,
        })
    }

    /// Restores a run from a checkpoint.
    pub fn from_checkpoint(ckpt: Checkpoint, device: B::Device) -> Result<Self> {
        let meta = ckpt.meta.clone();
        meta.model.validate()?;
        let model = UNet::<B>::new(&meta.model, &device);
        let model = ckpt.load_model::<B>(model, &device)?;
        let ema = UNet::<B::InnerBackend>::new(&meta.model, &device);
        let ema = ckpt.load_ema::<B::InnerBackend>(ema, &device)?;
        let optim = optimizer::<B>(&meta.train);
        let optim = ckpt.load_optim::<B>(optim, &device)?;
        let mut choices = UniformStream::new(meta.train.seed, 0);
        choices.seek(meta.choices_position);
        Ok(Self {
            model_cfg: meta.model,
            train: meta.train,
            model,
            ema,
            optim,
            step: meta.step,
            choices,
            log: meta.log,
            data_source: meta.data_source,
            class_names: meta.class_names,
            train_seconds: meta.train_seconds,
            mode: meta.mode,
            addim_xvar: meta.addim_xvar,
            device,
        })
    }

    /// The checkpoint of the current state.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let meta = Meta {
            format: crate::checkpoint::CHECKPOINT_VERSION,
            model: self.model_cfg.clone(),
            train: self.train.clone(),
            step: self.step,
            choices_position: self.choices.position(),
            log: self.log.clone(),
            data_source: self.data_source.clone(),
            class_names: self.class_names.clone(),
            train_seconds: self.train_seconds,
            trainer_version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.clone(),
            addim_xvar: self.measured_xvar().cloned(),
        };
        Checkpoint::from_state::<B>(meta, &self.model, &self.ema, &self.optim)
    }

    /// The measured aDDIM xvar table of the current EMA weights: the
    /// resumed checkpoint's table while no step has been taken since; a
    /// table measured on earlier weights would be stale.
    pub fn measured_xvar(&self) -> Option<&XvarTable> {
        self.addim_xvar.as_ref().filter(|x| x.step == self.step)
    }

    /// One optimiser step; returns its loss.
    pub fn step(&mut self, data: &Dataset) -> Result<StepLog> {
        let batch = draw_batch(
            data,
            &self.model_cfg,
            &self.train,
            &mut self.choices,
            self.step,
        )?;
        let loss = {
            let _rng = backend_rng_lock();
            B::seed(&self.device, dropout_seed(self.train.seed, self.step));
            diffusion_loss(&self.model, &self.model_cfg, &batch, &self.device)
        };
        self.apply_loss(loss)
    }

    /// The rest of one optimiser step for a loss of `self.model`: backward,
    /// gradient clipping, AdamW, EMA update, log entry; advances `step`.
    pub fn apply_loss(&mut self, loss: Tensor<B, 1>) -> Result<StepLog> {
        let loss_value: f64 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            bail!(
                "loss is {loss_value} at step {}: training diverged (lower --lr?)",
                self.step
            );
        }
        let grads = loss.backward();
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        let grad_norm = clip_global_norm(&self.model, &mut grads, self.train.grad_clip);
        let lr = learning_rate(&self.train, self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let decay = ema_decay(&self.train, self.step);
        let mut collect = Collect { out: Vec::new() };
        self.model.valid().visit(&mut collect);
        let mut update = EmaUpdate {
            model: collect.out.into_iter(),
            decay,
        };
        self.ema = self.ema.clone().map(&mut update);
        self.step += 1;
        let entry = StepLog {
            step: self.step,
            loss: loss_value as f32,
            lr: lr as f32,
            grad_norm: grad_norm as f32,
        };
        self.log.push(entry);
        Ok(entry)
    }
}

/// The dataset must match the network's image shape and classes.
pub fn check_data(cfg: &ModelConfig, data: &Dataset) -> Result<()> {
    if data.is_empty() {
        bail!("the dataset is empty");
    }
    if (data.channels, data.height, data.width) != (cfg.channels, cfg.height, cfg.width) {
        bail!(
            "dataset images are {}x{}x{} but the model expects {}x{}x{}",
            data.channels,
            data.height,
            data.width,
            cfg.channels,
            cfg.height,
            cfg.width
        );
    }
    if cfg.num_classes > 0 && data.num_classes() != cfg.num_classes {
        bail!(
            "the model has {} classes but the dataset has {}",
            cfg.num_classes,
            data.num_classes()
        );
    }
    Ok(())
}
