//! Network and training configuration, with the `tiny` and `small` presets.
//!
//! Everything here is plain data (serde): it is stored in every checkpoint so
//! a run can be resumed or exported without repeating its flags.

use anyhow::{Context, Result, bail};
use fewstep_core::SamplerKind;
use fewstep_core::format::ImageShape;
use fewstep_core::{Prediction, Schedule};
use serde::{Deserialize, Serialize};

/// How the U-Net halves the resolution between levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// 3×3 convolution with stride 2 (padding 1).
    Conv,
    /// 2×2 average pooling.
    AvgPool,
}

/// The U-Net's shape. `image` and `num_classes` come from the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Image channels, height, width.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels of the first level.
    pub base_channels: usize,
    /// Channel multiplier per level (level 0 is full resolution).
    pub channel_mult: Vec<usize>,
    /// ResNet blocks per level on the way down (one more on the way up).
    pub blocks_per_level: usize,
    /// Levels (indices into `channel_mult`) with self-attention after each
    /// block; the middle of the network always has one attention block.
    pub attention_levels: Vec<usize>,
    /// Attention heads.
    pub heads: usize,
    /// GroupNorm groups (must divide every channel count).
    pub groups: usize,
    /// Dropout probability inside the ResNet blocks (training only).
    pub dropout: f64,
    /// Number of classes; 0 = unconditional. The class embedding has
    /// `num_classes + 1` rows: index `num_classes` is the null label.
    pub num_classes: usize,
    /// `v` (default) or `x`.
    pub prediction: String,
    /// A `fewstep.schedule` string.
    pub schedule: String,
    /// Downsampling operator.
    pub downsample: Downsample,
}

/// GroupNorm epsilon (Burn and the ONNX export use the same value).
pub const GROUP_NORM_EPS: f64 = 1e-5;

