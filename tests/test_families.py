"""The family registry's contract, once over every family: each family's own flags are declared in
its entry, shown by ``pyro-gen train --help`` under the family, and refused for any other family;
a setting a family refuses is refused in one line, unless given the family's own default."""
import argparse
import json

import pytest

from pyro_gen.cli import main
from pyro_gen.families import FAMILIES

TINY = ["--hidden", "16", "--latent-dim", "3", "--batch-size", "100", "--quiet"]
FLAGS = [(name, flag) for name, family in FAMILIES.items() for flag in family.flags]


def _value(flag) -> list:
    """A value of ``flag`` its type accepts (none for an on/off flag)."""
    if flag.kwargs.get("action") is argparse.BooleanOptionalAction:
        return []
    if "choices" in flag.kwargs:
        return [flag.kwargs["choices"][-1]]
    for text in ("1", "0.5"):
        try:
            flag.kwargs["type"](text)
            return [text]
        except argparse.ArgumentTypeError:
            pass
    raise AssertionError(f"no test value for {flag.name}")


def test_every_family_has_a_refusal_reason_and_keys_its_settings_know():
    for name, family in FAMILIES.items():
        assert bool(family.refuses) == bool(family.refusal), name
        fields = family.settings.__dataclass_fields__
        for flag in family.flags:
            assert family.configure is not None or flag.key in fields, (name, flag.name)


@pytest.mark.parametrize("name, flag", FLAGS, ids=[f"{n}{f.name}" for n, f in FLAGS])
def test_a_familys_flag_is_in_the_help_and_refused_for_every_other_family(name, flag, tmp_path, small_npz, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    group = help_text[help_text.index(f"--model {name}: {FAMILIES[name].title}"):]
    assert flag.name in group.split("\n\n")[0]  # in its family's group
    others = [other for other in FAMILIES if other not in (name, "module")][:2] + ["module:_pairs:TutorialVAE"]
    for other in others:
        out = tmp_path / other.replace(":", "_")
        assert main(["train", "--model", other, flag.name, *_value(flag), "--data", str(small_npz), "--out", str(out),
                     "--epochs", "1", *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [f"pyro-gen train: error: {flag.name}: this flag is for --model {name}"], err
        assert not out.exists()


def test_a_setting_the_family_fixes_is_accepted_at_its_own_value(tmp_path, small_npz, capsys):
    """--elbo enum, --objective elbo and --free-bits 0 are the ssvae's own settings (accepted);
    --elbo trace is refused in one line."""
    base = ["train", "--model", "ssvae", "--labels-per-class", "2", "--data", str(small_npz), "--epochs", "1", *TINY]
    assert main([*base, "--out", str(tmp_path / "ok"), "--elbo", "enum", "--objective", "elbo", "--free-bits", "0"]) == 0
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["train"]["elbo"] == "enum"
    assert main([*base, "--out", str(tmp_path / "bad"), "--elbo", "trace"]) == 2
    assert "--model ssvae cannot take --elbo" in capsys.readouterr().err


def test_resume_refuses_what_the_family_refuses(tmp_path, small_npz, capsys):
    """--patience on a resumed ssvae run would hold labelled images out: refused like on a new run."""
    run = tmp_path / "ss"
    assert main(["train", "--model", "ssvae", "--labels-per-class", "2", "--data", str(small_npz), "--out", str(run),
                 "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--patience", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model ssvae cannot take --patience" in err, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_with_another_familys_model_says_the_run_cannot_change_its_model(tmp_path, small_npz, capsys):
    run = tmp_path / "v"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--model", "gan", "--gan-loss", "ns", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot change --model (the run has vae, the command gives gan)" in err, err


def test_a_bad_hvae_prior_is_refused_before_the_data_are_read(tmp_path, capsys, monkeypatch):
    import pyro_gen.cli.train as train_cli
    monkeypatch.setattr(train_cli, "load_data", lambda *a, **k: pytest.fail("the data were read"))
    out = tmp_path / "h"
    assert main(["train", "--model", "hvae", "--prior", "bogus", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err and not out.exists(), err
