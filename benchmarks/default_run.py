"""The default ``pyro-gen train`` against a VAE built like Pyro's ``examples/vae/vae.py``.

Both train on the MNIST-10k protocol (9,000 dynamically binarized training images) and are
scored the same way: the mean single-sample ELBO over 10 draws on the 1,000 test images
binarized once with seed 0 (BENCHMARKS.md), and optionally the importance-sampled NLL.

Baseline, as in Pyro's example: 784-400-50 MLPs with softplus, a Bernoulli decoder on
probabilities, ``pyro.module`` registration, ``SVI`` with ``Trace_ELBO`` and ``pyro.optim.Adam``
(lr 1e-3), batch 256, 100 epochs (BENCHMARKS.md measured 88 s and test ELBO -103.1 here).

    python benchmarks/default_run.py                 # both, in this order, in one run
    python benchmarks/default_run.py --nll-k 1000    # also the importance-sampled NLL
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.data import binarize, binarize_fixed, load_bundled  # noqa: E402
from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood  # noqa: E402


class PyroExampleVAE(nn.Module):
    """The design of Pyro's examples/vae/vae.py, written here for the comparison."""

    def __init__(self, z_dim=50, hidden=400):
        super().__init__()
        self.z_dim = z_dim
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.fc3, self.fc4 = nn.Linear(z_dim, hidden), nn.Linear(hidden, 784)
        self.softplus = nn.Softplus()

    def encode(self, x):
        h = self.softplus(self.fc1(x.reshape(-1, 784)))
        return self.fc21(h), torch.exp(self.fc22(h))

    def decode(self, z):
        return torch.sigmoid(self.fc4(self.softplus(self.fc3(z))))

    def model(self, x):
        pyro.module("decoder", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim),
                                                  x.new_ones(x.shape[0], self.z_dim)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(self.decode(z), validate_args=False).to_event(1),
                        obs=x.reshape(-1, 784))

    def guide(self, x):
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))

    # the interface pyro_gen.evaluate needs, so both models are scored by the same code
    def guide_net(self, x):
        loc, scale = self.encode(x)
        return dist.Normal(loc, scale).to_event(1)

    def prior(self):
        return dist.Normal(torch.zeros(self.z_dim), torch.ones(self.z_dim)).to_event(1)

    def decoder(self, z):
        return self.fc4(self.softplus(self.fc3(z))).reshape(z.shape[:-1] + (1, 28, 28))

    @staticmethod
    def likelihood(logits):
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)


def train_baseline(data, epochs: int, seed: int = 0):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    vae = PyroExampleVAE()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=pyro.infer.Trace_ELBO())
    x_all = torch.as_tensor(data.train_x)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), generator=g)
        for i in range(0, len(x_all), 256):
            svi.step(binarize(x_all[perm[i:i + 256]], g))
    return vae, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=100)
    parser.add_argument("--nll-k", type=int, default=0, help="also report the importance-sampled NLL with this K")
    parser.add_argument("--train-args", default="", help="extra flags for pyro-gen train (default: none)")
    args = parser.parse_args(argv)
    data = load_bundled()
    x_test = torch.as_tensor(binarize_fixed(data.test_x, seed=0))

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "pyro_gen", "train", "--out", str(run), "--quiet", *args.train_args.split()]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        ours_wall = time.perf_counter() - start
        from pyro_gen.run import load_run
        ours = load_run(run).vae
        ours_summary = json.loads((run / "summary.json").read_text())

    base, base_train = train_baseline(data, args.baseline_epochs)
    base.eval()
    torch.manual_seed(0)
    rows = [("pyro-gen train (default)", ours_wall, ours_summary["train_seconds"], ours),
            (f"Pyro example design, {args.baseline_epochs} epochs", None, base_train, base)]
    print(f"{'model':<36} {'wall s':>7} {'train s':>8} {'test ELBO':>10}" + (f" {'NLL K=' + str(args.nll_k):>11}" if args.nll_k else ""))
    for name, wall, train_s, model in rows:
        torch.manual_seed(0)
        elbo = elbo_per_datum(model, x_test, num_draws=10).mean().item()
        line = f"{name:<36} {'-' if wall is None else f'{wall:.1f}':>7} {train_s:>8.1f} {elbo:>10.2f}"
        if args.nll_k:
            line += f" {-importance_log_likelihood(model, x_test, k=args.nll_k).mean().item():>11.2f}"
        print(line)
    print("wall s: the whole `pyro-gen train` command (start-up, training, final evaluation, figures); "
          "targets: <= 120 s and test ELBO >= -100")


if __name__ == "__main__":
    main()
