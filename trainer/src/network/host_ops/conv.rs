//! 2-D convolution on host memory: im2col + `gemm` forward, and both
//! gradients as `gemm` products (weights: `dY · colsᵀ`; input: `Wᵀ · dY`
//! scattered back by col2im). Images are independent, so a batch is split
//! over rayon's threads; each thread keeps its own im2col buffer and, in the
//! backward pass, its own partial weight and bias gradients.
//!
//! Layouts are Burn's (and ONNX's): `x [N, Cin, H, W]`, `w [Cout, Cin, kh,
//! kw]`, `y [N, Cout, Ho, Wo]`, all contiguous row-major. Groups and dilation
//! are 1; the caller falls back to Burn's convolution otherwise.

use gemm::Parallelism;
use rayon::prelude::*;

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Zero padding on both sides (rows, columns).
    pub pad: [usize; 2],
}

impl ConvGeom {
    /// Output height.
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad[0] - self.kh) / self.stride[0] + 1
    }

    /// Output width.
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad[1] - self.kw) / self.stride[1] + 1
    }

    /// Rows of the im2col matrix (`Cin · kh · kw`).
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Output positions per image (`Ho · Wo`).
    pub fn p(&self) -> usize {
        self.ho() * self.wo()
    }

    /// Values of one input image.
    pub fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Values of one output image.
    pub fn out_len(&self) -> usize {
        self.cout * self.p()
    }

    /// Whether the convolution is a plain matrix product per image (1×1,
    /// stride 1, no padding): the image itself is the im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// Whether the geometry is one these kernels compute: a kernel no larger
    /// than the padded input, and a non-empty batch.
    pub fn is_valid(&self) -> bool {
        self.n > 0
            && self.cin > 0
            && self.cout > 0
            && self.kh > 0
            && self.kw > 0
            && self.stride[0] > 0
            && self.stride[1] > 0
            && self.kh <= self.h + 2 * self.pad[0]
            && self.kw <= self.w + 2 * self.pad[1]
    }
}

/// For output column `ox` of kernel column `dx`, the input column is
/// `ox · s + dx − pad`; returns the output columns whose input column lies
/// inside `[0, w)`, as `lo..hi`.
fn valid_columns(g: &ConvGeom, dx: usize) -> (usize, usize) {
    let (s, pad, w, wo) = (g.stride[1], g.pad[1], g.w, g.wo());
    // ox · s + dx >= pad  and  ox · s + dx < w + pad
    let lo = pad.saturating_sub(dx).div_ceil(s);
    let hi = if w + pad > dx {
        (w + pad - dx).div_ceil(s)
    } else {
        0
    };
    (lo.min(wo), hi.min(wo).max(lo.min(wo)))
}

