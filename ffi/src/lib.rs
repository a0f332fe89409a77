//! # libfewstep: the C API of fewstep
//!
//! Load a fewstep ONNX model and generate images from C, C++, Swift or
//! Kotlin/JNI. Conventions (after rustls-ffi):
//!
//! - Opaque handles (`fewstep_model`), created by `fewstep_model_load*` and
//!   released by `fewstep_model_free`.
//! - Every function that can fail returns a `fewstep_status`; on failure,
//!   `fewstep_last_error()` describes what went wrong, in a thread-local
//!   string valid until the next fewstep call on the same thread.
//! - No entry point panics across the boundary, aborts, or writes to
//!   stdout/stderr: panics are caught and reported as `FEWSTEP_ERROR_PANIC`
//!   with their message in `fewstep_last_error()`; NULL pointers, short
//!   buffers, invalid values and bad paths return a status.
//! - Parameters and fields that hold a status or an enumerated value are
//!   plain integers, and every integer is handled: a value this library
//!   does not define gives `FEWSTEP_ERROR_INVALID_ARGUMENT` (or, for
//!   `fewstep_status_name`, `"FEWSTEP_UNKNOWN_STATUS"`).
//! - A model handle may be used by several threads at once, with any mix of
//!   requests; all per-call state lives in the call, and a call with
//!   `threads > 1` runs on a thread pool it holds alone for its length.
//!   Do not free the model while another thread uses it.
//!
//! The header `include/fewstep.h` is generated from this file by cbindgen
//! (`ffi/cbindgen.toml`); `ffi/tests/header.rs` fails when it is stale.
#![allow(non_camel_case_types)]

use std::cell::Cell;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use fewstep_runtime::fewstep_core::Prediction;
use fewstep_runtime::{CancelToken, GenerateError, Images, LoadError, Model, SamplerChoice};

mod cancel;
mod pixels;
pub use cancel::*;
pub use pixels::*;

/// A loaded model. Opaque; thread-safe; free with `fewstep_model_free`.
pub struct fewstep_model {
    // Shared by the handles `fewstep_model_retain` makes; the model (and its
    // worker threads) go when the last handle is freed.
    inner: std::sync::Arc<Model>,
}

impl std::fmt::Debug for fewstep_model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("fewstep_model").finish_non_exhaustive()
    }
}

/// Result of every fallible call. `FEWSTEP_OK` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fewstep_status {
    /// Success.
    FEWSTEP_OK = 0,
    /// The progress callback asked to stop: the output buffer holds the
    /// latest clean-image estimate (a usable, less refined image).
    FEWSTEP_CANCELLED = 1,
    /// A required pointer argument was NULL.
    FEWSTEP_ERROR_NULL_ARGUMENT = 2,
    /// An argument is out of range (batch 0, threads, guidance, an unknown
    /// sampler value, ...).
    FEWSTEP_ERROR_INVALID_ARGUMENT = 3,
    /// The output buffer is shorter than the result.
    FEWSTEP_ERROR_BUFFER_TOO_SMALL = 4,
    /// The model file could not be read.
    FEWSTEP_ERROR_IO = 5,
    /// The bytes are not a valid fewstep model (not ONNX, missing or bad
    /// `fewstep.*` metadata, wrong inputs/outputs).
    FEWSTEP_ERROR_INVALID_MODEL = 6,
    /// The step count does not fit the model (a consistency model samples
    /// with exactly the steps it was trained for; 0 steps).
    FEWSTEP_ERROR_STEPS = 7,
    /// A class label is out of range, or labels/guidance were asked of an
    /// unconditional model.
    FEWSTEP_ERROR_LABEL = 8,
    /// The network produced NaN or infinity.
    FEWSTEP_ERROR_NON_FINITE = 9,
    /// The network failed to run (or a thread pool could not be made).
    FEWSTEP_ERROR_RUNTIME = 10,
    /// An internal error (a caught panic). Please report it.
    FEWSTEP_ERROR_PANIC = 11,
    /// `fewstep_request.struct_size` is not one this library knows: call
    /// `fewstep_request_init` and use the header the library was built with.
    FEWSTEP_ERROR_STRUCT_SIZE = 12,
    /// The request would need more memory than `fewstep_request.memory_budget`
    /// allows (a huge batch or image); refused before allocating anything.
    FEWSTEP_ERROR_MEMORY_BUDGET = 13,
}
use fewstep_status::*;

/// Sampler: the model's default (a consistency model's own `T` DDIM steps;
/// aDDIM for a diffusion model).
pub const FEWSTEP_SAMPLER_AUTO: u32 = 0;
/// Sampler: DDIM.
pub const FEWSTEP_SAMPLER_DDIM: u32 = 1;
/// Sampler: aDDIM (the paper's adjusted DDIM).
pub const FEWSTEP_SAMPLER_ADDIM: u32 = 2;
/// `fewstep_request.label` value for "no label" (the unconditional model).
pub const FEWSTEP_LABEL_NONE: i64 = -1;

/// `fewstep_request.preview_format`: `x_hat` as float32 `[N,C,H,W]` in data
/// space (`len` floats).
pub const FEWSTEP_PREVIEW_F32: u32 = 0;
/// `fewstep_request.preview_format`: `x_hat` as interleaved RGB8
/// `[N,H,W,3]` (`len` bytes; one channel expanded to gray RGB).
pub const FEWSTEP_PREVIEW_RGB8: u32 = 1;

/// `fewstep_request.pool_wait`: the library's choice (today
/// `FEWSTEP_WAIT_SLEEP`; see `ffi/README.md`, "Threads and battery").
pub const FEWSTEP_WAIT_DEFAULT: u32 = 0;
/// `fewstep_request.pool_wait`: with `threads > 1`, the helper threads spin
/// between the parallel parts of each network evaluation: fastest when the
/// call has the cores to itself, but they keep their cores busy for the
/// whole call, and with more busy threads than cores (other calls, other
/// apps) throughput halves.
pub const FEWSTEP_WAIT_SPIN: u32 = 1;
/// `fewstep_request.pool_wait`: the helper threads sleep when out of work:
/// no cycles burnt waiting (battery, other apps' threads), for some speed.
pub const FEWSTEP_WAIT_SLEEP: u32 = 2;

