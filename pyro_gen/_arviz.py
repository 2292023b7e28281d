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
    except ImportError as e:  # neither line's PSIS: an ArviZ this shim does not know
        raise ImportError("no PSIS implementation found: expected arviz.psislw (arviz < 1) or "
                          "arviz_stats.base.array_stats.psislw (arviz >= 1)") from e
    return lambda a: array_stats.psislw(a, r_eff=1.0, axis=-1)


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


#: Log weights whose finite values all lie within this many nats of each other are constant to
#: working precision: the weights differ by less than 0.1 %, the proposal is the target, and there
#: is no tail to fit (the backends then return NaN, inf or raise, differently in each ArviZ line).
FLAT_SPREAD = 1e-3


def psislw(log_weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance sampling (Vehtari et al. 2024) along the last axis.

    The same answer on every ArviZ line for the rows a backend cannot fit, decided here on
    purpose rather than left to the backend:

    * weights constant to working precision (finite log weights within :data:`FLAT_SPREAD` nats
      of each other): :math:`\\hat k = -\\infty`, a perfect proposal; the smoothed weights are uniform;
    * a log weight of :math:`+\\infty`: :math:`\\hat k = +\\infty` (one draw carries all the weight);
    * a NaN log weight: :math:`\\hat k` is NaN (the weights are undefined) and so are the smoothed weights;
    * :math:`-\\infty` log weights (zero weights) are allowed and stay zero.

    :param log_weights: log importance ratios :math:`\\log p(x, z_s) - \\log q(z_s)`, shape
        ``(..., S)``.
    :returns: ``(smoothed, khat)``: the smoothed log weights (same shape, normalized so that they
        log-sum-exp to 0 along the last axis) and the Pareto shape estimates, shape ``(...)``.
    """
    lw = np.array(log_weights, dtype=np.float64, copy=True)
    shape = lw.shape
    rows = lw.reshape(-1, shape[-1])
    smoothed = np.full_like(rows, np.nan)
    khat = np.full(len(rows), np.nan)
    has_nan = np.isnan(rows).any(-1)
    has_posinf = np.isposinf(rows).any(-1)
    finite = np.where(np.isfinite(rows), rows, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN rows
        spread = np.nanmax(finite, -1) - np.nanmin(finite, -1)
    flat = ~has_nan & ~has_posinf & (np.nan_to_num(spread, nan=0.0) < FLAT_SPREAD)
    khat[has_posinf & ~has_nan] = np.inf
    for i in np.flatnonzero(has_posinf & ~has_nan):
        smoothed[i] = np.where(np.isposinf(rows[i]), 0.0, -np.inf) - np.log(np.isposinf(rows[i]).sum())
    for i in np.flatnonzero(flat):
        ok = np.isfinite(rows[i])
        smoothed[i] = np.where(ok, -np.log(max(ok.sum(), 1)), -np.inf)
    khat[flat] = -np.inf
    fit = ~has_nan & ~has_posinf & ~flat
    if fit.any():
        raw, sign = _psis_sign()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ArviZ warns on k-hat > 0.7: we report it ourselves
            s, k = raw(sign * rows[fit])
        s = np.asarray(s, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            smoothed[fit] = s - np.logaddexp.reduce(s, axis=-1, keepdims=True)
        khat[fit] = np.asarray(k, dtype=np.float64).reshape(-1)
    return smoothed.reshape(shape), khat.reshape(shape[:-1])


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
        data = {g: dict(v) for g, v in groups.items()}  # arviz 1.x: one dict of groups, attrs per group
        group_attrs = {g: dict(attrs or {}) for g in data}
        group_attrs["/"] = dict(attrs or {})
        return az.from_dict(data, coords=coords, dims=dims, attrs=group_attrs)


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
        import xarray  # arviz 1.x without from_netcdf
        return xarray.open_datatree(str(path)).load()


def summary(data, var_names: Optional[Sequence[str]] = None):
    """``arviz.summary`` (mean, sd, HDI) of ``var_names`` in the posterior group, as a DataFrame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return az.summary(data, var_names=list(var_names) if var_names else None, kind="stats")
        except TypeError:  # a summary without ``kind``
            return az.summary(data, var_names=list(var_names) if var_names else None)
