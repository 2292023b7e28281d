"""The one shim over the ArviZ API differences between 0.x (``InferenceData``) and 1.x
(``xarray.DataTree``, statistics in ``arviz_stats``).

Everything in pyro_gen that touches ArviZ goes through these five functions, chosen by feature
detection (never by version number):

* :func:`psislw` -- Pareto-smoothed importance sampling of log importance ratios:
  ``arviz.psislw`` in 0.x; ``arviz_stats.base.array_stats.psislw`` in 1.x, whose argument is the
  *negated* log ratio (it follows the PSIS-LOO convention of taking a log-likelihood). Which sign a
  backend wants is checked once, on a sample with a known heavy right tail, so a future change of
  convention cannot silently invert the diagnostic.
* :func:`from_dict` -- groups of arrays -> ``InferenceData`` (0.x keyword groups) or ``DataTree``
  (1.x: one dict of groups).
* :func:`to_netcdf` / :func:`from_netcdf` -- NetCDF round trip (atomic write).
* :func:`summary` -- ``arviz.summary`` of some variables.

``import arviz`` prints a ``FutureWarning`` about the 1.x refactor in 0.23; it is silenced here.
"""
from __future__ import annotations

import functools
import inspect
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["az", "API", "psislw", "from_dict", "to_netcdf", "from_netcdf", "summary"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az  # noqa: E402

#: ``"0.x"`` when ArviZ has the ``InferenceData`` keyword API, ``"1.x"`` otherwise.
API = "0.x" if "posterior" in inspect.signature(az.from_dict).parameters else "1.x"


def _raw_psislw():
    """The backend's PSIS function as ``f(array (..., S)) -> (smoothed log weights, k-hat)``."""
    fn = getattr(az, "psislw", None) or getattr(getattr(az, "stats", None), "psislw", None)
    if fn is not None:  # arviz 0.x
        return lambda a: fn(a, reff=1.0)
    try:  # arviz 1.x
        from arviz_stats.base import array_stats
    except ImportError as e:  # pragma: no cover - depends on the installed ArviZ
        raise ImportError("no PSIS implementation found: expected arviz.psislw (arviz < 1) or "
                          "arviz_stats.base.array_stats.psislw (arviz >= 1)") from e
    return lambda a: array_stats.psislw(a, r_eff=1.0, axis=-1)  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _psis_sign() -> Tuple[object, float]:
    """The backend and the sign it needs: +1 if it smooths the right tail of its argument.

    Calibrated on log weights with an exact Pareto right tail of shape 0.9 (and a bounded left
    tail): the right convention estimates k-hat near 0.9, the wrong one a small value.
    """
    raw = _raw_psislw()
    u = (np.arange(2000) + 0.5) / 2000
    lw = -0.9 * np.log1p(-u)  # w = (1 - u)^(-0.9): generalized Pareto with k = 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k_plus = float(np.asarray(raw(lw.copy())[1]))
    return raw, 1.0 if k_plus > 0.5 else -1.0


def psislw(log_weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance sampling (Vehtari et al. 2024) along the last axis.

    :param log_weights: log importance ratios :math:`\\log p(x, z_s) - \\log q(z_s)`, shape
        ``(..., S)``.
    :returns: ``(smoothed, khat)``: the smoothed log weights (same shape, normalized so that they
        log-sum-exp to 0 along the last axis) and the Pareto shape estimates, shape ``(...)``.
    """
    raw, sign = _psis_sign()
    lw = np.array(log_weights, dtype=np.float64, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns on k-hat > 0.7: we report it ourselves
        smoothed, khat = raw(sign * lw)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    smoothed = smoothed - np.logaddexp.reduce(smoothed, axis=-1, keepdims=True)
    return smoothed, np.asarray(khat, dtype=np.float64)


def from_dict(groups: Mapping[str, Mapping[str, np.ndarray]], coords: Optional[Dict[str, Sequence]] = None,
              dims: Optional[Dict[str, Sequence[str]]] = None, attrs: Optional[dict] = None):
    """Build ArviZ data from groups of arrays.

    :param groups: ``{"posterior": {"z": array (chain, draw, ...)}, "log_likelihood": ...,
        "constant_data": {...}}``; arrays of sample groups start with ``(chain, draw)``.
    :param coords: coordinate values per dimension name.
    :param dims: dimension names of each variable (after ``chain, draw``).
    :param attrs: attributes of every group (JSON-able scalars and strings).
    :returns: an ``az.InferenceData`` (arviz 0.x) or an ``xarray.DataTree`` (arviz 1.x).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if API == "0.x":
            return az.from_dict(**{g: dict(v) for g, v in groups.items()}, coords=coords, dims=dims,
                                attrs=attrs)
        data = {g: dict(v) for g, v in groups.items()}  # pragma: no cover - arviz 1.x
        group_attrs = {g: dict(attrs or {}) for g in data}  # pragma: no cover
        group_attrs["/"] = dict(attrs or {})  # pragma: no cover
        return az.from_dict(data, coords=coords, dims=dims, attrs=group_attrs)  # pragma: no cover


def to_netcdf(data, path) -> None:
    """Write ArviZ data (``InferenceData`` or ``DataTree``) to NetCDF atomically (a temporary
    file in the same folder, renamed over ``path``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data.to_netcdf(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def from_netcdf(path):
    """Read a NetCDF file written by :func:`to_netcdf` (``az.from_netcdf`` in 0.x,
    ``xarray.open_datatree`` where ArviZ has no reader)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = getattr(az, "from_netcdf", None)
        if reader is not None:
            return reader(str(path))
        import xarray  # pragma: no cover - arviz 1.x without from_netcdf
        return xarray.open_datatree(str(path)).load()  # pragma: no cover


def summary(data, var_names: Optional[Sequence[str]] = None):
    """``arviz.summary`` (mean, sd, HDI) of ``var_names`` in the posterior group, as a DataFrame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return az.summary(data, var_names=list(var_names) if var_names else None, kind="stats")
        except TypeError:  # pragma: no cover - a summary without ``kind``
            return az.summary(data, var_names=list(var_names) if var_names else None)
