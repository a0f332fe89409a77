//! Progressive distillation (Salimans & Ho 2022), the baseline of the
//! paper's Table 3: each stage halves the sampling steps; the student learns
//! to match two teacher steps (aDDIM, as the paper's reimplementation, or
//! DDIM) with one DDIM step; each stage's student (EMA weights) becomes the
//! next stage's teacher and the next student's initialisation.
//!
//! One example of a stage with `N` student steps: `k ~ U{1..N}`, `t = k/N`,
//! `u = t - 1/(2N)`, `s = t - 1/N`; `z_u`, `z_s` are the teacher's two steps
//! from `z_t`; the target is `x~ = invDDIM_{t->s}(z_s, z_t)` and the loss
//! `w(t) ||x_hat - x~||² / d` with `w = SNR + 1` (the v-loss weighting).

use crate::algorithms::consistency::{
    Teacher, load_teacher, teacher_ode_step, teacher_x_hat, x_hat_tensor,
};
use crate::algorithms::optim::optimizer;
use crate::algorithms::train::{BACKEND_RNG, Trainer, dropout_seed};
use crate::checkpoint::{Checkpoint, StepLog};
use crate::config::{ModelConfig, ProgressiveConfig, TrainConfig, TrainingMode};
use crate::data::Dataset;
use crate::network::model::UNet;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use fewstep_core::SamplerKind;
use fewstep_core::rng::GaussianStream;
use fewstep_core::training::{
    ProgressiveTargetCoeffs, ProgressiveTimes, forward_noise, loss_weight, training_label,
    uniform_index,
};
use std::path::{Path, PathBuf};

/// Seed offset of the per-step Gaussian noise of progressive runs.
const NOISE_SEED_SALT: u64 = 0x7072_6f67_7265_0004;

/// File (in the run directory) holding the weights that teach stage `stage + 1`.
pub fn stage_file(out: &Path, stage: u32) -> PathBuf {
    out.join(format!("stage-{stage}.fsck"))
}

/// A progressive-distillation run.
pub struct ProgressiveTrainer<B: AutodiffBackend> {
    /// The student.
    pub trainer: Trainer<B>,
    /// Settings (a copy of the trainer's mode).
    pub pcfg: ProgressiveConfig,
    /// The current stage's teacher.
    pub teacher: UNet<B::InnerBackend>,
    /// Run directory (stage files are written there).
    pub out: PathBuf,
}

