//! The fuzzed entry points, shared by the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and the stable corpus test
//! `tests/tests/fuzz_corpus.rs` (run by `cargo test --workspace`), which
//! replays `fuzz/corpus/<target>/` plus seeded mutations through the same
//! functions. Every function must return (never panic, never abort) on any
//! input; a bad input must come back as a typed error with a message.
//!
//! Included with `#[path]`; the including crate root must make the runtime
//! available as `fewstep_runtime` (`extern crate fewstep as
//! fewstep_runtime;`) and depend on `fewstep-ffi`. It calls only their
//! public APIs.
#![allow(dead_code, missing_debug_implementations, clippy::all)]

use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

use fewstep_runtime::fewstep_core::format::{self, DataRange, ImageShape};
use fewstep_runtime::fewstep_core::{
    Prediction, SamplerChoice, SamplingPlan, Schedule, StudentSteps,
};
use fewstep_runtime::{GenerateError, LoadError, Model, pb};

/// The `fewstep` CLI's argument layer (its clap definitions and value
/// parsers), from the runtime's `cli` feature.
use fewstep_runtime::cli;

/// The C API, called as Rust functions (`fewstep-ffi` is also an rlib).
pub use fewstep_ffi as ffi;

/// Outcome of one input, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (a model loaded and generated, arguments parsed, ...).
    Accepted,
    /// Refused with a typed error.
    Refused,
}

/// Inputs above this many values per image are loaded but not generated
/// from (fuzzing speed, not safety: the memory budget bounds them).
const MAX_FUZZ_IMAGE: usize = 4096;

/// Model loading from bytes: any bytes give a model or a `LoadError` with a
/// message. A model that loads generates one image in one step (with a
/// 64 MiB budget), which must give images or a `GenerateError`.
pub fn load_model(data: &[u8]) -> Outcome {
    match Model::from_bytes(data) {
        Err(e) => {
            check_load_error(&e);
            Outcome::Refused
        }
        Ok(m) => {
            // Also what `fewstep info` computes.
            let _ = m.macs_per_image();
            if m.metadata().image_len() <= MAX_FUZZ_IMAGE {
                let mut req = m.generate().threads(1).memory_budget(64 << 20);
                if m.metadata().student_steps.is_diffusion() {
                    req = req.steps(1);
                }
                match req.run() {
                    Ok(images) => assert_eq!(images.data().len(), m.metadata().image_len()),
                    Err(e) => check_generate_error(&e),
                }
            }
            Outcome::Accepted
        }
    }
}

fn check_load_error(e: &LoadError) {
    let m = e.to_string();
    assert!(!m.is_empty(), "empty message for {e:?}");
    // A panic caught at the tract boundary is a bug to fix, not a message.
    assert!(!m.contains("internal error"), "caught panic: {m}");
}

fn check_generate_error(e: &GenerateError) {
    assert!(!e.to_string().is_empty(), "empty message for {e:?}");
}

