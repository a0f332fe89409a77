//! The commands behind the `fewstep-train` binary, as library functions.

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use crate::config::{ModelConfig, TrainConfig};
use crate::data::{self, Dataset, PngOptions};
use crate::model::UNet;
use crate::onnx::{ExportOptions, export};
use crate::train::{Trainer, check_data};
use crate::{Cpu, plot, sample};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use fewstep_core::SamplingPlan;
use fewstep_core::plan::SamplerKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `fewstep-train diffusion`.
#[derive(Debug, Clone)]
pub struct DiffusionOptions {
    /// `--data`.
    pub data: PathBuf,
    /// `--out`: the run directory.
    pub out: PathBuf,
    /// `--preset`.
    pub preset: String,
    /// `--class-cond`.
    pub class_cond: bool,
    /// `--resume`.
    pub resume: bool,
    /// `--steps` (on resume: the new total).
    pub steps: Option<u64>,
    /// `--limit`: use only the first N images.
    pub limit: Option<usize>,
    /// PNG folder options.
    pub png: PngOptions,
    /// Overrides of the preset's network settings.
    pub model_overrides: ModelOverrides,
    /// Training settings (ignored on resume, except `steps`).
    pub train: TrainConfig,
    /// No progress bar.
    pub quiet: bool,
}

/// Settings that override a preset.
#[derive(Debug, Clone, Default)]
pub struct ModelOverrides {
    /// `--schedule`.
    pub schedule: Option<String>,
    /// `--prediction`.
    pub prediction: Option<String>,
    /// `--dropout`.
    pub dropout: Option<f64>,
    /// `--base-channels`.
    pub base_channels: Option<usize>,
}

/// Loads `--data`, keeping the first `limit` images.
pub fn load_data(path: &Path, png: PngOptions, limit: Option<usize>) -> Result<Dataset> {
    let mut data = data::load(path, png)?;
    if let Some(n) = limit {
        if n == 0 {
            bail!("--limit must be >= 1");
        }
        data.truncate(n);
        data.source = format!("{} (first {} images)", data.source, data.len());
    }
    Ok(data)
}

/// The model configuration of a new run.
pub fn new_model_config(
    preset: &str,
    data: &Dataset,
    class_cond: bool,
    o: &ModelOverrides,
) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::preset(preset, data.channels, data.height, data.width)?;
    if class_cond {
        if data.num_classes() == 0 {
            bail!(
                "--class-cond: the dataset has no labels (use class sub-folders or idx label files)"
            );
        }
        cfg.num_classes = data.num_classes();
    }
    if let Some(s) = &o.schedule {
        cfg.schedule = s.clone();
    }
    if let Some(p) = &o.prediction {
        cfg.prediction = p.clone();
    }
    if let Some(d) = o.dropout {
        cfg.dropout = d;
    }
    if let Some(b) = o.base_channels {
        cfg.base_channels = b;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs (or resumes) diffusion pretraining on backend `B`.
pub fn diffusion<B: AutodiffBackend>(opts: &DiffusionOptions, device: B::Device) -> Result<()> {
    let data = load_data(&opts.data, opts.png, opts.limit)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let ckpt_path = opts.out.join(CHECKPOINT_FILE);
    let mut trainer = if opts.resume {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_data(&ckpt.meta.model, &data)?;
        if ckpt.meta.data_source != data.source {
            eprintln!(
                "note: this run was trained on {}, resuming on {}",
                ckpt.meta.data_source, data.source
            );
        }
        let mut t = Trainer::<B>::from_checkpoint(ckpt, device)?;
        if let Some(s) = opts.steps {
            t.train.steps = s;
        }
        t
    } else {
        if ckpt_path.exists() {
            bail!(
                "{} already exists: pass --resume to continue it, or choose another --out",
                ckpt_path.display()
            );
        }
        let model_cfg =
            new_model_config(&opts.preset, &data, opts.class_cond, &opts.model_overrides)?;
        let mut train = opts.train.clone();
        if let Some(s) = opts.steps {
            train.steps = s;
        }
        Trainer::<B>::new(model_cfg, train, &data, device)?
    };
    let params = trainer.model.num_params();
    eprintln!(
        "fewstep-train diffusion: {} images {}x{}x{} from {}, {} classes, {params} parameters, step {} of {}",
        data.len(),
        data.channels,
        data.height,
        data.width,
        data.source,
        trainer.model_cfg.num_classes,
        trainer.step,
        trainer.train.steps
    );
    let total = trainer.train.steps;
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
        );
        b
    };
    bar.set_position(trainer.step);
    let batch = trainer.train.batch as f64;
    let mut smooth: Option<f64> = None;
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    let mut ex_per_s = 0.0;
    while trainer.step < total {
        let t0 = Instant::now();
        let entry = trainer.step(&data)?;
        trainer.train_seconds += t0.elapsed().as_secs_f64();
        window_steps += 1;
        let el = window_start.elapsed().as_secs_f64();
        if el >= 2.0 {
            ex_per_s = window_steps as f64 * batch / el;
            window_start = Instant::now();
            window_steps = 0;
        } else if ex_per_s == 0.0 {
            ex_per_s = window_steps as f64 * batch / el.max(1e-9);
        }
        let l = f64::from(entry.loss);
        let s = smooth.map_or(l, |s| 0.98 * s + 0.02 * l);
        smooth = Some(s);
        bar.set_position(trainer.step);
        bar.set_message(format!("loss {s:.4} | {ex_per_s:.1} ex/s"));
        if trainer.step % trainer.train.sample_every == 0 || trainer.step == total {
            save_outputs(&trainer, &opts.out)?;
        }
    }
    bar.finish();
    if trainer.step == total && trainer.log.is_empty() {
        save_outputs(&trainer, &opts.out)?;
    }
    eprintln!(
        "done: step {} in {:.0} s of training; outputs in {}",
        trainer.step,
        trainer.train_seconds,
        opts.out.display()
    );
    Ok(())
}

