"""The conditional VAE: conditioned networks, the conditional ELBO and importance-sampled
log p(x | y) against a conditional linear-Gaussian model, class-conditional samples recognized by a
classifier trained on real MNIST, and the CLI (--model cvae, sample --label).

Conditional pPCA: z ~ N(0, I_d), x | z, y ~ N(W z + b + B e_y, s^2 I) has
p(x | y) = N(b + B e_y, W W^T + s^2 I) and posterior N(M^-1 W^T (x - b - B e_y), s^2 M^-1).
"""
import json

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.cli import main
from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood
from pyro_gen.likelihoods import Gaussian
from pyro_gen.nets import ConditionedDecoder, ConditionedEncoder, condition_vector, make_networks
from pyro_gen.priors import StandardNormal
from pyro_gen.train import TrainSettings, fit
from pyro_gen.vae import VAE, ModelSpec

D, d, C, S = 5, 2, 3, 0.4
TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet", "--epochs", "1"]


def test_condition_vector_and_conditioned_networks():
    """Labels become one-hot rows; the decoder sees exactly [z, one_hot(y)], broadcast over
    leading dimensions (enumerated labels (C, 1) against a batch (B,))."""
    y = torch.tensor([2, 0, 1])
    assert torch.equal(condition_vector(y, 3), torch.eye(3)[[2, 0, 1]])
    side = torch.rand(3, 4)
    assert condition_vector(side, 4) is side
    for bad, message in [(torch.tensor([3]), r"\[0, 3\)"), (torch.tensor([-1]), r"\[0, 3\)"),
                         (torch.rand(2, 5), "3 entries")]:
        with pytest.raises(ValueError, match=message):
            condition_vector(bad, 3)

    encoder, decoder = make_networks("mlp", (1, 4, 4), latent_dim=2, hidden=(8,), condition_dim=3)
    assert isinstance(encoder, ConditionedEncoder) and isinstance(decoder, ConditionedDecoder)
    z = torch.randn(3, 2)
    expected = decoder.decoder(torch.cat([z, torch.eye(3)[y]], -1))
    assert torch.equal(decoder(z, y), expected)
    enumerated = decoder(z, torch.arange(3)[:, None])  # (C, 1) labels x (B,) codes -> (C, B)
    assert torch.allclose(enumerated[2, 0], decoder(z[:1], torch.tensor([2]))[0])
    x = torch.rand(3, 1, 4, 4)
    h = encoder((x, y))
    assert not torch.allclose(h, encoder((x, (y + 1) % 3)))  # the features depend on the label
    with pytest.raises(ValueError, match="conditional"):
        encoder(x)
    with pytest.raises(ValueError, match="conditional"):
        decoder(z)


class CondLinearDecoder(nn.Module):
    condition_dim = C

    def __init__(self, W, b, B):
        super().__init__()
        self.W, self.b, self.B = W, b, B

    def forward(self, z, y):
        return (z @ self.W.T + self.b + condition_vector(y, C) @ self.B).reshape(z.shape[:-1] + (1, 1, D))


class CondPosterior(nn.Module):
    """The exact posterior of conditional pPCA, optionally widened."""

    def __init__(self, W, b, B, widen=1.0):
        super().__init__()
        self.W, self.b, self.B, self.widen = W, b, B, widen
        self.m = (W ** 2).sum(0) + S ** 2

    def forward(self, inputs):
        x, y = inputs
        loc = (x.reshape(x.shape[0], D) - self.b - condition_vector(y, C) @ self.B) @ self.W / self.m
        return dist.Normal(loc, self.widen * (S / self.m.sqrt()).expand_as(loc)).to_event(1)


