"""Small, fast versions of the clearest planted failures of benchmarks/planted_failures.py, through
the CLI: each is caught by the verdict that names it, and a healthy run of the same size is not
(on these 300 images the healthy run is short, so only the named checks are compared)."""
import json

import numpy as np
import pytest

from pyro_gen.cli import main

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "30", "--quiet"]
DIAG = ["--k-max", "200", "--points", "30", "--gap-points", "10", "--gap-steps", "50", "--grad-repeats", "4",
        "--json", "--quiet"]


def _verdicts(capsys, argv):
    capsys.readouterr()
    assert main(argv) in (0, 1)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return {v["check"].split(" (")[0]: v for v in out["verdicts"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory, mnist):
    folder = tmp_path_factory.mktemp("planted")
    images = np.round(mnist.train_x[:300, 0] * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    paths = {"mnist": folder / "mnist.npz", "noise": folder / "noise.npz", "inverted": folder / "inverted.npz"}
    np.savez(paths["mnist"], images=images)
    np.savez(paths["noise"], images=(rng.random((300, 28, 28)) < 0.5).astype(np.uint8) * 255)
    np.savez(paths["inverted"], images=255 - images)
    return paths


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, files):
    run = tmp_path_factory.mktemp("runs") / "healthy"
    assert main(["train", "--data", str(files["mnist"]), "--out", str(run), "--epochs", "8", *TINY]) == 0
    return run


def test_the_healthy_run_passes_the_named_checks(healthy, capsys):
    v = _verdicts(capsys, ["diagnose", str(healthy), *DIAG])
    for check in ("Data shift", "Decoder uses z", "Posterior collapse"):
        assert v[check]["status"] in ("ok", "note"), (check, v[check])


def test_a_different_test_set_is_named(healthy, files, capsys):
    v = _verdicts(capsys, ["diagnose", str(healthy), "--data", str(files["inverted"]), *DIAG])
    assert v["Data shift"]["status"] == "warning"


def test_a_run_trained_on_noise_has_a_decoder_that_ignores_z(files, tmp_path, capsys):
    run = tmp_path / "noise"
    assert main(["train", "--data", str(files["noise"]), "--out", str(run), "--epochs", "30", *TINY]) == 0
    v = _verdicts(capsys, ["diagnose", str(run), *DIAG])
    assert v["Decoder uses z"]["status"] == "problem"  # even where units look "active"


def test_one_epoch_is_flagged_and_a_collapsed_beta_vae_names_beta(files, tmp_path, capsys):
    one = tmp_path / "one"
    assert main(["train", "--data", str(files["mnist"]), "--out", str(one), "--epochs", "1", *TINY]) == 0
    assert _verdicts(capsys, ["diagnose", str(one), *DIAG])["Training progress"]["status"] == "warning"
    beta = tmp_path / "beta"
    assert main(["train", "--data", str(files["mnist"]), "--out", str(beta), "--epochs", "4", "--beta", "30",
                 *TINY]) == 0
    v = _verdicts(capsys, ["diagnose", str(beta), *DIAG])
    assert v["Posterior collapse"]["status"] == "problem" and "--beta" in v["Posterior collapse"]["advice"]
    report = (beta / "report.html").read_text()
    assert "KL weighted by beta = 30" in report