/// Checkpoint, CSV log, loss curve and a sample grid of the EMA weights.
pub fn save_outputs<B: AutodiffBackend>(trainer: &Trainer<B>, out: &Path) -> Result<()> {
    trainer.checkpoint()?.save(&out.join(CHECKPOINT_FILE))?;
    plot::write_csv(&out.join("log.csv"), &trainer.log)?;
    plot::write_loss_curve(&out.join("loss.png"), &trainer.log)?;
    let samples_dir = out.join("samples");
    std::fs::create_dir_all(&samples_dir)
        .with_context(|| format!("cannot create {}", samples_dir.display()))?;
    let grid = sample_grid(
        &trainer.ema,
        &trainer.model_cfg,
        &trainer.train,
        &trainer.device,
    )?;
    let name = samples_dir.join(format!("step_{:07}.png", trainer.step));
    let cfg = &trainer.model_cfg;
    sample::write_grid(&name, &grid.0, cfg.channels, cfg.height, cfg.width, grid.1)?;
    std::fs::copy(&name, out.join("samples.png"))
        .with_context(|| format!("cannot copy {}", name.display()))?;
    Ok(())
}

/// Samples the preview grid (fixed seed, so grids of successive checkpoints
/// are comparable): class `i % K` in column `i % K` when class-conditional.
pub fn sample_grid<B: Backend>(
    ema: &UNet<B>,
    cfg: &ModelConfig,
    train: &TrainConfig,
    device: &B::Device,
) -> Result<(Vec<f32>, usize)> {
    let n = train.sample_count;
    let k = cfg.num_classes;
    let labels: Option<Vec<i64>> = (k > 0).then(|| (0..n).map(|i| (i % k) as i64).collect());
    let cols = if k > 0 && k <= 16 {
        k
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    let plan = SamplingPlan::new(train.sample_steps, SamplerKind::Addim)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let images = sample::sample(ema, cfg, n, plan, 1234, labels.as_deref(), device)?;
    Ok((images, cols))
}

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
    ];
    let bytes = export(
        &model,
        &meta.model,
        &ExportOptions {
            f16,
            extra_metadata: extra,
        },
    )?;
    crate::checkpoint::write_atomic(out, &bytes)?;
    Ok(bytes.len() as u64)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no
/// time-zone database needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `fewstep-train bench`: training throughput (examples/s) of a preset on
/// `data`, over `steps` timed steps after `warmup` untimed ones. Nothing is
/// written. Returns examples/s.
pub fn bench<B: AutodiffBackend>(
    data: &Dataset,
    preset: &str,
    batch: usize,
    warmup: u64,
    steps: u64,
    device: B::Device,
) -> Result<f64> {
    let cfg = new_model_config(preset, data, false, &ModelOverrides::default())?;
    let train = TrainConfig {
        batch,
        steps: warmup + steps,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::<B>::new(cfg, train, data, device)?;
    for _ in 0..warmup {
        trainer.step(data)?;
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        trainer.step(data)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((steps as f64 * batch as f64) / secs)
}
