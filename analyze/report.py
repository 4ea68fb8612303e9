"""``analyze report``: every study over a store -> tidy results, paired differences, report.md and figures."""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import polars as pl
from threadpoolctl import threadpool_limits

from schemas.host import usable_cores

from . import figures
from . import pairs as pairing
from . import studies
from .bootstrap import Bootstrap
from .context import DIFF_COLUMNS, RESULT_COLUMNS, Context
from .html_page import write_page
from .metrics.softmax import prepare_kernel
from .paper_check import report_check
from .ranking import check_priorities, report_ranking
from .report_cache import ReportCache
from .store import StoreReader, manifest_order
from .provenance import origin_note
from .studies._common import PAPER_MODELS, PER_IMAGE, is_human, order_models


@lru_cache(maxsize=1)
def paper_datasets() -> tuple[str, ...]:
    """The datasets of the paper's suite, as the manifest lists them (parsed once: a few tenths of a second)."""
    from schemas.manifest import load_manifest

    return tuple(load_manifest().suite("paper")["datasets"])


def _local_path(url: str) -> Path | None:
    """The folder of a store on the local file system (plain path or file:// URL); None elsewhere."""
    import fsspec

    from schemas.remote import is_url

    if is_url(url):
        return None
    fs, path = fsspec.core.url_to_fs(url)
    return Path(path).resolve() if "file" in fs.protocol or "local" in fs.protocol else None


def _table(rows: list[dict], columns: tuple[str, ...]) -> pl.DataFrame:
    schema = {c: pl.Float64 if c in ("value", "diff", "ci_low", "ci_high") else pl.Int64 if c == "n"
              else pl.Boolean if c == "partial" else pl.Utf8 for c in columns}
    rows = [{"partial": False, **r} for r in rows] if "partial" in columns else rows
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _weights_note(reader: StoreReader) -> str | None:
    """Say plainly when the logits come from random or synthetic weights."""
    flagged = set()
    for key in reader.runs():
        attrs = reader.run_attrs(key)
        inputs = attrs.get("fingerprint_inputs", {})
        if attrs.get("synthetic") or str(inputs.get("weights_id", "")).startswith(("random", "synthetic")):
            flagged.add(key.model)
    if not flagged:
        return None
    return ("**These numbers mean nothing about real models: the logits of "
            f"{', '.join(sorted(flagged))} come from random weights or synthetic data.** "
            "They show what the report looks like, not how the backbones compare.")


def _coverage(reader: StoreReader, ctx: Context) -> str:
    lines = [f"- Models: {', '.join(order_models(reader.models)) or 'none'}",
             f"- Datasets: {', '.join(reader.datasets) or 'none'}"]
    missing_models = [m for m in PAPER_MODELS if m not in reader.models]
    if missing_models:
        lines.append(f"- The store lacks the paper's models: {', '.join(missing_models)}")
    try:
        missing = [d for d in paper_datasets() if d not in reader.datasets]
    except Exception as e:  # noqa: BLE001 - a missing manifest must not stop the report
        missing, _ = [], reader.notes.append(f"data_manifest.yaml unavailable ({e}); dataset coverage not checked")
    if missing:
        lines.append(f"- The store lacks the paper's datasets: {', '.join(missing)}")
    for dataset in reader.datasets:
        mark = reader.partial(dataset)
        lines.append(f"  - `{dataset}`: transforms {', '.join(reader.transforms(dataset))}"
                     + (f"; **partial: {mark['found']} of {mark['expected']} samples**" if mark else ""))
    return "\n".join(lines)


