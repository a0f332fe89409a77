//! Winograd convolution for 3×3, stride-1 convolutions: a rewrite of the
//! tract graph when a plan is built.
//!
//! tract computes a convolution as im2col + one matrix product: 9
//! multiply-adds per input channel per output pixel, plus a packing pass over
//! the patches. Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, *Fast
//! Algorithms for Convolutional Neural Networks*, 2016) computes each 2×2
//! output tile from a 4×4 input tile with 16 multiplies instead of 36, i.e.
//! 2.25× fewer. The multiplies become 16 independent matrix products
//! `U[ξ] · V[ξ]` (output channels × input channels × tiles), which tract runs
//! with its own packed kernels and threads; the transforms around them are
//! additions and subtractions, written here.
//!
//! Each eligible `Conv` node becomes
//! `WinogradInput → EinSum(U, ·) → WinogradOutput(+bias)`, with the filter
//! transform `U = G g Gᵀ` computed once, when the plan is built. Only rounding
//! changes: the tests compare against tract's direct convolution. (F(4×4, 3×3)
//! was tried too: 4× fewer multiplies, but its 36 smaller products were only
//! ~5 % faster than F(2×2)'s 16 here, its transforms cost 1.7× more, and its
//! rounding error is 3× larger.)

use std::fmt;

use rayon::prelude::*;
use tract_linalg::multithread::{Executor, current_tract_executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// How the runtime computes 3×3, stride-1 convolutions with at least 32
/// input and output channels (all other convolutions are tract's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConvAlgorithm {
    /// Winograd F(2×2, 3×3): 2.25× fewer multiplies, rounding error at the
    /// level of the direct convolution.
    #[default]
    Winograd,
    /// tract's own im2col + matrix product.
    Direct,
}

impl fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConvAlgorithm::Direct => "direct",
            ConvAlgorithm::Winograd => "winograd",
        })
    }
}

impl std::str::FromStr for ConvAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(ConvAlgorithm::Direct),
            "winograd" => Ok(ConvAlgorithm::Winograd),
            other => Err(format!(
                "unknown convolution algorithm {other:?} (winograd or direct)"
            )),
        }
    }
}

/// Transform points 0, ±1, ∞. Bᵀ takes a 4×4 input tile to the transform
/// domain, G a 3×3 filter, Aᵀ brings the product back to a 2×2 output tile.
/// They compute a cross-correlation, which is what ONNX's Conv is. The input
/// and output transforms below are these matrices written out as additions.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
#[cfg(test)]
const BT: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
#[cfg(test)]
const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// The convolution's planes and how its output is cut into 2×2 tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Geometry {
    batch: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    pad_top: usize,
    pad_left: usize,
}

impl Geometry {
    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(2)
    }
    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(2)
    }
    /// Tiles of one image.
    fn tiles_per_image(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }
    /// Columns of the transformed matrices: one per tile of every image.
    fn tiles(&self) -> usize {
        self.batch * self.tiles_per_image()
    }
}

/// `[N, C, H, W]` → `[16, C, tiles]`: `Bᵀ d B` of every 4×4 input tile `d`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WinogradInput {
    geo: Geometry,
    channels: usize,
}

/// `[16, C_out, tiles]`, bias (scalar or `[C_out]`) →
/// `[N, C_out, H_out, W_out]`: `Aᵀ M A + bias` of every tile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WinogradOutput {
    geo: Geometry,
    channels: usize,
}

impl Op for WinogradInput {
    fn name(&self) -> StaticName {
        "WinogradInput".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geo)])
    }
    op_as_typed_op!();
}

impl Op for WinogradOutput {
    fn name(&self) -> StaticName {
        "WinogradOutput".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geo)])
    }
    op_as_typed_op!();
}

