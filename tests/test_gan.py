"""The GAN baseline: losses against hand computations, the shared generator network, exact
resume, learning a toy distribution, and the CLI (train --model gan, sample, compare) end to end
on a small slice of real MNIST."""
import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pyro_gen.checkpoint import RunError
from pyro_gen.run import load_run
from pyro_gen.cli import main
from pyro_gen.compare import StopTraining, WallClockBudget
from pyro_gen.gan import (GANSettings, add_spectral_norm, build_gan, discriminator_loss, ema_decay, fit_gan,
                          gan_spec, generator_loss, gradient_penalty)
from pyro_gen.nets import ConvEncoder, MLPDecoder, MLPEncoder
from pyro_gen.vae import ModelSpec

TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks train several times faster on one thread than on two on a shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --- losses -----------------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_matches_the_hand_computation():
    # D(x) = <w, x> + b has gradient w everywhere: the penalty is (|w| - 1)^2 whatever x,
    # and its gradient with respect to w is 2 (|w| - 1) w / |w|.
    torch.manual_seed(0)
    w = torch.tensor([[[1.0, 2.0], [2.0, 0.0]]], requires_grad=True)  # |w| = 3
    critic = lambda x: (x * w).flatten(1).sum(1) + 0.7  # noqa: E731
    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-6)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * (3.0 - 1.0) * w.detach() / 3.0)


def test_gradient_penalty_interpolates_real_and_fake_images():
    # D(x) = |x|^2 / 2 has gradient x: the penalty is the mean of (|eps x + (1 - eps) x~| - 1)^2.
    real = torch.tensor([[[[3.0, 4.0]]], [[[0.0, 1.0]]]])
    fake = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 3.0]]]])
    eps = torch.tensor([0.5, 0.25])
    # x_hat = (1.5, 2) with norm 2.5, and (0, 0.25 + 2.25) with norm 2.5
    gp = gradient_penalty(lambda x: 0.5 * (x ** 2).flatten(1).sum(1), real, fake, eps=eps)
    assert gp.item() == pytest.approx(((2.5 - 1) ** 2 + (2.5 - 1) ** 2) / 2, rel=1e-6)


def test_gan_losses_match_their_formulas():
    d_real, d_fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-0.5, 1.5, 0.0])
    bce = (F.binary_cross_entropy_with_logits(d_real, torch.ones(3))
           + F.binary_cross_entropy_with_logits(d_fake, torch.zeros(3)))
    torch.testing.assert_close(discriminator_loss("ns", d_real, d_fake), bce)
    # the non-saturating generator loss is -log sigmoid(D(G(z)))
    torch.testing.assert_close(generator_loss("ns", d_fake), -torch.log(torch.sigmoid(d_fake)).mean())
    assert discriminator_loss("wgan-gp", d_real, d_fake).item() == pytest.approx(d_fake.mean() - d_real.mean())
    assert generator_loss("wgan-gp", d_fake).item() == pytest.approx(-d_fake.mean().item())


def test_settings_take_per_loss_defaults_and_reject_bad_values():
    ns, wgan = GANSettings(), GANSettings(loss="wgan-gp")
    assert (ns.lr, ns.d_lr, ns.betas, ns.n_critic) == (2e-4, 2e-4, (0.5, 0.999), 1)
    assert (wgan.lr, wgan.n_critic, wgan.betas) == (2e-4, 5, (0.5, 0.9))
    assert GANSettings(lr=1e-3).d_lr == 2e-4  # the two learning rates are separate
    for bad in (dict(loss="hinge"), dict(lr=-1.0), dict(n_critic=0), dict(betas=(0.5, 1.5)), dict(epochs=0),
                dict(disc_net="resnet"), dict(ema=1.0), dict(ema=-0.1)):
        with pytest.raises(ValueError):
            GANSettings(**bad)


# --- stabilisers: spectral normalization, weight averaging ------------------------------------------

