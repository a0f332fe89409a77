//! Winograd convolution for 3×3, stride-1 convolutions: a rewrite of the
//! tract graph when a plan is built.
//!
//! tract computes a convolution as im2col + one matrix product: 9
//! multiply-adds per input channel per output pixel, plus a packing pass over
//! the patches. Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, *Fast
//! Algorithms for Convolutional Neural Networks*, 2016) computes each 2×2
//! output tile from a 4×4 input tile with 16 multiplies instead of 36, i.e.
//! 2.25× fewer. The multiplies become 16 independent matrix products
//! `V[ξ] · U[ξ]ᵀ` (tiles × input channels × output channels); the transforms
//! around them are additions and subtractions, written here.
//!
//! Each eligible `Conv` node becomes one [`WinogradConv`], with the filter
//! transform `U = G g Gᵀ` computed and packed once, when the plan is built.
//! It works block by block (a few rows of tiles): the input transform writes
//! straight into the packed layout of a tract-linalg matrix kernel, the 16
//! products run with that kernel, the output transform reads them while
//! they are in cache. The products run along the tiles (the kernel's long
//! `m` side), so a layer with few output channels loses nothing. Which
//! kernel is timed once per product shape ([`fastest_kernel`]). Only
//! rounding changes: the tests compare against tract's direct convolution.
//!
//! (An earlier version was three graph nodes, transform → tract `EinSum` →
//! transform: the transformed tiles went through memory twice and were
//! packed again by the product, and each product was a separate hand-over
//! to the threads; `docs/PERFORMANCE.md` measures the difference.
//! F(4×4, 3×3) was tried too: 4× fewer
//! multiplies, but its 36 smaller products were only ~5 % faster than
//! F(2×2)'s 16 here, its transforms cost 1.7× more, and its rounding error
//! is 3× larger.)

use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;
use tract_linalg::MmmDispatch;
use tract_linalg::mmm::{
    AsInputValue, EagerPackedInput, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul,
    PackedExoticFact, Query, ScratchSpace, retain_best,
};
use tract_linalg::multithread::{Executor, current_tract_executor, multithread_tract_scope};
use tract_linalg::pack::PackedFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// How the runtime computes 3×3, stride-1 convolutions with at least 16
/// input channels (all other convolutions are tract's own).
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

/// One eligible convolution, whole: `[N, C_in, H, W]`, bias (scalar or
/// `[C_out]`, possibly computed) → `[N, C_out, H_out, W_out]`.
///
/// The output's tiles are cut into blocks of whole tile rows. For each block
/// a worker writes the 16 transformed input matrices `V[ξ]` (block tiles ×
/// C_in) straight into the packed layout of the matrix kernel tract picked,
/// multiplies each by the packed `U[ξ]ᵀ` with that kernel, and turns the 16
/// products back into output pixels. A block's data stays in the worker's
/// cache and is never packed twice, and the whole convolution is one task
/// per block for the threads (so one fork–join, not one per product).
#[derive(Clone, Debug)]
struct WinogradConv {
    geo: Geometry,
    in_ch: usize,
    out_ch: usize,
    products: Arc<Products>,
}

impl PartialEq for WinogradConv {
    fn eq(&self, other: &Self) -> bool {
        self.geo == other.geo
            && self.in_ch == other.in_ch
            && self.out_ch == other.out_ch
            && Arc::ptr_eq(&self.products, &other.products)
    }
}
impl Eq for WinogradConv {}

/// The 16 products of one convolution: the kernel tract's dispatch picks for
/// their shape, and the transformed filter packed once for it.
#[derive(Debug)]
struct Products {
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    /// The kernel's A operand: tiles × C_in, what the input transform writes.
    tiles: PackedFormat,
    /// `U[ξ]ᵀ` (C_in × C_out), packed as the kernel's B operand.
    filter: Vec<EagerPackedInput>,
    /// Tile rows per block when one thread runs the convolution.
    rows_per_block: usize,
}

