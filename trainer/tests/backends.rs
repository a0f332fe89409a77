//! The U-Net computes the same function and the same gradients on the
//! ndarray backend (convolutions lowered to im2col + matmul) and on the flex
//! backend (Burn's own convolution), so the faster backend can be the default
//! without changing what is trained.

#![cfg(feature = "flex")]

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use fewstep_trainer::config::{Downsample, ModelConfig};
use fewstep_trainer::network::model::UNet;
use fewstep_trainer::{CpuTrain, FlexTrain};

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

fn config(downsample: Downsample) -> ModelConfig {
    let mut cfg = ModelConfig::preset("tiny", 2, 12, 12).expect("preset");
    cfg.num_classes = 3;
    cfg.downsample = downsample;
    cfg
}

/// Deterministic pseudo-random values in [-1, 1].
fn values(n: usize, salt: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(0x9E37_79B9).rotate_left(13) ^ salt;
            (h.wrapping_mul(0x85EB_CA6B) >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Every parameter gradient, flattened, in visit order.
struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out
                .push(g.into_data().convert::<f32>().to_vec().expect("f32"));
        }
    }
}

/// Output and parameter gradients of `sum(out * r)` for fixed inputs.
fn run<B: AutodiffBackend>(cfg: &ModelConfig, model: UNet<B>) -> (Vec<f32>, Vec<Vec<f32>>) {
    let device = B::Device::default();
    let (n, c, h, w) = (3, cfg.channels, cfg.height, cfg.width);
    let d = c * h * w;
    let z = Tensor::<B, 4>::from_data(TensorData::new(values(n * d, 1), [n, c, h, w]), &device);
    let t = Tensor::<B, 1>::from_data(TensorData::new(vec![0.1f32, 0.5, 0.93], [n]), &device);
    let label = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 2, 3], [n]), &device);
    let r = Tensor::<B, 4>::from_data(TensorData::new(values(n * d, 7), [n, c, h, w]), &device);
    let out = model.forward(z, t, Some(label));
    let loss = (out.clone() * r).sum();
    let grads = loss.backward();
    let mut v = Grads::<B> {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    let out = out
        .inner()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    (out, v.out)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// A seeded network on backend `B`.
fn init<B: Backend>(cfg: &ModelConfig) -> UNet<B> {
    let device = B::Device::default();
    B::seed(&device, 5);
    UNet::<B>::new(cfg, &device)
}

fn compare(downsample: Downsample) {
    let cfg = config(downsample);
    let cpu_model = init::<CpuTrain>(&cfg);
    let bytes = Recorder::<CpuTrain>::record(&Rec::new(), cpu_model.clone().into_record(), ())
        .expect("record");
    let flex_device = Default::default();
    let flex_model = UNet::<FlexTrain>::new(&cfg, &flex_device);
    let record = Recorder::<FlexTrain>::load(&Rec::new(), bytes, &flex_device).expect("load");
    let flex_model = flex_model.load_record(record);
    // Dropout off (tiny preset), so both runs see the same network.
    assert_eq!(cfg.dropout, 0.0);

    let (cpu_out, cpu_grads) = run(&cfg, cpu_model);
    let (flex_out, flex_grads) = run(&cfg, flex_model);
    let out_diff = max_rel_diff(&cpu_out, &flex_out);
    assert!(out_diff < 1e-4, "outputs differ by {out_diff} (relative)");
    assert_eq!(cpu_grads.len(), flex_grads.len());
    assert!(!cpu_grads.is_empty());
    // Some gradients are exactly zero in exact arithmetic (the key bias of
    // attention: softmax ignores a per-query constant) and only float noise
    // in practice; they are held to the network-wide gradient scale, every
    // other gradient to its own.
    let global = cpu_grads
        .iter()
        .flatten()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(global > 0.0);
    for (i, (a, b)) in cpu_grads.iter().zip(&flex_grads).enumerate() {
        let own = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if own > 1e-3 * global { own } else { global };
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / scale));
        assert!(
            diff < 1e-3,
            "gradient of parameter {i} differs by {diff} (relative to {scale})"
        );
    }
}

#[test]
fn ndarray_and_flex_agree_with_strided_conv_downsampling() {
    compare(Downsample::Conv);
}

#[test]
fn ndarray_and_flex_agree_with_average_pooling() {
    compare(Downsample::AvgPool);
}
