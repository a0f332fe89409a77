//! `fewstep-train eval`: the quality benchmark of an exported model.
//!
//! Samples are generated through the `fewstep` runtime (the code users run,
//! not the trainer's Burn sampler), quantised to 8 bits as a saved PNG would
//! be, and scored against the test split of the classifier's dataset with
//! the classifier's penultimate features ([`crate::evaluation::classifier`]): KID and FID
//! ([`crate::evaluation::metrics`]), optionally beside the real-vs-real floor (training
//! images against the same reference), plus the class histogram of the
//! samples and, for class-conditional models, how often the classifier
//! agrees with the requested label.

use crate::config::parse_sampler_choice;
use crate::data::PngOptions;
use crate::evaluation::classifier::{SavedClassifier, load_split, score};
use crate::evaluation::metrics::{self, Features, Kid};
use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::tensor::backend::AutodiffBackend;
use fewstep::{LoadError, Model, SamplerChoice};
use fewstep_core::format::DataRange;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// KID subsets (clean-fid's and torch-fidelity's default).
pub const KID_SUBSETS: usize = 100;
/// Largest KID subset (clean-fid's and torch-fidelity's default).
pub const KID_MAX_SUBSET: usize = 1000;
/// Seed salt of the floor's choice of training images.
const FLOOR_SALT: u64 = 0x666c_6f6f_7200_0001;

