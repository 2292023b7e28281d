"""The semi-supervised VAE (M2): the enumerated ELBO against a manual sum over classes, the
importance weights against it, the labelled subset, the repetition of labelled images, and the
CLI (--model ssvae --labels-per-class N) on real MNIST."""
import json
import math

import numpy as np
import pyro
import pytest
import torch

from pyro_gen.cli import main
from pyro_gen.evaluate import elbo_per_datum
from pyro_gen.objectives import make_elbo, training_loss
from pyro_gen import run as run_module
from pyro_gen.ssvae import accuracy, build_ssvae, semi_supervised_data, semi_supervised_labels
from pyro_gen.vae import ModelSpec

C = 3
SPEC = ModelSpec((1, 2, 3), latent_dim=2, hidden=(5,), condition_dim=C)
TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet", "--epochs", "1"]


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = build_ssvae(SPEC)
    x = torch.bernoulli(torch.full((6, 1, 2, 3), 0.4))
    y = torch.tensor([0, 2, -1, -1, 1, -1])
    return model, x, y


def _labelled_terms(m, x, y, z, aux_weight):
    """L(x, y) + aux_weight log q(y|x) per datum at the codes z."""
    log_py = -math.log(C)
    q = m.guide_net((x, y))
    return (m.likelihood(m.decoder(z, y)).log_prob(x) + log_py + m.prior().log_prob(z) - q.log_prob(z)
            + aux_weight * torch.log_softmax(m.classifier(x), -1)[torch.arange(len(y)), y])


def _unlabelled_terms(m, x, z):
    """sum_y q(y|x) [L(x, y) - log q(y|x)] per datum, z of shape (C, B, d) (one code per class)."""
    ys = torch.arange(C)[:, None]
    q = m.guide_net((x, ys))
    log_qy = torch.log_softmax(m.classifier(x), -1).T  # (C, B)
    inner = (m.likelihood(m.decoder(z, ys)).log_prob(x) - math.log(C) + m.prior().log_prob(z) - q.log_prob(z)
             - log_qy)
    return (log_qy.exp() * inner).sum(0)


def test_enumerated_elbo_equals_the_manual_sum_over_classes(tiny):
    """TraceEnum_ELBO on a mixed batch (3 labelled, 3 unlabelled) with the data scale N/B = 2,
    labelled copies weighted 1/2 and the classification term weighted 1.5 equals, for the same
    z draws (same seed), 2 * [1/2 * sum_l (L(x,y) + 1.5 log q(y|x)) + sum_u sum_y q(y|x)(L(x,y) - log q(y|x))]."""
    m, x, y = tiny
    m.labelled_weight, m.aux_weight = 0.5, 1.5  # the data scale N/B = 12/6 comes from the engine
    pyro.set_rng_seed(7)
    loss = 12 * training_loss(make_elbo("enum"), m, x, y, num_data=12)

    pyro.set_rng_seed(7)  # the guide draws the labelled codes first, then one code per class
    known = y >= 0
    xl, yl, xu = x[known], y[known], x[~known]
    zl = m.guide_net((xl, yl)).rsample()
    zu = m.guide_net((xu, torch.arange(C)[:, None])).rsample()
    with torch.no_grad():
        expected = 2.0 * (0.5 * _labelled_terms(m, xl, yl, zl, 1.5).sum() + _unlabelled_terms(m, xu, zu).sum())
    assert float(loss.detach()) == pytest.approx(-float(expected), rel=1e-5)
    # the enumeration is exact: the unlabelled part is not a single-sample estimate of y
    assert _unlabelled_terms(m, xu, zu).shape == (3,)


def test_importance_weights_are_unbiased_for_the_enumerated_elbo(tiny):
    """The mean of SSVAE.log_weights (y ~ q(y|x), z ~ q(z|x,y)) estimates the same ELBO as the
    enumeration averaged over z: agreement within 4 standard errors (and log p(y) matters:
    leaving it out would shift the estimate by log 3 = 1.1 nats)."""
    m, x, _ = tiny
    with torch.no_grad():
        pyro.set_rng_seed(1)
        z = m.guide_net((x, torch.arange(C)[:, None])).rsample((1500,))  # (P, C, B, d)
        enumerated = torch.stack([_unlabelled_terms(m, x, zp) for zp in z])  # (P, B)
        pyro.set_rng_seed(2)
        lw = m.log_weights(x, 4500)
    se = math.hypot(float(enumerated.std(0).max()) / math.sqrt(1500), float(lw.std(0).max()) / math.sqrt(4500))
    assert torch.allclose(enumerated.mean(0), lw.mean(0), atol=4 * se)
    assert 4 * se < 0.3, se
    assert torch.allclose(elbo_per_datum(m, x, num_draws=4500), lw.mean(0), atol=4 * se)