/// Called after each step with the current clean-image estimate `x_hat`
/// of every image (after guidance, clipping and an inpainting mask), in
/// `fewstep_request.preview_format`: `pixels` holds `len` floats or bytes
/// and is valid only during the call. Runs on the thread that called
/// `fewstep_generate_*`. Return 0 to continue, non-zero to cancel (as the
/// progress callback).
pub type fewstep_preview_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        step: u32,
        total: u32,
        pixels: *const c_void,
        len: usize,
    ) -> i32,
>;

/// Called once per sampling step, with the step just completed (1-based)
/// and the total, on the thread that called `fewstep_generate_*`. A step is
/// one network evaluation of the batch (with guidance, the conditional and
/// unconditional rows are evaluated together, still one call per step).
/// Return 0 to continue, non-zero to stop: the call then returns
/// `FEWSTEP_CANCELLED` with that step's estimate in the buffer. After the
/// last step the images are complete: a non-zero return there is ignored
/// and the call returns `FEWSTEP_OK`.
pub type fewstep_progress_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, step: u32, total: u32) -> i32>;

/// A generation request. Always initialise with `fewstep_request_init`,
/// then change fields: `struct_size` lets later versions add fields without
/// breaking callers built against this header.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fewstep_request {
    /// `sizeof(fewstep_request)`, set by `fewstep_request_init`. The library
    /// accepts exactly the sizes of its published layouts (this header's,
    /// and older headers' smaller ones); any other value is
    /// `FEWSTEP_ERROR_STRUCT_SIZE`.
    pub struct_size: u32,
    /// Images to generate (default 1).
    pub batch: u32,
    /// Noise seed (default 0). Image `i` of a seed is the same at any batch size.
    pub seed: u64,
    /// Network evaluations; 0 = the model's default (default 0).
    pub steps: u32,
    /// `FEWSTEP_SAMPLER_*` (default `FEWSTEP_SAMPLER_AUTO`).
    pub sampler: u32,
    /// Class label for every image: `0 <= label < num_classes`
    /// (`FEWSTEP_ERROR_LABEL` otherwise), or `FEWSTEP_LABEL_NONE` (default):
    /// a class-conditional model then samples unconditionally.
    pub label: i64,
    /// Classifier-free guidance scale `w` (default 1 = none):
    /// `out = out_null + w (out_cond - out_null)`. `w > 1` strengthens the
    /// class, `0 <= w < 1` moves towards unconditional samples (0 is
    /// unconditional), `w < 0` pushes away from the class. Any `w != 1`
    /// evaluates 2N rows per step (about twice the time). NaN or infinity is
    /// `FEWSTEP_ERROR_INVALID_ARGUMENT`; `w != 1` on a model without classes
    /// is `FEWSTEP_ERROR_LABEL`.
    pub guidance: f32,
    /// Threads for this call; 0 = all cores (default 0). The threads belong
    /// to the model: a call with more than one takes a pool of its own from
    /// the model (made on first use, up to 4 idle pools kept); its helper
    /// threads sleep or spin between operators as `pool_wait` says. On a
    /// phone `threads = 1` uses the least energy per image. The pools'
    /// threads end when the model's last handle is freed.
    pub threads: u32,
    /// 1 clips each clean-image estimate to the data range, 0 does not (default 0).
    pub clip: u32,
    /// Optional progress/cancel callback (default NULL).
    pub progress: fewstep_progress_fn,
    /// Passed to `progress` unchanged (default NULL).
    pub user_data: *mut c_void,
    /// Refuse the request with `FEWSTEP_ERROR_MEMORY_BUDGET` when its
    /// estimated memory exceeds this many bytes; 0 = the library default,
    /// 512 MiB, chosen for phones (default 0); `fewstep_estimate_memory`
    /// gives a request's estimate. Appended after the first published layout:
    /// requests from headers without it get the default.
    pub memory_budget: u64,
    /// Per-image class labels: `labels_len` values (1, or one per image),
    /// each `0 <= label < num_classes`; when non-NULL it replaces `label`
    /// (default NULL). Fields from here on were appended in the third
    /// layout; requests from older headers get their defaults.
    pub labels: *const i64,
    /// Number of values at `labels`.
    pub labels_len: usize,
    /// Caller-given initial noise `z_1`, float32 `[N,C,H,W]` (`noise_len`
    /// = `batch * C * H * W` values), instead of the seeded noise (default
    /// NULL: `seed`).
    pub noise: *const f32,
    /// Number of values at `noise`.
    pub noise_len: usize,
    /// Image editing: start from this image, float32 in data space,
    /// `[N,C,H,W]` or one `[C,H,W]` image for the batch (`init_len`
    /// values). With `strength < 1` it is img2img; with `mask`, inpainting
    /// (default NULL).
    pub init: *const f32,
    /// Number of values at `init`.
    pub init_len: usize,
    /// img2img strength in (0, 1]: how much of the way from noise to data
    /// is walked again. A consistency model with `T` steps starts at its
    /// segment boundary `ceil(strength * T) / T` (so it takes that many
    /// steps); a diffusion model starts at `t = strength`. Values other
    /// than 1 need `init` (default 1).
    pub strength: f32,
    /// Inpainting mask, values in [0, 1]: 1 = generate, 0 = keep `init`
    /// (exactly, in the output). `[N,C,H,W]`, `[C,H,W]`, `[N,H,W]` or
    /// `[H,W]` (`mask_len` values; broadcast over the batch and channels).
    /// Needs `init` (default NULL).
    pub mask: *const f32,
    /// Number of values at `mask`.
    pub mask_len: usize,
    /// Optional preview callback with each step's `x_hat` (default NULL).
    pub preview: fewstep_preview_fn,
    /// `FEWSTEP_PREVIEW_*` (default `FEWSTEP_PREVIEW_F32`).
    pub preview_format: u32,
    /// A cancel token another thread may trigger with
    /// `fewstep_cancel_token_cancel`: the call stops within one operator of
    /// the network (default NULL). It must stay alive until this call
    /// returns.
    pub cancel: *const fewstep_cancel_token,
    /// `FEWSTEP_WAIT_*`: what the helper threads of a call with
    /// `threads > 1` do between operators (default `FEWSTEP_WAIT_DEFAULT`).
    /// Appended in the fourth layout.
    pub pool_wait: u32,
}

