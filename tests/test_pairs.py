"""The model/guide pair as the contract: log weights from traces against closed forms, the
built-in fast paths against the generic one, per-site KL, parameters made by ``pyro.param`` and
``PyroModule``, refusals in one line, and a user's own pair through every command."""
import json

import pyro
import pytest
import torch

from _pairs import LazyParamVAE, PyroModuleVAE, TwoLayerLinearGaussian
from pyro_gen.checkpoint import load_checkpoint
from pyro_gen.cli import main
from pyro_gen.errors import InputError
from pyro_gen.evaluate import importance_log_likelihood
from pyro_gen.families import FAMILIES
from pyro_gen.traces import inspect_pair, trace_log_weights
from pyro_gen.train import TrainSettings, fit
from pyro_gen.vae import ModelSpec

IMAGE = (1, 6, 5)


def test_generic_log_weights_of_a_two_layer_linear_gaussian_are_the_exact_marginal():
    """With the exact posterior as guide every log weight equals log p(x) (1e-6, float64), for
    the vectorized particles and for the repeated-data path alike."""
    pair = TwoLayerLinearGaussian()
    x = pair.marginal().sample((8,))
    exact = pair.marginal().log_prob(x)
    for vectorize in (True, False):
        lw = trace_log_weights(pair, x, 16, vectorize=vectorize)
        assert lw.shape == (16, 8)
        assert torch.allclose(lw, exact.expand(16, 8), atol=1e-6)


def test_generic_importance_estimate_on_a_misspecified_guide():
    """A 1.4x wider guide: the ELBO is well below log p(x), the K=4000 estimate within 0.03 nats
    of it on average and above the ELBO (the direction theory gives, beyond Monte Carlo error)."""
    pair = TwoLayerLinearGaussian(widen=1.4)
    x = pair.marginal().sample((20,))
    exact = pair.marginal().log_prob(x)
    torch.manual_seed(0)
    lw = trace_log_weights(pair, x, 4000)
    elbo, estimate = lw.mean(0), torch.logsumexp(lw, 0) - torch.log(torch.tensor(4000.0, dtype=lw.dtype))
    assert float((exact - elbo).mean()) > 0.2
    assert abs(float((estimate - exact).mean())) < 0.03
    assert float((estimate - elbo).min()) > 0


GUIDES = ["diagonal", "fullrank", "iaf:2"]
PRIORS = ["standard", "learned", "mog:3", "vamp:3", "flow:1", "studentt"]


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("guide", GUIDES)
def test_the_vaes_fast_path_equals_the_generic_one(guide, prior):
    """VAE.log_weights (the encoder once for all K draws) and the trace-based log weights agree
    to 1e-4 nats per draw on the same random draws."""
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,), guide=guide, prior=prior).build().eval()
    x = torch.rand(7, *IMAGE).bernoulli()
    torch.manual_seed(0)
    fast = vae.log_weights(x, 11)
    torch.manual_seed(0)
    generic = trace_log_weights(vae, x, 11)
    assert torch.allclose(fast, generic, atol=1e-4)


def test_the_cvaes_and_the_ssvaes_fast_paths_equal_the_generic_one():
    from pyro_gen.ssvae import build_ssvae
    x = torch.rand(6, *IMAGE).bernoulli()
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    cvae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,), condition_dim=3).build().eval()
    torch.manual_seed(0)
    fast = cvae.log_weights(x, 5, y)
    torch.manual_seed(0)
    assert torch.allclose(fast, trace_log_weights(cvae, x, 5, y), atol=1e-4)
    ssvae = build_ssvae(ModelSpec(IMAGE, latent_dim=3, hidden=(16,), condition_dim=3)).eval()
    torch.manual_seed(0)
    fast = ssvae.log_weights(x, 5)
    torch.manual_seed(0)
    assert torch.allclose(fast, trace_log_weights(ssvae, x, 5), atol=1e-4)


def test_every_family_with_a_fast_path_is_held_to_the_generic_one():
    """vae/cvae/ssvae above; ae has no density; hvae and user pairs have only the generic path; the
    GAN has no likelihood."""
    fast = {"vae", "cvae", "ssvae"}
    no_density = {name for name, f in FAMILIES.items() if not f.density}
    assert no_density == {"gan"}
    assert fast | {"ae"} | no_density | {name for name, f in FAMILIES.items() if f.generic} == set(FAMILIES)


def test_a_latent_site_outside_the_data_plate_is_refused_in_one_line():
    from _pairs import GlobalLatentVAE
    with pytest.raises(InputError, match=r"GlobalLatentVAE.model: site 'w' is outside pyro.plate\('data'\)"):
        inspect_pair(GlobalLatentVAE(IMAGE), torch.rand(2, *IMAGE))