impl ModelConfig {
    /// A named preset for an image shape.
    pub fn preset(name: &str, channels: usize, height: usize, width: usize) -> Result<Self> {
        let mut c = ModelConfig {
            channels,
            height,
            width,
            base_channels: 32,
            channel_mult: vec![1, 2, 4],
            blocks_per_level: 2,
            attention_levels: vec![2],
            heads: 4,
            groups: 8,
            dropout: 0.1,
            num_classes: 0,
            prediction: "v".into(),
            schedule: "cosine".into(),
            downsample: Downsample::Conv,
        };
        match name {
            // For tests: seconds per run.
            "tiny" => {
                c.base_channels = 8;
                c.channel_mult = vec![1, 2];
                c.blocks_per_level = 1;
                c.attention_levels = vec![1];
                c.heads = 2;
                c.groups = 4;
                c.dropout = 0.0;
            }
            // ~3.9 M parameters at 1x28x28; most of them at the lowest resolution, where
            // they are cheap to run (what a 2-core CPU can train).
            "small" => {}
            // Wider, attention at two levels: for a GPU.
            "medium" => {
                c.base_channels = 64;
                c.attention_levels = vec![1, 2];
            }
            other => bail!("unknown preset {other:?} (expected tiny, small or medium)"),
        }
        Ok(c)
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> Result<Schedule> {
        Schedule::parse(&self.schedule)
            .map_err(|e| anyhow::anyhow!("schedule {:?}: {e}", self.schedule))
    }

    /// The parsed prediction type (`v` or `x`).
    pub fn prediction(&self) -> Result<Prediction> {
        let p = Prediction::parse(&self.prediction)
            .map_err(|e| anyhow::anyhow!("prediction {:?}: {e}", self.prediction))?;
        if p == Prediction::Eps {
            bail!("the trainer predicts v or x (eps is unstable at t = 1)");
        }
        Ok(p)
    }

    /// `fewstep.image` of this model.
    pub fn image_shape(&self) -> ImageShape {
        ImageShape {
            channels: self.channels as u32,
            height: self.height as u32,
            width: self.width as u32,
        }
    }

    /// Values per image (`C*H*W`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Channels of level `level`.
    pub fn level_channels(&self, level: usize) -> usize {
        self.base_channels * self.channel_mult[level]
    }

    /// Width of the time/class embedding.
    pub fn emb_channels(&self) -> usize {
        self.base_channels * 4
    }

    /// Checks that the shapes work: every level's resolution is an integer,
    /// every channel count divides into the groups and heads.
    pub fn validate(&self) -> Result<()> {
        self.schedule()?;
        self.prediction()?;
        if self.channels == 0 || self.height == 0 || self.width == 0 {
            bail!(
                "image shape {}x{}x{} has a zero dimension",
                self.channels,
                self.height,
                self.width
            );
        }
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            bail!("channel_mult must be non-empty with entries >= 1");
        }
        if self.base_channels == 0
            || self.blocks_per_level == 0
            || self.heads == 0
            || self.groups == 0
        {
            bail!("base_channels, blocks_per_level, heads and groups must be >= 1");
        }
        let down = 1usize << (self.channel_mult.len() - 1);
        if !self.height.is_multiple_of(down) || !self.width.is_multiple_of(down) {
            bail!(
                "image {}x{} cannot be halved {} times (each level's size must be an integer); use fewer levels",
                self.height,
                self.width,
                self.channel_mult.len() - 1
            );
        }
        for (level, _) in self.channel_mult.iter().enumerate() {
            let ch = self.level_channels(level);
            if !ch.is_multiple_of(self.groups) {
                bail!(
                    "level {level}: {ch} channels do not divide into {} groups",
                    self.groups
                );
            }
            if !ch.is_multiple_of(self.heads) {
                bail!(
                    "level {level}: {ch} channels do not divide into {} heads",
                    self.heads
                );
            }
        }
        if !self.base_channels.is_multiple_of(2) {
            bail!("base_channels must be even (sinusoidal embedding)");
        }
        if let Some(l) = self
            .attention_levels
            .iter()
            .find(|&&l| l >= self.channel_mult.len())
        {
            bail!(
                "attention level {l} does not exist ({} levels)",
                self.channel_mult.len()
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout must be in [0, 1)");
        }
        Ok(())
    }
}

/// Diffusion pretraining settings; as flags (`clap::Args`) they are
/// `fewstep-train diffusion`'s training flags, with [`TrainConfig::default`]
/// as their defaults (`steps` is set by the command's `--steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Total optimiser steps.
    #[arg(skip = TrainConfig::default().steps)]
    pub steps: u64,
    /// Examples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = TrainConfig::default().warmup)]
    pub warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = TrainConfig::default().grad_clip)]
    pub grad_clip: f64,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = TrainConfig::default().ema_decay)]
    pub ema_decay: f64,
    /// Probability of training a class-conditional model on the null label.
    #[arg(long, default_value_t = TrainConfig::default().label_dropout)]
    pub label_dropout: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Checkpoint, loss curve and sample grid every K steps.
    #[arg(long, default_value_t = TrainConfig::default().sample_every)]
    pub sample_every: u64,
    /// aDDIM steps of the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_steps)]
    pub sample_steps: u32,
    /// Images in the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_count)]
    pub sample_count: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 10_000,
            batch: 64,
            lr: 2e-4,
            warmup: 200,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.999,
            label_dropout: 0.1,
            seed: 0,
            sample_every: 500,
            sample_steps: 32,
            sample_count: 64,
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            bail!("--batch must be >= 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!("--ema-decay must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.label_dropout) {
            bail!("--label-dropout must be in [0, 1)");
        }
        if self.sample_every == 0 {
            bail!("--sample-every must be >= 1");
        }
        if self.sample_steps == 0 || self.sample_count == 0 {
            bail!("--sample-steps and --sample-count must be >= 1");
        }
        if self.grad_clip < 0.0 || !self.grad_clip.is_finite() {
            bail!("--grad-clip must be >= 0");
        }
        Ok(())
    }
}

/// Parses a `fewstep.schedule` string for the CLI.
pub fn parse_schedule_arg(s: &str) -> Result<String> {
    Schedule::parse(s).with_context(|| format!("--schedule {s:?}"))?;
    Ok(s.to_string())
}

/// Parses `--teacher-sampler`: core's one spelling (`addim`, `ddim`).
pub fn parse_sampler_kind(s: &str) -> std::result::Result<SamplerKind, String> {
    s.parse()
        .map_err(|_| format!("unknown sampler {s:?} (expected addim or ddim)"))
}

/// Parses `--sampler`: core's one spelling (`auto`, `ddim`, `addim`).
pub fn parse_sampler_choice(s: &str) -> std::result::Result<fewstep_core::SamplerChoice, String> {
    s.parse()
        .map_err(|e: fewstep_core::PlanError| e.to_string())
}

