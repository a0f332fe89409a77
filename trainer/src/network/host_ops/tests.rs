//! Each host op against Burn's own on `flex`: output and every gradient.

use super::{try_conv, try_dropout, try_group_norm};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{DropoutConfig, GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::{Distribution, Tensor};

type Ad = Autodiff<Flex>;

fn close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>, what: &str) {
    let a = a.into_data().to_vec::<f32>().expect("f32");
    let b = b.into_data().to_vec::<f32>().expect("f32");
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

fn normal<const D: usize>(shape: [usize; D]) -> Tensor<Ad, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

#[test]
fn conv_matches_burns_forward_and_backward() {
    let dev = Default::default();
    for (n, cin, cout, h, w, k, stride, pad) in [
        (3, 4, 6, 9, 7, 3, 1, 1),
        (2, 5, 3, 8, 8, 3, 2, 1),
        (4, 6, 2, 5, 6, 1, 1, 0),
        (1, 3, 4, 6, 6, 3, 1, 1),
    ] {
        let what = format!("n {n} cin {cin} cout {cout} {h}x{w} k {k} s {stride} p {pad}");
        let conv: Conv2d<Ad> = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(&dev);
        let x = normal([n, cin, h, w]).require_grad();
        let ours = try_conv(&conv, x.clone()).unwrap_or_else(|_| panic!("{what}: not taken"));
        let theirs = conv.forward(x.clone());
        assert_eq!(ours.dims(), theirs.dims(), "{what}");
        close(
            ours.clone().inner(),
            theirs.clone().inner(),
            &format!("{what} y"),
        );
        let dy = normal(theirs.dims());
        let g1 = (ours * dy.clone()).sum().backward();
        let g2 = (theirs * dy).sum().backward();
        close(
            x.grad(&g1).expect("dx"),
            x.grad(&g2).expect("dx"),
            &format!("{what} dx"),
        );
        close(
            conv.weight.grad(&g1).expect("dw"),
            conv.weight.grad(&g2).expect("dw"),
            &format!("{what} dw"),
        );
        let bias = conv.bias.as_ref().expect("bias");
        close(
            bias.grad(&g1).expect("db"),
            bias.grad(&g2).expect("db"),
            &format!("{what} db"),
        );
        // The inner backend (EMA sampling) takes the same path.
        let inner = conv.valid();
        let xi = x.inner();
        let yi = try_conv(&inner, xi.clone()).unwrap_or_else(|_| panic!("{what}: inner"));
        close(yi, inner.forward(xi), &format!("{what} inner y"));
    }
}

#[test]
fn group_norm_matches_burns_forward_and_backward() {
    let dev = Default::default();
    for (n, c, h, w, groups, with_silu) in [
        (3, 8, 5, 4, 4, true),
        (2, 6, 3, 3, 2, false),
        (1, 4, 7, 7, 1, true),
    ] {
        let what = format!("n {n} c {c} {h}x{w} groups {groups} silu {with_silu}");
        let mut norm: GroupNorm<Ad> = GroupNormConfig::new(groups, c).init(&dev);
        // Non-trivial affine parameters (the init is gamma 1, beta 0).
        norm.gamma = norm.gamma.map(|p| p.map(|_| normal([c]).require_grad()));
        norm.beta = norm.beta.map(|p| p.map(|_| normal([c]).require_grad()));
        let x = (normal([n, c, h, w]) * 3.0 + 1.0).require_grad();
        let ours = try_group_norm(&norm, x.clone(), with_silu)
            .unwrap_or_else(|_| panic!("{what}: not taken"));
        let theirs = if with_silu {
            silu(norm.forward(x.clone()))
        } else {
            norm.forward(x.clone())
        };
        close(
            ours.clone().inner(),
            theirs.clone().inner(),
            &format!("{what} y"),
        );
        let dy = normal(theirs.dims());
        let g1 = (ours * dy.clone()).sum().backward();
        let g2 = (theirs * dy).sum().backward();
        close(
            x.grad(&g1).expect("dx"),
            x.grad(&g2).expect("dx"),
            &format!("{what} dx"),
        );
        let (gamma, beta) = (
            norm.gamma.as_ref().expect("gamma"),
            norm.beta.as_ref().expect("beta"),
        );
        close(
            gamma.grad(&g1).expect("dgamma"),
            gamma.grad(&g2).expect("dgamma"),
            &format!("{what} dgamma"),
        );
        close(
            beta.grad(&g1).expect("dbeta"),
            beta.grad(&g2).expect("dbeta"),
            &format!("{what} dbeta"),
        );
    }
}

/// Training dropout on `flex`: each value kept and scaled by `1 / keep`, or
/// zeroed; the share kept is `keep`; the gradient is the mask itself; the
/// same seed gives the same mask (`dropout::tests`: the backend's seed is
/// global, and tests run in parallel). Without autodiff (and at `p = 0`) the
/// host path steps aside, as Burn's `Dropout` is then the identity.
#[test]
fn dropout_masks_scale_and_pass_the_mask_as_gradient() {
    let dev = Default::default();
    let d = DropoutConfig::new(0.25).init();
    let x = normal([4, 8, 16, 16]).require_grad();
    let y =
        try_dropout(&d, x.clone()).unwrap_or_else(|_| panic!("flex training takes the host path"));
    let grads = y.clone().sum().backward();
    let gx = x
        .grad(&grads)
        .expect("x has a gradient")
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let (xs, ys) = (
        x.clone().into_data().to_vec::<f32>().unwrap(),
        y.into_data().to_vec::<f32>().unwrap(),
    );
    let scale = 1.0 / 0.75f32;
    let mut kept = 0usize;
    for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&gx) {
        if g == 0.0 {
            assert_eq!(y, 0.0);
        } else {
            assert!((g - scale).abs() < 1e-6, "gradient {g}");
            assert!(
                (y - x * scale).abs() <= 1e-6 * (1.0 + y.abs()),
                "{y} vs {x}"
            );
            kept += 1;
        }
    }
    let share = kept as f64 / xs.len() as f64;
    assert!((share - 0.75).abs() < 0.02, "kept {share}");
    // No autodiff, or nothing to drop: Burn's own path (the identity).
    assert!(try_dropout(&d, Tensor::<Flex, 2>::zeros([2, 2], &dev)).is_err());
    let none = DropoutConfig::new(0.0).init();
    assert!(try_dropout(&none, x).is_err());
}
