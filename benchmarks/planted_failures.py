"""Planted failures: does ``pyro-gen diagnose`` (and ``compare``) tell a healthy fit from a broken one?

Trains a healthy reference VAE on MNIST-10k and failures planted on purpose next to it, runs
``pyro-gen diagnose --json`` on each (and ``pyro-gen compare`` for a mode-collapsed GAN), and
prints a matrix case x verdict: CAUGHT when a verdict that names the failure reaches the expected
status, PARTLY when it is flagged at a lower status or by another check only, MISSED otherwise;
the healthy run should raise nothing above a note (CLEAN). Everything goes through the CLI, the
way users run it.

    python benchmarks/planted_failures.py [--out DIR] [--epochs 20]

Cases: healthy; posterior collapse (beta = 30); an under-dispersed guide (its scales x0.25, planted
in the checkpoint) and an over-dispersed one (x4); undertrained (1 epoch); overfitted (300 images,
300 epochs); trained on noise; a healthy run diagnosed on a different test set (inverted images);
a GAN whose generator draws one image.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATUS = {"ok": 0, "n/a": 0, "note": 1, "warning": 2, "problem": 3}

#: case -> (the verdict checks that name the failure, the status each must reach)
EXPECTED = {
    "healthy": [],
    "collapse (beta=30)": [("Posterior collapse", "problem")],
    "guide scales x0.25": [("Agreement of the log p(x) estimates", "warning"), ("PSIS k-hat", "warning")],
    "guide scales x4": [("Amortization gap", "warning")],
    "undertrained (1 epoch)": [("Training progress", "warning")],
    "overfitted (300 images)": [("Overfitting", "warning")],
    "trained on noise": [("Decoder uses z", "problem")],
    "different test set": [("Data shift", "warning")],
}


def cli(*args: str, out: bool = False) -> str:
    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-m", "pyro_gen", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pyro-gen {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout if out else ""


def plant_scale(src: Path, dst: Path, factor: float) -> None:
    """Copy a run and multiply its diagonal guide's scales by about ``factor``: the scale is
    softplus(raw) + 1e-4, close to exp(raw) for the small scales of a trained guide, so adding
    log(factor) to the bias of the scale outputs multiplies them by about ``factor``."""
    import torch
    from pyro_gen.checkpoint import load_checkpoint, save_checkpoint
    shutil.copytree(src, dst)
    state = load_checkpoint(dst / "checkpoint.pt")
    bias = state["model"]["guide_net.head.bias"]
    d = bias.numel() // 2
    bias[d:] += math.log(factor)
    save_checkpoint(dst / "checkpoint.pt", {k: v for k, v in state.items() if k != "format_version"})
    assert torch.is_tensor(bias)


def plant_one_image_gan(run: Path) -> None:
    """Make a trained GAN's generator ignore z: zero the weights of its last layer (the output is
    then its bias, one image for every z), in the generator and in its weight average (which the
    samples come from)."""
    from pyro_gen.checkpoint import load_checkpoint, save_checkpoint
    state = load_checkpoint(run / "checkpoint.pt")
    for prefix in ("decoder.", "average."):
        weights = [k for k in state["model"] if k.startswith(prefix) and k.endswith("weight")]
        if weights:
            state["model"][sorted(weights)[-1]].zero_()
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format_version"})


def data_files(folder: Path) -> dict:
    from pyro_gen.data import load_bundled
    data = load_bundled()
    images = np.round(data.train_x[:, 0] * 255).astype(np.uint8)
    test_images = np.round(data.test_x[:, 0] * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    files = {"small": folder / "small300.npz", "noise": folder / "noise.npz", "inverted": folder / "inverted.npz"}
    np.savez(files["small"], images=images[:300], labels=data.train_y[:300])
    np.savez(files["noise"], images=(rng.random((10000, 28, 28)) < 0.5).astype(np.uint8) * 255)
    # every tenth image is the test split: put the inverted test images there
    inverted = np.repeat(255 - test_images, 10, axis=0)
    np.savez(files["inverted"], images=inverted)
    return files


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--k-max", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out or Path(tempfile.mkdtemp(prefix="planted-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYRO_GEN_CACHE", str(out / "cache"))
    files = data_files(out)
    ep = str(args.epochs)
    runs = {"healthy": out / "healthy", "collapse (beta=30)": out / "collapse", "guide scales x0.25": out / "narrow",
            "guide scales x4": out / "wide", "undertrained (1 epoch)": out / "undertrained",
            "overfitted (300 images)": out / "overfit", "trained on noise": out / "noise",
            "different test set": out / "healthy"}
    quiet = ["--quiet"]
    if not (out / "healthy" / "checkpoint.pt").exists():
        cli("train", "--out", str(out / "healthy"), "--epochs", ep, *quiet)
        cli("train", "--out", str(out / "collapse"), "--epochs", ep, "--beta", "30", *quiet)
        cli("train", "--out", str(out / "undertrained"), "--epochs", "1", *quiet)
        cli("train", "--out", str(out / "overfit"), "--epochs", "300", "--data", str(files["small"]), *quiet)
        cli("train", "--out", str(out / "noise"), "--epochs", ep, "--data", str(files["noise"]), *quiet)
        plant_scale(out / "healthy", out / "narrow", 0.25)
        plant_scale(out / "healthy", out / "wide", 4.0)
        cli("train", "--model", "gan", "--out", str(out / "gan"), "--epochs", "2", *quiet)
        plant_one_image_gan(out / "gan")
    t_train = time.perf_counter() - t0
    diag = ["--k-max", str(args.k_max), "--points", str(args.points), "--gap-points", "50", "--gap-steps", "200",
            "--json", "--quiet"]
    results = {}
    for case, run in runs.items():
        extra = ["--data", str(files["inverted"])] if case == "different test set" else []
        results[case] = json.loads(cli("diagnose", str(run), *diag, *extra, out=True).strip().splitlines()[-1])
    shutil.rmtree(out / "compare", ignore_errors=True)
    cli("compare", "--runs", str(out / "gan"), str(out / "healthy"), "--out", str(out / "compare"), "--k", "100",
        "--n-samples", "500", "--quiet")
    compare = json.loads((out / "compare" / "comparison.json").read_text())
    t_all = time.perf_counter() - t0

    print(f"planted-failure matrix ({args.epochs} epochs; diagnose at K={args.k_max} on {args.points} test images); "
          f"runs in {out}")
    print(f"{'case':26s} {'expected':48s} {'result':8s} verdicts above ok")
    summary = {}
    for case, d in results.items():
        verdicts = {v["check"].split(" (")[0]: v for v in d["verdicts"]}
        flagged = [f"{name}: {v['status']}" for name, v in verdicts.items() if STATUS.get(v["status"], 0) >= 2]
        expected = EXPECTED[case]
        if not expected:
            result = "CLEAN" if not flagged else "NOISY"
        else:
            hits = [STATUS[verdicts.get(check, {"status": "ok"})["status"]] >= STATUS[level]
                    for check, level in expected]
            named = [STATUS[verdicts.get(check, {"status": "ok"})["status"]] >= 2 for check, _ in expected]
            result = "CAUGHT" if any(hits) else ("PARTLY" if any(named) or flagged else "MISSED")
        summary[case] = result
        exp = ", ".join(f"{c} >= {lvl}" for c, lvl in expected) or "nothing above note"
        print(f"{case:26s} {exp[:48]:48s} {result:8s} {'; '.join(flagged) or '-'}")
    gan = next(r for r in compare["rows"] if r["kind"] == "gan")
    caveat = gan.get("caveats") or []
    gan_result = "CAUGHT" if caveat else "MISSED"
    summary["one-image GAN"] = gan_result
    print(f"{'one-image GAN (compare)':26s} {'a caveat next to precision/density':48s} {gan_result:8s} "
          f"precision {gan['precision']}, density {gan['density']}, recall {gan['recall']}; "
          f"caveats: {'; '.join(caveat) or '-'}")
    print(f"wall time: {t_all:.0f} s (training {t_train:.0f} s); target <= 900 s")
    (out / "matrix.json").write_text(json.dumps({"summary": summary, "results": results}, indent=1))


if __name__ == "__main__":
    main()
