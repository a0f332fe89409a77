//! GroupNorm, optionally followed by SiLU, on host memory: one pass forward
//! and two backward per (image, group), where Burn's composed GroupNorm and
//! SiLU are a dozen broadcast element-wise operations each way. Statistics
//! are those of Burn's `GroupNorm` (biased variance, `1/sqrt(var + eps)`),
//! summed in f32 lanes within blocks and in f64 across them; the backward
//! pass recomputes them from `x` rather than storing them. The sigmoid uses
//! a polynomial `exp` so that every per-value loop vectorises.
//!
//! Layout: `x [N, C, L]` contiguous (`L` = H·W), `gamma`, `beta` `[C]`.

use rayon::prelude::*;

/// The shape of one GroupNorm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormGeom {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Groups (divides `c`).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
    /// SiLU after the affine map.
    pub silu: bool,
}

impl NormGeom {
    /// Values per channel (H·W).
    pub fn l(&self) -> usize {
        self.h * self.w
    }

    /// `[N, C, H, W]`.
    pub fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Values of one image.
    fn image_len(&self) -> usize {
        self.c * self.l()
    }

    /// Values of one group of one image.
    fn group_len(&self) -> usize {
        self.c / self.groups * self.l()
    }

    /// Whether these kernels compute it.
    pub fn is_valid(&self) -> bool {
        self.n > 0
            && self.c > 0
            && self.l() > 0
            && self.groups > 0
            && self.c.is_multiple_of(self.groups)
    }
}

/// Lanes of the f32 accumulators: the loops below keep `LANES` partial sums
/// side by side so that the compiler vectorises them (a single running sum,
/// or one in f64, keeps every add in sequence).
const LANES: usize = 16;

/// Values summed in f32 lanes before the lanes go into the f64 total: each
/// lane then adds at most `BLOCK / LANES` values, so f32 rounding stays far
/// below the f64 statistics the reference computes.
const BLOCK: usize = 1024;

/// `Σ f(v)` in f64, with the inner sums in f32 lanes.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in v.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                acc[k] += f(c[k]);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        total += acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail);
    }
    total
}

/// Mean and `1/sqrt(var + eps)` of one group's values (two passes: the
/// variance from centred values, as the f64 reference does).
fn stats(v: &[f32], eps: f64) -> (f32, f32) {
    let len = v.len() as f64;
    let mean = lane_sum(v, |x| x) / len;
    let m = mean as f32;
    let var = lane_sum(v, |x| (x - m) * (x - m)) / len;
    (m, (1.0 / (var + eps).sqrt()) as f32)
}

/// `e^x` without a libm call, so that loops calling it vectorise: with
/// `x = n · ln 2 + r` and `|r| ≤ ln 2 / 2`, Cephes' degree-6 polynomial gives
/// `e^r` and `2^n` is built in the exponent bits. Relative error under 4e-7
/// (the test's bound) over the clamped range `[-87.3, 88.3]`: results 1.2e-38
/// to 2.2e38, all a sigmoid needs (at 88.7 the rounded `n` would be 128, past
/// the largest exponent). A NaN input gives a number here; SiLU's other
/// factor, its input, carries the NaN on.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // t's bits are 0x4B40_0000 + n: (n + 127) << 23 is 2^n as an f32.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    er * two_n
}

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-a))
}

/// One channel of the forward pass: `y = silu(x · scale + shift)`.
#[inline(always)]
fn forward_channel<const SILU: bool>(y: &mut [f32], x: &[f32], scale: f32, shift: f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        let a = x * scale + shift;
        *y = if SILU { a * sigmoid(a) } else { a };
    }
}

/// `silu(gamma · (x − mean) / std + beta)` (or without the SiLU).
pub fn forward(g: &NormGeom, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    let (cg, gl, l) = (g.c / g.groups, g.group_len(), g.l());
    y.par_chunks_mut(g.image_len())
        .zip(x.par_chunks(g.image_len()))
        .for_each(|(yi, xi)| {
            for (gi, (yg, xg)) in yi.chunks_mut(gl).zip(xi.chunks(gl)).enumerate() {
                let (mean, rstd) = stats(xg, g.eps);
                for (j, (yc, xc)) in yg.chunks_mut(l).zip(xg.chunks(l)).enumerate() {
                    let c = gi * cg + j;
                    let scale = gamma[c] * rstd;
                    let shift = beta[c] - mean * scale;
                    if g.silu {
                        forward_channel::<true>(yc, xc, scale, shift);
                    } else {
                        forward_channel::<false>(yc, xc, scale, shift);
                    }
                }
            }
        });
    y
}

