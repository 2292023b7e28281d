"""Plain-language verdicts on a diagnosis, each with the threshold it applies.

A :class:`Verdict` has a ``status``: ``ok`` (nothing to do), ``note`` (worth knowing, no fault),
``warning`` (probably worth acting on), ``problem`` (the fit did not work in this respect) or
``n/a`` (could not be judged, and why). Every number a verdict compares against is in
:data:`THRESHOLDS`, with where it comes from; ``benchmarks/planted_failures.py`` trains failures
planted on purpose next to a healthy run and shows which verdict catches each.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

__all__ = ["Verdict", "make_verdicts", "THRESHOLDS", "khat_threshold", "snr_floor", "summary_line"]

#: Every number the verdicts compare against (nats unless stated), and why.
THRESHOLDS = {
    # Training history (metrics.jsonl), judged on a linear trend over the last 20% of epochs (at
    # least 3), so that one noisy epoch of a small held-out set decides nothing.
    "min_epochs": 3,             # fewer epochs: too few to see convergence -> a warning, not "n/a"
    "still_improving": 0.5,      # trend gain of the held-out ELBO over the window, beyond 2 standard errors
    "overfit_drop": 1.0,         # held-out ELBO (smoothed over 3 epochs) below its best, beyond 3 noise sd
    "generalization_gap": 10.0,  # train ELBO - held-out ELBO at the end (healthy MNIST-10k: 3-4 nats;
                                 # 300 training images for 300 epochs: ~46)
    # Importance sampling (Burda et al. 2015; Vehtari et al. 2024; Yao et al. 2018).
    "elbo_gap": 10.0,            # log p(x) - ELBO
    "k_convergence": 0.3,        # rise of L_K per doubling of K at the largest K (healthy MNIST runs:
                                 # 0.12-0.15; guide scales x0.25: 0.49, x4: 1.8)
    "khat_share_ok": 0.05,       # share of images with k-hat above min(1 - 1/log10 S, 0.7)
    "khat_share_problem": 0.5,
    "estimates_disagree": 5.0,   # two log p(x) estimates of the same images apart by more than this
                                 # and 3 standard errors (healthy: 0.9-1.2, the optimized q tightening a
                                 # little; guide scales x0.25: 21, x4: 10)
    # Inference suboptimality (Cremer et al. 2018), relative to the whole gap log p(x) - ELBO.
    "amortization_note": 1.0,
    "amortization_warning": 10.0,  # and more than half of the whole gap (healthy runs: 3-4 nats, 40-70%)
    "amortization_problem": 50.0,  # an encoder that misses by this much is broken (scales x4: ~160)
    # The latent code.
    "unused_share": 0.5,         # share of inactive units worth a note
    "decoder_uses_z": 1.0,       # |E_q log p(x|z) - E_p log p(x|z)| below this: the decoder ignores z
                                 # (healthy MNIST runs: 200-350 nats; trained on noise: 0.1)
    "data_shift": 5.0,           # ELBO of the run's own held-out data - ELBO of other data (inverted
                                 # MNIST test images: 5652; the run's own test split: within 3.5)
}


def khat_threshold(num_samples: int) -> float:
    """:math:`\\min(1 - 1/\\log_{10} S, 0.7)`: the sample-size-dependent threshold of Vehtari et
    al. (2024, "Pareto smoothed importance sampling", JMLR): above it, S draws cannot give a
    reliable importance-sampling estimate (0.5 at S = 100, 0.67 at S = 1000, 0.7 from S = 2154)."""
    if num_samples < 11:
        return 0.0
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def snr_floor(repeats: int) -> float:
    """The gradient SNR that pure noise shows: for a parameter whose gradient has mean 0, the
    estimate :math:`|\\bar g| / \\mathrm{sd}(g)` over R draws is about :math:`\\sqrt{2/\\pi}/\\sqrt R`
    (0.08 at R = 100); a measured SNR near it means "no signal", not "small signal"."""
    return math.sqrt(2 / math.pi) / math.sqrt(max(repeats, 1))


@dataclass
class Verdict:
    """One check: its name, status, the measured value, the rule, and what it means."""

    check: str
    status: str
    value: str
    threshold: str
    advice: str

    def to_dict(self) -> dict:
        return asdict(self)


def summary_line(verdicts: List[Verdict]) -> str:
    """``"2 problems, 1 warning, 3 notes, 5 ok, 1 not assessed"``: every verdict counted."""
    counts = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    names = [("problem", "problem"), ("warning", "warning"), ("note", "note"), ("ok", "ok"), ("n/a", "not assessed")]
    parts = []
    for status, name in names:
        n = counts.get(status, 0)
        if n:
            plural = "s" if n > 1 and status in ("problem", "warning", "note") else ""
            parts.append(f"{n} {name}{plural}")
    return ", ".join(parts)


def _trend(values: np.ndarray):
    """``(gain, stderr, window)`` of a least-squares line through the last 20% (at least 3) of the
    values: the rise it predicts over the window, and that rise's standard error."""
    window = max(3, int(round(0.2 * len(values))))
    y = values[-window:]
    t = np.arange(window, dtype=float)
    slope, intercept = np.polyfit(t, y, 1)
    resid = y - (slope * t + intercept)
    sd = float(np.sqrt(np.sum(resid ** 2) / max(window - 2, 1)))
    se_slope = sd / math.sqrt(float(np.sum((t - t.mean()) ** 2)))
    return float(slope * (window - 1)), float(se_slope * (window - 1)), window, sd


