//! The matrix products of a Winograd convolution: tract-linalg kernel
//! candidates for a product shape, timing them once, and the packed
//! operands (`Products`, `Panels`).

#![allow(clippy::wildcard_imports)]

use super::*;

impl Products {
    /// Tile rows per block on one thread, and the products' `m` then.
    pub(super) fn block_shape(geo: &Geometry) -> (usize, usize) {
        let rows = BLOCK_TILES.div_ceil(geo.tiles_w()).clamp(1, geo.tiles_h());
        (rows, (rows * geo.tiles_w()).min(geo.tiles_per_image()))
    }

    /// With the fastest kernel for the block's products.
    pub(super) fn new(
        geo: &Geometry,
        in_ch: usize,
        out_ch: usize,
        kernel: &[f32],
    ) -> TractResult<Self> {
        let (_, m) = Self::block_shape(geo);
        let (mmm, packing) = chosen_kernel(m, in_ch, out_ch)?;
        Self::with_kernel(geo, in_ch, out_ch, kernel, mmm, packing)
    }

    pub(super) fn with_kernel(
        geo: &Geometry,
        in_ch: usize,
        out_ch: usize,
        kernel: &[f32],
        mmm: Box<dyn MatMatMul>,
        packing: usize,
    ) -> TractResult<Self> {
        let (rows_per_block, _) = Self::block_shape(geo);
        let (tiles, filter_format) = f32_panels(&*mmm, packing).context("plain f32 panels")?;
        let u = filter_transform(kernel, out_ch, in_ch);
        let filter = (0..16)
            .map(|xi| {
                // U[ξ] is [C_out, C_in]: as the B operand, k = C_in (axis 1)
                // and n = C_out (axis 0).
                let t = Tensor::from_shape(
                    &[out_ch, in_ch],
                    &u[xi * out_ch * in_ch..][..out_ch * in_ch],
                )?;
                let p = filter_format.pack_tensor(&t, 1, 0)?;
                p.downcast::<EagerPackedInput>()
                    .map(|p| *p)
                    .map_err(|_| format_err!("packed filter is not an eager input"))
            })
            .collect::<TractResult<Vec<_>>>()?;
        Ok(Products {
            mmm,
            packing,
            tiles,
            filter,
            rows_per_block,
        })
    }

    /// `U[ξ]ᵀ` restricted to output channels `range` (starting on a panel).
    pub(super) fn filter_window(&self, xi: usize, range: &std::ops::Range<usize>) -> Panels {
        let f = &self.filter[xi];
        let nr = self.mmm.nr();
        debug_assert_eq!(range.start % nr, 0);
        Panels::new(
            // SAFETY: the window's panels lie inside the packed filter.
            unsafe { f.packed.as_ptr().add(range.start / nr * f.panel_bytes) },
            f.panel_bytes,
            range.len(),
            f.fact.k,
            &*f.fact.format,
        )
    }
}

/// The A and B formats of a kernel's packing `ix`, if both are plain f32
/// panels (what the transforms write and the filter is packed as).
pub(super) fn f32_panels(mmm: &dyn MatMatMul, ix: usize) -> Option<(PackedFormat, PackedFormat)> {
    let (a, b) = mmm.packings().get(ix)?;
    let packed = |f: &dyn MMMInputFormat| {
        f.downcast_ref::<PackedFormat>()
            .filter(|p| p.dt == f32::datum_type())
            .cloned()
    };
    Some((packed(&**a)?, packed(&**b)?))
}

