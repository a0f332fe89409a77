#!/usr/bin/env python3
"""aDDIM vs DDIM on data whose denoiser is exact: per-pixel Gaussian x ~ N(0, s2).

A check of the sampler *equations* (MODEL_FORMAT.md, "Sampling") apart from
any trained network: with the exact posterior mean x_hat = E[x | z_t] and the
exact xvar = Var[x | z_t], n steps of DDIM or aDDIM on the uniform grid
(cosine schedule) from z_1 ~ N(0, I), and the variance of the result against
the data's s2. DDIM loses variance at few steps (x_hat is a mean); aDDIM adds
it back along eps_hat, and here it adds too much at 2..64 steps.

    python3 bench/quality/addim_gaussian.py
"""

import numpy as np

S2 = 0.3  # data variance per pixel
D = 784  # pixels per image
N = 2000  # images


# The cosine schedule of fewstep-core: logsnr(t) = -2 ln tan(A t + B), spanning
# [-15, 15] over t in [0, 1].
B = np.arctan(np.exp(-7.5))
A = np.arctan(np.exp(7.5)) - B


def alpha_sigma(t):
    logsnr = -2.0 * np.log(np.tan(A * t + B))
    return np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))


def sample(n, sampler, eta, rng):
    z = rng.standard_normal((N, D))
    for k in range(n, 0, -1):
        a_t, s_t = alpha_sigma(k / n)
        a_s, s_s = alpha_sigma((k - 1) / n)
        x_hat = a_t * S2 * z / (a_t**2 * S2 + s_t**2)  # E[x | z_t]
        xvar = eta * S2 * s_t**2 / (a_t**2 * S2 + s_t**2)  # eta * Var[x | z_t]
        eps_hat = (z - a_t * x_hat) / s_t
        if sampler == "ddim":
            z = a_s * x_hat + s_s * eps_hat
        else:
            zvar = (a_s - a_t * s_s / s_t) ** 2 * xvar
            norm2 = (eps_hat**2).sum(axis=1, keepdims=True)
            z = a_s * x_hat + np.sqrt(s_s**2 + D / norm2 * zvar) * eps_hat
    return z.var()


def main():
    rng = np.random.default_rng(0)
    print(f"data variance {S2}; variance of {N} samples of {D} pixels:")
    print("steps     DDIM  aDDIM(eta=1)  aDDIM(eta=0.75)  aDDIM(eta=0.1)")
    for n in [1, 2, 4, 8, 16, 64, 512]:
        row = [sample(n, "ddim", 0, rng)]
        row += [sample(n, "addim", eta, rng) for eta in (1.0, 0.75, 0.1)]
        print(f"{n:5d}  " + "  ".join(f"{v:12.4f}" for v in row))


if __name__ == "__main__":
    main()
