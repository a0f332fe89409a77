//! A small LeNet-style classifier for the quality benchmark
//! (`fewstep-train classifier` trains it, `fewstep-train eval` scores samples
//! with its penultimate features): conv 5×5 (32) → ReLU → max-pool 2 →
//! conv 5×5 (64) → ReLU → max-pool 2 → linear 128 → ReLU (the 128-d
//! *features*) → dropout → linear K (the logits).
//!
//! Inception features are the usual choice for FID/KID, but no Inception
//! weights can be fetched here, and on 28×28 greyscale images a classifier of
//! the data itself is the better-matched feature extractor anyway. Numbers
//! are therefore comparable between fewstep runs, not with published FIDs.
//!
//! Data splits: an idx directory trains on `train-*` and tests on
//! `t10k-*` (Fashion-MNIST's own split); a PNG folder (or an idx directory
//! without `t10k-*` files) puts every 10th image in load order (sorted
//! sub-folders, sorted file names) in the test split.

use crate::checkpoint::write_atomic;
use crate::data::{self, DataKind, Dataset, PngOptions};
use crate::evaluation::metrics::{Features, argmax_rows};
use anyhow::{Context, Result, bail, ensure};
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::max_pool2d;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fewstep_core::rng::UniformStream;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File name of the classifier inside its run directory.
pub const CLASSIFIER_FILE: &str = "classifier.fscl";
/// Its metadata as readable JSON, beside it (informational; not read back).
pub const CLASSIFIER_JSON: &str = "classifier.json";
/// Version of the file layout.
pub const CLASSIFIER_VERSION: u32 = 1;
/// File magic.
const MAGIC: &[u8] = b"FEWSTEP-CLASSIFIER\n";
/// Images per forward pass when scoring (inference only).
pub const EVAL_BATCH: usize = 500;

/// The network's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Classes `K`.
    pub num_classes: usize,
    /// Channels of the first convolution.
    pub conv1: usize,
    /// Channels of the second convolution.
    pub conv2: usize,
    /// Width of the penultimate (feature) layer.
    pub hidden: usize,
    /// Dropout before the last layer (training only).
    pub dropout: f64,
}

impl ClassifierConfig {
    /// The LeNet-style default for `channels × height × width` images of
    /// `num_classes` classes.
    pub fn new(channels: usize, height: usize, width: usize, num_classes: usize) -> Self {
        Self {
            channels,
            height,
            width,
            num_classes,
            conv1: 32,
            conv2: 64,
            hidden: 128,
            dropout: 0.5,
        }
    }

    /// Rejects shapes the network cannot take.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.channels > 0,
            "classifier: images need at least one channel"
        );
        ensure!(
            self.height >= 4 && self.width >= 4,
            "classifier: images of {}x{} are too small (two 2x2 poolings need at least 4x4)",
            self.height,
            self.width
        );
        ensure!(
            self.num_classes >= 2,
            "classifier: {} classes (need labelled data with at least 2 classes: idx label files or class sub-folders)",
            self.num_classes
        );
        ensure!(
            self.conv1 > 0 && self.conv2 > 0 && self.hidden > 0,
            "classifier: empty layers"
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "classifier: dropout {} is not in [0, 1)",
            self.dropout
        );
        Ok(())
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `CxHxW`, for messages.
    pub fn shape(&self) -> String {
        format!("{}x{}x{}", self.channels, self.height, self.width)
    }

    /// Inputs of the first linear layer (two floor-halving poolings).
    fn flat_len(&self) -> usize {
        self.conv2 * (self.height / 4) * (self.width / 4)
    }
}

/// The network.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    fc1: Linear<B>,
    dropout: Dropout,
    fc2: Linear<B>,
}

fn conv5<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [5, 5])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(device)
}

fn pool2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

impl<B: Backend> Classifier<B> {
    /// A freshly initialised network (Burn's default initialisers, from the
    /// backend's RNG).
    pub fn new(cfg: &ClassifierConfig, device: &B::Device) -> Self {
        Self {
            conv1: conv5(cfg.channels, cfg.conv1, device),
            conv2: conv5(cfg.conv1, cfg.conv2, device),
            fc1: LinearConfig::new(cfg.flat_len(), cfg.hidden).init(device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            fc2: LinearConfig::new(cfg.hidden, cfg.num_classes).init(device),
        }
    }

    /// The penultimate features `[N, hidden]` of images `[N, C, H, W]` in
    /// `[-1, 1]`.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = pool2(relu(self.conv1.forward(x)));
        let x = pool2(relu(self.conv2.forward(x)));
        let [n, c, h, w] = x.dims();
        relu(self.fc1.forward(x.reshape([n, c * h * w])))
    }

