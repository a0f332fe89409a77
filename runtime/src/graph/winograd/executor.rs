//! Running a `WinogradConv`: tract's `Op` / `EvalOp` / `TypedOp`, and the
//! block-by-block evaluation on the caller's threads.

#![allow(clippy::wildcard_imports)]

use super::*;

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
pub(super) struct Block {
    pub(super) image: usize,
    pub(super) rows: std::ops::Range<usize>,
    pub(super) channels: std::ops::Range<usize>,
}

/// The output tensor's buffer, written by several workers at once.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(*mut f32);
// SAFETY: workers write disjoint elements (one block each).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Threads of the tract executor this call runs under.
pub(super) fn executor_threads() -> usize {
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Runs `work` on every item, on the tract executor's threads when there are
/// several. Items are independent, so the result does not depend on the
/// thread count.
pub(super) fn for_each_parallel<T: Send>(
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
    pub(super) fn blocks(&self, threads: usize) -> Vec<Block> {
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