/// The fastest of `candidates` for the products of shape `m × k × n`
/// (block tiles × C_in × C_out), by timing each on this machine.
///
/// tract's own pick is fitted to large products on another CPU; for these
/// short, A-streaming products it can be far off (here, Zen 4: its
/// 16×12 AVX-512 kernel made the benchmark U-Net's forward 11.95 ms against
/// 10.25 ms with the AVX2 32×3 one, best of 4). Timing costs ~0.1 s at the
/// first plan build of that U-Net (7 shapes), ~80 ms for the shipped
/// Fashion-MNIST model (15 shapes): [`super::tuning`] decides when to pay it.
pub(super) fn fastest_kernel(
    candidates: Vec<(Box<dyn MatMatMul>, usize)>,
    m: usize,
    k: usize,
    n: usize,
) -> TractResult<(Box<dyn MatMatMul>, usize)> {
    // Distinct operands, as in a block: the filters do not all fit in the
    // cache at once, and which kernel copes best with that is part of what
    // is measured. Made once, packed for each candidate.
    let operands = (0..TIMED_PRODUCTS)
        .map(|i| {
            let fill = 0.5 + i as f32 / 64.0;
            Ok((
                Tensor::from_shape(&[m, k], &vec![fill; m * k])?,
                Tensor::from_shape(&[k, n], &vec![fill / 2.0; k * n])?,
            ))
        })
        .collect::<TractResult<Vec<_>>>()?;
    let c = Tensor::zero::<f32>(&[m, n])?;
    // Rounds over all candidates, the shortest time of each kept, so that
    // a moment of slowness of the machine does not fall on one candidate.
    let mut times = vec![std::time::Duration::MAX; candidates.len()];
    for _ in 0..TIMING_ROUNDS {
        for ((mmm, ix), time) in candidates.iter().zip(&mut times) {
            *time = (*time).min(time_products(&**mmm, *ix, (m, k, n), &operands, &c)?);
        }
    }
    let best = candidates
        .into_iter()
        .zip(times)
        .min_by_key(|(_, time)| *time)
        .map(|((mmm, ix), time)| (time, mmm, ix));
    let (_, mmm, ix) = best.context("no f32 matrix kernel with plain packed panels")?;
    Ok((mmm, ix))
}

/// The kernels (and packings) that can run the products `m × k × n` on
/// plain f32 panels: tract's most capable kind for this machine (its
/// architecture's own, highest instruction set), matrix kernels only.
pub(super) fn candidate_kernels(m: usize, k: usize, n: usize) -> Vec<(Box<dyn MatMatMul>, usize)> {
    let query = Query::plain(f32::datum_type(), Some(m), Some(k), Some(n));
    let mut suitable: Vec<_> = MmmDispatch::native()
        .suitable(&query)
        .into_iter()
        .filter(|(mmm, ix, extractor)| {
            extractor.is_none() && mmm.nr() > 1 && f32_panels(&**mmm, *ix).is_some()
        })
        .collect();
    retain_best(&mut suitable);
    // Tiles are padded to whole panels: a kernel wasting a quarter of its
    // rows on padding is never the fastest, so it is not timed (unless no
    // kernel does better, for a tiny block).
    let used = |mmm: &dyn MatMatMul| m as f32 / (m.div_ceil(mmm.mr()) * mmm.mr()).max(1) as f32;
    let floor = suitable
        .iter()
        .map(|(mmm, _, _)| used(&**mmm))
        .fold(0f32, f32::max)
        .min(0.75);
    suitable.retain(|(mmm, _, _)| used(&**mmm) >= floor);
    suitable.into_iter().map(|(mmm, ix, _)| (mmm, ix)).collect()
}

/// Rounds of timing in [`fastest_kernel`], and products timed per round
/// (of a block's 16).
pub(super) const TIMING_ROUNDS: usize = 2;
pub(super) const TIMED_PRODUCTS: usize = 8;

