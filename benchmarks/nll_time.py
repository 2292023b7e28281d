"""Time of the importance-sampled test NLL (K = 5000, all 1,000 MNIST-10k test images).

Ours: :func:`pyro_gen.evaluate.importance_log_likelihood` (codes of many images and particles
decoded in one batch, chunked to bound memory). Baseline: the usual hand-written loop, one
image at a time with its K particles in batches of 500, torch's Bernoulli ``log_prob``. Both
score the same freshly initialized default model (the time does not depend on the weights);
the baseline is timed on ``--baseline-images`` images and scaled to 1,000, which is stated.

    python benchmarks/nll_time.py
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen.data import binarize_fixed, load_bundled  # noqa: E402
from pyro_gen.evaluate import importance_log_likelihood  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


@torch.no_grad()
def baseline_nll(vae, x, k, batch=500):
    out = []
    for xi in x:
        q = vae.guide_net(xi[None])
        parts = []
        for _ in range(math.ceil(k / batch)):
            z = q.sample((batch,))
            logits = vae.decoder(z)
            ll = torch.distributions.Bernoulli(logits=logits).log_prob(xi.expand_as(logits)).sum((-3, -2, -1))
            parts.append(vae.prior().log_prob(z) + ll - q.log_prob(z))
        out.append(torch.logsumexp(torch.cat(parts)[:k], 0) - math.log(k))
    return -torch.cat(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--baseline-images", type=int, default=100)
    args = parser.parse_args(argv)
    data = load_bundled()
    x = torch.as_tensor(binarize_fixed(data.test_x))
    torch.manual_seed(0)
    vae = ModelSpec(data.image_shape).build().eval()
    start = time.perf_counter()
    importance_log_likelihood(vae, x, k=args.k)
    ours = time.perf_counter() - start
    n = args.baseline_images
    start = time.perf_counter()
    baseline_nll(vae, x[:n], args.k)
    base = (time.perf_counter() - start) * len(x) / n
    print(f"importance-sampled NLL, K={args.k}, {len(x)} test images, default model {ModelSpec(data.image_shape).hidden}"
          f"/{ModelSpec(data.image_shape).latent_dim}")
    print(f"  pyro_gen            {ours:7.1f} s   (target <= 60 s)")
    print(f"  per-image baseline  {base:7.1f} s   (timed on {n} images, scaled x{len(x) / n:g})")


if __name__ == "__main__":
    main()
