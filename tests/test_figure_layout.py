"""Nothing in a figure is cut off: at 51 models, with long names of wide letters, every piece of text the
figures draw lies inside the saved picture.

The check is matplotlib's own: the extent of each text the renderer draws when the figure is saved, against the
figure's size. Margins are computed from measured label widths (analyze/figures.py), so this is what keeps
them honest."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from analyze import figures

WIDE = ["WWW_MMM_convnext_xxlarge.clip_laion2b_soup_ft_in12k_in1k_384",
        "vit_huge_patch14_clip_quickgelu_378.dfn5b_ft_in12k_in1k_WWWW",
        "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"]
NAMES = WIDE + [f"model-{i:03d}" for i in range(51 - len(WIDE))]


@pytest.fixture
def boxes(monkeypatch) -> dict[str, list]:
    """Every text drawn as the figures are saved: its window extent, by its text."""
    found: dict[str, list] = {}
    draw = Text.draw

    def drawn(text, renderer):
        draw(text, renderer)
        if text.get_visible() and text.get_text().strip():
            found.setdefault(text.get_text(), []).append(text.get_window_extent(renderer))

    monkeypatch.setattr(Text, "draw", drawn)
    return found


def _overlaps(extents: list) -> list[tuple[int, int]]:
    """Pairs of boxes (in the order given) that share more than half a pixel each way."""
    return [(i, j) for i in range(len(extents)) for j in range(i + 1, len(extents))
            if min(extents[i].x1, extents[j].x1) - max(extents[i].x0, extents[j].x0) > 0.5
            and min(extents[i].y1, extents[j].y1) - max(extents[i].y0, extents[j].y0) > 0.5]


@pytest.fixture
def outside(monkeypatch) -> list[str]:
    """The texts drawn outside their figure, one line each, as each figure is saved."""
    found: list[str] = []
    draw, save = Text.draw, Figure.savefig

    def drawn(text, renderer):
        draw(text, renderer)
        figure = text.get_figure(root=True)
        if not text.get_visible() or not text.get_text().strip() or figure is None:
            return
        box, width, height = text.get_window_extent(renderer), figure.bbox.width, figure.bbox.height
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            found.append(f"{text.get_text()!r} at {box.bounds} outside {width:.0f} x {height:.0f} px")

    def saved(fig, *args, **kwargs):
        assert kwargs.get("bbox_inches") is None, "a figure must fit its own size, not be cropped to its contents"
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Text, "draw", drawn)
    monkeypatch.setattr(Figure, "savefig", saved)
    return found


def test_matrices_of_many_models(tmp_path, outside):
    rng = np.random.default_rng(0)
    grid = rng.random((len(NAMES), len(NAMES)))
    figures.matrices(tmp_path / "m.png", {"error consistency κ": (NAMES, grid, -1.0, 1.0),
                                          "linear CKA": (NAMES[:40], grid[:40, :40], 0.0, 1.0)},
                     title="Agreement on imagenet-val")
    assert outside == []


def test_matrices_sharing_their_names(tmp_path, outside):
    grid = np.random.default_rng(5).random((len(NAMES), len(NAMES)))
    figures.matrices(tmp_path / "m.png", {"error consistency κ": (NAMES, grid, -1.0, 1.0),
                                          "linear CKA": (list(NAMES), grid, 0.0, 1.0)}, title="Agreement")
    assert outside == []


@pytest.mark.parametrize("n", [11, 16, 17, 51, 80])
def test_matrix_names_do_not_touch(tmp_path, boxes, n):
    """Each row's name and each column's name clear of its neighbours', however many models (the cell shrinks to
    what a name needs beyond a dozen)."""
    names = [f"model-{i:03d}" for i in range(n)]
    figures.matrices(tmp_path / "m.png", {"κ": (names, np.random.default_rng(n).random((n, n)), -1.0, 1.0)},
                     title="Agreement")
    drawn = [boxes[name] for name in names]
    assert all(len(b) == 2 for b in drawn)  # once beside its row, once under its column
    rows = sorted((b for pair in drawn for b in pair if b.width > b.height), key=lambda b: b.y0)
    columns = sorted((b for pair in drawn for b in pair if b.height > b.width), key=lambda b: b.x0)
    assert len(rows) == len(columns) == n
    assert _overlaps(rows) == [] and _overlaps(columns) == []


def test_matrix_values_inside_their_cells(tmp_path, boxes):
    """With ten models or fewer each cell shows its value: every one, minus signs included, within its cell."""
    names = [f"m{i}" for i in range(10)]
    grid = np.full((10, 10), -0.37) + np.eye(10) * 1.28  # values no colour bar tick shows
    figures.matrices(tmp_path / "m.png", {"κ": (names, grid, -1.0, 1.0)}, title="Agreement")
    assert len(boxes["-0.37"]) == 90 and len(boxes["0.91"]) == 10
    cells = sorted(boxes["-0.37"] + boxes["0.91"], key=lambda b: (round(b.y0), b.x0))
    assert _overlaps(cells) == []
    width = min(abs(b.x0 - a.x0) for a, b in zip(cells, cells[1:]) if abs(a.y0 - b.y0) < 1)  # one cell
    assert max(b.width for b in cells) < width


def test_matrices_of_few_models_with_values(tmp_path, outside):
    names = WIDE[:2] + ["a", "b"]
    figures.matrices(tmp_path / "m.png", {"κ": (names, np.eye(4), -1.0, 1.0)}, title="Agreement")
    assert outside == []


def test_lines_of_a_few_models_with_large_values(tmp_path, outside):
    panels = {p: {m: ([1.0, 1.5, 2.0], [12345.6, 23456.7, 34567.8]) for m in WIDE[:2]} for p in ("scale", "shift", "rot")}
    figures.lines(tmp_path / "l.png", panels, ylabel="images per second", title="Throughput")
    assert outside == []


def test_lines_with_a_legend_beside(tmp_path, outside):
    rng = np.random.default_rng(1)
    panels = {p: {m: ([1.0, 1.5, 2.0], list(rng.random(3) * 100)) for m in NAMES} for p in ("scale", "shift")}
    figures.lines(tmp_path / "l.png", panels, ylabel="top-1 (%)", title="Invariance: top-1 (%)")
    assert outside == []


@pytest.mark.parametrize("n_groups", [3, 7, 20])
def test_bars_for_many_models(tmp_path, outside, n_groups):
    rng = np.random.default_rng(2)
    groups = [f"imagenet-{g}-WWW" for g in range(n_groups)]
    series = {m: list(rng.random(n_groups)) for m in NAMES}
    errors = {m: [(v - 0.05, v + 0.05) for v in values] for m, values in series.items()}
    figures.grouped_bars(tmp_path / "b.png", groups, series, ylabel="top-1", title="Robustness", errors=errors)
    assert outside == []


def test_bars_for_few_models(tmp_path, outside):
    rng = np.random.default_rng(3)
    groups = [f"group-{g}-WWW" for g in range(20)]
    figures.grouped_bars(tmp_path / "b.png", groups, {m: list(rng.random(20)) for m in WIDE[:2]},
                         ylabel="error ratio", title="ImageNet-X", hline=1.0)
    assert outside == []


def test_heatmap_with_long_row_and_column_names(tmp_path, outside):
    rng = np.random.default_rng(4)
    columns = ["top-1 imagenet-val", "ECE imagenet-sketch-WWW", "shape bias", "mean error ratio imagenet-x"]
    figures.heatmap(tmp_path / "h.png", NAMES, columns,
                    {"z-score (higher is better)": rng.normal(size=(len(NAMES), 4)),
                     "rank": rng.random((len(NAMES), 4))}, title="Ranking")
    assert outside == []


def _reliability_curve() -> dict[str, np.ndarray]:
    edges = np.linspace(0, 1, 16)
    return {"lower": edges[:-1], "upper": edges[1:], "accuracy": np.linspace(0, 1, 15),
            "confidence": np.linspace(0, 1, 15), "count": np.arange(15.0)}


def test_reliability_as_heat_maps(tmp_path, outside):
    curve = _reliability_curve()
    figures.reliability_panels(tmp_path / "r.png", {m: curve for m in NAMES}, "Calibration on imagenet-val")
    assert outside == []


def test_bars_for_few_models_and_groups(tmp_path, outside):
    groups = ["imagenet-v2", "imagenet-sketch-WWW", "imagenet-r", "imagenet-a", "imagenet-real", "imagenet-hard",
              "imagenet-c (mean)"]
    series = {m: list(np.linspace(0.2, 0.9, len(groups))) for m in WIDE[:2]}
    figures.grouped_bars(tmp_path / "b.png", groups, series, ylabel="top-1", title="Robustness")
    assert outside == []


def test_reliability_of_a_few_models(tmp_path, outside):
    curve = _reliability_curve()
    figures.reliability_panels(tmp_path / "r.png", {m: curve for m in WIDE[:2] + ["a", "b", "c"]},
                               "Calibration on imagenet-val")
    assert outside == []
