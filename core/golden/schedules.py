#!/usr/bin/env python3
"""Golden schedule values for core/tests/golden.rs, computed independently of
the Rust code with Python's float64 `math` (straight from MODEL_FORMAT.md).

Run once: python3 core/golden/schedules.py > core/golden/schedules.txt
The values were pasted into core/tests/golden.rs."""
import math

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0
B = math.atan(math.exp(-LOGSNR_MAX / 2))
A = math.atan(math.exp(-LOGSNR_MIN / 2)) - B


def cosine(t):
    return -2.0 * math.log(math.tan(A * t + B))


SCHEDULES = {
    "cosine": cosine,
    "shifted_cosine:0.5": lambda t: cosine(t) + 2 * math.log(0.5),
    "interpolated_cosine:0.25:2": lambda t: cosine(t)
    + 2 * (t * math.log(0.25) + (1 - t) * math.log(2.0)),
}

for name, f in SCHEDULES.items():
    for t in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        l = f(t)
        alpha = math.sqrt(1 / (1 + math.exp(-l)))
        sigma = math.sqrt(1 / (1 + math.exp(l)))
        print(f'("{name}", {t!r}, {l!r}, {alpha!r}, {sigma!r}),')
