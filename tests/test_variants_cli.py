"""Every registered guide x prior x model through the CLI, the way users run them: three epochs
with the per-epoch diagnostics on (the default), then ``evaluate`` and ``diagnose`` at a small K
(a conditional VAE is diagnosed given its test labels).

A ``--guide iaf`` run once died at its second epoch in the per-epoch diagnostics, which a suite
stopping at epoch 1 did not see; this matrix runs past it for every variant.
"""
import json

import pytest

from pyro_gen.cli import main
from pyro_gen.guides import GUIDES
from pyro_gen.likelihoods import LIKELIHOODS
from pyro_gen.priors import PRIORS

TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "100", "--quiet", "--epochs", "3"]
#: one small spec per registered prior (the plug-in "module" has its own tests)
PRIOR_SPECS = {"standard": "standard", "learned": "learned", "mog": "mog:3", "vamp": "vamp:3", "flow": "flow:1",
               "studentt": "studentt"}
#: every guide a VAE takes ("delta" is --model ae)
GUIDE_SPECS = {"diagonal": "diagonal", "fullrank": "fullrank", "iaf": "iaf:2"}


def test_the_matrix_covers_every_registered_variant():
    assert set(PRIOR_SPECS) == set(PRIORS) - {"module"}
    assert set(GUIDE_SPECS) == set(GUIDES) - {"delta"}


#: combinations refused on purpose, with the phrase of their one-line error
REFUSED = {("ae", "vamp:3"): "needs a guide with a density", ("cvae", "vamp:3"): "needs labels too"}


def _refused(key, argv, run, capsys) -> bool:
    """Check a deliberate refusal (exit 2, one line, nothing written); False for other combinations."""
    if key not in REFUSED:
        return False
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and REFUSED[key] in err, err
    assert not run.exists()
    return True


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("prior", list(PRIOR_SPECS.values()))
@pytest.mark.parametrize("guide", list(GUIDE_SPECS.values()) + ["ae"])
def test_vae_trains_three_epochs_then_evaluates_and_diagnoses(guide, prior, tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    model = ["--model", "ae"] if guide == "ae" else ["--guide", guide]
    argv = ["train", "--data", str(small_npz), "--out", str(run), "--prior", prior, *model, *TINY]
    if _refused((guide, prior), argv, run, capsys):
        return
    assert main(argv) == 0, capsys.readouterr().err
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:  # the per-epoch diagnostics ran, every epoch
        assert "diagnostics_error" not in r, r["diagnostics_error"]
        assert r["diag_points"] == 30 and "active_units" in r
        if guide != "ae":
            assert r["mutual_info"] == pytest.approx(r["mutual_info"]) and r["marginal_kl"] is not None
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((run / "diagnostics.json").read_text())["latent"]["num_points"] == 20


@pytest.mark.parametrize("prior", list(PRIOR_SPECS.values()))
@pytest.mark.parametrize("guide", list(GUIDE_SPECS.values()))
def test_cvae_trains_three_epochs_then_evaluates_and_diagnoses(guide, prior, tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "cvae", "--data", str(small_npz), "--out", str(run), "--prior", prior,
            "--guide", guide, *TINY]
    if _refused(("cvae", prior), argv, run, capsys):
        return
    assert main(argv) == 0, capsys.readouterr().err
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3]
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    # the diagnostics of p(x | y), given the test labels, read through traces (per latent site)
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((run / "diagnostics.json").read_text())
    assert set(summary["latent"]["sites"]) == {"z"} and summary["iwae"] is not None and not summary["failures"]


def test_weight_decay_trains_three_epochs_resumes_and_is_in_the_report(tmp_path, small_npz, capsys):
    """--weight-decay (AdamW) through the CLI the way users run it, on the hvae with a VampPrior
    (the best configuration's family): stored, kept on --resume (a change is refused), reported,
    and refused for the GAN in one line."""
    run = tmp_path / "run"
    argv = ["train", "--model", "hvae", "--prior", "vamp:3", "--data", str(small_npz), "--out", str(run),
            "--weight-decay", "0.05", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["train"]["weight_decay"] == 0.05
    assert all("diagnostics_error" not in r for r in _rows(run))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--weight-decay", "0.1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--weight-decay" in err, err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--quiet"]) == 0
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4]
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0, capsys.readouterr().err
    assert "weight decay 0.05 (AdamW)" in (run / "report.html").read_text()
    capsys.readouterr()
    gan = tmp_path / "gan"
    assert main(["train", "--model", "gan", "--weight-decay", "0.05", "--data", str(small_npz), "--out", str(gan),
                 *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model gan cannot take --weight-decay" in err and not gan.exists(), err


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_every_likelihood_trains_three_epochs_then_evaluates_diagnoses_and_samples(likelihood, tmp_path, small_npz,
                                                                                  capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--likelihood", likelihood, *TINY]) == 0, \
        capsys.readouterr().err
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("diagnostics_error" not in r for r in rows)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_nll"] <= -result["test_elbo"] + 0.5  # the IS bound is at least the ELBO, up to MC error
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0, capsys.readouterr().err
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    import numpy as np
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (4, 1, 28, 28) and np.isfinite(images).all()


def test_the_autoregressive_likelihood_on_the_hvae_and_refused_for_the_gan(tmp_path, small_npz, capsys):
    """The best configuration's shape (hvae, VampPrior on z2, bernoulli-ar) through the CLI, with a
    resume; the GAN, whose output layer is a mean image, refuses bernoulli-ar in one line."""
    run = tmp_path / "run"
    argv = ["train", "--model", "hvae", "--prior", "vamp:3", "--likelihood", "bernoulli-ar", "--objective", "iwae:2",
            "--data", str(small_npz), "--out", str(run), *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--quiet"]) == 0
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_nll"] > 0
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0, capsys.readouterr().err
    assert "bernoulli-ar" in (run / "report.html").read_text()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    import numpy as np
    for name in ("a.npy", "b.npy"):  # the pixel-by-pixel draws come from --seed's generator
        assert main(["sample", str(run), "-n", "3", "--seed", "5", "-o", str(tmp_path / name)]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    gan = tmp_path / "gan"
    capsys.readouterr()
    assert main(["train", "--model", "gan", "--likelihood", "bernoulli-ar", "--data", str(small_npz), "--out", str(gan),
                 *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bernoulli-ar" in err and not gan.exists(), err


def test_compare_refuses_the_autoregressive_likelihood_for_a_gan_before_training(tmp_path, small_npz, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", "vae,wgan-gp", "--likelihood", "bernoulli-ar", "--data", str(small_npz),
                 "--out", str(out), "--budget-seconds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--models wgan-gp" in err and "bernoulli-ar" in err, err
    assert not out.exists()
