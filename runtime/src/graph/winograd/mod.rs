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
//! kernel is estimated or timed once per product shape ([`tuning`]). Only
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

mod executor;
mod kernels;
mod rewrite;
#[cfg(test)]
mod tests;
mod transforms;
mod tuning;

#[allow(unused_imports)]
use executor::*;
#[allow(clippy::wildcard_imports)]
use kernels::*;
pub(crate) use rewrite::{count, rewrite, scratch_bytes};
#[allow(clippy::wildcard_imports)]
use transforms::*;
use tuning::chosen_kernel;
pub use tuning::{KernelTuning, kernel_tuning, set_kernel_tuning};

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
