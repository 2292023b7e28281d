"""The ArviZ data (posterior.nc) round trip and the HTML report.
"""

import numpy as np

from _ppca import LinearDecoder, normal_kl, orthogonal_ppca as ppca  # noqa: E402,F401



D, L = 6, 2


# ---------------------------------------------------------------- ArviZ data and the report

def test_posterior_data_roundtrip(tmp_path):
    """posterior.nc opens with az.from_netcdf; az.summary's means of z match the exact posterior
    means (4 s.e. of 400 draws); the exact q's log weights are constant; per-datum data round-trip.
    (The HTML report is checked end to end in test_pipeline.py.)"""
    from pyro_gen import _arviz
    from pyro_gen.diagnostics import posterior_data

    vae, x, log_px = ppca(n=8)
    data = posterior_data(vae, x, np.arange(8) * 3, labels=np.arange(8) % 2, num_draws=400,
                          per_datum={"pareto_k": np.linspace(0, 1, 8)}, attrs={"note": "test"})
    _arviz.to_netcdf(data, tmp_path / "posterior.nc")
    back = _arviz.from_netcdf(tmp_path / "posterior.nc")
    assert back.posterior["z"].dims == ("chain", "draw", "datum", "latent")
    assert np.allclose(back.constant_data["pareto_k"].values, np.linspace(0, 1, 8))
    assert np.array_equal(back.constant_data["test_index"].values, np.arange(8) * 3)
    table = _arviz.summary(back, var_names=["z"])
    mean, sd = vae.guide_net.exact(x)
    assert np.allclose(table["mean"].values.reshape(8, L), mean.numpy(), atol=float(4 * sd.max() / 20))
    lw = back.sample_stats["log_weight"].values  # (chain, draw, datum)
    assert np.allclose(lw, log_px.numpy()[None, None, :], atol=1e-3)  # exact q: log w = log p(x)