@pytest.fixture
def cond_ppca():
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    W, b, B = Q * torch.tensor([1.5, 0.8]), torch.randn(D, generator=g) * 0.3, torch.randn(C, D, generator=g) * 2
    y = torch.arange(60) % C
    cov = W @ W.T + S ** 2 * torch.eye(D)
    mean = b + B[y]
    x = dist.MultivariateNormal(mean, cov).sample().reshape(60, 1, 1, D)
    exact = dist.MultivariateNormal(mean, cov).log_prob(x.reshape(60, D))

    def make(widen=1.0):
        return VAE(guide=CondPosterior(W, b, B, widen), decoder=CondLinearDecoder(W, b, B), prior=StandardNormal(d),
                   likelihood=Gaussian(scale=S))
    return make, x, y, exact


def test_conditional_elbo_and_likelihood_are_exact_with_the_exact_posterior(cond_ppca):
    """With q(z|x,y) the exact posterior, ELBO and importance-sampled estimate equal log p(x|y)
    (1e-4); with the wrong labels they are far below it."""
    make, x, y, exact = cond_ppca
    vae = make()
    assert vae.condition_dim == C
    assert torch.allclose(elbo_per_datum(vae, x, num_draws=3, y=y), exact, atol=1e-4)
    assert torch.allclose(importance_log_likelihood(vae, x, k=9, y=y), exact, atol=1e-4)
    wrong = importance_log_likelihood(vae, x, k=9, y=(y + 1) % C)
    assert (wrong < exact - 0.5).float().mean() > 0.9


def test_conditional_bounds_with_a_wider_guide(cond_ppca):
    """A 1.5x wider guide: the ELBO lies below log p(x|y), the K=2000 estimate within 0.02 nats
    of it on average (and above the ELBO)."""
    make, x, y, exact = cond_ppca
    vae = make(widen=1.5)
    elbo = elbo_per_datum(vae, x, num_draws=300, y=y)
    estimate = importance_log_likelihood(vae, x, k=2000, y=y)
    assert (elbo < exact).all()
    assert float((exact - elbo).mean()) > 0.1
    assert abs(float((estimate - exact).mean())) < 0.02 and float((estimate - elbo).mean()) > 0.1


def test_model_and_guide_take_labels_through_svi(cond_ppca):
    """The Pyro model/guide pair scores log p(x|y): Trace_ELBO's loss on the exact posterior is
    -sum log p(x|y) exactly."""
    import pyro
    make, x, y, exact = cond_ppca
    vae = make()
    loss = pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x, y)
    assert loss == pytest.approx(-float(exact.sum()), abs=1e-2)


def _logistic_regression(x: torch.Tensor, y: torch.Tensor):
    """A multinomial logistic regression fitted by L-BFGS (weight decay 1e-3)."""
    W = torch.zeros(x.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=20, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ W + b, y) + 1e-3 * W.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda images: (images.flatten(1) @ W + b).argmax(1)


def test_conditional_samples_are_recognized_as_their_class(mnist):
    """A cvae (2 latent dimensions, 128 hidden units) trained 4 epochs on 3,000 real MNIST images:
    a logistic regression fitted on the same images (about 88% test accuracy) recognizes at least
    80% of 200 samples as the class they were drawn for (about 97% measured; chance is 10%)."""
    x, y = torch.as_tensor(mnist.train_x[:3000]), torch.as_tensor(mnist.train_y[:3000])
    classify = _logistic_regression(x.flatten(1), y)
    assert (classify(torch.as_tensor(mnist.test_x)) == torch.as_tensor(mnist.test_y)).float().mean() > 0.8
    torch.manual_seed(0)
    vae = ModelSpec((1, 28, 28), latent_dim=2, hidden=(128,), condition_dim=10).build()
    fit(vae, mnist.train_x[:3000], TrainSettings(epochs=4, batch_size=64, lr=1e-2, seed=0),
        train_y=mnist.train_y[:3000], progress=False)
    labels = torch.arange(200) % 10
    samples = vae.sample(200, generator=torch.Generator().manual_seed(1), y=labels)
    assert (classify(samples) == labels).float().mean() >= 0.8


