"""Shared plotting helpers (matplotlib, Agg backend: no display needed).

Drawing is most of what a report does once its numbers are cached, and it needs nothing but the numbers: inside
``painter()`` (``analyze report`` opens one) every function marked ``@background`` is drawn by worker processes
while the analysis goes on, and leaving the block waits for every figure. Elsewhere they draw at once.
matplotlib is imported by the drawing functions (``pyplot_agg``), so a process that only queues figures never
imports it.
"""
from __future__ import annotations

import functools
import importlib
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np


_pool: ProcessPoolExecutor | None = None
_drawing: list[tuple[Path, Callable[..., Path], tuple, dict, Future]] = []


def background(draw: Callable[..., Path]) -> Callable[..., Path]:
    """Mark a module-level ``draw(path, ...) -> path``: inside ``painter()`` it is queued to the workers and returns
    its path at once."""
    @functools.wraps(draw)
    def call(path: Path, *args, **kwargs) -> Path:
        if _pool is None:
            return draw(path, *args, **kwargs)
        try:
            future = _pool.submit(_draw, draw.__module__, draw.__qualname__, path, args, kwargs)
        except (BrokenProcessPool, OSError, EOFError):  # no worker could start, or they are gone: drawn here
            return draw(path, *args, **kwargs)
        _drawing.append((Path(path), draw, args, kwargs, future))
        return path
    return call


def _draw(module: str, name: str, path: Path, args: tuple, kwargs: dict) -> Path:
    """In a worker: the undecorated function, by name (a decorated one does not pickle by reference)."""
    return getattr(importlib.import_module(module), name).__wrapped__(path, *args, **kwargs)


def _warm(pool: ProcessPoolExecutor, workers: int) -> None:
    try:
        for _ in range(workers):
            pool.submit(int)
    except (BrokenProcessPool, OSError, EOFError, RuntimeError):  # the figures then find out and draw inline
        pass


def default_workers() -> int:
    """Processes drawing beside the analysis: none on one core (drawing inline costs the same), else one a core
    up to 4 (the analysis itself waits on the figures at the end)."""
    from schemas.host import usable_cores  # here: importing schemas opens zarr, which a drawing process never needs

    cores = usable_cores()
    return 0 if cores < 2 else min(4, cores)


@contextmanager
def painter(workers: int) -> Iterator[None]:
    """Draw ``@background`` figures in ``workers`` processes until the block ends, then wait for all of them; the
    first figure that failed is raised, naming its file. Where no worker can be started, or one dies, the figures
    are drawn in this process instead."""
    global _pool
    if workers <= 0 or _pool is not None:
        yield
        return
    # forkserver: the analysis holds threads (zarr's event loop, the logits readers) that a plain fork would copy
    # in whatever state; the server imports this module and matplotlib once, so each worker starts drawing at once.
    try:
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__, f"{__package__}.pyplot_agg"])
        _pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    except (OSError, ValueError, ImportError, NotImplementedError):  # no semaphores, no forkserver: inline
        yield
        return
    # The workers start (the server, then each one: most of a second) on a thread of their own, not on the
    # analysis's when it submits its first figure.
    threading.Thread(target=_warm, args=(_pool, workers), daemon=True, name="painter-start").start()
    _drawing.clear()
    try:
        yield
        for path, draw, args, kwargs, future in _drawing:
            try:
                future.result()
            except BrokenProcessPool:
                draw(path, *args, **kwargs)
            except Exception as error:
                raise RuntimeError(f"figure {path}: {type(error).__name__}: {error}") from error
    finally:
        pool, _pool = _pool, None
        pool.shutdown(wait=True, cancel_futures=True)
        _drawing.clear()


# Beyond these, a figure changes layout instead of squeezing: bars turn horizontal, one panel per group.
MANY_SERIES = 8
MANY_GROUPS = 16
PANEL_COLUMNS = 4


