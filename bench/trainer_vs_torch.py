#!/usr/bin/env python3
"""PyTorch twin of fewstep-train's U-Net, trained the same way, for a
side-by-side throughput benchmark (examples/s).

The network is `trainer/src/model.rs` layer for layer (ResNet blocks with
GroupNorm + SiLU, a sinusoidal time embedding through an MLP, self-attention
at the preset's levels and in the middle, dropout, strided-conv downsampling,
nearest upsampling); its parameter count is printed so it can be checked
against `fewstep-train bench`. One training step is what `fewstep-train
bench` times: draw a batch (uniform t, Gaussian noise), forward, the v-loss
weighted SNR + 1 (written as the trainer does, on `x - x_hat`), backward,
global-norm gradient clipping at 1, AdamW (lr 2e-4, no weight decay), and an
EMA update of every parameter.

Also printed: the FLOPs of one training step per example (PyTorch's own
FlopCounterMode over forward + backward; a multiply-add counts 2), and the
share of the machine's FMA peak each path reaches, given `--peak-gflops`.

Only a benchmark dependency: run it through `bench/trainer_vs_torch.sh`,
which installs PyTorch into a virtual environment on demand. Tests and CI
never need it.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GROUP_NORM_EPS = 1e-5
TIME_SCALE = 1000.0


def preset(name, channels=1, height=28, width=28):
    """`ModelConfig::preset` (trainer/src/config.rs)."""
    c = dict(
        channels=channels,
        height=height,
        width=width,
        base=32,
        mult=[1, 2, 4],
        blocks=2,
        attn=[2],
        heads=4,
        groups=8,
        dropout=0.1,
        num_classes=0,
    )
    if name == "tiny":
        c.update(base=8, mult=[1, 2], blocks=1, attn=[1], heads=2, groups=4, dropout=0.0)
    elif name == "small":
        pass
    elif name == "medium":
        c.update(base=64, attn=[1, 2])
    else:
        raise SystemExit(f"unknown preset {name!r} (expected tiny, small or medium)")
    return c


def conv3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1(cin, cout):
    return nn.Conv2d(cin, cout, 1)


class ResBlock(nn.Module):
    def __init__(self, cfg, cin, cout):
        super().__init__()
        g = cfg["groups"]
        self.norm1 = nn.GroupNorm(g, cin, eps=GROUP_NORM_EPS)
        self.conv1 = conv3(cin, cout)
        self.emb = nn.Linear(cfg["base"] * 4, cout)
        self.norm2 = nn.GroupNorm(g, cout, eps=GROUP_NORM_EPS)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.conv2 = conv3(cout, cout)
        self.skip = conv1(cin, cout) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) if self.skip is not None else x) + h


class Attention(nn.Module):
    def __init__(self, cfg, ch):
        super().__init__()
        self.norm = nn.GroupNorm(cfg["groups"], ch, eps=GROUP_NORM_EPS)
        self.q, self.k, self.v, self.proj = (conv1(ch, ch) for _ in range(4))
        self.heads = cfg["heads"]

    def forward(self, x):
        n, c, h, w = x.shape
        heads, l = self.heads, h * w
        d = c // heads
        xn = self.norm(x)
        q = self.q(xn).reshape(n, heads, d, l)
        k = self.k(xn).reshape(n, heads, d, l)
        v = self.v(xn).reshape(n, heads, d, l)
        scores = q.transpose(2, 3) @ k * (1.0 / math.sqrt(d))
        attn = scores.softmax(dim=3)
        out = (v @ attn.transpose(2, 3)).reshape(n, c, h, w)
        return x + self.proj(out)


class LevelBlock(nn.Module):
    def __init__(self, cfg, cin, cout, level):
        super().__init__()
        self.res = ResBlock(cfg, cin, cout)
        self.attn = Attention(cfg, cout) if level in cfg["attn"] else None

    def forward(self, x, emb):
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        base, e = cfg["base"], cfg["base"] * 4
        levels = len(cfg["mult"])
        ch = base
        skips = [ch]
        self.down = nn.ModuleList()
        self.down_convs = nn.ModuleList()
        for level in range(levels):
            out = base * cfg["mult"][level]
            blocks = nn.ModuleList()
            for _ in range(cfg["blocks"]):
                blocks.append(LevelBlock(cfg, ch, out, level))
                ch = out
                skips.append(ch)
            self.down.append(blocks)
            if level + 1 < levels:
                self.down_convs.append(conv3(ch, ch, stride=2))
                skips.append(ch)
        self.mid1 = ResBlock(cfg, ch, ch)
        self.mid_attn = Attention(cfg, ch)
        self.mid2 = ResBlock(cfg, ch, ch)
        self.up = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for level in reversed(range(levels)):
            out = base * cfg["mult"][level]
            blocks = nn.ModuleList()
            for _ in range(cfg["blocks"] + 1):
                blocks.append(LevelBlock(cfg, ch + skips.pop(), out, level))
                ch = out
            self.up.append(blocks)
            if level > 0:
                self.up_convs.append(conv3(ch, ch))
        self.time1 = nn.Linear(base, e)
        self.time2 = nn.Linear(e, e)
        k = cfg["num_classes"]
        self.class_emb = nn.Embedding(k + 1, e) if k > 0 else None
        self.input = conv3(cfg["channels"], base)
        self.out_norm = nn.GroupNorm(cfg["groups"], ch, eps=GROUP_NORM_EPS)
        self.out_conv = conv3(ch, cfg["channels"])
        half = base // 2
        freqs = [math.exp(-math.log(10_000) * i / half) * TIME_SCALE for i in range(half)]
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32)[None, :])

    def forward(self, z, t):
        arg = t[:, None] * self.freqs
        emb = self.time2(F.silu(self.time1(torch.cat([arg.sin(), arg.cos()], 1))))
        if self.class_emb is not None:
            emb = emb + self.class_emb.weight[-1]  # the null label
        emb = F.silu(emb)
        h = self.input(z)
        skips = [h]
        levels = len(self.down)
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level + 1 < levels:
                h = self.down_convs[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], 1), emb)
            if i + 1 < levels:
                h = self.up_convs[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))


def cosine_alpha_sigma(t):
    # The plain cosine schedule. fewstep's `cosine` also clips logSNR to a
    # range (core/src/schedule.rs); the twin clamps t instead. Same cost.
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


class Step:
    """One training step, as `Trainer::step` does it."""

    def __init__(self, model, batch, shape):
        self.model = model
        self.batch = batch
        self.shape = shape
        self.opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, data):
        n = self.batch
        # Drawn where the data lives (the generator is on that device too).
        dev = data.device
        idx = torch.randint(0, data.shape[0], (n,), generator=self.gen, device=dev)
        x = data[idx]
        # t away from 0, where the plain cosine's SNR + 1 has no bound.
        t = torch.rand(n, generator=self.gen, device=dev).clamp(1e-3, 1.0)
        eps = torch.randn(x.shape, generator=self.gen, device=dev)
        alpha, sigma = cosine_alpha_sigma(t)
        a4, s4 = alpha[:, None, None, None], sigma[:, None, None, None]
        z = a4 * x + s4 * eps
        out = self.model(z, t)
        # v-prediction: x_hat = alpha z - sigma out; x - x_hat as the trainer
        # writes it (cx x + ce eps + co out).
        diff = (1 - a4 * a4) * x - a4 * s4 * eps + s4 * out
        w = 1.0 / (sigma * sigma)  # SNR + 1
        loss = (diff.square().mean(dim=(1, 2, 3)) * w).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, list(self.model.parameters()), 1 - 0.999)
        return float(loss.detach())


def flops_per_example(cfg, batch):
    from torch.utils.flop_counter import FlopCounterMode

    model = UNet(cfg)
    shape = (cfg["channels"], cfg["height"], cfg["width"])
    data = torch.rand(batch, *shape) * 2 - 1
    step = Step(model, batch, shape)
    counter = FlopCounterMode(display=False)
    with counter:
        step(data)
    return counter.get_total_flops() / batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of text")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = preset(a.preset)
    shape = (cfg["channels"], cfg["height"], cfg["width"])
    dev = torch.device(a.device)
    model = UNet(cfg).to(dev)
    params = sum(p.numel() for p in model.parameters())
    if a.compile:
        model = torch.compile(model)
    # Stand-in data in [-1, 1]: the step's cost does not depend on the pixels.
    data = (torch.rand(1024, *shape) * 2 - 1).to(dev)
    step = Step(model, a.batch, shape)
    if dev.type == "cuda":
        step.gen = torch.Generator(device=dev).manual_seed(0)
    for _ in range(a.warmup):
        step(data)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(data)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    rate = a.steps * a.batch / secs
    flops = flops_per_example(cfg, min(a.batch, 4))
    row = dict(
        path="pytorch" + ("-compile" if a.compile else "") + "-" + dev.type,
        torch=torch.__version__,
        preset=a.preset,
        params=params,
        batch=a.batch,
        threads=a.threads,
        examples_per_s=rate,
        gflop_per_example=flops / 1e9,
    )
    if a.json:
        print(json.dumps(row))
    else:
        print(
            f"pytorch {torch.__version__} ({row['path']}) preset {a.preset} ({params} parameters) "
            f"batch {a.batch} threads {a.threads}: {rate:.2f} examples/s, "
            f"{flops / 1e9:.3f} GFLOP per example"
        )


if __name__ == "__main__":
    main()
