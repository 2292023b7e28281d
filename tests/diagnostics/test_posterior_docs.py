"""The docs' snippets that open posterior.nc, run on a real diagnosed run: the snippet of the
installed ArviZ line (0.x under Python 3.11 here, 1.x under CI's Python 3.13) is executed as written,
with only the path replaced."""
import re
from pathlib import Path

import numpy as np

from pyro_gen import _arviz
from pyro_gen.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "diagnostics.rst"


def _snippets() -> dict:
    text = DOC.read_text()
    out = {}
    for line in ("0.x", "1.x"):
        block = text.split(f"ArviZ {line}:\n\n.. code-block:: python\n\n", 1)[1]
        code = re.split(r"\n(?=\S)", block, maxsplit=1)[0]
        out[line] = "\n".join(row[4:] for row in code.splitlines())
    return out


def test_both_lines_have_a_snippet():
    snippets = _snippets()
    assert "az.from_netcdf" in snippets["0.x"] and "xr.open_datatree" in snippets["1.x"]


def test_the_installed_lines_snippet_opens_a_real_posterior_nc(tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--epochs", "1", "--hidden", "8",
                 "--latent-dim", "2", "--quiet"]) == 0
    assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5",
                 "--grad-repeats", "4", "--quiet"]) == 0
    code = _snippets()[_arviz.API].replace("runs/first/posterior.nc", str(run / "posterior.nc"))
    scope = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 -- the documented code, as a user runs it
    assert scope["z"].shape == (1, 100, 20, 2)
    assert scope["khat"].shape == (20,) and np.isfinite(scope["log_px"]).all() and (scope["log_px"] < 0).all()
    assert "z[" in capsys.readouterr().out  # the summary printed one row per coordinate
