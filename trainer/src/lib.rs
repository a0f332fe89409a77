//! # fewstep-trainer
//!
//! The Burn trainer of fewstep, in folders by job:
//!
//! - [`network`]: the U-Net ([`network::model`]) and its host kernels;
//! - [`algorithms`]: diffusion pretraining ([`algorithms::train`]), multistep
//!   consistency training/distillation, progressive distillation, the aDDIM
//!   xvar measurement, and the optimiser they share;
//! - [`data`]: real offline datasets (idx files, PNG folders);
//! - [`evaluation`]: the quality benchmark (classifier features, KID/FID,
//!   reports and plots);
//! - [`export`]: the ONNX exporter that writes the fewstep model format;
//! - beside them, what every job shares: settings ([`config`]), atomic,
//!   exactly resumable checkpoints ([`checkpoint`]), sampling with
//!   `fewstep-core`'s samplers ([`sample`]), the progress bar and time
//!   stamps of the commands ([`output`]), and the training commands
//!   ([`run`]);
//! - the command line, `fewstep-train` (the binary's `src/cli/`): each
//!   command's flags are one options type here, which derives `clap::Args`
//!   ([`run::DiffusionOptions`], [`run::ConsistencyOptions`],
//!   [`run::ProgressiveOptions`], [`algorithms::xvar::StoreOptions`],
//!   [`evaluation::classifier::ClassifierOptions`],
//!   [`evaluation::eval::EvalOptions`]); the binary adds only `--backend`
//!   and what has no library counterpart.
//!
//! All diffusion math comes from `fewstep-core`.
//!
//! Backends: [`CpuTrain`] (ndarray + autodiff) always; `Cuda` with the `cuda`
//! feature; `Flex` with the `flex` feature; LibTorch with the `tch` feature.

pub mod algorithms;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod evaluation;
pub mod export;
pub mod network;
pub mod output;
pub mod run;
pub mod sample;

/// The CPU inference backend (ndarray).
pub type Cpu = burn::backend::NdArray<f32>;
/// The CPU training backend (ndarray + autodiff).
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// The Burn `flex` CPU backend (feature `flex`).
#[cfg(feature = "flex")]
pub type FlexTrain = burn::backend::Autodiff<burn::backend::Flex>;

/// The CUDA training backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<burn::backend::Cuda<f32>>;

/// Burn's LibTorch backend on the CPU (feature `tch`): PyTorch's kernels
/// under Burn's autodiff.
#[cfg(feature = "tch")]
pub type TchTrain = burn::backend::Autodiff<burn::backend::LibTorch<f32>>;
