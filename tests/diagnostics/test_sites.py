"""Per-site diagnostics of any pair (diagnostics.sites) against closed forms: the KL of each site of
a two-site model, I(x; z_s) where the guide draws z_s from the data alone, and which sites those
are in a hierarchy."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from _pairs import IndependentSites
from pyro_gen.diagnostics.sites import site_diagnostics, x_only_sites
from pyro_gen.hvae import HVAE


class _LinearGaussian(nn.Module):
    """x ~ N(0, 1) (one dimension); q(z|x) = N(a x, s^2): I(x; z) = log(1 + a^2 / s^2) / 2."""

    def __init__(self, a, s):
        super().__init__()
        self.a, self.s = a, s

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, self.s).to_event(1))


@pytest.mark.parametrize("a, s", [(2.0, 1.0), (0.5, 1.0)])
def test_site_mutual_information_matches_its_closed_form(a, s):
    """On 3000 data the estimate (of the empirical distribution's I, Hoffman & Johnson 2016) is
    within 0.04 nats of log(1 + a^2/s^2) / 2 (its bias and noise at this N are about 0.01)."""
    x = torch.randn(3000, 1, generator=torch.Generator().manual_seed(0))
    lat = site_diagnostics(_LinearGaussian(a, s), x, max_points=3000, num_samples=2)
    expected = 0.5 * math.log(1 + a ** 2 / s ** 2)
    assert lat.sites["z"]["mutual_info"] == pytest.approx(expected, abs=0.04)
    assert lat.mutual_info == lat.sites["z"]["mutual_info"]  # one flat code: the model's I(x; z)


@pytest.mark.parametrize("inference, root", [("bottom-up", "z1"), ("top-down", "z2")])
def test_only_sites_drawn_from_the_data_alone_get_a_mutual_information(inference, root):
    pair = HVAE((1, 4, 4), latent_dims=(3, 2), hidden=(8,), inference=inference)
    x = torch.rand(20, 1, 4, 4).bernoulli()
    assert set(x_only_sites(pair, x)) == {root}
    lat = site_diagnostics(pair, x, num_samples=2)
    assert lat.sites[root]["mutual_info"] is not None and 0 <= lat.sites[root]["mutual_info"] <= math.log(20) + 1e-6
    other = ({"z1", "z2"} - {root}).pop()
    assert lat.sites[other]["mutual_info"] is None and lat.mutual_info is None


def test_per_site_kl_of_a_two_site_model_equals_its_closed_form():
    """KL(q || p) per site from traces (Monte Carlo, 4000 draws) against the closed form of each
    site: within 4 standard errors, and the sites add up to the total."""
    pair = IndependentSites(n=40)
    x = torch.randn(40, 5)
    d = site_diagnostics(pair, x, num_samples=4000, max_points=40)
    for site in ("za", "zb"):
        exact = float(pair.kl(site).mean())
        assert d.sites[site]["kl"] == pytest.approx(exact, abs=0.02 + 0.01 * exact)
    assert d.kl == pytest.approx(d.sites["za"]["kl"] + d.sites["zb"]["kl"], abs=1e-9)
    assert d.sites["za"]["dims"] == 2 and d.sites["zb"]["dims"] == 3


def test_the_per_epoch_hook_finds_the_data_only_sites_once_and_records_their_information(monkeypatch):
    """Which sites are drawn from the data alone is found on the first epoch only; every epoch's row
    has I(x; z_s) per site, the same as a full site_diagnostics on the same data and seed."""
    from pyro_gen.diagnostics import sites as sites_module
    from pyro_gen.diagnostics.sites import pair_epoch_metrics
    pair = HVAE((1, 4, 4), latent_dims=(3, 2), hidden=(8,))
    x = torch.rand(30, 1, 4, 4).bernoulli()
    calls = []
    real = sites_module.x_only_sites
    monkeypatch.setattr(sites_module, "x_only_sites", lambda *a, **k: calls.append(1) or real(*a, **k))
    hook = pair_epoch_metrics(num_samples=2)
    rows = [hook(pair, x) for _ in range(3)]
    assert len(calls) == 1
    expected = site_diagnostics(pair, x, num_samples=2).sites
    for row in rows:
        assert row["mutual_info_sites"]["z2"] is None
        assert row["mutual_info_sites"]["z1"] == pytest.approx(expected["z1"]["mutual_info"], abs=1e-9)


class _HalfCollapsed(nn.Module):
    """q(z|x) = N((x, 0), diag(0.1^2, 1)): unit 0 follows x (activity var(x) = 1), unit 1 is the prior
    for every x (activity exactly 0)."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[:, :1], 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = torch.cat([x, torch.zeros_like(x)], -1)
            pyro.sample("z", dist.Normal(loc, torch.tensor([0.1, 1.0])).to_event(1))


def test_a_collapsed_unit_is_inactive_whatever_the_number_of_draws():
    """Activity is the variance over data of the guide's mean: 0 for a unit whose q is the prior
    (the variance of the average of K = 16 draws would read 1/16 = 0.06, above the 0.01 threshold)."""
    x = torch.randn(400, 1, generator=torch.Generator().manual_seed(0))
    lat = site_diagnostics(_HalfCollapsed(), x, num_samples=16, max_points=400)
    assert lat.sites["z"]["active_units"] == 1 and lat.active_units == 1
    assert lat.sites["z"]["activity"][1] == 0.0
    assert lat.sites["z"]["activity"][0] == pytest.approx(float(x.var()), rel=1e-6)
