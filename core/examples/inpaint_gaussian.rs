//! How close few-step inpainting through core's driver gets to the exact
//! conditional, on data whose conditional is known in closed form.
//!
//! Data: `x ~ N(0, S)` with `d = 8` correlated pixels, `S_ij = 0.5 * 0.9^|i-j|`.
//! The network is the exact denoiser `E[x | z_t] = alpha S (alpha² S +
//! sigma² I)^-1 z_t` (an ideal diffusion model), and aDDIM gets the exact
//! `xvar(t) = tr Var[x | z_t] / d` as a table. The first four pixels are
//! known (one fixed draw `x_k`); the last four are generated. Their exact
//! conditional is `N(S_uk S_kk^-1 x_k, S_uu - S_uk S_kk^-1 S_ku)`.
//!
//! For each sampler and step count the example draws 20 000 samples with
//! [`fewstep_core::drive`] and prints the KL divergence from the Gaussian
//! fitted to them to the exact conditional (0 is perfect), and for scale
//! the same for unconditional sampling (no mask) against the marginal.
//!
//! ```sh
//! cargo run --release -p fewstep-core --example inpaint_gaussian
//! ```

use fewstep_core::drive::{Conditioning, Edit, Flow, Sampling, Workspace, drive};
use fewstep_core::rng::batch_noise;
use fewstep_core::{Prediction, SamplerKind, SamplingPlan, Schedule, XVar};

const D: usize = 8;
const K: usize = 4; // known pixels: 0..K
const N: usize = 20_000;

type Mat = Vec<Vec<f64>>;

fn cov() -> Mat {
    (0..D)
        .map(|i| {
            (0..D)
                .map(|j| 0.5 * 0.9f64.powi((i as i32 - j as i32).abs()))
                .collect()
        })
        .collect()
}

fn sub(m: &Mat, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Mat {
    rows.map(|i| cols.clone().map(|j| m[i][j]).collect())
        .collect()
}

fn mul(a: &Mat, b: &Mat) -> Mat {
    (0..a.len())
        .map(|i| {
            (0..b[0].len())
                .map(|j| (0..b.len()).map(|k| a[i][k] * b[k][j]).sum())
                .collect()
        })
        .collect()
}

fn transpose(a: &Mat) -> Mat {
    (0..a[0].len())
        .map(|j| (0..a.len()).map(|i| a[i][j]).collect())
        .collect()
}

/// Gauss–Jordan inverse with partial pivoting (the matrices here are small
/// and well conditioned).
fn inverse(a: &Mat) -> Mat {
    let n = a.len();
    let mut m: Mat = a
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.clone();
            row.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            row
        })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))
            .unwrap();
        m.swap(c, p);
        let piv = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= piv);
        for r in 0..n {
            if r != c {
                let f = m[r][c];
                let pivot_row = m[c].clone();
                m[r].iter_mut()
                    .zip(&pivot_row)
                    .for_each(|(v, p)| *v -= f * p);
            }
        }
    }
    m.into_iter().map(|r| r[n..].to_vec()).collect()
}

fn det(a: &Mat) -> f64 {
    // Cholesky: the matrices are covariances.
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            l[i][j] = if i == j {
                (a[i][i] - s).sqrt()
            } else {
                (a[i][j] - s) / l[j][j]
            };
        }
    }
    (0..n).map(|i| l[i][i] * l[i][i]).product()
}

/// KL( N(m0, c0) || N(m1, c1) ).
fn kl(m0: &[f64], c0: &Mat, m1: &[f64], c1: &Mat) -> f64 {
    let k = m0.len();
    let inv1 = inverse(c1);
    let tr: f64 = (0..k).map(|i| mul(&inv1, c0)[i][i]).sum();
    let dm: Vec<f64> = (0..k).map(|i| m1[i] - m0[i]).collect();
    let quad: f64 = (0..k)
        .map(|i| (0..k).map(|j| dm[i] * inv1[i][j] * dm[j]).sum::<f64>())
        .sum();
    0.5 * (tr + quad - k as f64 + (det(c1) / det(c0)).ln())
}