const REQUEST_SIZE: usize = std::mem::size_of::<fewstep_request>();
/// The size of the first published layout (everything before
/// `memory_budget`). Callers built against an older, smaller header keep
/// working: missing fields take defaults.
const REQUEST_MIN_SIZE: usize = std::mem::offset_of!(fewstep_request, memory_budget);
/// The second layout: up to and including `memory_budget`.
const REQUEST_V2_SIZE: usize = std::mem::offset_of!(fewstep_request, labels);
/// The third layout: up to and including `cancel`.
const REQUEST_V3_SIZE: usize = std::mem::offset_of!(fewstep_request, pool_wait);
/// Every `struct_size` a published header gives, oldest first.
const REQUEST_SIZES: [usize; 4] = [
    REQUEST_MIN_SIZE,
    REQUEST_V2_SIZE,
    REQUEST_V3_SIZE,
    REQUEST_SIZE,
];

impl Default for fewstep_request {
    fn default() -> Self {
        fewstep_request {
            struct_size: REQUEST_SIZE as u32,
            batch: 1,
            seed: 0,
            steps: 0,
            sampler: FEWSTEP_SAMPLER_AUTO,
            label: FEWSTEP_LABEL_NONE,
            guidance: 1.0,
            threads: 0,
            clip: 0,
            progress: None,
            user_data: std::ptr::null_mut(),
            memory_budget: 0,
            labels: std::ptr::null(),
            labels_len: 0,
            noise: std::ptr::null(),
            noise_len: 0,
            init: std::ptr::null(),
            init_len: 0,
            strength: 1.0,
            mask: std::ptr::null(),
            mask_len: 0,
            preview: None,
            preview_format: FEWSTEP_PREVIEW_F32,
            cancel: std::ptr::null(),
            pool_wait: FEWSTEP_WAIT_DEFAULT,
        }
    }
}

/// What went wrong, for the thread-local last error.
struct Failure {
    status: fewstep_status,
    message: String,
}

impl Failure {
    fn new(status: fewstep_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    fn null(what: &str) -> Self {
        Failure::new(FEWSTEP_ERROR_NULL_ARGUMENT, format!("{what} is NULL"))
    }
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        let status = match e {
            LoadError::Io { .. } | LoadError::Region { .. } => FEWSTEP_ERROR_IO,
            _ => FEWSTEP_ERROR_INVALID_MODEL,
        };
        Failure::new(status, e.to_string())
    }
}

