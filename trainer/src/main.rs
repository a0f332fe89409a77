//! `fewstep-train`: diffusion pretraining, multistep consistency training and
//! distillation, progressive distillation, the aDDIM xvar table, ONNX export.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fewstep_core::{SamplerChoice, SamplerKind};
use fewstep_trainer::algorithms::xvar::XvarOptions;
use fewstep_trainer::config::{
    ConsistencyConfig, ConsistencyMode, ProgressiveConfig, TrainConfig, parse_schedule_arg,
};
use fewstep_trainer::data::PngOptions;
use fewstep_trainer::evaluation::classifier::ClassifierOptions;
use fewstep_trainer::evaluation::eval::EvalOptions;
use fewstep_trainer::run::{self, DiffusionOptions, DistillOptions, ModelOverrides};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "fewstep-train",
    version,
    about = "Train fewstep diffusion models and export them to ONNX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Diffusion pretraining (the teacher of multistep consistency models).
    Diffusion(Box<DiffusionArgs>),
    /// Multistep consistency training (ct) or distillation (cd) from a
    /// diffusion checkpoint (Algorithm 1).
    Consistency(Box<ConsistencyArgs>),
    /// Progressive distillation from a diffusion checkpoint (the baseline).
    Progressive(Box<ProgressiveArgs>),
    /// Measure a diffusion checkpoint's empirical aDDIM xvar table and store
    /// it in the checkpoint (exported as fewstep.addim_xvar).
    Xvar(XvarArgs),
    /// Export a run's EMA weights as a fewstep ONNX model.
    Export(ExportArgs),
    /// Measure training throughput (examples/s); writes nothing.
    Bench(BenchArgs),
    /// Train the small CNN classifier whose features `eval` scores samples
    /// with (idx: train-*/t10k-* split; PNG folder: every 10th image tests).
    Classifier(ClassifierArgs),
    /// Quality benchmark of an exported model: generate N samples through
    /// the runtime, KID/FID against the test split, class histogram.
    Eval(Box<EvalArgs>),
    /// Turn `eval --results` JSON lines into docs/RESULTS.md's tables,
    /// target checks and quality-vs-latency plots.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The JSON-lines file of `eval --results`.
    #[arg(long)]
    results: PathBuf,
    /// The markdown file; only its generated part is replaced.
    #[arg(long)]
    out: PathBuf,
    /// Folder of the plots (quality-latency-DATASET.png).
    #[arg(long)]
    plots: PathBuf,
}

fn report(a: ReportArgs) -> Result<()> {
    use fewstep_trainer::evaluation::report;
    let rows = report::read_records(&a.results)?;
    std::fs::create_dir_all(&a.plots)
        .with_context(|| format!("cannot create {}", a.plots.display()))?;
    let doc_dir = a
        .out
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let generated = report::render(&rows, &a.plots, &doc_dir)?;
    let old = std::fs::read_to_string(&a.out).ok();
    let doc = report::splice(old.as_deref(), &generated);
    fewstep_trainer::checkpoint::write_atomic(&a.out, doc.as_bytes())?;
    println!("wrote {} ({} rows)", a.out.display(), rows.len());
    Ok(())
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Dataset (as for `diffusion`).
    #[arg(long)]
    data: PathBuf,
    /// Network size.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
}

