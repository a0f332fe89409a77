//! Export: a trained network as a fewstep ONNX model (`fewstep-train
//! export`).

pub mod onnx;

use crate::Cpu;
use crate::checkpoint::{Checkpoint, write_atomic};
use crate::network::model::UNet;
use crate::output::utc_now;
use anyhow::{Context, Result};
use burn::module::Module;
use onnx::{ExportOptions, export};
use std::path::Path;

/// Loads the EMA weights of a checkpoint onto the CPU backend.
pub fn load_ema_cpu(ckpt: &Checkpoint) -> Result<UNet<Cpu>> {
    let device = Default::default();
    let model = UNet::<Cpu>::new(&ckpt.meta.model, &device);
    ckpt.load_ema::<Cpu>(model, &device)
}

/// `fewstep-train export`: the EMA weights of `ckpt` as a fewstep ONNX model.
/// Returns the file size in bytes.
pub fn export_checkpoint(ckpt_path: &Path, out: &Path, f16: bool) -> Result<u64> {
    let ckpt = Checkpoint::load(ckpt_path)?;
    let model = load_ema_cpu(&ckpt)?;
    let meta = &ckpt.meta;
    let extra = vec![
        (
            "fewstep.train.trainer".into(),
            format!("fewstep-trainer {}", meta.trainer_version),
        ),
        ("fewstep.train.dataset".into(), meta.data_source.clone()),
        ("fewstep.train.steps".into(), meta.step.to_string()),
        ("fewstep.train.batch".into(), meta.train.batch.to_string()),
        (
            "fewstep.train.seconds".into(),
            format!("{:.0}", meta.train_seconds),
        ),
        (
            "fewstep.train.weights".into(),
            format!("ema {}", meta.train.ema_decay),
        ),
        (
            "fewstep.train.params".into(),
            model.num_params().to_string(),
        ),
        ("fewstep.train.exported".into(), utc_now()),
        ("fewstep.train.classes".into(), meta.class_names.join("|")),
        (
            "fewstep.train.config".into(),
            serde_json::to_string(&meta.model).context("encoding the model config")?,
        ),
        ("fewstep.train.mode".into(), meta.mode.describe()),
    ];
    let bytes = export(
        &model,
        &meta.model,
        &ExportOptions {
            f16,
            extra_metadata: extra,
            student_steps: meta.mode.student_steps(meta.step),
            addim_xvar: meta.addim_xvar.as_ref().map(|x| x.values.clone()),
        },
    )?;
    write_atomic(out, &bytes)?;
    Ok(bytes.len() as u64)
}