impl From<GenerateError> for Failure {
    fn from(e: GenerateError) -> Self {
        let status = match e {
            GenerateError::Plan(fewstep_runtime::PlanError::BadStrength) => {
                FEWSTEP_ERROR_INVALID_ARGUMENT
            }
            GenerateError::Plan(_) => FEWSTEP_ERROR_STEPS,
            GenerateError::ZeroBatch
            | GenerateError::ZeroThreads
            | GenerateError::NoModel
            | GenerateError::NoiseShape { .. }
            | GenerateError::NoiseNotFinite
            | GenerateError::BadGuidance(_)
            | GenerateError::EditShape { .. }
            | GenerateError::InitNotFinite
            | GenerateError::MaskValue { .. }
            | GenerateError::MaskWithoutInit
            | GenerateError::StrengthWithoutInit => FEWSTEP_ERROR_INVALID_ARGUMENT,
            GenerateError::LabelCount { .. }
            | GenerateError::LabelOutOfRange { .. }
            | GenerateError::Unconditional { .. } => FEWSTEP_ERROR_LABEL,
            GenerateError::NonFinite { .. } => FEWSTEP_ERROR_NON_FINITE,
            GenerateError::MemoryBudget { .. } => FEWSTEP_ERROR_MEMORY_BUDGET,
            GenerateError::Cancelled => FEWSTEP_CANCELLED,
            GenerateError::Tract(_) | GenerateError::ThreadPool(_) | GenerateError::Length(_) => {
                FEWSTEP_ERROR_RUNTIME
            }
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would truncate the C string; replace them.
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

thread_local! {
    /// Depth of fewstep entry points running on this thread.
    static IN_CALL: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic on this thread (inside an entry point) was raised.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes panics inside the library silent: a library must not write to the
/// app's stderr. The panic still becomes `FEWSTEP_ERROR_PANIC` with its
/// message (and, when raised on the calling thread, its source location) in
/// `fewstep_last_error()`. Panics elsewhere in the process (the app's own
/// Rust code, if any shares this copy of std) go to the hook that was
/// installed before, unchanged.
fn quiet_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_call = IN_CALL.with(Cell::get) > 0;
            // The runtime's worker threads; their panics reach the caller
            // through rayon.
            let worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(fewstep_runtime::WORKER_THREAD_PREFIX));
            if in_call || worker {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_LOCATION.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Counts an entry point as running on this thread while alive.
struct InCall;

impl InCall {
    fn enter() -> Self {
        IN_CALL.with(|c| c.set(c.get() + 1));
        InCall
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        IN_CALL.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Runs `f`, turning a panic into its message.
fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    quiet_panics();
    let _in_call = InCall::enter();
    PANIC_LOCATION.with(|p| p.borrow_mut().take());
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        match PANIC_LOCATION.with(|p| p.borrow_mut().take()) {
            Some(at) => format!("{what} (at {at})"),
            None => what,
        }
    })
}

/// Runs an entry point: clears the last error, catches panics, records failures.
fn guard(f: impl FnOnce() -> Result<fewstep_status, Failure>) -> fewstep_status {
    set_last_error("");
    match catch_quietly(f) {
        Ok(Ok(status)) => status,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(what) => {
            set_last_error(&format!("internal error (panic): {what}"));
            FEWSTEP_ERROR_PANIC
        }
    }
}

/// The library version, e.g. `"0.1.0"`. Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fewstep_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed fewstep call on this thread, or `""`.
/// Valid until the next fewstep call on this thread; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn fewstep_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A short, static name for a status (e.g. `"FEWSTEP_ERROR_IO"`), or
/// `"FEWSTEP_UNKNOWN_STATUS"` for a value this library does not define (a
/// status from a newer library, or any other integer). Static; never NULL.
///
/// Takes a plain `int`: C may pass any integer where a `fewstep_status` is
/// expected, and every value is handled.
#[unsafe(no_mangle)]
pub extern "C" fn fewstep_status_name(status: c_int) -> *const c_char {
    status_name(status).as_ptr()
}

/// The status with this value, if it is one.
fn status_from_int(v: c_int) -> Option<fewstep_status> {
    const ALL: [fewstep_status; 14] = [
        FEWSTEP_OK,
        FEWSTEP_CANCELLED,
        FEWSTEP_ERROR_NULL_ARGUMENT,
        FEWSTEP_ERROR_INVALID_ARGUMENT,
        FEWSTEP_ERROR_BUFFER_TOO_SMALL,
        FEWSTEP_ERROR_IO,
        FEWSTEP_ERROR_INVALID_MODEL,
        FEWSTEP_ERROR_STEPS,
        FEWSTEP_ERROR_LABEL,
        FEWSTEP_ERROR_NON_FINITE,
        FEWSTEP_ERROR_RUNTIME,
        FEWSTEP_ERROR_PANIC,
        FEWSTEP_ERROR_STRUCT_SIZE,
        FEWSTEP_ERROR_MEMORY_BUDGET,
    ];
    ALL.into_iter().find(|s| *s as c_int == v)
}

fn status_name(v: c_int) -> &'static CStr {
    let Some(status) = status_from_int(v) else {
        return c"FEWSTEP_UNKNOWN_STATUS";
    };
    match status {
        FEWSTEP_OK => c"FEWSTEP_OK",
        FEWSTEP_CANCELLED => c"FEWSTEP_CANCELLED",
        FEWSTEP_ERROR_NULL_ARGUMENT => c"FEWSTEP_ERROR_NULL_ARGUMENT",
        FEWSTEP_ERROR_INVALID_ARGUMENT => c"FEWSTEP_ERROR_INVALID_ARGUMENT",
        FEWSTEP_ERROR_BUFFER_TOO_SMALL => c"FEWSTEP_ERROR_BUFFER_TOO_SMALL",
        FEWSTEP_ERROR_IO => c"FEWSTEP_ERROR_IO",
        FEWSTEP_ERROR_INVALID_MODEL => c"FEWSTEP_ERROR_INVALID_MODEL",
        FEWSTEP_ERROR_STEPS => c"FEWSTEP_ERROR_STEPS",
        FEWSTEP_ERROR_LABEL => c"FEWSTEP_ERROR_LABEL",
        FEWSTEP_ERROR_NON_FINITE => c"FEWSTEP_ERROR_NON_FINITE",
        FEWSTEP_ERROR_RUNTIME => c"FEWSTEP_ERROR_RUNTIME",
        FEWSTEP_ERROR_PANIC => c"FEWSTEP_ERROR_PANIC",
        FEWSTEP_ERROR_STRUCT_SIZE => c"FEWSTEP_ERROR_STRUCT_SIZE",
        FEWSTEP_ERROR_MEMORY_BUDGET => c"FEWSTEP_ERROR_MEMORY_BUDGET",
    }
}

/// The loaders' common shape: `*out` is cleared first (so it is NULL after
/// any failure), then `load` runs and its model becomes a new handle.
fn load_into(
    out: *mut *mut fewstep_model,
    load: impl FnOnce() -> Result<Result<Model, LoadError>, Failure>,
) -> fewstep_status {
    guard(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *out = std::ptr::null_mut() };
        let model = load()??;
        let handle = Box::into_raw(Box::new(fewstep_model {
            inner: std::sync::Arc::new(model),
        }));
        // SAFETY: as above.
        unsafe { *out = handle };
        Ok(FEWSTEP_OK)
    })
}

/// Loads a model from a file. On success `*out` holds a new handle; on
/// failure `*out` is set to NULL (when `out` is not NULL).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_load(
    path: *const c_char,
    out: *mut *mut fewstep_model,
) -> fewstep_status {
    load_into(out, || {
        if path.is_null() {
            return Err(Failure::null("path"));
        }
        // SAFETY: the caller guarantees a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
        Ok(Model::load(path_from_bytes(bytes)?))
    })
}

/// Sets how the library picks the matrix kernel of its Winograd
/// convolutions, for models loaded from now on in this process.
///
/// - `path` NULL (the default): estimated from each kernel's shape. Nothing
///   is timed, so nothing slows a load.
/// - `path` a file (e.g. in the app's cache directory): every candidate
///   kernel is timed once per product shape (~1–12 ms each; ~80 ms in all at
///   the first load of the shipped Fashion-MNIST model), and the choices are
///   kept in this small text file for the next launches. A file from another
///   processor or library version, or a damaged one, is ignored and
///   replaced. A file that cannot be written costs the timing again at the
///   next launch, nothing else.
///
/// The kernel changes the speed, never the images.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_set_kernel_cache(path: *const c_char) -> fewstep_status {
    guard(|| {
        let tuning = if path.is_null() {
            fewstep_runtime::KernelTuning::Estimate
        } else {
            // SAFETY: the caller guarantees a NUL-terminated string.
            let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
            if bytes.is_empty() {
                return Err(Failure::new(
                    FEWSTEP_ERROR_INVALID_ARGUMENT,
                    "kernel cache path is empty (pass NULL for no cache)",
                ));
            }
            fewstep_runtime::KernelTuning::Cached(path_from_bytes(bytes)?)
        };
        fewstep_runtime::set_kernel_tuning(tuning);
        Ok(FEWSTEP_OK)
    })
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> Result<std::path::PathBuf, Failure> {
    use std::os::unix::ffi::OsStrExt;
    // Unix paths are bytes: any encoding works.
    Ok(std::ffi::OsStr::from_bytes(bytes).into())
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> Result<std::path::PathBuf, Failure> {
    std::str::from_utf8(bytes)
        .map(Into::into)
        .map_err(|_| Failure::new(FEWSTEP_ERROR_INVALID_ARGUMENT, "path is not valid UTF-8"))
}

/// Loads a model from bytes in memory (Android assets, iOS bundles). The
/// library reads the bytes during the call and keeps none of them (the
/// weights are decoded into the model's own layout), so the caller may free
/// them as soon as it returns. To avoid holding the file in memory at all,
/// load from a path or with `fewstep_model_load_fd`.
///
/// # Safety
/// `data` must be NULL or point to `len` readable bytes; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_load_bytes(
    data: *const u8,
    len: usize,
    out: *mut *mut fewstep_model,
) -> fewstep_status {
    load_into(out, || {
        if data.is_null() {
            return Err(Failure::null("data"));
        }
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        Ok(Model::from_bytes(bytes))
    })
}

