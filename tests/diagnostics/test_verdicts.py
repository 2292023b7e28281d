"""Verdicts that discriminate, and the estimators behind them checked against closed forms:
I(x; z) and the aggregate posterior's KL by quadrature, the SNR floor of pure noise, the decoder
dependence of a decoder that ignores z, and the verdict rules on histories made to order."""
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from pyro_gen.diagnostics import elbo_surgery
from pyro_gen.diagnostics.sites import decoder_dependence
from pyro_gen.diagnostics.verdicts import (THRESHOLDS, _data_shift, _gap, _training, khat_threshold, make_verdicts,
                                           snr_floor, summary_line)
from pyro_gen.vae import ModelSpec


def _quadrature_mi_and_marginal_kl(locs, scale, prior_scale):
    """I_q(x; z) and KL(q(z) || p(z)) of N equally weighted 1-D Normals N(loc_n, scale^2) against
    N(0, prior_scale^2), by quadrature on a fine grid."""
    z = np.linspace(-30, 30, 600001)
    dz = z[1] - z[0]
    comp = np.exp(-0.5 * ((z[None] - locs[:, None]) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))
    agg = comp.mean(0)
    prior = np.exp(-0.5 * (z / prior_scale) ** 2) / (prior_scale * math.sqrt(2 * math.pi))
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.mean([np.nansum(c * (np.log(c) - np.log(agg))) * dz for c in comp])
        mkl = np.nansum(agg * (np.log(agg) - np.log(prior))) * dz
    return float(mi), float(mkl)


@pytest.mark.parametrize("sep", [0.7, 1.5])
def test_elbo_surgery_against_quadrature_away_from_the_boundaries(sep):
    """Two data whose posteriors overlap partly (I strictly between 0 and log 2): the Monte Carlo
    I(x; z) and marginal KL of elbo_surgery match quadrature within 0.01 nats (40000 draws)."""
    locs, scale, prior_scale = np.array([-sep, sep]), 0.8, 1.3
    mi, mkl = _quadrature_mi_and_marginal_kl(locs, scale, prior_scale)
    assert 0.05 < mi < math.log(2) - 0.05  # away from both boundary cases
    q = dist.Normal(torch.tensor(locs, dtype=torch.float64)[:, None], torch.full((2, 1), scale, dtype=torch.float64)
                    ).to_event(1)
    prior = dist.Normal(torch.zeros(1, dtype=torch.float64), prior_scale).to_event(1)
    torch.manual_seed(0)
    _, mi_mc, mkl_mc = elbo_surgery(q, prior, num_samples=40000)
    assert mi_mc == pytest.approx(mi, abs=0.01)
    assert mkl_mc == pytest.approx(mkl, abs=0.01)


