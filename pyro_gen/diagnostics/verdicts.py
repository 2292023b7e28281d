"""Plain-language verdicts on a diagnosis, each with the threshold it applies.

A :class:`Verdict` has a ``status``: ``ok`` (nothing to do), ``note`` (worth knowing, no fault),
``warning`` (probably worth acting on), ``problem`` (the fit did not work in this respect) or
``n/a`` (could not be judged, and why).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

__all__ = ["Verdict", "make_verdicts", "THRESHOLDS"]

#: Every number the verdicts compare against (nats unless stated).
THRESHOLDS = {
    "still_improving": 0.5,      # held-out ELBO gain over the last 10% of epochs
    "overfit_drop": 1.0,         # held-out ELBO below its best at the end of training
    "elbo_gap": 10.0,            # log p(x) - ELBO
    "k_convergence": 0.1,        # rise of L_K per doubling of K at the largest K
    "khat_share_ok": 0.05,       # share of images with k-hat > 0.7
    "khat_share_problem": 0.5,
    "amortization_gap": 1.0,
    "unused_share": 0.5,         # share of inactive units worth a note
}


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


def _training(history: List[dict]) -> List[Verdict]:
    key = "val_elbo" if any(r.get("val_elbo") is not None for r in history) else "train_elbo"
    values = np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=float)
    name = "held-out" if key == "val_elbo" else "training"
    out = []
    if len(values) < 2 or not np.isfinite(values[-1]):
        return [Verdict("Training progress", "n/a", f"{len(values)} epoch(s)", "needs at least 2 epochs",
                        "Too few epochs to tell whether training had converged.")]
    window = max(1, int(round(0.1 * len(values))))
    gain = float(values[-1] - values[-1 - window])
    t = THRESHOLDS["still_improving"]
    if gain > t:
        out.append(Verdict("Training progress", "warning", f"{name} ELBO rose {gain:.2f} nats over the last "
                           f"{window} epoch(s)", f"warning above {t} nats over the last 10% of epochs",
                           "Training had not converged: more epochs would probably give a better model."))
    else:
        out.append(Verdict("Training progress", "ok", f"{name} ELBO changed {gain:+.2f} nats over the last "
                           f"{window} epoch(s)", f"warning above {t} nats over the last 10% of epochs",
                           "The ELBO had levelled off by the end of training."))
    if key == "val_elbo":
        best = int(np.nanargmax(values))
        drop = float(values[best] - values[-1])
        t = THRESHOLDS["overfit_drop"]
        status = "warning" if drop > t else "ok"
        advice = (f"The held-out ELBO peaked at epoch {best + 1} and then fell: the model overfits the training "
                  "data; train with --patience (early stopping) or for fewer epochs." if status == "warning"
                  else "No sign of overfitting on held-out data.")
        out.append(Verdict("Overfitting", status, f"final held-out ELBO {drop:.2f} nats below its best "
                           f"(epoch {best + 1})", f"warning above {t} nats", advice))
    return out


def _latent(lat: dict, latent_dim: int) -> List[Verdict]:
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
        out.append(Verdict("Posterior collapse", "problem", value, rule,
                           "The decoder ignores the latent code: q(z|x) is (almost) the prior for every image, "
                           "so z carries no information about x. Typical remedies: KL warm-up, a weaker decoder, "
                           "or fewer epochs at a high learning rate."))
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
        out.append(Verdict("Information in the code", "note",
                           f"I(x; z) = {mi:.2f} nats (this estimate is at most log {lat['num_points']} = {cap:.2f} "
                           f"on {lat['num_points']} images{ceiling}), KL(q(z) || p(z)) = {lat['marginal_kl']:.2f} nats",
                           "ELBO surgery: mean KL = I(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016)",
                           "A large KL(q(z) || p(z)) means the codes the encoder uses do not look like draws "
                           "from the prior: samples from p(z) will then decode to less typical images; a richer "
                           "prior (mixture, VampPrior) closes this gap."))
    return out


def _importance(iwae: Optional[dict], khat: Optional[dict], note: str) -> List[Verdict]:
    if iwae is None:
        return [Verdict("ELBO tightness and importance sampling", "n/a", "-", "-", note)]
    out = []
    k, b = iwae["k"], iwae["bound"]
    gap = b[-1] - b[0]
    t = THRESHOLDS["elbo_gap"]
    out.append(Verdict("ELBO tightness", "warning" if gap > t else "ok",
                       f"log p(x) >= {b[-1]:.2f} (IWAE, K={k[-1]}), ELBO {b[0]:.2f}: gap {gap:.2f} nats",
                       f"warning above {t} nats",
                       "The guide q(z|x) is far from the true posterior; see the gap decomposition below for "
                       "whether the encoder or the guide family is to blame." if gap > t else
                       "The ELBO is a reasonably tight bound on log p(x)."))
    if len(k) >= 2:
        rise = (b[-1] - b[-2]) / max(math.log2(k[-1] / k[-2]), 1e-9)
        t = THRESHOLDS["k_convergence"]
        out.append(Verdict("Convergence of the log p(x) estimate in K", "warning" if rise > t else "ok",
                           f"L_K rose {rise:.3f} nats per doubling of K between K={k[-2]} and K={k[-1]}",
                           f"warning above {t} nats per doubling",
                           "The estimate is still rising with K: the true log p(x) is probably higher than "
                           "reported." if rise > t else "More samples would barely change the log p(x) estimate."))
    if khat is not None:
        share, t_ok, t_bad = khat["share_bad"], THRESHOLDS["khat_share_ok"], THRESHOLDS["khat_share_problem"]
        status = "ok" if share <= t_ok else ("warning" if share <= t_bad else "problem")
        shown = ", ".join(str(i) for i in khat["bad_index"][:20]) + (" ..." if len(khat["bad_index"]) > 20 else "")
        out.append(Verdict("PSIS k-hat (Yao et al. 2018)", status,
                           f"{100 * share:.1f}% of {khat['num_data']} test images have k-hat > 0.7; "
                           f"median k-hat {khat['median']:.2f}" + (f"; images {shown}" if shown else ""),
                           f"ok up to {100 * t_ok:.0f}% of images, problem above {100 * t_bad:.0f}%",
                           "k-hat > 0.7: importance sampling from q is unreliable for these images, because q "
                           "misses parts of the posterior; their log p(x) estimates (and the IWAE curve) are "
                           "too low and noisy." if status != "ok" else
                           "q covers the posterior well enough for importance sampling to be reliable."))
    return out


def _gap(gap: dict) -> List[Verdict]:
    if gap.get("log_px") is None:
        return [Verdict("Amortization gap (Cremer et al. 2018)", "n/a", "-", "-", gap.get("note", ""))]
    am, ap = gap["amortization_gap"], gap["approximation_gap"]
    se = gap.get("amortization_gap_stderr") or 0.0  # None (undefined) for a one-image sample
    t = THRESHOLDS["amortization_gap"]
    value = (f"amortization gap {am:.2f} ± {se:.2f} nats, approximation gap {ap:.2f} nats "
             f"({gap['num_data']} images)")
    if am < -max(3 * se, 0.1):
        return [Verdict("Amortization gap (Cremer et al. 2018)", "warning", value, "should be >= 0",
                        "Optimizing q for each image did not beat the encoder: the per-image optimization was "
                        "too short or unstable (increase --gap-steps); the split is not trustworthy.")]
    if am > t:
        advice = (f"The encoder leaves {am:.1f} nats per image on the table compared with the best q of the same "
                  "family for each image" + (" -- more than the family itself costs: a larger encoder or longer "
                                             "training of the encoder would help most." if am > ap else
                                             "; the family itself costs more: a richer guide (full-rank, flows) "
                                             "would help most."))
        return [Verdict("Amortization gap (Cremer et al. 2018)", "note", value, f"noted above {t} nat", advice)]
    return [Verdict("Amortization gap (Cremer et al. 2018)", "ok", value, f"noted above {t} nat",
                    "The encoder is close to the best per-image q of its family" +
                    (f"; the remaining {ap:.1f} nats are the price of the guide family." if ap > t else "."))]


def _gradients(grads: List[dict], note: str) -> List[Verdict]:
    if note or not grads:
        return [Verdict("Gradient noise (Rainforth et al. 2018)", "n/a", "-", "-", note or "not measured")]
    parts = ", ".join(f"{g['group']} median SNR " + ("n/a" if g["median_snr"] is None else f"{g['median_snr']:.2f}")
                      for g in grads)  # None: not finite (a group whose gradient does not vary)
    return [Verdict("Gradient noise (Rainforth et al. 2018)", "note", parts,
                    "SNR = |E g| / sd(g) per parameter, Monte Carlo noise only",
                    "An SNR well below 1 means a single step's gradient for that parameter is mostly noise; "
                    "near the end of training small SNRs are expected (the mean gradient goes to zero). More "
                    "particles per datum reduce the noise.")]


def make_verdicts(d: dict, history: List[dict]) -> List[Verdict]:
    """Verdicts on a diagnosis (the dict of :meth:`pyro_gen.diagnostics.Diagnosis.to_dict`)."""
    latent_dim = len(d["latent"]["activity"])
    return (_training(history) + _latent(d["latent"], latent_dim)
            + _importance(d.get("iwae"), d.get("pareto_k"), d["notes"].get("importance", ""))
            + _gap(d["gap"]) + _gradients(d.get("gradients") or [], d["notes"].get("gradients", "")))
