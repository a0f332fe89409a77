#!/usr/bin/env python3
"""Exports a small diffusion U-Net from PyTorch to ONNX twice (the TorchScript
exporter and the dynamo exporter) plus a fixed input and PyTorch's output, as
the fixtures of runtime/tests/torch_export.rs.

    /work/venv-torch29/bin/python bench/torch_export/export_unet.py [OUT_DIR]

OUT_DIR defaults to runtime/tests/data/torch. Needs torch (CPU), numpy, onnx
and onnxscript (the dynamo exporter).
"""

import math
import os
import sys

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
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(TEMB, cout)
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


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(here, "..", "..", "runtime", "tests", "data", "torch")
    )
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    net = UNet().eval()
    # Non-trivial group-norm affines (PyTorch initialises them to 1 / 0).
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.GroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)

    g = torch.Generator().manual_seed(SEED + 1)
    z = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0.3, 0.7], dtype=torch.float32)
    with torch.no_grad():
        out = net(z, t)
    np.save(os.path.join(out_dir, "z.npy"), z.numpy().astype("<f4"))
    np.save(os.path.join(out_dir, "t.npy"), t.numpy().astype("<f4"))
    np.save(os.path.join(out_dir, "out.npy"), out.numpy().astype("<f4"))

    ts_path = os.path.join(out_dir, "unet_torchscript.onnx")
    torch.onnx.export(
        net,
        (z, t),
        ts_path,
        dynamo=False,
        opset_version=17,
        input_names=["z", "t"],
        output_names=["out"],
        dynamic_axes={"z": {0: "N"}, "t": {0: "N"}, "out": {0: "N"}},
    )
    self_contained(ts_path)

    dy_path = os.path.join(out_dir, "unet_dynamo.onnx")
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
    prog.save(dy_path, external_data=False)
    self_contained(dy_path)

    for name, path in [("torchscript", ts_path), ("dynamo", dy_path)]:
        print(f"{name}: {os.path.getsize(path)} bytes, ops: {' '.join(op_types(path))}")
    print(f"max |out| = {float(out.abs().max()):.6f}")


if __name__ == "__main__":
    main()
