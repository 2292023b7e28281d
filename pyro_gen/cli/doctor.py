"""``pyro-gen doctor``: the versions a bug report needs, and a check that the optional pieces work.

Prints one line per component (Python, pyro_gen, torch and its build, pyro, ArviZ and the API line
the shim uses, NumPy, SciPy, pandas, xarray, matplotlib, the NetCDF backend), then writes and
reads back a tiny ``posterior.nc`` in a temporary folder. Exit code 0 when everything works,
1 when a piece is missing (the line says which and how to install it).
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

#: (label, import name) of the packages reported by version.
PACKAGES = [("torch", "torch"), ("pyro-ppl", "pyro"), ("numpy", "numpy"), ("scipy", "scipy"), ("pandas", "pandas"),
            ("xarray", "xarray"), ("matplotlib", "matplotlib"), ("h5netcdf", "h5netcdf"), ("h5py", "h5py"),
            ("netCDF4", "netCDF4")]


def add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen doctor`` to the subcommands ``sub``."""
    sub.add_parser("doctor", help="print the versions a bug report needs and check the NetCDF backend",
                   description="Print the versions of Python, pyro_gen, torch, pyro, ArviZ (and which ArviZ API "
                               "pyro_gen uses), NumPy and the NetCDF backend, then check that posterior.nc can be "
                               "written and read. Paste the output into a bug report.")


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:  # noqa: BLE001 -- a broken install is reported, not raised
        return "not installed"


def report() -> Tuple[List[str], List[str]]:
    """``(lines, problems)``: one ``name: version`` line per component, and what does not work."""
    from .. import __version__, _arviz
    import torch

    lines = [f"python: {platform.python_version()} ({sys.executable})", f"platform: {platform.platform()}",
             f"pyro_gen: {__version__}"]
    for label, module in PACKAGES:
        lines.append(f"{label}: {_version(module)}")
    cuda = torch.version.cuda
    lines.insert(4, f"torch build: {'CUDA ' + cuda if cuda else 'CPU only'}; CUDA available: "
                    f"{torch.cuda.is_available()}; threads: {torch.get_num_threads()}")
    lines.append(f"arviz: {_arviz.az.__version__} (pyro_gen uses the {_arviz.API} API)")
    problems = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            import numpy as np
            data = _arviz.from_dict({"posterior": {"z": np.zeros((1, 2, 3))}})
            _arviz.to_netcdf(data, Path(tmp) / "check.nc")
            _arviz.from_netcdf(Path(tmp) / "check.nc")
        lines.append("NetCDF (posterior.nc): writes and reads")
    except Exception as e:  # noqa: BLE001
        lines.append(f"NetCDF (posterior.nc): FAILS ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        problems.append("pyro-gen diagnose cannot write posterior.nc: pip install h5netcdf h5py")
    return lines, problems


def cmd_doctor(args) -> int:
    lines, problems = report()
    print("\n".join(lines))
    for problem in problems:
        print(f"pyro-gen doctor: problem: {problem}", file=sys.stderr)
    return 1 if problems else 0