def _training(history: List[dict]) -> List[Verdict]:
    """Training progress and overfitting from the whole history: the trend of the held-out ELBO
    (or the training ELBO without held-out data), the smoothed drop from its best epoch, and the
    train - held-out gap and its growth. Never both "train longer" and "stop earlier"."""
    key = "val_elbo" if any(r.get("val_elbo") is not None for r in history) else "train_elbo"
    values = np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=float)
    name = "held-out" if key == "val_elbo" else "training"
    n = len(values)
    t_min = THRESHOLDS["min_epochs"]
    if n == 0 or not np.isfinite(values[-1]):
        return [Verdict("Training progress", "n/a", f"{n} epoch(s)", "needs the per-epoch metrics",
                        "No per-epoch ELBO was recorded.")]
    if n < t_min:
        return [Verdict("Training progress", "warning", f"{n} epoch(s)", f"warning below {t_min} epochs",
                        f"Only {n} epoch(s) were trained: too few to see whether training had converged, and far "
                        "fewer than VAEs usually need (the default is 100 on MNIST-10k). Train longer, e.g. "
                        "pyro-gen train --out RUN --resume --epochs 100.")]
    out = []
    overfit = None
    gain, se, window, sd = _trend(values)
    if key == "val_elbo":
        smooth = np.convolve(values, np.ones(3) / 3, mode="valid")  # the mean of 3 epochs, against noise
        best = int(np.nanargmax(smooth))
        drop = float(smooth[best] - smooth[-1])
        train = np.array([np.nan if r.get("train_elbo") is None else r["train_elbo"] for r in history], dtype=float)
        gap_end = float(train[-1] - values[-1]) if np.isfinite(train[-1]) else float("nan")
        gap_best = float(train[best + 1] - values[best + 1]) if np.isfinite(train[best + 1]) else float("nan")
        t_drop, t_gap = THRESHOLDS["overfit_drop"], THRESHOLDS["generalization_gap"]
        falling = drop > max(t_drop, 3 * sd) and best + 3 < len(values) and gain <= 0
        wide = np.isfinite(gap_end) and gap_end > t_gap
        overfit = falling or wide
        value = (f"train - held-out ELBO gap {gap_end:.2f} nats at the end ({gap_end - gap_best:+.2f} since the best "
                 f"held-out epoch {best + 2}); held-out ELBO {drop:.2f} nats below its best (3-epoch mean)")
        if overfit:
            advice = ("The model fits its training images much better than new ones" if wide else
                      "The held-out ELBO peaked and then fell")
            advice += (": it overfits the training data. Train with --patience (early stopping on held-out "
                       "data), for fewer epochs, or on more data; a smaller network also helps.")
        else:
            advice = "No sign of overfitting on held-out data."
        out.append(Verdict("Overfitting", "warning" if overfit else "ok", value,
                           f"warning when the train - held-out gap exceeds {t_gap:g} nats, or the held-out ELBO "
                           f"falls more than {t_drop:g} nats (and 3 noise sd) below its best, still falling", advice))
    t = THRESHOLDS["still_improving"]
    rising = gain > max(t, 2 * se)
    value = f"{name} ELBO trend {gain:+.2f} ± {se:.2f} nats over the last {window} epochs"
    rule = f"warning when the trend over the last 20% of epochs rises more than {t:g} nats and 2 standard errors"
    if rising and overfit:
        status, advice = "note", ("The held-out ELBO was still rising, but the model overfits (see Overfitting): "
                                  "more epochs would widen the gap; more data or early stopping would help more.")
    elif rising:
        status, advice = "warning", "Training had not converged: more epochs would probably give a better model."
    else:
        status, advice = "ok", "The ELBO had levelled off by the end of training."
    return [Verdict("Training progress", status, value, rule, advice)] + out


