"""Seconds to draw each kind of figure at many models (run by hand; pytest does not collect tests/bench).

A report after adding one model redraws every figure, since each shows the new model: at 51 models the drawing
is most of what such a report costs. Each kind is drawn once to warm up, then ``--repeat`` times, inline (as
one worker process of ``figures.painter`` draws it); the figure is the mean of those.

    python tests/bench/figures_many.py                 # 51 models
    python tests/bench/figures_many.py --models 100
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analyze import figures  # noqa: E402


def kinds(models: int, rng: np.random.Generator) -> dict:
    """Each figure kind with data shaped as a report at ``models`` models gives it."""
    names = [f"bench-{i:03d}" for i in range(models)]
    grid = rng.random((models, models))
    values = {m: list(rng.random(7)) for m in names}
    return {
        "matrices (agreement, one panel)": lambda out: figures.matrices(
            out, {"error consistency κ": (names, grid, -1.0, 1.0)}, title="Agreement on imagenet-val"),
        "matrices (agreement, two panels)": lambda out: figures.matrices(
            out, {"error consistency κ": (names, grid, -1.0, 1.0), "linear CKA": (names, grid, 0.0, 1.0)},
            title="Agreement on imagenet-val"),
        "grouped bars (robustness)": lambda out: figures.grouped_bars(
            out, list("abcdefg"), values, ylabel="top-1", title="bars",
            errors={m: [(v - 0.05, v + 0.05) for v in values[m]] for m in names}),
        "heat map (ranking)": lambda out: figures.heatmap(
            out, names, [f"property-{i}" for i in range(12)], {"z": rng.random((models, 12))}, title="ranking"),
        "lines (PUG-ImageNet factors)": lambda out: figures.lines(
            out, {p: {m: ([1, 2, 3, 4], list(rng.random(4))) for m in names} for p in "abc"}, ylabel="top-1",
            title="lines"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=51)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import matplotlib

    print(f"matplotlib {matplotlib.__version__}, {args.models} models, mean of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, draw in kinds(args.models, np.random.default_rng(0)).items():
            out = Path(tmp) / "figure.png"
            draw(out)
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                draw(out)
            print(f"{label:34s} {(time.perf_counter() - t0) / args.repeat:6.3f} s  {out.stat().st_size / 1e3:6.0f} kB")


if __name__ == "__main__":
    main()