/// The shortest of two timings of the products `m × k × n` of `operands`
/// (what one block of a convolution runs) with kernel `mmm`, on one thread,
/// after one pass to warm the caches.
pub(super) fn time_products(
    mmm: &dyn MatMatMul,
    ix: usize,
    (m, k, n): (usize, usize, usize),
    operands: &[(Tensor, Tensor)],
    c: &Tensor,
) -> TractResult<std::time::Duration> {
    let (a_format, b_format) = f32_panels(mmm, ix).context("plain f32 panels")?;
    let packed = operands
        .iter()
        .map(|(a, b)| {
            Ok((
                a_format.pack_tensor(a, 1, 0)?,
                b_format.pack_tensor(b, 0, 1)?,
            ))
        })
        .collect::<TractResult<Vec<_>>>()?;
    ensure!(c.shape() == [m, n] && packed.iter().all(|(a, _)| a.k() == k));
    // SAFETY: a fresh scratch for this kernel.
    let mut scratch = unsafe { mmm.allocate_scratch_space() };
    let mut pass = || -> TractResult<std::time::Duration> {
        let start = std::time::Instant::now();
        for (a, b) in &packed {
            // SAFETY: a store inside `c` (its shape checked above), operands
            // packed for this kernel and packing.
            unsafe {
                let store = mmm
                    .c_from_data_and_strides(4, 1, m as isize)
                    .wrap(&c.view());
                let specs = [
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&**a),
                        b: AsInputValue::Borrowed(&**b),
                        packing: ix,
                    },
                    FusedSpec::Store(store),
                ];
                mmm.run_with_scratch_space(m, n, &mut *scratch, &specs)?
            };
        }
        Ok(start.elapsed())
    };
    multithread_tract_scope(Executor::SingleThread, || {
        pass()?; // brings the operands into the caches, as a block finds them
        Ok(pass()?.min(pass()?))
    })
}

/// Panels already in a kernel's packed layout, lent to one product: a
/// block's transformed tiles in a worker's scratch, or a window of the packed
/// filter. Lives only for the product, while what it points to is borrowed.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Panels {
    /// Address of the first panel.
    pub(super) base: usize,
    pub(super) panel_bytes: usize,
    pub(super) mn: usize,
    pub(super) fact: PackedExoticFact,
}

impl Panels {
    pub(super) fn new(
        base: *const u8,
        panel_bytes: usize,
        mn: usize,
        k: usize,
        format: &dyn MMMInputFormat,
    ) -> Self {
        Panels {
            base: base as usize,
            panel_bytes,
            mn,
            fact: PackedExoticFact {
                format: tract_onnx::tract_core::dyn_clone::clone_box(format),
                mn: mn.to_dim(),
                k,
            },
        }
    }
}

impl fmt::Display for Panels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "borrowed panels ({})", self.fact)
    }
}

impl MMMInputValue for Panels {
    fn format(&self) -> &dyn MMMInputFormat {
        &*self.fact.format
    }
    fn scratch_panel_buffer_layout(&self) -> Option<std::alloc::Layout> {
        None
    }
    fn panel_bytes(&self, i: usize, _buffer: Option<*mut u8>) -> TractResult<*const u8> {
        ensure!(
            i < self.panels_count(),
            "panel {i} of {}",
            self.panels_count()
        );
        Ok((self.base + i * self.panel_bytes) as *const u8)
    }
    fn mn(&self) -> usize {
        self.mn
    }
    fn k(&self) -> usize {
        self.fact.k
    }
    fn exotic_fact(&self) -> &dyn ExoticFact {
        &self.fact
    }
    fn extract_at_mn_f16(&self, mn: usize, slice: &mut [f16]) -> TractResult<()> {
        let mut f = vec![0f32; slice.len()];
        self.extract_at_mn_f32(mn, &mut f)?;
        slice
            .iter_mut()
            .zip(f)
            .for_each(|(s, v)| *s = f16::from_f32(v));
        Ok(())
    }
    fn extract_at_mn_f32(&self, mn: usize, slice: &mut [f32]) -> TractResult<()> {
        ensure!(
            mn < self.mn && slice.len() == self.k(),
            "extract {mn} of {self}"
        );
        let r = self.format().r();
        let panel = self.panel_bytes(mn / r, None)? as *const f32;
        for (k, s) in slice.iter_mut().enumerate() {
            // SAFETY: `k < K` and `mn % r < r` address inside the panel.
            *s = unsafe { *panel.add(k * r + mn % r) };
        }
        Ok(())
    }
}
