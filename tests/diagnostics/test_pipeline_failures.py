"""``pyro-gen diagnose`` never loses its work to one failed part: a failed computation or a
failed optional output (NetCDF backend missing, disk full, permission) is reported in one line,
everything else is written (diagnostics.json first), and the exit code is 1."""
import json

import pytest

from pyro_gen import _arviz
from pyro_gen.cli import main
from pyro_gen.diagnostics import pipeline

DIAG = ["--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5", "--grad-repeats", "4", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "--data", str(small_npz), "--out", str(out), "--epochs", "2", "--hidden", "8",
                 "--latent-dim", "2", "--batch-size", "100", "--quiet"]) == 0
    return out


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied"),
                                   ValueError("cannot write NetCDF files: none of the suitable backend libraries "
                                              "(netCDF4, h5netcdf) are installed")])
def test_a_failed_netcdf_write_keeps_diagnostics_json_figures_and_report(run, monkeypatch, capsys, error):
    for name in ("diagnostics.json", "report.html", "posterior.nc"):
        (run / name).unlink(missing_ok=True)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(_arviz, "to_netcdf", fail)
    assert main(["diagnose", str(run), *DIAG]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyro-gen diagnose: posterior.nc failed"), err
    summary = json.loads((run / "diagnostics.json").read_text())
    assert list(summary["failures"]) == ["posterior.nc"]
    assert summary["iwae"] is not None and summary["gap"]["elbo_optimized"] is not None
    assert (run / "report.html").is_file() and not (run / "posterior.nc").exists()
    assert all((run / f).is_file() for f in summary["figures"].values()) and len(summary["figures"]) >= 5
    assert not list(run.glob(".*.tmp")), "no half-written file is left behind"


def test_a_failed_computation_is_reported_and_the_other_parts_are_written(run, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("planted failure in the gap")

    monkeypatch.setattr(pipeline, "amortization_gap", fail)
    assert main(["diagnose", str(run), *DIAG]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pyro-gen diagnose: amortization_gap failed (RuntimeError: planted failure in the gap); "
                   "everything else is saved (diagnostics.json says which parts are missing)"]
    summary = json.loads((run / "diagnostics.json").read_text())
    assert "planted failure" in summary["notes"]["amortization_gap"]
    assert summary["iwae"] is not None and summary["gradients"] and (run / "posterior.nc").is_file()
    assert (run / "report.html").is_file()
