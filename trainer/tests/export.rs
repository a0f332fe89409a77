//! The exported ONNX graph computes what the Burn network computes: Burn's
//! forward vs tract running the exported file (max abs diff <= 1e-4), for the
//! tiny and small presets, with and without class labels, f32 and f16; and,
//! where Python has `onnx` and `onnxruntime`, `onnx.checker` plus
//! onnxruntime agreement.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use fewstep_core::format::{self, DataRange, ImageShape};
use fewstep_core::{Prediction, Schedule};
use fewstep_trainer::Cpu;
use fewstep_trainer::config::{Downsample, ModelConfig};
use fewstep_trainer::export::onnx::{ExportOptions, export, read_metadata};
use fewstep_trainer::network::model::UNet;
use fewstep_trainer::sample::evaluate;
use tract_onnx::prelude::*;

const TOL: f32 = 1e-4;

struct Inputs {
    n: usize,
    z: Vec<f32>,
    t: Vec<f32>,
    labels: Option<Vec<i64>>,
}

fn inputs(cfg: &ModelConfig, n: usize, seed: u64) -> Inputs {
    let d = cfg.image_len();
    let mut z = vec![0f32; n * d];
    fewstep_core::rng::batch_noise(seed, 0, d, &mut z);
    let mut u = fewstep_core::rng::UniformStream::new(seed, 7);
    let mut t: Vec<f32> = (0..n).map(|_| u.next_f64() as f32).collect();
    t[0] = 1.0;
    if n > 1 {
        t[1] = 0.0;
    }
    let labels = (cfg.num_classes > 0).then(|| {
        (0..n)
            .map(|i| (i % (cfg.num_classes + 1)) as i64)
            .rev()
            .collect()
    });
    Inputs { n, z, t, labels }
}

fn run_tract(bytes: &[u8], cfg: &ModelConfig, inp: &Inputs) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model");
    let z = tract_ndarray::Array4::from_shape_vec(
        (inp.n, cfg.channels, cfg.height, cfg.width),
        inp.z.clone(),
    )
    .unwrap();
    let t = tract_ndarray::Array1::from_vec(inp.t.clone());
    let mut values: TVec<TValue> = tvec![z.into_tensor().into(), t.into_tensor().into()];
    if let Some(l) = &inp.labels {
        values.push(
            tract_ndarray::Array1::from_vec(l.clone())
                .into_tensor()
                .into(),
        );
    }
    let out = model.run(values).expect("tract runs the model");
    assert_eq!(out.len(), 1);
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(view.shape(), &[inp.n, cfg.channels, cfg.height, cfg.width]);
    view.iter().copied().collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rounds every weight to f16 and back (what a `--f16` export stores).
struct RoundF16;

impl<B: Backend> ModuleMapper<B> for RoundF16 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let dims = t.dims();
        let device = t.device();
        let v = fewstep_trainer::export::onnx::tensor_values(&t).unwrap();
        let r: Vec<f32> = v
            .iter()
            .map(|&x| fewstep_core::f16::f16::from_f32(x).to_f32())
            .collect();
        let t = Tensor::<B, D>::from_data(burn::tensor::TensorData::new(r, dims), &device);
        Param::from_mapped_value(id, t, mapper)
    }
}

fn check(cfg: &ModelConfig, n: usize, f16: bool) -> (f32, usize) {
    cfg.validate().unwrap();
    let device = Default::default();
    Cpu::seed(&device, 42);
    let mut model = UNet::<Cpu>::new(cfg, &device);
    if f16 {
        model = model.map(&mut RoundF16);
    }
    let bytes = export(
        &model,
        cfg,
        &ExportOptions {
            f16,
            extra_metadata: vec![("fewstep.train.note".into(), "test".into())],
            ..Default::default()
        },
    )
    .unwrap();
    let inp = inputs(cfg, n, 3);
    let burn_out = evaluate(&model, cfg, &inp.z, &inp.t, inp.labels.as_deref(), &device).unwrap();
    let tract_out = run_tract(&bytes, cfg, &inp);
    let diff = max_diff(&burn_out, &tract_out);
    let scale = burn_out.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-2, "degenerate output (max |out| = {scale})");
    assert!(diff <= TOL, "tract vs Burn max abs diff {diff} > {TOL}");
    eprintln!(
        "{}x{}x{} base {} classes {} f16 {f16}: {} bytes, max |diff| {diff:e}",
        cfg.channels,
        cfg.height,
        cfg.width,
        cfg.base_channels,
        cfg.num_classes,
        bytes.len()
    );
    onnxruntime_check(&bytes, cfg, &inp, &burn_out);
    (diff, bytes.len())
}

fn tiny(classes: usize) -> ModelConfig {
    let mut c = ModelConfig::preset("tiny", 1, 8, 8).unwrap();
    c.num_classes = classes;
    c
}

