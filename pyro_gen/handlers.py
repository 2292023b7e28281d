"""Effect handlers the training engine applies to a model/guide pair from outside.

What changes during training reaches the pair through Pyro's effect handlers, never by setting an
attribute of the module and restoring it: the pair stays the plain ``model(x)`` / ``guide(x)`` a
user wrote, and the same pair is evaluated unscaled.

* :class:`scale_data` multiplies the log density of every site inside the plate over data by
  :math:`N/B` (data-set size over minibatch size), so that the ELBO of a minibatch is an unbiased
  estimate of the ELBO of the whole data set (Hoffman et al. 2013, "Stochastic Variational
  Inference").
* :class:`scale_latents` multiplies the log density of every latent site, in model and guide alike,
  by :math:`\\beta`: the ELBO's :math:`E_q[\\log p(x \\mid z)] - \\mathrm{KL}(q \\| p)` becomes
  :math:`E_q[\\log p(x \\mid z)] - \\beta\\,\\mathrm{KL}(q \\| p)`, the β-VAE (Higgins et al. 2017)
  and KL warm-up (Bowman et al. 2016; Sønderby et al. 2016).
* :class:`record_latents` remembers each latent site's distribution and value, for the free-bits
  correction (:func:`pyro_gen.objectives.free_bits_penalty`), which the engine adds to the loss.

Each is a :class:`pyro.poutine.messenger.Messenger`: use it as a context manager around a call, or
wrap a callable (``scale_data(scale=N / B)(model)``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .traces import DATA_PLATE

__all__ = ["scale_data", "scale_latents", "scale_sites", "record_latents", "scaled"]


def _is_sample(msg) -> bool:
    return msg["type"] == "sample" and not site_is_subsample(msg)


class scale_sites(Messenger):
    """The engine's scales in one handler (one entry on Pyro's stack): sample sites inside one of
    ``plates`` get ``data_scale``, latent (not observed) sites ``beta``, latent sites inside the
    data plates both.

    :param data_scale: :math:`N/B`, the data-set size over the minibatch size.
    :param beta: the weight of the latent sites, > 0.
    :param plates: the names of the plates over data (default ``("data",)``).
    """

    def __init__(self, data_scale: float, beta: float, plates: Sequence[str] = (DATA_PLATE,)):
        super().__init__()
        self.data_scale, self.beta, self.plates = float(data_scale), float(beta), tuple(plates)

    def _process_message(self, msg):
        if not _is_sample(msg):
            return
        factor = self.beta if not msg["is_observed"] else 1.0
        if any(f.name in self.plates for f in msg["cond_indep_stack"]):
            factor *= self.data_scale
        if factor != 1.0:
            msg["scale"] = factor * msg["scale"]


def scale_data(scale: float, plates: Sequence[str] = (DATA_PLATE,)) -> scale_sites:
    """Multiply the scale of every sample site inside one of ``plates`` by ``scale`` (:math:`N/B`)."""
    return scale_sites(scale, 1.0, plates)


def scale_latents(beta: float) -> scale_sites:
    """Multiply the scale of every latent (not observed) sample site by ``beta``; applied to model
    and guide alike it multiplies the KL term of the ELBO and nothing else."""
    return scale_sites(1.0, beta)


class record_latents(Messenger):
    """Remember ``(distribution, value)`` of each latent sample site seen (the last call wins), in
    :attr:`sites`; the engine wraps the guide and the model in one each to compute free bits."""

    def __init__(self):
        super().__init__()
        self.sites: Dict[str, Tuple[object, object]] = {}

    def _postprocess_message(self, msg):
        if _is_sample(msg) and not msg["is_observed"]:
            self.sites[msg["name"]] = (msg["fn"], msg["value"])


def scaled(fn, data_scale: float = 1.0, beta: float = 1.0, plates: Sequence[str] = (DATA_PLATE,),
           recorder: Optional[record_latents] = None):
    """``fn`` under the engine's scales (:class:`scale_sites`; nothing at all when both are 1) and
    a recorder, if given."""
    out = fn if data_scale == 1.0 and beta == 1.0 else scale_sites(data_scale, beta, plates)(fn)
    return recorder(out) if recorder is not None else out
