//! `--backend`: the compute backend, a type parameter of the library's
//! functions, chosen at run time.

use clap::{Args, ValueEnum};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
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

/// A command's options (a library type) and the backend to run it on.
#[derive(Args, Debug)]
pub struct WithBackend<T: Args> {
    #[command(flatten)]
    pub options: T,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    pub backend: BackendArg,
}

/// Calls the generic library function `f::<B>(args.., device)` with the
/// training backend `B` that `--backend` names (the default device).
macro_rules! on_backend {
    ($backend:expr, $($f:ident)::+($($arg:expr),*)) => {
        match $backend {
            $crate::cli::backend::BackendArg::Ndarray => {
                $($f)::+::<fewstep_trainer::CpuTrain>($($arg,)* Default::default())
            }
            #[cfg(feature = "flex")]
            $crate::cli::backend::BackendArg::Flex => {
                $($f)::+::<fewstep_trainer::FlexTrain>($($arg,)* Default::default())
            }
            #[cfg(not(feature = "flex"))]
            $crate::cli::backend::BackendArg::Flex => Err(anyhow::anyhow!(
                "this build has no flex backend: rebuild with --features flex"
            )),
            #[cfg(feature = "tch")]
            $crate::cli::backend::BackendArg::Tch => {
                $($f)::+::<fewstep_trainer::TchTrain>($($arg,)* Default::default())
            }
            #[cfg(not(feature = "tch"))]
            $crate::cli::backend::BackendArg::Tch => Err(anyhow::anyhow!(
                "this build has no LibTorch backend: rebuild with --features tch \
                 (docs/PERFORMANCE.md says how)"
            )),
            #[cfg(feature = "cuda")]
            $crate::cli::backend::BackendArg::Cuda => {
                $crate::cli::backend::cuda_preflight().and_then(|()| {
                    $($f)::+::<fewstep_trainer::CudaTrain>($($arg,)* Default::default())
                })
            }
            #[cfg(not(feature = "cuda"))]
            $crate::cli::backend::BackendArg::Cuda => Err(anyhow::anyhow!(
                "this build has no CUDA backend: rebuild with --features cuda"
            )),
        }
    };
}
pub(crate) use on_backend;

/// Asks the CUDA driver and NVRTC before Burn does, so a missing or shadowed
/// library is one clear error (not a panic on Burn's device thread), and says
/// that the first steps compile kernels: Burn JIT-compiles each kernel with
/// NVRTC, measured at about one a second on an H200 machine.
#[cfg(feature = "cuda")]
pub fn cuda_preflight() -> anyhow::Result<()> {
    let info = fewstep_trainer::cuda::preflight()?;
    eprintln!(
        "CUDA: driver {}.{}, {} device(s), NVRTC {}.{}; the first steps compile Burn's kernels \
         (minutes on a fresh machine; CUBECL_AUTOTUNE_LEVEL=minimal compiles fewer)",
        info.driver_version / 1000,
        info.driver_version % 1000 / 10,
        info.devices,
        info.nvrtc_version.0,
        info.nvrtc_version.1
    );
    Ok(())
}
