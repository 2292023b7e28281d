"""The bad-input matrix: every case exits with code 2 and one line naming the problem, and
leaves every file of an existing run directory byte-for-byte unchanged."""
import gzip
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_gen.cli import main

TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_npz):
    """A trained run plus a folder of bad files."""
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), *TINY]) == 0
    files = root / "files"
    files.mkdir()
    np.savez(files / "nan.npz", images=np.full((20, 4, 4), np.nan, dtype=np.float32))
    np.savez(files / "inf.npy.npz", images=np.full((20, 4, 4), np.inf, dtype=np.float32))
    np.savez(files / "range.npz", images=np.full((20, 4, 4), 1.5, dtype=np.float32))
    np.savez(files / "negative.npz", images=np.full((20, 4, 4), -0.5, dtype=np.float32))
    np.savez(files / "rank.npz", images=np.zeros((20, 2, 2, 2, 2), dtype=np.float32))
    np.savez(files / "empty.npz", images=np.zeros((0, 4, 4), dtype=np.float32))
    np.savez(files / "noimages.npz", pixels=np.zeros((20, 4, 4), dtype=np.float32))
    np.savez(files / "badlabels.npz", images=np.zeros((20, 4, 4), dtype=np.uint8), labels=np.arange(3))
    np.savez(files / "small16.npz", images=np.zeros((20, 16, 16), dtype=np.uint8))
    (files / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip file")
    (files / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    header = bytes([0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28])
    (files / "t10k-images-idx3-ubyte").write_bytes(header + b"\0" * 100)
    (files / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\0" * 100)[:-8])
    (files / "wrongmagic-idx3-ubyte").write_bytes(bytes([1, 2, 8, 3]) + b"\0" * 100)
    np.save(files / "object.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    return root, run, files


def _copy(run: Path, dest: Path, mutate) -> Path:
    shutil.copytree(run, dest)
    mutate(dest)
    return dest


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pickled_checkpoint(path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    buf = io.BytesIO()
    torch.save({"format_version": 1, "model": Evil()}, buf)
    path.write_bytes(buf.getvalue())


def _old_version(path: Path):
    state = torch.load(path, weights_only=True)
    state["format_version"] = 99
    torch.save(state, path)


CASES = {
    # data files
    "nan": (lambda r, f, t: ["train", "--data", str(f / "nan.npz"), "--out", str(t / "o")], "NaN"),
    "inf": (lambda r, f, t: ["train", "--data", str(f / "inf.npy.npz"), "--out", str(t / "o")], "infinite"),
    "out-of-range": (lambda r, f, t: ["train", "--data", str(f / "range.npz"), "--out", str(t / "o")], "range"),
    "negative": (lambda r, f, t: ["train", "--data", str(f / "negative.npz"), "--out", str(t / "o")], "range"),
    "wrong-rank": (lambda r, f, t: ["train", "--data", str(f / "rank.npz"), "--out", str(t / "o")], "shape"),
    "empty": (lambda r, f, t: ["train", "--data", str(f / "empty.npz"), "--out", str(t / "o")], "empty"),
    "missing-array": (lambda r, f, t: ["train", "--data", str(f / "noimages.npz"), "--out", str(t / "o")], "images"),
    "bad-labels": (lambda r, f, t: ["train", "--data", str(f / "badlabels.npz"), "--out", str(t / "o")], "labels"),
    "corrupt-npz": (lambda r, f, t: ["train", "--data", str(f / "garbage.npz"), "--out", str(t / "o")], "garbage.npz"),
    "corrupt-npy": (lambda r, f, t: ["train", "--data", str(f / "garbage.npy"), "--out", str(t / "o")], "garbage.npy"),
    "object-array": (lambda r, f, t: ["train", "--data", str(f / "object.npy"), "--out", str(t / "o")], "object.npy"),
    "truncated-idx": (lambda r, f, t: ["train", "--data", str(f / "t10k-images-idx3-ubyte"), "--out", str(t / "o")],
                      "truncated"),
    "corrupt-gzip-idx": (lambda r, f, t: ["train", "--data", str(f / "t10k-images-idx3-ubyte.gz"),
                                          "--out", str(t / "o")], "idx3-ubyte.gz"),
    "wrong-magic-idx": (lambda r, f, t: ["train", "--data", str(f / "wrongmagic-idx3-ubyte"), "--out", str(t / "o")],
                        "magic"),
    "missing-file": (lambda r, f, t: ["train", "--data", str(f / "nope.npz"), "--out", str(t / "o")], "no such file"),
    "unknown-data-set": (lambda r, f, t: ["train", "--data", "imagenet", "--out", str(t / "o")], "unknown data set"),
    # flags and values
    "zero-epochs": (lambda r, f, t: ["train", "--epochs", "0"], "--epochs"),
    "negative-lr": (lambda r, f, t: ["train", "--lr", "-1"], "--lr"),
    "nan-lr": (lambda r, f, t: ["train", "--lr", "nan"], "--lr"),
    "bad-hidden": (lambda r, f, t: ["train", "--hidden", "0,12"], "--hidden"),
    "bad-likelihood": (lambda r, f, t: ["train", "--likelihood", "poisson"], "--likelihood"),
    "unknown-flag": (lambda r, f, t: ["train", "--learning-rate", "0.1"], "unrecognized"),
    "evaluate-k-zero": (lambda r, f, t: ["evaluate", str(r), "--k", "0"], "--k"),
    "sample-bad-suffix": (lambda r, f, t: ["sample", str(r), "-o", str(t / "s.jpg")], ".png or .npy"),
    "sample-missing-folder": (lambda r, f, t: ["sample", str(r), "-o", str(t / "no" / "s.png")], "does not exist"),
    "resume-without-out": (lambda r, f, t: ["train", "--resume"], "--resume needs --out"),
    # run directories
    "existing-run": (lambda r, f, t: ["train", "--out", str(r)], "already holds a run"),
    "resume-changes-model": (lambda r, f, t: ["train", "--out", str(r), "--resume", "--latent-dim", "3"],
                             "cannot change --latent-dim"),
    "missing-run": (lambda r, f, t: ["evaluate", str(t / "nowhere")], "no such run directory"),
    "wrong-image-size": (lambda r, f, t: ["evaluate", str(r), "--data", str(f / "small16.npz")], "do not fit this run"),
    "truncated-checkpoint": (lambda r, f, t: ["evaluate", str(_copy(r, t / "c", lambda d: _truncate(d / "checkpoint.pt")))],
                             "truncated or corrupt checkpoint"),
    "pickled-checkpoint": (lambda r, f, t: ["sample", str(_copy(r, t / "c", lambda d: _pickled_checkpoint(d / "checkpoint.pt"))),
                                            "-o", str(t / "s.png")], "refusing"),
    "future-checkpoint": (lambda r, f, t: ["evaluate", str(_copy(r, t / "c", lambda d: _old_version(d / "checkpoint.pt")))],
                          "version 99"),
    "corrupt-config": (lambda r, f, t: ["evaluate", str(_copy(r, t / "c", lambda d: (d / "config.json").write_text("{")))],
                       "not valid JSON"),
    "missing-config": (lambda r, f, t: ["sample", str(_copy(r, t / "c", lambda d: (d / "config.json").unlink())),
                                        "-o", str(t / "s.png")], "config.json"),
}


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, world, tmp_path, capsys):
    root, run, files = world
    make_argv, phrase = CASES[case]
    before = _snapshot(root)
    argv = make_argv(run, files, tmp_path)
    copies = {p: _snapshot(p) for p in tmp_path.iterdir() if p.is_dir()}
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (case, err)
    assert len(err.splitlines()) == 1, err
    assert phrase.lower() in err.lower(), (case, err)
    assert "this must never run" not in captured.out
    assert _snapshot(root) == before  # the real run and the data files are untouched
    for folder, snap in copies.items():
        assert _snapshot(folder) == snap  # a damaged copy is not "repaired" or overwritten either
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.png").exists()