/// Pass 1 of the backward pass over one channel: `da` (the gradient before
/// the SiLU, i.e. at the affine map's output) and, in f64, `(Σ da · xhat,
/// Σ da)` — dgamma and dbeta's share, from which the normalisation's two
/// sums follow (`Σ dxhat = gamma Σ da`, `Σ dxhat xhat = gamma Σ da xhat`).
#[inline(always)]
fn backward_channel<const SILU: bool>(
    da: &mut [f32],
    x: &[f32],
    dy: &[f32],
    (mean, rstd): (f32, f32),
    (gamma, beta): (f32, f32),
) -> (f64, f64) {
    let grad = |x: f32, dy: f32| {
        let xhat = (x - mean) * rstd;
        let d = if SILU {
            let a = gamma * xhat + beta;
            let s = sigmoid(a);
            dy * s * (1.0 + a * (1.0 - s))
        } else {
            dy
        };
        (d, xhat)
    };
    let (mut dg, mut db) = (0.0f64, 0.0f64);
    for ((dab, xb), dyb) in da
        .chunks_mut(BLOCK)
        .zip(x.chunks(BLOCK))
        .zip(dy.chunks(BLOCK))
    {
        let (mut acc_g, mut acc_b) = ([0.0f32; LANES], [0.0f32; LANES]);
        let mut dac = dab.chunks_exact_mut(LANES);
        let mut xc = xb.chunks_exact(LANES);
        let mut dyc = dyb.chunks_exact(LANES);
        for ((d, x), dy) in (&mut dac).zip(&mut xc).zip(&mut dyc) {
            for k in 0..LANES {
                let (v, xhat) = grad(x[k], dy[k]);
                d[k] = v;
                acc_g[k] += v * xhat;
                acc_b[k] += v;
            }
        }
        for ((d, &x), &dy) in dac
            .into_remainder()
            .iter_mut()
            .zip(xc.remainder())
            .zip(dyc.remainder())
        {
            let (v, xhat) = grad(x, dy);
            *d = v;
            dg += f64::from(v * xhat);
            db += f64::from(v);
        }
        dg += acc_g.iter().map(|&a| f64::from(a)).sum::<f64>();
        db += acc_b.iter().map(|&a| f64::from(a)).sum::<f64>();
    }
    (dg, db)
}

