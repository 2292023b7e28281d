"""RandomAffine: the identity at zero bounds, exact one-pixel shifts, the bounds of its draws,
shapes and errors; and its place in the semi-supervised VAE (the classification term only)."""
import math

import pyro
import pytest
import torch

from pyro_gen.augment import RandomAffine
from pyro_gen.objectives import make_elbo, training_loss
from pyro_gen.ssvae import build_ssvae
from pyro_gen.vae import ModelSpec


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(5, 1, 7, 9)


def test_zero_bounds_are_the_identity(images):
    assert torch.allclose(RandomAffine(0, 0, 0)(images), images, atol=1e-6)


@pytest.mark.parametrize("axis", ["width", "height"])
def test_a_unit_draw_shifts_by_exactly_translation_pixels(images, axis):
    """u = 1 for one shift and 0 elsewhere moves the image by ``translation`` = 2 whole pixels
    (bilinear resampling at pixel centres is exact), with zeros where nothing is read."""
    warp = RandomAffine(rotation=0, scale=0, translation=2)
    u = torch.zeros(len(images), 4)
    u[:, 2 if axis == "width" else 3] = 1.0
    grid = torch.nn.functional.affine_grid(warp.matrices(u, 7, 9), images.shape, align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, align_corners=False)
    if axis == "width":
        assert torch.allclose(out[..., :, :-2], images[..., :, 2:], atol=1e-6)
        assert out[..., :, -2:].abs().max() == 0
    else:
        assert torch.allclose(out[..., :-2, :], images[..., 2:, :], atol=1e-6)
        assert out[..., -2:, :].abs().max() == 0


def test_draws_stay_within_the_bounds_and_reach_them():
    """From the matrices of 20,000 draws: rotation within ±15 degrees, size 1/sqrt(det) within
    1 ± 0.1, shift within ±3 pixels of a 28-pixel side; the extremes come within 2% of each bound."""
    warp = RandomAffine(rotation=15, scale=0.1, translation=3)
    torch.manual_seed(1)
    m = warp.matrices(torch.rand(20000, 4) * 2 - 1, 28, 28)
    angle = torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0]))
    size = 1 / torch.sqrt(torch.det(m[:, :, :2]))
    shift = m[:, :, 2] * 28 / 2
    for value, low, high in [(angle, -15, 15), (size, 0.9, 1.1), (shift, -3, 3)]:
        assert value.min() >= low - 1e-4 and value.max() <= high + 1e-4
        span = high - low
        assert value.min() < low + 0.02 * span and value.max() > high - 0.02 * span


def test_shapes_and_bad_input():
    warp = RandomAffine()
    x = torch.rand(2, 3, 1, 28, 28)
    assert warp(x).shape == x.shape
    assert warp(x[:0]).shape == (0, 3, 1, 28, 28)
    with pytest.raises(ValueError, match="images"):
        warp(torch.rand(28, 28))
    for kw in ({"rotation": -1}, {"scale": 1.0}, {"translation": -2}):
        with pytest.raises(ValueError, match="RandomAffine"):
            RandomAffine(**kw)


class Flip(torch.nn.Module):
    def forward(self, x):
        return x.flip(-1)


def test_the_ssvae_augments_the_classification_term_only():
    """With a deterministic transform T (a mirror image) the objective changes by exactly
    scale * labelled_weight * aux_weight * sum_l [log q(y|T x) - log q(y|x)]; the ELBO terms
    are untouched (relative tolerance 1e-5)."""
    torch.manual_seed(0)
    m = build_ssvae(ModelSpec((1, 2, 3), latent_dim=2, hidden=(5,), condition_dim=3))
    x = torch.bernoulli(torch.full((6, 1, 2, 3), 0.4))
    y = torch.tensor([0, 2, -1, -1, 1, -1])
    m.labelled_weight, m.aux_weight = 0.5, 1.5  # the data scale N/B = 12/6 comes from the engine
    losses = []
    for augment in (None, Flip()):
        m.augment = augment
        pyro.set_rng_seed(7)
        losses.append(float(12 * training_loss(make_elbo("enum"), m, x, y, num_data=12).detach()))
    known = y >= 0
    with torch.no_grad():
        logq = [torch.log_softmax(m.classifier(v), -1)[torch.arange(3), y[known]].sum()
                for v in (x[known], x[known].flip(-1))]
    expected = -2.0 * 0.5 * 1.5 * float(logq[1] - logq[0])
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert abs(expected) > 1e-3
    assert isinstance(build_ssvae(ModelSpec((1, 28, 28), condition_dim=10), augment=True).augment, RandomAffine)
    assert not math.isnan(losses[1])
