#!/usr/bin/env python3
"""Exports the fixtures of runtime/tests/torch_export.rs: a small diffusion U-Net
from PyTorch (TorchScript and dynamo exports), a fixed input and PyTorch's output.

    /work/venv-torch29/bin/python bench/torch_export/export_unet.py [OUT_DIR | --suite DIR]

OUT_DIR defaults to runtime/tests/data/torch; --suite DIR writes the benchmark suite's
models instead (README.md). Needs torch, numpy, onnx, onnxscript; onnxruntime for --suite.
"""

import argparse
import json
import math
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 16
CH = 32  # channels at 16x16; 2*CH at 8x8
TEMB = 64


def timestep_embedding(t, dim):
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half
    )
    args = (t * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb=TEMB):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels, q/k/v from 1x1 convs."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(n, c, h * w)
        k = self.k(y).reshape(n, c, h * w)
        v = self.v(y).reshape(n, c, h * w)
        att = torch.einsum("nci,ncj->nij", q, k) * (c ** -0.5)
        att = att.softmax(dim=-1)
        out = torch.matmul(v, att.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.temb = nn.Sequential(
            nn.Linear(TEMB, TEMB), nn.SiLU(), nn.Linear(TEMB, TEMB)
        )
        self.conv_in = nn.Conv2d(3, CH, 3, padding=1)
        self.res1 = ResBlock(CH, CH)
        self.down = nn.Conv2d(CH, 2 * CH, 3, stride=2, padding=1)
        self.res2 = ResBlock(2 * CH, 2 * CH)
        self.attn = Attention(2 * CH)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_conv = nn.Conv2d(2 * CH, CH, 3, padding=1)
        self.res4 = ResBlock(2 * CH, CH)
        self.norm_out = nn.GroupNorm(8, CH)
        self.conv_out = nn.Conv2d(CH, 3, 3, padding=1)

    def forward(self, z, t):
        emb = self.temb(timestep_embedding(t, TEMB))
        h1 = self.res1(self.conv_in(z), emb)
        h = self.res2(self.down(h1), emb)
        h = self.up_conv(self.up(self.attn(h)))
        h = self.res4(torch.cat([h, h1], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class SuiteUNet(nn.Module):
    """A U-Net parametrised for the benchmark suite.

    `channels[l]` is the width at level l (resolution `res >> l`); each level
    has `blocks` res blocks on the way down (one skip per level, taken after
    them) and on the way up (the first one takes the skip concat), followed
    by self-attention where the level's resolution is in `attn_res`. Between
    levels: stride-2 3x3 conv down, nearest x2 upsample + 3x3 conv up. The
    lowest level has a middle of two res blocks, each + attention if listed.
    """

    def __init__(self, res, channels, attn_res, blocks, temb=TEMB):
        super().__init__()
        self.temb_dim = temb
        self.temb = nn.Sequential(
            nn.Linear(temb, temb), nn.SiLU(), nn.Linear(temb, temb)
        )
        levels = len(channels)
        attn_at = [(res >> l) in attn_res for l in range(levels)]

        def stage(l, cin, cout, n):
            mods = []
            for b in range(n):
                mods.append(ResBlock(cin if b == 0 else cout, cout, temb))
                mods.append(Attention(cout) if attn_at[l] else nn.Identity())
            return nn.ModuleList(mods)

        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for l, c in enumerate(channels):
            self.down.append(stage(l, c, c, blocks))
            if l + 1 < levels:
                self.downsample.append(
                    nn.Conv2d(c, channels[l + 1], 3, stride=2, padding=1)
                )
        l = levels - 1
        self.mid = stage(l, channels[l], channels[l], 2)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for l in reversed(range(levels)):
            self.up.append(stage(l, 2 * channels[l], channels[l], blocks))
            if l > 0:
                self.upsample.append(
                    nn.Conv2d(channels[l], channels[l - 1], 3, padding=1)
                )
        self.norm_out = nn.GroupNorm(8, channels[0])
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)

    @staticmethod
    def run_stage(mods, h, emb):
        for i in range(0, len(mods), 2):
            h = mods[i + 1](mods[i](h, emb))
        return h

    def forward(self, z, t):
        emb = self.temb(timestep_embedding(t, self.temb_dim))
        h = self.conv_in(z)
        skips = []
        for l, mods in enumerate(self.down):
            h = self.run_stage(mods, h, emb)
            skips.append(h)
            if l < len(self.downsample):
                h = self.downsample[l](h)
        h = self.run_stage(self.mid, h, emb)
        for i, mods in enumerate(self.up):
            h = self.run_stage(mods, torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def op_types(path):
    m = onnx.load(path)
    return sorted({n.op_type for n in m.graph.node})


def self_contained(path):
    """Loads (with any external data) and saves back as one file."""
    m = onnx.load(path, load_external_data=True)
    for f in os.listdir(os.path.dirname(path)):
        if f.startswith(os.path.basename(path) + ".") and f.endswith(".data"):
            os.remove(os.path.join(os.path.dirname(path), f))
    onnx.save(m, path, save_as_external_data=False)
    onnx.checker.check_model(m)


def init_group_norms(net):
    """Non-trivial group-norm affines (PyTorch initialises them to 1 / 0)."""
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.GroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)


def export_torchscript(net, z, t, path):
    torch.onnx.export(
        net,
        (z, t),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["z", "t"],
        output_names=["out"],
        dynamic_axes={"z": {0: "N"}, "t": {0: "N"}, "out": {0: "N"}},
    )
    self_contained(path)


def export_dynamo(net, z, t, path):
    n = torch.export.Dim("N", min=1, max=1024)
    prog = torch.onnx.export(
        net,
        (z, t),
        dynamo=True,
        opset_version=18,
        input_names=["z", "t"],
        output_names=["out"],
        dynamic_shapes={"z": {0: n}, "t": {0: n}},
        optimize=True,
    )
    prog.save(path, external_data=False)
    self_contained(path)


def write_fixtures(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    net = UNet().eval()
    init_group_norms(net)

    g = torch.Generator().manual_seed(SEED + 1)
    z = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0.3, 0.7], dtype=torch.float32)
    with torch.no_grad():
        out = net(z, t)
    np.save(os.path.join(out_dir, "z.npy"), z.numpy().astype("<f4"))
    np.save(os.path.join(out_dir, "t.npy"), t.numpy().astype("<f4"))
    np.save(os.path.join(out_dir, "out.npy"), out.numpy().astype("<f4"))

    ts_path = os.path.join(out_dir, "unet_torchscript.onnx")
    export_torchscript(net, z, t, ts_path)
    dy_path = os.path.join(out_dir, "unet_dynamo.onnx")
    export_dynamo(net, z, t, dy_path)

    for name, path in [("torchscript", ts_path), ("dynamo", dy_path)]:
        print(f"{name}: {os.path.getsize(path)} bytes, ops: {' '.join(op_types(path))}")
    print(f"max |out| = {float(out.abs().max()):.6f}")


# The benchmark suite (issue 16 §2): name -> (network factory, resolution,
# exporter). Each is seeded with SEED + its index.
SUITE = [
    (
        "unet64_attn",
        lambda: SuiteUNet(64, (32, 64, 64, 128), (16, 8), blocks=1),
        64,
        "torchscript",
    ),
    (
        "unet64_phone",
        lambda: SuiteUNet(64, (64, 128, 192, 256), (16, 8), blocks=2),
        64,
        "torchscript",
    ),
    ("unet32_torch_dynamo", UNet, 32, "dynamo"),
]


def count_flops(net, z, t):
    """FLOPs of one forward from the layer shapes seen in it: convs
    2*Cout*Cin/groups*k*k*Ho*Wo, linears 2*in*out per row, attention's two
    matmuls 2*m*k*n each (q.k: HW x C x HW, v.att: C x HW x HW)."""
    total = [0]

    def conv(mod, inp, out):
        kh, kw = mod.kernel_size
        _, co, ho, wo = out.shape
        total[0] += 2 * co * (mod.in_channels // mod.groups) * kh * kw * ho * wo * out.shape[0]

    def linear(mod, inp, out):
        total[0] += 2 * mod.in_features * mod.out_features * inp[0].shape[0]

    def attention(mod, inp, out):
        n, c, h, w = inp[0].shape
        total[0] += n * 2 * (2 * (h * w) * c * (h * w))

    hooks = []
    for mod in net.modules():
        hook = {nn.Conv2d: conv, nn.Linear: linear, Attention: attention}.get(type(mod))
        if hook:
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        net(z, t)
    for h in hooks:
        h.remove()
    return total[0]


def ort_rel_diff(path, z, t, ref):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"z": z.numpy(), "t": t.numpy()})[0]
    ref = ref.numpy()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def write_suite(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    info = {}
    for i, (name, make, res, exporter) in enumerate(SUITE):
        torch.manual_seed(SEED + i)
        net = make().eval()
        init_group_norms(net)
        g = torch.Generator().manual_seed(SEED + 100 + i)
        z = torch.randn(2, 3, res, res, generator=g)
        t = torch.tensor([0.3, 0.7], dtype=torch.float32)
        with torch.no_grad():
            ref = net(z, t)
        path = os.path.join(out_dir, name + ".onnx")
        {"torchscript": export_torchscript, "dynamo": export_dynamo}[exporter](
            net, z, t, path
        )
        diff = ort_rel_diff(path, z, t, ref)
        flops = count_flops(net, z[:1], t[:1])
        info[name] = {
            "exporter": exporter,
            "opset": 17 if exporter == "torchscript" else 18,
            "image": [3, res, res],
            "params": sum(p.numel() for p in net.parameters()),
            "bytes": os.path.getsize(path),
            "gflop_per_forward_batch1": round(flops / 1e9, 3),
            "nodes": len(onnx.load(path).graph.node),
            "op_types": op_types(path),
            "ort_vs_torch_max_rel_diff": diff,
        }
        print(f"{name}: {json.dumps(info[name])}", flush=True)
        if diff > 1e-4:
            raise SystemExit(f"{name}: onnxruntime differs from PyTorch by {diff:.3g}")
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "out_dir",
        nargs="?",
        default=os.path.join(here, "..", "..", "runtime", "tests", "data", "torch"),
        help="where the test fixtures go (default runtime/tests/data/torch)",
    )
    ap.add_argument(
        "--suite",
        metavar="DIR",
        help="write the benchmark suite's models into DIR instead of the fixtures",
    )
    args = ap.parse_args()
    if args.suite:
        write_suite(args.suite)
    else:
        write_fixtures(args.out_dir)


if __name__ == "__main__":
    main()
