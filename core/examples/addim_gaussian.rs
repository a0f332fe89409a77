//! aDDIM vs DDIM with an exact denoiser: per-pixel Gaussian data
//! `x ~ N(0, S2)`, so `E[x | z_t]` and `Var[x | z_t]` are closed form.
//!
//! Runs core's sampling driver (its DDIM / aDDIM steps) on the cosine
//! schedule's uniform grid from `z_1 ~ N(0, I)` (core's seeded streams),
//! with the exact `xvar` as a table, and prints the
//! variance of the result against the data's `S2`. DDIM loses variance at few
//! steps (`x_hat` is a mean); aDDIM adds it back along `eps_hat` and, with the
//! exact `xvar`, adds too much at 2..64 steps. No network is involved, so this
//! checks the sampler equations of the model contract as implemented.
//!
//! ```sh
//! cargo run --release -p fewstep-core --example addim_gaussian
//! ```

use fewstep_core::drive::{Conditioning, Flow, Sampling, Workspace, drive};
use fewstep_core::rng::GaussianStream;
use fewstep_core::{Prediction, SamplerKind, SamplingPlan, Schedule, XVar};

/// Data variance per pixel.
const S2: f64 = 0.3;
/// Pixels per image.
const D: usize = 784;
/// Images.
const N: usize = 2000;
/// xvar table points: every step time `k/n` below (n divides 1024) is one
/// of them, so the table is exact where it is read.
const TABLE: usize = 1025;

fn sample(steps: u32, eta: Option<f64>) -> f64 {
    let schedule = Schedule::Cosine;
    // eta * Var[x | z_t], the quantity the xvar table estimates.
    let xvar: Vec<f32> = (0..TABLE)
        .map(|i| {
            let t = schedule.alpha_sigma(i as f64 / (TABLE - 1) as f64);
            let denom = t.alpha * t.alpha * S2 + t.sigma * t.sigma;
            (eta.unwrap_or(0.0) * S2 * t.sigma * t.sigma / denom) as f32
        })
        .collect();
    let kind = if eta.is_some() {
        SamplerKind::Addim
    } else {
        SamplerKind::Ddim
    };
    let sampling = Sampling {
        schedule: &schedule,
        prediction: Prediction::X,
        plan: SamplingPlan::new(steps, kind).expect("steps >= 1"),
        xvar: XVar::Table(&xvar),
        image_len: D,
        num_classes: 0,
        conditioning: Conditioning::None,
        guidance: 1.0,
        clip: None,
        edit: None,
    };
    let mut z = vec![0f32; N * D];
    for (i, img) in z.chunks_mut(D).enumerate() {
        GaussianStream::new(0, i as u64).fill(img);
    }
    let mut out = vec![0f32; N * D];
    // The exact denoiser of Gaussian data: E[x | z_t] = alpha S2 z / denom.
    let mut denoiser = |z: &[f32], t: f64, _: Option<&[i64]>, x_hat: &mut [f32]| {
        let t = schedule.alpha_sigma(t);
        let gain = (t.alpha * S2 / (t.alpha * t.alpha * S2 + t.sigma * t.sigma)) as f32;
        for (x, &zi) in x_hat.iter_mut().zip(z) {
            *x = gain * zi;
        }
        Ok::<(), ()>(())
    };
    let ws = &mut Workspace {
        z: &mut z,
        out: &mut out,
        net_in: &mut [],
        labels: &mut [],
    };
    drive(&sampling, ws, &mut denoiser, |_| Flow::Continue).expect("buffers fit");
    let n = z.len() as f64;
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    z.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n
}

fn main() {
    println!("data variance {S2}; variance of {N} samples of {D} pixels:");
    println!("steps         DDIM  aDDIM(eta=1)  aDDIM(eta=0.75)  aDDIM(eta=0.1)");
    for steps in [1u32, 2, 4, 8, 16, 64, 512] {
        let row = [
            sample(steps, None),
            sample(steps, Some(1.0)),
            sample(steps, Some(0.75)),
            sample(steps, Some(0.1)),
        ];
        let cells: Vec<String> = row.iter().map(|v| format!("{v:12.4}")).collect();
        println!("{steps:5}  {}", cells.join("  "));
    }
}