impl EvalOp for WinogradInput {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let g = self.geo;
        ensure!(
            x.shape() == [g.batch, self.channels, g.in_h, g.in_w],
            "WinogradInput: input shape {:?}",
            x.shape()
        );
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        // SAFETY: the transform writes every element before anything reads it.
        let mut v = unsafe { Tensor::uninitialized::<f32>(&[16, self.channels, g.tiles()])? };
        input_transform(
            &g,
            self.channels,
            x,
            v.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(v.into_tvalue()))
    }
}

impl EvalOp for WinogradOutput {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (m, bias) = args_2!(inputs);
        let g = self.geo;
        ensure!(
            m.shape() == [16, self.channels, g.tiles()],
            "WinogradOutput: input shape {:?}",
            m.shape()
        );
        let m = m.try_as_plain_ram()?;
        let m = m.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        ensure!(
            bias.len() == 1 || bias.len() == self.channels,
            "WinogradOutput: {} bias values for {} channels",
            bias.len(),
            self.channels
        );
        // SAFETY: the transform writes every element before anything reads it.
        let mut y =
            unsafe { Tensor::uninitialized::<f32>(&[g.batch, self.channels, g.out_h, g.out_w])? };
        output_transform(
            &g,
            self.channels,
            m,
            bias,
            y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for WinogradInput {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact([16, self.channels, self.geo.tiles()])))
    }
    as_op!();
}

impl TypedOp for WinogradOutput {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = self.geo;
        Ok(tvec!(f32::fact([g.batch, self.channels, g.out_h, g.out_w])))
    }
    as_op!();
}

/// Runs `work` on every item, on the tract executor's threads when there are
/// several (so the transforms scale like the products between them), with a
/// scratch value per worker. Items are independent, so the result does not
/// depend on the thread count.
fn for_each_parallel<T: Send, S>(
    items: Vec<T>,
    min_len: usize,
    scratch: impl Fn() -> S + Sync + Send,
    work: impl Fn(&mut S, T) + Sync + Send,
) {
    match current_tract_executor() {
        // Work for a single task stays on the calling thread: handing it to
        // the pool costs a wake-up and gains nothing.
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 && items.len() > min_len => {
            pool.install(|| {
                items
                    .into_par_iter()
                    .with_min_len(min_len)
                    .for_each_init(&scratch, |s, item| work(s, item))
            })
        }
        _ => {
            let mut s = scratch();
            for item in items {
                work(&mut s, item);
            }
        }
    }
}

/// Pixels of work below which a thread gets more channels rather than less.
const PIXELS_PER_TASK: usize = 16 * 1024;

/// `V[ξ][c][tile] = (Bᵀ d B)[ξ]` for every 4×4 input tile `d` (zero outside
/// the image: the convolution's zero padding).
fn input_transform(g: &Geometry, channels: usize, x: &[f32], v: &mut [f32]) {
    let tiles = g.tiles();
    // v's rows are (ξ, c): bucket them by channel, 16 rows each.
    let mut rows: Vec<Vec<&mut [f32]>> = (0..channels).map(|_| Vec::with_capacity(16)).collect();
    for (i, row) in v.chunks_exact_mut(tiles).enumerate() {
        rows[i % channels].push(row);
    }
    let items: Vec<(usize, Vec<&mut [f32]>)> = rows.into_iter().enumerate().collect();
    let plane = g.in_h * g.in_w;
    let min_len = (PIXELS_PER_TASK / (plane * g.batch).max(1)).max(1);
    let geo = *g;
    for_each_parallel(
        items,
        min_len,
        || InputScratch::new(&geo),
        |scratch, (c, mut rows)| {
            for n in 0..geo.batch {
                let xp = &x[(n * channels + c) * plane..][..plane];
                scratch.transform_plane(&geo, xp, n, &mut rows);
            }
        },
    );
}