/// Tiles per block a single thread aims at: a few of the kernel's panels.
/// A block's transformed tiles and products are 16 × (C_in + C_out) × tiles
/// floats (2 MiB at 128 + 128 channels), but a product reads only its own
/// 1/16th of them, so that fits in a core's L2 cache. Measured with
/// `op_profile` on the benchmark U-Net (one thread, AVX-512 32×6 kernel,
/// best of 3–4 runs): its Winograd convolutions took 8.8 ms with 64-tile
/// blocks, 7.9–8.1 ms with 96 or 128, 8.6 ms with 192.
const BLOCK_TILES: usize = 128;

impl Products {
    /// Tile rows per block on one thread, and the products' `m` then.
    fn block_shape(geo: &Geometry) -> (usize, usize) {
        let rows = BLOCK_TILES.div_ceil(geo.tiles_w()).clamp(1, geo.tiles_h());
        (rows, (rows * geo.tiles_w()).min(geo.tiles_per_image()))
    }

    /// With the fastest kernel for the block's products.
    fn new(geo: &Geometry, in_ch: usize, out_ch: usize, kernel: &[f32]) -> TractResult<Self> {
        let (_, m) = Self::block_shape(geo);
        let (mmm, packing) = fastest_kernel(m, in_ch, out_ch)?;
        Self::with_kernel(geo, in_ch, out_ch, kernel, mmm, packing)
    }

    fn with_kernel(
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
    fn filter_window(&self, xi: usize, range: &std::ops::Range<usize>) -> Panels {
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
fn f32_panels(mmm: &dyn MatMatMul, ix: usize) -> Option<(PackedFormat, PackedFormat)> {
    let (a, b) = mmm.packings().get(ix)?;
    let packed = |f: &dyn MMMInputFormat| {
        f.downcast_ref::<PackedFormat>()
            .filter(|p| p.dt == f32::datum_type())
            .cloned()
    };
    Some((packed(&**a)?, packed(&**b)?))
}

/// The fastest matrix kernel for the products of shape `m × k × n`
/// (block tiles × C_in × C_out), measured once per shape and process.
///
/// tract's own pick is fitted to large products on another CPU; for these
/// short, A-streaming products it can be far off (here, Zen 4: its
/// 16×12 AVX-512 kernel made the benchmark U-Net's forward 11.95 ms against
/// 10.25 ms with the AVX2 32×3 one, best of 4). Timing costs ~0.1 s at the
/// first plan build of that U-Net (7 shapes), ~10 ms for the shipped
/// Fashion-MNIST model. Every candidate sums each output over `k` in the
/// same order, so the choice changes the speed, not the result.
fn fastest_kernel(m: usize, k: usize, n: usize) -> TractResult<(Box<dyn MatMatMul>, usize)> {
    /// (m, k, n) → kernel and packing.
    type Chosen = Vec<((usize, usize, usize), Box<dyn MatMatMul>, usize)>;
    static CHOSEN: std::sync::Mutex<Chosen> = std::sync::Mutex::new(Vec::new());
    let mut chosen = CHOSEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, mmm, ix)) = chosen.iter().find(|c| c.0 == (m, k, n)) {
        return Ok((mmm.clone(), *ix));
    }
    let candidates = candidate_kernels(m, k, n);
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
    chosen.push(((m, k, n), mmm.clone(), ix));
    Ok((mmm, ix))
}

/// The kernels (and packings) that can run the products `m × k × n` on
/// plain f32 panels: tract's most capable kind for this machine (its
/// architecture's own, highest instruction set), matrix kernels only.
fn candidate_kernels(m: usize, k: usize, n: usize) -> Vec<(Box<dyn MatMatMul>, usize)> {
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
const TIMING_ROUNDS: usize = 2;
const TIMED_PRODUCTS: usize = 8;

/// The shortest of two timings of the products `m × k × n` of `operands`
/// (what one block of a convolution runs) with kernel `mmm`, on one thread,
/// after one pass to warm the caches.
fn time_products(
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
struct Panels {
    /// Address of the first panel.
    base: usize,
    panel_bytes: usize,
    mn: usize,
    fact: PackedExoticFact,
}

impl Panels {
    fn new(
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

impl Op for WinogradConv {
    fn name(&self) -> StaticName {
        "WinogradConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![
            format!("{:?}, {} → {} channels", self.geo, self.in_ch, self.out_ch),
            format!(
                "kernel {}, {} tile rows per block",
                self.products.mmm.name(),
                self.products.rows_per_block
            ),
        ])
    }
    op_as_typed_op!();
}

impl EvalOp for WinogradConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, bias) = args_2!(inputs);
        let g = self.geo;
        ensure!(
            x.shape() == [g.batch, self.in_ch, g.in_h, g.in_w],
            "WinogradConv: input shape {:?}",
            x.shape()
        );
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        ensure!(
            bias.len() == 1 || bias.len() == self.out_ch,
            "WinogradConv: {} bias values for {} channels",
            bias.len(),
            self.out_ch
        );
        // SAFETY: the blocks together write every element (see `run_block`)
        // before anything reads it.
        let mut y =
            unsafe { Tensor::uninitialized::<f32>(&[g.batch, self.out_ch, g.out_h, g.out_w])? };
        let out = OutPtr(
            y.try_as_plain_ram_mut()?
                .as_slice_mut::<f32>()?
                .as_mut_ptr(),
        );
        let blocks = self.blocks(executor_threads());
        for_each_parallel(blocks, |block| {
            // SAFETY: the blocks write disjoint parts of `y`, which outlives
            // the call.
            unsafe { self.run_block(x, bias, out, &block) }
        })?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for WinogradConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = self.geo;
        Ok(tvec!(f32::fact([g.batch, self.out_ch, g.out_h, g.out_w])))
    }
    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // The products' multiply-adds, as tract counts a convolution's.
        let macs = 16 * self.geo.tiles() * self.in_ch * self.out_ch;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.to_dim())))
    }
    as_op!();
}