@pytest.mark.parametrize("disc_net", ["mlp", "conv"])
def test_spectral_norm_makes_every_layer_s_largest_singular_value_one(disc_net):
    torch.manual_seed(0)
    gan = build_gan(gan_spec((1, 12, 12), latent_dim=2, hidden=(24,)), GANSettings(disc_net=disc_net))
    x = torch.rand(8, 1, 12, 12)
    for _ in range(200):  # each training forward pass takes one power-iteration step
        gan.discriminator(x)
    layers = [m for m in gan.discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == (2 if disc_net == "mlp" else 4)  # every linear / conv layer, the head included
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=5e-3)
        raw = m.parametrizations.weight.original
        assert torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2).item() != pytest.approx(1.0, abs=0.05)
    # a linear map W / sigma(W) has Lipschitz constant 1: the output moves no more than the input
    lin = add_spectral_norm(torch.nn.Sequential(torch.nn.Linear(5, 3)))
    for _ in range(30):
        lin(torch.randn(4, 5))
    lin.eval()
    a, b = torch.randn(100, 5), torch.randn(100, 5)
    assert ((lin(a) - lin(b)).norm(dim=1) <= (a - b).norm(dim=1) * (1 + 1e-4)).all()


def test_weight_average_matches_its_closed_form_and_is_what_samples_come_from():
    # theta_bar_T = beta^T theta_0 + (1 - beta) sum_t beta^(T - t) c_t when the decoder's weights are c_t at step t
    torch.manual_seed(0)
    gan = build_gan(gan_spec((1, 2, 2), latent_dim=2, hidden=(3,)), GANSettings(ema=0.9))
    w0 = gan.decoder.net[0].weight.detach().clone()
    beta, values = 0.9, [1.0, -2.0, 0.5, 3.0]
    for c in values:
        with torch.no_grad():
            gan.decoder.net[0].weight.fill_(c)
        gan.update_average(beta)
    expected = beta ** len(values) * w0 + (1 - beta) * sum(beta ** (len(values) - 1 - t) * c for t, c in enumerate(values))
    torch.testing.assert_close(gan.average.net[0].weight, expected)
    z = torch.randn(5, 2)
    torch.testing.assert_close(gan.sample(5, generator=torch.Generator().manual_seed(1)),
                               torch.sigmoid(gan.average(torch.randn(5, 2, generator=torch.Generator().manual_seed(1)))))
    assert not torch.allclose(gan.decode(z), gan.generate(z).detach())  # training uses the current weights
    # the decay ramps up to beta: (1 + t) / (10 + t) early on
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11) and ema_decay(0.999, 10 ** 6) == 0.999
    assert build_gan(gan_spec((1, 2, 2), latent_dim=2, hidden=(3,)), GANSettings(ema=0.0)).average is None
    with pytest.raises(ValueError, match="weight average"):  # a GAN built without an average, settings with one
        fit_gan(build_gan(gan_spec((1, 2, 2), latent_dim=2, hidden=(3,)), GANSettings(ema=0.0)),
                np.zeros((4, 1, 2, 2), np.float32), GANSettings(ema=0.9), progress=False)


# --- the networks are the VAE's -------------------------------------------------------------------