/// Loads a model from `length` bytes of the open file descriptor `fd`,
/// starting at byte `offset` (`length` 0: to the end of the file): what
/// Android's `AAsset_openFileDescriptor` gives for an asset stored
/// uncompressed in the APK. The bytes are decoded as they are read and never
/// all held in memory; the peak while loading is the model's own memory
/// (see `ffi/README.md`). `fd` stays open and owned by the caller (close it
/// whenever you like after the call) and its file position does not move.
/// A pipe or socket needs an explicit `length`. Unix only: elsewhere the
/// call fails with `FEWSTEP_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `out` NULL or writable. Any `fd` value is accepted (a closed or invalid
/// one fails with `FEWSTEP_ERROR_IO`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_load_fd(
    fd: i32,
    offset: u64,
    length: u64,
    out: *mut *mut fewstep_model,
) -> fewstep_status {
    load_into(out, || {
        let file = file_of_fd(fd)?;
        let len = (length != 0).then_some(length);
        Ok(Model::from_file_region(&file, offset, len))
    })
}

/// An owned duplicate of the caller's `fd` (closing ours leaves theirs open).
#[cfg(unix)]
fn file_of_fd(fd: i32) -> Result<std::fs::File, Failure> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!("fd is {fd}: not a file descriptor"),
        ));
    }
    // `fcntl(F_DUPFD_CLOEXEC)` on a closed descriptor fails with EBADF
    // without touching anything; a BorrowedFd that lives only for this
    // call is not kept.
    // SAFETY: the descriptor is only duplicated, never closed or kept.
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|e| Failure::new(FEWSTEP_ERROR_IO, format!("file descriptor {fd}: {e}")))?;
    Ok(std::fs::File::from(dup))
}

#[cfg(not(unix))]
fn file_of_fd(fd: i32) -> Result<std::fs::File, Failure> {
    Err(Failure::new(
        FEWSTEP_ERROR_INVALID_ARGUMENT,
        format!("fd {fd}: loading from a file descriptor needs a Unix system"),
    ))
}

/// A second handle to the same loaded model (nothing is copied or reloaded),
/// or NULL when `model` is NULL. Each handle is freed on its own with
/// `fewstep_model_free`; the model lives until the last one is freed. This
/// is the safe way to free a model while other threads may still be
/// generating with it: give each thread its own handle.
///
/// # Safety
/// `model` NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_retain(model: *const fewstep_model) -> *mut fewstep_model {
    // SAFETY: NULL or a live handle, per the contract.
    match unsafe { model.as_ref() } {
        Some(m) => Box::into_raw(Box::new(fewstep_model {
            inner: std::sync::Arc::clone(&m.inner),
        })),
        None => std::ptr::null_mut(),
    }
}

/// Frees a model handle. NULL is ignored. The model itself (weights, plans,
/// worker threads) is released with its last handle (see
/// `fewstep_model_retain`).
///
/// # Safety
/// `model` must be NULL or a handle from `fewstep_model_load*` or
/// `fewstep_model_retain`, not freed before, and not in use by another
/// thread (give each thread its own handle to free independently).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_free(model: *mut fewstep_model) {
    if model.is_null() {
        return;
    }
    // Dropping cannot unwind into C: catch a panic from a destructor.
    let _ = catch_quietly(|| {
        // SAFETY: the caller passes a handle from Box::into_raw, once.
        drop(unsafe { Box::from_raw(model) });
    });
}

/// What a model is, for sizing buffers and requests.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fewstep_model_info {
    /// Channels `C` of a generated image (1 = grayscale, 3 = RGB).
    pub channels: u32,
    /// Height `H` in pixels.
    pub height: u32,
    /// Width `W` in pixels.
    pub width: u32,
    /// `T >= 1` for a multistep consistency model (it samples with exactly
    /// `T` steps), 0 for a diffusion model (any step count).
    pub student_steps: u32,
    /// Number of classes; 0 = unconditional.
    pub num_classes: u32,
    /// The network's output: 0 = `x`, 1 = `eps`, 2 = `v`.
    pub prediction: u32,
    /// Data value mapped to pixel 0.
    pub data_lo: f32,
    /// Data value mapped to pixel 255.
    pub data_hi: f32,
}

/// Fills `*info` with the model's shape and properties.
///
/// # Safety
/// `model` must be NULL or a live handle; `info` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_model_get_info(
    model: *const fewstep_model,
    info: *mut fewstep_model_info,
) -> fewstep_status {
    guard(|| {
        // SAFETY: NULL or a live handle, per the contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        if info.is_null() {
            return Err(Failure::null("info"));
        }
        let m = model.inner.metadata();
        let value = fewstep_model_info {
            channels: m.image.channels,
            height: m.image.height,
            width: m.image.width,
            student_steps: m.student_steps.0,
            num_classes: m.num_classes,
            prediction: match m.prediction {
                Prediction::X => 0,
                Prediction::Eps => 1,
                Prediction::V => 2,
            },
            data_lo: m.data_range.lo,
            data_hi: m.data_range.hi,
        };
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { info.write(value) };
        Ok(FEWSTEP_OK)
    })
}

/// Writes to `*len` the number of bytes `fewstep_generate_rgb8` needs for
/// `batch` images (`batch * H * W * 3`).
///
/// # Safety
/// `model` must be NULL or a live handle; `len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_rgb8_len(
    model: *const fewstep_model,
    batch: u32,
    len: *mut usize,
) -> fewstep_status {
    // SAFETY: forwarded contract.
    unsafe { write_len(model, batch, len, rgb8_len) }
}

