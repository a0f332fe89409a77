//! The training commands of `fewstep-train` (diffusion, consistency,
//! progressive, bench) as library functions, and the loop, outputs and
//! preview grids they share.

use crate::algorithms::consistency::ConsistencyTrainer;
use crate::algorithms::progressive::ProgressiveTrainer;
use crate::algorithms::train::{Trainer, check_data};
use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint, StepLog, checkpoint_path};
use crate::config::{
    ConsistencyConfig, ConsistencyMode, ModelConfig, ProgressiveConfig, TrainConfig, TrainingMode,
    parse_sampler_kind, parse_schedule_arg,
};
use crate::data::{Dataset, PngOptions, load_data, resolve_data};
use crate::evaluation::plot;
use crate::network::model::UNet;
use crate::output::progress_bar;
use crate::sample;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use fewstep_core::Conditioning;
use fewstep_core::plan::SamplerKind;
use fewstep_core::training::{LossWeight, PAPER_HUBER_C, PAPER_XVAR_FRAC, TeacherAnneal};
use fewstep_core::{SamplingPlan, XVar};
use std::path::{Path, PathBuf};
use std::time::Instant;

// The export command's home is `export`; callers of the command API (the
// cross-crate chain test) reach it here too.
pub use crate::export::{export_checkpoint, load_ema_cpu};

/// Options of `fewstep-train diffusion`; as `clap::Args`, its flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffusionOptions {
    /// A directory with Fashion-MNIST style idx(.gz) files, or a folder of PNGs
    /// (class sub-folders give labels).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory: checkpoint, log.csv, loss.png, samples/.
    #[arg(long)]
    pub out: PathBuf,
    /// Network size: tiny, small or medium.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Total optimiser steps (on --resume: the new total).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Training settings (ignored on resume, except `steps`, which `--steps`
    /// sets).
    #[command(flatten)]
    pub train: TrainConfig,
    /// Condition on the dataset's labels (adds the null label for guidance).
    #[arg(long)]
    pub class_cond: bool,
    /// Continue the run in --out exactly where its checkpoint stopped.
    #[arg(long)]
    pub resume: bool,
    /// Overrides of the preset's network settings.
    #[command(flatten)]
    pub model_overrides: ModelOverrides,
    /// Use only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// PNG folder options.
    #[command(flatten)]
    pub png: PngOptions,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Settings that override a preset.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ModelOverrides {
    /// Noise schedule (a fewstep.schedule value).
    #[arg(long, value_parser = parse_schedule_arg)]
    pub schedule: Option<String>,
    /// Network output: v (default) or x.
    #[arg(long)]
    pub prediction: Option<String>,
    /// Dropout in the ResNet blocks (overrides the preset).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Channels of the first level (overrides the preset).
    #[arg(long)]
    pub base_channels: Option<usize>,
}