/// Calls the generic `run` function `f::<B>(args.., device)` with the
/// training backend `B` that `--backend` names (the default device).
macro_rules! on_backend {
    ($backend:expr, $($f:ident)::+($($arg:expr),*)) => {
        match $backend {
            BackendArg::Ndarray => {
                $($f)::+::<fewstep_trainer::CpuTrain>($($arg,)* Default::default())
            }
            #[cfg(feature = "flex")]
            BackendArg::Flex => {
                $($f)::+::<fewstep_trainer::FlexTrain>($($arg,)* Default::default())
            }
            #[cfg(not(feature = "flex"))]
            BackendArg::Flex => Err(anyhow::anyhow!(
                "this build has no flex backend: rebuild with --features flex"
            )),
            #[cfg(feature = "tch")]
            BackendArg::Tch => {
                $($f)::+::<fewstep_trainer::TchTrain>($($arg,)* Default::default())
            }
            #[cfg(not(feature = "tch"))]
            BackendArg::Tch => Err(anyhow::anyhow!(
                "this build has no LibTorch backend: rebuild with --features tch \
                 (docs/PERFORMANCE.md says how)"
            )),
            #[cfg(feature = "cuda")]
            BackendArg::Cuda => {
                $($f)::+::<fewstep_trainer::CudaTrain>($($arg,)* Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            BackendArg::Cuda => Err(anyhow::anyhow!(
                "this build has no CUDA backend: rebuild with --features cuda"
            )),
        }
    };
}

fn bench(a: BenchArgs) -> Result<()> {
    let data = fewstep_trainer::data::load_data(&a.data, PngOptions::default(), Some(1024))?;
    let rate = on_backend!(
        a.backend,
        run::bench(&data, &a.preset, a.batch, a.warmup, a.steps)
    )?;
    println!(
        "backend {:?}{} preset {} batch {} {}x{}x{}: {rate:.2} examples/s",
        a.backend,
        if cfg!(feature = "openblas") {
            " (openblas)"
        } else {
            ""
        },
        a.preset,
        a.batch,
        data.channels,
        data.height,
        data.width
    );
    Ok(())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BackendArg {
    /// Burn's `flex` CPU backend: the default, fastest CPU path measured
    /// (docs/PERFORMANCE.md).
    Flex,
    /// Burn's ndarray CPU backend (with OpenBLAS when built with
    /// `--features openblas`); `cpu` is an alias.
    #[value(alias = "cpu")]
    Ndarray,
    /// CUDA (build with `--features cuda`).
    Cuda,
    /// PyTorch's CPU kernels through Burn's LibTorch backend (build with
    /// `--features tch`).
    Tch,
}

#[derive(Args, Debug)]
struct DiffusionArgs {
    /// A directory with Fashion-MNIST style idx(.gz) files, or a folder of PNGs
    /// (class sub-folders give labels).
    #[arg(long)]
    data: PathBuf,
    /// Run directory: checkpoint, log.csv, loss.png, samples/.
    #[arg(long)]
    out: PathBuf,
    /// Network size: tiny, small or medium.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Total optimiser steps (on --resume: the new total).
    #[arg(long)]
    steps: Option<u64>,
    /// Examples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = TrainConfig::default().warmup)]
    warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = TrainConfig::default().grad_clip)]
    grad_clip: f64,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = TrainConfig::default().ema_decay)]
    ema_decay: f64,
    /// Condition on the dataset's labels (adds the null label for guidance).
    #[arg(long)]
    class_cond: bool,
    /// Probability of training a class-conditional model on the null label.
    #[arg(long, default_value_t = TrainConfig::default().label_dropout)]
    label_dropout: f64,
    /// Continue the run in --out exactly where its checkpoint stopped.
    #[arg(long)]
    resume: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint, loss curve and sample grid every K steps.
    #[arg(long, default_value_t = TrainConfig::default().sample_every)]
    sample_every: u64,
    /// aDDIM steps of the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_steps)]
    sample_steps: u32,
    /// Images in the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_count)]
    sample_count: usize,
    /// Noise schedule (a fewstep.schedule value).
    #[arg(long, value_parser = parse_schedule_arg)]
    schedule: Option<String>,
    /// Network output: v (default) or x.
    #[arg(long)]
    prediction: Option<String>,
    /// Dropout in the ResNet blocks (overrides the preset).
    #[arg(long)]
    dropout: Option<f64>,
    /// Channels of the first level (overrides the preset).
    #[arg(long)]
    base_channels: Option<usize>,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// A run directory or a checkpoint file.
    #[arg(long)]
    ckpt: PathBuf,
    /// The .onnx file to write.
    #[arg(long)]
    out: PathBuf,
    /// Store weights as f16 (computed in f32).
    #[arg(long)]
    f16: bool,
}

