//! ONNX `GroupNormalization` as one operator, optionally with the SiLU that
//! follows it in a U-Net block.
//!
//! tract expands `GroupNormalization` into eleven generic operators (two
//! reductions, a subtraction, a square, `rsqrt`, reshapes, the affine
//! multiply-add), each a pass over the tensor, most of them on one thread.
//! Here a group (`C/G` channels, contiguous in NCHW) is read twice for its
//! mean and variance and written once, as `x·a + b` per channel with the
//! scale folded in, then SiLU in place while it is still in cache; groups
//! run in parallel on the tract executor's threads. The mean and variance
//! are summed in f32 lanes and combined in f64, as accurate as tract's.
//!
//! Registered in the ONNX parser fewstep uses ([`onnx`]), so every fewstep
//! model gets it; [`fuse_silu`] folds a following SiLU in when a plan is
//! built (`crate::rewrite_graph`).

use rayon::prelude::*;
use tract_linalg::Func;
use tract_linalg::multithread::{Executor, current_tract_executor};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Silu;
use tract_onnx::tract_hir::internal::*;

/// tract's ONNX parser with fewstep's own operators registered. Public
/// (hidden) for the profiling examples.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("GroupNormalization", group_normalization);
    onnx
}

/// The `GroupNormalization` node's attributes. Before opset 21 `scale` and
/// `bias` are per group (`[G]`), from opset 21 on per channel (`[C]`).
fn group_normalization(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    let groups: usize = node.get_attr("num_groups")?;
    ensure!(groups > 0, "GroupNormalization: num_groups is 0");
    // Or a node fewstep made from PyTorch's export (`torch_group_norm`).
    let per_channel = ctx.onnx_operator_set_version >= 21
        || node.get_attr_opt::<i64>(super::torch_group_norm::PER_CHANNEL_ATTR)? == Some(1);
    Ok((
        expand(GroupNormalization {
            epsilon,
            groups,
            per_channel,
        }),
        vec![],
    ))
}

#[derive(Clone, Debug)]
struct GroupNormalization {
    epsilon: f32,
    groups: usize,
    per_channel: bool,
}

impl Expansion for GroupNormalization {
    fn name(&self) -> StaticName {
        "GroupNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &inputs[1].datum_type)?;
        s.equals(&inputs[0].datum_type, &inputs[2].datum_type)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        ensure!(
            fact.rank() >= 2,
            "GroupNormalization expects rank >= 2, got {}",
            fact.rank()
        );
        if let Some(c) = fact.shape[1].as_i64() {
            ensure!(
                (c as usize).is_multiple_of(self.groups),
                "GroupNormalization: {c} channels in {} groups",
                self.groups
            );
        }
        let dt = fact.datum_type;
        ensure!(dt.is_float(), "GroupNormalization of {dt:?}");
        // Computed in f32 (ONNX's default `stash_type`): cast anything else
        // in and out.
        let mut wires: TVec<OutletId> = inputs.into();
        if dt != f32::datum_type() {
            for (i, w) in wires.iter_mut().enumerate() {
                *w =
                    model.wire_node(format!("{prefix}.cast_in{i}"), cast(DatumType::F32), &[*w])?
                        [0];
            }
        }
        let op = GroupNorm {
            groups: self.groups,
            epsilon: self.epsilon,
            per_channel: self.per_channel,
            silu: false,
        };
        let y = model.wire_node(prefix, op, &wires)?;
        if dt != f32::datum_type() {
            return model.wire_node(format!("{prefix}.cast_out"), cast(dt), &y);
        }
        Ok(y)
    }
}

/// `y = (x − mean_g) / √(var_g + ε) · scale + bias` over the groups of
/// `C/G` channels of `x [N, C, …]` (f32), then SiLU if `silu`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupNorm {
    groups: usize,
    epsilon: f32,
    /// `scale` and `bias` are `[C]`, not `[G]`.
    per_channel: bool,
    silu: bool,
}

// ε comes from the model and is never NaN.
impl Eq for GroupNorm {}

