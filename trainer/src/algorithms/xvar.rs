//! The empirical aDDIM table of a diffusion model (`fewstep-train xvar`):
//! `xvar(t) = eta * E||x_hat(z_t) - x||² / d`, measured on data at
//! `t = i / (K - 1)`, stored in the checkpoint and exported as
//! `fewstep.addim_xvar`.

use crate::checkpoint::{Checkpoint, XvarTable, checkpoint_path};
use crate::config::{ModelConfig, TrainingMode};
use crate::data::{Dataset, PngOptions, load_data, resolve_data};
use crate::export::load_ema_cpu;
use crate::network::model::UNet;
use crate::sample::evaluate;
use anyhow::{Result, anyhow, bail};
use burn::tensor::backend::Backend;
use fewstep_core::rng::{GaussianStream, UniformStream};
use fewstep_core::training::noised;
use fewstep_core::training::{teacher_xvar, uniform_index};
use std::path::PathBuf;

/// Seed offset of the measurement's noise.
const NOISE_SEED_SALT: u64 = 0x7876_6172_0000_0005;

/// Options of one measurement (the measurement flags of `fewstep-train
/// xvar`). `points >= 2`; the same `examples` are used at every `t`; `eta`
/// is 0.75 in the paper.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct XvarOptions {
    /// eta: the table holds eta * E||x_hat - x||^2 / d.
    #[arg(long, default_value_t = fewstep_core::training::PAPER_XVAR_FRAC)]
    pub xvar_frac: f64,
    /// Table entries, at t = i / (K - 1).
    #[arg(long, default_value_t = 33)]
    pub points: usize,
    /// Data examples per entry.
    #[arg(long, default_value_t = 256)]
    pub examples: usize,
    /// Network evaluations per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Seed of the example choice and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Options of `fewstep-train xvar`: which checkpoint, on which data, and
/// the measurement.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreOptions {
    /// A diffusion run directory or checkpoint file (updated in place).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The measurement.
    #[command(flatten)]
    pub measure: XvarOptions,
    /// PNG folder options.
    #[command(flatten)]
    pub png: PngOptions,
}

/// Measures the table with `model` on `data` (class-conditional models see
/// the true labels).
pub fn measure<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    data: &Dataset,
    opts: XvarOptions,
    device: &B::Device,
) -> Result<Vec<f32>> {
    if opts.points < 2 {
        bail!("--points must be >= 2");
    }
    if opts.examples == 0 || opts.batch == 0 {
        bail!("--examples and --batch must be >= 1");
    }
    if !(opts.xvar_frac.is_finite() && opts.xvar_frac >= 0.0) {
        bail!("--xvar-frac must be >= 0");
    }
    crate::algorithms::train::check_data(cfg, data)?;
    let schedule = cfg.schedule()?;
    let pred = cfg.prediction()?;
    let d = cfg.image_len();
    let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut choices = UniformStream::new(opts.seed, 2);
    let picks: Vec<usize> = (0..opts.examples)
        .map(|_| uniform_index(choices.next_f64(), n) as usize)
        .collect();
    let mut table = Vec::with_capacity(opts.points);
    for p in 0..opts.points {
        let t = p as f64 / (opts.points - 1) as f64;
        let at = schedule.alpha_sigma(t);
        let mut total = 0.0;
        let mut noise = GaussianStream::new(opts.seed ^ NOISE_SEED_SALT, p as u64);
        for chunk in picks.chunks(opts.batch) {
            let m = chunk.len();
            let mut x = Vec::with_capacity(m * d);
            for &i in chunk {
                x.extend_from_slice(data.image(i));
            }
            let mut eps = vec![0f32; m * d];
            noise.fill(&mut eps);
            let z: Vec<f32> = x
                .iter()
                .zip(&eps)
                .map(|(&x, &e)| noised(at, x, e))
                .collect();
            let labels: Option<Vec<i64>> = (cfg.num_classes > 0).then(|| {
                chunk
                    .iter()
                    .map(|&i| (data.labels[i] as usize).min(cfg.num_classes) as i64)
                    .collect()
            });
            let tv = vec![t as f32; m];
            let mut x_hat = evaluate(model, cfg, &z, &tv, labels.as_deref(), device)?;
            pred.output_to_x_hat(&z, &mut x_hat, at)
                .map_err(|e| anyhow!("{e}"))?;
            for (xh, xc) in x_hat.chunks_exact(d).zip(x.chunks_exact(d)) {
                let sq: f64 = xh
                    .iter()
                    .zip(xc)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                total += teacher_xvar(opts.xvar_frac, sq, d);
            }
        }
        table.push((total / opts.examples as f64) as f32);
    }
    Ok(table)
}

/// `fewstep-train xvar`: measures the empirical aDDIM table of a diffusion
/// checkpoint's EMA weights and stores it in the checkpoint (atomically), so
/// that `export` writes `fewstep.addim_xvar`. Returns the table.
pub fn measure_and_store(store: &StoreOptions) -> Result<Vec<f32>> {
    let opts = store.measure;
    let file = checkpoint_path(&store.ckpt);
    let mut ckpt = Checkpoint::load(&file)?;
    if !matches!(ckpt.meta.mode, TrainingMode::Diffusion) {
        bail!(
            "{} is a {} run: the aDDIM table is for diffusion models",
            file.display(),
            ckpt.meta.mode.describe()
        );
    }
    let path = resolve_data(store.data.as_deref(), &ckpt, "xvar")?;
    let data = load_data(&path, store.png, store.limit)?;
    let model = load_ema_cpu(&ckpt)?;
    let table = measure(&model, &ckpt.meta.model, &data, opts, &Default::default())?;
    ckpt.meta.addim_xvar = Some(XvarTable {
        values: table.clone(),
        xvar_frac: opts.xvar_frac,
        examples: opts.examples,
        step: ckpt.meta.step,
    });
    ckpt.save(&file)?;
    Ok(table)
}
