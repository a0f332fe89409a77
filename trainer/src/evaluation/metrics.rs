//! Sample-quality metrics on feature matrices (rows = samples), in f64:
//! KID (kernel inception distance), FID (Fréchet distance) and the class
//! histogram of classifier logits. `fewstep-train eval` feeds them the
//! penultimate features of the trainer's small classifier
//! ([`crate::evaluation::classifier`]); the functions themselves know nothing of images.
//!
//! - KID: Bińkowski et al. 2018, "Demystifying MMD GANs": the unbiased MMD²
//!   with the cubic polynomial kernel `k(x, y) = (x·y / d + 1)³`, averaged
//!   over random subsets of size `m` of both sets. Same estimator as
//!   clean-fid's `kernel_distance` and torch-fidelity's `kid`: per subset
//!   `(Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)) / (m(m−1)) − 2 Σ_{i,j} k(x_i,y_j) / m²`,
//!   reported as the mean and the (population) standard deviation over subsets.
//! - FID: Heusel et al. 2017, `‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr((Σ₁^½ Σ₂ Σ₁^½)^½)`
//!   with unbiased (n−1) covariances; the matrix square roots come from
//!   symmetric eigendecompositions (`nalgebra`), which stay real and exact on
//!   the rank-deficient covariances that few samples give (a general `sqrtm`
//!   of the non-symmetric `Σ₁Σ₂` can go complex there).

use anyhow::{Result, bail, ensure};
use fewstep_core::rng::UniformStream;
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// A feature matrix: `rows` samples of `dim` finite values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    rows: usize,
    dim: usize,
    values: Vec<f64>,
}

impl Features {
    /// Wraps `rows * dim` values, sample after sample.
    ///
    /// # Errors
    /// When the length does not match, `dim` is 0, or a value is not finite
    /// (a NaN would silently poison every metric).
    pub fn new(rows: usize, dim: usize, values: Vec<f64>) -> Result<Self> {
        ensure!(dim > 0, "features need at least one dimension");
        ensure!(
            rows.checked_mul(dim) == Some(values.len()),
            "{} feature values are not {rows} rows of {dim}",
            values.len()
        );
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "feature {} of sample {} is {} (not finite)",
                i % dim,
                i / dim,
                values[i]
            );
        }
        Ok(Self { rows, dim, values })
    }

    /// As [`Features::new`], from `f32` values (what the networks output).
    pub fn from_f32(rows: usize, dim: usize, values: &[f32]) -> Result<Self> {
        Self::new(rows, dim, values.iter().map(|&v| f64::from(v)).collect())
    }

    /// Number of samples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Sample `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The samples `idx` as an `idx.len() × dim` matrix.
    fn select(&self, idx: &[usize]) -> DMatrix<f64> {
        DMatrix::from_fn(idx.len(), self.dim, |i, j| {
            self.values[idx[i] * self.dim + j]
        })
    }

    /// All samples as a `rows × dim` matrix.
    fn matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.rows, self.dim, &self.values)
    }
}

/// A KID estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of the per-subset unbiased MMD² estimates.
    pub mean: f64,
    /// Their standard deviation (population, as clean-fid / torch-fidelity).
    pub std: f64,
    /// Number of subsets.
    pub subsets: usize,
    /// Samples drawn from each set per subset.
    pub subset_size: usize,
}

/// Seed salt of the KID subset draws (so they differ from other streams of
/// the same user seed).
const KID_SALT: u64 = 0x6b69_645f_7375_6273;

/// `m` distinct indices of `0..n` (all of them, shuffled, when `m >= n`):
/// a partial Fisher–Yates shuffle driven by core's counter-based RNG stream
/// `(seed, stream)`, so the choice is the same on every platform.
pub fn random_indices(seed: u64, stream: u64, n: usize, m: usize) -> Vec<usize> {
    let m = m.min(n);
    let mut rng = UniformStream::new(seed, stream);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let span = n - i;
        let j = i + ((rng.next_f64() * span as f64) as usize).min(span - 1);
        idx.swap(i, j);
    }
    idx.truncate(m);
    idx
}

/// The samples of KID subset `subset` of a set of `n`. The stream depends
/// on the seed, the subset number and `n` only, not on which argument of
/// [`kid`] the set is, so `kid(a, b)` and `kid(b, a)` use the same subsets
/// (and agree up to the rounding of the sums' order).
fn subset_indices(seed: u64, subset: usize, n: usize, m: usize) -> Vec<usize> {
    let stream = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ subset as u64;
    random_indices(seed ^ KID_SALT, stream, n, m)
}