fn diffusion(a: DiffusionArgs) -> Result<()> {
    let opts = DiffusionOptions {
        data: a.data,
        out: a.out,
        preset: a.preset,
        class_cond: a.class_cond,
        resume: a.resume,
        steps: a.steps,
        limit: a.limit,
        png: PngOptions {
            size: a.size,
            channels: a.channels,
        },
        model_overrides: ModelOverrides {
            schedule: a.schedule,
            prediction: a.prediction,
            dropout: a.dropout,
            base_channels: a.base_channels,
        },
        train: TrainConfig {
            steps: TrainConfig::default().steps,
            batch: a.batch,
            lr: a.lr,
            warmup: a.warmup,
            weight_decay: a.weight_decay,
            grad_clip: a.grad_clip,
            ema_decay: a.ema_decay,
            label_dropout: a.label_dropout,
            seed: a.seed,
            sample_every: a.sample_every,
            sample_steps: a.sample_steps,
            sample_count: a.sample_count,
        },
        quiet: a.quiet,
    };
    on_backend!(a.backend, run::diffusion(&opts))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ModeArg {
    /// Consistency training (x_teacher = x).
    Ct,
    /// Consistency distillation (a frozen diffusion teacher).
    Cd,
}

/// `--teacher-sampler`: core's one spelling (`addim`, `ddim`).
fn parse_sampler_kind(s: &str) -> Result<SamplerKind, String> {
    s.parse()
        .map_err(|_| format!("unknown sampler {s:?} (expected addim or ddim)"))
}

/// `--sampler`: core's one spelling (`auto`, `ddim`, `addim`).
fn parse_sampler_choice(s: &str) -> Result<SamplerChoice, String> {
    s.parse()
        .map_err(|e: fewstep_core::PlanError| e.to_string())
}

/// Flags shared by `consistency` and `progressive`.
#[derive(Args, Debug)]
struct DistillArgs {
    /// The pretrained diffusion run (directory or checkpoint file); the
    /// student starts from its EMA weights.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Run directory: checkpoint, log.csv, loss.png, samples/.
    #[arg(long)]
    out: PathBuf,
    /// Dataset (default: the one the teacher was trained on).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Examples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = TrainConfig::default().grad_clip)]
    grad_clip: f64,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = TrainConfig::default().ema_decay)]
    ema_decay: f64,
    /// Probability of training a class-conditional student on the null label.
    #[arg(long, default_value_t = TrainConfig::default().label_dropout)]
    label_dropout: f64,
    /// Dropout in the ResNet blocks (default: the teacher's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Guidance scale of the teacher (1 = none; class-conditional teachers).
    #[arg(long, default_value_t = 1.0)]
    teacher_guidance: f64,
    /// The teacher's ODE step: addim (xvar = eta ||x_teacher - x||^2 / d) or ddim.
    #[arg(long, value_parser = parse_sampler_kind, default_value = "addim")]
    teacher_sampler: SamplerKind,
    /// eta of the teacher's aDDIM xvar.
    #[arg(long, default_value_t = fewstep_core::training::PAPER_XVAR_FRAC)]
    xvar_frac: f64,
    /// Continue the run in --out exactly where its checkpoint stopped.
    #[arg(long)]
    resume: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint, loss curve and sample grid every K steps.
    #[arg(long, default_value_t = TrainConfig::default().sample_every)]
    sample_every: u64,
    /// Images in the sample grid.
    #[arg(long, default_value_t = TrainConfig::default().sample_count)]
    sample_count: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl DistillArgs {
    fn options(&self, steps: Option<u64>) -> DistillOptions {
        DistillOptions {
            init: self.init.clone(),
            out: self.out.clone(),
            data: self.data.clone(),
            limit: self.limit,
            png: PngOptions {
                size: self.size,
                channels: self.channels,
            },
            resume: self.resume,
            steps,
            dropout: self.dropout,
            train: TrainConfig {
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
                // Distilled students sample with their own step count.
                sample_steps: TrainConfig::default().sample_steps,
                sample_count: self.sample_count,
            },
            quiet: self.quiet,
        }
    }
}

