//! Winograd F(2×2, 3×3) transforms: the filter (`U = G g Gᵀ`, once), the
//! input tiles (`Bᵀ d B`, written straight into the kernel's packed layout)
//! and the output tiles (`Aᵀ m A`), with their scratch buffers.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Transform points 0, ±1, ∞. Bᵀ takes a 4×4 input tile to the transform
/// domain, G a 3×3 filter, Aᵀ brings the product back to a 2×2 output tile.
/// They compute a cross-correlation, which is what ONNX's Conv is. The input
/// and output transforms below are these matrices written out as additions.
pub(super) const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
#[cfg(test)]
pub(super) const BT: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
#[cfg(test)]
pub(super) const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

#[derive(Default)]
pub(super) struct BlockScratch {
    /// The block's transformed tiles, in the kernel's packed layout.
    pub(super) tiles: Option<Blob>,
    /// The block's 16 products.
    pub(super) products: Option<Tensor>,
    /// tract's scratch for the kernel.
    pub(super) mmm: Option<Box<dyn ScratchSpace>>,
    pub(super) input: Option<InputScratch>,
    pub(super) output: OutputScratch,
}

/// `len` floats of `blob`, aligned to `align` bytes, contents unspecified.
///
/// # Safety
/// The caller writes them before reading.
pub(super) unsafe fn floats(blob: &mut Option<Blob>, len: usize, align: usize) -> &mut [f32] {
    let blob = blob.get_or_insert_with(Blob::default);
    unsafe {
        blob.ensure_size_and_align(len * 4, align);
        std::slice::from_raw_parts_mut(blob.as_mut_ptr() as *mut f32, len)
    }
}

/// A tensor of at least `len` floats, contents unspecified (written by the
/// kernel before they are read).
pub(super) fn tensor(slot: &mut Option<Tensor>, len: usize) -> TractResult<&Tensor> {
    if slot.as_ref().is_none_or(|t| t.len() < len) {
        // SAFETY: see above.
        *slot = Some(unsafe { Tensor::uninitialized::<f32>(&[len])? });
    }
    Ok(slot.as_ref().expect("set above"))
}

/// Where the input transform writes tile `j` of a block for input channel
/// `c`: the kernel's packed A layout, panels of `mr` tiles, each panel
/// `panel_len` floats holding `mr` consecutive tiles per channel.
#[derive(Clone, Copy, Debug)]
pub(super) struct TileLayout {
    pub(super) mr: usize,
    pub(super) panel_len: usize,
    pub(super) channel: usize,
}

impl TileLayout {
    pub(super) fn offset(&self, j: usize) -> usize {
        (j / self.mr) * self.panel_len + self.channel * self.mr + j % self.mr
    }
}

/// Per-worker buffers of the input transform.
pub(super) struct InputScratch {
    /// Rows (per phase) of the padded block: its tile rows + 1.
    pub(super) rows: usize,
    /// Columns per phase: `tw + 1`.
    pub(super) cols: usize,
    /// One padded input row.
    pub(super) line: Vec<f32>,
    /// `phase[2·rr + r][i][t] = X_pad[2(ty0 + i) + rr][2t + r]`, plus one
    /// slack value.
    pub(super) phase: [Vec<f32>; 4],
    /// `horiz[2·l + rr][i][tx]`: the horizontal transform, per row phase.
    pub(super) horiz: [Vec<f32>; 8],
}

impl InputScratch {
    pub(super) fn new(g: &Geometry, tile_rows: usize) -> Self {
        let mut s = InputScratch {
            rows: 0,
            cols: 0,
            line: vec![],
            phase: Default::default(),
            horiz: Default::default(),
        };
        s.ensure(g, tile_rows);
        s
    }

    /// Sizes the buffers for `tile_rows` tile rows of `g`.
    pub(super) fn ensure(&mut self, g: &Geometry, tile_rows: usize) {
        let (rows, cols) = (tile_rows + 1, g.tiles_w() + 1);
        if (rows, cols) == (self.rows, self.cols) {
            return;
        }
        (self.rows, self.cols) = (rows, cols);
        let len = rows * cols + 1;
        self.line = vec![0.0; 2 * cols + 1];
        self.phase
            .iter_mut()
            .chain(&mut self.horiz)
            .for_each(|v| *v = vec![0.0; len]);
    }