DPI = 110


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG at ``DPI`` and close it.

    The pixels are those of ``fig.savefig(path, dpi=DPI)``, at zlib level 1, not 6, and as RGB where the figure is
    opaque (alpha 255 everywhere, as with matplotlib's default white background): on these flat-coloured pictures
    that halves the encoding, which was a fifth of drawing a report's figures, for files about 5% larger."""
    from PIL import Image

    from .pyplot_agg import plt

    fig.set_dpi(DPI)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    pixels = np.ascontiguousarray(rgba[..., :3]) if (rgba[..., 3] == 255).all() else rgba
    Image.fromarray(pixels).save(path, format="png", compress_level=1, dpi=(DPI, DPI))
    plt.close(fig)
    return path


def label_inches(labels: Iterable[str], size: float | str) -> float:
    """The width in inches of the widest of ``labels`` at ``size`` points, as the Agg backend lays it out.

    Margins come from this, not from a layout engine's measuring pass (which costs about as much as drawing
    the figure), nor from a count of characters (DejaVu Sans is not monospaced: names of wide letters got cut)."""
    from .pyplot_agg import RENDERER, FontProperties

    font = FontProperties(size=size)
    widths = [RENDERER.get_text_width_height_descent(str(s), font, ismath=False)[0] for s in labels]
    return max(widths, default=0.0) / RENDERER.dpi


def _row_names(ax, names: Iterable[str], size: float) -> None:
    """``names`` as plain texts left of the rows (row ``i`` at y = i), in place of tick labels: a tick object per
    name was most of the drawing of a figure at 51 models."""
    from .pyplot_agg import offset_copy

    beside = offset_copy(ax.get_yaxis_transform(), fig=ax.figure, x=-3, units="points")  # x: axes, y: row
    for i, name in enumerate(names):
        ax.text(0, i, name, ha="right", va="center", fontsize=size, transform=beside)


def _column_names(ax, names: Iterable[str], size: float, rotation: float, ha: str) -> None:
    """``names`` as plain texts under the columns (column ``j`` at x = j), in place of tick labels."""
    from .pyplot_agg import offset_copy

    below = offset_copy(ax.get_xaxis_transform(), fig=ax.figure, y=-3, units="points")  # x: column, y: axes
    for j, name in enumerate(names):
        ax.text(j, 0, name, rotation=rotation, ha=ha, va="top", fontsize=size, transform=below)


def _yerr(values: np.ndarray, errors: list[tuple[float, float]] | None) -> np.ndarray | None:
    if errors is None:
        return None
    lo_hi = np.asarray(errors, dtype=float)
    return np.nan_to_num(np.abs(np.stack([values - lo_hi[:, 0], lo_hi[:, 1] - values])))


@background
def grouped_bars(path: Path, groups: list[str], series: dict[str, list[float]], *, ylabel: str, title: str,
                 errors: dict[str, list[tuple[float, float]]] | None = None, hline: float | None = None) -> Path:
    """Bars for each group (x axis), one bar per series (model), optional CI whiskers.

    With more than ``MANY_SERIES`` series, one panel per group with a horizontal bar per series (a heat map of the
    values when the groups are that many too); with more than ``MANY_GROUPS`` groups, horizontal bars with the
    groups down the y axis. The figure grows with the bars."""
    from .pyplot_agg import plt

    errors = errors or {}
    if len(series) > MANY_SERIES and len(groups) > MANY_SERIES:  # as many panels as groups would not read: a map
        return heatmap(path, list(series), groups, {ylabel: np.array(list(series.values()), dtype=float)},
                       title=title)
    if len(series) > MANY_SERIES:
        return _bar_panels(path, groups, series, xlabel=ylabel, title=title, errors=errors, vline=hline)
    horizontal = len(groups) > MANY_GROUPS
    n = max(1, len(series))
    width = 0.8 / n
    if horizontal:
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.22 * len(groups) * max(1, n / 2)))
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * n / 2 + 2), 4))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        offset = x + (i - (n - 1) / 2) * width
        err = _yerr(values, errors.get(name))
        if horizontal:
            ax.barh(offset, values, width, label=name, xerr=err, capsize=2)
        else:
            ax.bar(offset, values, width, label=name, yerr=err, capsize=2)
    if hline is not None:
        (ax.axvline if horizontal else ax.axhline)(hline, color="gray", lw=0.8, ls="--")
    if horizontal:
        ax.set_yticks([])
        ax.set_ylim(len(groups) - 0.5, -0.5)  # the first group on top
        _row_names(ax, groups, 8)
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(x, groups, rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if horizontal:  # margins from the names' measured width, not tight_layout: its measuring pass was a third of it
        _names_beside(fig, groups, 8, bottom=0.55, top=0.4)
    else:
        fig.tight_layout()
    return save(fig, path)


def _names_beside(fig, names: Iterable[str], size: float, *, bottom: float, top: float, **spacing) -> None:
    """Widen ``fig`` by the room its row names (``_row_names`` at ``size`` points) take left of the panels and set
    its margins in inches: names and their gap on the left, 0.2 on the right, ``bottom`` and ``top``."""
    width, height = fig.get_size_inches()
    left = 0.3 + label_inches(names, size)
    fig.set_size_inches(width + left, height)
    fig.subplots_adjust(left=left / (width + left), right=1 - 0.2 / (width + left), bottom=bottom / height,
                        top=1 - top / height, **spacing)


def _horizontal_bars(ax, y: np.ndarray, values: np.ndarray, height: float, xerr: np.ndarray | None) -> None:
    """``ax.barh(y, values, height, xerr=xerr, capsize=1.5)`` drawn as one collection: barh adds a patch per bar,
    and each patch's limits update was most of the time a panel of 51 bars took."""
    from .pyplot_agg import PolyCollection

    shown = np.isfinite(values)
    low, high, v = y[shown] - height / 2, y[shown] + height / 2, values[shown]
    base = np.zeros_like(v)
    corners = np.stack([base, low, base, high, v, high, v, low], axis=1).reshape(-1, 4, 2)  # [bar, corner, xy]
    bars = PolyCollection(corners, facecolors="tab:blue", edgecolors="none")
    bars.sticky_edges.x.append(0.0)  # as barh: no margin beyond the bars' common base
    ax.add_collection(bars, autolim=True)
    if xerr is not None:
        ax.errorbar(values, y, xerr=xerr, fmt="none", ecolor="black", capsize=1.5)
    ax.autoscale_view()


def _bar_panels(path: Path, groups: list[str], series: dict[str, list[float]], *, xlabel: str, title: str,
                errors: dict[str, list[tuple[float, float]]], vline: float | None) -> Path:
    """Many series: one panel per group, one horizontal bar per series (in the given order), CI whiskers."""
    from .pyplot_agg import plt

    names = list(series)
    cols = min(PANEL_COLUMNS, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.5, rows * (0.8 + 0.16 * len(names))),
                             squeeze=False)
    y = np.arange(len(names))
    for g, group in enumerate(groups):
        ax = axes[g // cols][g % cols]
        values = np.array([series[m][g] for m in names], dtype=float)
        lo_hi = [errors[m][g] for m in names] if all(m in errors for m in names) else None
        _horizontal_bars(ax, y, values, 0.75, _yerr(values, lo_hi))
        if vline is not None:
            ax.axvline(vline, color="gray", lw=0.8, ls="--")
        ax.set_title(group, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        # The names once per row of panels, the first model on top (not a shared y axis: it names every panel's rows).
        ax.set_yticks([])
        if g % cols == 0:
            _row_names(ax, names, 7)
        ax.set_ylim(len(names) - 0.5, -0.5)
    for g in range(len(groups), rows * cols):
        axes[g // cols][g % cols].set_visible(False)
    # Margins from the longest name's measured width, not tight_layout: its measuring pass costs as much as
    # drawing. The title sits in the top margin, above the first row's panel titles.
    fig.suptitle(title, y=1 - 0.08 / fig.get_size_inches()[1], va="top")
    _names_beside(fig, names, 7, bottom=0.5, top=0.6, wspace=0.08, hspace=1.0 / (0.8 + 0.16 * len(names)))
    return save(fig, path)


@background
def lines(path: Path, panels: dict[str, dict[str, tuple[list, list]]], *, ylabel: str, title: str) -> Path:
    """One panel per key; in each, one line per series: ``{panel: {series: (x, y)}}``. With many series the
    colours come from a continuous map and the legend sits beside the panels, in as many columns as it needs."""
    from .pyplot_agg import plt

    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    many = len(names) > 10
    colours = dict(zip(names, plt.get_cmap("viridis")(np.linspace(0, 0.95, len(names))))) if many else {}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6 if not many else 4.5), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", ms=3 if many else 6, lw=0.9 if many else 1.5, label=name,
                    color=colours.get(name))
        ax.set_title(panel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title)
    # Margins in inches from the measured texts, not tight_layout: its measuring pass cost about a third of this
    # figure at 51 models. Left of each panel: its y label (one line) and its widest tick label.
    size = plt.rcParams["ytick.labelsize"]
    ticks = max(label_inches(ax.yaxis.get_major_formatter().format_ticks(ax.get_yticks()), size) for ax in axes[0])
    left, bottom, top, right = 0.45 + ticks, 0.45, 0.8, 0.15
    beside = 0.0
    if handles and many:  # the legend to the right of the panels, the figure widened by its width
        columns = -(-len(names) // 30)
        em = 7 / 72  # the legend's font size, inches: its handles, gaps and pads are so many of it
        beside = columns * (label_inches(labels, 7) + 2.8 * em) + (columns - 1) * 2.0 * em + 1.8 * em + 0.1
        fig.legend(handles, labels, loc="center right", fontsize=7, ncol=columns, frameon=False)
    elif handles:
        axes[0][0].legend(fontsize=8)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + beside, height)
    panel = (width - right) / len(panels) - left  # a panel's width: each has a left margin of its own
    fig.subplots_adjust(left=left / (width + beside), right=(width - right) / (width + beside), bottom=bottom / height,
                        top=1 - top / height, wspace=left / panel)
    return save(fig, path)


@background
def heatmap(path: Path, rows: list[str], columns: list[str], panels: dict[str, np.ndarray], *, title: str,
            cmap: str | dict[str, str] = "viridis", limits: dict[str, tuple[float, float]] | None = None,
            fmt: str = "{:.2f}") -> Path:
    """One heat map per panel (``{panel label: [row, column] values}``, NaN blank), side by side with shared rows;
    the figure grows with rows and columns, and cells carry their value while there are few enough to read."""
    from .pyplot_agg import plt

    limits = limits or {}
    n_rows, n_cols = len(rows), len(columns)
    # Margins from the labels' measured widths (the column labels at 60 degrees: the first one reaches left of
    # its column), not a tight bounding box: measuring it costs a second drawing of every cell's text.
    row_font = 8 if n_rows <= 60 else 6
    left = 0.3 + max(label_inches(rows, row_font), 0.5 * label_inches(columns[:1], 8))
    bottom = 0.45 + 0.87 * label_inches(columns, 8)  # sin 60 degrees
    top, right = 0.55, 0.9  # right: the last colour bar's ticks and label
    width = max(left + right + len(panels) * (1.6 + 0.5 * n_cols), 0.4 + label_inches([title], 12))  # the title fits
    height = top + bottom + max(0.35 + 0.24 * n_rows, 0.3 + label_inches(panels, 10))  # colour bar labels fit
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(width, height))  # rows named once, below
    for ax, (label, values) in zip(axes[0], panels.items()):
        low, high = limits.get(label, (np.nanmin(values), np.nanmax(values)))
        image = ax.imshow(np.clip(values, low, high), aspect="auto", interpolation="nearest", vmin=low, vmax=high,
                          cmap=cmap if isinstance(cmap, str) else cmap[label])
        ax.set_xticks([])
        ax.set_yticks([])
        _column_names(ax, columns, 8, rotation=60, ha="right")
        if n_rows * n_cols <= 600:
            shade = image.to_rgba(np.clip(values, low, high))[..., :3] @ np.array([0.299, 0.587, 0.114])
            for i, j in zip(*np.nonzero(np.isfinite(values))):  # dark text on light cells, light on dark
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=6.5,
                        color="black" if shade[i, j] > 0.5 else "white")
        fig.colorbar(image, ax=ax, label=label, shrink=min(1.0, 8 / max(n_rows, 1) + 0.3), pad=0.02)
    _row_names(axes[0][0], rows, row_font)  # once, left of the first panel
    fig.suptitle(title)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=0.25)
    return save(fig, path)