/// What a run trains; stored in the checkpoint so that `export` writes the
/// right `fewstep.student_steps` and `--resume` continues the same objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TrainingMode {
    /// Diffusion pretraining (exports `student_steps = 0`).
    #[default]
    Diffusion,
    /// Multistep consistency training or distillation (Algorithm 1).
    Consistency(ConsistencyConfig),
    /// Progressive distillation (Salimans & Ho 2022).
    Progressive(ProgressiveConfig),
}

impl TrainingMode {
    /// `fewstep.student_steps` of the weights after `step` steps: 0 for a
    /// diffusion model, else the student's step count.
    pub fn student_steps(&self, step: u64) -> u32 {
        match self {
            TrainingMode::Diffusion => 0,
            TrainingMode::Consistency(c) => c.student_steps,
            // The weights after `step` steps belong to the stage of the last step done.
            TrainingMode::Progressive(p) => p.stage_student_steps(p.stage(step.saturating_sub(1))),
        }
    }

    /// One line for logs and export provenance.
    pub fn describe(&self) -> String {
        match self {
            TrainingMode::Diffusion => "diffusion".into(),
            TrainingMode::Consistency(c) => format!(
                "consistency {} T={} teacher {} steps {}->{} over {} iters, xvar_frac {}, huber_c {}, loss weight {}, guidance {}",
                c.mode.as_str(),
                c.student_steps,
                c.teacher_sampler.as_str(),
                c.teacher_steps_start,
                c.teacher_steps_end,
                c.anneal_iters,
                c.xvar_frac,
                c.huber_c,
                c.loss_weight,
                c.teacher_guidance
            ),
            TrainingMode::Progressive(p) => format!(
                "progressive {}->{} steps, {} iters per stage, teacher {}, xvar_frac {}, guidance {}",
                p.start_steps,
                p.target_steps,
                p.stage_iters,
                p.teacher_sampler.as_str(),
                p.xvar_frac,
                p.teacher_guidance
            ),
        }
    }
}

/// Consistency training (`x_teacher = x`) or distillation (a frozen teacher);
/// `--mode ct|cd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyMode {
    /// Consistency training (x_teacher = x).
    Ct,
    /// Consistency distillation (a frozen diffusion teacher).
    Cd,
}

impl ConsistencyMode {
    /// `ct` or `cd`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsistencyMode::Ct => "ct",
            ConsistencyMode::Cd => "cd",
        }
    }
}

/// The teacher's ODE step is core's [`SamplerKind`] (aDDIM with
/// `xvar = eta ||x_teacher - x||² / d`, the paper's default, or plain DDIM,
/// paper Table 4), stored in checkpoints by its name (`addim` / `ddim`).
mod sampler_kind_serde {
    use fewstep_core::SamplerKind;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(k: &SamplerKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SamplerKind, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|e| D::Error::custom(format!("{e}: {name:?}")))
    }
}

/// Settings of `fewstep-train consistency` (Algorithm 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyConfig {
    /// CT or CD.
    pub mode: ConsistencyMode,
    /// `T`, the student's sampling steps.
    pub student_steps: u32,
    /// `eta` of the teacher's aDDIM xvar (paper 0.75).
    pub xvar_frac: f64,
    /// aDDIM or DDIM teacher steps.
    #[serde(with = "sampler_kind_serde")]
    pub teacher_sampler: SamplerKind,
    /// `N0` of the annealed teacher step count (paper 64).
    pub teacher_steps_start: f64,
    /// `N1` (paper 1280).
    pub teacher_steps_end: f64,
    /// Iterations over which `N` grows from `N0` to `N1` (0: `N1` at once).
    pub anneal_iters: u64,
    /// `c` of the pseudo-Huber loss (paper 1e-4).
    pub huber_c: f64,
    /// `w(t)` of the loss (`snr1`, as Algorithm 1 is written, or
    /// `sqrt-snr1`, the v-space distance). Checkpoints from before this
    /// setting existed trained with `snr1`.
    #[serde(default, with = "loss_weight_name")]
    pub loss_weight: fewstep_core::training::LossWeight,
    /// Guidance scale of the CD teacher (1 = none).
    pub teacher_guidance: f64,
    /// The teacher checkpoint the student started from (and, for CD, the
    /// frozen teacher reloaded on `--resume`).
    pub init: String,
    /// Step of that checkpoint, checked on `--resume`.
    pub init_step: u64,
}