/// Per-worker buffers of the input transform.
struct InputScratch {
    /// Rows (per phase) of the padded plane: `th + 1`.
    rows: usize,
    /// Columns per phase: `tw + 1`.
    cols: usize,
    /// One padded input row.
    line: Vec<f32>,
    /// `phase[2·rr + r][i][t] = X_pad[2i + rr][2t + r]`, plus one slack value.
    phase: [Vec<f32>; 4],
    /// `horiz[2·l + rr]`: the horizontal transform, per row phase.
    horiz: [Vec<f32>; 8],
}

impl InputScratch {
    fn new(g: &Geometry) -> Self {
        let (rows, cols) = (g.tiles_h() + 1, g.tiles_w() + 1);
        let len = rows * cols + 1;
        InputScratch {
            rows,
            cols,
            line: vec![0.0; 2 * cols + 1],
            phase: std::array::from_fn(|_| vec![0.0; len]),
            horiz: std::array::from_fn(|_| vec![0.0; len]),
        }
    }

    /// One image plane of one channel into its 16 rows of `V`.
    ///
    /// The padded plane is split into its four (row, column) parity phases.
    /// Then the window of tile (ty, tx) at row `2ty + i`, column `2tx + j` is
    /// `phase[2·(i%2) + j%2][ty + i/2][tx + j/2]`: contiguous in `tx`, and in
    /// the flat index `ty·cols + tx`, so both passes are long element-wise
    /// loops the compiler vectorises. Column `tx = tw` of each phase row is
    /// padding the loops compute and the output skips.
    fn transform_plane(&mut self, g: &Geometry, xp: &[f32], n: usize, out: &mut [&mut [f32]]) {
        let (rows, cols) = (self.rows, self.cols);
        let flat = rows * cols;
        for row in 0..2 * rows {
            self.line.fill(0.0);
            let yy = row as isize - g.pad_top as isize;
            if yy >= 0 && (yy as usize) < g.in_h {
                let src = &xp[yy as usize * g.in_w..][..g.in_w];
                let len = g.in_w.min(self.line.len() - g.pad_left);
                self.line[g.pad_left..][..len].copy_from_slice(&src[..len]);
            }
            let (i, rr) = (row / 2, row % 2);
            let [even, odd] = self
                .phase
                .get_disjoint_mut([2 * rr, 2 * rr + 1])
                .expect("distinct indices");
            deinterleave(
                &self.line[..2 * cols],
                &mut even[i * cols..][..cols],
                &mut odd[i * cols..][..cols],
            );
        }
        // Horizontal: Bᵀ along each row, for both row phases.
        for rr in 0..2 {
            let (a, b) = (&self.phase[2 * rr], &self.phase[2 * rr + 1]);
            let [h0, h1, h2, h3] = pick4(&mut self.horiz, [rr, 2 + rr, 4 + rr, 6 + rr]);
            bt_kernel(
                &a[..],
                &a[1..],
                &b[..],
                &b[1..],
                h0,
                h1,
                h2,
                h3,
                Rows::flat(flat),
            );
        }
        // Vertical: Bᵀ down each column, straight into V's 16 rows, a row of
        // tiles at a time (the phase rows are `cols` wide, V's rows `tw`).
        let (th, tw) = (g.tiles_h(), g.tiles_w());
        let p0 = n * g.tiles_per_image();
        let rows = Rows {
            count: th,
            len: tw,
            src_stride: cols,
            dst_stride: tw,
        };
        for l in 0..4 {
            let (e, o) = (&self.horiz[2 * l], &self.horiz[2 * l + 1]);
            let [v0, v1, v2, v3] = pick4_rows(out, [l, 4 + l, 8 + l, 12 + l]);
            bt_kernel(
                e,
                &e[cols..],
                o,
                &o[cols..],
                &mut v0[p0..],
                &mut v1[p0..],
                &mut v2[p0..],
                &mut v3[p0..],
                rows,
            );
        }
    }
}

/// `count` rows of `len` values, `src_stride` / `dst_stride` apart in the
/// inputs / outputs of a kernel.
#[derive(Clone, Copy, Debug)]
struct Rows {
    count: usize,
    len: usize,
    src_stride: usize,
    dst_stride: usize,
}

