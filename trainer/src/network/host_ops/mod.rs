//! The network's convolutions and GroupNorm (+ SiLU) on Burn's `flex` CPU
//! backend, through our own kernels on host memory and our own autodiff
//! nodes.
//!
//! Why: a profile of `fewstep-train bench` on `flex` (small preset, batch 16,
//! docs/PERFORMANCE.md) spent ~55 % of a step in convolution, most of it in
//! Burn's generic `conv2d_weight_backward` (a 3-D convolution over a
//! transposed, copied input) and `conv2d_x_backward` (a transposed
//! convolution); with those replaced, GroupNorm and SiLU, composed of
//! broadcast element-wise operations through flex's strided iterator, were
//! the next third. Here a convolution is one matrix product per image
//! forward and two backward ([`conv`]); GroupNorm + SiLU is one pass forward
//! and two backward per group ([`group_norm`]); both split the batch over
//! rayon's threads.
//!
//! Dispatch is by type: `Autodiff<Flex>` (training) and `Flex` (EMA
//! sampling) take these paths; every other backend, and any layer outside
//! the kernels' reach (groups, dilation, no bias, no affine), goes back to
//! the caller as `Err(x)`. `trainer/tests/backends.rs` checks the network
//! and its gradients against the ndarray path; the tests here check each op
//! against Burn's own on `flex`.

pub mod conv;
pub mod dropout;
#[cfg(feature = "flex")]
mod flex;
pub mod group_norm;
#[cfg(all(test, feature = "flex"))]
mod tests;

use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, GroupNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use conv::ConvGeom;
use group_norm::NormGeom;

/// `conv(x)` by the host kernels when the backend and the layer allow it;
/// otherwise `Err(x)`, unchanged, for the caller's own path.
pub fn try_conv<B: Backend>(c: &Conv2d<B>, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(geom) = conv_geometry(c, &x) else {
        return Err(x);
    };
    #[cfg(feature = "flex")]
    {
        flex::conv(c, x, geom)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = geom;
        Err(x)
    }
}

/// `silu(norm(x))` (or `norm(x)` when `silu` is false) by the host kernels
/// when the backend and the layer allow it; otherwise `Err(x)`.
pub fn try_group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    silu: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    let geom = NormGeom {
        n,
        c,
        h,
        w,
        groups: norm.num_groups,
        eps: norm.epsilon,
        silu,
    };
    if !norm.affine || norm.num_channels != c || !geom.is_valid() {
        return Err(x);
    }
    #[cfg(feature = "flex")]
    {
        flex::group_norm(norm, x, geom)
    }
    #[cfg(not(feature = "flex"))]
    {
        Err(x)
    }
}

/// `dropout(x)` with a host mask ([`dropout::mask`]) when training on
/// `flex`; otherwise `Err(x)`, for Burn's `Dropout`.
pub fn try_dropout<B: Backend, const D: usize>(
    d: &Dropout,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "flex")]
    {
        flex::dropout(d.prob, x)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = d;
        Err(x)
    }
}

/// The convolution's shape, if the kernels compute it: groups 1, dilation 1,
/// symmetric explicit (or no) padding, a bias, a kernel that fits.
fn conv_geometry<B: Backend>(c: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<ConvGeom> {
    if c.groups != 1 || c.dilation != [1, 1] || c.bias.is_none() {
        return None;
    }
    let pad = match c.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    let [n, cin, h, w] = x.dims();
    let [cout, wcin, kh, kw] = c.weight.dims();
    let geom = ConvGeom {
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride: c.stride,
        pad,
    };
    (wcin == cin && geom.is_valid()).then_some(geom)
}
