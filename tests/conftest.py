import numpy as np
import pyro
import pytest
import torch

from pyro_gen.data import load_bundled

# The tests use tiny networks: one thread avoids oversubscribing small machines (CI has 2 cores).
torch.set_num_threads(1)

MNIST_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "pyro_gen" / "_bundled"


@pytest.fixture(autouse=True)
def _seed_and_validate():
    """Every test starts from fixed seeds, an empty param store and Pyro validation on."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST-10k data set (real images)."""
    return load_bundled()


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, mnist):
    """A small slice of real MNIST as a user's .npz file: 300 images with labels, uint8."""
    path = tmp_path_factory.mktemp("data") / "mnist300.npz"
    images = np.round(mnist.train_x[:300, 0] * 255).astype(np.uint8)
    np.savez(path, images=images, labels=mnist.train_y[:300])
    return path
