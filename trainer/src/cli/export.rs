//! `export`: a run's EMA weights as a fewstep ONNX model.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `export`'s flags: the library's `export::export_checkpoint` takes them as
/// arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
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

pub fn export(a: &ExportArgs) -> Result<()> {
    let size = fewstep_trainer::export::export_checkpoint(&a.ckpt, &a.out, a.f16)?;
    eprintln!("wrote {} ({size} bytes)", a.out.display());
    Ok(())
}