    /// Logits `[N, K]` from features (dropout is active only on an autodiff
    /// backend, i.e. while training).
    pub fn head(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(self.dropout.forward(features))
    }

    /// Logits `[N, K]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head(self.features(x))
    }
}

/// Features and logits of many images, on the host.
#[derive(Debug, Clone)]
pub struct Scores {
    /// `[N, hidden]` penultimate features.
    pub features: Features,
    /// `[N, K]` logits.
    pub logits: Features,
}

/// Runs `model` over `images` (`n * C*H*W` values in `[-1, 1]`) in chunks of
/// [`EVAL_BATCH`].
pub fn score<B: Backend>(
    model: &Classifier<B>,
    cfg: &ClassifierConfig,
    images: &[f32],
    device: &B::Device,
) -> Result<Scores> {
    let d = cfg.image_len();
    ensure!(
        d > 0 && images.len().is_multiple_of(d),
        "{} values are not whole {} images",
        images.len(),
        cfg.shape()
    );
    let n = images.len() / d;
    let mut feats = Vec::with_capacity(n * cfg.hidden);
    let mut logits = Vec::with_capacity(n * cfg.num_classes);
    for chunk in images.chunks(EVAL_BATCH * d) {
        let b = chunk.len() / d;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(chunk.to_vec(), [b, cfg.channels, cfg.height, cfg.width]),
            device,
        );
        let f = model.features(x);
        let l = model.head(f.clone());
        feats.extend(crate::export::onnx::tensor_values(&f)?);
        logits.extend(crate::export::onnx::tensor_values(&l)?);
    }
    Ok(Scores {
        features: Features::from_f32(n, cfg.hidden, &feats).context("classifier features")?,
        logits: Features::from_f32(n, cfg.num_classes, &logits).context("classifier logits")?,
    })
}

/// Fraction of `data` that `model` classifies correctly.
pub fn accuracy<B: Backend>(
    model: &Classifier<B>,
    cfg: &ClassifierConfig,
    data: &Dataset,
    device: &B::Device,
) -> Result<f64> {
    ensure!(!data.is_empty(), "no test images");
    let scores = score(model, cfg, &data.images, device)?;
    let correct = argmax_rows(&scores.logits)
        .iter()
        .zip(&data.labels)
        .filter(|&(&p, &l)| p == l as usize)
        .count();
    Ok(correct as f64 / data.len() as f64)
}

/// What a saved classifier records besides its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierMeta {
    /// [`CLASSIFIER_VERSION`].
    pub format: u32,
    /// Network shape.
    pub config: ClassifierConfig,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// Dataset provenance (`idx:PATH` or `png:PATH`).
    pub data_source: String,
    /// How the data was split.
    pub split: String,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Test-split accuracy after the last epoch.
    pub test_accuracy: f64,
    /// Passes over the training split.
    pub epochs: usize,
    /// Examples per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initialisation, shuffling and dropout.
    pub seed: u64,
    /// Seconds of optimiser steps (without the per-epoch test passes).
    pub train_seconds: f64,
    /// Trainer version that wrote it.
    pub trainer_version: String,
    /// When it was written (UTC).
    pub created: String,
}

/// A classifier file in memory: metadata and Burn record.
#[derive(Debug, Clone)]
pub struct SavedClassifier {
    /// Metadata.
    pub meta: ClassifierMeta,
    weights: Vec<u8>,
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl SavedClassifier {
    /// Records a trained network.
    pub fn new<B: Backend>(meta: ClassifierMeta, model: &Classifier<B>) -> Result<Self> {
        let weights = Recorder::<B>::record(&Rec::default(), model.clone().into_record(), ())
            .context("recording the classifier")?;
        Ok(Self { meta, weights })
    }

    /// The network, on backend `B`.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<Classifier<B>> {
        self.meta.config.validate()?;
        let record = Recorder::<B>::load(&Rec::default(), self.weights.clone(), device)
            .context("classifier weights do not load")?;
        Ok(Classifier::new(&self.meta.config, device).load_record(record))
    }