#[derive(Args, Debug)]
struct ConsistencyArgs {
    /// ct (consistency training) or cd (consistency distillation).
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// T: the student's sampling steps.
    #[arg(long)]
    student_steps: u32,
    /// Total optimiser steps (on --resume: the new total).
    #[arg(long)]
    steps: Option<u64>,
    /// N0 of the annealed teacher step count (paper 64).
    #[arg(long, default_value_t = fewstep_core::training::TeacherAnneal::PAPER.start)]
    teacher_steps_start: f64,
    /// N1 of the annealed teacher step count (paper 1280).
    #[arg(long, default_value_t = fewstep_core::training::TeacherAnneal::PAPER.end)]
    teacher_steps_end: f64,
    /// Iterations of the annealing (default: --steps / 2, as the paper:
    /// 64 -> 1280 over 100k of 200k iterations).
    #[arg(long)]
    anneal_iters: Option<u64>,
    /// A fixed teacher step count instead of the annealing (paper Table 2).
    #[arg(long)]
    teacher_steps_fixed: Option<f64>,
    /// c of the pseudo-Huber loss.
    #[arg(long, default_value_t = fewstep_core::training::PAPER_HUBER_C)]
    huber_c: f64,
    /// w(t) of the loss: snr1 (SNR + 1, as Algorithm 1 is written) or
    /// sqrt-snr1 (sqrt(SNR + 1): the v-space distance).
    #[arg(long, default_value_t = fewstep_core::training::LossWeight::default())]
    loss_weight: fewstep_core::training::LossWeight,
    #[command(flatten)]
    common: DistillArgs,
}

#[derive(Args, Debug)]
struct ProgressiveArgs {
    /// Student steps of the last stage.
    #[arg(long)]
    target_steps: u32,
    /// Sampling steps of the first teacher (target times a power of two).
    #[arg(long, default_value_t = 64)]
    start_steps: u32,
    /// Optimiser steps per stage.
    #[arg(long, default_value_t = 1000)]
    stage_steps: u64,
    #[command(flatten)]
    common: DistillArgs,
}

#[derive(Args, Debug)]
struct XvarArgs {
    /// A diffusion run directory or checkpoint file (updated in place).
    #[arg(long)]
    ckpt: PathBuf,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// eta: the table holds eta * E||x_hat - x||^2 / d.
    #[arg(long, default_value_t = fewstep_core::training::PAPER_XVAR_FRAC)]
    xvar_frac: f64,
    /// Table entries, at t = i / (K - 1).
    #[arg(long, default_value_t = 33)]
    points: usize,
    /// Data examples per entry.
    #[arg(long, default_value_t = 256)]
    examples: usize,
    /// Network evaluations per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of the example choice and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = 3)]
    channels: usize,
}

fn consistency(a: ConsistencyArgs) -> Result<()> {
    let opts = a.common.options(a.steps);
    let (start, end, anneal_iters) = match a.teacher_steps_fixed {
        Some(n) => (n, n, 0),
        None => (
            a.teacher_steps_start,
            a.teacher_steps_end,
            a.anneal_iters
                .unwrap_or(fewstep_core::training::TeacherAnneal::default_iters(
                    opts.train.steps,
                )),
        ),
    };
    let ccfg = ConsistencyConfig {
        mode: match a.mode {
            ModeArg::Ct => ConsistencyMode::Ct,
            ModeArg::Cd => ConsistencyMode::Cd,
        },
        student_steps: a.student_steps,
        xvar_frac: a.common.xvar_frac,
        teacher_sampler: a.common.teacher_sampler,
        teacher_steps_start: start,
        teacher_steps_end: end,
        anneal_iters,
        huber_c: a.huber_c,
        loss_weight: a.loss_weight,
        teacher_guidance: a.common.teacher_guidance,
        init: String::new(),
        init_step: 0,
    };
    on_backend!(a.common.backend, run::consistency(&opts, ccfg))
}

fn progressive(a: ProgressiveArgs) -> Result<()> {
    let opts = a.common.options(None);
    let pcfg = ProgressiveConfig {
        start_steps: a.start_steps,
        target_steps: a.target_steps,
        stage_iters: a.stage_steps,
        teacher_sampler: a.common.teacher_sampler,
        xvar_frac: a.common.xvar_frac,
        teacher_guidance: a.common.teacher_guidance,
        init: String::new(),
        init_step: 0,
    };
    on_backend!(a.common.backend, run::progressive(&opts, pcfg))
}

fn xvar(a: XvarArgs) -> Result<()> {
    let table = fewstep_trainer::algorithms::xvar::measure_and_store(
        &a.ckpt,
        a.data.as_deref(),
        a.limit,
        PngOptions {
            size: a.size,
            channels: a.channels,
        },
        XvarOptions {
            points: a.points,
            examples: a.examples,
            xvar_frac: a.xvar_frac,
            batch: a.batch,
            seed: a.seed,
        },
    )?;
    let text: Vec<String> = table.iter().map(|v| format!("{v:.3e}")).collect();
    eprintln!(
        "stored a {}-point aDDIM xvar table in {}: {}",
        table.len(),
        a.ckpt.display(),
        text.join(" ")
    );
    Ok(())
}

