#!/usr/bin/env python3
"""Makes the README's editing picture with the `fewstep` CLI: ten
Fashion-MNIST test images (one per class), their right halves regenerated
(inpainting, 4 steps), and img2img at strength 0.5 (2 of the 4 steps) and
0.75 (3 steps), each asked for the image's own class.

    python3 scripts/editing_pictures.py [FEWSTEP_BIN] [MODEL] [OUT.png]

Needs numpy and Debian's dataset-fashion-mnist; writes the PNG itself
(zlib), 3x upscaled.
"""
import gzip, os, struct, subprocess, sys, tempfile, zlib

import numpy as np

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fewstep = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/fewstep")
model = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "examples/models/fmnist-cd4.onnx")
out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(root, "docs/editing.png")
data = "/usr/share/datasets/fashion-mnist"

imgs = np.frombuffer(gzip.open(f"{data}/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
labs = np.frombuffer(gzip.open(f"{data}/t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
pick = [int(np.nonzero(labs == c)[0][0]) for c in range(10)]  # first test image of each class
x = (imgs[pick].astype(np.float32) / 255 * 2 - 1)[:, None]  # [10,1,28,28] in [-1, 1]
labels = ",".join(str(int(labs[i])) for i in pick)

def run(tmp, name, extra):
    path = os.path.join(tmp, name + ".npy")
    subprocess.run([fewstep, "generate", "--model", model, "--init", init, "--batch", "10",
                    "--label", labels, "--seed", "1", "-q", "--out", path] + extra, check=True)
    return np.load(path)[:, 0]

with tempfile.TemporaryDirectory() as tmp:
    init = os.path.join(tmp, "init.npy")
    np.save(init, x)
    mask = os.path.join(tmp, "mask.npy")
    m = np.zeros((28, 28), np.float32)
    m[:, 14:] = 1
    np.save(mask, m)
    inpaint = run(tmp, "inpaint", ["--mask", mask])
    i2i_50 = run(tmp, "i2i50", ["--strength", "0.5"])
    i2i_75 = run(tmp, "i2i75", ["--strength", "0.75"])

masked = x[:, 0].copy()
masked[:, :, 14:] = 0.0  # the region to regenerate, shown grey
rows = [x[:, 0], masked, inpaint, i2i_50, i2i_75]
gap, s = 2, 28
grid = np.full((len(rows) * (s + gap) + gap, 10 * (s + gap) + gap), 160, np.uint8)
for r, row in enumerate(rows):
    for c in range(10):
        px = np.clip(np.round((row[c] + 1) / 2 * 255), 0, 255).astype(np.uint8)
        grid[gap + r * (s + gap):gap + r * (s + gap) + s, gap + c * (s + gap):gap + c * (s + gap) + s] = px
grid = np.kron(grid, np.ones((3, 3), np.uint8))

def png(path, a):
    h, w = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

png(out, grid)
print(f"wrote {out}: rows = test image, masked, inpainted (4 steps), img2img 0.5 (2 steps), img2img 0.75 (3 steps)")
