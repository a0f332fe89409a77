//! # fewstep-trainer
//!
//! The Burn trainer of fewstep: a U-Net ([`model`]), real offline data
//! ([`data`]), diffusion pretraining ([`train`]) with atomic, exactly
//! resumable checkpoints ([`checkpoint`]), sampling with `fewstep-core`'s
//! samplers ([`sample`]), and an ONNX exporter that writes the fewstep model
//! format ([`onnx`]). All diffusion math comes from `fewstep-core`.
//!
//! Backends: [`CpuTrain`] (ndarray + autodiff) always; `Cuda` with the `cuda`
//! feature; `Flex` with the `flex` feature; LibTorch with the `tch` feature.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod consistency;
pub mod data;
pub mod eval;
pub mod host_ops;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod progressive;
pub mod report;
pub mod run;
pub mod sample;
pub mod train;
pub mod xvar;

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
