//! Sampling a Burn model with `fewstep-core`'s samplers (independent of the
//! runtime), and PNG image grids.

use crate::config::ModelConfig;
use crate::model::UNet;
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use fewstep_core::format::DataRange;
use fewstep_core::plan::SamplerKind;
use fewstep_core::{SamplingPlan, XVar, addim_step, ddim_step};
use std::path::Path;

/// One network evaluation on host buffers: `z` is `N * C*H*W` values.
pub fn evaluate<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    z: &[f32],
    t: &[f32],
    labels: Option<&[i64]>,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let n = t.len();
    let zt = Tensor::<B, 4>::from_data(
        TensorData::new(z.to_vec(), [n, cfg.channels, cfg.height, cfg.width]),
        device,
    );
    let tt = Tensor::<B, 1>::from_data(TensorData::new(t.to_vec(), [n]), device);
    let lt =
        labels.map(|l| Tensor::<B, 1, Int>::from_data(TensorData::new(l.to_vec(), [n]), device));
    crate::onnx::tensor_values(&model.forward(zt, tt, lt))
}

/// Samples `n` images from the initial noise of `seed` (core's portable
/// Gaussian stream, image `i` = stream `i`) with `steps` DDIM or aDDIM
/// (analytic xvar) steps on the uniform grid. Returns `n * C*H*W` values.
pub fn sample<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    n: usize,
    plan: SamplingPlan,
    seed: u64,
    labels: Option<&[i64]>,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let schedule = cfg.schedule()?;
    let pred = cfg.prediction()?;
    let d = cfg.image_len();
    let mut z = vec![0f32; n * d];
    fewstep_core::rng::batch_noise(seed, 0, d, &mut z);
    for step in plan.iter() {
        let at_t = schedule.alpha_sigma(step.t);
        let at_s = schedule.alpha_sigma(step.s);
        let t = vec![step.t as f32; n];
        let mut x_hat = evaluate(model, cfg, &z, &t, labels, device)?;
        pred.output_to_x_hat(&z, &mut x_hat, at_t)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match plan.sampler() {
            SamplerKind::Ddim => ddim_step(&mut z, &x_hat, at_t, at_s),
            SamplerKind::Addim => {
                let xvar = XVar::Analytic.at(&schedule, step.t);
                addim_step(&mut z, &x_hat, d, at_t, at_s, xvar)
            }
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(z)
}

/// Writes `images` (`n * C*H*W`, data range `[-1, 1]`) as one PNG grid with
/// `cols` columns and a 2-pixel grey gutter.
pub fn write_grid(
    path: &Path,
    images: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    cols: usize,
) -> Result<()> {
    let d = channels * height * width;
    let n = images.len() / d.max(1);
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let gw = cols * width + (cols + 1) * gap;
    let gh = rows * height + (rows + 1) * gap;
    let mut rgb = vec![128u8; gw * gh * 3];
    let range = DataRange::default();
    for (i, img) in images.chunks_exact(d).enumerate() {
        let (r, c) = (i / cols, i % cols);
        let (oy, ox) = (gap + r * (height + gap), gap + c * (width + gap));
        for y in 0..height {
            for x in 0..width {
                for ch in 0..3 {
                    let src = if channels == 3 { ch } else { 0 };
                    let v = img[src * height * width + y * width + x];
                    rgb[((oy + y) * gw + ox + x) * 3 + ch] = range.to_u8(v);
                }
            }
        }
    }
    write_rgb_png(path, gw, gh, &rgb)
}

/// Writes an 8-bit RGB PNG (atomically).
pub fn write_rgb_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("PNG header")?;
        w.write_image_data(rgb).context("PNG data")?;
    }
    crate::checkpoint::write_atomic(path, &bytes)
}