/// Sum of `(g / d + 1)³` over the entries of the Gram matrix `g`, with or
/// without its diagonal.
fn cubic_kernel_sum(g: &DMatrix<f64>, d: f64, with_diagonal: bool) -> f64 {
    let k = |v: f64| (v / d + 1.0).powi(3);
    let all: f64 = g.iter().map(|&v| k(v)).sum();
    if with_diagonal {
        all
    } else {
        all - g.diagonal().iter().map(|&v| k(v)).sum::<f64>()
    }
}

/// KID between `a` and `b`: the unbiased MMD² with the cubic polynomial
/// kernel over `subsets` seeded random subsets of `subset_size` samples of
/// each set (drawn without replacement within a subset).
///
/// # Errors
/// When the dimensions differ, `subsets` is 0, or `subset_size` is below 2
/// or above either set's size.
pub fn kid(
    a: &Features,
    b: &Features,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    ensure!(
        a.dim == b.dim,
        "KID: features of {} and {} dimensions",
        a.dim,
        b.dim
    );
    ensure!(subsets > 0, "KID needs at least one subset");
    let m = subset_size;
    ensure!(m >= 2, "KID subsets need at least 2 samples, not {m}");
    ensure!(
        m <= a.rows && m <= b.rows,
        "KID subset size {m} exceeds a set of {} samples",
        a.rows.min(b.rows)
    );
    let d = a.dim as f64;
    let mf = m as f64;
    let one = |s: usize| {
        let x = a.select(&subset_indices(seed, s, a.rows, m));
        let y = b.select(&subset_indices(seed, s, b.rows, m));
        let kxx = cubic_kernel_sum(&(&x * x.transpose()), d, false);
        let kyy = cubic_kernel_sum(&(&y * y.transpose()), d, false);
        let kxy = cubic_kernel_sum(&(&x * y.transpose()), d, true);
        (kxx + kyy) / (mf * (mf - 1.0)) - 2.0 * kxy / (mf * mf)
    };
    // Subsets are independent (three m×m Gram matrices each, seconds at
    // m = 1000): spread them over the cores. Each estimate lands in its own
    // slot, so the result does not depend on the thread count.
    let mut estimates = vec![0.0; subsets];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(subsets);
    let per_thread = subsets.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in estimates.chunks_mut(per_thread).enumerate() {
            let one = &one;
            scope.spawn(move || {
                for (j, e) in chunk.iter_mut().enumerate() {
                    *e = one(t * per_thread + j);
                }
            });
        }
    });
    let n = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / n;
    let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
    Ok(Kid {
        mean,
        std: var.sqrt(),
        subsets,
        subset_size: m,
    })
}

/// The mean and the unbiased (n−1) covariance of the samples.
///
/// # Errors
/// With fewer than 2 samples (no covariance).
pub fn mean_cov(f: &Features) -> Result<(DVector<f64>, DMatrix<f64>)> {
    ensure!(
        f.rows >= 2,
        "a covariance needs at least 2 samples, not {}",
        f.rows
    );
    let x = f.matrix();
    let mean = x.row_mean().transpose();
    let mut centered = x;
    for mut row in centered.row_iter_mut() {
        row -= mean.transpose();
    }
    let cov = centered.tr_mul(&centered) / (f.rows as f64 - 1.0);
    Ok((mean, cov))
}

/// Eigenvalues of a symmetric matrix (symmetrised first: products of
/// symmetric matrices are symmetric only up to rounding).
fn symmetric_eigen(m: &DMatrix<f64>) -> SymmetricEigen<f64, nalgebra::Dyn> {
    SymmetricEigen::new((m + m.transpose()) * 0.5)
}

/// The square root of a symmetric positive semi-definite matrix. Tiny
/// negative eigenvalues (rounding) count as 0.
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = symmetric_eigen(m);
    let roots = e.eigenvalues.map(|v| v.max(0.0).sqrt());
    &e.eigenvectors * DMatrix::from_diagonal(&roots) * e.eigenvectors.transpose()
}