impl Op for GroupNorm {
    fn name(&self) -> StaticName {
        if self.silu {
            "GroupNorm+Silu".into()
        } else {
            "GroupNorm".into()
        }
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} groups, ε = {}",
            self.groups, self.epsilon
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for GroupNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, bias) = args_3!(inputs);
        let shape = x.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let g = self.groups;
        ensure!(c % g == 0, "GroupNorm: {c} channels in {g} groups");
        let params = if self.per_channel { c } else { g };
        let scale = scale.try_as_plain_ram()?;
        let scale = scale.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        ensure!(
            scale.len() == params && bias.len() == params,
            "GroupNorm: {} scales and {} biases for {params}",
            scale.len(),
            bias.len()
        );
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let plane: usize = shape[2..].iter().product();
        let per_group = c / g * plane;
        // SAFETY: every group's chunk is written below before it is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let silu = if self.silu {
            Some(Func::Silu.ew_f32()?)
        } else {
            None
        };
        let work = |(i, (y, x)): (usize, (&mut [f32], &[f32]))| -> TractResult<()> {
            let group = i % g;
            let mean = sum(x) / x.len() as f64;
            let var = squared_deviations(x, mean as f32) / x.len() as f64;
            let inv = 1.0 / (var + self.epsilon as f64).sqrt();
            for (k, (y, x)) in y
                .chunks_exact_mut(plane)
                .zip(x.chunks_exact(plane))
                .enumerate()
            {
                let p = if self.per_channel {
                    group * (c / g) + k
                } else {
                    group
                };
                let a = scale[p] as f64 * inv;
                let b = bias[p] as f64 - mean * a;
                affine(x, y, a as f32, b as f32);
                if let Some(silu) = &silu {
                    silu.run(y)?;
                }
            }
            Ok(())
        };
        if per_group > 0 {
            let mut ram = y.try_as_plain_ram_mut()?;
            let y = ram.as_slice_mut::<f32>()?;
            let chunks = y.chunks_exact_mut(per_group).zip(x.chunks_exact(per_group));
            match current_tract_executor() {
                Executor::MultiThread(pool) if pool.current_num_threads() > 1 && n * g > 1 => {
                    // A few groups per task: one group alone is too little
                    // work for a hand-over between threads.
                    let per_task = (n * g).div_ceil(2 * pool.current_num_threads());
                    let chunks: Vec<_> = chunks.enumerate().collect();
                    pool.install(|| {
                        chunks
                            .into_par_iter()
                            .with_min_len(per_task)
                            .try_for_each(work)
                    })?;
                }
                _ => chunks.enumerate().try_for_each(work)?,
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for GroupNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "GroupNorm: x, scale, bias");
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "GroupNorm computes f32"
        );
        ensure!(inputs[0].rank() >= 2, "GroupNorm expects rank >= 2");
        Ok(tvec!(inputs[0].without_value()))
    }
    as_op!();
}

/// Lanes of the vectorised sums (a multiple of any SIMD width here).
const LANES: usize = 16;

/// `Σ f(x)`, in `LANES` f32 partial sums over blocks of at most 4096
/// values, combined in f64.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    x.chunks(4096)
        .map(|block| {
            let mut acc = [0f32; LANES];
            let mut it = block.chunks_exact(LANES);
            for v in &mut it {
                for (a, &x) in acc.iter_mut().zip(v) {
                    *a += f(x);
                }
            }
            let tail: f32 = it.remainder().iter().map(|&x| f(x)).sum();
            acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

/// `Σ x`.
fn sum(x: &[f32]) -> f64 {
    lane_sum(x, |v| v)
}

/// `Σ (x − mean)²`.
fn squared_deviations(x: &[f32], mean: f32) -> f64 {
    lane_sum(x, |v| (v - mean) * (v - mean))
}

/// `y = x·a + b`.
fn affine(x: &[f32], y: &mut [f32], a: f32, b: f32) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x * a + b;
    }
}

/// Folds every SiLU that is the only consumer of a [`GroupNorm`] into it;
/// returns how many.
pub(crate) fn fuse_silu(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(gn) = node.op_as::<GroupNorm>() else {
            continue;
        };
        if gn.silu || node.outputs[0].successors.len() != 1 {
            continue;
        }
        let next = model.node(node.outputs[0].successors[0].node);
        let is_silu = next
            .op_as::<ElementWiseOp>()
            .is_some_and(|ew| ew.0.is::<Silu>() && ew.1.is_none());
        if !is_silu || model.output_outlets()?.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let op = GroupNorm {
            silu: true,
            ..gn.clone()
        };
        let (inputs, name, silu_id) = (node.inputs.clone(), node.name.clone(), next.id);
        let mut patch = TypedModelPatch::new(format!("fuse SiLU into {name}"));
        let taps = inputs
            .iter()
            .map(|&i| patch.tap_model(model, i))
            .collect::<TractResult<TVec<_>>>()?;
        let y = patch.wire_node(format!("{name}.silu"), op, &taps)?[0];
        patch.shunt_outside(model, OutletId::new(silu_id, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
    Ok(done)
}
