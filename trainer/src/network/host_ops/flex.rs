//! The host ops on `flex`: type dispatch, and one autodiff node per op whose
//! backward runs the host kernels.

use super::conv::{self, ConvGeom};
use super::group_norm::{self, NormGeom};
use super::{conv_forward, group_norm_forward, host, to_device};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{Tensor, TensorPrimitive};
use std::any::{Any, TypeId};

/// The training backend these nodes serve (`FlexTrain`).
type FlexAd = Autodiff<Flex, NoCheckpointing>;
/// A backend's float tensor primitive.
type Float<B> = <B as BackendTypes>::FloatTensorPrimitive;

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
        |x, w, b| conv_tracked::<Flex, NoCheckpointing>(&g, x, w, b),
        |x, w, b| conv_forward::<Flex>(&g, x, w, b),
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
        |x, gm, bt| norm_tracked::<Flex, NoCheckpointing>(&g, x, gm, bt),
        |x, gm, bt| group_norm_forward::<Flex>(&g, x, gm, bt),
    )
}

/// A convolution node: parents `[x, w, b]`; backward by [`conv::backward`].
#[derive(Debug)]
struct ConvBackward;

impl<B: Backend> Backward<B, 3> for ConvBackward {
    type State = (NodeId, NodeId, ConvGeom);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<Float<B>>(x_state);
        let w = checkpointer.retrieve_node_output::<Float<B>>(w_state);
        let dev = B::float_device(&x);
        let (dx, dw, db) = conv::backward(
            &g,
            &host::<B, 4>(x),
            &host::<B, 4>(w),
            &host::<B, 4>(dy),
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, to_device::<B, 4>(dx, [g.n, g.cin, g.h, g.w], &dev));
        }
        if let Some(node) = node_w {
            let shape = [g.cout, g.cin, g.kh, g.kw];
            grads.register::<B>(node.id, to_device::<B, 4>(dw, shape, &dev));
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, to_device::<B, 1>(db, [g.cout], &dev));
        }
    }
}

fn conv_tracked<B: Backend, C: CheckpointStrategy>(
    g: &ConvGeom,
    x: Float<Autodiff<B, C>>,
    w: Float<Autodiff<B, C>>,
    b: Float<Autodiff<B, C>>,
) -> Float<Autodiff<B, C>> {
    let y = conv_forward::<B>(
        g,
        x.primitive.clone(),
        w.primitive.clone(),
        b.primitive.clone(),
    );
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

impl<B: Backend> Backward<B, 3> for NormBackward {
    type State = (NodeId, NodeId, NodeId, NormGeom);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, beta_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<Float<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<Float<B>>(gamma_state);
        let beta = checkpointer.retrieve_node_output::<Float<B>>(beta_state);
        let dev = B::float_device(&x);
        let (dx, dgamma, dbeta) = group_norm::backward(
            &g,
            &host::<B, 4>(x),
            &host::<B, 1>(gamma),
            &host::<B, 1>(beta),
            &host::<B, 4>(dy),
        );
        if let Some(node) = node_x {
            grads.register::<B>(node.id, to_device::<B, 4>(dx, g.dims(), &dev));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, to_device::<B, 1>(dgamma, [g.c], &dev));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, to_device::<B, 1>(dbeta, [g.c], &dev));
        }
    }
}

fn norm_tracked<B: Backend, C: CheckpointStrategy>(
    g: &NormGeom,
    x: Float<Autodiff<B, C>>,
    gamma: Float<Autodiff<B, C>>,
    beta: Float<Autodiff<B, C>>,
) -> Float<Autodiff<B, C>> {
    let y = group_norm_forward::<B>(
        g,
        x.primitive.clone(),
        gamma.primitive.clone(),
        beta.primitive.clone(),
    );
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