def test_labelled_subset_is_balanced_seeded_and_true(mnist):
    y = mnist.train_y[:2000]
    kept = semi_supervised_labels(y, 5, seed=0)
    known = kept >= 0
    assert np.bincount(kept[known], minlength=10).tolist() == [5] * 10
    assert (kept[known] == y[known]).all()
    assert (semi_supervised_labels(y, 5, seed=0) == kept).all()
    assert not (semi_supervised_labels(y, 5, seed=1) == kept).all()
    with pytest.raises(ValueError, match="fewer than"):
        semi_supervised_labels(y[:30], 5)


def test_repeating_labelled_images_leaves_the_objective_unchanged(mnist):
    """With a point-mass guide the objective is deterministic: the whole data with each labelled
    image repeated r = 39 times and weighted 1/39 has exactly the objective of the data without
    repetition (so repetition only changes how often labelled images are visited)."""
    semi = semi_supervised_data(mnist.train_x[:2000], mnist.train_y[:2000], 5, seed=0)
    assert (semi.repeat, semi.num_labelled, len(semi.x)) == (39, 50, 3900)  # round(1950 / 50) = 39
    assert semi.aux_weight == pytest.approx(10 * 2000 / 50) and semi.labelled_weight == pytest.approx(1 / 39)
    assert np.bincount(semi.y[semi.y >= 0], minlength=10).tolist() == [195] * 10

    torch.manual_seed(0)
    m = build_ssvae(ModelSpec((1, 28, 28), latent_dim=2, hidden=(8,), condition_dim=10, guide="delta"),
                    aux_weight=semi.aux_weight)
    x = torch.as_tensor(semi.x).round()
    y = torch.as_tensor(semi.y)
    elbo = make_elbo("enum")
    with torch.no_grad():
        plain = elbo.loss(m.model, m.guide, x[:2000], y[:2000])
        m.labelled_weight = semi.labelled_weight
        repeated = elbo.loss(m.model, m.guide, x, y)
        m.labelled_weight = 1.0
        unweighted = elbo.loss(m.model, m.guide, x, y)
    assert repeated == pytest.approx(plain, rel=1e-5)
    assert abs(unweighted - plain) > 1e-3 * abs(plain)


def test_fit_reports_the_elbo_of_log_px_not_the_objective(mnist):
    """For the semi-supervised VAE, fit's ``train_elbo`` is the ELBO of log p(x) with the labels
    summed out (as the test ELBO), on the first training images binarized once; the objective,
    with its classification term of weight 10 N / N_l, is ``train_objective``. Checked against
    the ELBO recomputed on those images after training (Monte Carlo: within 2 nats; the two
    numbers being compared differ by far more)."""
    from pyro_gen.data import binarize
    from pyro_gen.train import TrainSettings, fit, mean_elbo
    semi = semi_supervised_data(mnist.train_x[:300], mnist.train_y[:300], 2, seed=0)
    torch.manual_seed(0)
    m = build_ssvae(ModelSpec((1, 28, 28), latent_dim=2, hidden=(16,), condition_dim=10),
                    aux_weight=semi.aux_weight, labelled_weight=semi.labelled_weight)
    row = fit(m, semi.x, TrainSettings(epochs=1, batch_size=64, elbo="enum"), train_y=semi.y,
              progress=False).history[-1]
    x_probe = binarize(torch.as_tensor(semi.x[:1000]), torch.Generator().manual_seed(0))
    m.eval()
    with torch.no_grad():
        pyro.set_rng_seed(3)
        again = np.mean([mean_elbo(m, make_elbo("enum"), x_probe) for _ in range(5)])
    assert abs(row["train_elbo"] - again) < 2.0, (row, again)
    assert abs(row["train_objective"] - row["train_elbo"]) > 20