/// Writes the im2col matrix `[K, P]` of one image `x [Cin, H, W]`.
fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (ho, wo, p) = (g.ho(), g.wo(), g.p());
    let (sy, sx) = (g.stride[0], g.stride[1]);
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for dy in 0..g.kh {
            for dx in 0..g.kw {
                let row = ((ci * g.kh + dy) * g.kw + dx) * p;
                let (lo, hi) = valid_columns(g, dx);
                for oy in 0..ho {
                    let dst = &mut cols[row + oy * wo..][..wo];
                    let iy = (oy * sy + dy).wrapping_sub(g.pad[0]);
                    if iy >= g.h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * sx + dx - g.pad[1];
                    if sx == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (i, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[first + i * sx];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col matrix `cols [K, P]` back onto one image `dx [Cin, H, W]`
/// (the adjoint of [`im2col`]).
fn col2im(g: &ConvGeom, cols: &[f32], dx_img: &mut [f32]) {
    let (ho, wo, p) = (g.ho(), g.wo(), g.p());
    let (sy, sx) = (g.stride[0], g.stride[1]);
    for ci in 0..g.cin {
        let plane = &mut dx_img[ci * g.h * g.w..][..g.h * g.w];
        for dy in 0..g.kh {
            for dx in 0..g.kw {
                let row = ((ci * g.kh + dy) * g.kw + dx) * p;
                let (lo, hi) = valid_columns(g, dx);
                if lo >= hi {
                    continue;
                }
                for oy in 0..ho {
                    let iy = (oy * sy + dy).wrapping_sub(g.pad[0]);
                    if iy >= g.h {
                        continue;
                    }
                    let src = &cols[row + oy * wo..][lo..hi];
                    let dst = &mut plane[iy * g.w..][..g.w];
                    let first = lo * sx + dx - g.pad[1];
                    if sx == 1 {
                        for (d, s) in dst[first..first + (hi - lo)].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (i, s) in src.iter().enumerate() {
                            dst[first + i * sx] += s;
                        }
                    }
                }
            }
        }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`, every matrix given by its
/// column and row strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    [lhs_cs, lhs_rs]: [usize; 2],
    rhs: &[f32],
    [rhs_cs, rhs_rs]: [usize; 2],
    par: Parallelism,
) {
    // Every index the product touches lies inside its slice.
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(m == 0 || k == 0 || (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len());
    assert!(k == 0 || n == 0 || (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len());
    // SAFETY: the asserts above keep every access in bounds; `dst` does not
    // alias `lhs` or `rhs` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Threads for the batch split, and the parallelism left for each product:
/// a batch smaller than the pool runs its images in turn, each product on
/// every thread.
fn split(n: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    if n >= threads {
        (threads, Parallelism::None)
    } else {
        (1, Parallelism::Rayon(threads))
    }
}

/// `y = conv(x, w) + b`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (k, p, out_len) = (g.k(), g.p(), g.out_len());
    let mut y = vec![0.0f32; g.n * out_len];
    let (groups, par) = split(g.n);
    let per_group = g.n.div_ceil(groups);
    y.par_chunks_mut(per_group * out_len)
        .enumerate()
        .for_each(|(gi, ys)| {
            let mut cols = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![0.0f32; k * p]
            };
            for (j, yi) in ys.chunks_mut(out_len).enumerate() {
                let i = gi * per_group + j;
                let xi = &x[i * g.in_len()..][..g.in_len()];
                let cols: &[f32] = if g.is_pointwise() {
                    xi
                } else {
                    im2col(g, xi, &mut cols);
                    &cols
                };
                if let Some(b) = b {
                    for (row, &bias) in yi.chunks_mut(p).zip(b) {
                        row.fill(bias);
                    }
                }
                matmul(
                    [g.cout, p, k],
                    yi,
                    b.is_some(),
                    w,
                    [1, k],
                    cols,
                    [1, p],
                    par,
                );
            }
        });
    y
}

/// The gradients of `y = conv(x, w) + b` given `dy`: `(dx, dw, db)`; `dx`
/// only when `want_dx`.
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (k, p, in_len, out_len) = (g.k(), g.p(), g.in_len(), g.out_len());
    let (groups, par) = split(g.n);
    let per_group = g.n.div_ceil(groups);
    let mut dx = if want_dx {
        vec![0.0f32; g.n * in_len]
    } else {
        Vec::new()
    };
    let group = |gi: usize, dxs: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let mut dw = vec![0.0f32; g.cout * k];
        let mut db = vec![0.0f32; g.cout];
        let pointwise = g.is_pointwise();
        let mut cols = if pointwise {
            Vec::new()
        } else {
            vec![0.0f32; k * p]
        };
        let mut dcols = if want_dx && !pointwise {
            vec![0.0f32; k * p]
        } else {
            Vec::new()
        };
        let first = gi * per_group;
        let last = (first + per_group).min(g.n);
        let mut dxs = dxs;
        for (j, i) in (first..last).enumerate() {
            let xi = &x[i * in_len..][..in_len];
            let dyi = &dy[i * out_len..][..out_len];
            for (acc, row) in db.iter_mut().zip(dyi.chunks(p)) {
                *acc += row.iter().sum::<f32>();
            }
            let cols: &[f32] = if pointwise {
                xi
            } else {
                im2col(g, xi, &mut cols);
                &cols
            };
            // dW [Cout, K] += dY_i [Cout, P] · cols_iᵀ [P, K]
            matmul(
                [g.cout, k, p],
                &mut dw,
                j > 0,
                dyi,
                [1, p],
                cols,
                [p, 1],
                par,
            );
            if let Some(dxs) = dxs.as_deref_mut() {
                let dxi = &mut dxs[j * in_len..][..in_len];
                // dcols [K, P] = Wᵀ [K, Cout] · dY_i [Cout, P]
                if pointwise {
                    matmul([k, p, g.cout], dxi, false, w, [k, 1], dyi, [1, p], par);
                } else {
                    matmul(
                        [k, p, g.cout],
                        &mut dcols,
                        false,
                        w,
                        [k, 1],
                        dyi,
                        [1, p],
                        par,
                    );
                    col2im(g, &dcols, dxi);
                }
            }
        }
        (dw, db)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if want_dx {
        dx.par_chunks_mut(per_group * in_len)
            .enumerate()
            .map(|(gi, dxs)| group(gi, Some(dxs)))
            .collect()
    } else {
        (0..groups)
            .into_par_iter()
            .map(|gi| group(gi, None))
            .collect()
    };
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts.next().unwrap_or_default();
    for (pw, pb) in parts {
        for (a, b) in dw.iter_mut().zip(&pw) {
            *a += b;
        }
        for (a, b) in db.iter_mut().zip(&pb) {
            *a += b;
        }
    }
    (want_dx.then_some(dx), dw, db)
}

/// `len` deterministic values in `[-scale, scale]` (xorshift) for the
/// kernels' tests.
#[cfg(test)]
pub(super) fn test_values(len: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s % 2001) as f32 / 1000.0 - 1.0) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let (ho, wo) = (g.ho(), g.wo());
        let mut y = vec![0.0f64; g.n * g.out_len()];
        for n in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = f64::from(b[co]);
                        for ci in 0..g.cin {
                            for dy in 0..g.kh {
                                for dx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + dy) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + dx) as isize - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.cin + ci) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = w[((co * g.cin + ci) * g.kh + dy) * g.kw + dx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((n * g.cout + co) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    /// Values in [-1, 1].
    fn values(len: usize, seed: u32) -> Vec<f32> {
        test_values(len, seed, 1.0)
    }

    fn geoms() -> Vec<ConvGeom> {
        let g = |n, cin, h, w, cout, kh, kw, stride, pad| ConvGeom {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
        };
        vec![
            g(3, 2, 5, 6, 4, 3, 3, [1, 1], [1, 1]),
            g(2, 3, 7, 7, 2, 3, 3, [2, 2], [1, 1]),
            g(1, 4, 4, 5, 3, 1, 1, [1, 1], [0, 0]),
            g(5, 2, 6, 4, 3, 3, 3, [1, 2], [0, 1]),
            g(2, 1, 3, 3, 2, 3, 3, [1, 1], [2, 2]),
            g(4, 3, 8, 8, 5, 1, 1, [2, 2], [0, 0]),
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        for (i, g) in geoms().into_iter().enumerate() {
            let x = values(g.n * g.in_len(), 3 * i as u32);
            let w = values(g.cout * g.k(), 3 * i as u32 + 1);
            let b = values(g.cout, 3 * i as u32 + 2);
            let y = forward(&g, &x, &w, Some(&b));
            let want = naive(&g, &x, &w, &b);
            assert_eq!(y.len(), want.len(), "{g:?}");
            for (a, e) in y.iter().zip(&want) {
                assert!((f64::from(*a) - e).abs() < 1e-4, "{g:?}: {a} vs {e}");
            }
        }
    }

    /// `<dy, conv(x, w) + b>` is linear in x, w and b, so its gradients are
    /// exact finite differences of the naive convolution.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        for (i, g) in geoms().into_iter().enumerate() {
            let x = values(g.n * g.in_len(), 5 * i as u32);
            let w = values(g.cout * g.k(), 5 * i as u32 + 1);
            let b = values(g.cout, 5 * i as u32 + 2);
            let dy = values(g.n * g.out_len(), 5 * i as u32 + 3);
            let (dx, dw, db) = backward(&g, &x, &w, &dy, true);
            let dx = dx.expect("asked for dx");
            let dot = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                naive(&g, x, w, b)
                    .iter()
                    .zip(&dy)
                    .map(|(y, d)| y * f64::from(*d))
                    .sum()
            };
            let base = dot(&x, &w, &b);
            let check = |name: &str, grad: &[f32], idx: usize, bumped: f64| {
                let fd = bumped - base;
                assert!(
                    (f64::from(grad[idx]) - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                    "{g:?} d{name}[{idx}]: {} vs {fd}",
                    grad[idx]
                );
            };
            for idx in (0..x.len()).step_by(7) {
                let mut x2 = x.clone();
                x2[idx] += 1.0;
                check("x", &dx, idx, dot(&x2, &w, &b));
            }
            for idx in (0..w.len()).step_by(3) {
                let mut w2 = w.clone();
                w2[idx] += 1.0;
                check("w", &dw, idx, dot(&x, &w2, &b));
            }
            for idx in 0..b.len() {
                let mut b2 = b.clone();
                b2[idx] += 1.0;
                check("b", &db, idx, dot(&x, &w, &b2));
            }
            let (none, dw2, db2) = backward(&g, &x, &w, &dy, false);
            assert!(none.is_none());
            assert_eq!((dw2, db2), (dw, db), "{g:?}: dx off changes dw/db");
        }
    }
}
