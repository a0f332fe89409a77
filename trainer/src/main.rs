//! `fewstep-train`: diffusion pretraining and ONNX export.

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fewstep_trainer::config::{TrainConfig, parse_schedule_arg};
use fewstep_trainer::data::PngOptions;
use fewstep_trainer::run::{self, DiffusionOptions, ModelOverrides};
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
    /// Export a run's EMA weights as a fewstep ONNX model.
    Export(ExportArgs),
    /// Measure training throughput (examples/s); writes nothing.
    Bench(BenchArgs),
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
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
}

fn bench(a: BenchArgs) -> Result<()> {
    let data = run::load_data(&a.data, PngOptions::default(), Some(1024))?;
    let rate = match a.backend {
        BackendArg::Cpu => run::bench::<fewstep_trainer::CpuTrain>(
            &data,
            &a.preset,
            a.batch,
            a.warmup,
            a.steps,
            Default::default(),
        )?,
        #[cfg(feature = "flex")]
        BackendArg::Flex => run::bench::<fewstep_trainer::FlexTrain>(
            &data,
            &a.preset,
            a.batch,
            a.warmup,
            a.steps,
            Default::default(),
        )?,
        #[cfg(not(feature = "flex"))]
        BackendArg::Flex => {
            anyhow::bail!("this build has no flex backend: rebuild with --features flex")
        }
        #[cfg(feature = "cuda")]
        BackendArg::Cuda => run::bench::<fewstep_trainer::CudaTrain>(
            &data,
            &a.preset,
            a.batch,
            a.warmup,
            a.steps,
            Default::default(),
        )?,
        #[cfg(not(feature = "cuda"))]
        BackendArg::Cuda => {
            anyhow::bail!("this build has no CUDA backend: rebuild with --features cuda")
        }
    };
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
    /// ndarray on the CPU (with OpenBLAS when built with `--features openblas`).
    Cpu,
    /// Burn's `flex` CPU backend (build with `--features flex`).
    Flex,
    /// CUDA (build with `--features cuda`).
    Cuda,
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
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
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
    match a.backend {
        BackendArg::Cpu => run::diffusion::<fewstep_trainer::CpuTrain>(&opts, Default::default()),
        #[cfg(feature = "flex")]
        BackendArg::Flex => run::diffusion::<fewstep_trainer::FlexTrain>(&opts, Default::default()),
        #[cfg(not(feature = "flex"))]
        BackendArg::Flex => {
            anyhow::bail!("this build has no flex backend: rebuild with --features flex")
        }
        #[cfg(feature = "cuda")]
        BackendArg::Cuda => run::diffusion::<fewstep_trainer::CudaTrain>(&opts, Default::default()),
        #[cfg(not(feature = "cuda"))]
        BackendArg::Cuda => {
            anyhow::bail!("this build has no CUDA backend: rebuild with --features cuda")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Diffusion(a) => diffusion(*a),
        Command::Export(a) => run::export_checkpoint(&a.ckpt, &a.out, a.f16).map(|size| {
            eprintln!("wrote {} ({size} bytes)", a.out.display());
        }),
        Command::Bench(a) => bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
