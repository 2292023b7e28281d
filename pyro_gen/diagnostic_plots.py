"""Figures of the diagnostics: ELBO terms per epoch, KL per dimension, PSIS :math:`\\hat k` per
datum, the IWAE bound against K, a PCA of the latent means, latent traversals and interpolations.

Every function takes plain numbers or arrays (no model) and writes one PNG atomically through
:func:`pyro_gen.plots.save_figure`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .plots import image_grid, plt, save_figure

__all__ = ["plot_elbo_terms", "plot_kl_per_dim", "plot_pareto_k", "plot_iwae_curve", "plot_latent_pca",
           "plot_image_rows", "pca_2d"]


def _series(history: List[dict], key: str) -> np.ndarray:
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history])


def _has(history: List[dict], key: str) -> bool:
    return any(row.get(key) is not None for row in history)


def plot_elbo_terms(history: List[dict], path, title: str = "Training, epoch by epoch") -> None:
    """Up to four panels against the epoch: the ELBO (training and held-out); its two terms
    (reconstruction :math:`E_q\\log p(x|z)` and KL, each on its own axis); the KL split into
    mutual information and marginal KL; the number of active units."""
    from matplotlib.ticker import MaxNLocator

    epochs = np.array([row["epoch"] for row in history])
    marker = "." if len(epochs) < 30 else None
    panels = ["elbo"] + [name for name, key in [("terms", "rec"), ("split", "mutual_info"), ("units", "active_units")]
                         if _has(history, key)]
    ncols = 1 if len(panels) == 1 else 2
    nrows = (len(panels) + 1) // 2 if ncols == 2 else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 3.7 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        handles, labels = [], []
        if panel == "elbo":
            for key, label in [("train_elbo", "training ELBO (running mean over the epoch)"),
                               ("val_elbo", "held-out ELBO")]:
                if _has(history, key):
                    ax.plot(epochs, _series(history, key), marker=marker, label=label)
            finite = np.concatenate([_series(history, k) for k in ("train_elbo", "val_elbo") if _has(history, k)])
            finite = finite[np.isfinite(finite)]
            if len(finite) > 4:  # the first epochs dwarf the rest: zoom on the part worth reading
                lo, hi = np.percentile(finite, 5), finite.max()
                ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo))
            ax.set_ylabel("nats per image (higher is better)")
            ax.set_title("ELBO")
        elif panel == "terms":
            ax.plot(epochs, _series(history, "rec"), marker=marker, color="C0", label="reconstruction E_q[log p(x|z)]")
            ax.set_ylabel("reconstruction (nats per image)", color="C0")
            ax.set_title("The ELBO's two terms, held-out images")
            if _has(history, "kl"):
                ax2 = ax.twinx()
                ax2.plot(epochs, _series(history, "kl"), marker=marker, color="C3",
                         label="KL(q(z|x) || p(z)), right axis")
                ax2.set_ylabel("KL (nats per image)", color="C3")
                ax2.set_ylim(bottom=0)
                handles, labels = ax2.get_legend_handles_labels()
        elif panel == "split":
            for key, label, color in [("kl", "KL(q(z|x) || p(z)), mean per image", "C3"),
                                      ("mutual_info", "mutual information I(x; z)", "C2"),
                                      ("marginal_kl", "KL(q(z) || p(z)), aggregate posterior", "C4")]:
                if _has(history, key):
                    ax.plot(epochs, _series(history, key), marker=marker, color=color, label=label)
            ax.set_ylabel("nats per image")
            ax.set_ylim(bottom=0)
            ax.set_title("KL = mutual information + marginal KL")
        else:
            units = _series(history, "active_units")
            ax.plot(epochs, units, marker=marker, color="k")
            dims = max((len(row["kl_per_dim"]) for row in history if row.get("kl_per_dim")), default=None)
            if dims:
                ax.axhline(dims, color="0.6", ls=":", lw=1, label=f"latent dimensions ({dims})")
            ax.set_ylim(0, (dims or np.nanmax(units)) * 1.1 + 0.5)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("active units")
            ax.set_title("Active units (Cov_x E_q[z_d] > 0.01)")
        h, lab = ax.get_legend_handles_labels()
        if h or handles:
            ax.legend(h + handles, lab + labels, fontsize=8, loc="best")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_kl_per_dim(kl_per_dim: Optional[Sequence[float]], activity: Sequence[float], path,
                    threshold: float = 0.01, sites: Optional[dict] = None) -> None:
    """Two bar charts over latent dimensions: mean KL per dimension (if defined) and activity
    :math:`\\mathrm{Cov}_x(E_q[z_d])` on a log axis with the active-unit threshold; active units in colour.
    With ``sites`` (a pair's latent sites, in order, each with its ``dims``, ``kl`` and active
    units), the dimensions of each site are marked and named."""
    activity = np.asarray(activity, dtype=float)
    d = len(activity)
    active = activity > threshold
    colors = np.where(active, "C0", "0.7")
    panels = 2 if kl_per_dim is not None else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(6.0, 0.22 * d + 2), 2.8 * panels + 0.6), squeeze=False,
                             sharex=True)
    x = np.arange(d)
    if kl_per_dim is not None:
        ax = axes[0, 0]
        ax.bar(x, np.asarray(kl_per_dim, dtype=float), color=colors)
        ax.set_ylabel("KL (nats per image)")
        ax.set_title(f"KL per latent dimension (total {np.sum(kl_per_dim):.2f} nats); grey: inactive units")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1, 0]
    ax.bar(x, np.maximum(activity, 1e-8), color=colors)
    ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"active-unit threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_ylabel("Cov_x(E_q[z_d])")
    ax.set_title(f"Activity of each unit: {int(active.sum())} of {d} active (Burda et al. 2015)", pad=16 if sites else 6)
    ax.set_xlabel("latent dimension d")
    if sites:  # the dimensions of each latent site, one after the other
        start = 0
        for name, site in sites.items():
            width = site.get("dims") or 0
            if start:
                ax.axvline(start - 0.5, color="0.3", lw=1)
            kl = "" if site.get("kl") is None else f", KL {site['kl']:.1f}"
            ax.text(start + width / 2 - 0.5, 1.02, f"site {name}{kl}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)
            start += width
        ax.set_xlabel("latent dimension d (the sites' dimensions in the model's order)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if d <= 40:
        ax.set_xticks(x)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_pareto_k(khat: np.ndarray, test_index: np.ndarray, path, good: float = 0.5, bad: float = 0.7) -> None:
    """:math:`\\hat k` of each datum against its test index, with the 0.5 and 0.7 thresholds, and
    a histogram."""
    khat = np.asarray(khat, dtype=float)
    shown = np.clip(np.where(np.isfinite(khat), khat, np.where(khat > 0, 2.0, -1.0)), -1.0, 2.0)
    colors = np.where(khat > bad, "C3", np.where(khat > good, "C1", "C2"))
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1]}, sharey=True)
    ax.scatter(test_index, shown, s=8, c=colors)
    for level, label, color in [(good, f"{good}: finite variance below", "C1"),
                                (bad, f"{bad}: unreliable above", "C3")]:
        ax.axhline(level, color=color, ls="--", lw=1, label=label)
    share = float(np.mean(khat > bad)) if len(khat) else 0.0
    ax.set_title(f"PSIS k-hat per test image: {100 * share:.1f}% above {bad} ({len(khat)} images)")
    ax.set_xlabel("test image index")
    ax.set_ylabel("k-hat (lower is better)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    axh.hist(shown, bins=30, orientation="horizontal", color="0.5")
    axh.axhline(good, color="C1", ls="--", lw=1)
    axh.axhline(bad, color="C3", ls="--", lw=1)
    axh.set_xlabel("images")
    fig.tight_layout()
    save_figure(fig, path)


def plot_iwae_curve(k: Sequence[int], bound: Sequence[float], gain: Sequence[float], gain_stderr: Sequence[float],
                    path, reference: Optional[float] = None, reference_label: str = "exact log p(x)") -> None:
    """Left: the IWAE bound :math:`\\mathcal L_K` against K (log axis). Right: the gain over the
    ELBO, :math:`\\mathcal L_K - \\mathcal L_1`, with ±2 standard errors (paired per image)."""
    k, bound = np.asarray(k), np.asarray(bound, dtype=float)
    gain, gse = np.asarray(gain, dtype=float), np.nan_to_num(np.asarray(gain_stderr, dtype=float))
    fig, (ax, axg) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(k, bound, marker="o", label="IWAE bound L_K, mean over test images")
    ax.axhline(bound[0], color="0.5", ls=":", lw=1, label=f"ELBO (K = 1): {bound[0]:.2f}")
    if reference is not None:
        ax.axhline(reference, color="C3", ls="--", lw=1, label=f"{reference_label}: {reference:.2f}")
    ax.set_ylabel("nats per image (higher is tighter)")
    ax.set_title(f"IWAE bound vs K: L_{k[-1]} = {bound[-1]:.2f}")
    axg.plot(k, gain, marker="o", color="C2", label="L_K - ELBO")
    axg.fill_between(k, gain - 2 * gse, gain + 2 * gse, color="C2", alpha=0.2,
                     label="±2 standard errors (paired per image)")
    axg.set_ylabel("nats per image")
    axg.set_title(f"Gain over the ELBO: {gain[-1]:.2f} nats at K = {k[-1]}")
    for a in (ax, axg):
        a.set_xscale("log")
        a.set_xlabel("K, importance samples per image")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def pca_2d(x: np.ndarray) -> tuple:
    """Project rows of ``x`` on their first two principal components: ``(coords (N, 2),
    explained_variance_ratio (2,))`` (a one-dimensional ``x`` gets a zero second coordinate)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    total = (s ** 2).sum()
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(min(2, len(s)))
    if coords.shape[1] == 1:
        coords, ratio = np.hstack([coords, np.zeros_like(coords)]), np.append(ratio, 0.0)
    return coords, ratio