impl ConsistencyConfig {
    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.student_steps == 0 {
            bail!("--student-steps must be >= 1");
        }
        if !(self.xvar_frac.is_finite() && self.xvar_frac >= 0.0) {
            bail!("--xvar-frac must be >= 0");
        }
        if !(self.teacher_steps_start.is_finite()
            && self.teacher_steps_start >= 1.0
            && self.teacher_steps_end.is_finite()
            && self.teacher_steps_end >= 1.0)
        {
            bail!("--teacher-steps-start/-end must be >= 1");
        }
        if !(self.huber_c.is_finite() && self.huber_c >= 0.0) {
            bail!("--huber-c must be >= 0");
        }
        if !(self.teacher_guidance.is_finite() && self.teacher_guidance >= 0.0) {
            bail!("--teacher-guidance must be a finite number >= 0");
        }
        Ok(())
    }

    /// The annealed teacher step count of `fewstep-core`.
    pub fn anneal(&self) -> fewstep_core::training::TeacherAnneal {
        fewstep_core::training::TeacherAnneal {
            start: self.teacher_steps_start,
            end: self.teacher_steps_end,
            anneal_iters: self.anneal_iters,
        }
    }
}

/// Settings of `fewstep-train progressive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressiveConfig {
    /// Sampling steps of the first teacher (a diffusion model); the first
    /// student takes half of them.
    pub start_steps: u32,
    /// Student steps of the last stage.
    pub target_steps: u32,
    /// Optimiser steps per stage.
    pub stage_iters: u64,
    /// aDDIM or DDIM teacher steps.
    #[serde(with = "sampler_kind_serde")]
    pub teacher_sampler: SamplerKind,
    /// `eta` of the teacher's aDDIM xvar.
    pub xvar_frac: f64,
    /// Guidance scale of the teacher (1 = none).
    pub teacher_guidance: f64,
    /// The diffusion checkpoint of stage 0's teacher.
    pub init: String,
    /// Step of that checkpoint, checked on `--resume`.
    pub init_step: u64,
}

impl ProgressiveConfig {
    /// Rejects settings that cannot train: `start_steps = target_steps * 2^k`, `k >= 1`.
    pub fn validate(&self) -> Result<()> {
        if self.target_steps == 0 {
            bail!("--target-steps must be >= 1");
        }
        if self.stage_iters == 0 {
            bail!("--stage-steps must be >= 1");
        }
        if self.start_steps <= self.target_steps
            || !self.start_steps.is_multiple_of(self.target_steps)
            || !(self.start_steps / self.target_steps).is_power_of_two()
        {
            bail!(
                "--start-steps {} must be --target-steps {} times a power of two >= 2",
                self.start_steps,
                self.target_steps
            );
        }
        if !(self.xvar_frac.is_finite() && self.xvar_frac >= 0.0) {
            bail!("--xvar-frac must be >= 0");
        }
        if !(self.teacher_guidance.is_finite() && self.teacher_guidance >= 0.0) {
            bail!("--teacher-guidance must be a finite number >= 0");
        }
        Ok(())
    }

    /// Number of halvings.
    pub fn stages(&self) -> u32 {
        (self.start_steps / self.target_steps.max(1)).max(1).ilog2()
    }

    /// Total optimiser steps of all stages.
    pub fn total_iters(&self) -> u64 {
        self.stage_iters * u64::from(self.stages())
    }

    /// The stage that step `step` (steps done) belongs to; the last stage
    /// once all are done.
    pub fn stage(&self, step: u64) -> u32 {
        let s = step / self.stage_iters.max(1);
        (s.min(u64::from(self.stages().saturating_sub(1)))) as u32
    }

    /// Student steps of stage `stage` (half its teacher's).
    pub fn stage_student_steps(&self, stage: u32) -> u32 {
        (self.start_steps >> (stage + 1).min(31)).max(1)
    }
}

/// Stores core's [`fewstep_core::training::LossWeight`] by its name.
mod loss_weight_name {
    use fewstep_core::training::LossWeight;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(w: &LossWeight, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(w.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LossWeight, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