    /// Tile rows `tile_rows` of one channel's image plane `xp` into the 16
    /// transformed planes `out[ξ]`, tile `j` of the block at
    /// `layout.offset(j)`.
    ///
    /// The padded rows are split into their four (row, column) parity
    /// phases. Then the window of tile (ty, tx) at row `2ty + i`, column
    /// `2tx + j` is `phase[2·(i%2) + j%2][ty − ty0 + i/2][tx + j/2]`:
    /// contiguous in `tx`, so both passes are element-wise loops the
    /// compiler vectorises, the vertical one over whole panels of tiles.
    pub(super) fn transform_rows(
        &mut self,
        g: &Geometry,
        xp: &[f32],
        tile_rows: std::ops::Range<usize>,
        out: &mut [&mut [f32]],
        layout: TileLayout,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        debug_assert_eq!(rows, tile_rows.len() + 1);
        for row in 0..2 * rows {
            self.line.fill(0.0);
            let yy = (2 * tile_rows.start + row) as isize - g.pad_top as isize;
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
        // Horizontal: Bᵀ along each row, for both row phases, into rows of
        // `tw` (the padding column dropped), so that the flat index of
        // `horiz` is the tile's index `j` in the block.
        let tw = g.tiles_w();
        for rr in 0..2 {
            let (a, b) = (&self.phase[2 * rr], &self.phase[2 * rr + 1]);
            let [h0, h1, h2, h3] = pick4(&mut self.horiz, [rr, 2 + rr, 4 + rr, 6 + rr]);
            let rows = Rows {
                count: rows,
                len: tw,
                src_stride: cols,
                dst_stride: tw,
            };
            bt_kernel(&a[..], &a[1..], &b[..], &b[1..], h0, h1, h2, h3, rows);
        }
        // Vertical: Bᵀ down each column (rows `j` and `j + tw` of the
        // flat index), straight into the packed planes: one kernel pass over
        // the full panels, one over the partial last one.
        let tiles = tile_rows.len() * tw;
        let (mr, full) = (layout.mr, tiles / layout.mr);
        let passes = [
            (
                0,
                Rows {
                    count: full,
                    len: mr,
                    src_stride: mr,
                    dst_stride: layout.panel_len,
                },
            ),
            (full * mr, Rows::flat(tiles % mr)),
        ];
        for (j, rows) in passes {
            if rows.count == 0 || rows.len == 0 {
                continue;
            }
            let d = layout.offset(j);
            for l in 0..4 {
                let (e, o) = (&self.horiz[2 * l], &self.horiz[2 * l + 1]);
                let [v0, v1, v2, v3] = pick4_rows(out, [l, 4 + l, 8 + l, 12 + l]);
                bt_kernel(
                    &e[j..],
                    &e[j + tw..],
                    &o[j..],
                    &o[j + tw..],
                    &mut v0[d..],
                    &mut v1[d..],
                    &mut v2[d..],
                    &mut v3[d..],
                    rows,
                );
            }
        }
    }
}

/// Per-worker buffers of the output transform: twelve rows of a block's
/// tiles.
#[derive(Default)]
pub(super) struct OutputScratch {
    pub(super) rows: [Vec<f32>; 12],
}

impl OutputScratch {
    /// `Y = Aᵀ M A + bias` for every tile of tile rows `tile_rows` of one
    /// output channel, from its 16 products `m(ξ)` (one value per tile of
    /// the block), written into the output rows `row(yy)` (cropped to the
    /// image).
    pub(super) fn transform<'m, 'y>(
        &mut self,
        g: &Geometry,
        tile_rows: std::ops::Range<usize>,
        m: impl Fn(usize) -> &'m [f32],
        bias: f32,
        mut row: impl FnMut(usize) -> &'y mut [f32],
    ) {
        let tw = g.tiles_w();
        let tiles = tile_rows.len() * tw;
        for r in &mut self.rows {
            if r.len() < tiles {
                r.resize(tiles, 0.0);
            }
        }
        let [s0, s1, y00, y01, y10, y11, s00, s01, s02, s03, s10, s11] =
            self.rows.each_mut().map(|r| &mut r[..tiles]);
        // Aᵀ down the columns: s0l, s1l for each column l of the tile.
        for (l, (a, b)) in [
            (&mut *s00, &mut *s10),
            (&mut *s01, &mut *s11),
            (&mut *s02, &mut *s0),
            (&mut *s03, &mut *s1),
        ]
        .into_iter()
        .enumerate()
        {
            at_kernel(m(l), m(4 + l), m(8 + l), m(12 + l), a, b, 0.0);
        }
        // Aᵀ along the rows, plus the bias.
        at_kernel(s00, s01, s02, s03, y00, y01, bias);
        at_kernel(s10, s11, s0, s1, y10, y11, bias);
        // Interleave the 2×2 tile outputs into the image rows.
        for (r, ty) in tile_rows.enumerate() {
            for (half, (even, odd)) in [(&*y00, &*y01), (&*y10, &*y11)].into_iter().enumerate() {
                let yy = 2 * ty + half;
                if yy >= g.out_h {
                    continue;
                }
                let (even, odd) = (&even[r * tw..][..tw], &odd[r * tw..][..tw]);
                for (pair, (e, o)) in row(yy).chunks_mut(2).zip(even.iter().zip(odd)) {
                    pair[0] = *e;
                    if let Some(x) = pair.get_mut(1) {
                        *x = *o;
                    }
                }
            }
        }
    }
}

/// `count` rows of `len` values, `src_stride` / `dst_stride` apart in the
/// inputs / outputs of a kernel.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rows {
    pub(super) count: usize,
    pub(super) len: usize,
    pub(super) src_stride: usize,
    pub(super) dst_stride: usize,
}

impl Rows {
    /// One flat row of `len` values.
    pub(super) fn flat(len: usize) -> Self {
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
pub(super) fn bt_loop(
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
        pub(super) fn $name($($arg: $ty),*) {
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
pub(super) fn deinterleave_loop(line: &[f32], even: &mut [f32], odd: &mut [f32]) {
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
pub(super) fn pick4<const N: usize>(arr: &mut [Vec<f32>; N], ix: [usize; 4]) -> [&mut [f32]; 4] {
    let [a, b, c, d] = arr.get_disjoint_mut(ix).expect("distinct indices");
    [a, b, c, d].map(|v| v.as_mut_slice())
}

/// Four distinct rows, mutably.
pub(super) fn pick4_rows<'a>(rows: &'a mut [&mut [f32]], ix: [usize; 4]) -> [&'a mut [f32]; 4] {
    rows.get_disjoint_mut(ix)
        .expect("distinct indices")
        .map(|r| &mut **r)
}

/// Aᵀ along one axis, element-wise: from the four values `m0..m3` of a tile
/// along the axis, `out0 = m0 + m1 + m2 + bias`, `out1 = m1 − m2 − m3 + bias`.
/// (Separate reference arguments so that the loop vectorises, as in
/// [`bt_loop`].)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn at_loop(
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
pub(super) fn filter_transform(kernel: &[f32], out_ch: usize, in_ch: usize) -> Vec<f32> {
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
