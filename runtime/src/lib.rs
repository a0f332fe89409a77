//! # fewstep
//!
//! Few-step image generation from fewstep ONNX models (model format v1,
//! `docs/MODEL_FORMAT.md`) on CPU, with [tract](https://github.com/sonos/tract).
//! Every formula (schedules, DDIM/aDDIM, sampling plans, guidance, noise,
//! pixel mapping) is `fewstep_core`'s; this crate loads, validates and runs
//! the network and moves buffers.
//!
//! ```no_run
//! let model = fewstep::Model::load("model.onnx")?;
//! let images = model.generate().batch(4).seed(7).run()?;
//! images.save_png("grid.png")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod edit_input;
mod error;
mod exec;
mod generate;
mod graph;
use graph::{group_norm, winograd};
mod images;
mod memory;
mod model;
mod model_file;
mod stamp;

pub use edit_input::{read_init_image, read_mask};
pub use error::{GenerateError, IoError, LoadError};
#[doc(hidden)]
pub use exec::with_awake_pool;
pub use exec::{Execution, PoolWait, WORKER_THREAD_PREFIX};
pub use fewstep_core;
pub use fewstep_core::{Conditioning, PlanError, SamplerChoice, SamplerKind, SamplingPlan};
pub use generate::{CancelToken, DEFAULT_DIFFUSION_STEPS, GenerateRequest, Noise, Progress};
#[doc(hidden)]
pub use graph::torch_group_norm::fuse as fuse_pytorch_group_norms;
#[doc(hidden)]
pub use group_norm::onnx;
pub use images::{Images, npy_bytes, parse_npy, read_npy};
pub use memory::{DEFAULT_MEMORY_BUDGET, MemoryEstimate, parse_bytes};
#[doc(hidden)]
pub use model::rewrite_graph;
pub use model::{Dim, GraphInterface, Metadata, Model, TensorDecl, decode};
pub use stamp::{StampOptions, encode, stamp};
/// The ONNX protobuf types (from `tract-onnx`), for building or editing models.
pub use tract_onnx::pb;
pub use winograd::{ConvAlgorithm, KernelTuning, kernel_tuning, set_kernel_tuning};

/// Tunes the process's allocator for repeated network evaluations (opt-in,
/// process-wide; the CLI calls it). On glibc it raises the mmap threshold
/// to its maximum (32 MiB) and the trim threshold to 256 MiB, so tract's large per-operator buffers
/// (im2col, activations) are reused from the heap instead of being mapped,
/// page-faulted and unmapped on every call. Returns whether anything was
/// changed (false on other platforms).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts glibc malloc tunables; it is safe to
        // call at any time from any thread.
        let a = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) };
        // SAFETY: as above.
        let b = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20) };
        a == 1 && b == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<crate::Model>();
    }
    #[test]
    fn allocator_tuning_applies_on_glibc() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(crate::tune_allocator(), glibc);
    }
}