impl Rows {
    /// One flat row of `len` values.
    fn flat(len: usize) -> Self {
        Rows {
            count: 1,
            len,
            src_stride: 0,
            dst_stride: 0,
        }
    }
}

/// Bᵀ along one axis, element-wise: with `d0..d3` the tile's four values
/// along the axis, given as `d0, d2, d1, d3` (the two parity phases at
/// offsets 0 and 1), writes `d0 − d2, d1 + d2, d2 − d1, d1 − d3`, for every
/// row of `rows`. Separate reference arguments (not arrays of them) carry
/// the compiler's no-overlap guarantee, so the loop vectorises without
/// run-time alias checks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bt_loop(
    d0: &[f32],
    d2: &[f32],
    d1: &[f32],
    d3: &[f32],
    h0: &mut [f32],
    h1: &mut [f32],
    h2: &mut [f32],
    h3: &mut [f32],
    rows: Rows,
) {
    let n = rows.len;
    for r in 0..rows.count {
        let (s, t) = (r * rows.src_stride, r * rows.dst_stride);
        let (d0, d1, d2, d3) = (&d0[s..][..n], &d1[s..][..n], &d2[s..][..n], &d3[s..][..n]);
        let (h0, h1) = (&mut h0[t..][..n], &mut h1[t..][..n]);
        let (h2, h3) = (&mut h2[t..][..n], &mut h3[t..][..n]);
        for f in 0..n {
            h0[f] = d0[f] - d2[f];
            h1[f] = d1[f] + d2[f];
            h2[f] = d2[f] - d1[f];
            h3[f] = d1[f] - d3[f];
        }
    }
}

/// A leaf loop compiled twice on x86-64: for the baseline (SSE2, which is
/// what the crate is built for) and for AVX2, picked at run time. Elsewhere
/// (aarch64: NEON is baseline) only the first exists.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* fn $name:ident / $avx2:ident = $body:ident ($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        #[inline(never)]
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: this CPU has AVX2, checked just above.
                return unsafe { $avx2($($arg),*) };
            }
            $body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn $avx2($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

/// `even[t] = line[2t]`, `odd[t] = line[2t + 1]`.
#[inline(always)]
fn deinterleave_loop(line: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let odd = &mut odd[..even.len()];
    for ((pair, e), o) in line
        .chunks_exact(2)
        .zip(even.iter_mut())
        .zip(odd.iter_mut())
    {
        *e = pair[0];
        *o = pair[1];
    }
}

simd_dispatch!(
    /// [`deinterleave_loop`], vectorised for the machine.
    fn deinterleave / deinterleave_avx2 = deinterleave_loop(
        line: &[f32], even: &mut [f32], odd: &mut [f32]
    )
);

simd_dispatch!(
    /// [`bt_loop`], vectorised for the machine.
    fn bt_kernel / bt_kernel_avx2 = bt_loop(
        d0: &[f32], d2: &[f32], d1: &[f32], d3: &[f32],
        h0: &mut [f32], h1: &mut [f32], h2: &mut [f32], h3: &mut [f32], rows: Rows
    )
);

/// Four distinct elements of an array, mutably.
fn pick4<const N: usize>(arr: &mut [Vec<f32>; N], ix: [usize; 4]) -> [&mut [f32]; 4] {
    let [a, b, c, d] = arr.get_disjoint_mut(ix).expect("distinct indices");
    [a, b, c, d].map(|v| v.as_mut_slice())
}

/// Four distinct rows, mutably.
fn pick4_rows<'a>(rows: &'a mut [&mut [f32]], ix: [usize; 4]) -> [&'a mut [f32]; 4] {
    rows.get_disjoint_mut(ix)
        .expect("distinct indices")
        .map(|r| &mut **r)
}