/// One task: tile rows `rows` of image `image`, output channels `channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    image: usize,
    rows: std::ops::Range<usize>,
    channels: std::ops::Range<usize>,
}

/// The output tensor's buffer, written by several workers at once.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint elements (one block each).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Threads of the tract executor this call runs under.
fn executor_threads() -> usize {
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Runs `work` on every item, on the tract executor's threads when there are
/// several. Items are independent, so the result does not depend on the
/// thread count.
fn for_each_parallel<T: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> TractResult<()> + Sync + Send,
) -> TractResult<()> {
    // Each task runs its products on its own thread: the threads are already
    // busy with the other tasks.
    let task = |item| multithread_tract_scope(Executor::SingleThread, || work(item));
    match current_tract_executor() {
        // Work for a single task stays on the calling thread: handing it to
        // the pool costs a wake-up and gains nothing.
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 && items.len() > 1 => {
            pool.install(|| items.into_par_iter().with_max_len(1).try_for_each(task))
        }
        _ => items.into_iter().try_for_each(task),
    }
}

impl WinogradConv {
    /// How one call is cut into tasks for `threads` threads: blocks of whole
    /// tile rows (`rows_per_block` on one thread; smaller while there are
    /// fewer blocks than threads and a block still fills a kernel panel),
    /// then, if still too few, groups of output channels (each group
    /// transforms the block's input again: cheap next to its products).
    fn blocks(&self, threads: usize) -> Vec<Block> {
        let g = &self.geo;
        let (th, tw) = (g.tiles_h(), g.tiles_w());
        let count = |rows: usize| g.batch * th.div_ceil(rows);
        let mut rows = self.products.rows_per_block;
        while count(rows) < threads && rows > 1 && rows.div_ceil(2) * tw >= self.products.mmm.mr() {
            rows = rows.div_ceil(2);
        }
        let nr = self.products.mmm.nr();
        let panels = self.out_ch.div_ceil(nr);
        let groups = threads.div_ceil(count(rows)).clamp(1, panels);
        // Group i: the kernel's column panels [i·P/groups, (i+1)·P/groups).
        let edge = |i: usize| (i * panels / groups * nr).min(self.out_ch);
        let mut blocks = Vec::with_capacity(count(rows) * groups);
        for image in 0..g.batch {
            for r0 in (0..th).step_by(rows) {
                for group in 0..groups {
                    blocks.push(Block {
                        image,
                        rows: r0..(r0 + rows).min(th),
                        channels: edge(group)..edge(group + 1),
                    });
                }
            }
        }
        blocks
    }