/// The exact denoiser's gain `alpha S (alpha² S + sigma² I)^-1` at `t`.
fn gain(schedule: &Schedule, s: &Mat, t: f64) -> Mat {
    let at = schedule.alpha_sigma(t);
    let m: Mat = (0..D)
        .map(|i| {
            (0..D)
                .map(|j| {
                    at.alpha * at.alpha * s[i][j] + if i == j { at.sigma * at.sigma } else { 0.0 }
                })
                .collect()
        })
        .collect();
    mul(s, &inverse(&m))
        .into_iter()
        .map(|r| r.into_iter().map(|v| v * at.alpha).collect())
        .collect()
}

/// Mean and covariance of the pixels `range` over all samples.
fn moments(z: &[f32], range: std::ops::Range<usize>) -> (Vec<f64>, Mat) {
    let k = range.len();
    let n = (z.len() / D) as f64;
    let mut mean = vec![0.0; k];
    for img in z.chunks_exact(D) {
        for (m, &v) in mean.iter_mut().zip(&img[range.clone()]) {
            *m += f64::from(v) / n;
        }
    }
    let mut c = vec![vec![0.0; k]; k];
    for img in z.chunks_exact(D) {
        let x = &img[range.clone()];
        for i in 0..k {
            for j in 0..k {
                c[i][j] += (f64::from(x[i]) - mean[i]) * (f64::from(x[j]) - mean[j]) / (n - 1.0);
            }
        }
    }
    (mean, c)
}

/// Samples `N` images. With `fresh`, the network sees the known pixels
/// re-noised to each step's time with fresh noise (`alpha_t x_k + sigma_t
/// e`, a new `e` per step) instead of the trajectory's own `z_t`: the
/// alternative to the driver's rule that this example measures it against.
fn sample(
    schedule: &Schedule,
    s: &Mat,
    xvar: &[f32],
    steps: u32,
    kind: SamplerKind,
    edit: Option<Edit<'_>>,
    fresh: Option<&[f64]>,
) -> Vec<f32> {
    let sampling = Sampling {
        schedule,
        prediction: Prediction::X,
        plan: SamplingPlan::new(steps, kind).unwrap(),
        xvar: XVar::Table(xvar),
        image_len: D,
        num_classes: 0,
        conditioning: Conditioning::None,
        guidance: 1.0,
        clip: None,
        edit,
    };
    let lens = sampling.buffer_lens(N);
    let mut z = vec![0f32; lens.z];
    batch_noise(7, 0, D, &mut z);
    let mut out = vec![0f32; lens.out];
    let mut calls = 0u64;
    let mut seen = vec![0f32; N * D];
    let mut network = |z: &[f32], t: f64, _: Option<&[i64]>, out: &mut [f32]| -> Result<(), ()> {
        let g = gain(schedule, s, t);
        seen.copy_from_slice(z);
        if let Some(xk) = fresh {
            calls += 1;
            let at = schedule.alpha_sigma(t);
            let mut e = vec![0f32; N * D];
            batch_noise(1000 + calls, 0, D, &mut e);
            for (img, ei) in seen.chunks_exact_mut(D).zip(e.chunks_exact(D)) {
                for k in 0..K {
                    img[k] = (at.alpha * xk[k] + at.sigma * f64::from(ei[k])) as f32;
                }
            }
        }
        for (zi, oi) in seen.chunks_exact(D).zip(out.chunks_exact_mut(D)) {
            for r in 0..D {
                oi[r] = (0..D).map(|c| g[r][c] * f64::from(zi[c])).sum::<f64>() as f32;
            }
        }
        Ok(())
    };
    drive(
        &sampling,
        &mut Workspace {
            z: &mut z,
            out: &mut out,
            net_in: &mut [],
            labels: &mut [],
        },
        &mut network,
        |_| Flow::Continue,
    )
    .unwrap();
    z
}