    /// The file's bytes: magic, then the JSON metadata and the weights, each
    /// with a u64 little-endian length.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&self.meta).context("encoding classifier metadata")?;
        let mut out = Vec::with_capacity(MAGIC.len() + 16 + json.len() + self.weights.len());
        out.extend_from_slice(MAGIC);
        for section in [&json, &self.weights] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        Ok(out)
    }

    /// Parses a classifier file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .context("not a fewstep classifier (bad magic)")?;
        let mut sections = Vec::with_capacity(2);
        for name in ["metadata", "weights"] {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .with_context(|| format!("classifier truncated before its {name}"))?;
            let len = usize::try_from(u64::from_le_bytes(*len))
                .with_context(|| format!("classifier {name} length"))?;
            ensure!(tail.len() >= len, "classifier truncated inside its {name}");
            let (section, tail) = tail.split_at(len);
            sections.push(section);
            rest = tail;
        }
        ensure!(
            rest.is_empty(),
            "classifier has {} trailing bytes",
            rest.len()
        );
        let meta: ClassifierMeta =
            serde_json::from_slice(sections[0]).context("classifier metadata")?;
        if meta.format != CLASSIFIER_VERSION {
            bail!(
                "classifier format {} is not supported (this trainer reads {CLASSIFIER_VERSION})",
                meta.format
            );
        }
        meta.config.validate()?;
        Ok(Self {
            meta,
            weights: sections[1].to_vec(),
        })
    }

    /// Reads `path`: a classifier file, or a run directory holding one.
    pub fn load(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join(CLASSIFIER_FILE)
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file)
            .with_context(|| format!("cannot read classifier {}", file.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("classifier {}", file.display()))
    }

    /// Writes the file (atomically) and the readable JSON into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(CLASSIFIER_FILE), &self.to_bytes()?)?;
        let json = serde_json::to_vec_pretty(&self.meta).context("encoding classifier JSON")?;
        write_atomic(&dir.join(CLASSIFIER_JSON), &json)
    }
}

/// A dataset split into training and test images.
#[derive(Debug, Clone)]
pub struct Split {
    /// Training images.
    pub train: Dataset,
    /// Test images (the reference set of `eval`).
    pub test: Dataset,
    /// How it was split, for metadata and reports.
    pub description: String,
}

/// Splits `data` deterministically: image `i` is a test image when
/// `i % 10 == 9` (every 10th in load order).
pub fn every_tenth(data: Dataset) -> Result<Split> {
    ensure!(
        data.len() >= 10,
        "{} holds {} images: the every-10th test split needs at least 10",
        data.source,
        data.len()
    );
    let d = data.image_len();
    let empty = |n: usize| Dataset {
        channels: data.channels,
        height: data.height,
        width: data.width,
        images: Vec::with_capacity(n * d),
        labels: Vec::with_capacity(n),
        class_names: data.class_names.clone(),
        source: data.source.clone(),
    };
    let n_test = data.len() / 10;
    let mut train = empty(data.len() - n_test);
    let mut test = empty(n_test);
    for i in 0..data.len() {
        let part = if i % 10 == 9 { &mut test } else { &mut train };
        part.images.extend_from_slice(data.image(i));
        part.labels.push(data.labels[i]);
    }
    let description = format!(
        "every 10th image in sorted order is a test image ({} test, {} train)",
        test.len(),
        train.len()
    );
    Ok(Split {
        train,
        test,
        description,
    })
}

/// Loads `path` split into training and test images (see the module docs).
pub fn load_split(path: &Path, png: PngOptions) -> Result<Split> {
    match data::detect(path)? {
        DataKind::Idx => {
            let train = data::load_idx_dir(path)?;
            match data::load_idx_test(path, &train)? {
                Some(test) => {
                    let description = format!(
                        "idx train-* ({} images) / t10k-* ({} images)",
                        train.len(),
                        test.len()
                    );
                    Ok(Split {
                        train,
                        test,
                        description,
                    })
                }
                None => {
                    let mut split = every_tenth(train)?;
                    split.description = format!("idx without t10k-* files: {}", split.description);
                    Ok(split)
                }
            }
        }
        DataKind::PngFolder => every_tenth(data::load_png_folder(path, png)?),
    }
}

/// Options of `fewstep-train classifier`; as `clap::Args`, its flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierOptions {
    /// An idx directory (train-* and t10k-* files) or a folder of PNGs in
    /// class sub-folders.
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory: classifier.fscl and classifier.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = PngOptions::default().size)]
    pub image_size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = PngOptions::default().channels)]
    pub image_channels: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl ClassifierOptions {
    /// The PNG folder options (`--image-size`, `--image-channels`: the
    /// classifier's flags are named apart from the training commands'
    /// `--size` and `--channels`).
    pub fn png(&self) -> PngOptions {
        PngOptions {
            size: self.image_size,
            channels: self.image_channels,
        }
    }
}

