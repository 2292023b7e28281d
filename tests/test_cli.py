"""The `pyro-gen` command line end to end on a small slice of real MNIST."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_gen.cli import main

TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet"]


def _snapshot(folder: Path) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "--data", str(small_npz), "--epochs", "2", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_a_complete_run_directory(trained):
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "elbo_curve.png", "reconstructions.png",
                 "samples.png", "summary.json"):
        assert (trained / name).is_file(), name
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["image_shape"] == [1, 28, 28] and config["train"]["epochs"] == 2
    assert (trained / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_json(trained, capsys):
    assert main(["evaluate", str(trained), "--k", "20", "--draws", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 20 and result["n_test"] == 30  # 300 images, every 10th is test
    assert result["test_nll"] > 0 and result["test_nll"] <= -result["test_elbo"] + 0.5  # IS bound >= ELBO, up to MC error
    assert 50 < result["test_nll"] < 800


def test_sample_png_and_npy(trained, tmp_path):
    assert main(["sample", str(trained), "-n", "12", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(trained), "-n", "12", "-o", str(tmp_path / "s.npy"), "--seed", "3"]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (12, 1, 28, 28) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1


def test_resume_extends_a_run(trained, tmp_path, small_npz):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_autoencoder_model(tmp_path, small_npz, capsys):
    out = tmp_path / "ae"
    assert main(["train", "--model", "ae", "--data", str(small_npz), "--epochs", "1", "--out", str(out), *TINY]) == 0
    assert main(["evaluate", str(out), "--json", "--k", "5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["test_nll"] is None and "no density" in result["note"]


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "pyro_gen", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--latent-dim" in out.stdout and "--resume" in out.stdout


BAD_DATA = {
    "nan.npz": ({"images": np.full((20, 4, 4), np.nan, dtype=np.float32)}, "NaN"),
    "range.npz": ({"images": np.full((20, 4, 4), 1.5, dtype=np.float32)}, "range"),
    "rank.npz": ({"images": np.zeros((20, 2, 2, 2, 2), dtype=np.float32)}, "shape"),
    "empty.npz": ({"images": np.zeros((0, 4, 4), dtype=np.float32)}, "empty"),
    "noimages.npz": ({"pixels": np.zeros((20, 4, 4), dtype=np.float32)}, "images"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_exits_2_with_one_line(name, tmp_path, capsys):
    arrays, phrase = BAD_DATA[name]
    path = tmp_path / name
    np.savez(path, **arrays)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and phrase.lower() in err.lower(), err
    assert not (tmp_path / "r").exists()


def test_bad_files_and_runs_exit_2(tmp_path, trained, capsys):
    truncated = tmp_path / "t10k-images-idx3-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\0" * 100)
    cases = [
        (["train", "--data", str(truncated), "--epochs", "1"], "truncated"),
        (["train", "--data", "no-such-set"], "unknown data set"),
        (["train", "--data", str(tmp_path / "missing.npz")], "no such file"),
        (["evaluate", str(tmp_path / "nowhere")], "no such run directory"),
        (["sample", str(trained), "-n", "4", "-o", str(tmp_path / "x.jpg")], ".png or .npy"),
        (["train", "--out", str(trained), "--epochs", "1"], "already holds a run"),
        (["train", "--out", str(trained), "--resume", "--latent-dim", "3"], "cannot change --latent-dim"),
    ]
    before = _snapshot(trained)
    for argv, phrase in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and phrase in err, (argv, err)
    assert _snapshot(trained) == before


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["evaluate", str(run)]) == 2
    assert "truncated or corrupt checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--epochs", "0"], ["train", "--lr", "abc"], ["train", "--model", "gpt"],
                                  ["evaluate"], ["sample", "x"]])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_resume_of_a_run_killed_before_its_first_checkpoint(trained, tmp_path):
    """Killed during epoch 1 a run has config.json but no checkpoint: --resume starts it again."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoint.pt").unlink()
    (run / "metrics.jsonl").write_text("")
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