/// `Y = Aᵀ M A + bias` for every tile, cropped to the output plane.
fn output_transform(g: &Geometry, channels: usize, mm: &[f32], bias: &[f32], y: &mut [f32]) {
    let plane = g.out_h * g.out_w;
    // y's planes are (n, c): bucket them by channel.
    let mut planes: Vec<Vec<&mut [f32]>> =
        (0..channels).map(|_| Vec::with_capacity(g.batch)).collect();
    for (i, p) in y.chunks_exact_mut(plane).enumerate() {
        planes[i % channels].push(p);
    }
    let items: Vec<(usize, Vec<&mut [f32]>)> = planes.into_iter().enumerate().collect();
    let min_len = (PIXELS_PER_TASK / (plane * g.batch).max(1)).max(1);
    let geo = *g;
    let tiles = g.tiles();
    let tt = g.tiles_per_image();
    for_each_parallel(
        items,
        min_len,
        || [(); 12].map(|_| vec![0f32; tt]),
        |scratch, (c, mut planes)| {
            let bc = if bias.len() == 1 { bias[0] } else { bias[c] };
            for (n, yp) in planes.iter_mut().enumerate() {
                let m = |xi: usize| &mm[(xi * channels + c) * tiles + n * tt..][..tt];
                let [s0, s1, out @ ..] = &mut *scratch;
                let [y00, y01, y10, y11, s00, s01, s02, s03, s10, s11] = out;
                // Aᵀ down the columns: s0l, s1l for each column l of the tile.
                for (l, (a, b)) in [
                    (&mut *s00, &mut *s10),
                    (s01, s11),
                    (s02, &mut *s0),
                    (s03, &mut *s1),
                ]
                .into_iter()
                .enumerate()
                {
                    at_kernel(m(l), m(4 + l), m(8 + l), m(12 + l), a, b, 0.0);
                }
                // Aᵀ along the rows, plus the bias.
                at_kernel(s00, s01, s02, s03, y00, y01, bc);
                at_kernel(s10, s11, s0, s1, y10, y11, bc);
                // Interleave the 2×2 tile outputs into the image rows.
                let tw = geo.tiles_w();
                for (yy, row) in yp.chunks_exact_mut(geo.out_w).enumerate() {
                    let (even, odd) = if yy % 2 == 0 {
                        (&*y00, &*y01)
                    } else {
                        (&*y10, &*y11)
                    };
                    let base = (yy / 2) * tw;
                    let (even, odd) = (&even[base..][..tw], &odd[base..][..tw]);
                    for (pair, (e, o)) in row.chunks_mut(2).zip(even.iter().zip(odd)) {
                        pair[0] = *e;
                        if let Some(x) = pair.get_mut(1) {
                            *x = *o;
                        }
                    }
                }
            }
        },
    );
}

/// Aᵀ along one axis, element-wise: from the four values `m0..m3` of a tile
/// along the axis, `out0 = m0 + m1 + m2 + bias`, `out1 = m1 − m2 − m3 + bias`.
/// (Separate reference arguments so that the loop vectorises, as in
/// [`bt_loop`].)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn at_loop(
    m0: &[f32],
    m1: &[f32],
    m2: &[f32],
    m3: &[f32],
    out0: &mut [f32],
    out1: &mut [f32],
    bias: f32,
) {
    let n = out0.len();
    let (m0, m1, m2, m3, out1) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &mut out1[..n]);
    for p in 0..n {
        out0[p] = m0[p] + m1[p] + m2[p] + bias;
        out1[p] = m1[p] - m2[p] - m3[p] + bias;
    }
}

simd_dispatch!(
    /// [`at_loop`], vectorised for the machine.
    fn at_kernel / at_kernel_avx2 = at_loop(
        m0: &[f32], m1: &[f32], m2: &[f32], m3: &[f32],
        out0: &mut [f32], out1: &mut [f32], bias: f32
    )
);