    /// Transforms, multiplies and transforms back one block, with this
    /// thread's scratch.
    ///
    /// # Safety
    /// `out` is the output tensor's buffer, and no other thread writes the
    /// part this block covers.
    unsafe fn run_block(
        &self,
        x: &[f32],
        bias: &[f32],
        out: OutPtr,
        block: &Block,
    ) -> TractResult<()> {
        SCRATCH.with_borrow_mut(|scratch| {
            let BlockScratch {
                tiles: tiles_buf,
                products: products_buf,
                mmm: mmm_buf,
                input,
                output,
            } = scratch;
            let g = &self.geo;
            let p = &*self.products;
            let tw = g.tiles_w();
            let tiles = block.rows.len() * tw;
            let mr = p.mmm.mr();
            let panel_len = p.tiles.single_panel_len(self.in_ch);
            let plane_len = tiles.div_ceil(mr) * panel_len;
            let align = p.tiles.alignment().max(std::mem::align_of::<f32>());
            // SAFETY: every element is written below before the kernel reads it.
            let v = unsafe { floats(tiles_buf, 16 * plane_len, align) };
            // Padding of the last panel (tiles beyond the block, records
            // beyond C_in): zero, or the kernel multiplies garbage that may be
            // NaN or slow denormals into lanes it then drops.
            for plane in v.chunks_exact_mut(plane_len) {
                for panel in plane.chunks_exact_mut(panel_len) {
                    panel[self.in_ch * mr..].fill(0.0);
                }
                let last = &mut plane[(tiles.div_ceil(mr) - 1) * panel_len..];
                if !tiles.is_multiple_of(mr) {
                    for record in last[..self.in_ch * mr].chunks_exact_mut(mr) {
                        record[tiles % mr..].fill(0.0);
                    }
                }
            }
            let mut planes: Vec<&mut [f32]> = v.chunks_exact_mut(plane_len).collect();
            let input = input.get_or_insert_with(|| InputScratch::new(g, block.rows.len()));
            input.ensure(g, block.rows.len());
            let plane = g.in_h * g.in_w;
            for c in 0..self.in_ch {
                let xp = &x[(block.image * self.in_ch + c) * plane..][..plane];
                let layout = TileLayout {
                    mr,
                    panel_len,
                    channel: c,
                };
                input.transform_rows(g, xp, block.rows.clone(), &mut planes, layout);
            }

            // The 16 products, each into its own [channels][tiles] plane.
            let channels = block.channels.len();
            let m = tensor(products_buf, 16 * channels * tiles)?;
            let mmm_scratch = match mmm_buf.take() {
                // SAFETY: asks only whether the scratch is of the kernel's type.
                Some(s) if unsafe { p.mmm.can_use_scratch_space(&*s) } => s,
                // SAFETY: a fresh scratch for this kernel.
                _ => unsafe { p.mmm.allocate_scratch_space() },
            };
            let mmm_scratch = mmm_buf.insert(mmm_scratch);
            let shape = [tiles, channels];
            let strides = [1, tiles as isize];
            for (xi, plane) in planes.iter().enumerate() {
                let a = Panels::new(
                    plane.as_ptr() as *const u8,
                    panel_len * 4,
                    tiles,
                    self.in_ch,
                    &p.tiles,
                );
                let b = p.filter_window(xi, &block.channels);
                // SAFETY: the view lies inside `m` (16 planes of
                // tiles × channels floats).
                let store = unsafe {
                    let view = TensorView::from_bytes(
                        m,
                        (xi * channels * tiles * 4) as isize,
                        &shape,
                        &strides,
                    );
                    p.mmm
                        .c_from_data_and_strides(4, 1, tiles as isize)
                        .wrap(&view)
                };
                unsafe {
                    p.mmm.run_with_scratch_space(
                        tiles,
                        channels,
                        &mut **mmm_scratch,
                        &[
                            FusedSpec::AddMatMul {
                                a: AsInputValue::Borrowed(&a),
                                b: AsInputValue::Borrowed(&b),
                                packing: p.packing,
                            },
                            FusedSpec::Store(store),
                        ],
                    )?;
                }
            }
            let m = m.try_as_plain_ram()?.as_slice::<f32>()?;
            let out_plane = g.out_h * g.out_w;
            for (i, c) in block.channels.clone().enumerate() {
                let bc = if bias.len() == 1 { bias[0] } else { bias[c] };
                let products = |xi: usize| &m[(xi * channels + i) * tiles..][..tiles];
                let base = (block.image * self.out_ch + c) * out_plane;
                output.transform(g, block.rows.clone(), products, bc, |yy| {
                    // SAFETY: row `yy` of this block's image and channel is
                    // written by this block only (the caller's contract).
                    unsafe {
                        std::slice::from_raw_parts_mut(out.0.add(base + yy * g.out_w), g.out_w)
                    }
                });
            }
            Ok(())
        })
    }
}