def _latent(lat: dict, latent_dim: int, beta: float = 1.0) -> List[Verdict]:
    out = []
    active, thr = lat["active_units"], lat["active_threshold"]
    kl = lat.get("kl")
    rule = (f"flagged when the mean KL < {lat['min_kl']:g} nats or fewer than {lat['min_active_units']} unit(s) "
            f"are active (Cov_x(E_q[z_d]) > {thr:g})")
    value = (f"KL {kl:.2f} nats per image, " if kl is not None else "") + f"{active} of {latent_dim} units active"
    if lat["collapse"] and kl is None:  # point-mass guide: no KL, only the codes' spread
        out.append(Verdict("Posterior collapse", "problem", value, rule,
                           "The codes of different images hardly differ (no coordinate varies by more than the "
                           "threshold), so the decoder cannot tell the images apart through z. Train longer, or "
                           "check the learning rate."))
    elif lat["collapse"]:
        remedy = (f"The KL term was weighted by beta = {beta:g} in training, which pushes q(z|x) to the prior: "
                  "a lower --beta is the first thing to try; then KL warm-up or a weaker decoder." if beta > 1 else
                  "Typical remedies: KL warm-up (--warmup-epochs), free bits (--free-bits), a weaker decoder, or "
                  "fewer epochs at a high learning rate.")
        out.append(Verdict("Posterior collapse", "problem", value, rule,
                           "The latent code carries (almost) no information: q(z|x) is (almost) the prior for "
                           "every image. " + remedy))
    else:
        out.append(Verdict("Posterior collapse", "ok", value, rule, "The latent code carries information about x."))
    unused = latent_dim - active
    if unused > THRESHOLDS["unused_share"] * latent_dim and not lat["collapse"]:
        out.append(Verdict("Unused latent dimensions", "note", f"{unused} of {latent_dim} units inactive",
                           f"noted when more than {int(100 * THRESHOLDS['unused_share'])}% are inactive",
                           "VAEs switch off the dimensions they do not need; this is harmless, but a smaller "
                           f"--latent-dim (about {max(active, 1)}) would fit as well and run faster."))
    if lat.get("mutual_info") is not None and lat.get("num_points"):
        cap = math.log(lat["num_points"])
        mi = lat["mutual_info"]
        ceiling = (" -- close to that ceiling, so the true I(x; z) is probably larger and KL(q(z) || p(z)) "
                   "smaller" if mi > 0.9 * cap else "")
        value = (f"I(x; z) = {mi:.2f} nats (this estimate is at most log {lat['num_points']} = {cap:.2f} "
                 f"on {lat['num_points']} images{ceiling})")
        if lat.get("marginal_kl") is None:  # a pair's own code: I(x; z) from its guide alone
            out.append(Verdict("Information in the code", "note", value,
                               "I(x; z) of the aggregate posterior of these images (Hoffman & Johnson 2016)",
                               "How many nats about each image the code carries on average; the aggregate "
                               "posterior's KL to the prior is not computed for this pair."))
        else:
            out.append(Verdict("Information in the code", "note",
                               value + f", KL(q(z) || p(z)) = {lat['marginal_kl']:.2f} nats",
                               "ELBO surgery: mean KL = I(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016)",
                               "A large KL(q(z) || p(z)) means the codes the encoder uses do not look like draws "
                               "from the prior: samples from p(z) will then decode to less typical images; a richer "
                               "prior (mixture, VampPrior) closes this gap."))
    return out


