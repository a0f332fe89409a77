//! The U-Net: ResNet blocks (GroupNorm + SiLU), a sinusoidal time embedding
//! through an MLP, an optional class embedding with a null class, self-attention
//! at the configured levels and in the middle, dropout, nearest-neighbour
//! upsampling and strided-conv or average-pool downsampling.
//!
//! `onnx.rs` writes the same graph op for op; a test compares the two.

use crate::config::{Downsample, GROUP_NORM_EPS, ModelConfig};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Linear,
    LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};

/// Diffusion time is multiplied by this before the sinusoidal embedding.
pub const TIME_SCALE: f64 = 1000.0;

/// The frequencies (already multiplied by [`TIME_SCALE`]) of the sinusoidal
/// time embedding of width `dim`: `emb = [sin(t f), cos(t f)]`.
pub fn time_frequencies(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    (0..half)
        .map(|i| {
            let f = (-(10_000f64.ln()) * i as f64 / half as f64).exp();
            (f * TIME_SCALE) as f32
        })
        .collect()
}

/// `GroupNorm` as configured everywhere in the network.
fn group_norm<B: Backend>(groups: usize, channels: usize, device: &B::Device) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(GROUP_NORM_EPS)
        .init(device)
}

fn conv3<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

fn conv1<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [1, 1]).init(device)
}

/// A ResNet block: `x + conv(drop(silu(gn(conv(silu(gn(x))) + emb))))`, with a
/// 1×1 convolution on the skip path when the channel count changes.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub(crate) norm1: GroupNorm<B>,
    pub(crate) conv1: Conv2d<B>,
    pub(crate) emb: Linear<B>,
    pub(crate) norm2: GroupNorm<B>,
    pub(crate) dropout: Dropout,
    pub(crate) conv2: Conv2d<B>,
    pub(crate) skip: Option<Conv2d<B>>,
}

impl<B: Backend> ResBlock<B> {
    fn new(cfg: &ModelConfig, cin: usize, cout: usize, device: &B::Device) -> Self {
        Self {
            norm1: group_norm(cfg.groups, cin, device),
            conv1: conv3(cin, cout, device),
            emb: LinearConfig::new(cfg.emb_channels(), cout).init(device),
            norm2: group_norm(cfg.groups, cout, device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            conv2: conv3(cout, cout, device),
            skip: (cin != cout).then(|| conv1(cin, cout, device)),
        }
    }

    /// `emb` is `silu(embedding)`, `[N, E]`.
    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = conv(&self.conv1, norm_silu(&self.norm1, x.clone()));
        let [n, c] = {
            let d = h.dims();
            [d[0], d[1]]
        };
        let e = self.emb.forward(emb).reshape([n, c, 1, 1]);
        let h = h + e;
        let h = conv(
            &self.conv2,
            dropout(&self.dropout, norm_silu(&self.norm2, h)),
        );
        let skip = match &self.skip {
            Some(c) => conv(c, x),
            None => x,
        };
        skip + h
    }
}

/// Multi-head self-attention over the spatial positions, with a residual.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub(crate) norm: GroupNorm<B>,
    pub(crate) q: Conv2d<B>,
    pub(crate) k: Conv2d<B>,
    pub(crate) v: Conv2d<B>,
    pub(crate) proj: Conv2d<B>,
    pub(crate) heads: usize,
}

impl<B: Backend> Attention<B> {
    fn new(cfg: &ModelConfig, ch: usize, device: &B::Device) -> Self {
        Self {
            norm: group_norm(cfg.groups, ch, device),
            q: conv1(ch, ch, device),
            k: conv1(ch, ch, device),
            v: conv1(ch, ch, device),
            proj: conv1(ch, ch, device),
            heads: cfg.heads,
        }
    }

