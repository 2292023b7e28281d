"""Matplotlib figures: image grids, reconstructions, ELBO curves.

Every figure is rendered off-screen (Agg) and written atomically, so an interrupted run never
leaves a half-written PNG.
"""
from __future__ import annotations

import io
import math
from typing import List, Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import atomic_write  # noqa: E402

__all__ = ["image_grid", "save_figure", "plot_images", "plot_reconstructions", "plot_history",
           "plot_image_panels"]


def image_grid(images: np.ndarray, ncols: int = 10, pad: int = 1) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` into one array ``(rows*(H+pad), ncols*(W+pad))`` (grey) or
    ``(..., 3)`` (colour), padded with white lines."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    n, c, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), dtype=np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = img.transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _show(ax, grid: np.ndarray, title: Optional[str]) -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def plot_images(images: np.ndarray, path, title: Optional[str] = None, ncols: int = 10) -> None:
    """A grid of images with an optional title, saved as PNG."""
    grid = image_grid(images, ncols)
    scale = 6.0 / max(grid.shape[:2])
    fig, ax = plt.subplots(figsize=(max(2.0, grid.shape[1] * scale), max(2.0, grid.shape[0] * scale) + 0.4))
    _show(ax, grid, title)
    save_figure(fig, path)


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path,
                         title: str = "Test images (top) and their reconstructions (bottom)") -> None:
    """Originals above their reconstructions, in pairs of rows."""
    n, ncols = len(originals), min(10, len(originals))
    rows = []
    for start in range(0, n, ncols):
        rows += [originals[start:start + ncols], reconstructions[start:start + ncols]]
    stacked = np.concatenate(rows)
    plot_images(stacked, path, title=title, ncols=ncols)


def plot_history(history: List[dict], path, keys: Sequence[str] = ("train_elbo", "val_elbo"),
                 title: str = "ELBO per image during training") -> None:
    """Curves of the given per-epoch metrics (nats per image) against the epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    running = all(row.get("train_elbo") == row.get("train_objective", row.get("train_elbo")) for row in history)
    labels = {"train_elbo": "train ELBO (running, minibatches)" if running else "train ELBO (training images, "
              "end of epoch)", "val_elbo": "held-out ELBO"}
    for key in keys:
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else v for v in values], marker="." if len(epochs) < 30 else None,
                    label=labels.get(key, key))
    finite = [row[k] for row in history for k in keys if row.get(k) is not None and np.isfinite(row[k])]
    if len(finite) > 4:  # the first epochs dwarf the rest: zoom on the part worth reading
        lo, hi = np.percentile(finite, 5), max(finite)
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("nats per image")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_image_panels(panels: "dict[str, np.ndarray]", path, ncols: int = 10,
                      title: Optional[str] = None) -> None:
    """Image grids side by side, one panel per entry of ``panels`` (title -> images ``(N, C, H, W)``)."""
    grids = [image_grid(images, ncols) for images in panels.values()]
    height = max(g.shape[0] for g in grids)
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.2 * height / max(g.shape[1] for g in grids)
                                                      + 0.6), squeeze=False)
    for ax, name, grid in zip(axes[0], panels, grids):
        _show(ax, grid, name)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
