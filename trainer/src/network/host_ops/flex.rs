//! The host ops on `flex`: type dispatch, and one autodiff node per op whose
//! backward runs the host kernels. The kernels read flex's buffers in place
//! (a contiguous f32 tensor is borrowed, not copied: the autodiff graph
//! shares every input it keeps, so a by-value conversion copied each one)
//! and their results become flex tensors without a copy.

use super::conv::{self, ConvGeom};
use super::group_norm::{self, NormGeom};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};
use std::any::{Any, TypeId};
use std::borrow::Cow;

/// The training backend these nodes serve (`FlexTrain`).
type FlexAd = Autodiff<Flex, NoCheckpointing>;
/// A backend's float tensor primitive.
type Float<B> = <B as BackendTypes>::FloatTensorPrimitive;

/// A flex tensor's values (row-major) as `f32`: borrowed when the tensor is
/// contiguous f32, converted otherwise.
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_else(|e| unreachable!("a converted f32 tensor reads as f32: {e:?}")),
        ),
    }
}

/// Values of shape `shape` as a flex tensor (the vector becomes its buffer).
fn flex_tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// The convolution's forward pass on flex tensors.
fn conv_forward(g: &ConvGeom, x: &FlexTensor, w: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let y = conv::forward(g, &values(x), &values(w), Some(&values(b)));
    flex_tensor(y, [g.n, g.cout, g.ho(), g.wo()])
}

/// GroupNorm (+ SiLU) forward on flex tensors.
fn group_norm_forward(
    g: &NormGeom,
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
) -> FlexTensor {
    let y = group_norm::forward(g, &values(x), &values(gamma), &values(beta));
    flex_tensor(y, g.dims())
}

/// `a` as type `T`; called only where the caller's `TypeId` check proved `A`
/// and `T` the same type.
fn same<A: 'static, T: 'static>(a: A) -> T {
    match (Box::new(a) as Box<dyn Any>).downcast::<T>() {
        Ok(t) => *t,
        Err(_) => unreachable!("called only when the two types are equal"),
    }
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> Float<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(p: Float<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// Runs `tracked` on `Autodiff<Flex>`, `plain` on `Flex`, or hands `x` back.
fn dispatch<B: Backend>(
    x: Tensor<B, 4>,
    p1: Float<B>,
    p2: Float<B>,
    tracked: impl FnOnce(Float<FlexAd>, Float<FlexAd>, Float<FlexAd>) -> Float<FlexAd>,
    plain: impl FnOnce(Float<Flex>, Float<Flex>, Float<Flex>) -> Float<Flex>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let x = primitive(x);
    let y: Float<B> = if TypeId::of::<B>() == TypeId::of::<FlexAd>() {
        same(tracked(same(x), same(p1), same(p2)))
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        same(plain(same(x), same(p1), same(p2)))
    } else {
        return Err(tensor(x));
    };
    Ok(tensor(y))
}

pub(super) fn conv<B: Backend>(
    c: &Conv2d<B>,
    x: Tensor<B, 4>,
    g: ConvGeom,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(bias) = &c.bias else {
        return Err(x);
    };
    dispatch(
        x,
        primitive(c.weight.val()),
        primitive(bias.val()),
        |x, w, b| conv_tracked::<NoCheckpointing>(&g, x, w, b),
        |x, w, b| conv_forward(&g, &x, &w, &b),
    )
}

pub(super) fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    g: NormGeom,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    dispatch(
        x,
        primitive(gamma.val()),
        primitive(beta.val()),
        |x, gm, bt| norm_tracked::<NoCheckpointing>(&g, x, gm, bt),
        |x, gm, bt| group_norm_forward(&g, &x, &gm, &bt),
    )
}

/// Dropout of probability `prob` through a host mask, on `Autodiff<Flex>`
/// only (Burn's `Dropout` is the identity without autodiff; other backends
/// draw their own masks). The mask's seed comes from the backend's seeded
/// generator, so `--seed` still fixes every mask; the mask is a constant,
/// and the product's gradient is the mask (as with Burn's).
pub(super) fn dropout<B: Backend, const D: usize>(
    prob: f64,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if TypeId::of::<B>() != TypeId::of::<FlexAd>() || !(prob > 0.0 && prob < 1.0) {
        return Err(x);
    }
    let device = x.device();
    // Two 24-bit draws (exact in f32): a 48-bit seed.
    let draws = Tensor::<B, 1>::random([2], Distribution::Uniform(0.0, 16_777_216.0), &device)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_else(|e| unreachable!("a converted f32 tensor reads as f32: {e:?}"));
    let seed = draws
        .iter()
        .fold(0u64, |s, &v| (s << 24) | (v as u64 & 0xFF_FFFF));
    let shape = x.shape();
    let mask = super::dropout::mask(seed, 1.0 - prob, shape.num_elements());
    let mask = Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device);
    Ok(x * mask)
}

/// A convolution node: parents `[x, w, b]`; backward by [`conv::backward`].
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = (NodeId, NodeId, ConvGeom);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x_state, w_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
        let w = checkpointer.retrieve_node_output::<FlexTensor>(w_state);
        let (dx, dw, db) =
            conv::backward(&g, &values(&x), &values(&w), &values(&dy), node_x.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex_tensor(dx, [g.n, g.cin, g.h, g.w]));
        }
        if let Some(node) = node_w {
            let shape = [g.cout, g.cin, g.kh, g.kw];
            grads.register::<Flex>(node.id, flex_tensor(dw, shape));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex_tensor(db, [g.cout]));
        }
    }
}

fn conv_tracked<C: CheckpointStrategy>(
    g: &ConvGeom,
    x: Float<Autodiff<Flex, C>>,
    w: Float<Autodiff<Flex, C>>,
    b: Float<Autodiff<Flex, C>>,
) -> Float<Autodiff<Flex, C>> {
    let y = conv_forward(g, &x.primitive, &w.primitive, &b.primitive);
    match ConvBackward
        .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let w_state = prep.checkpoint(&w);
            prep.finish((x_state, w_state, *g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// A GroupNorm (+ SiLU) node: parents `[x, gamma, beta]`; backward by
/// [`group_norm::backward`].
#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = (NodeId, NodeId, NodeId, NormGeom);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x_state, gamma_state, beta_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FlexTensor>(gamma_state);
        let beta = checkpointer.retrieve_node_output::<FlexTensor>(beta_state);
        let (dx, dgamma, dbeta) = group_norm::backward(
            &g,
            &values(&x),
            &values(&gamma),
            &values(&beta),
            &values(&dy),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, g.dims()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, [g.c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, [g.c]));
        }
    }
}

fn norm_tracked<C: CheckpointStrategy>(
    g: &NormGeom,
    x: Float<Autodiff<Flex, C>>,
    gamma: Float<Autodiff<Flex, C>>,
    beta: Float<Autodiff<Flex, C>>,
) -> Float<Autodiff<Flex, C>> {
    let y = group_norm_forward(g, &x.primitive, &gamma.primitive, &beta.primitive);
    match NormBackward
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let gamma_state = prep.checkpoint(&gamma);
            let beta_state = prep.checkpoint(&beta);
            prep.finish((x_state, gamma_state, beta_state, *g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