/// Writes to `*len` the number of floats `fewstep_generate_f32` needs for
/// `batch` images (`batch * C * H * W`).
///
/// # Safety
/// `model` must be NULL or a live handle; `len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_f32_len(
    model: *const fewstep_model,
    batch: u32,
    len: *mut usize,
) -> fewstep_status {
    // SAFETY: forwarded contract.
    unsafe { write_len(model, batch, len, f32_len) }
}

/// Shared body of the `*_len` queries.
///
/// # Safety
/// `model` NULL or a live handle; `len` NULL or writable.
unsafe fn write_len(
    model: *const fewstep_model,
    batch: u32,
    len: *mut usize,
    size: fn(&fewstep_model, usize) -> Result<usize, Failure>,
) -> fewstep_status {
    guard(|| {
        // SAFETY: NULL or a live handle, per the contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        if len.is_null() {
            return Err(Failure::null("len"));
        }
        let n = size(model, batch as usize)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { len.write(n) };
        Ok(FEWSTEP_OK)
    })
}

fn overflow() -> Failure {
    Failure::new(
        FEWSTEP_ERROR_INVALID_ARGUMENT,
        "batch too large: the buffer size overflows",
    )
}

fn rgb8_len(model: &fewstep_model, batch: usize) -> Result<usize, Failure> {
    let s = model.inner.metadata().image;
    (s.height as usize)
        .checked_mul(s.width as usize)
        .and_then(|v| v.checked_mul(3))
        .and_then(|v| v.checked_mul(batch))
        .ok_or_else(overflow)
}

fn f32_len(model: &fewstep_model, batch: usize) -> Result<usize, Failure> {
    model
        .inner
        .metadata()
        .image_len()
        .checked_mul(batch)
        .ok_or_else(overflow)
}

/// Writes the defaults into `*request` (batch 1, seed 0, the model's steps
/// and sampler, no label, no guidance, all cores, no clipping, no callback).
///
/// # Safety
/// `request` must be NULL or point to a writable `fewstep_request`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_request_init(request: *mut fewstep_request) -> fewstep_status {
    guard(|| {
        if request.is_null() {
            return Err(Failure::null("request"));
        }
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { request.write(fewstep_request::default()) };
        Ok(FEWSTEP_OK)
    })
}

/// Copies the caller's request, honouring its `struct_size`.
///
/// # Safety
/// `request` non-NULL, pointing to at least `struct_size` readable bytes.
unsafe fn read_request(request: *const fewstep_request) -> Result<fewstep_request, Failure> {
    // SAFETY: the first field is a u32 at offset 0 of any published layout.
    let size = unsafe { request.cast::<u32>().read_unaligned() } as usize;
    // Only the sizes of published layouts: a size in between would end
    // inside a field, which then holds whatever the caller's memory held.
    if !REQUEST_SIZES.contains(&size) {
        return Err(Failure::new(
            FEWSTEP_ERROR_STRUCT_SIZE,
            format!(
                "fewstep_request.struct_size is {size}; this library (fewstep {}) accepts {REQUEST_SIZES:?} (the sizes of its published layouts): initialise requests with fewstep_request_init",
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let mut req = fewstep_request::default();
    // SAFETY: `size` bytes are readable (caller contract) and fit in `req`.
    unsafe {
        std::ptr::copy_nonoverlapping(request.cast::<u8>(), (&raw mut req).cast::<u8>(), size)
    };
    Ok(req)
}

fn sampler_choice(v: u32) -> Result<SamplerChoice, Failure> {
    match v {
        FEWSTEP_SAMPLER_AUTO => Ok(SamplerChoice::Auto),
        FEWSTEP_SAMPLER_DDIM => Ok(SamplerChoice::Ddim),
        FEWSTEP_SAMPLER_ADDIM => Ok(SamplerChoice::Addim),
        other => Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!(
                "sampler {other} is not one of FEWSTEP_SAMPLER_AUTO (0), FEWSTEP_SAMPLER_DDIM (1), FEWSTEP_SAMPLER_ADDIM (2)"
            ),
        )),
    }
}

/// Copies `len` values from a caller pointer (NULL with `len > 0` is an
/// error; NULL with 0 is "none").
///
/// # Safety
/// `ptr` NULL or `len` readable values.
unsafe fn caller_values<T: Copy>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<Option<Vec<T>>, Failure> {
    if ptr.is_null() {
        if len != 0 {
            return Err(Failure::null(&format!("{what} (with {what}_len = {len})")));
        }
        return Ok(None);
    }
    if len == 0 {
        return Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!("{what}_len is 0 but {what} is not NULL"),
        ));
    }
    // SAFETY: non-NULL and `len` readable values, per the contract.
    Ok(Some(
        unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec(),
    ))
}