def plot_latent_pca(means: np.ndarray, labels: Optional[np.ndarray], path) -> None:
    """The posterior means :math:`E_q[z|x]` of test images projected on their two principal
    components, coloured by class label (one colour when there are no labels)."""
    coords, ratio = pca_2d(means)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    if labels is not None:
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, color=cmap(i % cmap.N), label=str(c), alpha=0.8)
        ax.legend(title="label", fontsize=8, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.8)
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f}% of variance)")
    ax.set_title(f"Posterior means of {len(means)} test images, first two principal components")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_image_rows(rows: np.ndarray, path, row_labels: Sequence[str], title: str,
                    footnote: Optional[str] = None) -> None:
    """A grid of images ``(R, S, C, H, W)``: one labelled row per ``row_labels`` entry. Vector
    data (``H == 1``) are drawn as strips."""
    rows = np.asarray(rows, dtype=np.float32)
    r, s, c, h, w = rows.shape
    if h == 1:  # vector data: a strip of height ~ w / 6 per datum
        rows = np.repeat(rows, max(1, w // 6), axis=3)
        h = rows.shape[3]
    grid = image_grid(rows.reshape(r * s, c, h, w), ncols=s)
    width = min(12.0, 1.8 + 0.55 * s * max(1.0, w / h))
    height = (width - 1.8) * grid.shape[0] / grid.shape[1] + 0.9
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in range(r)])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=10)
    if footnote:
        ax.set_xlabel(footnote, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