/// The model configuration of a new run.
pub fn new_model_config(
    preset: &str,
    data: &Dataset,
    class_cond: bool,
    o: &ModelOverrides,
) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::preset(preset, data.channels, data.height, data.width)?;
    if class_cond {
        if data.num_classes() == 0 {
            bail!(
                "--class-cond: the dataset has no labels (use class sub-folders or idx label files)"
            );
        }
        cfg.num_classes = data.num_classes();
    }
    if let Some(s) = &o.schedule {
        cfg.schedule = s.clone();
    }
    if let Some(p) = &o.prediction {
        cfg.prediction = p.clone();
    }
    if let Some(d) = o.dropout {
        cfg.dropout = d;
    }
    if let Some(b) = o.base_channels {
        cfg.base_channels = b;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs (or resumes) diffusion pretraining on backend `B`.
pub fn diffusion<B: AutodiffBackend>(opts: &DiffusionOptions, device: B::Device) -> Result<()> {
    let data = load_data(&opts.data, opts.png, opts.limit)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let ckpt_path = opts.out.join(CHECKPOINT_FILE);
    let mut trainer = if opts.resume {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        if !matches!(ckpt.meta.mode, TrainingMode::Diffusion) {
            bail!(
                "{} is a {} run: resume it with its own command",
                ckpt_path.display(),
                ckpt.meta.mode.describe()
            );
        }
        check_data(&ckpt.meta.model, &data)?;
        if ckpt.meta.data_source != data.source {
            eprintln!(
                "note: this run was trained on {}, resuming on {}",
                ckpt.meta.data_source, data.source
            );
        }
        let mut t = Trainer::<B>::from_checkpoint(ckpt, device)?;
        if let Some(s) = opts.steps {
            t.train.steps = s;
        }
        t
    } else {
        if ckpt_path.exists() {
            bail!(
                "{} already exists: pass --resume to continue it, or choose another --out",
                ckpt_path.display()
            );
        }
        let model_cfg =
            new_model_config(&opts.preset, &data, opts.class_cond, &opts.model_overrides)?;
        let mut train = opts.train.clone();
        if let Some(s) = opts.steps {
            train.steps = s;
        }
        Trainer::<B>::new(model_cfg, train, &data, device)?
    };
    let params = trainer.model.num_params();
    eprintln!(
        "fewstep-train diffusion: {} images {}x{}x{} from {}, {} classes, {params} parameters, step {} of {}",
        data.len(),
        data.channels,
        data.height,
        data.width,
        data.source,
        trainer.model_cfg.num_classes,
        trainer.step,
        trainer.train.steps
    );
    train_loop(&mut trainer, &data, &opts.out, opts.quiet, |t, d| t.step(d))?;
    Ok(())
}

/// The training loop of every command: steps until `trainer.train.steps`,
/// with a progress bar (loss, examples/s) and, every `sample_every` steps
/// and at the end, a checkpoint, CSV log, loss curve and sample grid.
/// `step` does one optimiser step of `trainer`.
pub fn train_loop<B: AutodiffBackend, S>(
    state: &mut S,
    data: &Dataset,
    out: &Path,
    quiet: bool,
    mut step: impl FnMut(&mut S, &Dataset) -> Result<StepLog>,
) -> Result<()>
where
    S: AsTrainer<B>,
{
    let total = state.trainer().train.steps;
    let bar = progress_bar(total, quiet)?;
    bar.set_position(state.trainer().step);
    let batch = state.trainer().train.batch as f64;
    let mut smooth: Option<f64> = None;
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    let mut ex_per_s = 0.0;
    while state.trainer().step < total {
        let t0 = Instant::now();
        let entry = step(state, data)?;
        let trainer = state.trainer_mut();
        trainer.train_seconds += t0.elapsed().as_secs_f64();
        window_steps += 1;
        let el = window_start.elapsed().as_secs_f64();
        if el >= 2.0 {
            ex_per_s = window_steps as f64 * batch / el;
            window_start = Instant::now();
            window_steps = 0;
        } else if ex_per_s == 0.0 {
            ex_per_s = window_steps as f64 * batch / el.max(1e-9);
        }
        let l = f64::from(entry.loss);
        let s = smooth.map_or(l, |s| 0.98 * s + 0.02 * l);
        smooth = Some(s);
        bar.set_position(trainer.step);
        bar.set_message(format!("loss {s:.4} | {ex_per_s:.1} ex/s"));
        if trainer.step % trainer.train.sample_every == 0 || trainer.step == total {
            save_outputs(trainer, out)?;
        }
    }
    bar.finish();
    let trainer = state.trainer();
    if trainer.step == total && trainer.log.is_empty() {
        save_outputs(trainer, out)?;
    }
    eprintln!(
        "done: step {} in {:.0} s of training; outputs in {}",
        trainer.step,
        trainer.train_seconds,
        out.display()
    );
    Ok(())
}

/// Access to the [`Trainer`] inside a run's state.
pub trait AsTrainer<B: AutodiffBackend> {
    /// The trainer.
    fn trainer(&self) -> &Trainer<B>;
    /// The trainer, mutably.
    fn trainer_mut(&mut self) -> &mut Trainer<B>;
}

impl<B: AutodiffBackend> AsTrainer<B> for Trainer<B> {
    fn trainer(&self) -> &Trainer<B> {
        self
    }
    fn trainer_mut(&mut self) -> &mut Trainer<B> {
        self
    }
}

impl<B: AutodiffBackend> AsTrainer<B> for ConsistencyTrainer<B> {
    fn trainer(&self) -> &Trainer<B> {
        &self.trainer
    }
    fn trainer_mut(&mut self) -> &mut Trainer<B> {
        &mut self.trainer
    }
}

impl<B: AutodiffBackend> AsTrainer<B> for ProgressiveTrainer<B> {
    fn trainer(&self) -> &Trainer<B> {
        &self.trainer
    }
    fn trainer_mut(&mut self) -> &mut Trainer<B> {
        &mut self.trainer
    }
}

/// Checkpoint, CSV log, loss curve and a sample grid of the EMA weights.
pub fn save_outputs<B: AutodiffBackend>(trainer: &Trainer<B>, out: &Path) -> Result<()> {
    trainer.checkpoint()?.save(&out.join(CHECKPOINT_FILE))?;
    plot::write_csv(&out.join("log.csv"), &trainer.log)?;
    plot::write_loss_curve(&out.join("loss.png"), &trainer.log)?;
    let samples_dir = out.join("samples");
    std::fs::create_dir_all(&samples_dir)
        .with_context(|| format!("cannot create {}", samples_dir.display()))?;
    let plan = preview_plan(&trainer.mode, &trainer.train, trainer.step)?;
    let xvar = trainer
        .measured_xvar()
        .map_or(XVar::Analytic, |x| XVar::Table(&x.values));
    let grid = sample_grid(
        &trainer.ema,
        &trainer.model_cfg,
        &trainer.train,
        plan,
        xvar,
        &trainer.device,
    )?;
    let name = samples_dir.join(format!("step_{:07}.png", trainer.step));
    let cfg = &trainer.model_cfg;
    sample::write_grid(&name, &grid.0, cfg.channels, cfg.height, cfg.width, grid.1)?;
    std::fs::copy(&name, out.join("samples.png"))
        .with_context(|| format!("cannot copy {}", name.display()))?;
    Ok(())
}

/// How a run's preview grid samples: `sample_steps` aDDIM steps for a
/// diffusion model, the student's `T` DDIM steps (Algorithm 2) for a
/// multistep consistency or progressively distilled model.
pub fn preview_plan(mode: &TrainingMode, train: &TrainConfig, step: u64) -> Result<SamplingPlan> {
    match mode.student_steps(step) {
        0 => SamplingPlan::new(train.sample_steps, SamplerKind::Addim),
        t => SamplingPlan::multistep_consistency(t),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Samples the preview grid (fixed seed, so grids of successive checkpoints
/// are comparable): class `i % K` in column `i % K` when class-conditional;
/// aDDIM takes `xvar` (the model's measured table when it has one).
pub fn sample_grid<B: Backend>(
    ema: &UNet<B>,
    cfg: &ModelConfig,
    train: &TrainConfig,
    plan: SamplingPlan,
    xvar: XVar<'_>,
    device: &B::Device,
) -> Result<(Vec<f32>, usize)> {
    let n = train.sample_count;
    let k = cfg.num_classes;
    let labels: Option<Vec<i64>> = (k > 0).then(|| (0..n).map(|i| (i % k) as i64).collect());
    let cols = if k > 0 && k <= 16 {
        k
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    let conditioning = labels
        .as_deref()
        .map_or(Conditioning::None, Conditioning::PerImage);
    let images = sample::sample_with_xvar(ema, cfg, n, plan, xvar, 1234, conditioning, device)?;
    Ok((images, cols))
}

/// `fewstep-train bench`: training throughput (examples/s) of a preset on
/// `data`, over `steps` timed steps after `warmup` untimed ones. Nothing is
/// written. Returns examples/s.
pub fn bench<B: AutodiffBackend>(
    data: &Dataset,
    preset: &str,
    batch: usize,
    warmup: u64,
    steps: u64,
    device: B::Device,
) -> Result<f64> {
    let cfg = new_model_config(preset, data, false, &ModelOverrides::default())?;
    let train = TrainConfig {
        batch,
        steps: warmup + steps,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::<B>::new(cfg, train, data, device)?;
    for _ in 0..warmup {
        trainer.step(data)?;
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        trainer.step(data)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((steps as f64 * batch as f64) / secs)
}

/// Options shared by `consistency` and `progressive` (their common flags).
#[derive(Debug, Clone, clap::Args)]
pub struct DistillOptions {
    /// The pretrained diffusion run (directory or checkpoint file); the
    /// student starts from its EMA weights.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Run directory: checkpoint, log.csv, loss.png, samples/.
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset (default: the one the teacher was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// PNG folder options.
    #[command(flatten)]
    pub png: PngOptions,
    /// Examples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 100)]
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
    /// Probability of training a class-conditional student on the null label.
    #[arg(long, default_value_t = TrainConfig::default().label_dropout)]
    pub label_dropout: f64,
    /// Dropout in the ResNet blocks (default: the teacher's).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Guidance scale of the teacher (1 = none; class-conditional teachers).
    #[arg(long, default_value_t = 1.0)]
    pub teacher_guidance: f64,
    /// The teacher's ODE step: addim (xvar = eta ||x_teacher - x||^2 / d) or ddim.
    #[arg(long, value_parser = parse_sampler_kind, default_value = "addim")]
    pub teacher_sampler: SamplerKind,
    /// eta of the teacher's aDDIM xvar.
    #[arg(long, default_value_t = PAPER_XVAR_FRAC)]
    pub xvar_frac: f64,
    /// Continue the run in --out exactly where its checkpoint stopped.
    #[arg(long)]
    pub resume: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint, loss curve and sample grid every K steps.
    #[arg(long, default_value_t = TrainConfig::default().sample_every)]
    pub sample_every: u64,
    /// Images in the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_count)]
    pub sample_count: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl DistillOptions {
    /// The training settings of a new run of `steps` optimiser steps
    /// (default: [`TrainConfig::default`]'s). The distillation flags have
    /// their own defaults (`--lr` 1e-4, `--warmup` 100) and no
    /// `--sample-steps`: students sample with their own step count.
    pub fn train_config(&self, steps: Option<u64>) -> TrainConfig {
        TrainConfig {
            steps: steps.unwrap_or(TrainConfig::default().steps),
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            ema_decay: self.ema_decay,
            label_dropout: self.label_dropout,
            seed: self.seed,
            sample_every: self.sample_every,
            sample_steps: TrainConfig::default().sample_steps,
            sample_count: self.sample_count,
        }
    }
}

/// Options of `fewstep-train consistency`: multistep consistency training
/// or distillation (Algorithm 1).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsistencyOptions {
    /// ct (consistency training) or cd (consistency distillation).
    #[arg(long, value_enum)]
    pub mode: ConsistencyMode,
    /// T: the student's sampling steps.
    #[arg(long)]
    pub student_steps: u32,
    /// Total optimiser steps (on --resume: the new total).
    #[arg(long)]
    pub steps: Option<u64>,
    /// N0 of the annealed teacher step count (paper 64).
    #[arg(long, default_value_t = TeacherAnneal::PAPER.start)]
    pub teacher_steps_start: f64,
    /// N1 of the annealed teacher step count (paper 1280).
    #[arg(long, default_value_t = TeacherAnneal::PAPER.end)]
    pub teacher_steps_end: f64,
    /// Iterations of the annealing (default: --steps / 2, as the paper:
    /// 64 -> 1280 over 100k of 200k iterations).
    #[arg(long)]
    pub anneal_iters: Option<u64>,
    /// A fixed teacher step count instead of the annealing (paper Table 2).
    #[arg(long)]
    pub teacher_steps_fixed: Option<f64>,
    /// c of the pseudo-Huber loss.
    #[arg(long, default_value_t = PAPER_HUBER_C)]
    pub huber_c: f64,
    /// w(t) of the loss: snr1 (SNR + 1, as Algorithm 1 is written) or
    /// sqrt-snr1 (sqrt(SNR + 1): the v-space distance).
    #[arg(long, default_value_t = LossWeight::default())]
    pub loss_weight: LossWeight,
    /// The flags shared with `progressive`.
    #[command(flatten)]
    pub distill: DistillOptions,
}

impl ConsistencyOptions {
    /// The consistency settings of a new run (`init` and `init_step` are
    /// filled in from `--init` when the run starts): `--teacher-steps-fixed`
    /// replaces the annealing, whose length defaults to half of `--steps`.
    pub fn config(&self) -> ConsistencyConfig {
        let (start, end, anneal_iters) = match self.teacher_steps_fixed {
            Some(n) => (n, n, 0),
            None => (
                self.teacher_steps_start,
                self.teacher_steps_end,
                self.anneal_iters.unwrap_or(TeacherAnneal::default_iters(
                    self.distill.train_config(self.steps).steps,
                )),
            ),
        };
        ConsistencyConfig {
            mode: self.mode,
            student_steps: self.student_steps,
            xvar_frac: self.distill.xvar_frac,
            teacher_sampler: self.distill.teacher_sampler,
            teacher_steps_start: start,
            teacher_steps_end: end,
            anneal_iters,
            huber_c: self.huber_c,
            loss_weight: self.loss_weight,
            teacher_guidance: self.distill.teacher_guidance,
            init: String::new(),
            init_step: 0,
        }
    }
}

/// Options of `fewstep-train progressive`: progressive distillation.
#[derive(Debug, Clone, clap::Args)]
pub struct ProgressiveOptions {
    /// Student steps of the last stage.
    #[arg(long)]
    pub target_steps: u32,
    /// Sampling steps of the first teacher (target times a power of two).
    #[arg(long, default_value_t = 64)]
    pub start_steps: u32,
    /// Optimiser steps per stage.
    #[arg(long, default_value_t = 1000)]
    pub stage_steps: u64,
    /// The flags shared with `consistency`.
    #[command(flatten)]
    pub distill: DistillOptions,
}

impl ProgressiveOptions {
    /// The progressive settings of a new run (`init` and `init_step` are
    /// filled in from `--init` when the run starts).
    pub fn config(&self) -> ProgressiveConfig {
        ProgressiveConfig {
            start_steps: self.start_steps,
            target_steps: self.target_steps,
            stage_iters: self.stage_steps,
            teacher_sampler: self.distill.teacher_sampler,
            xvar_frac: self.distill.xvar_frac,
            teacher_guidance: self.distill.teacher_guidance,
            init: String::new(),
            init_step: 0,
        }
    }
}

/// Loads `--data` (or the teacher's data) for a distillation run.
fn distill_data(opts: &DistillOptions, teacher: &Checkpoint, what: &str) -> Result<Dataset> {
    let path = resolve_data(opts.data.as_deref(), teacher, what)?;
    let data = load_data(&path, opts.png, opts.limit)?;
    check_data(&teacher.meta.model, &data)?;
    Ok(data)
}

/// The checkpoint to resume from, or an error if `--out` already holds a run
/// and `--resume` was not given.
fn existing_run(opts: &DistillOptions) -> Result<Option<Checkpoint>> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let path = opts.out.join(CHECKPOINT_FILE);
    if opts.resume {
        return Ok(Some(Checkpoint::load(&path)?));
    }
    if path.exists() {
        bail!(
            "{} already exists: pass --resume to continue it, or choose another --out",
            path.display()
        );
    }
    Ok(None)
}

fn load_init(opts: &DistillOptions) -> Result<(Checkpoint, String)> {
    let init = opts
        .init
        .as_ref()
        .context("--init is required: the diffusion run (or checkpoint) to start from")?;
    let file = checkpoint_path(init);
    let ckpt = Checkpoint::load(init).context("--init")?;
    let abs = std::fs::canonicalize(&file).unwrap_or(file);
    Ok((ckpt, abs.display().to_string()))
}

/// `fewstep-train consistency`: multistep consistency training (CT) or
/// distillation (CD) from a diffusion checkpoint (Algorithm 1).
pub fn consistency<B: AutodiffBackend>(
    consistency: &ConsistencyOptions,
    device: B::Device,
) -> Result<()> {
    let ccfg = consistency.config();
    ccfg.validate()?;
    let opts = &consistency.distill;
    let (run, data) = match existing_run(opts)? {
        Some(ckpt) => {
            let TrainingMode::Consistency(c) = &ckpt.meta.mode else {
                bail!(
                    "{} is a {} run, not a consistency run",
                    opts.out.display(),
                    ckpt.meta.mode.describe()
                );
            };
            let init = Checkpoint::load(Path::new(&c.init))
                .with_context(|| format!("loading the run's teacher {}", c.init))?;
            let data = distill_data(opts, &init, "--resume")?;
            let mut run = ConsistencyTrainer::<B>::from_checkpoint(ckpt, device)?;
            if let Some(s) = consistency.steps {
                run.trainer.train.steps = s;
            }
            (run, data)
        }
        None => {
            let (init, init_path) = load_init(opts)?;
            let data = distill_data(opts, &init, "--init")?;
            let ccfg = ConsistencyConfig {
                init: init_path,
                init_step: init.meta.step,
                ..ccfg
            };
            let train = opts.train_config(consistency.steps);
            let run =
                ConsistencyTrainer::<B>::new(&init, ccfg, train, &data, opts.dropout, device)?;
            (run, data)
        }
    };
    let mut run = run;
    let tr = &run.trainer;
    eprintln!(
        "fewstep-train consistency: {} images from {}, {} parameters, {}, step {} of {}",
        data.len(),
        data.source,
        tr.model.num_params(),
        tr.mode.describe(),
        tr.step,
        tr.train.steps
    );
    train_loop(&mut run, &data, &opts.out, opts.quiet, |r, d| r.step(d))
}

/// `fewstep-train progressive`: progressive distillation from a diffusion
/// checkpoint down to `target_steps`.
pub fn progressive<B: AutodiffBackend>(
    progressive: &ProgressiveOptions,
    device: B::Device,
) -> Result<()> {
    let pcfg = progressive.config();
    pcfg.validate()?;
    let opts = &progressive.distill;
    let (mut run, data) = match existing_run(opts)? {
        Some(ckpt) => {
            let TrainingMode::Progressive(p) = &ckpt.meta.mode else {
                bail!(
                    "{} is a {} run, not a progressive run",
                    opts.out.display(),
                    ckpt.meta.mode.describe()
                );
            };
            let init = Checkpoint::load(Path::new(&p.init))
                .with_context(|| format!("loading the run's teacher {}", p.init))?;
            let data = distill_data(opts, &init, "--resume")?;
            (
                ProgressiveTrainer::<B>::from_checkpoint(ckpt, &opts.out, device)?,
                data,
            )
        }
        None => {
            let (init, init_path) = load_init(opts)?;
            let data = distill_data(opts, &init, "--init")?;
            let pcfg = ProgressiveConfig {
                init: init_path,
                init_step: init.meta.step,
                ..pcfg
            };
            let run = ProgressiveTrainer::<B>::new(
                &init,
                pcfg,
                opts.train_config(None),
                &data,
                &opts.out,
                device,
            )?;
            (run, data)
        }
    };
    let tr = &run.trainer;
    eprintln!(
        "fewstep-train progressive: {} images from {}, {} parameters, {}, step {} of {}",
        data.len(),
        data.source,
        tr.model.num_params(),
        tr.mode.describe(),
        tr.step,
        tr.train.steps
    );
    train_loop(&mut run, &data, &opts.out, opts.quiet, |r, d| r.step(d))
}
