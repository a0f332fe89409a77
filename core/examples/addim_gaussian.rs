//! aDDIM vs DDIM with an exact denoiser: per-pixel Gaussian data
//! `x ~ N(0, S2)`, so `E[x | z_t]` and `Var[x | z_t]` are closed form.
//!
//! Runs core's own `ddim_step` / `addim_step` on the cosine schedule's
//! uniform grid from `z_1 ~ N(0, I)` (core's seeded streams) and prints the
//! variance of the result against the data's `S2`. DDIM loses variance at few
//! steps (`x_hat` is a mean); aDDIM adds it back along `eps_hat` and, with the
//! exact `xvar`, adds too much at 2..64 steps. No network is involved, so this
//! checks the sampler equations of the model contract as implemented.
//!
//! ```sh
//! cargo run --release -p fewstep-core --example addim_gaussian
//! ```

use fewstep_core::rng::GaussianStream;
use fewstep_core::{Schedule, addim_step, ddim_step};

/// Data variance per pixel.
const S2: f64 = 0.3;
/// Pixels per image.
const D: usize = 784;
/// Images.
const N: usize = 2000;

fn sample(steps: u32, eta: Option<f64>) -> f64 {
    let schedule = Schedule::Cosine;
    let mut z = vec![0f32; N * D];
    for (i, img) in z.chunks_mut(D).enumerate() {
        GaussianStream::new(0, i as u64).fill(img);
    }
    let mut x_hat = vec![0f32; N * D];
    for k in (1..=steps).rev() {
        let t = schedule.alpha_sigma(f64::from(k) / f64::from(steps));
        let s = schedule.alpha_sigma(f64::from(k - 1) / f64::from(steps));
        let denom = t.alpha * t.alpha * S2 + t.sigma * t.sigma;
        // The exact denoiser of Gaussian data: E[x | z_t] = alpha S2 z / denom.
        let gain = (t.alpha * S2 / denom) as f32;
        for (x, &zi) in x_hat.iter_mut().zip(&z) {
            *x = gain * zi;
        }
        match eta {
            None => ddim_step(&mut z, &x_hat, t, s),
            // eta * Var[x | z_t], the quantity the xvar table estimates.
            Some(eta) => addim_step(
                &mut z,
                &x_hat,
                D,
                t,
                s,
                eta * S2 * t.sigma * t.sigma / denom,
            ),
        }
        .expect("equal lengths");
    }
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