@pytest.mark.parametrize("net, activation", [("mlp", "softplus"), ("mlp", "leaky_relu"), ("conv", "leaky_relu")])
def test_generator_is_the_vae_decoder_and_discriminator_the_encoder_body(net, activation):
    kw = dict(latent_dim=3, net=net, hidden=(24,), activation=activation)
    vae = ModelSpec(image_shape=(1, 28, 28), **kw).build()
    gan = build_gan(gan_spec((1, 28, 28), **kw), GANSettings(spectral_norm=False, ema=0.0))
    gan.decoder.load_state_dict(vae.decoder.state_dict())  # strict: the very same architecture
    z = torch.randn(6, 3)
    torch.testing.assert_close(gan.decode(z), vae.decode(z))
    torch.testing.assert_close(gan.decode(z), torch.sigmoid(vae.decoder(z)))
    # the discriminator: the VAE's encoder body (always with leaky ReLU) and a linear head
    leaky_vae = ModelSpec(image_shape=(1, 28, 28), **{**kw, "activation": "leaky_relu"}).build()
    gan.discriminator.body.load_state_dict(leaky_vae.guide_net.encoder.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert gan.discriminator(x).shape == (4,)
    torch.testing.assert_close(gan.discriminator(x),
                               gan.discriminator.head(leaky_vae.guide_net.encoder(x)).squeeze(-1))
    assert not any(isinstance(m, torch.nn.Softplus) for m in gan.discriminator.modules())


def test_sample_is_reproducible_from_a_generator():
    gan = build_gan(gan_spec((1, 8, 8), latent_dim=2, hidden=(8,)))
    a = gan.sample(5, generator=torch.Generator().manual_seed(1))
    b = gan.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="unconditional"):
        gan.sample(2, y=torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("net, condition_dim", [("mlp", 0), ("conv", 0), ("mlp", 3)])
def test_activation_replaces_every_softplus_and_keeps_the_parameters(net, condition_dim):
    from pyro_gen.nets import make_networks
    torch.manual_seed(0)
    soft = make_networks(net, (1, 12, 12), 2, (8,), condition_dim=condition_dim)
    torch.manual_seed(0)
    leaky = make_networks(net, (1, 12, 12), 2, (8,), condition_dim=condition_dim, activation="leaky_relu")
    for a, b in zip(soft, leaky):
        assert any(isinstance(m, torch.nn.Softplus) for m in a.modules())
        assert not any(isinstance(m, torch.nn.Softplus) for m in b.modules())
        assert sum(isinstance(m, torch.nn.LeakyReLU) for m in b.modules()) == \
            sum(isinstance(m, torch.nn.Softplus) for m in a.modules())
        assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(ValueError, match="unknown activation"):
        make_networks("mlp", (1, 4, 4), 2, (8,), activation="gelu")


def test_activation_flag_reaches_the_saved_vae(tmp_path, small_npz):
    from pyro_gen.run import load_run
    out = tmp_path / "relu-vae"
    assert main(["train", "--data", str(small_npz), "--epochs", "1", "--activation", "relu", "--out", str(out),
                 *TINY]) == 0
    run = load_run(out)
    assert run.spec.activation == "relu"
    assert any(isinstance(m, torch.nn.ReLU) for m in run.vae.decoder.modules())
    assert not any(isinstance(m, torch.nn.Softplus) for m in run.vae.decoder.modules())


# --- training ---------------------------------------------------------------------------------

@pytest.mark.parametrize("loss, epochs, lr", [("ns", 30, 2e-3), ("wgan-gp", 40, 5e-3)])
def test_gan_learns_a_shifted_gaussian(loss, epochs, lr):
    # Data: 2-pixel "images" from N((2, -1), 0.3^2 I); a Gaussian likelihood makes the generator's
    # output layer the identity. GAN iterates circle around the equilibrium, so the check is on the
    # samples' mean averaged over the second half of training: within 0.3 of (2, -1) (seeds 0-3
    # gave 0.03 to 0.13), while the untrained generator's mean is more than 1.5 away.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = (np.array([2.0, -1.0]) + 0.3 * rng.normal(size=(1024, 2))).astype(np.float32).reshape(1024, 1, 1, 2)
    gan = build_gan(gan_spec((1, 1, 2), latent_dim=2, hidden=(32,), likelihood="gaussian"))
    target = torch.tensor([2.0, -1.0])
    assert torch.linalg.norm(gan.sample(2000).reshape(2000, 2).mean(0) - target) > 1.5
    means, stds = [], []

    def record(row):
        s = gan.sample(2000, generator=torch.Generator().manual_seed(0)).reshape(2000, 2)
        means.append(s.mean(0))
        stds.append(s.std(0))

    fit_gan(gan, x, GANSettings(loss=loss, epochs=epochs, batch_size=64, lr=lr, d_lr=lr), progress=False,
            on_epoch=record)
    torch.testing.assert_close(torch.stack(means[epochs // 2:]).mean(0), target, atol=0.3, rtol=0)
    spread = torch.stack(stds[epochs // 2:]).mean(0)
    assert 0.03 < spread.min() and spread.max() < 1.0  # not collapsed to a point, not diffuse


def test_resume_is_exact_and_budget_stops_after_an_epoch(mnist, tmp_path):
    x = mnist.train_x[:256]
    spec = gan_spec((1, 28, 28), latent_dim=2, hidden=(16,))
    settings = GANSettings(epochs=2, batch_size=64)
    torch.manual_seed(0)
    straight = build_gan(spec)
    fit_gan(straight, x, settings, run_dir=tmp_path / "a", progress=False)
    torch.manual_seed(0)
    first = build_gan(spec)
    with pytest.raises(StopTraining):  # a spent budget stops training after the first epoch, saved
        fit_gan(first, x, settings, run_dir=tmp_path / "b", progress=False, on_epoch=WallClockBudget(0.0))
    resumed = build_gan(spec)
    fit_gan(resumed, x, settings, run_dir=tmp_path / "b", resume=True, progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r["d_loss"]) for r in rows)


# --- command line -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("runs") / "gan"
    assert main(["train", "--model", "gan", "--data", str(small_npz), "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


def test_train_gan_writes_a_run_directory_that_loads(gan_run):
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "samples.png", "summary.json"):
        assert (gan_run / name).is_file(), name
    config = json.loads((gan_run / "config.json").read_text())
    assert config["model_kind"] == "gan" and config["train"]["loss"] == "ns"
    assert config["model"]["hidden"] == [16] and config["model"]["latent_dim"] == 2
    assert config["model"]["activation"] == "leaky_relu"  # the GAN's default generator activation
    from pyro_gen.run import Run, load_run
    run = load_run(gan_run, family="gan")
    assert run.settings.epochs == 1 and len(run.history) == 1
    # the default stabilisers: spectral norm on the spec's network kind, samples from the weight average
    assert (run.settings.disc_net, run.settings.spectral_norm, run.settings.ema) == (None, True, 0.999)
    assert GANSettings(loss="wgan-gp").spectral_norm is False  # the gradient penalty instead
    assert isinstance(run.gan.discriminator.body, MLPEncoder) and run.gan.average is not None
    assert isinstance(run, Run) and type(load_run(gan_run).model) is type(run.gan) and run.gan is run.model
    vae_config = {**config, "model_kind": "vae", "model": {**config["model"], "guide": "diagonal"},
                  "train": {"epochs": 1}}
    (gan_run.parent / "vae").mkdir(exist_ok=True)
    (gan_run.parent / "vae" / "config.json").write_text(json.dumps(vae_config))
    with pytest.raises(RunError, match="a vae run, not a gan run"):  # the family it must be
        load_run(gan_run.parent / "vae", family="gan")


def test_sample_works_on_a_gan_run(gan_run, tmp_path):
    assert main(["sample", str(gan_run), "-n", "12", "-o", str(tmp_path / "s.npy"), "--seed", "3"]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (12, 1, 28, 28) and 0 <= arr.min() and arr.max() <= 1
    assert np.abs(arr[0] - arr[1]).max() > 1e-4  # different z, different images
    assert main(["sample", str(gan_run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_wgan_gp_trains_and_resumes_through_the_cli(tmp_path, small_npz, capsys):
    out = tmp_path / "wgan"
    assert main(["train", "--model", "gan", "--gan-loss", "wgan-gp", "--d-lr", "3e-4", "--data", str(small_npz),
                 "--epochs", "1", "--out", str(out), *TINY]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    run = load_run(out)
    assert run.settings.loss == "wgan-gp" and run.settings.d_lr == 3e-4 and run.settings.lr == 2e-4
    assert [r["epoch"] for r in run.history] == [1, 2] and "gradient_penalty" in run.history[0]
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--gan-loss", "ns", "--quiet"]) == 2
    assert "cannot change --gan-loss" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--model", "gan", "--elbo", "meanfield"], "--model gan cannot take --elbo"),
    (["--model", "gan", "--prior", "vamp"], "--model gan cannot take --prior"),
    (["--gan-loss", "ns"], "--gan-loss: this flag is for --model gan"),
    (["--model", "vae", "--d-lr", "1e-3", "--disc-net", "conv"], "--d-lr, --disc-net: these flags are for --model gan"),
    (["--model", "vae", "--no-spectral-norm"], "--spectral-norm: this flag is for --model gan"),
])
def test_gan_flag_misuse_exits_2(argv, message, tmp_path, small_npz, capsys):
    assert main(["train", "--data", str(small_npz), "--out", str(tmp_path / "r"), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_conv_discriminator_with_mlp_generator_through_the_cli(tmp_path, small_npz, capsys):
    out = tmp_path / "convd"
    assert main(["train", "--model", "gan", "--disc-net", "conv", "--no-spectral-norm", "--ema", "0",
                 "--data", str(small_npz), "--epochs", "1", "--out", str(out), *TINY]) == 0
    run = load_run(out)
    assert (run.settings.disc_net, run.settings.spectral_norm, run.settings.ema) == ("conv", False, 0.0)
    assert isinstance(run.gan.discriminator.body, ConvEncoder) and isinstance(run.gan.decoder, MLPDecoder)
    assert run.gan.average is None
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "gan", "--ema", "1", "--data", str(small_npz), "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "expected a number in [0, 1)" in capsys.readouterr().err


def test_evaluate_refuses_a_gan_run_with_one_line(gan_run, capsys):
    assert main(["evaluate", str(gan_run)]) == 2
    err = capsys.readouterr().err
    assert "is a gan run: pyro-gen evaluate needs a model with a likelihood and a guide" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["diagnose", str(gan_run)]) == 2
    assert "pyro-gen diagnose needs a model with a likelihood" in capsys.readouterr().err


def test_compare_tables_hold_every_requested_model(gan_run, tmp_path, small_npz, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", "vae,ae,gan,wgan-gp", "--runs", str(gan_run), "--data", str(small_npz),
                 "--budget-seconds", "0.01", "--k", "20", "--draws", "2", "--hidden", "16", "--latent-dim", "2",
                 "--classifier-epochs", "1", "--classifier-cache", str(tmp_path / "cache"), "--out", str(out),
                 "--quiet"]) == 0
    table = capsys.readouterr().out
    result = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["data (train split)", "vae", "ae", "gan", "wgan-gp", "gan-2"]  # the run is named after its folder
    for name in ("vae", "ae", "gan", "wgan-gp"):
        assert rows[name]["epochs"] == 1  # the budget is spent within the first epoch
        assert (out / "runs" / name / "checkpoint.pt").is_file()
        assert f"| {name} |" in table
    assert rows["gan-2"]["epochs"] == 1 and rows["gan-2"]["run_dir"] == str(gan_run)
    # a likelihood only where one is defined: the VAE; IWAE (K=20) >= ELBO up to Monte Carlo noise
    vae = rows["vae"]
    assert vae["test_nll"] > 0 and vae["test_nll"] <= -vae["test_elbo"] + 0.5  # IS bound >= ELBO, up to MC error
    assert all(rows[m]["test_nll"] is None and rows[m]["test_elbo"] is None for m in ("ae", "gan", "wgan-gp", "gan-2"))
    # barely trained models are far from the real images, which score the floor
    data = rows["data (train split)"]
    assert all(rows[m]["fid"] > data["fid"] for m in ("vae", "ae", "gan", "wgan-gp", "gan-2"))
    assert data["precision"] > rows["gan"]["precision"] and result["n_samples"] == 30
    csv_lines = (out / "comparison.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("model,kind,run_dir")
    assert "# Comparison on" in (out / "comparison.md").read_text()
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("vae", "ae", "wgan-gp"):  # the comparison's runs are ordinary runs
        assert main(["sample", str(out / "runs" / name), "-n", "3", "-o", str(tmp_path / f"{name}.npy")]) == 0
        assert np.load(tmp_path / f"{name}.npy").shape == (3, 1, 28, 28)
    # the output folder is not overwritten
    assert main(["compare", "--runs", str(gan_run), "--data", str(small_npz), "--out", str(out), "--quiet",
                 "--classifier-epochs", "1", "--classifier-cache", str(tmp_path / "cache")]) == 2
    assert "already holds a comparison" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--models", "vae,bogus"], "--models vae,bogus: expected a comma-separated list"),
    (["--runs", "/nonexistent/run"], "no such run directory"),
])
def test_compare_bad_usage_exits_2(argv, message, tmp_path, small_npz, capsys):
    assert main(["compare", "--data", str(small_npz), "--out", str(tmp_path / "c"), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_compare_bad_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--budget-seconds", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a positive number" in err and len(err.strip().splitlines()) == 1


def test_compare_needs_labels(tmp_path, mnist, capsys):
    path = tmp_path / "nolabels.npy"
    np.save(path, (mnist.train_x[:100, 0] * 255).astype(np.uint8))
    assert main(["compare", "--models", "gan", "--data", str(path), "--out", str(tmp_path / "c"),
                 "--budget-seconds", "0.01", "--hidden", "8", "--latent-dim", "2", "--quiet"]) == 2
    assert "need class labels" in capsys.readouterr().err


def test_a_gan_has_no_guide_and_no_likelihood_and_older_runs_still_load(gan_run, tmp_path):
    """The GAN's spec has no guide (null in config.json) and its output layer holds no state; a run
    written before (guide "none", the likelihood's buffers in the checkpoint) loads the same."""
    import shutil
    from pyro_gen.checkpoint import load_checkpoint, save_checkpoint
    from pyro_gen.run import load_run
    config = json.loads((gan_run / "config.json").read_text())
    assert config["model"]["guide"] is None
    run = load_run(gan_run)
    assert not any("likelihood" in k for k in run.model.state_dict())
    with pytest.raises(ValueError, match="has no guide"):
        run.spec.build()
    old = tmp_path / "old"
    shutil.copytree(gan_run, old)
    config["model"]["guide"] = "none"
    (old / "config.json").write_text(json.dumps(config))
    state = load_checkpoint(old / "checkpoint.pt")
    state["model"]["likelihood.raw_scale"] = torch.tensor(0.0)
    save_checkpoint(old / "checkpoint.pt", state)
    again = load_run(old)
    assert again.spec.guide is None
    z = torch.randn(3, run.model.latent_dim)
    assert torch.equal(again.model.decode(z), run.model.decode(z))


def test_a_gan_checkpoint_of_the_previous_layout_resumes(gan_run, tmp_path):
    """Before the GAN trained in the engine's loop its checkpoint had one generator for the data
    order and z (no ``z_rng``) and the likelihood's buffers: it resumes, and a checkpoint that is
    not a GAN's is refused in one line naming the file."""
    import shutil
    from pyro_gen.checkpoint import load_checkpoint, save_checkpoint
    old = tmp_path / "old"
    shutil.copytree(gan_run, old)
    state = load_checkpoint(old / "checkpoint.pt")
    del state["z_rng"]
    state["model"]["likelihood.raw_scale"] = torch.tensor(0.0)
    save_checkpoint(old / "checkpoint.pt", state)
    assert main(["train", "--resume", "--out", str(old), "--epochs", "2", "--quiet"]) == 0
    assert len(load_run(old).history) == 2
    del state["opt_d"]
    save_checkpoint(old / "checkpoint.pt", state)
    with pytest.raises(RunError, match="checkpoint.pt: not a checkpoint of this model"):
        fit_gan(load_run(old).gan, np.zeros((20, 1, 28, 28), np.float32),
                GANSettings(**{**load_run(old).config["train"], "epochs": 3}), run_dir=old, resume=True,
                progress=False)