    /// `x + proj(attention(norm(x)))`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let (heads, l) = (self.heads, h * w);
        let d = c / heads;
        let xn = norm(&self.norm, x.clone());
        let q = conv(&self.q, xn.clone()).reshape([n, heads, d, l]);
        let k = conv(&self.k, xn.clone()).reshape([n, heads, d, l]);
        let v = conv(&self.v, xn).reshape([n, heads, d, l]);
        // scores[i, j] = q_i . k_j / sqrt(d)
        let scores = q.swap_dims(2, 3).matmul(k) * (1.0 / (d as f64).sqrt());
        let attn = softmax(scores, 3);
        // out[:, i] = sum_j v[:, j] attn[i, j]
        let out = v.matmul(attn.swap_dims(2, 3)).reshape([n, c, h, w]);
        x + conv(&self.proj, out)
    }
}

/// One block of a level: a ResNet block, optionally followed by attention.
#[derive(Module, Debug)]
pub struct LevelBlock<B: Backend> {
    pub(crate) res: ResBlock<B>,
    pub(crate) attn: Option<Attention<B>>,
}

impl<B: Backend> LevelBlock<B> {
    fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let x = self.res.forward(x, emb);
        match &self.attn {
            Some(a) => a.forward(x),
            None => x,
        }
    }
}

/// The U-Net.
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    pub(crate) time1: Linear<B>,
    pub(crate) time2: Linear<B>,
    pub(crate) class_emb: Option<Embedding<B>>,
    pub(crate) input: Conv2d<B>,
    /// Down path: per level, its blocks.
    pub(crate) down: Vec<Vec<LevelBlock<B>>>,
    /// Strided convolutions between levels (empty with average pooling).
    pub(crate) down_convs: Vec<Conv2d<B>>,
    pub(crate) mid1: ResBlock<B>,
    pub(crate) mid_attn: Attention<B>,
    pub(crate) mid2: ResBlock<B>,
    /// Up path, from the lowest level: per level, its blocks.
    pub(crate) up: Vec<Vec<LevelBlock<B>>>,
    /// Convolutions after each nearest-neighbour upsampling (lowest first).
    pub(crate) up_convs: Vec<Conv2d<B>>,
    pub(crate) out_norm: GroupNorm<B>,
    pub(crate) out_conv: Conv2d<B>,
    pub(crate) emb_dim: usize,
    pub(crate) avg_pool: bool,
}