/// Runs a request; returns the images and whether they are partial.
///
/// # Safety
/// The request's pointers are NULL or valid for their lengths; `cancel` is
/// NULL or a live token.
unsafe fn run(model: &fewstep_model, req: &fewstep_request) -> Result<Images, Failure> {
    if req.clip > 1 {
        return Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!("clip must be 0 or 1, got {}", req.clip),
        ));
    }
    if req.label < FEWSTEP_LABEL_NONE {
        return Err(Failure::new(
            FEWSTEP_ERROR_LABEL,
            format!(
                "label {} is invalid: use 0..num_classes or FEWSTEP_LABEL_NONE (-1)",
                req.label
            ),
        ));
    }
    if req.preview_format > FEWSTEP_PREVIEW_RGB8 {
        return Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!(
                "preview_format {} is not FEWSTEP_PREVIEW_F32 (0) or FEWSTEP_PREVIEW_RGB8 (1)",
                req.preview_format
            ),
        ));
    }
    let pool_wait = match req.pool_wait {
        FEWSTEP_WAIT_DEFAULT => fewstep_runtime::PoolWait::default(),
        FEWSTEP_WAIT_SPIN => fewstep_runtime::PoolWait::Spin,
        FEWSTEP_WAIT_SLEEP => fewstep_runtime::PoolWait::Sleep,
        other => {
            return Err(Failure::new(
                FEWSTEP_ERROR_INVALID_ARGUMENT,
                format!(
                    "pool_wait {other} is not FEWSTEP_WAIT_DEFAULT (0), FEWSTEP_WAIT_SPIN (1) or FEWSTEP_WAIT_SLEEP (2)"
                ),
            ));
        }
    };
    let mut builder = model
        .inner
        .generate()
        .pool_wait(pool_wait)
        .batch(req.batch as usize)
        .sampler(sampler_choice(req.sampler)?)
        .guidance(req.guidance)
        .clip(req.clip == 1);
    // SAFETY (all four): pointers NULL or valid for their lengths, per the contract.
    match unsafe { caller_values(req.noise, req.noise_len, "noise") }? {
        Some(z) => builder = builder.noise(z),
        None => builder = builder.seed(req.seed),
    }
    if req.steps != 0 {
        builder = builder.steps(req.steps);
    }
    match unsafe { caller_values(req.labels, req.labels_len, "labels") }? {
        Some(labels) => builder = builder.labels(labels),
        None if req.label != FEWSTEP_LABEL_NONE => builder = builder.label(req.label),
        None => {}
    }
    if let Some(init) = unsafe { caller_values(req.init, req.init_len, "init") }? {
        builder = builder.init(init);
    }
    if let Some(mask) = unsafe { caller_values(req.mask, req.mask_len, "mask") }? {
        builder = builder.mask(mask);
    }
    // Through the shortest decimal: 0.3f is 0.300000011920929 as f64,
    // which would round a 10-step model's 3 steps up to 4.
    let strength = req.strength.to_string().parse::<f64>().unwrap_or(f64::NAN);
    builder = builder.strength(strength);
    if req.threads != 0 {
        builder = builder.threads(req.threads as usize);
    }
    if req.memory_budget != 0 {
        builder = builder.memory_budget(req.memory_budget);
    }
    // The caller's token, else a fresh one the callbacks can trigger.
    // SAFETY: NULL or a live token, per the contract.
    let token = match unsafe { req.cancel.as_ref() } {
        Some(t) => t.token().clone(),
        None => CancelToken::new(),
    };
    builder = builder.cancel(token.clone());
    if req.progress.is_some() || req.preview.is_some() {
        let (progress, preview) = (req.progress, req.preview);
        let (user_data, format) = (req.user_data, req.preview_format);
        let meta = model.inner.metadata();
        let (image, range) = (meta.image, meta.data_range);
        let mut rgb = Vec::new();
        builder = builder.on_progress(move |p| {
            let mut stop = false;
            if let Some(callback) = progress {
                // SAFETY: the caller supplied the callback and its user_data.
                stop |= unsafe { callback(user_data, p.step, p.steps) } != 0;
            }
            if let Some(callback) = preview {
                let (ptr, len) = if format == FEWSTEP_PREVIEW_RGB8 {
                    planar_to_rgb8(p.x_hat, image, range, &mut rgb);
                    (rgb.as_ptr().cast::<c_void>(), rgb.len())
                } else {
                    (p.x_hat.as_ptr().cast::<c_void>(), p.x_hat.len())
                };
                // SAFETY: as above; `ptr` holds `len` values for the call.
                stop |= unsafe { callback(user_data, p.step, p.steps, ptr, len) } != 0;
            }
            if stop {
                token.cancel();
            }
        });
    }
    Ok(builder.run()?)
}

/// `[N,C,H,W]` data-space values to interleaved RGB8 `[N,H,W,3]`.
fn planar_to_rgb8(
    x: &[f32],
    image: fewstep_runtime::fewstep_core::format::ImageShape,
    range: fewstep_runtime::fewstep_core::format::DataRange,
    out: &mut Vec<u8>,
) {
    let c = image.channels as usize;
    let hw = image.height as usize * image.width as usize;
    out.clear();
    for img in x.chunks_exact((c * hw).max(1)) {
        for p in 0..hw {
            for ch in 0..3 {
                let src = if c >= 3 { ch } else { 0 };
                out.push(range.to_u8(img[src * hw + p]));
            }
        }
    }
}

fn finish(images: &Images) -> Result<fewstep_status, Failure> {
    if images.is_partial() {
        return Err(Failure::new(
            FEWSTEP_CANCELLED,
            format!(
                "cancelled after step {}: the buffer holds the latest estimate",
                images.steps_done()
            ),
        ));
    }
    Ok(FEWSTEP_OK)
}

/// Checks the common arguments of the generate calls.
///
/// # Safety
/// `model`/`request` NULL or valid, per the generate functions' contracts.
unsafe fn prepare<'a>(
    model: *const fewstep_model,
    request: *const fewstep_request,
    out_is_null: bool,
) -> Result<(&'a fewstep_model, fewstep_request), Failure> {
    // SAFETY: NULL or a live handle, per the contract.
    let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
    if request.is_null() {
        return Err(Failure::null(
            "request (initialise one with fewstep_request_init)",
        ));
    }
    if out_is_null {
        return Err(Failure::null("out"));
    }
    // SAFETY: non-NULL; the caller guarantees a request from fewstep_request_init.
    let req = unsafe { read_request(request) }?;
    if req.batch == 0 {
        return Err(Failure::new(
            FEWSTEP_ERROR_INVALID_ARGUMENT,
            "batch must be at least 1",
        ));
    }
    Ok((model, req))
}

fn short_buffer(what: &str, have: usize, need: usize, batch: u32) -> Failure {
    Failure::new(
        FEWSTEP_ERROR_BUFFER_TOO_SMALL,
        format!("output buffer holds {have} {what}; {batch} images need {need}"),
    )
}