def _agreement(d: dict) -> Optional[dict]:
    """The IWAE estimate of log p(x) and the amortization-gap step's (a mixture of the encoder's q
    and the per-image optimized q as proposal) on the same images: their means, the mean
    difference and its standard error, and the best estimate (the larger; both are lower bounds in
    expectation)."""
    gap, per_datum = d.get("gap") or {}, d.get("log_px_per_datum")
    gap_px, index = gap.get("log_px_per_datum"), gap.get("test_index")
    if gap_px is None or per_datum is None or not index:
        return None
    position = {int(i): n for n, i in enumerate(d["test_index"])}
    pairs = [(per_datum[position[int(i)]], g) for i, g in zip(index, gap_px)
             if int(i) in position and per_datum[position[int(i)]] is not None and g is not None]
    if len(pairs) < 2:
        return None
    a, b = np.array(pairs, dtype=float).T
    diff = b - a
    return {"iwae": float(a.mean()), "mixture": float(b.mean()), "difference": float(diff.mean()),
            "stderr": float(diff.std(ddof=1) / math.sqrt(len(diff))), "num_data": len(diff),
            "best": float(np.maximum(a, b).mean())}


def _importance(d: dict) -> List[Verdict]:
    iwae, khat, note = d.get("iwae"), d.get("pareto_k"), d["notes"].get("importance", "")
    if iwae is None:
        return [Verdict("ELBO tightness and importance sampling", "n/a", "-", "-", note)]
    out = []
    k, b = iwae["k"], iwae["bound"]
    agree = _agreement(d)
    best = b[-1] if agree is None else max(b[-1], b[-1] + agree["difference"])
    gap = best - b[0]
    t = THRESHOLDS["elbo_gap"]
    shown = (f"log p(x) ~ {best:.2f} (best estimate: " + ("IWAE, K=" + str(k[-1]) if best == b[-1] else
             "the gap step's mixture proposal") + f"), ELBO {b[0]:.2f}: gap {gap:.2f} nats")
    out.append(Verdict("ELBO tightness", "warning" if gap > t else "ok", shown, f"warning above {t} nats",
                       "The guide q(z|x) is far from the true posterior; see the gap decomposition below for "
                       "whether the encoder or the guide family is to blame." if gap > t else
                       "The ELBO is a reasonably tight bound on log p(x)."))
    rise = None
    if len(k) >= 2:
        rise = (b[-1] - b[-2]) / max(math.log2(k[-1] / k[-2]), 1e-9)
        t = THRESHOLDS["k_convergence"]
        out.append(Verdict("Convergence of the log p(x) estimate in K", "warning" if rise > t else "ok",
                           f"L_K rose {rise:.3f} nats per doubling of K between K={k[-2]} and K={k[-1]}",
                           f"warning above {t} nats per doubling",
                           "The estimate is still rising with K: the true log p(x) is probably higher than "
                           "reported." if rise > t else "More samples would barely change the log p(x) estimate."))
    disagree = False
    if agree is not None:
        t = THRESHOLDS["estimates_disagree"]
        disagree = abs(agree["difference"]) > max(t, 3 * agree["stderr"])
        out.append(Verdict(
            "Agreement of the log p(x) estimates", "warning" if disagree else "ok",
            f"IWAE (K={k[-1]}) {agree['iwae']:.2f}, with the optimized q as a second proposal "
            f"{agree['mixture']:.2f}: apart by {agree['difference']:+.2f} ± {agree['stderr']:.2f} nats "
            f"({agree['num_data']} images)", f"warning beyond {t:g} nats and 3 standard errors",
            "Two estimates of the same log p(x) disagree: the encoder's q is a poor proposal for these images "
            "(typically too narrow), so the IWAE estimate is far too low and its k-hat unreliable; the larger "
            "estimate is used above." if disagree else "Both proposals give the same log p(x)."))
    if khat is not None:
        s_max = k[-1]
        t_k = khat["threshold"]  # the threshold the share was counted with
        share, t_ok, t_bad = khat["share_bad"], THRESHOLDS["khat_share_ok"], THRESHOLDS["khat_share_problem"]
        converged = rise is not None and rise <= THRESHOLDS["k_convergence"]
        if share <= t_ok:
            status = "ok"
        elif converged and not disagree:
            status = "note"
        else:
            status = "problem" if share > t_bad else "warning"
        value = (f"{100 * share:.1f}% of {khat['num_data']} test images have k-hat > {t_k:.2f}; median k-hat "
                 + ("n/a" if khat.get("median") is None else f"{khat['median']:.2f}"))
        advice = {
            "ok": "The importance weights have light enough tails: the log p(x) estimate at this K is reliable.",
            "note": (f"High k-hat is usual for VAEs: the weights of a guide narrower than the posterior are "
                     f"heavy-tailed, so the K={s_max} estimate of log p(x) is a lower bound whose error PSIS cannot "
                     "bound. Here it is stable in K (see the convergence check) and agrees with a second proposal: "
                     "trust it to about the last rise per doubling; a larger K would add little."),
            "warning": ("k-hat is high and the estimate is still moving: the importance-sampled log p(x) at this K "
                        "is not reliable for these images (too low); more samples help only slowly."),
            "problem": ("k-hat is high for most images and the estimate has not settled (or disagrees with a second "
                        "proposal): the guide misses much of the posterior, and the reported log p(x) is too low."),
        }[status]
        out.append(Verdict("PSIS k-hat (Yao et al. 2018)", status, value,
                           f"threshold min(1 - 1/log10 S, 0.7) = {t_k:.2f} for S = {s_max} (Vehtari et al. 2024); "
                           f"ok up to {100 * t_ok:.0f}% of images; a note when the estimate has converged in K, "
                           f"else a warning, a problem above {100 * t_bad:.0f}%", advice))
    return out