/// `U[ξ][o][i] = (G g[o][i] Gᵀ)[ξ]` for an OIHW 3×3 kernel, in f64 so that U
/// itself adds no rounding.
fn filter_transform(kernel: &[f32], out_ch: usize, in_ch: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * out_ch * in_ch];
    for o in 0..out_ch {
        for i in 0..in_ch {
            let k = &kernel[(o * in_ch + i) * 9..][..9];
            let mut gk = [[0f64; 3]; 4];
            for (r, row) in gk.iter_mut().enumerate() {
                for (c, e) in row.iter_mut().enumerate() {
                    *e = (0..3).map(|s| G[r][s] * k[s * 3 + c] as f64).sum();
                }
            }
            for r in 0..4 {
                for c in 0..4 {
                    let val: f64 = (0..3).map(|s| gk[r][s] * G[c][s]).sum();
                    u[((r * 4 + c) * out_ch + o) * in_ch + i] = val as f32;
                }
            }
        }
    }
    u
}

/// Below this many input or output channels the products are too small for
/// the saved multiplies to pay for the transforms. Measured with
/// `op_profile`: the 3-channel input convolution of the benchmark U-Net, as
/// Winograd, spent 0.16 ms in its products alone for 0.8 M multiply-adds
/// (~10 GFLOP/s, against ~85 for the wide layers); the shipped Fashion-MNIST
/// model, all 19 of its 16–32-channel convolutions rewritten, took 2.80 ms
/// per forward against 2.73 ms direct.
const MIN_CHANNELS: usize = 32;

/// The geometry of a convolution the rewrite handles, or why it is left to
/// tract's direct convolution.
fn eligible(model: &TypedModel, node: &TypedNode, conv: &Conv) -> Result<Geometry, String> {
    let spec = &conv.pool_spec;
    if conv.q_params.is_some() || conv.group != 1 {
        return Err("quantized or grouped".into());
    }
    if spec.data_format != DataFormat::NCHW || conv.kernel_fmt != KernelFormat::OIHW {
        return Err("not NCHW/OIHW".into());
    }
    if spec.kernel_shape.as_slice() != [3, 3] {
        return Err("not 3×3".into());
    }
    if spec.input_channels < MIN_CHANNELS || spec.output_channels < MIN_CHANNELS {
        return Err(format!(
            "fewer than {MIN_CHANNELS} input or output channels"
        ));
    }
    if spec
        .strides
        .as_ref()
        .is_some_and(|s| s.iter().any(|&s| s != 1))
        || spec
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return Err("strided or dilated".into());
    }
    let (pad_top, pad_left) = match &spec.padding {
        PaddingSpec::Explicit(b, _) | PaddingSpec::ExplicitOnnxPool(b, _, _) => (b[0], b[1]),
        PaddingSpec::Valid => (0, 0),
        PaddingSpec::SameUpper | PaddingSpec::SameLower => (1, 1),
    };
    let fact = |o: OutletId| model.outlet_fact(o).map_err(|e| e.to_string());
    let x = fact(node.inputs[0])?;
    let y = fact(OutletId::new(node.id, 0))?;
    if x.datum_type != f32::datum_type() || y.datum_type != f32::datum_type() {
        return Err("not f32".into());
    }
    let concrete = |f: &TypedFact| -> Option<Vec<usize>> {
        f.shape
            .iter()
            .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
            .collect()
    };
    let (Some(xs), Some(ys)) = (concrete(x), concrete(y)) else {
        return Err("symbolic shape".into());
    };
    if xs.len() != 4 || ys.len() != 4 || ys[2] == 0 || ys[3] == 0 {
        return Err("not a 2-D image".into());
    }
    let k = fact(node.inputs[1])?;
    if k.konst.is_none() || k.datum_type != f32::datum_type() {
        return Err("kernel not a f32 constant".into());
    }
    // The bias may be computed: tract folds a following per-channel add
    // (a time embedding, say) into it.
    let b = fact(node.inputs[2])?;
    if b.datum_type != f32::datum_type() || b.rank() > 1 {
        return Err("bias not a f32 scalar or vector".into());
    }
    Ok(Geometry {
        batch: xs[0],
        in_h: xs[2],
        in_w: xs[3],
        out_h: ys[2],
        out_w: ys[3],
        pad_top,
        pad_left,
    })
}