/// Options of `fewstep-train eval`; as `clap::Args`, its flags (less the
/// command's `--results` and `--backend`).
#[derive(Debug, Clone, clap::Args)]
pub struct EvalOptions {
    /// The fewstep ONNX model to benchmark.
    #[arg(long)]
    pub model: PathBuf,
    /// The classifier run directory (or its classifier.fscl).
    #[arg(long)]
    pub classifier: PathBuf,
    /// The dataset whose test split is the reference (as for `classifier`).
    #[arg(long)]
    pub data: PathBuf,
    /// Samples to generate.
    #[arg(long)]
    pub n: usize,
    /// Sampling steps (default: the model's own).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Sampler: auto (the model's default: T DDIM steps for a consistency model,
    /// aDDIM for a diffusion model), ddim or addim.
    #[arg(long, value_parser = parse_sampler_choice, default_value = "auto")]
    pub sampler: SamplerChoice,
    /// Seed of the noise (image k gets noise k at any --batch), the KID
    /// subsets and the floor's images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Runtime threads (default: all available).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images per runtime call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Name of the result row (default: model file stem, steps, sampler).
    #[arg(long)]
    pub name: Option<String>,
    /// Write a PNG grid of the first --grid-count samples.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Samples in the grid.
    #[arg(long, default_value_t = 100)]
    pub grid_count: usize,
    /// Also score N real training images against the same reference (the
    /// real-vs-real floor of both metrics).
    #[arg(long)]
    pub floor: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One benchmark result (the JSON line of `--results`, which
/// `fewstep-train report` reads back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Row name.
    pub name: String,
    /// The model file.
    pub model: String,
    /// The classifier file or run.
    pub classifier: String,
    /// The classifier's test accuracy.
    pub classifier_accuracy: f64,
    /// The reference set.
    pub reference: String,
    /// Reference images.
    pub reference_n: usize,
    /// Sampling steps (network evaluations per image).
    pub steps: u32,
    /// `ddim` or `addim`.
    pub sampler: String,
    /// The model's `fewstep.student_steps` (0: a diffusion model).
    pub student_steps: u32,
    /// Samples generated.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Images per runtime call.
    pub batch: usize,
    /// Runtime threads.
    pub threads: usize,
    /// KID mean.
    pub kid_mean: f64,
    /// KID standard deviation over subsets.
    pub kid_std: f64,
    /// KID subsets.
    pub kid_subsets: usize,
    /// KID subset size.
    pub kid_subset_size: usize,
    /// FID.
    pub fid: f64,
    /// Training images of the floor (`None` without `--floor`).
    pub floor_n: Option<usize>,
    /// KID of the floor.
    pub floor_kid_mean: Option<f64>,
    /// Its standard deviation.
    pub floor_kid_std: Option<f64>,
    /// FID of the floor.
    pub floor_fid: Option<f64>,
    /// Generation wall time per sample (runtime calls only).
    pub ms_per_sample: f64,
    /// Wall time of the whole evaluation.
    pub eval_seconds: f64,
    /// Samples per predicted class.
    pub class_hist: Vec<u64>,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// Fraction of samples classified as their requested label (`None` for
    /// an unconditional model).
    pub label_agreement: Option<f64>,
    /// The grid written, if any.
    pub grid: Option<String>,
    /// When it was measured (UTC).
    pub created: String,
}

/// KID with the benchmark's settings: [`KID_SUBSETS`] subsets of
/// `min(KID_MAX_SUBSET, |a|, |b|)`.
fn kid_of(a: &Features, b: &Features, seed: u64) -> Result<Kid> {
    let m = KID_MAX_SUBSET.min(a.rows()).min(b.rows());
    metrics::kid(a, b, KID_SUBSETS, m, seed)
}

/// Runs the benchmark; the classifier runs on `B`'s inference backend.
pub fn evaluate<B: AutodiffBackend>(opts: &EvalOptions, device: B::Device) -> Result<EvalRecord> {
    let started = Instant::now();
    ensure!(
        opts.n >= 2,
        "--n must be >= 2 (KID and FID compare sets of samples), not {}",
        opts.n
    );
    ensure!(opts.steps != Some(0), "--steps must be >= 1");
    ensure!(opts.batch >= 1, "--batch must be >= 1");
    ensure!(opts.threads != Some(0), "--threads must be >= 1");
    ensure!(
        opts.grid.is_none() || opts.grid_count >= 1,
        "--grid-count must be >= 1"
    );

    let model = Model::load(&opts.model).map_err(|e| match e {
        // Already names the file.
        LoadError::Io { .. } => anyhow!("{e}"),
        _ => anyhow!("model {}: {e}", opts.model.display()),
    })?;
    let meta = model.metadata();
    let plan = model
        .plan(opts.steps, opts.sampler)
        .map_err(|e| anyhow!("model {}: {e}", opts.model.display()))?;
    let saved = SavedClassifier::load(&opts.classifier)?;
    let ccfg = saved.meta.config.clone();
    let image = meta.image;
    let model_shape = (
        image.channels as usize,
        image.height as usize,
        image.width as usize,
    );
    if model_shape != (ccfg.channels, ccfg.height, ccfg.width) {
        bail!(
            "the classifier {} takes {} images but the model {} makes {}x{}x{}",
            opts.classifier.display(),
            ccfg.shape(),
            opts.model.display(),
            image.channels,
            image.height,
            image.width
        );
    }
    let split = load_split(
        &opts.data,
        PngOptions {
            size: ccfg.height,
            channels: ccfg.channels,
        },
    )?;
    let test = &split.test;
    if (test.channels, test.height, test.width) != model_shape {
        bail!(
            "--data {} holds {}x{}x{} images but the model makes {}",
            opts.data.display(),
            test.channels,
            test.height,
            test.width,
            ccfg.shape()
        );
    }
    if split.train.source != saved.meta.data_source {
        eprintln!(
            "note: the classifier was trained on {}, the reference is the test split of {}",
            saved.meta.data_source, split.train.source
        );
    }
    let k_model = meta.num_classes as usize;
    let conditional = k_model > 0;
    let agreement_possible = conditional && k_model == ccfg.num_classes;
    if conditional && !agreement_possible {
        eprintln!(
            "note: the model has {k_model} classes but the classifier {}: no label agreement",
            ccfg.num_classes
        );
    }
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    // Generation, in chunks that share one seed: image k's noise is image k
    // of the seed's stream whatever --batch is (first_image), and its label
    // is k % K.
    let d = meta.image_len();
    let labels: Vec<i64> = (0..opts.n)
        .map(|i| if conditional { (i % k_model) as i64 } else { 0 })
        .collect();
    let pb = crate::output::progress_bar(opts.n as u64, opts.quiet)?;
    pb.set_message(format!(
        "generating, {} {} steps",
        plan.steps(),
        plan.sampler()
    ));
    let mut raw = Vec::with_capacity(opts.n * d);
    let mut gen_seconds = 0.0;
    for start in (0..opts.n).step_by(opts.batch) {
        let b = opts.batch.min(opts.n - start);
        let mut req = model
            .generate()
            .batch(b)
            .seed(opts.seed)
            .first_image(start as u64)
            .sampler(opts.sampler)
            .threads(threads);
        if let Some(s) = opts.steps {
            req = req.steps(s);
        }
        if conditional {
            req = req.labels(labels[start..start + b].to_vec());
        }
        let t0 = Instant::now();
        let out = req
            .run()
            .map_err(|e| anyhow!("generating images {start}..{}: {e}", start + b))?;
        gen_seconds += t0.elapsed().as_secs_f64();
        ensure!(
            !out.is_partial() && out.batch() == b,
            "the runtime returned an incomplete batch"
        );
        raw.extend_from_slice(out.data());
        pb.set_position((start + b) as u64);
    }
    pb.finish_and_clear();

    // Score what a user would see: 8-bit pixels, in the classifier's range.
    let to_classifier = DataRange::default();
    let samples: Vec<f32> = raw
        .iter()
        .map(|&v| to_classifier.from_u8(meta.data_range.to_u8(v)))
        .collect();
    let inner = device.clone();
    let classifier = saved.model::<B::InnerBackend>(&inner)?;
    let gen_scores = score(&classifier, &ccfg, &samples, &inner)?;
    let ref_scores = score(&classifier, &ccfg, &test.images, &inner)?;
    let kid = kid_of(&gen_scores.features, &ref_scores.features, opts.seed)?;
    let fid = metrics::fid(&gen_scores.features, &ref_scores.features)?;

    let floor = if opts.floor {
        let train = &split.train;
        let idx = metrics::random_indices(opts.seed ^ FLOOR_SALT, 0, train.len(), opts.n);
        ensure!(
            idx.len() >= 2,
            "--floor: the training split has {} images",
            train.len()
        );
        if idx.len() < opts.n {
            eprintln!(
                "note: the floor uses all {} training images (fewer than --n {})",
                idx.len(),
                opts.n
            );
        }
        let mut images = Vec::with_capacity(idx.len() * d);
        for &i in &idx {
            images.extend_from_slice(train.image(i));
        }
        let s = score(&classifier, &ccfg, &images, &inner)?;
        let fk = kid_of(&s.features, &ref_scores.features, opts.seed)?;
        let ff = metrics::fid(&s.features, &ref_scores.features)?;
        Some((idx.len(), fk, ff))
    } else {
        None
    };

    let predicted = metrics::argmax_rows(&gen_scores.logits);
    let class_hist = metrics::class_histogram(&gen_scores.logits);
    let label_agreement = if agreement_possible {
        Some(metrics::label_agreement(&predicted, &labels)?)
    } else {
        None
    };

    let grid = match &opts.grid {
        Some(path) => {
            let count = opts.grid_count.min(opts.n);
            let cols = if conditional && k_model <= 16 {
                k_model
            } else {
                (count as f64).sqrt().ceil() as usize
            };
            crate::sample::write_grid(
                path,
                &samples[..count * d],
                ccfg.channels,
                ccfg.height,
                ccfg.width,
                cols,
            )?;
            Some(path.display().to_string())
        }
        None => None,
    };

    let name = opts.name.clone().unwrap_or_else(|| {
        let stem = opts
            .model
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        format!("{stem}-{}{}", plan.steps(), plan.sampler())
    });
    Ok(EvalRecord {
        name,
        model: opts.model.display().to_string(),
        classifier: opts.classifier.display().to_string(),
        classifier_accuracy: saved.meta.test_accuracy,
        reference: format!("{}: {}", split.train.source, split.description),
        reference_n: test.len(),
        steps: plan.steps(),
        sampler: plan.sampler().to_string(),
        student_steps: meta.student_steps.0,
        n: opts.n,
        seed: opts.seed,
        batch: opts.batch,
        threads,
        kid_mean: kid.mean,
        kid_std: kid.std,
        kid_subsets: kid.subsets,
        kid_subset_size: kid.subset_size,
        fid,
        floor_n: floor.as_ref().map(|f| f.0),
        floor_kid_mean: floor.as_ref().map(|f| f.1.mean),
        floor_kid_std: floor.as_ref().map(|f| f.1.std),
        floor_fid: floor.as_ref().map(|f| f.2),
        ms_per_sample: 1000.0 * gen_seconds / opts.n as f64,
        eval_seconds: started.elapsed().as_secs_f64(),
        class_hist,
        class_names: saved.meta.class_names.clone(),
        label_agreement,
        grid,
        created: crate::output::utc_now(),
    })
}

/// The readable block `eval` prints.
pub fn format_report(r: &EvalRecord) -> String {
    let mut s = String::new();
    let kind = if r.student_steps == 0 {
        "diffusion model".to_string()
    } else {
        format!("consistency model, T = {}", r.student_steps)
    };
    s += &format!("{}\n", r.name);
    s += &format!("  model       {} ({kind})\n", r.model);
    s += &format!("  sampling    {} {} steps\n", r.steps, r.sampler);
    s += &format!(
        "  samples     {} (seed {}, batch {}, {} threads): {:.2} ms/sample\n",
        r.n, r.seed, r.batch, r.threads, r.ms_per_sample
    );
    s += &format!("  reference   {} images: {}\n", r.reference_n, r.reference);
    s += &format!(
        "  classifier  {} (test accuracy {:.2}%)\n",
        r.classifier,
        100.0 * r.classifier_accuracy
    );
    let floor_kid = match (r.floor_kid_mean, r.floor_kid_std, r.floor_n) {
        (Some(m), Some(sd), Some(n)) => {
            format!(
                "   floor {:.3} ± {:.3} ({n} real images)",
                1e3 * m,
                1e3 * sd
            )
        }
        _ => String::new(),
    };
    s += &format!(
        "  KID x1e3    {:.3} ± {:.3}{floor_kid}   ({} subsets of {})\n",
        1e3 * r.kid_mean,
        1e3 * r.kid_std,
        r.kid_subsets,
        r.kid_subset_size
    );
    let floor_fid = r
        .floor_fid
        .map_or_else(String::new, |f| format!("   floor {f:.3}"));
    s += &format!("  FID         {:.3}{floor_fid}\n", r.fid);
    let hist: Vec<String> = r
        .class_hist
        .iter()
        .enumerate()
        .map(|(k, c)| match r.class_names.get(k) {
            Some(name) => format!("{name}: {c}"),
            None => format!("{k}: {c}"),
        })
        .collect();
    s += &format!("  classes     {}\n", hist.join(", "));
    if let Some(a) = r.label_agreement {
        s += &format!("  label agreement {:.2}%\n", 100.0 * a);
    }
    if let Some(g) = &r.grid {
        s += &format!("  grid        {g}\n");
    }
    s += &format!("  took        {:.1} s", r.eval_seconds);
    s
}

/// Appends `r` as one JSON line to `path` (created if missing). One
/// `write_all` of the whole line on an append-mode file, so concurrent
/// evaluations do not interleave their lines.
pub fn append_result(path: &Path, r: &EvalRecord) -> Result<()> {
    let mut line = serde_json::to_string(r).context("encoding the result")?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
