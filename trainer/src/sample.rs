//! Sampling a Burn model with `fewstep-core`'s samplers (independent of the
//! runtime), and PNG image grids.

use crate::config::ModelConfig;
use crate::network::model::UNet;
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use fewstep_core::drive::{Conditioning, DriveError, Flow, Sampling, Workspace, drive};
use fewstep_core::format::DataRange;
use fewstep_core::{SamplingPlan, XVar};
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
    crate::export::onnx::tensor_values(&model.forward(zt, tt, lt))
}

/// Samples `n` images from the initial noise of `seed` (core's portable
/// Gaussian stream, image `i` = stream `i`) along `plan` (DDIM or aDDIM with
/// analytic xvar) through core's sampling driver. Returns `n * C*H*W` values.
pub fn sample<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    n: usize,
    plan: SamplingPlan,
    seed: u64,
    conditioning: Conditioning<'_>,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let xvar = XVar::Analytic;
    sample_with_xvar(model, cfg, n, plan, xvar, seed, conditioning, device)
}

/// [`sample`] with aDDIM's `xvar` given: a measured table where the model
/// has one (as the runtime samples an exported model), else analytic.
#[allow(clippy::too_many_arguments)]
pub fn sample_with_xvar<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    n: usize,
    plan: SamplingPlan,
    xvar: XVar<'_>,
    seed: u64,
    conditioning: Conditioning<'_>,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let schedule = cfg.schedule()?;
    let d = cfg.image_len();
    let sampling = Sampling {
        schedule: &schedule,
        prediction: cfg.prediction()?,
        plan,
        xvar,
        image_len: d,
        num_classes: cfg.num_classes as u32,
        conditioning,
        guidance: 1.0,
        clip: None,
        edit: None,
    };
    let lens = sampling.buffer_lens(n);
    let mut z = vec![0f32; lens.z];
    fewstep_core::rng::batch_noise(seed, 0, d, &mut z);
    let (mut out, mut net_in, mut rows) = (
        vec![0f32; lens.out],
        vec![0f32; lens.net_in],
        vec![0i64; lens.labels],
    );
    let mut network = |z: &[f32], t: f64, labels: Option<&[i64]>, out: &mut [f32]| -> Result<()> {
        let rows = z.len() / d;
        let x = evaluate(model, cfg, z, &vec![t as f32; rows], labels, device)?;
        out.copy_from_slice(&x);
        Ok(())
    };
    drive(
        &sampling,
        &mut Workspace {
            z: &mut z,
            out: &mut out,
            net_in: &mut net_in,
            labels: &mut rows,
        },
        &mut network,
        |_| Flow::Continue,
    )
    .map_err(|e| match e {
        DriveError::Network(e) => e,
        other => anyhow::anyhow!("{other}"),
    })?;
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
