"""Figures drawn by worker processes (``figures.painter``, as ``analyze report`` does) are the same files as
figures drawn inline, and a figure that fails stops the report with an error naming its file."""
from __future__ import annotations

import numpy as np
import pytest

from analyze import figures


def draw_all(folder, bad_format: bool = False) -> list:
    rng = np.random.default_rng(0)
    names = [f"model-{i:02d}" for i in range(12)]
    values = {m: list(rng.random(5)) for m in names}
    grid = rng.random((12, 12))
    return [
        figures.grouped_bars(folder / "bars.png", list("abcde"), values, ylabel="top-1", title="bars"),
        figures.heatmap(folder / "map.png", names, list("abcde"),
                        {"v": np.array(list(values.values()))}, title="map",
                        fmt="{:d}" if bad_format else "{:.2f}"),
        figures.matrices(folder / "grid.png", {"κ": (names, grid, 0.0, 1.0)}, title="grid"),
        figures.lines(folder / "lines.png", {"p": {m: ([1, 2, 3], list(rng.random(3))) for m in names}},
                      ylabel="y", title="lines"),
    ]


def test_workers_draw_the_same_files_as_inline(tmp_path):
    inline, workers = tmp_path / "inline", tmp_path / "workers"
    inline.mkdir(), workers.mkdir()
    paths = draw_all(inline)
    with figures.painter(workers=2):
        queued = draw_all(workers)
        assert figures._pool is not None  # really drawn elsewhere: the paths come back before the files exist
    assert [p.name for p in queued] == [p.name for p in paths]
    for a, b in zip(paths, queued):
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes(), a.name
    assert figures._pool is None


def test_a_failing_figure_names_its_file(tmp_path):
    with pytest.raises(RuntimeError, match=r"figure .*map\.png: ValueError"):
        with figures.painter(workers=1):
            draw_all(tmp_path, bad_format=True)  # an integer format for float cells
    assert figures._pool is None
    with pytest.raises(ValueError):  # inline, the drawing's own error
        draw_all(tmp_path, bad_format=True)


def test_a_killed_worker_costs_no_figure(tmp_path):
    import os
    import signal

    inline, workers = tmp_path / "inline", tmp_path / "workers"
    inline.mkdir(), workers.mkdir()
    paths = draw_all(inline)
    with figures.painter(workers=1):
        draw_all(workers)
        for pid in list(figures._pool._processes):  # killed while drawing its first figure
            os.kill(pid, signal.SIGKILL)
        draw_all(workers)  # submitted to a broken pool: drawn here
    for a in paths:
        assert (workers / a.name).read_bytes() == a.read_bytes(), a.name


def test_the_analysis_imports_matplotlib_only_to_draw():
    """A report whose figures are drawn by worker processes never imports matplotlib (a third of its start-up)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import analyze.cli, analyze.report; from analyze import studies\n"
            "[studies.get(n) for n in studies.available()]\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_a_figure_worker_imports_the_figures_alone():
    """The painter's processes import what drawing needs (the figures module, matplotlib), not the analysis: no store
    access, no tables (about half a processor-second less for each report)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from analyze import figures; import analyze.pyplot_agg\n"
            "heavy = ('zarr', 'polars', 'schemas', 'analyze.store', 'analyze.report')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("whiskers", [True, False])
def test_horizontal_bars_match_matplotlibs_barh(whiskers):
    """The bar panels' bars, drawn as one collection, have barh's rectangles (NaN left out), whiskers and limits
    (without whiskers the axis starts at the bars' base, 0, as barh's does)."""
    from matplotlib.figure import Figure

    y = np.arange(6.0)
    values = np.array([0.2, 0.9, np.nan, 0.5, 0.0, 0.7])
    err = np.stack([np.full(6, 0.05), np.full(6, 0.1)]) if whiskers else None  # [low, high] whisker lengths
    ours, reference = Figure().subplots(1, 2)
    figures._horizontal_bars(ours, y, values, 0.75, err)
    bars = reference.barh(y, values, 0.75, xerr=err, capsize=1.5)
    drawn = [p.vertices[:4] for p in ours.collections[0].get_paths()]
    expected = [r.get_patch_transform().transform(r.get_path().vertices[:4])  # data coordinates
                for r, v in zip(bars.patches, values) if np.isfinite(v)]
    assert len(drawn) == len(expected) == 5
    for a, b in zip(drawn, expected):
        assert sorted(map(tuple, np.round(a, 12))) == sorted(map(tuple, np.round(b, 12)))
    drawn_whiskers, expected_whiskers = ours.collections[1:], reference.collections
    assert len(drawn_whiskers) == len(expected_whiskers) == (1 if whiskers else 0)
    for ours_lines, reference_lines in zip(drawn_whiskers, expected_whiskers):
        for a, b in zip(ours_lines.get_segments(), reference_lines.get_segments(), strict=True):
            assert np.array_equal(a, b)
    assert ours.get_xlim() == pytest.approx(reference.get_xlim())
    assert ours.get_ylim() == pytest.approx(reference.get_ylim())


def _savefig_pixels(fig, **kw) -> np.ndarray:
    """The pixels of matplotlib's own PNG of ``fig`` at ``figures.DPI``, read back."""
    import io

    from PIL import Image

    reference = io.BytesIO()
    fig.savefig(reference, dpi=figures.DPI, format="png", **kw)
    return np.asarray(Image.open(reference))


def test_a_saved_figure_has_savefigs_pixels_without_its_alpha(tmp_path):
    """``figures.save`` writes what ``fig.savefig(dpi=DPI)`` would (matplotlib's own PNG, read back), as RGB."""
    from PIL import Image

    from analyze.pyplot_agg import plt

    def figure():
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.imshow(np.arange(12.0).reshape(3, 4), cmap="viridis")
        ax.plot([0, 3], [0, 2], "r-", lw=2)
        ax.set_title("κ, ViT-B/16")
        return fig

    want = _savefig_pixels(figure())
    with Image.open(figures.save(figure(), tmp_path / "f.png")) as im:
        assert im.mode == "RGB" and np.allclose(im.info["dpi"], figures.DPI, atol=0.01)
        got = np.asarray(im)
    assert (want[..., 3] == 255).all()  # opaque: dropping alpha loses nothing
    np.testing.assert_array_equal(got, want[..., :3])


def test_a_transparent_figure_keeps_its_alpha(tmp_path):
    """A figure that is not opaque (a matplotlibrc with a transparent background) is written as RGBA, as savefig
    writes it."""
    from PIL import Image

    from analyze.pyplot_agg import plt

    def figure():
        fig, ax = plt.subplots(figsize=(3, 2), facecolor="none")
        ax.set_facecolor("none")
        ax.plot([0, 1], [1, 0])
        return fig

    want = _savefig_pixels(figure(), facecolor="none")
    with Image.open(figures.save(figure(), tmp_path / "t.png")) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), want)