def _gap(gap: dict) -> List[Verdict]:
    name = "Amortization gap (Cremer et al. 2018)"
    if gap.get("log_px") is None:
        return [Verdict(name, "n/a", "-", "-", gap.get("note", ""))]
    am, ap = gap["amortization_gap"], gap["approximation_gap"]
    se = gap.get("amortization_gap_stderr") or 0.0  # None (undefined) for a one-image sample
    total = am + ap
    share = am / total if total > 1e-9 else 0.0
    t_note, t_warn, t_prob = (THRESHOLDS["amortization_note"], THRESHOLDS["amortization_warning"],
                              THRESHOLDS["amortization_problem"])
    value = (f"amortization gap {am:.2f} ± {se:.2f} nats ({100 * share:.0f}% of the gap log p(x) - ELBO), "
             f"approximation gap {ap:.2f} nats ({gap['num_data']} images)")
    rule = (f"a note above {t_note:g} nat; a warning above {t_warn:g} nats when it is more than half of the gap; "
            f"a problem above {t_prob:g} nats")
    failed = gap.get("failed_refinements") or 0
    if failed:  # the refinement of the pair's own guide ended below the encoder on some images
        return [Verdict(name, "warning", value + f"; the refinement failed on {failed} of {gap['num_data']} images",
                        "the guide refined on an image should beat the encoder on it",
                        f"On {failed} images the guide refined on the image alone ended below the encoder (their q* "
                        "was taken to be the encoder's, gap 0), so the split is a lower bound there: try a smaller "
                        "refinement step (pair_amortization_gap's lr) or more --gap-steps.")]
    if am < -max(3 * se, 0.1):
        return [Verdict(name, "warning", value, "should be >= 0",
                        "Optimizing q for each image did not beat the encoder: the per-image optimization was "
                        "too short or unstable (increase --gap-steps); the split is not trustworthy.")]
    if am > t_prob or (am > t_warn and share > 0.5):
        status = "problem" if am > t_prob else "warning"
        return [Verdict(name, status, value, rule,
                        f"The encoder's q(z|x) is {am:.1f} nats per image worse than the best q of its own family: "
                        "the encoder is badly off (mis-scaled or under-trained). Train longer, or check the "
                        "encoder's output scales.")]
    if am > t_note:
        advice = (f"The encoder leaves {am:.1f} nats per image on the table compared with the best q of the same "
                  "family for each image" + (" -- more than the family itself costs: a larger encoder or longer "
                                             "training of the encoder would help most." if am > ap else
                                             "; the family itself costs more: a richer guide (full-rank, flows) "
                                             "would help most."))
        return [Verdict(name, "note", value, rule, advice)]
    return [Verdict(name, "ok", value, rule,
                    "The encoder is close to the best per-image q of its family" +
                    (f"; the remaining {ap:.1f} nats are the price of the guide family." if ap > t_note else "."))]