def test_cli_ssvae_trains_evaluates_resumes_and_samples(tmp_path, small_npz, capsys):
    run = tmp_path / "ssvae"
    argv = ["train", "--data", str(small_npz), "--out", str(run), "--model", "ssvae", "--labels-per-class", "2", *TINY]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model_kind"] == "ssvae" and config["train"]["elbo"] == "enum"
    assert config["ssvae"]["num_labelled"] == 20 and config["model"]["condition_dim"] == 10
    assert config["ssvae"]["augment"] is True and config["ssvae"]["aux_dim"] == 0  # the CLI defaults
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= row["val_accuracy"] <= 1 and math.isfinite(row["val_elbo"])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "5", "--draws", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    loaded = run_module.load_run(run)
    x_test, y_test = run_module.split_tensor(loaded.load_data(), True)
    assert result["test_accuracy"] == accuracy(loaded.vae, x_test, y_test)
    assert math.isfinite(result["test_elbo"]) and result["test_nll"] <= -result["test_elbo"] + 0.5  # IS >= ELBO
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["sample", str(run), "-n", "4", "--label", "7", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 28, 28)


@pytest.mark.parametrize("flags, message", [
    (["--labels-per-class", "2"], "--labels-per-class: this flag is for --model ssvae"),
    (["--augment", "--aux-dim", "3"], "--augment, --aux-dim: these flags are for --model ssvae"),
    (["--model", "ssvae"], "needs --labels-per-class"),
    (["--model", "ssvae", "--labels-per-class", "100"], "fewer than"),
    (["--model", "ssvae", "--labels-per-class", "2", "--objective", "iwae:5"], "--objective"),
    (["--model", "ssvae", "--labels-per-class", "2", "--elbo", "trace"], "--elbo enum"),
    (["--model", "ssvae", "--labels-per-class", "2", "--patience", "3"], "--patience")])