/// Shared body of the generate calls: checks arguments and the buffer
/// length (`size` values needed), runs the request, and `fill`s `out`.
///
/// # Safety
/// `model` NULL or a live handle; `request` NULL or initialised by
/// `fewstep_request_init`; `out` NULL or `out_len` writable values.
unsafe fn generate_into<T>(
    model: *const fewstep_model,
    request: *const fewstep_request,
    out: *mut T,
    out_len: usize,
    size: fn(&fewstep_model, usize) -> Result<usize, Failure>,
    unit: &str,
    fill: fn(&Images, &mut [T]) -> Result<(), Failure>,
) -> fewstep_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let (model, req) = unsafe { prepare(model, request, out.is_null()) }?;
        let need = size(model, req.batch as usize)?;
        if out_len < need {
            return Err(short_buffer(unit, out_len, need, req.batch));
        }
        // SAFETY: the request's pointers are valid per the generate contract.
        let images = unsafe { run(model, &req) }?;
        // SAFETY: `out` has `out_len >= need` writable values.
        let dst = unsafe { std::slice::from_raw_parts_mut(out, need) };
        fill(&images, dst)?;
        finish(&images)
    })
}

/// `[N,H,W,3]` RGB8 from the images.
fn fill_rgb8(images: &Images, dst: &mut [u8]) -> Result<(), Failure> {
    let per_image = dst.len() / images.batch().max(1);
    for (i, chunk) in dst.chunks_exact_mut(per_image).enumerate() {
        let px = images
            .rgb8(i)
            .ok_or_else(|| Failure::new(FEWSTEP_ERROR_RUNTIME, "missing image in result"))?;
        chunk.copy_from_slice(&px);
    }
    Ok(())
}

/// `[N,C,H,W]` f32 from the images.
fn fill_f32(images: &Images, dst: &mut [f32]) -> Result<(), Failure> {
    dst.copy_from_slice(images.data());
    Ok(())
}

/// Generates `request->batch` images as interleaved RGB8, `[N,H,W,3]`, into
/// `out` (`out_len` bytes, at least `fewstep_rgb8_len`). Grayscale models
/// are expanded to gray RGB. On `FEWSTEP_CANCELLED` the buffer holds the
/// latest estimate; on any other failure it is left unspecified.
///
/// # Safety
/// `model` NULL or a live handle; `request` NULL or initialised by
/// `fewstep_request_init`; `out` NULL or `out_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_generate_rgb8(
    model: *const fewstep_model,
    request: *const fewstep_request,
    out: *mut u8,
    out_len: usize,
) -> fewstep_status {
    // SAFETY: forwarded contract.
    unsafe { generate_into(model, request, out, out_len, rgb8_len, "bytes", fill_rgb8) }
}

/// Generates `request->batch` images as float32 `[N,C,H,W]` in data space
/// into `out` (`out_len` floats, at least `fewstep_f32_len`). On
/// `FEWSTEP_CANCELLED` the buffer holds the latest estimate.
///
/// # Safety
/// `model` NULL or a live handle; `request` NULL or initialised by
/// `fewstep_request_init`; `out` NULL or `out_len` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_generate_f32(
    model: *const fewstep_model,
    request: *const fewstep_request,
    out: *mut f32,
    out_len: usize,
) -> fewstep_status {
    // SAFETY: forwarded contract.
    unsafe { generate_into(model, request, out, out_len, f32_len, "floats", fill_f32) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Panics the app's own hook saw.
    static APP_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn last_error() -> String {
        // SAFETY: never NULL, NUL-terminated, valid until the next call.
        unsafe { CStr::from_ptr(fewstep_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A panic inside an entry point, on the calling thread or on one of the
    /// runtime's worker threads, becomes `FEWSTEP_ERROR_PANIC` with its
    /// message and is not printed; panics outside the library still reach
    /// the hook the app installed.
    #[test]
    fn panics_inside_calls_are_reported_not_printed() {
        // The panic hook is process-wide and installed once: run the body in
        // a process of its own, where no other test called the library first
        // (the fuzz harness's tests call this library too).
        const CHILD: &str = "FEWSTEP_PANIC_HOOK_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let module = module_path!();
            let path = module.split_once("::").map_or(module, |(_, rest)| rest);
            let name = format!("{path}::panics_inside_calls_are_reported_not_printed");
            let out = std::process::Command::new(std::env::current_exe().expect("test exe"))
                .args(["--exact", &name, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .expect("run the test in a child process");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}{stderr}"
            );
            assert!(!stderr.contains("panicked"), "printed: {stderr}");
            return;
        }
        // The app's hook, installed before the library's first call.
        std::panic::set_hook(Box::new(|_| {
            APP_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        }));
        let status = guard(|| panic!("boom {}", 7));
        assert_eq!(status, FEWSTEP_ERROR_PANIC);
        let message = last_error();
        assert!(
            message.starts_with("internal error (panic): boom 7 (at ")
                && message.contains("ffi/src/lib.rs:"),
            "{message}"
        );
        let status = guard(|| {
            let worker = std::thread::Builder::new()
                .name(format!("{}3", fewstep_runtime::WORKER_THREAD_PREFIX))
                .spawn(|| panic!("in a worker"))
                .expect("spawn");
            match worker.join() {
                Ok(()) => Ok(FEWSTEP_OK),
                Err(payload) => std::panic::resume_unwind(payload),
            }
        });
        assert_eq!(status, FEWSTEP_ERROR_PANIC);
        assert_eq!(last_error(), "internal error (panic): in a worker");
        assert_eq!(
            APP_HOOK_CALLS.load(Ordering::SeqCst),
            0,
            "the library printed"
        );
        // A successful call clears the message.
        assert_eq!(guard(|| Ok(FEWSTEP_OK)), FEWSTEP_OK);
        assert_eq!(last_error(), "");

        // The app's own panics (outside any entry point) reach its hook.
        let _ = std::panic::catch_unwind(|| panic!("the app's own"));
        assert_eq!(APP_HOOK_CALLS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn status_names_cover_every_integer() {
        for v in [i32::MIN, -1, 14, 99, 1 << 20, i32::MAX] {
            assert_eq!(status_name(v), c"FEWSTEP_UNKNOWN_STATUS");
        }
        for v in 0..14 {
            let status = status_from_int(v).expect("a status");
            assert_eq!(status as c_int, v);
            assert!(status_name(v).to_bytes().starts_with(b"FEWSTEP_"));
            assert_ne!(status_name(v), c"FEWSTEP_UNKNOWN_STATUS");
        }
    }
}