thread_local! {
    /// Per-thread buffers of the Winograd blocks, kept between calls (they
    /// are as large as the largest block run on the thread so far).
    static SCRATCH: std::cell::RefCell<BlockScratch> = Default::default();
}

#[derive(Default)]
struct BlockScratch {
    /// The block's transformed tiles, in the kernel's packed layout.
    tiles: Option<Blob>,
    /// The block's 16 products.
    products: Option<Tensor>,
    /// tract's scratch for the kernel.
    mmm: Option<Box<dyn ScratchSpace>>,
    input: Option<InputScratch>,
    output: OutputScratch,
}

/// `len` floats of `blob`, aligned to `align` bytes, contents unspecified.
///
/// # Safety
/// The caller writes them before reading.
unsafe fn floats(blob: &mut Option<Blob>, len: usize, align: usize) -> &mut [f32] {
    let blob = blob.get_or_insert_with(Blob::default);
    unsafe {
        blob.ensure_size_and_align(len * 4, align);
        std::slice::from_raw_parts_mut(blob.as_mut_ptr() as *mut f32, len)
    }
}

/// A tensor of at least `len` floats, contents unspecified (written by the
/// kernel before they are read).
fn tensor(slot: &mut Option<Tensor>, len: usize) -> TractResult<&Tensor> {
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
struct TileLayout {
    mr: usize,
    panel_len: usize,
    channel: usize,
}

impl TileLayout {
    fn offset(&self, j: usize) -> usize {
        (j / self.mr) * self.panel_len + self.channel * self.mr + j % self.mr
    }
}

/// Per-worker buffers of the input transform.
struct InputScratch {
    /// Rows (per phase) of the padded block: its tile rows + 1.
    rows: usize,
    /// Columns per phase: `tw + 1`.
    cols: usize,
    /// One padded input row.
    line: Vec<f32>,
    /// `phase[2·rr + r][i][t] = X_pad[2(ty0 + i) + rr][2t + r]`, plus one
    /// slack value.
    phase: [Vec<f32>; 4],
    /// `horiz[2·l + rr][i][tx]`: the horizontal transform, per row phase.
    horiz: [Vec<f32>; 8],
}

impl InputScratch {
    fn new(g: &Geometry, tile_rows: usize) -> Self {
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
    fn ensure(&mut self, g: &Geometry, tile_rows: usize) {
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
    fn transform_rows(
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
struct OutputScratch {
    rows: [Vec<f32>; 12],
}

impl OutputScratch {
    /// `Y = Aᵀ M A + bias` for every tile of tile rows `tile_rows` of one
    /// output channel, from its 16 products `m(ξ)` (one value per tile of
    /// the block), written into the output rows `row(yy)` (cropped to the
    /// image).
    fn transform<'m, 'y>(
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

/// Bytes of the largest per-thread scratch a Winograd convolution of the
/// model uses: a block's transformed tiles and products, with room for
/// padding to a kernel's panels (tract's f32 kernels have at most 128 rows;
/// 8 records of end padding per panel is more than any of them asks).
/// An upper bound, not a measurement.
pub(crate) fn scratch_bytes(model: &TypedModel) -> u64 {
    model
        .nodes()
        .iter()
        .filter_map(|n| {
            let conv = n.op_as::<Conv>()?;
            let geo = eligible(model, n, conv).ok()?;
            let (_, m) = Products::block_shape(&geo);
            let tiles = m as u64 + 128;
            let (cin, cout) = (
                conv.pool_spec.input_channels,
                conv.pool_spec.output_channels,
            );
            Some(16 * 4 * tiles * (cin as u64 + 8 + cout as u64))
        })
        .max()
        .unwrap_or(0)
}

/// Rewrites every eligible convolution of a concrete-shape model as a
/// [`WinogradConv`]; returns how many were rewritten.
pub(crate) fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
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
        let op = WinogradConv {
            geo,
            in_ch,
            out_ch,
            products: Arc::new(Products::new(&geo, in_ch, out_ch, kernel)?),
        };
        let mut patch = TypedModelPatch::new(format!("winograd {}", node.name));
        let x = patch.tap_model(model, node.inputs[0])?;
        let bias = patch.tap_model(model, node.inputs[2])?;
        let y = patch.wire_node(format!("{}.winograd", node.name), op, &[x, bias])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
    Ok(done)
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

/// Below this many input channels (the products' `k`) a product is too
/// short for the saved multiplies to pay for the transforms and the
/// kernel's per-tile overhead; the number of output channels does not
/// matter, since the products run along the tiles. Measured with
/// `op_profile` (one thread, best of 6 runs of 300 forwards): the shipped
/// Fashion-MNIST model takes 2.80 ms per forward with no convolution
/// rewritten, 2.74 ms from 32 input channels, 2.59 ms from 16, 2.63 ms from
/// 8; the benchmark U-Net's 3 → 64 input convolution takes 0.20 ms as
/// Winograd against 0.12 ms direct, its 64 → 3 output convolution 0.13 ms
/// against 0.30–0.37 ms.
const MIN_INPUT_CHANNELS: usize = 16;

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
    if spec.input_channels < MIN_INPUT_CHANNELS {
        return Err(format!("fewer than {MIN_INPUT_CHANNELS} input channels"));
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

    /// Runs the op on `x` with `threads` threads.
    fn run_op(op: &WinogradConv, x: Tensor, bias: Tensor, threads: usize) -> Vec<f32> {
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let y = multithread_tract_scope(executor, || {
            op.eval(
                &EvalContext::out_of_plan(),
                tvec!(x.into_tvalue(), bias.into_tvalue()),
            )
        })
        .unwrap()
        .remove(0);
        y.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// The whole op against a direct convolution for odd and even sizes,
    /// every padding, a batch, channel counts off the kernel's panels, and
    /// thread counts that cut the work into smaller blocks and channel
    /// groups.
    #[test]
    fn matches_a_direct_convolution() {
        let cases = [
            // (batch, cin, cout, h, w, pad_top, pad_left, pad_bottom, pad_right)
            (1, 3, 4, 8, 8, 1, 1, 1, 1),
            (2, 5, 3, 7, 9, 1, 1, 1, 1),
            (1, 2, 2, 6, 5, 0, 0, 0, 0),
            (1, 4, 6, 5, 6, 1, 0, 0, 1),
            (3, 1, 1, 1, 1, 1, 1, 1, 1),
            (1, 40, 37, 16, 16, 1, 1, 1, 1),
            (1, 33, 70, 8, 8, 1, 1, 1, 1),
            (2, 32, 32, 11, 30, 1, 1, 1, 1),
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
            let op = WinogradConv {
                geo: g,
                in_ch: cin,
                out_ch: cout,
                products: Arc::new(Products::new(&g, cin, cout, &k).unwrap()),
            };
            let want = reference(&g, cin, cout, &x, &k, &bias);
            for threads in [1, 2, 3, 5] {
                let y = run_op(
                    &op,
                    Tensor::from_shape(&[batch, cin, h, w], &x).unwrap(),
                    Tensor::from_shape(&[bias.len()], &bias).unwrap(),
                    threads,
                );
                assert_eq!(y.len(), want.len());
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()) * (cin as f32).sqrt(),
                        "case {seed}, {threads} threads, [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Every candidate kernel gives the same bits, so the measured choice
    /// changes the speed only.
    #[test]
    fn every_kernel_gives_the_same_result() {
        let g = Geometry {
            batch: 1,
            in_h: 16,
            in_w: 14,
            out_h: 16,
            out_w: 14,
            pad_top: 1,
            pad_left: 1,
        };
        let (cin, cout) = (40, 37);
        let x = gaussian(cin * 16 * 14, 1);
        let k = gaussian(cout * cin * 9, 2);
        let bias = gaussian(cout, 3);
        let (_, m) = Products::block_shape(&g);
        let candidates = candidate_kernels(m, cin, cout);
        assert!(!candidates.is_empty());
        let mut first: Option<(String, Vec<f32>)> = None;
        for (mmm, ix) in candidates {
            let name = mmm.name().to_string();
            let op = WinogradConv {
                geo: g,
                in_ch: cin,
                out_ch: cout,
                products: Arc::new(Products::with_kernel(&g, cin, cout, &k, mmm, ix).unwrap()),
            };
            let y = run_op(
                &op,
                Tensor::from_shape(&[1, cin, 16, 14], &x).unwrap(),
                Tensor::from_shape(&[cout], &bias).unwrap(),
                1,
            );
            match &first {
                None => first = Some((name, y)),
                Some((n0, y0)) => assert!(y == *y0, "{name} differs from {n0}"),
            }
        }
    }

    /// More threads cut the work into more tasks, never across an output
    /// element, and every element is in exactly one task.
    #[test]
    fn blocks_cover_the_output_once() {
        for (batch, h, cin, cout) in [
            (1, 32, 64, 64),
            (1, 8, 128, 128),
            (3, 16, 64, 128),
            (1, 3, 32, 40),
        ] {
            let g = Geometry {
                batch,
                in_h: h,
                in_w: h,
                out_h: h,
                out_w: h,
                pad_top: 1,
                pad_left: 1,
            };
            let k = gaussian(cout * cin * 9, 1);
            let op = WinogradConv {
                geo: g,
                in_ch: cin,
                out_ch: cout,
                products: Arc::new(Products::new(&g, cin, cout, &k).unwrap()),
            };
            for threads in 1..=8 {
                let blocks = op.blocks(threads);
                let mut seen = vec![0u8; batch * g.tiles_h() * cout];
                for b in &blocks {
                    for ty in b.rows.clone() {
                        for c in b.channels.clone() {
                            seen[(b.image * g.tiles_h() + ty) * cout + c] += 1;
                        }
                    }
                }
                assert!(
                    seen.iter().all(|&s| s == 1),
                    "{batch}×{h}², {threads} threads"
                );
                if threads == 1 {
                    assert_eq!(
                        blocks.len(),
                        batch * g.tiles_h().div_ceil(op.products.rows_per_block)
                    );
                } else {
                    // Enough tasks, or the channels cut as fine as the
                    // kernel's panels allow.
                    let nr = op.products.mmm.nr();
                    assert!(
                        blocks.len() >= threads || blocks.iter().all(|b| b.channels.len() <= nr),
                        "{batch}×{h}², {threads} threads: {blocks:?}"
                    );
                }
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
        let mut v = [[0f32; 1]; 16];
        let mut rows: Vec<&mut [f32]> = v.iter_mut().map(|r| &mut r[..]).collect();
        let layout = TileLayout {
            mr: 1,
            panel_len: 1,
            channel: 0,
        };
        InputScratch::new(&g, 1).transform_rows(&g, &d, 0..1, &mut rows, layout);
        for k in 0..4 {
            for l in 0..4 {
                let want: f32 = (0..4)
                    .flat_map(|i| (0..4).map(move |j| (i, j)))
                    .map(|(i, j)| BT[k][i] * d[i * 4 + j] * BT[l][j])
                    .sum();
                assert!((v[k * 4 + l][0] - want).abs() < 1e-5);
            }
        }
        let m = gaussian(16, 8);
        let mut y = [[0f32; 2]; 2];
        {
            let mut out = y.each_mut().into_iter();
            OutputScratch::default().transform(
                &g,
                0..1,
                |xi| &m[xi..][..1],
                0.0,
                |_| out.next().unwrap(),
            );
        }
        for a in 0..2 {
            for b in 0..2 {
                let want: f32 = (0..4)
                    .flat_map(|i| (0..4).map(move |j| (i, j)))
                    .map(|(i, j)| AT[a][i] * m[i * 4 + j] * AT[b][j])
                    .sum();
                assert!((y[a][b] - want).abs() < 1e-5);
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