def test_cli_ssvae_bad_usage_exits_2_with_one_line(flags, message, tmp_path, small_npz, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(small_npz), "--out", str(out), *TINY, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_cli_ssvae_options_are_stored_and_rebuilt(tmp_path, small_npz, capsys):
    """--aux-dim, --augment, --aux-weight and --labelled-repeat go into config.json, the reloaded
    run has the ADGM and the augmentation, and --resume refuses to change them."""
    run = tmp_path / "adgm"
    argv = ["train", "--data", str(small_npz), "--out", str(run), "--model", "ssvae", "--labels-per-class", "2",
            "--aux-dim", "3", "--augment", "--aux-weight", "100", "--labelled-repeat", "3", *TINY]
    assert main(argv) == 0
    opts = json.loads((run / "config.json").read_text())["ssvae"]
    assert (opts["aux_dim"], opts["augment"], opts["aux_weight"], opts["repeat"]) == (3, True, 100.0, 3)
    assert opts["labelled_weight"] == pytest.approx(1 / 3)
    loaded = run_module.load_run(run)
    assert loaded.vae.has_aux and loaded.vae.aux_guide(torch.zeros(1, 1, 28, 28)).event_shape == (3,)
    assert loaded.vae.augment is not None and loaded.vae.aux_weight == 100.0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "5", "--draws", "2", "--json", "--quiet"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["test_accuracy"] <= 1
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--aux-dim", "5", "--quiet"]) == 2
    assert "--aux-dim" in capsys.readouterr().err


@pytest.fixture
def tiny_adgm():
    torch.manual_seed(0)
    model = build_ssvae(SPEC, aux_dim=2)
    x = torch.bernoulli(torch.full((6, 1, 2, 3), 0.4))
    y = torch.tensor([0, 2, -1, -1, 1, -1])
    return model, x, y


def _cat(u, v):
    """cat([u, v], -1) after broadcasting their batch dimensions."""
    batch = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
    return torch.cat([u.expand(batch + u.shape[-1:]), v.expand(batch + v.shape[-1:])], -1)


def _adgm_joint_terms(m, x, y, a, z):
    """log p(x|y,z) + log p(y) + log p(z) + log p(a|x,y,z) - log q(z|x,y,a) - log q(a|x) per datum,
    with y broadcasting against the batch (enumerated classes (C, 1) or labels (B,))."""
    onehot = torch.nn.functional.one_hot(y, C).float()
    qz = m.guide_net((x, _cat(onehot, a)))
    pa = m.aux_model((x, _cat(onehot, z)))
    return (m.likelihood(m.decoder(z, y)).log_prob(x) - math.log(C) + m.prior().log_prob(z) + pa.log_prob(a)
            - qz.log_prob(z) - m.aux_guide(x).log_prob(a))


def test_adgm_enumerated_elbo_equals_the_manual_sum_over_classes(tiny_adgm):
    """The ADGM (M2 with an auxiliary latent a): TraceEnum_ELBO on a mixed batch equals, for the
    same draws a ~ q(a|x), z ~ q(z|x,y,a), the ELBO written out by hand,
    2 * [1/2 * sum_l (J(x,y,a,z) + 1.5 log q(y|a,x)) + sum_u sum_y q(y|a,x) (J(x,y,a,z) - log q(y|a,x))]
    with J = log p(x|y,z) + log p(y) + log p(z) + log p(a|x,y,z) - log q(z|x,y,a) - log q(a|x);
    relative tolerance 1e-5."""
    m, x, y = tiny_adgm
    m.labelled_weight, m.aux_weight = 0.5, 1.5  # the data scale N/B = 12/6 comes from the engine
    pyro.set_rng_seed(7)
    loss = 12 * training_loss(make_elbo("enum"), m, x, y, num_data=12)

    pyro.set_rng_seed(7)  # the guide's order: a, z for the labelled; a, (y enumerated), z for the others
    known = y >= 0
    xl, yl, xu = x[known], y[known], x[~known]
    al = m.aux_guide(xl).rsample()
    zl = m.guide_net((xl, torch.cat([torch.nn.functional.one_hot(yl, C).float(), al], -1))).rsample()
    au = m.aux_guide(xu).rsample()
    ys = torch.arange(C)[:, None]
    zu = m.guide_net((xu, _cat(torch.nn.functional.one_hot(ys, C).float(), au))).rsample()
    with torch.no_grad():
        labelled = _adgm_joint_terms(m, xl, yl, al, zl) + 1.5 * torch.log_softmax(
            m.classifier((xl, al)), -1)[torch.arange(3), yl]
        log_qy = torch.log_softmax(m.classifier((xu, au)), -1).T  # (C, B)
        unlabelled = (log_qy.exp() * (_adgm_joint_terms(m, xu, ys, au, zu) + m.aux_guide(xu).log_prob(au) - log_qy)
                      ).sum(0) - m.aux_guide(xu).log_prob(au)
        expected = 2.0 * (0.5 * labelled.sum() + unlabelled.sum())
    assert float(loss.detach()) == pytest.approx(-float(expected), rel=1e-5)


def test_adgm_importance_weights_are_unbiased_for_its_elbo(tiny_adgm):
    """The mean of the ADGM's log weights (a ~ q(a|x), y ~ q(y|a,x), z ~ q(z|x,y,a)) estimates its
    ELBO, computed here as the class sum averaged over many draws of a and z: agreement within 4
    standard errors, which are below 0.5 nats (leaving out log p(y) would shift it by 1.1)."""
    m, x, _ = tiny_adgm
    ys = torch.arange(C)[:, None]
    with torch.no_grad():
        pyro.set_rng_seed(1)
        rows = []
        for _ in range(1500):
            a = m.aux_guide(x).sample()
            z = m.guide_net((x, _cat(torch.nn.functional.one_hot(ys, C).float(), a))).sample()
            log_qy = torch.log_softmax(m.classifier((x, a)), -1).T
            rows.append((log_qy.exp() * (_adgm_joint_terms(m, x, ys, a, z) + m.aux_guide(x).log_prob(a) - log_qy)
                         ).sum(0) - m.aux_guide(x).log_prob(a))
        enumerated = torch.stack(rows)
        pyro.set_rng_seed(2)
        lw = m.log_weights(x, 4500)
    se = math.hypot(float(enumerated.std(0).max()) / math.sqrt(1500), float(lw.std(0).max()) / math.sqrt(4500))
    assert torch.allclose(enumerated.mean(0), lw.mean(0), atol=4 * se)
    assert 4 * se < 0.5, se
    labelled = m.log_weights(x, 10, y=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert labelled.shape == (10, 6) and torch.isfinite(labelled).all()


def test_adgm_classifies_at_the_mean_of_the_auxiliary_latent(tiny_adgm):
    m, x, _ = tiny_adgm
    with torch.no_grad():
        expected = torch.softmax(m.classifier((x, m.aux_guide(x).mean)), -1)
    assert torch.allclose(m.class_probs(x), expected)
    assert (m.classify(x) == expected.argmax(-1)).all()
    assert m.encode(x).shape == (6, 2) and m.reconstruct(x).shape == x.shape
    with pytest.raises(ValueError, match="aux_dim"):
        build_ssvae(SPEC, aux_dim=-1)