#[derive(Args, Debug)]
struct ClassifierArgs {
    /// An idx directory (train-* and t10k-* files) or a folder of PNGs in
    /// class sub-folders.
    #[arg(long)]
    data: PathBuf,
    /// Run directory: classifier.fscl and classifier.json.
    #[arg(long)]
    out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = 3)]
    image_channels: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn classifier(a: ClassifierArgs) -> Result<()> {
    let opts = ClassifierOptions {
        data: a.data,
        out: a.out,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        limit: a.limit,
        png: PngOptions {
            size: a.image_size,
            channels: a.image_channels,
        },
        quiet: a.quiet,
    };
    let meta = on_backend!(
        a.backend,
        fewstep_trainer::evaluation::classifier::train(&opts)
    )?;
    println!(
        "test accuracy: {:.2}% ({} images)",
        100.0 * meta.test_accuracy,
        meta.test_images
    );
    Ok(())
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The fewstep ONNX model to benchmark.
    #[arg(long)]
    model: PathBuf,
    /// The classifier run directory (or its classifier.fscl).
    #[arg(long)]
    classifier: PathBuf,
    /// The dataset whose test split is the reference (as for `classifier`).
    #[arg(long)]
    data: PathBuf,
    /// Samples to generate.
    #[arg(long)]
    n: usize,
    /// Sampling steps (default: the model's own).
    #[arg(long)]
    steps: Option<u32>,
    /// Sampler: auto (the model's default: T DDIM steps for a consistency model,
    /// aDDIM for a diffusion model), ddim or addim.
    #[arg(long, value_parser = parse_sampler_choice, default_value = "auto")]
    sampler: SamplerChoice,
    /// Seed of the noise (image k gets noise k at any --batch), the KID
    /// subsets and the floor's images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Runtime threads (default: all available).
    #[arg(long)]
    threads: Option<usize>,
    /// Images per runtime call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Name of the result row (default: model file stem, steps, sampler).
    #[arg(long)]
    name: Option<String>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Write a PNG grid of the first --grid-count samples.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Samples in the grid.
    #[arg(long, default_value_t = 100)]
    grid_count: usize,
    /// Also score N real training images against the same reference (the
    /// real-vs-real floor of both metrics).
    #[arg(long)]
    floor: bool,
    /// Backend of the classifier.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Fails early (before minutes of work) when an output's folder is missing.
fn check_parent(path: &std::path::Path, flag: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        anyhow::bail!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    if let Some(r) = &a.results {
        check_parent(r, "--results")?;
    }
    if let Some(g) = &a.grid {
        check_parent(g, "--grid")?;
    }
    let opts = EvalOptions {
        model: a.model,
        classifier: a.classifier,
        data: a.data,
        n: a.n,
        steps: a.steps,
        sampler: a.sampler,
        seed: a.seed,
        threads: a.threads,
        batch: a.batch,
        name: a.name,
        grid: a.grid,
        grid_count: a.grid_count,
        floor: a.floor,
        quiet: a.quiet,
    };
    let record = on_backend!(
        a.backend,
        fewstep_trainer::evaluation::eval::evaluate(&opts)
    )?;
    println!(
        "{}",
        fewstep_trainer::evaluation::eval::format_report(&record)
    );
    if let Some(r) = &a.results {
        fewstep_trainer::evaluation::eval::append_result(r, &record)?;
        eprintln!("appended to {}", r.display());
    }
    Ok(())
}

/// A clap error on one line (`error: ... [possible values: ...]`), without
/// the usage block: the CLI's errors are all one line.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line);
        }
    }
    parts.join(" ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            eprintln!("{}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Diffusion(a) => diffusion(*a),
        Command::Consistency(a) => consistency(*a),
        Command::Progressive(a) => progressive(*a),
        Command::Xvar(a) => xvar(a),
        Command::Export(a) => fewstep_trainer::export::export_checkpoint(&a.ckpt, &a.out, a.f16)
            .map(|size| {
                eprintln!("wrote {} ({size} bytes)", a.out.display());
            }),
        Command::Bench(a) => bench(a),
        Command::Classifier(a) => classifier(a),
        Command::Eval(a) => eval(*a),
        Command::Report(a) => report(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