/// Splits fuzz input into strings at NUL bytes (lossy UTF-8).
fn strings(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Metadata parsing: the first byte picks a parser of `fewstep_core`'s
/// format module (or the runtime's whole `Metadata::from_props` on
/// NUL-separated key/value pairs), the rest is its text.
pub fn metadata(data: &[u8]) -> Outcome {
    let Some((&which, rest)) = data.split_first() else {
        return Outcome::Refused;
    };
    let text = String::from_utf8_lossy(rest);
    let ok = match which % 9 {
        0 => match Schedule::parse(&text) {
            Ok(s) => {
                // A parsed schedule evaluates without panicking.
                for t in [0.0, 1e-6, 0.25, 0.5, 0.999, 1.0] {
                    let _ = s.alpha_sigma(t);
                    let _ = s.logsnr(t);
                }
                // Display round-trips.
                let again = Schedule::parse(&s.to_string());
                assert!(again.is_ok(), "{s} does not re-parse");
                true
            }
            Err(e) => !e.to_string().is_empty(),
        },
        1 => match Prediction::parse(&text) {
            Ok(_) => true,
            Err(e) => !e.to_string().is_empty() && false,
        },
        2 => match text.parse::<ImageShape>() {
            Ok(s) => {
                let _ = s.len();
                true
            }
            Err(e) => !e.to_string().is_empty() && false,
        },
        3 => match text.parse::<DataRange>() {
            Ok(r) => {
                let _ = r.clamp(0.5);
                true
            }
            Err(e) => !e.to_string().is_empty() && false,
        },
        4 => format::parse_u32(&text).is_ok(),
        5 => match format::xvar_table_len(&text) {
            Ok(n) => {
                let parsed: Vec<_> = format::parse_xvar_table(&text).collect();
                assert_eq!(parsed.len(), n, "xvar_table_len disagrees with the parser");
                parsed.iter().all(|v| v.is_ok())
            }
            Err(_) => false,
        },
        6 => {
            // Sampling plans from fuzzed numbers (step counts below 100000:
            // the plan is walked to the end).
            let n = |i: usize| {
                rest.get(i * 4..i * 4 + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            let sampler = match n(2) % 3 {
                0 => SamplerChoice::Auto,
                1 => SamplerChoice::Ddim,
                _ => SamplerChoice::Addim,
            };
            let steps = if n(1) % 2 == 0 {
                None
            } else {
                Some(n(3) % 100_000)
            };
            match SamplingPlan::resolve(StudentSteps(n(0) % 100_000), steps, sampler, 32) {
                Ok(plan) => {
                    let count = plan.iter().count();
                    assert_eq!(count as u32, plan.steps());
                    true
                }
                Err(e) => !e.to_string().is_empty() && false,
            }
        }
        7 => text.parse::<SamplerChoice>().is_ok(),
        _ => {
            // Whole metadata: key, value, key, value, ...
            let s = strings(rest);
            let props: Vec<pb::StringStringEntryProto> = s
                .chunks(2)
                .map(|kv| pb::StringStringEntryProto {
                    key: kv[0].clone(),
                    value: kv.get(1).cloned().unwrap_or_default(),
                })
                .collect();
            match fewstep_runtime::Metadata::from_props(&props) {
                Ok(m) => {
                    assert!(m.image_len() > 0);
                    true
                }
                Err(e) => {
                    check_load_error(&e);
                    false
                }
            }
        }
    };
    if ok {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// The CLI argument layer: NUL-separated arguments after `fewstep` through
/// clap and every value parser (nothing is run: a parsed command would read
/// and write files). Also the `--memory-budget` size parser on each argument.
pub fn cli_args(data: &[u8]) -> Outcome {
    let args = strings(data);
    for a in &args {
        if let Err(e) = fewstep_runtime::parse_bytes(a) {
            assert!(!e.is_empty());
        }
    }
    let argv = std::iter::once("fewstep".to_string()).chain(args);
    match cli::parse_args(argv) {
        Ok(_) => Outcome::Accepted,
        Err(e) => {
            // Rendering the message must not panic either.
            let _ = e.to_string();
            Outcome::Refused
        }
    }
}

/// The tiny models the C API target runs on: a 2-step consistency model
/// and a 3-class diffusion model, both `[N,3,4,4]`.
struct Models {
    cm: *mut ffi::fewstep_model,
    cond: *mut ffi::fewstep_model,
}
// SAFETY: the handles are thread-safe (the C API's contract) and never freed.
unsafe impl Send for Models {}
// SAFETY: as above.
unsafe impl Sync for Models {}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let (cm_bytes, cond_bytes) = (tiny_model(2, 0), tiny_model(0, 3));
        let load = |b: &[u8]| {
            let mut out = std::ptr::null_mut();
            // SAFETY: valid bytes and out pointer.
            let st = unsafe { ffi::fewstep_model_load_bytes(b.as_ptr(), b.len(), &mut out) };
            assert_eq!(st, ffi::fewstep_status::FEWSTEP_OK);
            out
        };
        Models {
            cm: load(&cm_bytes),
            cond: load(&cond_bytes),
        }
    })
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { CStr::from_ptr(ffi::fewstep_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// The C API's request and buffer checks: the input is a raw
/// `fewstep_request` (its bytes as the caller's memory would hold them),
/// followed by a selector byte (model, output kind, NULL pointers) and a
/// buffer length. The callback pointer is always cleared (a fuzzed function
/// pointer is not an input the library can check); the buffer handed over
/// really has the stated length (capped at 64 KiB); steps of the diffusion
/// model are capped at 64 (time, not safety).
pub fn ffi_request(data: &[u8]) -> Outcome {
    use ffi::fewstep_status::*;
    let size = std::mem::size_of::<ffi::fewstep_request>();
    let mut raw = vec![0u8; size];
    let n = data.len().min(size);
    raw[..n].copy_from_slice(&data[..n]);
    let tail = &data[n..];
    let sel = tail.first().copied().unwrap_or(0);
    let len_bytes = tail.get(1..5).map_or([0; 4], |b| [b[0], b[1], b[2], b[3]]);
    let out_len = (u32::from_le_bytes(len_bytes) as usize) % (64 * 1024 + 1);

    // SAFETY: `raw` holds size bytes; any bit pattern is a valid request
    // except the function pointer (cleared below).
    let mut req: ffi::fewstep_request = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    req.progress = None;
    req.user_data = std::ptr::null_mut::<c_void>();
    let m = models();
    let model = if sel & 1 == 0 { m.cm } else { m.cond };
    if sel & 1 == 1 && req.steps > 64 {
        req.steps %= 65;
    }
    // Every distinct thread count creates (and keeps) a pool on the model:
    // fuzzed counts would grow the process without bound (see "Known gaps"
    // in docs/RELIABILITY.md; absurd counts are refused by the budget test).
    req.threads %= 5;
    let model_ptr = if sel & 8 != 0 {
        std::ptr::null()
    } else {
        model.cast_const()
    };
    let req_ptr: *const ffi::fewstep_request = if sel & 16 != 0 {
        std::ptr::null()
    } else {
        &req
    };
    // Also the queries with the fuzzed batch.
    let mut len = 0usize;
    // SAFETY: valid handle and out pointer.
    let st = unsafe { ffi::fewstep_rgb8_len(model, req.batch, &mut len) };
    assert!(st == FEWSTEP_OK || st == FEWSTEP_ERROR_INVALID_ARGUMENT);
    // SAFETY: as above.
    let st = unsafe { ffi::fewstep_f32_len(model, req.batch, &mut len) };
    assert!(st == FEWSTEP_OK || st == FEWSTEP_ERROR_INVALID_ARGUMENT);

    let status = if sel & 2 == 0 {
        let mut buf = vec![0u8; out_len];
        let out = if sel & 4 != 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: pointers are NULL or valid for the stated lengths.
        unsafe { ffi::fewstep_generate_rgb8(model_ptr, req_ptr, out, out_len) }
    } else {
        let floats = out_len / 4;
        let mut buf = vec![0f32; floats];
        let out = if sel & 4 != 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: as above.
        unsafe { ffi::fewstep_generate_f32(model_ptr, req_ptr, out, floats) }
    };
    let message = last_error();
    assert_ne!(status, FEWSTEP_ERROR_PANIC, "caught panic: {message}");
    // SAFETY: any status value the library returned is a valid enum value.
    let name = unsafe { CStr::from_ptr(ffi::fewstep_status_name(status as std::ffi::c_int)) };
    assert!(name.to_bytes().starts_with(b"FEWSTEP_"));
    if status == FEWSTEP_OK {
        assert!(message.is_empty(), "OK with a message: {message}");
        Outcome::Accepted
    } else {
        assert!(!message.is_empty(), "{name:?} without a message");
        Outcome::Refused
    }
}

fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute,
        ..Default::default()
    }
}

/// A small valid fewstep model (the C API tests' one): x-prediction
/// `out = 0.5 z + 0.1 t (+ 0.2 label)`, `[N,3,4,4]`, symbolic batch, cosine
/// schedule. The seed of the model-loading corpus and of the mutations.
pub fn tiny_model(student_steps: u32, num_classes: u32) -> Vec<u8> {
    const FLOAT: i32 = 1;
    const INT64: i32 = 7;
    let scalar = |name: &str, v: f32| pb::TensorProto {
        name: name.into(),
        data_type: FLOAT,
        float_data: vec![v],
        ..Default::default()
    };
    let zdims = [None, Some(3), Some(4), Some(4)];
    let mut inputs = vec![
        value_info("z", FLOAT, &zdims),
        value_info("t", FLOAT, &[None]),
    ];
    let mut nodes = vec![
        node("Reshape", &["t", "shape4"], "t4", vec![]),
        node("Mul", &["z", "half"], "zh", vec![]),
        node("Mul", &["t4", "tenth"], "tt", vec![]),
        node(
            "Add",
            &["zh", "tt"],
            if num_classes > 0 { "base" } else { "out" },
            vec![],
        ),
    ];
    if num_classes > 0 {
        inputs.push(value_info("label", INT64, &[None]));
        let to = pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: i64::from(FLOAT),
            ..Default::default()
        };
        nodes.push(node("Cast", &["label"], "labf", vec![to]));
        nodes.push(node("Reshape", &["labf", "shape4"], "lab4", vec![]));
        nodes.push(node("Mul", &["lab4", "fifth"], "labw", vec![]));
        nodes.push(node("Add", &["base", "labw"], "out", vec![]));
    }
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: nodes,
        initializer: vec![
            pb::TensorProto {
                name: "shape4".into(),
                data_type: INT64,
                dims: vec![4],
                int64_data: vec![-1, 1, 1, 1],
                ..Default::default()
            },
            scalar("half", 0.5),
            scalar("tenth", 0.1),
            scalar("fifth", 0.2),
        ],
        input: inputs,
        output: vec![value_info("out", FLOAT, &zdims)],
        ..Default::default()
    };
    let meta = [
        ("fewstep.format", "1".to_string()),
        ("fewstep.prediction", "x".into()),
        ("fewstep.schedule", "cosine".into()),
        ("fewstep.student_steps", student_steps.to_string()),
        ("fewstep.image", "3,4,4".into()),
        ("fewstep.num_classes", num_classes.to_string()),
    ];
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        producer_name: "fewstep-fuzz".into(),
        graph: Some(graph),
        metadata_props: meta
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: k.to_string(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    fewstep_runtime::encode(&model)
}
