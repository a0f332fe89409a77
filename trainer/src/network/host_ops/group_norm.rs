//! GroupNorm, optionally followed by SiLU, on host memory: one pass forward
//! and two backward per (image, group), where Burn's composed GroupNorm and
//! SiLU are a dozen broadcast element-wise operations each way. Statistics
//! are accumulated in f64 and are those of Burn's `GroupNorm` (biased
//! variance, `1/sqrt(var + eps)`); the backward pass recomputes them from `x`
//! rather than storing them.
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

/// Mean and `1/sqrt(var + eps)` of one group's values.
fn stats(v: &[f32], eps: f64) -> (f32, f32) {
    let len = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / len;
    let var = v
        .iter()
        .map(|&x| {
            let d = f64::from(x) - mean;
            d * d
        })
        .sum::<f64>()
        / len;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
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
                    for (y, &x) in yc.iter_mut().zip(xc) {
                        let a = x * scale + shift;
                        *y = if g.silu { a * sigmoid(a) } else { a };
                    }
                }
            }
        });
    y
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
            // da (the gradient before the affine map's input) of one group.
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
                        let (mut dg, mut db) = (0.0f64, 0.0f64);
                        for ((d, &x), &dy) in da[range.clone()]
                            .iter_mut()
                            .zip(&xg[range.clone()])
                            .zip(&dyg[range])
                        {
                            let xhat = (x - mean) * rstd;
                            let grad = if g.silu {
                                let a = gamma[c] * xhat + beta[c];
                                let s = sigmoid(a);
                                dy * s * (1.0 + a * (1.0 - s))
                            } else {
                                dy
                            };
                            *d = grad;
                            dg += f64::from(grad * xhat);
                            db += f64::from(grad);
                            let dxhat = f64::from(grad * gamma[c]);
                            sum += dxhat;
                            sum_xhat += dxhat * f64::from(xhat);
                        }
                        dgamma[c] += dg as f32;
                        dbeta[c] += db as f32;
                    }
                    let len = gl as f64;
                    let (m1, m2) = ((sum / len) as f32, (sum_xhat / len) as f32);
                    // Pass 2: dx = rstd (dxhat − mean(dxhat) − xhat mean(dxhat xhat)).
                    let dxg = &mut dxi[gi * gl..][..gl];
                    for k in 0..cg {
                        let c = gi * cg + k;
                        let range = k * l..(k + 1) * l;
                        for ((dx, &x), &d) in dxg[range.clone()]
                            .iter_mut()
                            .zip(&xg[range.clone()])
                            .zip(&da[range])
                        {
                            let xhat = (x - mean) * rstd;
                            *dx = rstd * (d * gamma[c] - m1 - xhat * m2);
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

    /// `<dy, forward(x)>` in f64 for finite differences.
    fn dot(g: &NormGeom, x: &[f32], gamma: &[f32], beta: &[f32], dy: &[f32]) -> f64 {
        let (cg, gl, l) = (g.c / g.groups, g.group_len(), g.l());
        let mut total = 0.0;
        for i in 0..g.n {
            for gi in 0..g.groups {
                let off = i * g.image_len() + gi * gl;
                let v: Vec<f64> = x[off..off + gl].iter().map(|&x| f64::from(x)).collect();
                let mean = v.iter().sum::<f64>() / gl as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / gl as f64;
                for (k, xv) in v.iter().enumerate() {
                    let c = gi * cg + k / l;
                    let a = f64::from(gamma[c]) * (xv - mean) / (var + g.eps).sqrt()
                        + f64::from(beta[c]);
                    let y = if g.silu { a / (1.0 + (-a).exp()) } else { a };
                    total += y * f64::from(dy[off + k]);
                }
            }
        }
        total
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