#[test]
fn tiny_unconditional_matches_tract() {
    check(&tiny(0), 3, false);
}

#[test]
fn tiny_class_conditional_matches_tract() {
    check(&tiny(3), 5, false);
}

#[test]
fn tiny_avgpool_x_prediction_rgb_matches_tract() {
    let mut c = ModelConfig::preset("tiny", 3, 12, 12).unwrap();
    c.downsample = Downsample::AvgPool;
    c.prediction = "x".into();
    check(&c, 2, false);
}

#[test]
fn tiny_f16_export_matches_f16_rounded_burn() {
    let (_, size32) = check(&tiny(2), 2, false);
    let (_, size16) = check(&tiny(2), 2, true);
    assert!(
        size16 < size32,
        "f16 file {size16} not smaller than f32 {size32}"
    );
}

#[test]
fn small_unconditional_28x28_matches_tract() {
    let c = ModelConfig::preset("small", 1, 28, 28).unwrap();
    check(&c, 2, false);
}

#[test]
fn small_class_conditional_28x28_matches_tract() {
    let mut c = ModelConfig::preset("small", 1, 28, 28).unwrap();
    c.num_classes = 10;
    check(&c, 2, false);
}

#[test]
fn metadata_is_complete_and_parses_with_core() {
    let cfg = tiny(3);
    let device = Default::default();
    let model = UNet::<Cpu>::new(&cfg, &device);
    let bytes = export(&model, &cfg, &ExportOptions::default()).unwrap();
    let meta = read_metadata(&bytes).unwrap();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing {k}"))
    };
    assert_eq!(
        format::parse_u32(&get(format::KEY_FORMAT)).unwrap(),
        format::FORMAT_VERSION
    );
    assert_eq!(
        Prediction::parse(&get(format::KEY_PREDICTION)).unwrap(),
        Prediction::V
    );
    assert_eq!(
        Schedule::parse(&get(format::KEY_SCHEDULE)).unwrap(),
        Schedule::Cosine
    );
    assert_eq!(
        format::parse_u32(&get(format::KEY_STUDENT_STEPS)).unwrap(),
        0
    );
    assert_eq!(
        get(format::KEY_IMAGE).parse::<ImageShape>().unwrap(),
        ImageShape {
            channels: 1,
            height: 8,
            width: 8
        }
    );
    assert_eq!(format::parse_u32(&get(format::KEY_NUM_CLASSES)).unwrap(), 3);
    assert_eq!(
        get(format::KEY_DATA_RANGE).parse::<DataRange>().unwrap(),
        DataRange::default()
    );
    // The exporter refuses to let provenance overwrite a required key.
    let err = export(
        &model,
        &cfg,
        &ExportOptions {
            f16: false,
            extra_metadata: vec![(format::KEY_SCHEDULE.into(), "cosine".into())],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains(format::KEY_SCHEDULE));
}

/// onnx.checker + onnxruntime, when Python has them (CI installs both).
fn onnxruntime_check(bytes: &[u8], cfg: &ModelConfig, inp: &Inputs, burn_out: &[f32]) {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import onnx, onnxruntime"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("note: python3 with onnx + onnxruntime not available; onnxruntime check skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, bytes).unwrap();
    let raw = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.path().join("z.bin"), raw(&inp.z)).unwrap();
    std::fs::write(dir.path().join("t.bin"), raw(&inp.t)).unwrap();
    std::fs::write(dir.path().join("ref.bin"), raw(burn_out)).unwrap();
    if let Some(l) = &inp.labels {
        let b: Vec<u8> = l.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.path().join("label.bin"), b).unwrap();
    }
    let script = format!(
        r#"
import os, sys, numpy as np, onnx, onnxruntime as ort
d = sys.argv[1]
m = onnx.load(os.path.join(d, "m.onnx"))
onnx.checker.check_model(m, full_check=True)
s = ort.InferenceSession(os.path.join(d, "m.onnx"), providers=["CPUExecutionProvider"])
feeds = {{"z": np.fromfile(os.path.join(d, "z.bin"), dtype="<f4").reshape({n}, {c}, {h}, {w}),
          "t": np.fromfile(os.path.join(d, "t.bin"), dtype="<f4")}}
if os.path.exists(os.path.join(d, "label.bin")):
    feeds["label"] = np.fromfile(os.path.join(d, "label.bin"), dtype="<i8")
out = s.run(None, feeds)[0]
ref = np.fromfile(os.path.join(d, "ref.bin"), dtype="<f4").reshape(out.shape)
print(float(np.abs(out - ref).max()))
"#,
        n = inp.n,
        c = cfg.channels,
        h = cfg.height,
        w = cfg.width
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "onnx.checker / onnxruntime failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: f32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    eprintln!("onnxruntime vs Burn max |diff| {diff:e}");
    assert!(
        diff <= TOL,
        "onnxruntime vs Burn max abs diff {diff} > {TOL}"
    );
}