RELIABILITY_PER_ROW = 6  # models per row of the reliability figure; more models wrap onto further rows


@background
def reliability_panels(path: Path, curves: dict[str, dict], title: str) -> Path:
    """Calibration's figure: reliability diagram (top) and confidence histogram (below it), one column per model,
    ``RELIABILITY_PER_ROW`` a row; beyond two rows of models, heat maps instead: per model and bin, accuracy minus
    mean confidence (what ECE weighs) and the fraction of the samples."""
    from .pyplot_agg import plt

    if len(curves) > 2 * RELIABILITY_PER_ROW:
        bins = next(iter(curves.values()))
        columns = [f"{hi:.2f}" for hi in bins["upper"]]
        with np.errstate(all="ignore"):
            gap = np.array([r["accuracy"] - r["confidence"] for r in curves.values()])
            share = np.array([r["count"] / max(1, r["count"].sum()) for r in curves.values()])
        return heatmap(path, list(curves), columns,
                       {"accuracy - confidence": gap, "fraction of samples": share},
                       title=f"{title} (columns: bins by upper confidence edge)",
                       cmap={"accuracy - confidence": "RdBu", "fraction of samples": "Greys"},
                       limits={"accuracy - confidence": (-0.5, 0.5)})
    cols = min(RELIABILITY_PER_ROW, len(curves))
    rows = -(-len(curves) // cols)
    column = max(3.2, label_inches(curves, 9) / 0.8 + 0.3)  # each model's name fits above its panel
    fig, axes = plt.subplots(2 * rows, cols, figsize=(column * cols, 4.6 * rows + 1), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * rows})
    for k, (model, r) in enumerate(curves.items()):
        i, j = 2 * (k // cols), k % cols
        centers = (r["lower"] + r["upper"]) / 2
        width = r["upper"] - r["lower"]
        ax = axes[i][j]
        ax.bar(centers, np.nan_to_num(r["accuracy"]), width, edgecolor="k", lw=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
        ax.set_title(model, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy" if j == 0 else "")
        hist = axes[i + 1][j]
        hist.bar(centers, r["count"] / max(1, r["count"].sum()), width, color="tab:orange", edgecolor="k", lw=0.4)
        hist.set_xlim(0, 1)
        hist.set_xlabel("confidence")
        hist.set_ylabel("fraction" if j == 0 else "")
        for a in (ax, hist):
            a.set_xticks((0, 0.5, 1))
        ax.set_yticks((0, 0.5, 1))
        if j:  # the accuracy axis is [0, 1] everywhere: its numbers once per row
            ax.tick_params(labelleft=False)
    for k in range(len(curves), rows * cols):
        axes[2 * (k // cols)][k % cols].set_visible(False)
        axes[2 * (k // cols) + 1][k % cols].set_visible(False)
    fig.suptitle(title)
    # Margins in inches, not tight_layout: its measuring pass costs as much as the drawing, at every model.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.6 / height,
                        wspace=0.25, hspace=0.45)
    return save(fig, path)


# A matrix's cell in inches beyond a dozen names: a 6-point name a row with room between them (the picture's pixels,
# most of its drawing at 51 models, grow with the square of this). Smaller matrices keep 3 inches, room for values.
MATRIX_CELL = 0.18


@background
def matrices(path: Path, panels: dict[str, tuple[list[str], np.ndarray, float, float]], *, title: str) -> Path:
    """Square heat maps side by side: ``{panel: (names, matrix [len(names), len(names)], vmin, vmax)}``, NaN
    left blank; the size grows with the number of names and the values are written in the cells while they fit.

    The layout is set in inches from the names' measured widths, and the names are plain texts beside the rows and
    under the columns rather than tick labels: at 51 models a layout engine and 204 ticks were most of the time
    a report with every run cached spends drawing."""
    from .pyplot_agg import plt

    m = max((len(names) for names, *_ in panels.values()), default=1)
    font = 8 if m <= 16 else 6
    margin = 0.1 + label_inches((n for names, *_ in panels.values() for n in names), font)  # names, their gap
    side = max(3.0, MATRIX_CELL * m + 0.3)  # the matrix
    bar, top, edge = 0.85, 0.75, 0.15  # colour bar with its numbers; both titles; the picture's border
    # A panel over the same names as the one to its left shares its row names: their texts are most of the drawing.
    lists = [names for names, *_ in panels.values()]
    named = [k == 0 or lists[k] != lists[k - 1] for k in range(len(lists))]
    lefts = [margin if own else 0.2 for own in named] or [margin]
    width, height = 2 * edge + sum(lefts) + len(lefts) * (side + bar), edge + top + side + margin
    fig = plt.figure(figsize=(width, height))
    x0 = edge
    for k, (panel, (names, grid, low, high)) in enumerate(panels.items()):
        x0 += lefts[k]
        ax = fig.add_axes((x0 / width, (edge + margin) / height, side / width, side / height))
        image = ax.imshow(np.ma.masked_invalid(grid), vmin=low, vmax=high, cmap="viridis", aspect="auto",
                          interpolation="nearest")  # one colour a cell, and no resampling pass
        ax.set_xticks([])
        ax.set_yticks([])
        _column_names(ax, names, font, rotation=90, ha="center")
        if named[k]:
            _row_names(ax, names, font)
        ax.set_title(panel)
        if len(names) <= 10:
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value < (low + high) / 2 else "black")
        bar_axes = fig.add_axes(((x0 + side + 0.12) / width, (edge + margin) / height, 0.15 / width,
                                 side / height))
        fig.colorbar(image, cax=bar_axes)
        x0 += side + bar
    fig.suptitle(title, y=1 - edge / height, va="top")
    return save(fig, path)
