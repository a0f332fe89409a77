#!/usr/bin/env python3
"""Builds the colour-emoji training set from the npm package
`emoji-datasource-twitter` (Twemoji PNGs, CC-BY 4.0): one sub-folder per
emoji category, so the trainer's PNG-folder loader gives category labels.

Only base emoji (no skin-tone variants, which would make "People & Body"
two thirds of the set) with a Twitter image, and not the five skin-tone
swatches of the "Component" category: 1906 images in 9 classes (v16.0.0).

    python3 scripts/emoji_dataset.py --out data/emoji

The package is installed with npm into --npm-prefix (default
~/.cache/fewstep/npm) if it is not there yet; nothing else is downloaded.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

PACKAGE = "emoji-datasource-twitter"
VERSION = "16.0.0"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/emoji", help="output folder (class sub-folders)")
    ap.add_argument("--npm-prefix", default=os.path.expanduser("~/.cache/fewstep/npm"))
    ap.add_argument("--size", default="64", choices=["16", "20", "32", "64"], help="source PNG size")
    args = ap.parse_args()

    pkg = os.path.join(args.npm_prefix, "node_modules", PACKAGE)
    if not os.path.isfile(os.path.join(pkg, "emoji.json")):
        os.makedirs(args.npm_prefix, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", args.npm_prefix, f"{PACKAGE}@{VERSION}"],
            check=True,
        )
    with open(os.path.join(pkg, "emoji.json"), encoding="utf-8") as f:
        emoji = json.load(f)
    src_dir = os.path.join(pkg, "img", "twitter", args.size)
    categories = sorted({e["category"] for e in emoji if e["category"] != "Component"})
    slug = {c: f"{i}-" + re.sub(r"[^a-z0-9]+", "-", c.lower()).strip("-") for i, c in enumerate(categories)}

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    counts = {c: 0 for c in categories}
    for e in sorted(emoji, key=lambda e: e["sort_order"]):
        if not e.get("has_img_twitter") or e["category"] == "Component":
            continue
        src = os.path.join(src_dir, e["image"])
        if not os.path.isfile(src):
            continue
        dst_dir = os.path.join(args.out, slug[e["category"]])
        os.makedirs(dst_dir, exist_ok=True)
        shutil.copyfile(src, os.path.join(dst_dir, e["image"]))
        counts[e["category"]] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit(f"no images found under {src_dir}")
    for c in categories:
        print(f"{slug[c]:<24} {counts[c]:5d}")
    print(f"{total} images in {len(categories)} classes -> {args.out}")


if __name__ == "__main__":
    main()