/// The Fréchet distance between the Gaussians `N(mu1, cov1)` and
/// `N(mu2, cov2)`: `‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr((Σ₁^½ Σ₂ Σ₁^½)^½)`.
///
/// # Errors
/// When the shapes disagree.
pub fn frechet_distance(
    mu1: &DVector<f64>,
    cov1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    cov2: &DMatrix<f64>,
) -> Result<f64> {
    let d = mu1.len();
    ensure!(
        mu2.len() == d && cov1.shape() == (d, d) && cov2.shape() == (d, d),
        "Fréchet distance: mismatched shapes"
    );
    let s1 = sqrt_psd(cov1);
    let inner = &s1 * cov2 * &s1;
    let tr_sqrt: f64 = symmetric_eigen(&inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    Ok((mu1 - mu2).norm_squared() + cov1.trace() + cov2.trace() - 2.0 * tr_sqrt)
}

/// FID between the samples `a` and `b` (the Fréchet distance of their
/// Gaussian fits).
///
/// # Errors
/// When the dimensions differ or a set has fewer than 2 samples.
pub fn fid(a: &Features, b: &Features) -> Result<f64> {
    ensure!(
        a.dim == b.dim,
        "FID: features of {} and {} dimensions",
        a.dim,
        b.dim
    );
    let (mu1, cov1) = mean_cov(a)?;
    let (mu2, cov2) = mean_cov(b)?;
    frechet_distance(&mu1, &cov1, &mu2, &cov2)
}

/// The index of each row's largest logit (the first one on ties).
pub fn argmax_rows(logits: &Features) -> Vec<usize> {
    (0..logits.rows)
        .map(|i| {
            let row = logits.row(i);
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// How many rows predict each class (`logits.dim()` classes).
pub fn class_histogram(logits: &Features) -> Vec<u64> {
    let mut hist = vec![0u64; logits.dim];
    for k in argmax_rows(logits) {
        hist[k] += 1;
    }
    hist
}

/// The fraction of samples whose predicted class equals the requested one.
///
/// # Errors
/// When the counts differ or there are no samples.
pub fn label_agreement(predicted: &[usize], requested: &[i64]) -> Result<f64> {
    ensure!(
        predicted.len() == requested.len(),
        "{} predictions for {} requested labels",
        predicted.len(),
        requested.len()
    );
    ensure!(!predicted.is_empty(), "no samples to compare");
    let same = predicted
        .iter()
        .zip(requested)
        .filter(|&(&p, &r)| i64::try_from(p).is_ok_and(|p| p == r))
        .count();
    Ok(same as f64 / predicted.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fewstep_core::rng::GaussianStream;

    /// `n` samples of `N(shift, I)` in `d` dimensions.
    fn gaussian(n: usize, d: usize, shift: f64, seed: u64) -> Features {
        let mut g = GaussianStream::new(seed, 0);
        let mut v = vec![0f32; n * d];
        g.fill(&mut v);
        Features::new(n, d, v.iter().map(|&x| f64::from(x) + shift).collect()).unwrap()
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones() {
        let a = gaussian(400, 16, 0.0, 1);
        let b = gaussian(400, 16, 0.0, 2);
        let same = kid(&a, &b, 20, 200, 0).unwrap();
        // The unbiased estimate scatters around 0: its mean is within a few
        // standard errors of 0 (std / sqrt(subsets) overstates nothing here).
        assert!(
            same.mean.abs() < 3.0 * same.std.max(1e-12),
            "same distribution: {same:?}"
        );
        assert!(same.mean.abs() < 0.05, "same distribution: {same:?}");
        let c = gaussian(400, 16, 0.5, 3);
        let shifted = kid(&a, &c, 20, 200, 0).unwrap();
        assert!(
            shifted.mean > 10.0 * same.mean.abs()
                && shifted.mean > 20.0 * shifted.std / 20f64.sqrt(),
            "shifted {shifted:?} vs same {same:?}"
        );
        // A larger shift is a larger distance.
        let far = gaussian(400, 16, 1.0, 4);
        assert!(kid(&a, &far, 20, 200, 0).unwrap().mean > shifted.mean);
    }

    #[test]
    fn kid_is_symmetric_and_seeded() {
        let a = gaussian(300, 8, 0.0, 5);
        let b = gaussian(250, 8, 0.3, 6);
        let ab = kid(&a, &b, 10, 100, 7).unwrap();
        // The same subsets and kernel sums, only summed in another order.
        let close = |p: Kid, q: Kid| {
            (p.mean - q.mean).abs() <= 1e-12 * p.mean.abs() && (p.std - q.std).abs() <= 1e-9 * p.std
        };
        assert!(close(ab, kid(&b, &a, 10, 100, 7).unwrap()));
        let same_len = gaussian(300, 8, 0.3, 8);
        assert!(close(
            kid(&a, &same_len, 10, 100, 7).unwrap(),
            kid(&same_len, &a, 10, 100, 7).unwrap()
        ));
        assert_eq!(
            ab,
            kid(&a, &b, 10, 100, 7).unwrap(),
            "same seed, same value"
        );
        assert_ne!(ab.mean, kid(&a, &b, 10, 100, 8).unwrap().mean);
    }

    #[test]
    fn kid_matches_a_direct_transcription_on_full_sets() {
        // With m = n every subset is the whole set (in some order), so KID is
        // the plain unbiased MMD² over all pairs, computed here loop by loop.
        let a = gaussian(12, 3, 0.0, 9);
        let b = gaussian(12, 3, 0.7, 10);
        let k = |x: &[f64], y: &[f64]| {
            (x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / 3.0 + 1.0).powi(3)
        };
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        for i in 0..12 {
            for j in 0..12 {
                if i != j {
                    xx += k(a.row(i), a.row(j));
                    yy += k(b.row(i), b.row(j));
                }
                xy += k(a.row(i), b.row(j));
            }
        }
        let want = (xx + yy) / (12.0 * 11.0) - 2.0 * xy / 144.0;
        let got = kid(&a, &b, 3, 12, 0).unwrap();
        assert!(
            (got.mean - want).abs() < 1e-10 * want.abs(),
            "{got:?} vs {want}"
        );
        assert!(got.std < 1e-10 * want.abs(), "{got:?}");
    }

    #[test]
    fn subsets_are_distinct_indices() {
        let idx = subset_indices(3, 4, 50, 50);
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(subset_indices(3, 4, 50, 10), subset_indices(3, 5, 50, 10));
    }

    #[test]
    fn kid_rejects_bad_settings() {
        let a = gaussian(10, 4, 0.0, 1);
        let b = gaussian(10, 5, 0.0, 1);
        assert!(kid(&a, &b, 2, 5, 0).is_err());
        assert!(kid(&a, &a, 0, 5, 0).is_err());
        assert!(kid(&a, &a, 2, 1, 0).is_err());
        assert!(kid(&a, &a, 2, 11, 0).is_err());
        assert!(Features::new(2, 2, vec![0.0, 1.0, f64::NAN, 0.0]).is_err());
        assert!(Features::new(2, 2, vec![0.0; 3]).is_err());
    }

    /// Rows `i` of a Sylvester Hadamard matrix of size `n` (a power of two),
    /// columns `1..=d`: zero-mean ±1 columns, pairwise orthogonal.
    fn hadamard_column(i: usize, j: usize) -> f64 {
        if (i & j).count_ones().is_multiple_of(2) {
            1.0
        } else {
            -1.0
        }
    }

    /// `n` samples whose empirical mean is exactly `mu` and whose unbiased
    /// covariance is exactly `diag(var)`.
    fn exact_diagonal(n: usize, mu: &[f64], var: &[f64]) -> Features {
        let d = mu.len();
        assert!(d < n && n.is_power_of_two());
        // Column j: mu_j + s_j h_{j+1}; sum h² = n, so var_j = s_j² n / (n-1).
        let scale: Vec<f64> = var
            .iter()
            .map(|v| (v * (n as f64 - 1.0) / n as f64).sqrt())
            .collect();
        let values = (0..n)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| mu[j] + scale[j] * hadamard_column(i, j + 1))
            .collect();
        Features::new(n, d, values).unwrap()
    }

    #[test]
    fn fid_matches_the_closed_form_for_diagonal_covariances() {
        let mu1 = [0.5, -1.0, 2.0, 0.0, 3.0];
        let var1 = [1.0, 4.0, 0.25, 9.0, 2.0];
        let mu2 = [1.5, -1.0, 0.0, 0.5, 3.0];
        let var2 = [2.0, 1.0, 0.25, 16.0, 0.5];
        let a = exact_diagonal(16, &mu1, &var1);
        let b = exact_diagonal(32, &mu2, &var2);
        let (m, c) = mean_cov(&a).unwrap();
        assert!((m[0] - 0.5).abs() < 1e-12 && (c[(1, 1)] - 4.0).abs() < 1e-12);
        assert!(c[(0, 1)].abs() < 1e-12);
        let want: f64 = mu1
            .iter()
            .zip(&mu2)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f64>()
            + var1
                .iter()
                .zip(&var2)
                .map(|(p, q)| (p.sqrt() - q.sqrt()).powi(2))
                .sum::<f64>();
        let got = fid(&a, &b).unwrap();
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
        assert!((fid(&b, &a).unwrap() - want).abs() <= 1e-6 * want);
    }

    #[test]
    fn fid_matches_the_two_dimensional_closed_form_for_non_commuting_covariances() {
        // In 2-D, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for PSD M, and
        // Σ₁^½ Σ₂ Σ₁^½ has the trace and determinant of Σ₁Σ₂.
        let a = gaussian(64, 2, 0.0, 11);
        let mut bv: Vec<f64> = gaussian(64, 2, 0.0, 12).values;
        for r in bv.chunks_exact_mut(2) {
            // A sheared, scaled, shifted cloud: covariance not diagonal and
            // not commuting with a's.
            let (x, y) = (r[0], r[1]);
            r[0] = 2.0 * x + 1.0;
            r[1] = 0.8 * x + 0.5 * y - 0.3;
        }
        let b = Features::new(64, 2, bv).unwrap();
        let (m1, c1) = mean_cov(&a).unwrap();
        let (m2, c2) = mean_cov(&b).unwrap();
        let p = &c1 * &c2;
        let tr_sqrt = (p.trace() + 2.0 * (c1.determinant() * c2.determinant()).sqrt()).sqrt();
        let want = (&m1 - &m2).norm_squared() + c1.trace() + c2.trace() - 2.0 * tr_sqrt;
        let got = fid(&a, &b).unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    }

    #[test]
    fn fid_of_a_set_with_itself_is_zero_and_rotation_invariant() {
        let a = gaussian(200, 12, 0.3, 13);
        let scale = a.values.iter().map(|v| v * v).sum::<f64>() / a.rows as f64;
        assert!(fid(&a, &a).unwrap().abs() < 1e-9 * scale);
        // Rank-deficient covariances (fewer samples than dimensions) too.
        let few = gaussian(5, 12, 0.0, 14);
        // The square root's zero eigenvalues turn rounding noise e into
        // sqrt(e): ~1e-8 each, so the tolerance is looser here.
        let f = fid(&few, &few).unwrap();
        assert!(f.abs() < 1e-6 * scale, "{f}");
        // Rotating both sets by one orthogonal matrix changes nothing.
        let b = gaussian(150, 12, -0.2, 15);
        let q = nalgebra::DMatrix::<f64>::from_fn(12, 12, |i, j| ((i * 7 + j * 3) % 5) as f64)
            .qr()
            .q();
        let rot = |f: &Features| {
            let r = f.matrix() * &q;
            Features::new(f.rows, f.dim, r.transpose().iter().copied().collect()).unwrap()
        };
        let plain = fid(&a, &b).unwrap();
        let rotated = fid(&rot(&a), &rot(&b)).unwrap();
        assert!(
            (plain - rotated).abs() < 1e-9 * plain,
            "{plain} vs {rotated}"
        );
        assert!(fid(&a, &gaussian(2, 11, 0.0, 1)).is_err());
        assert!(fid(&a, &gaussian(1, 12, 0.0, 1)).is_err());
    }

    #[test]
    fn histogram_and_agreement() {
        let logits = Features::new(
            4,
            3,
            vec![
                0.1, 2.0, -1.0, //
                5.0, 0.0, 0.0, //
                0.0, 0.0, 0.0, // tie: the first class
                -3.0, -2.0, -1.0,
            ],
        )
        .unwrap();
        assert_eq!(argmax_rows(&logits), vec![1, 0, 0, 2]);
        assert_eq!(class_histogram(&logits), vec![2, 1, 1]);
        assert_eq!(label_agreement(&[1, 0, 0, 2], &[1, 1, 0, 2]).unwrap(), 0.75);
        assert!(label_agreement(&[1], &[1, 2]).is_err());
        assert!(label_agreement(&[], &[]).is_err());
    }
}
