//! The graph rewrite: which `Conv` nodes are eligible, replacing them with
//! `WinogradConv`, counting them, and the scratch memory they need.

#![allow(clippy::wildcard_imports)]

use super::*;

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
pub(super) const MIN_INPUT_CHANNELS: usize = 16;

/// The geometry of a convolution the rewrite handles, or why it is left to
/// tract's direct convolution.
pub(super) fn eligible(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> Result<Geometry, String> {
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
