"""Diagnostics that tell whether a VAE fit worked, and why not.

* :mod:`~pyro_gen.diagnostics.latent` -- the ELBO's reconstruction and KL terms, KL per latent
  dimension, active units, the ELBO-surgery split of the KL into mutual information and marginal
  KL, the posterior-collapse flag, and the per-epoch hook for :func:`pyro_gen.train.fit`.
* :mod:`~pyro_gen.diagnostics.importance` -- the IWAE bound against K and the PSIS
  :math:`\\hat k` of each datum, from one set of importance weights.
* :mod:`~pyro_gen.diagnostics.gap` -- approximation and amortization gaps.
* :mod:`~pyro_gen.diagnostics.gradients` -- variance and signal-to-noise ratio of the ELBO's
  gradient per parameter group.
* :mod:`~pyro_gen.diagnostics.posterior` -- latent posterior draws as ArviZ data.
* :mod:`~pyro_gen.diagnostics.verdicts` -- plain-language verdicts with their thresholds.
* :mod:`~pyro_gen.diagnostics.pipeline` -- all of it on a run directory (``pyro-gen diagnose``).

Importing this package does not import ArviZ (slow to import); the functions that need it do.
"""
from .pipeline import FIGURES, Diagnosis, diagnose, diagnose_run, to_jsonable
from .gap import GapResult, amortization_gap, local_family
from .gradients import GradientNoise, gradient_noise, parameter_groups
from .importance import KHAT_BAD, KHAT_GOOD, IWAECurve, default_ks, iwae_curve, log_weight_matrix, pareto_k
from .latent import (ACTIVE_THRESHOLD, COLLAPSE_ACTIVE, COLLAPSE_KL, POINT_MASS_NOTE, LatentDiagnostics,
                     active_units, elbo_surgery, elbo_terms, epoch_diagnostics, is_point_mass, kl_per_dimension_estimate,
                     latent_diagnostics, make_epoch_metrics, posterior_means, unit_activity,
                     unsupported_reason)
from .posterior import posterior_data
from .verdicts import THRESHOLDS, Verdict, make_verdicts

__all__ = ["ACTIVE_THRESHOLD", "COLLAPSE_ACTIVE", "COLLAPSE_KL", "FIGURES", "KHAT_BAD", "KHAT_GOOD",
           "POINT_MASS_NOTE", "THRESHOLDS", "Diagnosis", "GapResult", "GradientNoise", "IWAECurve",
           "LatentDiagnostics", "Verdict", "active_units", "amortization_gap", "default_ks", "diagnose",
           "diagnose_run", "elbo_surgery", "elbo_terms", "epoch_diagnostics", "gradient_noise", "is_point_mass",
           "iwae_curve", "kl_per_dimension_estimate", "latent_diagnostics", "local_family", "log_weight_matrix",
           "make_epoch_metrics", "make_verdicts", "parameter_groups", "pareto_k", "posterior_data",
           "posterior_means", "to_jsonable", "unit_activity", "unsupported_reason"]
