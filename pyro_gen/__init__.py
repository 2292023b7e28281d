"""pyro_gen: deep generative models the probabilistic-programming way.

VAEs written as Pyro model/guide pairs, trained by SVI on the ELBO, with diagnostics that tell
whether the fit worked.
"""
__version__ = "0.1.0"

from .vae import VAE, ModelSpec  # noqa: E402,F401
from .train import TrainSettings, FitResult, fit  # noqa: E402,F401
from .run import Run, load_run  # noqa: E402,F401

__all__ = ["VAE", "ModelSpec", "TrainSettings", "FitResult", "fit", "Run", "load_run", "__version__"]