def test_cli_cvae_trains_evaluates_and_samples_one_class(tmp_path, small_npz, capsys, monkeypatch):
    import pyro_gen.plots
    titles, plot_images = [], pyro_gen.plots.plot_images
    monkeypatch.setattr(pyro_gen.plots, "plot_images", lambda *a, **kw: (titles.append(kw.get("title")),
                                                                          plot_images(*a, **kw)))
    run = tmp_path / "cvae"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--model", "cvae", *TINY]) == 0
    assert titles[-1] == "Samples (mean images of z ~ p(z), column c is class c)"  # 10 classes, 10 columns
    config = json.loads((run / "config.json").read_text())
    assert config["model_kind"] == "cvae" and config["model"]["condition_dim"] == 10
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "5", "--draws", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite(result["test_elbo"]) and "conditional" in result
    out = tmp_path / "threes.npy"
    assert main(["sample", str(run), "-n", "6", "--label", "3", "-o", str(out)]) == 0
    images = np.load(out)
    assert images.shape == (6, 1, 28, 28)
    assert main(["sample", str(run), "-n", "6", "--label", "4", "-o", str(tmp_path / "fours.npy")]) == 0
    assert not np.allclose(images, np.load(tmp_path / "fours.npy"))  # same codes, another class


def test_cli_label_errors_exit_2_with_one_line(tmp_path, small_npz, capsys):
    cvae, vae = tmp_path / "cvae", tmp_path / "vae"
    assert main(["train", "--data", str(small_npz), "--out", str(cvae), "--model", "cvae", *TINY]) == 0
    assert main(["train", "--data", str(small_npz), "--out", str(vae), *TINY]) == 0
    unlabelled = tmp_path / "images.npz"
    np.savez(unlabelled, images=np.load(small_npz)["images"])
    capsys.readouterr()
    for argv, message in [
            (["sample", str(cvae), "--label", "10", "-o", str(tmp_path / "a.png")], "out of range"),
            (["sample", str(cvae), "--label", "-1", "-o", str(tmp_path / "a.png")], "out of range"),
            (["sample", str(vae), "--label", "3", "-o", str(tmp_path / "a.png")], "conditional run"),
            (["train", "--data", str(unlabelled), "--model", "cvae", "--out", str(tmp_path / "r"), *TINY],
             "needs labels")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


@pytest.fixture(scope="module")
def ink_npz(tmp_path_factory, mnist):
    """3,000 real MNIST images as a user's .npz with one side number per image: its ink (mean
    pixel value), standardized; no labels."""
    x = mnist.train_x[:3000, 0]
    ink = x.reshape(len(x), -1).mean(1)
    path = tmp_path_factory.mktemp("ink") / "ink.npz"
    np.savez(path, images=np.round(x * 255).astype(np.uint8), condition=((ink - ink.mean()) / ink.std())[:, None])
    return path


def test_cli_cvae_on_side_vectors_samples_follow_the_vector(ink_npz, tmp_path, capsys):
    """A cvae conditioned on the ink of each image (2 latents, 128 hidden units, 4 epochs on 2,700
    real MNIST images): samples drawn given ink +2 (standard deviations) hold more ink than those
    given -2 (mean pixel 0.20 vs 0.05 measured; asserted: at least 0.05 more); evaluate scores
    log p(x | c) with the test images' side vectors."""
    from pyro_gen import run as run_module
    run = tmp_path / "ink"
    assert main(["train", "--data", str(ink_npz), "--out", str(run), "--model", "cvae", "--latent-dim", "2",
                 "--hidden", "128", "--batch-size", "64", "--lr", "1e-2", "--epochs", "4", "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["condition"] == "vectors" and config["model"]["condition_dim"] == 1
    assert "side vectors of size 1" in capsys.readouterr().err
    ink = {}
    for value in ("-2", "2"):
        out = tmp_path / f"ink{value}.npy"
        assert main(["sample", str(run), "-n", "200", "--condition", value, "-o", str(out)]) == 0
        ink[value] = float(np.load(out).mean())
    assert ink["2"] - ink["-2"] >= 0.05, ink
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "5", "--draws", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["conditional"] == "ELBO and NLL are of log p(x | y), given the test side vectors"
    loaded = run_module.load_run(run)
    ds = loaded.load_data()
    x_test, _ = run_module.split_tensor(ds, True)
    torch.manual_seed(0)
    again = float(elbo_per_datum(loaded.vae, x_test, num_draws=2, y=torch.as_tensor(ds.test_c)).mean())
    assert result["test_elbo"] == pytest.approx(again, rel=1e-6)


def test_cli_side_vector_errors_exit_2_with_one_line(tmp_path, small_npz, capsys):
    """Side vectors where labels are expected and the other way round, the wrong size, missing
    side vectors: exit 2 and one line, no output file."""
    base = np.load(small_npz)
    side_npz, wide_npz = tmp_path / "side.npz", tmp_path / "wide.npz"
    np.savez(side_npz, images=base["images"], condition=np.random.default_rng(0).random((300, 3)))
    np.savez(wide_npz, images=base["images"], condition=np.zeros((300, 4)))
    side, labelled, plain = tmp_path / "side", tmp_path / "labelled", tmp_path / "plain"
    assert main(["train", "--data", str(side_npz), "--out", str(side), "--model", "cvae", *TINY]) == 0
    assert main(["train", "--data", str(small_npz), "--out", str(labelled), "--model", "cvae", *TINY]) == 0
    assert main(["train", "--data", str(side_npz), "--out", str(plain), *TINY]) == 0  # a vae ignores them
    assert "condition" not in json.loads((plain / "config.json").read_text())["data"]
    assert main(["train", "--out", str(side), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((side / "metrics.jsonl").read_text().splitlines()) == 2
    out = tmp_path / "s.npy"
    assert main(["sample", str(side), "-n", "3", "--condition", "0.1,0.5,2", "-o", str(out)]) == 0
    assert np.load(out).shape == (3, 1, 28, 28)
    out.unlink()
    # a leading minus is a value, not a flag, with or without "="
    for vector in (["--condition", "-.1,0.5,-2"], ["--condition=-.1,0.5,-2"]):
        assert main(["sample", str(side), "-n", "3", *vector, "-o", str(out)]) == 0
        assert np.load(out).shape == (3, 1, 28, 28)
        out.unlink()
    capsys.readouterr()
    for argv, message in [
            (["sample", str(side), "-o", str(out)], "conditioned on side vectors of size 3: give one with --condition "
                                                    "V1,...,V3"),
            (["sample", str(side), "--condition", "1,2", "-o", str(out)], "--condition has 2 numbers; this run's side "
                                                                          "vectors have 3"),
            (["sample", str(side), "--label", "1", "-o", str(out)], "conditioned on side vectors: use --condition"),
            (["sample", str(labelled), "--condition", "1,2,3", "-o", str(out)], "conditioned on labels: use --label"),
            (["sample", str(plain), "--condition", "1,2,3", "-o", str(out)], "--condition needs a cvae run"),
            (["evaluate", str(side), "--data", str(small_npz)], "conditioned on side vectors, and the data has none"),
            (["evaluate", str(side), "--data", str(wide_npz)], "side vectors of size 4 do not fit this run"),
            (["evaluate", str(labelled), "--data", str(side_npz)], "conditioned on labels, and the data has none"),
            (["compare", "--runs", str(side), "--out", str(tmp_path / "cmp")], "no unconditional samples"),
            (["train", "--data", str(tmp_path / "images.npz"), "--model", "cvae", "--out", str(tmp_path / "r"), *TINY],
             "needs labels or side vectors")]:
        if argv[0] == "train":
            np.savez(tmp_path / "images.npz", images=base["images"])
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
    with pytest.raises(SystemExit) as info:  # argparse's own error
        main(["sample", str(side), "--condition", "1,inf,2", "-o", str(out)])
    assert info.value.code == 2 and "expected finite numbers separated by commas" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r").exists() and not (tmp_path / "cmp").exists()