def _gradients(grads: List[dict], note: str, repeats: int) -> List[Verdict]:
    if note or not grads:
        return [Verdict("Gradient noise (Rainforth et al. 2018)", "n/a", "-", "-", note or "not measured")]
    floor = snr_floor(repeats)
    parts = ", ".join(f"{g['group']} median SNR " + ("n/a" if g["median_snr"] is None else f"{g['median_snr']:.2f}")
                      for g in grads)  # None: not finite (a group whose gradient does not vary)
    return [Verdict("Gradient noise (Rainforth et al. 2018)", "note",
                    f"{parts} (the estimator's floor at R = {repeats} draws: {floor:.2f})",
                    "SNR = |E g| / sd(g) per parameter, Monte Carlo noise only; pure noise reads about "
                    "sqrt(2/pi)/sqrt(R)",
                    "An SNR well below 1 means a single step's gradient for that parameter is mostly noise; "
                    "near the end of training small SNRs are expected (the mean gradient goes to zero). A "
                    "median near the floor means no measurable signal. More particles per datum reduce the noise.")]


def _decoder(dec: Optional[dict]) -> List[Verdict]:
    if dec is None:
        return []
    t = THRESHOLDS["decoder_uses_z"]
    diff = dec["difference"]
    value = (f"E_q log p(x|z) = {dec['rec_guide']:.2f}, E_p(z) log p(x|z) = {dec['rec_prior']:.2f}: codes from the "
             f"guide explain x {diff:.2f} nats better than codes drawn from the prior")
    rule = f"problem when the two differ by less than {t:g} nat; a warning when the guide's codes do worse"
    if abs(diff) < t:
        return [Verdict("Decoder uses z", "problem", value, rule,
                        "The decoder scores x the same whatever z is: it ignores the latent code (the model is a "
                        "fixed distribution over x). With structureless data (noise) there is nothing for z to "
                        "explain; otherwise see Posterior collapse.")]
    if diff < 0:
        return [Verdict("Decoder uses z", "warning", value, rule,
                        "Codes inferred by the guide explain these images worse than random codes: the encoder "
                        "does not fit these data (see Data shift).")]
    return [Verdict("Decoder uses z", "ok", value, rule,
                    "p(x|z) depends on z: codes inferred from x explain it far better than random codes.")]


def _data_shift(shift: Optional[dict]) -> List[Verdict]:
    if shift is None or shift.get("drop") is None:
        return []
    t = THRESHOLDS["data_shift"]
    drop = shift["drop"]
    if shift["same_data"]:  # the run's own test split: a lower ELBO than in training means the model, not the data
        return [Verdict("Data shift", "ok", f"diagnosed on the run's own test split (ELBO {shift['elbo']:.2f}; "
                        f"{shift['reference_elbo']:.2f} at the end of training)",
                        "assessed when --data names other data", "The data are the data the run was trained for.")]
    pixels = (f"; mean pixel value {shift['pixel_mean_data']:.3f} here, {shift['pixel_mean_run']:.3f} in the "
              f"run's training data")
    shifted = drop > t
    return [Verdict("Data shift", "warning" if shifted else "ok",
                    f"ELBO {shift['elbo']:.2f} on the data diagnosed here against {shift['reference_elbo']:.2f} on the run's "
                    f"held-out data at the end of training: {drop:+.2f} nats{pixels}",
                    f"warning when the ELBO is more than {t:g} nats below the run's own held-out ELBO",
                    "The diagnosed images are much less likely under the model than the data it was trained on: "
                    "they differ from the training data (another data set, another preprocessing), and the "
                    "other verdicts describe the model on data it was not made for." if shifted else
                    "The diagnosed data look like the data the run was trained on.")]


def make_verdicts(d: dict, history: List[dict], config: Optional[dict] = None) -> List[Verdict]:
    """Verdicts on a diagnosis (the dict of :meth:`pyro_gen.diagnostics.Diagnosis.to_dict`), the
    run's history and configuration."""
    latent_dim = len(d["latent"]["activity"])
    beta = float(((config or {}).get("train") or {}).get("beta", 1.0))
    repeats = int((d.get("settings") or {}).get("grad_repeats", 100))
    out = (_training(history) + _data_shift(d.get("data_shift")) + _latent(d["latent"], latent_dim, beta)
           + _decoder(d.get("decoder")) + _importance(d) + _gap(d["gap"])
           + _gradients(d.get("gradients") or [], d["notes"].get("gradients", ""), repeats))
    for v in out:  # no "-0.00": a number that rounds to zero is shown as zero
        v.value = _NEGATIVE_ZERO.sub(r"\1", v.value)
    return out


_NEGATIVE_ZERO = re.compile(r"(?<![\w.])-(0\.0+)(?![\d])")