/// Seed salt of the per-epoch shuffles.
const SHUFFLE_SALT: u64 = 0x7368_7566_666c_6501;

/// The order of epoch `epoch`'s examples: a seeded Fisher–Yates shuffle.
fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = UniformStream::new(seed ^ SHUFFLE_SALT, epoch as u64);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = ((rng.next_f64() * (i + 1) as f64) as usize).min(i);
        idx.swap(i, j);
    }
    idx
}

/// `fewstep-train classifier`: trains on the training split with Adam and
/// cross-entropy, reports the test accuracy after each epoch, and saves the
/// network and its metadata into `opts.out`. Returns the metadata.
pub fn train<B: AutodiffBackend>(
    opts: &ClassifierOptions,
    device: B::Device,
) -> Result<ClassifierMeta> {
    ensure!(opts.epochs >= 1, "--epochs must be >= 1");
    ensure!(opts.batch >= 1, "--batch must be >= 1");
    ensure!(
        opts.lr.is_finite() && opts.lr > 0.0,
        "--lr must be a positive number, not {}",
        opts.lr
    );
    let file = opts.out.join(CLASSIFIER_FILE);
    if file.exists() {
        bail!(
            "{} already exists: choose another --out (or delete it to retrain)",
            file.display()
        );
    }
    let mut split = load_split(&opts.data, opts.png())?;
    if let Some(n) = opts.limit {
        ensure!(n >= 1, "--limit must be >= 1");
        split.train.truncate(n);
        split.description = format!(
            "{}; training on the first {} of them",
            split.description,
            split.train.len()
        );
    }
    let (train_set, test_set) = (&split.train, &split.test);
    let cfg = ClassifierConfig::new(
        train_set.channels,
        train_set.height,
        train_set.width,
        train_set.num_classes(),
    );
    cfg.validate()?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;

    let mut model = {
        let _rng = crate::algorithms::train::BACKEND_RNG
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        B::seed(&device, opts.seed);
        Classifier::<B>::new(&cfg, &device)
    };
    let mut optim = AdamConfig::new().init::<B, Classifier<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let n = train_set.len();
    let steps_per_epoch = n.div_ceil(opts.batch);
    let total = (opts.epochs * steps_per_epoch) as u64;
    eprintln!(
        "fewstep-train classifier: {} images {} from {}, {} classes; split: {}; {} epochs of {steps_per_epoch} steps",
        n,
        cfg.shape(),
        train_set.source,
        cfg.num_classes,
        split.description,
        opts.epochs
    );
    let bar = crate::output::progress_bar(total, opts.quiet)?;
    let d = cfg.image_len();
    let mut train_seconds = 0.0;
    let mut test_accuracy = 0.0;
    let mut step = 0u64;
    for epoch in 0..opts.epochs {
        let (mut loss_sum, mut loss_count) = (0.0, 0usize);
        for idx in epoch_order(opts.seed, epoch, n).chunks(opts.batch) {
            let t0 = Instant::now();
            let b = idx.len();
            let mut x = Vec::with_capacity(b * d);
            let mut y = Vec::with_capacity(b);
            for &i in idx {
                x.extend_from_slice(train_set.image(i));
                y.push(i64::from(train_set.labels[i]));
            }
            let x = Tensor::<B, 4>::from_data(
                TensorData::new(x, [b, cfg.channels, cfg.height, cfg.width]),
                &device,
            );
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [b]), &device);
            let logits = {
                // Dropout masks come from the backend's global RNG: seeded
                // per step under the lock, so a run is reproducible even
                // beside other trainers in one process (tests).
                let _rng = crate::algorithms::train::BACKEND_RNG
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                B::seed(
                    &device,
                    crate::algorithms::train::dropout_seed(opts.seed, step),
                );
                model.forward(x)
            };
            let loss = loss_fn.forward(logits, y);
            let loss_value: f64 = loss.clone().into_scalar().elem();
            if !loss_value.is_finite() {
                bail!("loss is {loss_value} at step {step}: training diverged (lower --lr?)");
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(opts.lr, model, grads);
            train_seconds += t0.elapsed().as_secs_f64();
            step += 1;
            loss_sum += loss_value * b as f64;
            loss_count += b;
            bar.set_position(step);
            bar.set_message(format!(
                "epoch {}/{} loss {:.4}",
                epoch + 1,
                opts.epochs,
                loss_sum / loss_count as f64
            ));
        }
        test_accuracy = accuracy(&model.valid(), &cfg, test_set, &device)?;
        // suspend, not println: a hidden bar (--quiet, no terminal) drops
        // println's text, and the epoch lines are the log.
        bar.suspend(|| {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, test accuracy {:.2}%",
                epoch + 1,
                opts.epochs,
                loss_sum / loss_count.max(1) as f64,
                100.0 * test_accuracy
            )
        });
    }
    bar.finish_and_clear();
    let meta = ClassifierMeta {
        format: CLASSIFIER_VERSION,
        config: cfg,
        class_names: train_set.class_names.clone(),
        data_source: train_set.source.clone(),
        split: split.description.clone(),
        train_images: train_set.len(),
        test_images: test_set.len(),
        test_accuracy,
        epochs: opts.epochs,
        batch: opts.batch,
        lr: opts.lr,
        seed: opts.seed,
        train_seconds,
        trainer_version: env!("CARGO_PKG_VERSION").to_string(),
        created: crate::output::utc_now(),
    };
    SavedClassifier::new(meta.clone(), &model.valid())?.save(&opts.out)?;
    eprintln!(
        "done: {} epochs in {train_seconds:.0} s of training; saved {}",
        opts.epochs,
        file.display()
    );
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn toy(n: usize) -> Dataset {
        Dataset {
            channels: 1,
            height: 4,
            width: 4,
            images: (0..n * 16).map(|i| i as f32).collect(),
            labels: (0..n as u32).collect(),
            class_names: (0..n).map(|i| i.to_string()).collect(),
            source: "toy".into(),
        }
    }

    #[test]
    fn every_tenth_image_is_a_test_image() {
        let split = every_tenth(toy(25)).unwrap();
        assert_eq!(split.test.labels, vec![9, 19]);
        assert_eq!(split.train.len(), 23);
        assert_eq!(split.test.image(1)[0], (19 * 16) as f32);
        assert!(!split.train.labels.contains(&9));
        assert!(every_tenth(toy(9)).is_err());
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(1, 0, 100);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1, 0, 100));
        assert_ne!(a, epoch_order(1, 1, 100));
    }

    #[test]
    fn shapes_features_and_file_round_trip() {
        let device = Default::default();
        for (c, h, w) in [(1, 28, 28), (3, 32, 32), (1, 8, 10)] {
            let cfg = ClassifierConfig::new(c, h, w, 10);
            cfg.validate().unwrap();
            let model = Classifier::<Cpu>::new(&cfg, &device);
            let x = vec![0.25f32; 3 * cfg.image_len()];
            let s = score(&model, &cfg, &x, &device).unwrap();
            assert_eq!((s.features.rows(), s.features.dim()), (3, 128));
            assert_eq!((s.logits.rows(), s.logits.dim()), (3, 10));
            assert!(
                (0..128).all(|j| s.features.row(0)[j] >= 0.0),
                "ReLU features"
            );
            let meta = ClassifierMeta {
                format: CLASSIFIER_VERSION,
                config: cfg.clone(),
                class_names: vec![],
                data_source: "toy".into(),
                split: "none".into(),
                train_images: 0,
                test_images: 0,
                test_accuracy: 0.5,
                epochs: 1,
                batch: 1,
                lr: 1e-3,
                seed: 0,
                train_seconds: 0.0,
                trainer_version: "test".into(),
                created: "now".into(),
            };
            let bytes = SavedClassifier::new(meta, &model)
                .unwrap()
                .to_bytes()
                .unwrap();
            let back = SavedClassifier::from_bytes(&bytes).unwrap();
            assert_eq!(back.meta.config, cfg);
            let again = score(&back.model::<Cpu>(&device).unwrap(), &cfg, &x, &device).unwrap();
            assert_eq!(again.logits, s.logits);
            assert!(SavedClassifier::from_bytes(&bytes[..bytes.len() - 1]).is_err());
            assert!(SavedClassifier::from_bytes(b"nonsense").is_err());
        }
        assert!(ClassifierConfig::new(1, 3, 8, 10).validate().is_err());
        assert!(ClassifierConfig::new(1, 8, 8, 1).validate().is_err());
    }
}