def build_report(store: Any, out_dir: str | Path, *, study_names: Iterable[str] | None = None,
                 n_boot: int = 1000, seed: int = 0, progress: bool = True,
                 storage_options: Mapping[str, Any] | None = None, pairs: Sequence[str] | None = None,
                 priorities: Mapping[str, float] | None = None, cache: str | Path | None = None,
                 figure_workers: int = 0) -> dict:
    """Run the studies and write results.parquet/.csv, differences.parquet/.csv, ranking.* and scores.*,
    report.md, report.html and figures.

    ``storage_options`` go to fsspec when ``store`` is a URL (the store is only read). ``pairs``: ``"A:B"``
    items to difference (default: the paper's ConvNeXt/ViT pairs found by name; analyze/pairs.py).
    ``priorities``: weights of the ranking's property groups or properties (analyze/ranking.py). ``cache``: a
    folder of per-run summaries and replicates from earlier reports (analyze/report_cache.py); only runs not
    found there are read. ``figure_workers``: processes drawing the figures while the studies go on
    (analyze/figures.py: painter; ``analyze report`` uses one a core). 0 draws them here: worker processes
    import the caller's main script again, which a script without an ``if __name__ == "__main__"`` guard
    does not survive."""
    t0 = time.perf_counter()
    prepare_kernel()  # ready when the first logits arrive
    # The figure workers start (a process that imports the analysis and matplotlib, then forks them) while the store
    # is opened, so that the first figure finds them ready.
    with figures.painter(figure_workers):
        out = Path(out_dir)
        priorities = check_priorities(priorities or {})
        reader = StoreReader(store, storage_options=storage_options)
        _refuse_paths(reader, out, cache)
        disk = ReportCache(cache, reader) if cache is not None else None  # refuses a folder that is not a cache
        out.mkdir(parents=True, exist_ok=True)
        for dataset in reader.datasets:
            mark = reader.partial(dataset)
            if mark:
                reader.notes.append(f"{dataset}: partial dataset, {mark['found']} of its {mark['expected']} samples "
                                    f"(extracted with --allow-partial); every number from it is flagged partial")
        ctx = Context(reader=reader, out_dir=out, boot=Bootstrap(n_boot=n_boot, seed=seed, kept=disk),
                      summaries=disk.summaries() if disk else None, cache=disk)
        names = list(study_names) if study_names else studies.available()
        modules = [studies.get(n) for n in studies.run_order(names)]
        # Runs in the order the studies ask for them (study by study, each dataset in the manifest's order): the
        # logits pass runs in the background, and each study waits only for the runs it reads.
        entries = {d: reader.manifest_entry(d) for d in reader.datasets}
        runs = [k for d in manifest_order(reader.datasets) for k in reader.runs(d)]
        keys = list(dict.fromkeys(k for m in modules for k in runs if m.wants(k, entries[k.dataset])))
        # Per-image datasets resample their images, not their rows: drawing [B, rows] counts for ImageNet-C's 3.75 M
        # rows would take gigabytes for nothing (their image counts are drawn when first asked for).
        ctx.boot.prepare(sorted({(k.dataset, reader.n_samples(k.dataset)) for k in keys
                                 if k.dataset not in PER_IMAGE}))
        ctx.summaries.prefetch(keys, progress=progress)
        with _beside_readers(reader.io_threads):
            _run_studies(ctx, modules, progress, names)
            results, paper = report_check(_table(ctx.rows, RESULT_COLUMNS), reader.models)
            ranked = [m for m in order_models(reader.models) if not is_human(m)]  # observers: compared, not ranked
            for section in (paper, report_ranking(ctx, ranked, priorities)):
                if section is not None:
                    ctx.sections.append(section)
        plan = pairing.plan(pairs, reader.models)
        diffs = _table(ctx.paired_differences(plan.formed), DIFF_COLUMNS)
        plan = plan.settle(diffs, ctx.rows)
        for name, frame in (("results", results), ("differences", diffs)):
            frame.write_parquet(out / f"{name}.parquet")
            frame.write_csv(out / f"{name}.csv")
        markdown = render(reader, ctx, diffs, n_boot, seed, plan)
        (out / "report.md").write_text(markdown)
    write_page(out, markdown)  # report.html: the same text, the figures (all drawn now) inlined, sortable tables
    return {"results": len(results), "differences": len(diffs), "seconds": time.perf_counter() - t0,
            "notes": list(reader.notes), "out": str(out),
            "pairs_not_formed": [f"{a}:{b}: {why}" for a, b, why in plan.not_formed] if plan.requested else [],
            "cache": {"from_cache": len(disk.hits), "read": len(disk.misses)} if disk else None}


