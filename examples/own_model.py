"""Your own model/guide pair through pyro_gen: a two-layer hierarchical VAE written in Pyro's
tutorial style (``pyro.module``, a plate named "data", ``.to_event(1)``; no pyro_gen class or
attribute), trained, evaluated and diagnosed by pyro_gen like a built-in model.

    python examples/own_model.py            # 10 epochs on MNIST-10k (about a minute on 2 cores)

The same pair from the command line (its module must be importable, hence PYTHONPATH):

    PYTHONPATH=examples pyro-gen train --model module:own_model:TwoLayerVAE --out runs/own
    pyro-gen evaluate runs/own && pyro-gen diagnose runs/own && pyro-gen sample runs/own -o own.png

See docs/own_model.rst for the contract.
"""
import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def mlp(*sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class TwoLayerVAE(nn.Module):
    """p(z2) p(z1 | z2) p(x | z1) with q(z1 | x) q(z2 | z1), every conditional a diagonal Normal
    (Bernoulli pixels). ``latent_dim`` and ``hidden`` are filled in from the command line's
    --latent-dim and --hidden when pyro-gen builds it."""

    def __init__(self, latent_dim=32, hidden=(400,)):
        super().__init__()
        h, d1, d2 = hidden[0], 2 * latent_dim, latent_dim
        self.d2 = d2
        self.q_z1 = mlp(784, h, 2 * d1)       # x -> (loc, raw scale) of z1
        self.q_z2 = mlp(d1, h // 2, 2 * d2)   # z1 -> z2
        self.p_z1 = mlp(d2, h // 2, 2 * d1)   # z2 -> z1
        self.p_x = mlp(d1, h, 784)            # z1 -> pixel logits

    @staticmethod
    def normal(out):
        loc, raw = out.chunk(2, -1)
        return dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1)

    def model(self, x):
        pyro.module("decoder", self)
        x = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0], self.d2), 1.0).to_event(1))
            z1 = pyro.sample("z1", self.normal(self.p_z1(z2)))
            pyro.sample("x", dist.Bernoulli(logits=self.p_x(z1)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self)
        x = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", self.normal(self.q_z1(x)))
            pyro.sample("z2", self.normal(self.q_z2(z1)))

    @torch.no_grad()
    def sample(self, n, generator=None):
        """Optional: what ``pyro-gen sample`` draws (mean images of the top-down chain)."""
        z2 = torch.randn(n, self.d2, generator=generator)
        z1 = self.normal(self.p_z1(z2)).base_dist.loc
        return torch.sigmoid(self.p_x(z1)).reshape(n, 1, 28, 28)


def main(epochs: int = 10) -> None:
    from pyro_gen.data import binarize_fixed, load_bundled
    from pyro_gen.diagnostics.sites import site_diagnostics
    from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood
    from pyro_gen.train import TrainSettings, fit

    data = load_bundled()
    torch.manual_seed(0)
    vae = TwoLayerVAE()
    # the trace ELBO: the guide is hierarchical, so the closed-form KL of the meanfield ELBO does not apply
    fit(vae, data.train_x, TrainSettings(epochs=epochs, elbo="trace"), binarize=True)
    x_test = torch.as_tensor(binarize_fixed(data.test_x))
    print(f"test ELBO {elbo_per_datum(vae, x_test).mean():.2f} nats, "
          f"test NLL {-importance_log_likelihood(vae, x_test, k=1000).mean():.2f} nats (K=1000, from traces)")
    d = site_diagnostics(vae, x_test)
    for site, s in d.sites.items():
        print(f"site {site}: KL {s['kl']:.2f} nats, {s['active_units']} of {s['dims']} units active")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train your own Pyro pair with pyro_gen")
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
