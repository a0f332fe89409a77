//! # fewstep
//!
//! Few-step image generation from fewstep ONNX models (model format v1,
//! `MODEL_FORMAT.md`) on CPU, with [tract](https://github.com/sonos/tract).
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

mod error;
mod exec;
mod generate;
mod images;
mod model;
mod stamp;

pub use error::{GenerateError, IoError, LoadError};
pub use exec::Execution;
pub use fewstep_core;
pub use fewstep_core::{SamplerChoice, SamplerKind, SamplingPlan};
pub use generate::{CancelToken, DEFAULT_DIFFUSION_STEPS, GenerateRequest, Noise, Progress};
pub use images::{Images, npy_bytes, parse_npy, read_npy};
pub use model::{Dim, GraphInterface, Metadata, Model, TensorDecl, decode};
pub use stamp::{StampOptions, encode, stamp};
/// The ONNX protobuf types (from `tract-onnx`), for building or editing models.
pub use tract_onnx::pb;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<crate::Model>();
    }
}
