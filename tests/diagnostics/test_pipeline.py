"""``pyro-gen diagnose`` end to end on real MNIST, and its refusals.
"""
import json

import pytest

from pyro_gen import cli
from _ppca import LinearDecoder, normal_kl, orthogonal_ppca as ppca  # noqa: E402,F401


from _html import check_report as _check_report  # noqa: E402

D, L = 6, 2


# ---------------------------------------------------------------- the CLI, end to end

def test_cli_train_logs_diagnostics_and_diagnose_end_to_end(tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(small_npz), "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                     "--out", str(run), "--quiet"]) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["diag_points"] == 30 and 0 <= row["active_units"] <= 2 and row["kl"] >= 0
    assert sum(row["kl_per_dim"]) == pytest.approx(row["kl"], abs=1e-3)  # closed form: the KL splits by dimension
    assert row["kl"] == pytest.approx(row["mutual_info"] + row["marginal_kl"], abs=0.3)  # ELBO surgery, MC noise
    err = capsys.readouterr().err
    assert ("warning: posterior collapse" in err) == row["posterior_collapse"]  # one line when the flag fires

    assert cli.main(["diagnose", str(run), "--k-max", "200", "--points", "20", "--gap-points", "4",
                     "--gap-steps", "20", "--grad-repeats", "10", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "diagnostics.json").read_text())
    assert printed["iwae"] == saved["iwae"]
    iwae = saved["iwae"]
    assert iwae["k"][0] == 1 and iwae["k"][-1] == 200 and iwae["bound"][-1] > iwae["bound"][0]
    assert len(saved["pareto_k"]["per_datum"]) == 20 and len(saved["log_px_per_datum"]) == 20
    gap = saved["gap"]
    assert gap["log_px"] >= gap["elbo_optimized"] - 0.5 and len(gap["test_index"]) == 4
    assert {g["group"] for g in saved["gradients"]} == {"encoder", "decoder"}
    assert all(g["repeats"] == 10 and g["total_variance"] > 0 for g in saved["gradients"])
    for name in saved["figures"].values():
        assert (run / name).is_file()
    text = _check_report(run / "report.html", expect_images=len(saved["figures"]))
    assert "What was trained" in text and "PSIS k-hat" in text

    from pyro_gen import _arviz
    idata = _arviz.from_netcdf(run / "posterior.nc")
    assert idata.posterior["z"].shape == (1, 100, 20, 2)
    assert not _arviz.summary(idata, var_names=["z"]).isna().any().any()


def test_cli_diagnose_autoencoder_and_bad_input(tmp_path, small_npz, capsys):
    run = tmp_path / "ae"
    assert cli.main(["train", "--data", str(small_npz), "--model", "ae", "--epochs", "1", "--hidden", "16",
                     "--latent-dim", "2", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["diagnose", str(run), "--k-max", "200", "--points", "10", "--gap-points", "4",
                     "--grad-repeats", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "not defined for a point-mass guide" in out
    saved = json.loads((run / "diagnostics.json").read_text())
    assert saved["iwae"] is None and saved["pareto_k"] is None and saved["latent"]["kl"] is None
    assert "not defined for a point-mass guide" in saved["gap"]["note"]
    assert "not defined for a point-mass guide" in (run / "report.html").read_text()

    assert cli.main(["diagnose", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["diagnose", str(run), "--k-max", "0"])
    assert e.value.code == 2
    capsys.readouterr()
    gan = tmp_path / "gan"
    gan.mkdir()
    (gan / "config.json").write_text(json.dumps({"format_version": 1, "model_kind": "gan"}))
    assert cli.main(["diagnose", str(gan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a gan run" in err