/// (eligible, all) convolutions of a concrete-shape model.
pub(crate) fn count(model: &TypedModel) -> (usize, usize) {
    let convs: Vec<&TypedNode> = model.nodes().iter().filter(|n| n.op_is::<Conv>()).collect();
    let eligible = convs
        .iter()
        .filter(|n| {
            n.op_as::<Conv>()
                .is_some_and(|c| eligible(model, n, c).is_ok())
        })
        .count();
    (eligible, convs.len())
}

/// Rewrites every eligible convolution of a concrete-shape model; returns how
/// many were rewritten. Public (hidden) for the profiling example.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Conv>())
        .map(|n| n.id)
        .collect();
    let mut done = 0;
    for id in candidates {
        let node = model.node(id).clone();
        let Some(conv) = node.op_as::<Conv>().cloned() else {
            continue;
        };
        let Ok(geo) = eligible(model, &node, &conv) else {
            continue;
        };
        let (out_ch, in_ch) = (
            conv.pool_spec.output_channels,
            conv.pool_spec.input_channels,
        );
        let kernel = model
            .outlet_fact(node.inputs[1])?
            .konst
            .clone()
            .context("constant kernel")?;
        let kernel = kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        ensure!(kernel.len() == out_ch * in_ch * 9, "kernel size");
        let u = filter_transform(kernel, out_ch, in_ch);

        let name = &node.name;
        let mut patch = TypedModelPatch::new(format!("winograd {name}"));
        let x = patch.tap_model(model, node.inputs[0])?;
        let bias = patch.tap_model(model, node.inputs[2])?;
        let v = patch.wire_node(
            format!("{name}.winograd_in"),
            WinogradInput {
                geo,
                channels: in_ch,
            },
            &[x],
        )?[0];
        let u = patch.add_const(
            format!("{name}.winograd_u"),
            Tensor::from_shape(&[16, out_ch, in_ch], &u)?,
        )?;
        let mm = patch.wire_node(
            format!("{name}.winograd_mm"),
            EinSum::new("gom,gmp->gop".parse()?, f32::datum_type()),
            &[u, v],
        )?[0];
        let y = patch.wire_node(
            format!("{name}.winograd_out"),
            WinogradOutput {
                geo,
                channels: out_ch,
            },
            &[mm, bias],
        )?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fewstep_core::rng::GaussianStream;

    fn gaussian(len: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0f32; len];
        GaussianStream::new(seed, 0).fill(&mut v);
        v
    }

    /// Direct cross-correlation, in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        g: &Geometry,
        cin: usize,
        cout: usize,
        x: &[f32],
        k: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let mut y = vec![0f32; g.batch * cout * g.out_h * g.out_w];
        for n in 0..g.batch {
            for o in 0..cout {
                for yy in 0..g.out_h {
                    for xx in 0..g.out_w {
                        let mut s = if bias.len() == 1 { bias[0] } else { bias[o] } as f64;
                        for i in 0..cin {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (r, c) = (
                                        (yy + a) as isize - g.pad_top as isize,
                                        (xx + b) as isize - g.pad_left as isize,
                                    );
                                    if r < 0
                                        || c < 0
                                        || r >= g.in_h as isize
                                        || c >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * cin + i) * g.in_h + r as usize) * g.in_w
                                        + c as usize];
                                    s += xv as f64 * k[((o * cin + i) * 3 + a) * 3 + b] as f64;
                                }
                            }
                        }
                        y[((n * cout + o) * g.out_h + yy) * g.out_w + xx] = s as f32;
                    }
                }
            }
        }
        y
    }

    /// Transforms, products and inverse transforms by hand (no tract): the
    /// three stages agree with a direct convolution for odd and even sizes,
    /// every padding, and a batch.
    #[test]
    fn stages_match_a_direct_convolution() {
        let cases = [
            // (batch, cin, cout, h, w, pad_top, pad_left, pad_bottom, pad_right)
            (1, 3, 4, 8, 8, 1, 1, 1, 1),
            (2, 5, 3, 7, 9, 1, 1, 1, 1),
            (1, 2, 2, 6, 5, 0, 0, 0, 0),
            (1, 4, 6, 5, 6, 1, 0, 0, 1),
            (3, 1, 1, 1, 1, 1, 1, 1, 1),
        ];
        for (seed, &(batch, cin, cout, h, w, pt, pl, pb, pr)) in cases.iter().enumerate() {
            let g = Geometry {
                batch,
                in_h: h,
                in_w: w,
                out_h: h + pt + pb - 2,
                out_w: w + pl + pr - 2,
                pad_top: pt,
                pad_left: pl,
            };
            let x = gaussian(batch * cin * h * w, seed as u64);
            let k = gaussian(cout * cin * 9, 100 + seed as u64);
            let bias = if seed % 2 == 0 {
                gaussian(cout, 200)
            } else {
                vec![0.25]
            };
            let mut v = vec![0f32; 16 * cin * g.tiles()];
            input_transform(&g, cin, &x, &mut v);
            let u = filter_transform(&k, cout, cin);
            let tiles = g.tiles();
            let mut m = vec![0f32; 16 * cout * tiles];
            for xi in 0..16 {
                for o in 0..cout {
                    for p in 0..tiles {
                        m[(xi * cout + o) * tiles + p] = (0..cin)
                            .map(|i| u[(xi * cout + o) * cin + i] * v[(xi * cin + i) * tiles + p])
                            .sum();
                    }
                }
            }
            let mut y = vec![0f32; batch * cout * g.out_h * g.out_w];
            output_transform(&g, cout, &m, &bias, &mut y);
            let want = reference(&g, cin, cout, &x, &k, &bias);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "case {seed} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    /// The written-out transforms are the matrices Bᵀ and Aᵀ.
    #[test]
    fn transforms_are_the_matrices() {
        let g = Geometry {
            batch: 1,
            in_h: 4,
            in_w: 4,
            out_h: 2,
            out_w: 2,
            pad_top: 0,
            pad_left: 0,
        };
        let d = gaussian(16, 7);
        let mut v = vec![0f32; 16];
        input_transform(&g, 1, &d, &mut v);
        for k in 0..4 {
            for l in 0..4 {
                let want: f32 = (0..4)
                    .flat_map(|i| (0..4).map(move |j| (i, j)))
                    .map(|(i, j)| BT[k][i] * d[i * 4 + j] * BT[l][j])
                    .sum();
                assert!((v[k * 4 + l] - want).abs() < 1e-5);
            }
        }
        let m = gaussian(16, 8);
        let mut y = vec![0f32; 4];
        output_transform(&g, 1, &m, &[0.0], &mut y);
        for a in 0..2 {
            for b in 0..2 {
                let want: f32 = (0..4)
                    .flat_map(|i| (0..4).map(move |j| (i, j)))
                    .map(|(i, j)| AT[a][i] * m[i * 4 + j] * AT[b][j])
                    .sum();
                assert!((y[a * 2 + b] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [ConvAlgorithm::Direct, ConvAlgorithm::Winograd] {
            assert_eq!(a.to_string().parse::<ConvAlgorithm>(), Ok(a));
        }
        assert!(
            "winograd4"
                .parse::<ConvAlgorithm>()
                .unwrap_err()
                .contains("winograd or direct")
        );
    }
}
