//! The training commands: `diffusion`, `consistency`, `progressive`,
//! `xvar` and `bench`.

use super::backend::{BackendArg, WithBackend, on_backend};
use anyhow::Result;
use clap::Args;
use fewstep_trainer::algorithms::xvar::{self, StoreOptions};
use fewstep_trainer::data::PngOptions;
use fewstep_trainer::run::{self, ConsistencyOptions, DiffusionOptions, ProgressiveOptions};
use std::path::PathBuf;

pub fn diffusion(a: WithBackend<DiffusionOptions>) -> Result<()> {
    on_backend!(a.backend, run::diffusion(&a.options))
}

pub fn consistency(a: WithBackend<ConsistencyOptions>) -> Result<()> {
    on_backend!(a.backend, run::consistency(&a.options))
}

pub fn progressive(a: WithBackend<ProgressiveOptions>) -> Result<()> {
    on_backend!(a.backend, run::progressive(&a.options))
}

pub fn xvar(a: &StoreOptions) -> Result<()> {
    let table = xvar::measure_and_store(a)?;
    let text: Vec<String> = table.iter().map(|v| format!("{v:.3e}")).collect();
    eprintln!(
        "stored a {}-point aDDIM xvar table in {}: {}",
        table.len(),
        a.ckpt.display(),
        text.join(" ")
    );
    Ok(())
}

/// `bench`'s flags: the library's `run::bench` takes them as arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
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

pub fn bench(a: &BenchArgs) -> Result<()> {
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
