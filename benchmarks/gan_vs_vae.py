"""The GAN baseline against the VAE at equal training time on MNIST-10k.

The VAE and two GANs (non-saturating, ``gan``; WGAN-GP, ``wgan-gp``) have the same generator
network (the decoder of one ``ModelSpec``: by default a 32-512-512-784 MLP with leaky ReLU and a
sigmoid output, ``--hidden 512,512``; the VAE's encoder and the GANs' discriminator are the
784-512-512 MLP body) and are trained one after the other in this process for the same wall-clock budget by
``pyro_gen.compare.compare`` (the VAE on dynamically binarized images, the GANs on grey levels),
then scored the same way against the 1,000 test images: domain FID,
precision/recall/density/coverage, the entropy of the predicted classes of 1,000 samples, and
the VAE's test ELBO and NLL. Prints the figures side by side with the targets of
``shared/BENCHMARKS.md``:

- a GAN's domain FID lower than the VAE's (each GAN is compared with the VAE);
- all ten classes generated, class entropy >= 0.95 ln 10 (checked for every model);
- the whole comparison (classifier, training, scoring) within 15 minutes.

    python benchmarks/gan_vs_vae.py                              # 240 s per model (the full run)
    python benchmarks/gan_vs_vae.py --budget-seconds 5 --k 50     # a quick check that it runs
    python benchmarks/gan_vs_vae.py --models vae,wgan-gp --budget-seconds 360

``--threads`` (default 1) sets torch's CPU threads for the whole run, both models alike: on a
shared 2-core machine one thread trained these small networks several times faster than two.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.compare import compare, markdown_table  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-seconds", type=float, default=240.0, help="training time of each model (default 240)")
    p.add_argument("--models", default="vae,gan,wgan-gp", help="comma-separated (default vae,gan,wgan-gp)")
    p.add_argument("--hidden", default="512,512", help="hidden widths of the shared networks, the VAE's and the "
                   "GANs' alike (default 512,512)")
    p.add_argument("--net", default="mlp", choices=["mlp", "conv"])
    p.add_argument("--k", type=int, default=1000, help="importance samples for the VAE's test NLL (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    p.add_argument("--classifier-cache", type=Path, help="domain classifier cache (default: the user cache)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = args.out or Path(tempfile.mkdtemp(prefix="gan_vs_vae-")) / "compare"
    t0 = time.perf_counter()
    spec_kw = dict(net=args.net, hidden=tuple(int(h) for h in args.hidden.split(",")))
    result = compare(models, budget_seconds=args.budget_seconds, out_dir=out, k=args.k, seed=args.seed, spec_kw=spec_kw,
                     classifier_cache=args.classifier_cache, progress=False,
                     log=lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    print(markdown_table(result))
    rows = {r.model: r for r in result.rows}
    ln10 = math.log(result.num_classes)
    print(f"threads {args.threads}; budget {args.budget_seconds:g} s per model; domain classifier test accuracy "
          f"{result.classifier.test_accuracy:.2%}; outputs in {out}\n")
    print(f"{'figure':<42} {'ours':>12} {'baseline':>12}  target")
    vae = rows.get("vae")
    for name in ("gan", "wgan-gp"):
        if name not in rows or vae is None:
            continue
        gan = rows[name]
        print(f"{'domain FID, ' + name + ' (ours) vs vae (baseline)':<42} {gan.fid:>12.2f} {vae.fid:>12.2f}  lower: "
              f"{'met' if gan.fid < vae.fid else 'NOT met'} (ratio {gan.fid / vae.fid:.2f})")
        print(f"{'precision / recall, ' + name + ' vs vae':<42} {gan.precision:>5.2f}/{gan.recall:<6.2f} "
              f"{vae.precision:>5.2f}/{vae.recall:<6.2f}")
        print(f"{'epochs in the budget, ' + name + ' vs vae':<42} {gan.epochs:>12} {vae.epochs:>12}")
    for name, row in rows.items():
        if row.kind == "data":
            continue
        ok = row.class_entropy >= 0.95 * ln10 and row.class_coverage == 1.0
        print(f"{'class entropy / classes, ' + name:<42} {row.class_entropy:>7.3f} {row.class_coverage:>4.0%} "
              f"{'':>12}  >= {0.95 * ln10:.3f} nats, 100%: {'met' if ok else 'NOT met'}")
    data = rows["data (train split)"]
    print(f"{'domain FID of real train images (floor)':<42} {data.fid:>12.2f}")
    print(f"{'wall time of the comparison, s':<42} {wall:>12.0f} {'':>12}  <= 900: "
          f"{'met' if wall <= 900 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
