"""Shared plotting helpers (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grouped_bars(path: Path, groups: list[str], series: dict[str, list[float]], *, ylabel: str, title: str,
                 errors: dict[str, list[tuple[float, float]]] | None = None, hline: float | None = None) -> Path:
    """Bars for each group (x axis), one bar per series (model), optional CI whiskers."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * max(1, len(series)) / 2 + 2), 4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        yerr = None
        if errors and name in errors:
            lo_hi = np.asarray(errors[name], dtype=float)
            yerr = np.abs(np.stack([values - lo_hi[:, 0], lo_hi[:, 1] - values]))
            yerr = np.nan_to_num(yerr)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=yerr, capsize=2)
    if hline is not None:
        ax.axhline(hline, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x, groups, rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines(path: Path, panels: dict[str, dict[str, tuple[list, list]]], *, ylabel: str, title: str) -> Path:
    """One panel per key; in each, one line per series: ``{panel: {series: (x, y)}}``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_title(panel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def matrices(path: Path, panels: dict[str, tuple[list[str], np.ndarray, float, float]], *, title: str) -> Path:
    """Square heat maps side by side: ``{panel: (names, matrix [len(names), len(names)], vmin, vmax)}``, NaN
    left blank; the size grows with the number of names and the values are written in the cells while they fit."""
    m = max((len(names) for names, *_ in panels.values()), default=1)
    side = max(3.5, 0.3 * m + 1.8)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(side * max(1, len(panels)) + 1.0, side + 0.9),
                             squeeze=False, layout="constrained")
    for ax, (label, (names, grid, low, high)) in zip(axes[0], panels.items()):
        font = 8 if len(names) <= 16 else 6
        image = ax.imshow(np.ma.masked_invalid(grid), vmin=low, vmax=high, cmap="viridis")
        ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=font)
        ax.set_yticks(np.arange(len(names)), names, fontsize=font)
        ax.set_title(label)
        if len(names) <= 10:
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value < (low + high) / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