def _refuse_paths(reader: StoreReader, out: Path, cache: str | Path | None) -> None:
    """``--out`` and ``--cache`` outside the store (the analysis never writes into it); ``--out`` a folder."""
    local = _local_path(reader.url)
    for flag, path in (("--out", out), ("--cache", None if cache is None else Path(cache))):
        if local is not None and path is not None and (path.resolve() == local or path.resolve().is_relative_to(local)):
            raise ValueError(f"{flag} {path}: must not lie inside the store {reader.url} (the analysis never writes "
                             "into it)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")


@contextmanager
def _beside_readers(io_threads: int) -> Iterator[None]:
    """Settings for the studies while the reading threads work: BLAS on the cores those threads leave (its idle
    threads spin, taking processor time from them; the products here are small), and full garbage collections
    rarer (each walks every object; a report keeps many long-lived ones and makes few reference cycles)."""
    threshold = gc.get_threshold()
    gc.set_threshold(threshold[0], threshold[1], max(threshold[2], 100))
    try:
        with threadpool_limits(max(1, usable_cores() - io_threads), user_api="blas"):
            yield
    finally:
        gc.set_threshold(*threshold)


def _run_studies(ctx: Context, modules: list, progress: bool, report_order: list[str]) -> None:
    """Each study in turn, then every queued run (its notes count even if no study asked for it); the sections
    are then put in ``report_order`` (the studies may run in another: ``studies.run_order``)."""
    first, written = len(ctx.sections), {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(modules), desc="studies", unit="study", position=1)
    try:
        for module in modules:
            name = module.__name__.rsplit(".", 1)[-1]
            if bar is not None:
                bar.set_postfix_str(name)
            start = len(ctx.sections)
            module.run(ctx)
            written[name] = ctx.sections[start:]
            ctx.flush()
            if bar is not None:
                bar.update()
        ctx.summaries.finish()
        ctx.sections[first:] = [section for name in report_order for section in written.get(name, [])]
    finally:
        ctx.summaries.close()  # the logits bar closes first, above the studies bar
        if bar is not None:
            bar.close()


def render(reader: StoreReader, ctx: Context, diffs: pl.DataFrame, n_boot: int, seed: int,
           plan: pairing.PairPlan | None = None) -> str:
    parts = ["# Beyond ImageNet accuracy: report", f"Store: `{reader.url}`"]
    warning = _weights_note(reader)
    if warning:
        parts.append(warning)
    origin = origin_note(reader)
    if origin:
        parts.append(origin)
    parts += ["## What the store holds", _coverage(reader, ctx)]
    ci = (f"Intervals: 95% Poisson-bootstrap percentile intervals over samples ({n_boot} replicates, seed {seed})."
          if n_boot > 0 else "Intervals: none (bootstrap disabled).")
    parts.append(ci)
    for section in ctx.sections:
        parts.append(f"## {section.title}\n\n{section.body}")
        parts += [f"![{Path(f).stem}]({f})" for f in section.figures]
    pair_section = pairing.section(plan or pairing.PairPlan(), diffs)
    if pair_section:
        parts.append(pair_section)
    if reader.notes:
        parts.append("## Notes on the data\n\n" + "\n".join(f"- {n}" for n in reader.notes))
    parts.append("All metrics: `results.csv` / `results.parquet` (model, dataset, transform, metric, value, ci_low, "
                 "ci_high, n, partial, and the paper's value where it publishes one); paired model differences: "
                 "`differences.csv` / `differences.parquet`; the ranking: `ranking.csv`, `scores.csv`.")
    return "\n\n".join(parts) + "\n"
