"""Command line: ``analyze report STORE --out DIR``, ``analyze import STORE FILES``, ``analyze validate STORE``,
``analyze demo-store PATH``.

Exit codes: 0 ok; 1 ``validate`` found errors, or the system refused a read or write (read-only, disk full,
no permission); 2 the store cannot be analysed as asked, a file cannot be imported, or a bad option. Every error is one line
``analyze COMMAND: error: ...``.
"""
from __future__ import annotations

import argparse
import gc
import sys

from schemas.cli_errors import OneLineParser, failed_path, int_at_least, os_error_message
from schemas.remote import StoreUnreachableError, add_storage_option, network_errors, parse_storage_options, \
    quiet_cancelled_requests

from . import ranking, studies
from .store import AnalysisError


def _report(args) -> int:
    from .figures import default_workers
    from .report import build_report

    result = build_report(args.store, args.out, study_names=args.studies, n_boot=args.n_boot, seed=args.seed,
                          progress=not args.quiet, storage_options=parse_storage_options(args.storage_options),
                          pairs=args.pairs, priorities=args.priorities, cache=args.cache,
                          figure_workers=default_workers())
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for line in result["pairs_not_formed"]:
        print(f"note: pair {line}", file=sys.stderr)
    if result["cache"]:
        print(f"--cache: {result['cache']['from_cache']} runs from the cache, {result['cache']['read']} read", file=sys.stderr)
    print(f"{result['results']} results, {result['differences']} paired differences in {result['seconds']:.1f} s "
          f"-> {result['out']}/report.md, report.html")
    return 0


def _validate(args) -> int:
    from schemas import validate

    problems = validate(args.store, quick=args.quick, storage_options=parse_storage_options(args.storage_options))
    for p in problems:
        print(p)
    errors = [p for p in problems if p.severity == "error"]
    print(f"{len(errors)} errors, {len(problems) - len(errors)} warnings")
    return 1 if errors else 0


def _import(args) -> int:
    from .importers import import_files

    runs, notes = import_files(args.store, args.files, fmt=args.format, dataset=args.dataset, model=args.model,
                               transform=args.transform, labels=args.labels, ids=args.ids, scores=args.scores,
                               overwrite=args.overwrite, storage_options=parse_storage_options(args.storage_options))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for run in runs:
        print(run)
    return 0


def _pairs(value: str) -> list[str]:
    from .pairs import parse

    try:
        return parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _demo_store(args) -> int:
    from .synthetic import build_synthetic_store

    path = build_synthetic_store(args.path, n_val=args.n_val, seed=args.seed)
    print(f"synthetic store (random logits, not a real model) -> {path}")
    return 0


def _studies(value: str) -> list[str]:
    names = [v for v in value.split(",") if v]
    for name in names:
        try:
            studies.get(name)
        except ValueError as e:  # argparse shows ArgumentTypeError's text, keeping the did-you-mean
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def _priorities(value: str) -> dict[str, float]:
    try:
        return ranking.parse_priorities(value)
    except ValueError as e:  # argparse shows ArgumentTypeError's text, keeping the did-you-mean
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="analyze", description="CPU-only analysis of a logits store.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="tables, figures and confidence intervals from a store")
    r.add_argument("store", help="store path or fsspec URL (read-only)")
    r.add_argument("--out", required=True, help="output folder (results.parquet/.csv, report.md, figures/)")
    r.add_argument("--studies", type=_studies, default=None, help=f"comma list; default all: {','.join(studies.available())}")
    r.add_argument("--n-boot", type=int_at_least(0), default=1000, help="bootstrap replicates (0 disables intervals)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--pairs", type=_pairs, default=None, metavar="A:B,C:D",
                   help="runs to compare, A minus B, by paired bootstrap (default: the paper's ConvNeXt/ViT pairs "
                        "found by name)")
    r.add_argument("--priorities", type=_priorities, default=None, metavar="KEY=WEIGHT[,...]",
                   help="reweight the ranking's property groups or properties, e.g. calibration=2,robustness=1 "
                        f"(groups: {','.join(ranking.GROUPS)}; default 1 each)")
    r.add_argument("--cache", default=None, metavar="DIR",
                   help="keep per-run summaries here, keyed by each run's fingerprint and checksums: a later report "
                        "reads only the runs it has not seen")
    add_storage_option(r)
    r.set_defaults(func=_report)
    i = sub.add_parser("import", help="write per-image predictions made elsewhere into a store (through the same "
                                      "checks as schemas.write_run; nothing written on any problem)")
    i.add_argument("store", help="store path or fsspec URL (created if absent)")
    i.add_argument("files", nargs="+", help="prediction files: .csv(.gz), .parquet, .npz, .npy; one run each")
    i.add_argument("--format", default="auto", choices=("auto", "imagenet-x", "model-vs-human", "table"),
                   help="auto: ImageNet-X (file_name, predicted_class), model-vs-human (subj, object_response, "
                        "category, imagename) or a table, told apart by the columns")
    i.add_argument("--dataset", help="the dataset id (required for a table; default: what the format says)")
    i.add_argument("--model", help="the run's model name (one file only; default: from the file name)")
    i.add_argument("--transform", default="center", help="the transform the predictions were made under")
    i.add_argument("--labels", help="a table of sample_id (or file_name) and label, for a new sample list")
    i.add_argument("--ids", help="an NPY's sample ids, one per line in the array's order")
    i.add_argument("--scores", default="logits", choices=("logits", "probabilities"), help="what an NPY holds")
    i.add_argument("--overwrite", action="store_true", help="replace runs of the same name imported from other files")
    add_storage_option(i)
    i.set_defaults(func=_import)
    v = sub.add_parser("validate", help="check a store against the contract and its done blocks against their checksums")
    v.add_argument("store")
    v.add_argument("--quick", action="store_true", help="only check that every chunk of every done block exists")
    add_storage_option(v)
    v.set_defaults(func=_validate)
    d = sub.add_parser("demo-store", help="write a small SYNTHETIC store (random logits) to try the analysis")
    d.add_argument("path")
    d.add_argument("--n-val", type=int_at_least(1), default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo_store)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    prefix = f"analyze {args.command}:"
    quiet_cancelled_requests()
    try:
        with network_errors(getattr(args, "store", None)):
            return args.func(args)
    except StoreUnreachableError as e:  # the object storage's fault: the URL and the fix, exit 1 like the OS's
        print(f"{prefix} error: {e}", file=sys.stderr)
        return 1
    except (AnalysisError, ValueError) as e:
        print(f"{prefix} error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out read-only or full, a store file unreadable: the path, the system's word, the fix
        where = getattr(args, "out", None) or getattr(args, "path", None) or args.store
        print(f"{prefix} error: {os_error_message(e, failed_path(e, where))}", file=sys.stderr)
        return 1


def run() -> None:
    """The console entry point: ``main()``, then exit. The objects the analysis kept are frozen first, so the
    interpreter's last garbage collection does not walk them all (half a second after a 51-model report); the
    process ends either way. Not in ``main``, which tests call in their own process."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