/// Gradients `(dx, dgamma, dbeta)` of [`forward`] given `dy`.
pub fn backward(
    g: &NormGeom,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let (cg, gl, l) = (g.c / g.groups, g.group_len(), g.l());
    let threads = rayon::current_num_threads().max(1);
    let per = g.n.div_ceil(threads);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * g.image_len())
        .enumerate()
        .map(|(ti, dxs)| {
            let mut dgamma = vec![0.0f32; g.c];
            let mut dbeta = vec![0.0f32; g.c];
            // da (the gradient at the affine map's output) of one group.
            let mut da = vec![0.0f32; gl];
            for (j, dxi) in dxs.chunks_mut(g.image_len()).enumerate() {
                let i = ti * per + j;
                let xi = &x[i * g.image_len()..][..g.image_len()];
                let dyi = &dy[i * g.image_len()..][..g.image_len()];
                for gi in 0..g.groups {
                    let xg = &xi[gi * gl..][..gl];
                    let dyg = &dyi[gi * gl..][..gl];
                    let (mean, rstd) = stats(xg, g.eps);
                    // Pass 1: da, the affine gradients, and the two sums of
                    // dxhat = da · gamma the normalisation's adjoint needs.
                    let (mut sum, mut sum_xhat) = (0.0f64, 0.0f64);
                    for k in 0..cg {
                        let c = gi * cg + k;
                        let range = k * l..(k + 1) * l;
                        let (da_c, x_c, dy_c) =
                            (&mut da[range.clone()], &xg[range.clone()], &dyg[range]);
                        let (st, affine) = ((mean, rstd), (gamma[c], beta[c]));
                        let (dg, db) = if g.silu {
                            backward_channel::<true>(da_c, x_c, dy_c, st, affine)
                        } else {
                            backward_channel::<false>(da_c, x_c, dy_c, st, affine)
                        };
                        dgamma[c] += dg as f32;
                        dbeta[c] += db as f32;
                        sum += f64::from(gamma[c]) * db;
                        sum_xhat += f64::from(gamma[c]) * dg;
                    }
                    let len = gl as f64;
                    let (m1, m2) = ((sum / len) as f32, (sum_xhat / len) as f32);
                    // Pass 2: dx = rstd (dxhat − mean(dxhat) − xhat mean(dxhat xhat)).
                    let dxg = &mut dxi[gi * gl..][..gl];
                    for k in 0..cg {
                        let gc = gamma[gi * cg + k];
                        let range = k * l..(k + 1) * l;
                        for ((dx, &x), &d) in dxg[range.clone()]
                            .iter_mut()
                            .zip(&xg[range.clone()])
                            .zip(&da[range])
                        {
                            let xhat = (x - mean) * rstd;
                            *dx = rstd * (d * gc - m1 - xhat * m2);
                        }
                    }
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let mut parts = partials.into_iter();
    let (mut dgamma, mut dbeta) = parts.next().unwrap_or_default();
    for (pg, pb) in parts {
        for (a, b) in dgamma.iter_mut().zip(&pg) {
            *a += b;
        }
        for (a, b) in dbeta.iter_mut().zip(&pb) {
            *a += b;
        }
    }
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-2, 2].
    fn values(len: usize, seed: u32) -> Vec<f32> {
        super::super::conv::test_values(len, seed, 2.0)
    }

    /// `<dy, forward(x)>` in f64 for finite differences (the reference's
    /// forward pass; its gradients are not used here).
    fn dot(g: &NormGeom, x: &[f32], gamma: &[f32], beta: &[f32], dy: &[f32]) -> f64 {
        let (y, ..) = reference(g, x, gamma, beta, dy);
        y.iter().zip(dy).map(|(y, &d)| y * f64::from(d)).sum()
    }

    #[test]
    fn exp_fast_is_within_a_few_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp_fast(x)) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        // Clamped, never inf or 0 (the sigmoid divides by 1 + e^-a).
        assert!(exp_fast(1000.0).is_finite() && exp_fast(-1000.0) > 0.0);
        assert!((sigmoid(-200.0)).abs() < 1e-30 && (sigmoid(200.0) - 1.0).abs() < 1e-7);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    /// Forward and backward in f64, written from the formulas (no lanes,
    /// no blocks): the oracle for shapes large enough to use both.
    fn reference(
        g: &NormGeom,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (cg, gl, l) = (g.c / g.groups, g.group_len(), g.l());
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut dgamma, mut dbeta) = (vec![0.0; g.c], vec![0.0; g.c]);
        for i in 0..g.n {
            for gi in 0..g.groups {
                let off = i * g.image_len() + gi * gl;
                let v: Vec<f64> = x[off..off + gl].iter().map(|&x| f64::from(x)).collect();
                let mean = v.iter().sum::<f64>() / gl as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / gl as f64;
                let rstd = 1.0 / (var + g.eps).sqrt();
                let mut dxhat = vec![0.0; gl];
                let mut xhats = vec![0.0; gl];
                for k in 0..gl {
                    let c = gi * cg + k / l;
                    let (gm, bt) = (f64::from(gamma[c]), f64::from(beta[c]));
                    let xhat = (v[k] - mean) * rstd;
                    let a = gm * xhat + bt;
                    let s = 1.0 / (1.0 + (-a).exp());
                    let d = f64::from(dy[off + k]);
                    let (out, da) = if g.silu {
                        (a * s, d * s * (1.0 + a * (1.0 - s)))
                    } else {
                        (a, d)
                    };
                    y[off + k] = out;
                    dgamma[c] += da * xhat;
                    dbeta[c] += da;
                    dxhat[k] = da * gm;
                    xhats[k] = xhat;
                }
                let m1 = dxhat.iter().sum::<f64>() / gl as f64;
                let m2 = dxhat.iter().zip(&xhats).map(|(d, x)| d * x).sum::<f64>() / gl as f64;
                for k in 0..gl {
                    dx[off + k] = rstd * (dxhat[k] - m1 - xhats[k] * m2);
                }
            }
        }
        (y, dx, dgamma, dbeta)
    }

    #[test]
    fn large_groups_match_the_f64_reference() {
        // 28×28 with 8 channels a group: 6272 values, several blocks of
        // lanes and a tail; offset and scaled values stress the statistics.
        for silu in [true, false] {
            let g = NormGeom {
                n: 2,
                c: 16,
                h: 28,
                w: 28,
                groups: 2,
                eps: 1e-5,
                silu,
            };
            let x: Vec<f32> = values(g.n * g.image_len(), 7)
                .iter()
                .map(|v| 3.0 * v + 5.0)
                .collect();
            let gamma = values(g.c, 8);
            let beta = values(g.c, 9);
            let dy = values(x.len(), 10);
            let y = forward(&g, &x, &gamma, &beta);
            let (dx, dgamma, dbeta) = backward(&g, &x, &gamma, &beta, &dy);
            let (ry, rdx, rdg, rdb) = reference(&g, &x, &gamma, &beta, &dy);
            let check = |name: &str, got: &[f32], want: &[f64], tol: f64| {
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
                for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (f64::from(a) - b).abs() <= tol * scale,
                        "silu {silu} {name}[{k}]: {a} vs {b}"
                    );
                }
            };
            check("y", &y, &ry, 1e-5);
            check("dx", &dx, &rdx, 1e-5);
            check("dgamma", &dgamma, &rdg, 1e-5);
            check("dbeta", &dbeta, &rdb, 1e-5);
        }
    }

    /// Bumps one of `(x, gamma, beta)` by the finite-difference step.
    type Bump<'a> = dyn Fn(&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>) + 'a;

    #[test]
    fn forward_and_gradients_match_finite_differences() {
        for (case, silu) in [(0u32, true), (1, false)] {
            let g = NormGeom {
                n: 3,
                c: 6,
                h: 1,
                w: 5,
                groups: 2,
                eps: 1e-5,
                silu,
            };
            let x = values(g.n * g.image_len(), 10 * case);
            let gamma = values(g.c, 10 * case + 1);
            let beta = values(g.c, 10 * case + 2);
            let dy = values(x.len(), 10 * case + 3);
            let y = forward(&g, &x, &gamma, &beta);
            let ones: Vec<f32> = vec![1.0; x.len()];
            let want: f64 = dot(&g, &x, &gamma, &beta, &ones);
            let got: f64 = y.iter().map(|&v| f64::from(v)).sum();
            assert!(
                (got - want).abs() < 1e-3,
                "silu {silu}: sum {got} vs {want}"
            );
            let (dx, dgamma, dbeta) = backward(&g, &x, &gamma, &beta, &dy);
            let h = 1e-3f32;
            let fd = |bump: &Bump<'_>| {
                let (mut x1, mut g1, mut b1) = (x.clone(), gamma.clone(), beta.clone());
                bump(&mut x1, &mut g1, &mut b1);
                let up = dot(&g, &x1, &g1, &b1, &dy);
                let (mut x2, mut g2, mut b2) = (x.clone(), gamma.clone(), beta.clone());
                let neg = |v: &mut Vec<f32>, w: &Vec<f32>, orig: &Vec<f32>| {
                    for ((a, b), o) in v.iter_mut().zip(w).zip(orig) {
                        *a = 2.0 * o - b;
                    }
                };
                neg(&mut x2, &x1, &x);
                neg(&mut g2, &g1, &gamma);
                neg(&mut b2, &b1, &beta);
                let down = dot(&g, &x2, &g2, &b2, &dy);
                (up - down) / (2.0 * f64::from(h))
            };
            let close = |name: &str, got: f32, want: f64| {
                assert!(
                    (f64::from(got) - want).abs() < 2e-2 * (1.0 + want.abs()),
                    "silu {silu} {name}: {got} vs {want}"
                );
            };
            for idx in 0..x.len() {
                let want = fd(&|x, _, _| x[idx] += h);
                close(&format!("dx[{idx}]"), dx[idx], want);
            }
            for c in 0..g.c {
                close(&format!("dgamma[{c}]"), dgamma[c], fd(&|_, g, _| g[c] += h));
                close(&format!("dbeta[{c}]"), dbeta[c], fd(&|_, _, b| b[c] += h));
            }
        }
    }
}