def test_snr_floor_is_what_pure_noise_reads():
    """Gradients of mean zero: the median over 4000 parameters of |mean| / sd over R = 100 draws is
    sqrt(2/pi)/sqrt(R) x the median of |N(0,1)| / sqrt(2/pi) ... i.e. the floor up to 20%."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(100, 4000))
    snr = np.abs(g.mean(0)) / g.std(0, ddof=1)
    assert np.mean(snr) == pytest.approx(snr_floor(100), rel=0.05)
    assert snr_floor(100) == pytest.approx(0.0798, abs=1e-4)


def test_khat_threshold_of_vehtari_et_al():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(5000) == 0.7 and khat_threshold(10 ** 6) == 0.7


def test_a_decoder_that_ignores_z_is_caught_and_one_that_uses_it_is_not():
    vae = ModelSpec((1, 6, 5), latent_dim=3, hidden=(16,)).build().eval()
    x = torch.rand(50, 1, 6, 5).bernoulli()
    with torch.no_grad():
        vae.decoder.net[0].weight.mul_(20)  # a decoder that depends strongly on z
    uses = decoder_dependence(vae, x)
    with torch.no_grad():
        vae.decoder.net[0].weight.zero_()  # now z cannot reach the pixels
    ignores = decoder_dependence(vae, x)
    assert ignores["difference"] == pytest.approx(0.0, abs=1e-4)
    assert uses["difference"] > 1.0


def _rows(val, train=None):
    train = train if train is not None else [v + 3 for v in val]
    return [{"epoch": i + 1, "val_elbo": v, "train_elbo": t} for i, (v, t) in enumerate(zip(val, train))]


def test_one_epoch_is_a_warning_not_a_pass():
    (v,) = _training(_rows([-150.0]))
    assert v.status == "warning" and "1 epoch" in v.value


def test_a_rising_held_out_elbo_says_train_longer_and_a_flat_noisy_one_does_not():
    rng = np.random.default_rng(0)
    rising = list(-120 + np.arange(30) * 0.5 + rng.normal(0, 0.1, 30))
    flat = list(-100 + rng.normal(0, 0.5, 30))
    progress = {v.check: v for v in _training(_rows(rising))}["Training progress"]
    assert progress.status == "warning"
    verdicts = {v.check: v for v in _training(_rows(flat))}
    assert verdicts["Training progress"].status == "ok" and verdicts["Overfitting"].status == "ok"


def test_a_wide_train_held_out_gap_is_overfitting_and_never_also_train_longer():
    val = list(-110 + np.arange(40) * 0.2)  # still rising
    train = [v + 46 for v in val]           # but 46 nats above the held-out ELBO
    verdicts = {v.check: v for v in _training(_rows(val, train))}
    assert verdicts["Overfitting"].status == "warning" and "46.00" in verdicts["Overfitting"].value
    assert verdicts["Training progress"].status == "note"  # not "train longer"


def test_a_falling_held_out_elbo_is_overfitting():
    val = list(-110 + np.arange(20) * 0.5) + list(-100.5 - np.arange(1, 21) * 0.3)
    verdicts = {v.check: v for v in _training(_rows(val))}
    assert verdicts["Overfitting"].status == "warning" and verdicts["Training progress"].status == "ok"


def test_amortization_gap_is_graded():
    def gap(am, ap):
        return {"log_px": -90.0, "amortization_gap": am, "approximation_gap": ap, "amortization_gap_stderr": 0.1,
                "num_data": 50}
    assert _gap(gap(3.0, 2.5))[0].status == "note"       # a healthy run
    assert _gap(gap(0.5, 2.5))[0].status == "ok"
    assert _gap(gap(20.0, 5.0))[0].status == "warning"
    assert _gap(gap(164.0, 5.0))[0].status == "problem"  # scales x4


def test_data_shift_verdict():
    same = {"same_data": True, "reference_elbo": -99.7, "elbo": -99.9, "drop": 0.2, "pixel_mean_run": 0.13,
            "pixel_mean_data": 0.13}
    other = dict(same, same_data=False, elbo=-640.0, drop=540.3, pixel_mean_data=0.87)
    assert _data_shift(same)[0].status == "ok"
    shifted = _data_shift(other)[0]
    assert shifted.status == "warning" and "0.870" in shifted.value


def test_summary_counts_not_assessed_and_no_negative_zero():
    d = {"latent": {"activity": [0.5, 0.5], "active_units": 2, "active_threshold": 0.01, "kl": 5.0, "collapse": False,
                    "min_kl": 1.0, "min_active_units": 1, "mutual_info": None},
         "notes": {"importance": "no density", "gradients": "not measured"}, "iwae": None, "gap": {"note": "n/a"},
         "settings": {"grad_repeats": 100}, "decoder": {"rec_guide": -70.0, "rec_prior": -70.001, "difference": -0.001}}
    flat = list(-100.0 + 0.0001 * np.arange(10))
    verdicts = make_verdicts(d, _rows(flat), {"train": {"beta": 1.0}})
    line = summary_line(verdicts)
    assert "not assessed" in line and "problem" in line
    assert not any("-0.00" in v.value for v in verdicts)


def test_collapse_advice_names_beta():
    d = {"latent": {"activity": [0.0, 0.0], "active_units": 0, "active_threshold": 0.01, "kl": 0.01, "collapse": True,
                    "min_kl": 1.0, "min_active_units": 1, "mutual_info": None},
         "notes": {"importance": "-", "gradients": "-"}, "iwae": None, "gap": {"note": "-"}, "settings": {}}
    collapse = {v.check: v for v in make_verdicts(d, [], {"train": {"beta": 30.0}})}["Posterior collapse"]
    assert collapse.status == "problem" and "beta = 30" in collapse.advice and "--beta" in collapse.advice
    assert THRESHOLDS["decoder_uses_z"] == 1.0


def test_compare_puts_a_caveat_next_to_the_precision_of_a_one_image_generator():
    """Samples that are one image (repeated) sit inside the data manifold: precision and density
    are high, recall 0; the quality carries a caveat and a diversity near 0. Real data against real
    data carries none."""
    from pyro_gen.metrics import Embedding, sample_quality_from_embeddings
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 8))
    reference = Embedding(features=real[:200], labels=rng.integers(0, 10, 200))
    data = sample_quality_from_embeddings(Embedding(features=real[200:], labels=rng.integers(0, 10, 200)), reference,
                                          10)
    one = sample_quality_from_embeddings(Embedding(features=np.repeat(real[:1] * 0.1, 200, 0),
                                                   labels=np.zeros(200, dtype=int)), reference, 10)
    assert data.caveats == [] and 0.8 < data.diversity < 1.2
    assert one.precision == 1.0 and one.recall < 0.05 and one.diversity < 1e-6
    assert len(one.caveats) == 2 and "near-duplicates" in one.caveats[1]
