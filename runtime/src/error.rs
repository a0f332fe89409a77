//! Typed errors: every bad input is one of these, with a message that names
//! the offending key, tensor or argument.

use std::path::PathBuf;

/// Why a model could not be loaded (or stamped).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A region of an open file (`Model::from_file_region`) could not be read.
    #[error("cannot read the model at byte {offset}{} of the open file: {source}", match .len { Some(n) => format!(" (length {n})"), None => String::new() })]
    Region {
        /// Where the model starts in the file.
        offset: u64,
        /// Its length (`None`: to the end of the file).
        len: Option<u64>,
        /// The OS error, or why the region does not fit the file.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX protobuf (truncated or not ONNX at all).
    #[error("not a valid ONNX model (protobuf decoding failed: {0})")]
    Decode(String),
    /// The `ModelProto` has no graph.
    #[error("the ONNX model has no graph")]
    NoGraph,
    /// A required `fewstep.*` metadata key is absent.
    #[error("missing required metadata key `{key}` (is this a fewstep model? see `fewstep stamp`)")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A metadata key appears more than once.
    #[error("metadata key `{key}` appears more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A `fewstep.*` value could not be parsed.
    #[error("metadata key `{key}` has a bad value `{value}`: {reason}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `fewstep.format` is a version this runtime does not read.
    #[error(
        "metadata key `fewstep.format` is `{found}`; this runtime reads format version {supported}"
    )]
    UnsupportedFormat {
        /// The version found.
        found: u32,
        /// The version supported.
        supported: u32,
    },
    /// A required graph input is absent.
    #[error("the graph has no input named `{name}`")]
    MissingInput {
        /// `z` or `t` (or `label` for a class-conditional model).
        name: &'static str,
    },
    /// The graph has an input the format does not define.
    #[error(
        "unexpected graph input `{name}` (a fewstep model takes `z`, `t` and optionally `label`)"
    )]
    UnexpectedInput {
        /// The input's name.
        name: String,
    },
    /// A graph input or output has the wrong type or shape.
    #[error("graph tensor `{name}`: {reason}")]
    BadTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph does not have exactly one output.
    #[error("the graph must have exactly one output, it has {count}")]
    OutputCount {
        /// How many it has.
        count: usize,
    },
    /// tract could not translate, type or optimise the graph.
    #[error("the network could not be prepared by tract: {0}")]
    Tract(String),
    /// A thread pool could not be created.
    #[error("cannot create a thread pool: {0}")]
    ThreadPool(String),
}

/// Why a generation request failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The step count or sampler does not fit the model (the message names
    /// the step count a consistency model was trained for).
    #[error("{0}")]
    Plan(#[from] fewstep_core::PlanError),
    /// A batch of 0 images.
    #[error("batch size must be at least 1")]
    ZeroBatch,
    /// Thread count 0.
    #[error("thread count must be at least 1")]
    ZeroThreads,
    /// [`crate::GenerateRequest::run`] on a request made by
    /// `GenerateRequest::new()`, which names no model.
    #[error(
        "the request has no model: run it with model.run(request), or build it with model.generate()"
    )]
    NoModel,
    /// The request would need more memory than its budget allows (refused
    /// before anything is allocated).
    #[error(
        "a batch of {batch} would need about {} MiB, over the memory budget of {} MiB: use a smaller batch or raise the budget",
        needed.div_ceil(1 << 20),
        budget / (1 << 20)
    )]
    MemoryBudget {
        /// Estimated bytes.
        needed: u64,
        /// The budget in bytes.
        budget: u64,
        /// Images asked for.
        batch: usize,
    },
    /// Caller noise has the wrong number of values.
    #[error(
        "initial noise has {actual} values; expected {expected} ({batch} images of {image_len} values)"
    )]
    NoiseShape {
        /// Values expected.
        expected: usize,
        /// Values given.
        actual: usize,
        /// Images in the batch.
        batch: usize,
        /// Values per image (`C*H*W`).
        image_len: usize,
    },
    /// Caller noise contains NaN or infinity.
    #[error("initial noise contains NaN or infinite values")]
    NoiseNotFinite,
    /// The number of labels is neither 1 nor the batch size.
    #[error("{actual} labels given for a batch of {batch} (give one label, or one per image)")]
    LabelCount {
        /// Labels given.
        actual: usize,
        /// Batch size.
        batch: usize,
    },
    /// A label outside `0..num_classes`.
    #[error(
        "label {label} is out of range: this model has {num_classes} classes, numbered from 0; give no label for unconditional samples"
    )]
    LabelOutOfRange {
        /// The label.
        label: i64,
        /// The model's `fewstep.num_classes`.
        num_classes: u32,
    },
    /// Labels or guidance asked of an unconditional model.
    #[error(
        "{what} needs a class-conditional model; this model is unconditional (fewstep.num_classes is 0)"
    )]
    Unconditional {
        /// `labels` or `guidance`.
        what: &'static str,
    },
    /// A guidance scale that is not a finite number.
    #[error("guidance scale must be finite, got {0}")]
    BadGuidance(f32),
    /// The network produced NaN or infinity.
    #[error("the network output contains NaN or infinite values at step {step} (t = {t})")]
    NonFinite {
        /// 1-based step.
        step: u32,
        /// Its time.
        t: f64,
    },
    /// Cancelled before the first step finished: there is no estimate yet.
    #[error("cancelled before the first step completed")]
    Cancelled,
    /// The network failed to run.
    #[error("the network failed to run: {0}")]
    Tract(String),
    /// A thread pool could not be created.
    #[error("cannot create a thread pool: {0}")]
    ThreadPool(String),
    /// An init image or mask whose size fits neither the batch nor one image.
    #[error(
        "{what} has {actual} values; expected {} (batch {batch} × {image_len} values) or {image_len} (one image for all){}",
        batch * image_len,
        plane.map(|p| format!(", or {} or {p} (one H*W plane per image, or for all)", batch * p)).unwrap_or_default()
    )]
    EditShape {
        /// `init image` or `mask`.
        what: &'static str,
        /// Values given.
        actual: usize,
        /// Images in the batch.
        batch: usize,
        /// Values per image (`C*H*W`).
        image_len: usize,
        /// `H*W`, for a mask.
        plane: Option<usize>,
    },
    /// The init image holds NaN or infinity.
    #[error("the init image contains NaN or infinite values")]
    InitNotFinite,
    /// A mask value outside `[0, 1]`.
    #[error("mask value {index} is outside [0, 1] (1 = generate, 0 = keep)")]
    MaskValue {
        /// Index of the first bad value (after broadcasting).
        index: usize,
    },
    /// A mask without an init image.
    #[error("a mask needs an init image: the mask says which of its pixels to keep")]
    MaskWithoutInit,
    /// A strength other than 1 without an init image.
    #[error("strength needs an init image to start from")]
    StrengthWithoutInit,
    /// A buffer length disagreed with the model (an internal invariant).
    #[error("internal buffer mismatch: {0}")]
    Length(#[from] fewstep_core::LengthMismatch),
}

/// Why an output could not be written or an input file read.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `.npy` file this reader does not accept.
    #[error("{path}: {reason}")]
    Npy {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An init image or mask that does not fit the model.
    #[error("{path}: {reason}")]
    Input {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}