impl<B: AutodiffBackend> std::fmt::Debug for ProgressiveTrainer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressiveTrainer")
            .field("trainer", &self.trainer)
            .field("pcfg", &self.pcfg)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> ProgressiveTrainer<B> {
    /// A new run from a diffusion checkpoint.
    pub fn new(
        init: &Checkpoint,
        pcfg: ProgressiveConfig,
        mut train: TrainConfig,
        data: &Dataset,
        out: &Path,
        device: B::Device,
    ) -> Result<Self> {
        pcfg.validate()?;
        if !matches!(init.meta.mode, TrainingMode::Diffusion) {
            bail!(
                "--init must be a diffusion checkpoint, this one is a {} run",
                init.meta.mode.describe()
            );
        }
        if pcfg.teacher_guidance != 1.0 && init.meta.model.num_classes == 0 {
            bail!("--teacher-guidance needs a class-conditional teacher");
        }
        let cfg = init.meta.model.clone();
        train.steps = pcfg.total_iters();
        let mut trainer = Trainer::<B>::new(cfg.clone(), train, data, device.clone())?;
        trainer.model = init.load_ema::<B>(UNet::new(&cfg, &device), &device)?;
        trainer.ema = init.load_ema::<B::InnerBackend>(UNet::new(&cfg, &device), &device)?;
        trainer.mode = TrainingMode::Progressive(pcfg.clone());
        let teacher = init.load_ema::<B::InnerBackend>(UNet::new(&cfg, &device), &device)?;
        Ok(Self {
            trainer,
            pcfg,
            teacher,
            out: out.to_path_buf(),
        })
    }

    /// Resumes a run: the teacher is the diffusion checkpoint in stage 0,
    /// else the previous stage's file in `out`.
    pub fn from_checkpoint(ckpt: Checkpoint, out: &Path, device: B::Device) -> Result<Self> {
        let TrainingMode::Progressive(pcfg) = ckpt.meta.mode.clone() else {
            bail!(
                "this checkpoint is a {} run, not a progressive run",
                ckpt.meta.mode.describe()
            );
        };
        let stage = pcfg.stage(ckpt.meta.step);
        let teacher = if stage == 0 {
            load_teacher::<B::InnerBackend>(&pcfg.init, pcfg.init_step, &ckpt.meta.model, &device)?
        } else {
            let file = stage_file(out, stage - 1);
            Checkpoint::load(&file)
                .with_context(|| format!("the teacher of stage {stage}"))?
                .load_ema::<B::InnerBackend>(UNet::new(&ckpt.meta.model, &device), &device)?
        };
        let trainer = Trainer::<B>::from_checkpoint(ckpt, device)?;
        Ok(Self {
            trainer,
            pcfg,
            teacher,
            out: out.to_path_buf(),
        })
    }

    /// One optimiser step; at the end of a stage (but the last) the student's
    /// EMA becomes the teacher and the new student, with a fresh optimiser.
    pub fn step(&mut self, data: &Dataset) -> Result<StepLog> {
        let step = self.trainer.step;
        let stage = self.pcfg.stage(step);
        let n_student = self.pcfg.stage_student_steps(stage);
        let tr = &self.trainer;
        let cfg = &tr.model_cfg;
        let schedule = cfg.schedule()?;
        let d = cfg.image_len();
        let b = tr.train.batch;
        let k = cfg.num_classes;
        let mut choices = tr.choices.clone();
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let (mut x, mut labels) = (Vec::with_capacity(b * d), Vec::new());
        let mut times = Vec::with_capacity(b);
        for _ in 0..b {
            let i = uniform_index(choices.next_f64(), n) as usize;
            let tm = ProgressiveTimes::from_uniform(choices.next_f64(), n_student)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let drop = choices.next_f64();
            x.extend_from_slice(data.image(i));
            times.push(tm);
            if k > 0 {
                let label =
                    training_label(data.labels[i] as usize, k, drop, tr.train.label_dropout);
                labels.push(label as i64);
            }
        }
        let t: Vec<f64> = times.iter().map(|tm| tm.t).collect();
        let u: Vec<f64> = times.iter().map(|tm| tm.u).collect();
        let s: Vec<f64> = times.iter().map(|tm| tm.s).collect();
        let mut eps = vec![0f32; b * d];
        GaussianStream::new(tr.train.seed ^ NOISE_SEED_SALT, step).fill(&mut eps);
        let mut z_t = vec![0f32; b * d];
        for (i, &ti) in t.iter().enumerate() {
            let r = i * d..(i + 1) * d;
            forward_noise(
                &x[r.clone()],
                &eps[r.clone()],
                schedule.alpha_sigma(ti),
                &mut z_t[r],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let teacher = Teacher {
            model: &self.teacher,
            cfg,
            guidance: self.pcfg.teacher_guidance,
            sampler: self.pcfg.teacher_sampler,
            xvar_frac: self.pcfg.xvar_frac,
            device: &tr.device,
        };
        let frac = match self.pcfg.teacher_sampler {
            SamplerKind::Addim => self.pcfg.xvar_frac,
            SamplerKind::Ddim => 0.0,
        };
        let (g1, c1) = teacher_x_hat(&teacher, &z_t, &t, &labels)?;
        let (z_u, _) = teacher_ode_step(&schedule, d, &x, &z_t, &g1, &c1, &t, &u, frac);
        let (g2, c2) = teacher_x_hat(&teacher, &z_u, &u, &labels)?;
        let (z_s, _) = teacher_ode_step(&schedule, d, &x, &z_u, &g2, &c2, &u, &s, frac);
        let mut target = vec![0f32; b * d];
        let mut w = Vec::with_capacity(b);
        for (i, &tm) in times.iter().enumerate() {
            let c = ProgressiveTargetCoeffs::new(&schedule, tm);
            for j in i * d..(i + 1) * d {
                target[j] = c.apply(f64::from(z_s[j]), f64::from(z_t[j])) as f32;
            }
            w.push(loss_weight(&schedule, tm.t) as f32);
        }
        let loss = progressive_loss(
            &tr.model,
            cfg,
            &z_t,
            &t,
            &labels,
            &target,
            &w,
            dropout_seed(tr.train.seed, step),
            &tr.device,
        )?;
        self.trainer.choices = choices;
        let entry = self.trainer.apply_loss(loss)?;
        let done = self.trainer.step;
        if done.is_multiple_of(self.pcfg.stage_iters) && done < self.pcfg.total_iters() {
            self.next_stage(stage)?;
        }
        Ok(entry)
    }

    /// Ends stage `stage`: its EMA is saved as the next teacher and becomes
    /// the new student.
    fn next_stage(&mut self, stage: u32) -> Result<()> {
        let tr = &mut self.trainer;
        let ckpt = tr.checkpoint()?;
        ckpt.save(&stage_file(&self.out, stage))?;
        let cfg = tr.model_cfg.clone();
        self.teacher = ckpt.load_ema::<B::InnerBackend>(UNet::new(&cfg, &tr.device), &tr.device)?;
        tr.model = ckpt.load_ema::<B>(UNet::new(&cfg, &tr.device), &tr.device)?;
        tr.optim = optimizer::<B>(&tr.train);
        Ok(())
    }
}

/// `mean_b w(t_b) ||x_hat_b - target_b||² / d` of the student at `z_t`.
#[allow(clippy::too_many_arguments)]
fn progressive_loss<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    z_t: &[f32],
    t: &[f64],
    labels: &[i64],
    target: &[f32],
    w: &[f32],
    seed: u64,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let schedule = cfg.schedule()?;
    let pred = cfg.prediction()?;
    let n = t.len();
    let shape = [n, cfg.channels, cfg.height, cfg.width];
    let z = Tensor::<B, 4>::from_data(TensorData::new(z_t.to_vec(), shape), device);
    let tt = Tensor::<B, 1>::from_data(
        TensorData::new(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n]),
        device,
    );
    let lt = (!labels.is_empty())
        .then(|| Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), device));
    let out = {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, seed);
        model.forward(z.clone(), tt, lt)
    };
    let x_hat = x_hat_tensor(pred, &schedule, z, out, t, device);
    let target = Tensor::<B, 4>::from_data(TensorData::new(target.to_vec(), shape), device);
    let mse = (x_hat - target)
        .square()
        .mean_dim(1)
        .mean_dim(2)
        .mean_dim(3)
        .reshape([n]);
    let w = Tensor::<B, 1>::from_data(TensorData::new(w.to_vec(), [n]), device);
    Ok((mse * w).mean())
}
