//! Atomic checkpoints: model, EMA, optimiser state, step, RNG position and
//! configuration in one file, written to a temporary file, fsynced, and
//! renamed over the old one (then the directory is fsynced).
//!
//! Layout: `FEWSTEP-CKPT\n`, then four length-prefixed (u64 LE) sections:
//! JSON metadata, and Burn records (named MessagePack, full precision) of
//! the model, the EMA and the optimiser.

use crate::algorithms::optim::Optim;
use crate::config::{ModelConfig, TrainConfig, TrainingMode};
use crate::network::model::UNet;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File magic.
const MAGIC: &[u8] = b"FEWSTEP-CKPT\n";
/// Version of the metadata layout.
pub const CHECKPOINT_VERSION: u32 = 1;
/// File name of the checkpoint inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.fsck";

/// One step of the training log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Steps done after this one (1-based).
    pub step: u64,
    /// Training loss of the step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// [`CHECKPOINT_VERSION`].
    pub format: u32,
    /// Network shape.
    pub model: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Steps done.
    pub step: u64,
    /// Position of the data/time/label-dropout stream.
    pub choices_position: u64,
    /// Per-step log.
    pub log: Vec<StepLog>,
    /// Dataset provenance.
    pub data_source: String,
    /// Dataset class names.
    pub class_names: Vec<String>,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Trainer version that wrote it.
    pub trainer_version: String,
    /// What the run trains (absent in diffusion checkpoints written before
    /// consistency training existed).
    #[serde(default)]
    pub mode: TrainingMode,
    /// The empirical aDDIM xvar table measured by `fewstep-train xvar`
    /// (written to `fewstep.addim_xvar` on export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addim_xvar: Option<XvarTable>,
}

/// An empirical aDDIM table: `values[i] = eta * E||x_hat(z_t) - x||² / d` at
/// `t = i / (n - 1)` (the layout of `fewstep.addim_xvar`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XvarTable {
    /// The table.
    pub values: Vec<f32>,
    /// `eta` it was scaled by.
    pub xvar_frac: f64,
    /// Data examples averaged per point.
    pub examples: usize,
    /// Checkpoint step whose EMA weights were measured.
    pub step: u64,
}

/// A checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: Meta,
    model: Vec<u8>,
    ema: Vec<u8>,
    optim: Vec<u8>,
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl Checkpoint {
    /// Serialises a training state.
    pub fn from_state<B: AutodiffBackend>(
        meta: Meta,
        model: &UNet<B>,
        ema: &UNet<B::InnerBackend>,
        optim: &Optim<B>,
    ) -> Result<Self> {
        let rec = Rec::default();
        let model = Recorder::<B>::record(&rec, model.clone().into_record(), ())
            .context("recording the model")?;
        let ema = Recorder::<B::InnerBackend>::record(&rec, ema.clone().into_record(), ())
            .context("recording the EMA")?;
        let optim = Recorder::<B>::record(&rec, optim.to_record(), ())
            .context("recording the optimiser")?;
        Ok(Self {
            meta,
            model,
            ema,
            optim,
        })
    }

    /// Loads the trained weights into `model` (of the same configuration).
    pub fn load_model<B: Backend>(&self, model: UNet<B>, device: &B::Device) -> Result<UNet<B>> {
        let rec = Rec::default();
        let record = Recorder::<B>::load(&rec, self.model.clone(), device)
            .context("checkpoint: model weights do not load")?;
        Ok(model.load_record(record))
    }

    /// Loads the EMA weights into `model` (of the same configuration).
    pub fn load_ema<B: Backend>(&self, model: UNet<B>, device: &B::Device) -> Result<UNet<B>> {
        let rec = Rec::default();
        let record = Recorder::<B>::load(&rec, self.ema.clone(), device)
            .context("checkpoint: EMA weights do not load")?;
        Ok(model.load_record(record))
    }

    /// Loads the optimiser state.
    pub fn load_optim<B: AutodiffBackend>(
        &self,
        optim: Optim<B>,
        device: &B::Device,
    ) -> Result<Optim<B>> {
        let rec = Rec::default();
        let record = Recorder::<B>::load(&rec, self.optim.clone(), device)
            .context("checkpoint: optimiser state does not load")?;
        Ok(optim.load_record(record))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&self.meta).context("encoding checkpoint metadata")?;
        let mut out = Vec::with_capacity(
            MAGIC.len() + 32 + json.len() + self.model.len() + self.ema.len() + self.optim.len(),
        );
        out.extend_from_slice(MAGIC);
        for section in [&json, &self.model, &self.ema, &self.optim] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        Ok(out)
    }

    /// Parses a checkpoint file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .context("not a fewstep checkpoint (bad magic)")?;
        let mut sections = Vec::with_capacity(4);
        let mut rest = rest;
        for name in ["metadata", "model", "ema", "optimiser"] {
            if rest.len() < 8 {
                bail!("checkpoint truncated before its {name} section");
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().context("section length")?) as usize;
            if tail.len() < len {
                bail!("checkpoint truncated inside its {name} section");
            }
            let (section, tail) = tail.split_at(len);
            sections.push(section.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            bail!("checkpoint has {} trailing bytes", rest.len());
        }
        let optim = sections.pop().unwrap_or_default();
        let ema = sections.pop().unwrap_or_default();
        let model = sections.pop().unwrap_or_default();
        let json = sections.pop().unwrap_or_default();
        let meta: Meta = serde_json::from_slice(&json).context("checkpoint metadata")?;
        if meta.format != CHECKPOINT_VERSION {
            bail!(
                "checkpoint format {} is not supported (this trainer reads {CHECKPOINT_VERSION})",
                meta.format
            );
        }
        Ok(Self {
            meta,
            model,
            ema,
            optim,
        })
    }

    /// Writes atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads `path`: a checkpoint file, or a run directory holding one.
    pub fn load(path: &Path) -> Result<Self> {
        let file = checkpoint_path(path);
        let bytes = std::fs::read(&file)
            .with_context(|| format!("cannot read checkpoint {}", file.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("checkpoint {}", file.display()))
    }
}

/// `path` itself if it is a file, else `path/checkpoint.fsck`.
pub fn checkpoint_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot fsync {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Best effort: not every platform can fsync a directory.
            let _ = d.sync_all();
        }
        remove_stale_temporaries(dir, &name.to_string_lossy());
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.{name}.tmp-<pid>` files left by writers that were killed
/// mid-write (their process no longer exists). Best effort, Linux only:
/// elsewhere a live writer cannot be told from a dead one, so nothing is
/// removed.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