impl<B: Backend> UNet<B> {
    /// A freshly initialised network (Burn's initialisers; seed the backend
    /// first for a reproducible init).
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let levels = cfg.channel_mult.len();
        let e = cfg.emb_channels();
        let base = cfg.base_channels;
        let mut ch = base;
        let mut skip_channels = vec![ch];
        let mut down = Vec::new();
        let mut down_convs = Vec::new();
        for level in 0..levels {
            let out = cfg.level_channels(level);
            let mut blocks = Vec::new();
            for _ in 0..cfg.blocks_per_level {
                blocks.push(LevelBlock {
                    res: ResBlock::new(cfg, ch, out, device),
                    attn: cfg
                        .attention_levels
                        .contains(&level)
                        .then(|| Attention::new(cfg, out, device)),
                });
                ch = out;
                skip_channels.push(ch);
            }
            down.push(blocks);
            if level + 1 < levels {
                if cfg.downsample == Downsample::Conv {
                    down_convs.push(
                        Conv2dConfig::new([ch, ch], [3, 3])
                            .with_stride([2, 2])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device),
                    );
                }
                skip_channels.push(ch);
            }
        }
        let mid1 = ResBlock::new(cfg, ch, ch, device);
        let mid_attn = Attention::new(cfg, ch, device);
        let mid2 = ResBlock::new(cfg, ch, ch, device);
        let mut up = Vec::new();
        let mut up_convs = Vec::new();
        for level in (0..levels).rev() {
            let out = cfg.level_channels(level);
            let mut blocks = Vec::new();
            for _ in 0..=cfg.blocks_per_level {
                let skip = skip_channels.pop().unwrap_or(0);
                blocks.push(LevelBlock {
                    res: ResBlock::new(cfg, ch + skip, out, device),
                    attn: cfg
                        .attention_levels
                        .contains(&level)
                        .then(|| Attention::new(cfg, out, device)),
                });
                ch = out;
            }
            up.push(blocks);
            if level > 0 {
                up_convs.push(conv3(ch, ch, device));
            }
        }
        let model = Self {
            time1: LinearConfig::new(base, e).init(device),
            time2: LinearConfig::new(e, e).init(device),
            class_emb: (cfg.num_classes > 0)
                .then(|| EmbeddingConfig::new(cfg.num_classes + 1, e).init(device)),
            input: conv3(cfg.channels, base, device),
            down,
            down_convs,
            mid1,
            mid_attn,
            mid2,
            up,
            up_convs,
            out_norm: group_norm(cfg.groups, ch, device),
            out_conv: conv3(ch, cfg.channels, device),
            emb_dim: base,
            avg_pool: cfg.downsample == Downsample::AvgPool,
        };
        // Burn initialises parameters lazily; draw them now, so the weights
        // depend only on the backend seed set before this call.
        model.visit(&mut Materialize);
        model
    }

    /// Number of classes of the class embedding (0 = unconditional).
    pub fn num_classes(&self) -> usize {
        self.class_emb
            .as_ref()
            .map(|e| e.weight.dims()[0] - 1)
            .unwrap_or(0)
    }

    /// `silu(MLP(sinusoidal(t)) + class_emb(label))`, `[N, E]`.
    fn embedding(&self, t: Tensor<B, 1>, label: Option<Tensor<B, 1, Int>>) -> Tensor<B, 2> {
        let [n] = t.dims();
        let device = t.device();
        let freqs = time_frequencies(self.emb_dim);
        let half = freqs.len();
        let freqs = Tensor::<B, 2>::from_data(TensorData::new(freqs, [1, half]), &device);
        let arg = t.reshape([n, 1]) * freqs;
        let sincos = Tensor::cat(vec![arg.clone().sin(), arg.cos()], 1);
        let mut emb = self.time2.forward(silu(self.time1.forward(sincos)));
        if let Some(class_emb) = &self.class_emb {
            let k = class_emb.weight.dims()[0] - 1;
            // No label given: every example gets the null label.
            let label = label.unwrap_or_else(|| {
                Tensor::<B, 1, Int>::from_data(TensorData::new(vec![k as i64; n], [n]), &device)
            });
            emb = emb + class_emb.weight.val().select(0, label);
        }
        silu(emb)
    }

    fn downsample(&self, x: Tensor<B, 4>, level: usize) -> Tensor<B, 4> {
        if self.avg_pool {
            avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
        } else {
            conv(&self.down_convs[level], x)
        }
    }

    /// The network output (`v` or `x`, per the config) for noisy images `z`
    /// `[N, C, H, W]` at times `t` `[N]`, with class labels `[N]` (index
    /// `num_classes` is the null label) when class-conditional.
    pub fn forward(
        &self,
        z: Tensor<B, 4>,
        t: Tensor<B, 1>,
        label: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 4> {
        let emb = self.embedding(t, label);
        let mut h = conv(&self.input, z);
        let mut skips = vec![h.clone()];
        let levels = self.down.len();
        for (level, blocks) in self.down.iter().enumerate() {
            for block in blocks {
                h = block.forward(h, emb.clone());
                skips.push(h.clone());
            }
            if level + 1 < levels {
                h = self.downsample(h, level);
                skips.push(h.clone());
            }
        }
        h = self.mid1.forward(h, emb.clone());
        h = self.mid_attn.forward(h);
        h = self.mid2.forward(h, emb.clone());
        for (i, blocks) in self.up.iter().enumerate() {
            for block in blocks {
                let skip = skips
                    .pop()
                    .expect("one skip per up block (by construction)");
                h = block.forward(Tensor::cat(vec![h, skip], 1), emb.clone());
            }
            if i + 1 < levels {
                h = conv(&self.up_convs[i], upsample_nearest2(h));
            }
        }
        conv(&self.out_conv, norm_silu(&self.out_norm, h))
    }
}