fn main() {
    let schedule = Schedule::Cosine;
    let s = cov();
    // Exact xvar(t) = tr(S - alpha² S (alpha² S + sigma² I)^-1 S) / d on 257 points.
    let xvar: Vec<f32> = (0..=256)
        .map(|i| {
            let t = f64::from(i) / 256.0;
            let at = schedule.alpha_sigma(t);
            let post = mul(&gain(&schedule, &s, t), &s);
            ((0..D).map(|k| s[k][k] - at.alpha * post[k][k]).sum::<f64>() / D as f64) as f32
        })
        .collect();

    // One known draw x_k (from the data distribution, via the Cholesky factor).
    let x_known: Vec<f64> = {
        let mut e = [0f32; D];
        batch_noise(99, 0, D, &mut e);
        let l = {
            let mut l = vec![vec![0.0; D]; D];
            for i in 0..D {
                for j in 0..=i {
                    let sum: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
                    l[i][j] = if i == j {
                        (s[i][i] - sum).sqrt()
                    } else {
                        (s[i][j] - sum) / l[j][j]
                    };
                }
            }
            l
        };
        (0..D)
            .map(|i| (0..=i).map(|j| l[i][j] * f64::from(e[j])).sum())
            .collect()
    };
    let skk_inv = inverse(&sub(&s, 0..K, 0..K));
    let suk = sub(&s, K..D, 0..K);
    let xk: Mat = x_known[..K].iter().map(|&v| vec![v]).collect();
    let mu: Vec<f64> = mul(&mul(&suk, &skk_inv), &xk)
        .into_iter()
        .map(|r| r[0])
        .collect();
    let suu = sub(&s, K..D, K..D);
    let reduce = mul(&mul(&suk, &skk_inv), &transpose(&suk));
    let c_exact: Mat = (0..D - K)
        .map(|i| (0..D - K).map(|j| suu[i][j] - reduce[i][j]).collect())
        .collect();

    let init: Vec<f32> = (0..N)
        .flat_map(|_| x_known.iter().map(|&v| v as f32))
        .collect();
    let mask: Vec<f32> = (0..N)
        .flat_map(|_| (0..D).map(|i| if i < K { 0.0 } else { 1.0 }))
        .collect();
    let marginal_mean = vec![0.0; D - K];

    println!("inpainting 4 of 8 correlated Gaussian pixels, {N} samples, exact denoiser");
    println!("KL(fitted || exact): conditional with the mask; the marginal without it (for scale)");
    println!("inpaint: the driver's rule (x_hat replaced in the known region, the known z_t");
    println!("on the request's own noise); fresh: known pixels re-noised with new noise per step");
    println!(
        "steps  DDIM inpaint aDDIM inpaint   DDIM fresh  aDDIM fresh   DDIM plain  aDDIM plain"
    );
    for steps in [1u32, 2, 4, 8, 32, 128] {
        let mut cells = Vec::new();
        for fresh in [None, Some(&x_known[..])] {
            for kind in [SamplerKind::Ddim, SamplerKind::Addim] {
                let edit = Some(Edit {
                    init: &init,
                    mask: Some(&mask),
                });
                let z = sample(&schedule, &s, &xvar, steps, kind, edit, fresh);
                let (m, c) = moments(&z, K..D);
                cells.push(kl(&m, &c, &mu, &c_exact));
            }
        }
        for kind in [SamplerKind::Ddim, SamplerKind::Addim] {
            let z = sample(&schedule, &s, &xvar, steps, kind, None, None);
            let (m, c) = moments(&z, K..D);
            cells.push(kl(&m, &c, &marginal_mean, &suu));
        }
        let cells: Vec<String> = cells.iter().map(|v| format!("{v:12.4}")).collect();
        println!("{steps:5}  {}", cells.join("  "));
    }
}