def test_a_module_without_model_and_guide_is_refused():
    with pytest.raises(InputError, match="not a model/guide pair: it has no model and no guide"):
        inspect_pair(torch.nn.Linear(2, 2), torch.rand(2, 2))


def _train(pair, x, run_dir, epochs, resume=False):
    # a constant learning rate: the cosine schedule's shape depends on the number of epochs
    return fit(pair, x, TrainSettings(epochs=epochs, batch_size=50, elbo="trace", seed=3, lr_schedule="constant"),
               run_dir=run_dir,
               resume=resume, progress=False, binarize=True)


@pytest.mark.parametrize("make", [LazyParamVAE, PyroModuleVAE], ids=["pyro.param", "PyroModule"])
def test_pyro_param_and_pyromodule_pairs_train_checkpoint_resume_bit_exactly(make, mnist, tmp_path):
    x = mnist.train_x[:200]
    pyro.clear_param_store()
    torch.manual_seed(0)
    whole = make()
    _train(whole, x, tmp_path / "whole", 3)
    final = {k: v.clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    torch.manual_seed(0)
    part = make()
    _train(part, x, tmp_path / "part", 2)
    state = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    if make is LazyParamVAE:
        assert set(state["pyro_params"]) == {"prior_scale"}  # the store's own parameter is checkpointed
    pyro.clear_param_store()
    torch.manual_seed(99)
    again = make()  # other initial values: everything must come from the checkpoint
    _train(again, x, tmp_path / "part", 3, resume=True)
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    for name, value in final.items():
        assert torch.equal(value, pyro.param(name).detach()), name
    rows = lambda d: [{k: v for k, v in json.loads(r).items() if k != "seconds"}  # noqa: E731
                      for r in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert rows("whole") == rows("part")
    xt = torch.as_tensor(mnist.test_x[:20]).bernoulli()
    assert torch.isfinite(importance_log_likelihood(again, xt, k=10)).all()


def test_a_lazy_pyro_param_is_trained():
    """The engine optimizes a parameter the pair creates on its first call."""
    pyro.clear_param_store()
    pair = LazyParamVAE(IMAGE)
    fit(pair, torch.rand(60, *IMAGE).numpy(), TrainSettings(epochs=2, batch_size=20, elbo="trace", lr=0.05),
        progress=False, binarize=True)
    assert not torch.allclose(pyro.param("prior_scale").detach(), torch.ones(4))


TINY = ["--hidden", "16", "--latent-dim", "3", "--batch-size", "100", "--quiet"]
DIAG = ["--k-max", "100", "--points", "20", "--gap-points", "2", "--gap-steps", "5", "--grad-repeats", "4", "--quiet"]


@pytest.mark.parametrize("target", ["_pairs:TutorialVAE", "_pairs:LazyParamVAE", "_pairs:PyroModuleVAE"])
def test_a_users_pair_through_every_command(target, tmp_path, small_npz, capsys):
    pyro.clear_param_store()
    run = tmp_path / "run"
    argv = ["train", "--model", f"module:{target}", "--data", str(small_npz), "--out", str(run), *TINY]
    assert main(argv + ["--epochs", "2"]) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["model_kind"] == "module" and config["module"] == target and config["train"]["elbo"] == "trace"
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("kl_sites" in r and "diagnostics_error" not in r for r in rows)
    pyro.clear_param_store()
    assert main(argv + ["--epochs", "3", "--resume"]) == 0  # the same command line continues it
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    pyro.clear_param_store()
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["test_nll"] > 0 and result["test_nll"] <= -result["test_elbo"] + 0.5
    assert main(["diagnose", str(run), *DIAG]) == 0, capsys.readouterr().err
    summary = json.loads((run / "diagnostics.json").read_text())
    assert set(summary["latent"]["sites"]) == ({"za", "zb"} if "PyroModule" in target else {"latent"})
    assert summary["iwae"] is not None and summary["gradients"]
    assert (run / "report.html").is_file() and (run / "posterior.nc").is_file()
    report = (run / "report.html").read_text()
    assert f"your own model/guide pair, module:{target}" in report and "guide q(z|x)" not in report
    code = main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")])
    if target.endswith("TutorialVAE") or target.endswith("LazyParamVAE"):
        assert code == 0 and (tmp_path / "s.png").is_file()
    else:
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "defines no sample(n, generator=None) method" in err


def test_an_unsupported_pair_exits_2_with_one_line_and_nothing_written(tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "module:_pairs:GlobalLatentVAE", "--data", str(small_npz), "--out", str(run),
                 "--epochs", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "site 'w' is outside pyro.plate('data')" in err
    assert not run.exists()


@pytest.mark.parametrize("flags, phrase", [(["--model", "module:_pairs:Nope"], "has no callable 'Nope'"),
                                           (["--model", "module:no_such_module:X"], "cannot import 'no_such_module'"),
                                           (["--model", "module:_pairs:TutorialVAE", "--prior", "vamp"],
                                            "cannot take --prior"),
                                           (["--model", "hvae", "--guide", "iaf"], "cannot take --guide")])
def test_bad_model_flags_exit_2(flags, phrase, tmp_path, small_npz, capsys):
    run = tmp_path / "run"
    assert main(["train", *flags, "--data", str(small_npz), "--out", str(run), "--epochs", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and phrase in err, err
    assert not run.exists()


def test_hvae_trains_evaluates_diagnoses_and_samples(tmp_path, small_npz, capsys):
    run = tmp_path / "hvae"
    assert main(["train", "--model", "hvae", "--data", str(small_npz), "--out", str(run), "--epochs", "3",
                 *TINY]) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(set(r["kl_sites"]) == {"z1", "z2"} for r in rows)
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    assert main(["diagnose", str(run), *DIAG]) == 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0


def test_hvae_with_a_vamp_prior_on_its_top_layer_through_the_cli(tmp_path, small_npz, capsys):
    """--prior applies to z2 of the hvae: the VampPrior's pseudo-inputs are trained, checkpointed,
    evaluated, diagnosed (per-epoch diagnostics on) and sampled from."""
    run = tmp_path / "hvae"
    assert main(["train", "--model", "hvae", "--prior", "vamp:3", "--data", str(small_npz), "--out", str(run),
                 "--epochs", "3", *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["prior"] == "vamp:3"
    state = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert state["prior.pseudo_inputs"].shape == (3, 1, 28, 28)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(r["kl_sites"]) == {"z1", "z2"} for r in rows)
    assert main(["evaluate", str(run), "--k", "20", "--draws", "2", "--json"]) == 0
    assert main(["diagnose", str(run), *DIAG]) == 0
    assert "prior vamp:3" in (run / "report.html").read_text()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_hvae_top_prior_is_the_density_of_z2(inference):
    """The model's z2 is scored by the prior module; the VampPrior's components are the guide's
    top layer at the pseudo-inputs (bottom-up: through the means of the layers below); the
    standard prior has no module, so the checkpoints of runs written before --prior applied load."""
    from pyro_gen.hvae import HVAE
    torch.manual_seed(0)
    x = (torch.rand(5, 1, 28, 28) < 0.5).float()
    hvae = HVAE((1, 28, 28), (6, 4), (12,), inference=inference, prior="vamp:3")
    trace = pyro.poutine.trace(hvae.model).get_trace(x)
    z2 = trace.nodes["z2"]["value"]
    torch.testing.assert_close(trace.nodes["z2"]["fn"].log_prob(z2), hvae.prior().log_prob(z2))
    u = hvae.prior.pseudo_inputs
    v = u.reshape(3, -1)
    if inference == "bottom-up":
        top = hvae.encoders[1](hvae.encoders[0](v).base_dist.loc)
    else:
        top = hvae.encoders[-1](hvae.features(v))
    components = hvae.prior().component_distribution
    torch.testing.assert_close(components.base_dist.loc, top.base_dist.loc)
    assert not any(k.startswith("prior.") for k in HVAE((1, 28, 28), (6, 4), (12,)).state_dict())


def test_hvae_samples_draw_the_top_layer_and_the_layers_below_from_different_numbers():
    """sample_prior reads a generator without moving it on: the layer below must not reuse the
    top layer's random numbers (with a learned prior at its start, N(0, I), they were equal)."""
    from pyro_gen.hvae import HVAE
    torch.manual_seed(0)
    hvae = HVAE((1, 28, 28), (6, 4), (12,), prior="learned")
    seen = {}
    hvae.decoders[0].register_forward_hook(lambda m, i, o: seen.update(z2=i[0], p=o.base_dist))
    hvae.pixels.register_forward_hook(lambda m, i, o: seen.update(z1=i[0]))
    first = hvae.sample(5, generator=torch.Generator().manual_seed(3))
    eps1 = (seen["z1"] - seen["p"].loc) / seen["p"].scale
    assert not torch.allclose(eps1[:, :4], seen["z2"], atol=1e-3)
    torch.testing.assert_close(hvae.sample(5, generator=torch.Generator().manual_seed(3)), first)  # reproducible


def test_the_hvae_family_defaults_to_the_trace_elbo_and_a_kl_warm_up_the_user_can_change():
    hvae = FAMILIES["hvae"]
    assert hvae.defaults_for({}) == {"elbo": "trace", "warmup_epochs": 10}
    assert hvae.defaults_for({"epochs": 3}) == {"elbo": "trace", "warmup_epochs": 1, "epochs": 3}  # at most half
    assert hvae.defaults_for({"warmup_epochs": 0})["warmup_epochs"] == 0
    assert FAMILIES["vae"].defaults_for({"lr": 1e-3}) == {"lr": 1e-3}