/// A convolution with the configured stride and padding.
///
/// On Burn's `flex` CPU backend it runs our own im2col + gemm kernels and
/// autodiff node ([`crate::network::host_ops`]): Burn's generic convolution
/// gradients were half of a training step there. On ndarray it is lowered
/// to im2col + matmul in Burn's tensor ops: ndarray computes the direct
/// convolution's gradients with scalar loops that are orders of magnitude
/// slower. CUDA and LibTorch run their own convolution. `tests/backends.rs`
/// checks that the paths give the same network and gradients.
pub fn conv<B: Backend>(c: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = match crate::network::host_ops::try_conv(c, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    if B::name(&x.device()).contains("ndarray") {
        conv_im2col(c, x)
    } else {
        c.forward(x)
    }
}

/// [`conv`] as im2col + matmul. Same result as `Conv2d::forward` for the
/// network's convolutions (3×3 with padding 1 and stride 1 or 2, or 1×1):
/// stride 2 is the stride-1 result at even positions (exactly what a
/// stride-2, padding-1 convolution computes).
pub fn conv_im2col<B: Backend>(c: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, cin, h, w] = x.dims();
    let [cout, _, kh, kw] = c.weight.dims();
    let k = cin * kh * kw;
    let cols = if kh == 1 && kw == 1 {
        x.reshape([n, cin, h * w])
    } else {
        let (ph, pw) = (kh / 2, kw / 2);
        let xp = x.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0));
        let mut shifts = Vec::with_capacity(kh * kw);
        for dy in 0..kh {
            for dx in 0..kw {
                shifts.push(
                    xp.clone()
                        .slice([0..n, 0..cin, dy..dy + h, dx..dx + w])
                        .reshape([n, cin, 1, h * w]),
                );
            }
        }
        Tensor::cat(shifts, 2).reshape([n, k, h * w])
    };
    let weight = c.weight.val().reshape([1, cout, k]).expand([n, cout, k]);
    let mut y = weight.matmul(cols).reshape([n, cout, h, w]);
    if let Some(b) = &c.bias {
        y = y + b.val().reshape([1, cout, 1, 1]);
    }
    if c.stride == [2, 2] {
        let (h2, w2) = (h / 2, w / 2);
        y = y
            .reshape([n, cout, h2, 2, w2, 2])
            .slice([0..n, 0..cout, 0..h2, 0..1, 0..w2, 0..1])
            .reshape([n, cout, h2, w2]);
    }
    y
}

/// `dropout(x)`: a host mask on `flex` ([`crate::network::host_ops`]),
/// Burn's `Dropout` elsewhere.
pub fn dropout<B: Backend, const D: usize>(d: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    match crate::network::host_ops::try_dropout(d, x) {
        Ok(y) => y,
        Err(x) => d.forward(x),
    }
}

/// `silu(norm(x))`: one fused op on `flex` ([`crate::network::host_ops`]), Burn's
/// composed GroupNorm and SiLU elsewhere.
pub fn norm_silu<B: Backend>(n: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match crate::network::host_ops::try_group_norm(n, x, true) {
        Ok(y) => y,
        Err(x) => silu(n.forward(x)),
    }
}

/// `norm(x)`, fused on `flex` like [`norm_silu`].
pub fn norm<B: Backend>(n: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match crate::network::host_ops::try_group_norm(n, x, false) {
        Ok(y) => y,
        Err(x) => n.forward(x),
    }
}

/// Touches every parameter (forces Burn's lazy initialisation).
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Nearest-neighbour upsampling by 2 (each pixel becomes a 2×2 block).
pub fn upsample_nearest2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([n, c, 2 * h, 2 * w])
}

/// Number of scalar parameters.
pub fn num_params<B: Backend, M: Module<B>>(model: &M) -> usize {
    model.num_params()
}
