"""extract: run models over datasets into a logits store, plan a run, and inspect stores.

    extract run --store out/store.zarr --suite demo                       # the offline demo
    extract run --store S --suite paper --data-root /data [--shard 0/8]   # the paper, on GPUs
    extract run --store S --models vit-sup --datasets imagenet-a --data-root /data
    extract plan   --store S --suite paper --data-root /data            # units, images, bytes, done
    extract status S                                                     # blocks done, invalid samples
    extract verify S [--quick]                                           # the contract and every done block's
                                                                         # chunks and checksums; exit 1 on errors
    extract run --store S ... --repair                                   # re-extract missing or damaged blocks
    extract ls models | datasets [--data-root DIR] | transforms | suites

Exit codes: 0 ok; 1 a run stopped at a sample (a bad image under --strict, a file still unreadable after
retries, an unexpected error), by the system (read-only, disk full, no permission) or ``verify`` found
errors; 2 a usage error (unknown name with a did-you-mean, missing data, a partial dataset without
--allow-partial, a refused run); 130 Ctrl-C, 143 SIGTERM (done blocks are kept: rerun to resume). Every
error is one line ``extract COMMAND: error: ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Iterator, Sequence

from schemas import StoreError
from schemas.cli_errors import OneLineParser, failed_path, int_at_least, os_error_message
from schemas.remote import StoreUnreachableError, add_storage_option, network_errors, parse_storage_options, \
    quiet_cancelled_requests

from extract.errors import ExtractError
from extract.options import parse_device
from extract.runner import BadImageError, SampleError

log = logging.getLogger("extract")


def _names(values: Sequence[str] | None) -> list[str]:
    """``--models a b,c`` -> ``[a, b, c]``."""
    out: list[str] = []
    for v in values or ():
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


def _add_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run (a suite, or explicit lists; explicit lists narrow a suite)")
    g.add_argument("--suite", help="a suite of data_manifest.yaml: paper, robustness, invariance, vtab, demo")
    g.add_argument("--models", nargs="+", metavar="MODEL",
                   help="registry ids (extract ls models), timm:<name> or open_clip:<arch>/<tag>")
    g.add_argument("--datasets", nargs="+", metavar="DATASET", help="dataset ids (extract ls datasets)")
    g.add_argument("--transforms", nargs="+", metavar="T",
                   help="center, scale-<s>, shift-<px>, res-<px> (default: the suite's, else center)")
    p.add_argument("--data-root", help="folder holding the datasets (each entry's layout.path is relative to it); "
                                       "the demo suite defaults to the bundled demo data")
    p.add_argument("--manifest", help="data_manifest.yaml to use (default: $BEYOND_MANIFEST, else the repo's)")
    p.add_argument("--device", type=_device, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=("bf16", "fp32"),
                   help="backbone precision (default: bf16 on GPU, fp32 on CPU); heads always fp32")
    p.add_argument("--weights", nargs="+", action="extend", metavar="MODEL=FILE", default=[],
                   help="local checkpoint for a model (.safetensors or a state dict), instead of the hub")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="hub weights (default) or --no-pretrained for a random init; demo models are always "
                        "random init")
    p.add_argument("--shard", help="i/n: this process does blocks b with b %% n == i (default: torchrun's "
                                   "RANK/WORLD_SIZE, else all)")
    p.add_argument("--decode", choices=("pil", "gpu"), default="pil",
                   help="pil (default): Pillow decodes and resizes in the workers, the reference pipeline that "
                        "equals timm's and open_clip's; gpu: JPEGs decoded (nvJPEG on CUDA) and resized on the "
                        "run's device in Pillow's arithmetic, other images by Pillow (docs/benchmarks.md)")


def _device(text: str) -> str:
    try:
        return parse_device(text)
    except ExtractError as e:  # argparse shows ArgumentTypeError's text
        raise argparse.ArgumentTypeError(str(e).removeprefix("--device ")) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="extract", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="extract logits and features into a store")
    r.add_argument("--store", required=True, help="the Zarr store (a path or an fsspec URL)")
    add_storage_option(r)
    _add_selection(r)
    r.add_argument("--batch-size", type=int_at_least(1), help="images per batch (default: 256 on GPU, 32 on CPU)")
    r.add_argument("--workers", type=int_at_least(0), help="DataLoader processes that read, decode and resize "
                                                          "(default: CPUs - 1 up to 16 on GPU; 0 on CPU)")
    r.add_argument("--strict", action="store_true", help="stop at the first bad image instead of storing valid=false")
    r.add_argument("--overwrite", action="store_true", help="replace runs computed from other inputs")
    r.add_argument("--allow-partial", action="store_true",
                   help="extract a dataset holding fewer samples than its manifest's expected_samples (refused "
                        "otherwise); the store marks it partial and status and the report flag its numbers")
    r.add_argument("--repair", action="store_true",
                   help="first check the selected runs' done blocks (chunks present, checksums match, as extract "
                        "verify does) and re-extract exactly those missing or damaged; a damaged sample list is "
                        "rewritten from the dataset")
    r.add_argument("--retry-invalid", action="store_true",
                   help="redo the rows stored invalid (e.g. after replacing their files): the done blocks that "
                        "hold them are extracted again, every other block is left as it is")
    r.add_argument("--compile", action="store_true", help="torch.compile the models")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--json", metavar="FILE", help="also write the run's result (per unit, invalid samples) as JSON")

    p = sub.add_parser("plan", help="what a run would do: units, images, store size, what is done, how long")
    p.add_argument("--store", required=True)
    add_storage_option(p)
    _add_selection(p)
    p.add_argument("--throughput", type=_positive, metavar="IMG_PER_S",
                   help="images per second through all the run's models, for the time estimate (default: "
                        "measured from the store's done blocks, else a stated H200 figure)")

    s = sub.add_parser("status", help="per run: blocks done / total, invalid samples")
    s.add_argument("store")
    s.add_argument("--all", action="store_true", help="list every invalid sample (default: the first 10 per run)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_storage_option(s)

    v = sub.add_parser("verify", help="check a store against the contract, and every done block against the "
                                      "checksums recorded when it was written (exit 1 on errors)")
    v.add_argument("store")
    v.add_argument("--quick", action="store_true",
                   help="only check that every chunk of every done block exists (no data read)")
    add_storage_option(v)

    ls = sub.add_parser("ls", help="list models, datasets, transforms or suites")
    ls.add_argument("what", choices=("models", "datasets", "transforms", "suites"))
    ls.add_argument("--data-root", help="ls datasets: check which are present / missing / of the wrong size")
    ls.add_argument("--suite", help="ls datasets: only this suite's datasets")
    ls.add_argument("--manifest", help="data_manifest.yaml to use")
    return ap


# ---------------------------------------------------------------- commands
def _options(args):
    from extract.options import RunOptions, parse_shard, parse_weights

    return RunOptions(
        store=args.store, suite=args.suite, models=_names(args.models), datasets=_names(args.datasets),
        transforms=_names(args.transforms), data_root=args.data_root, manifest=args.manifest,
        device=args.device, precision=args.precision, weights=parse_weights(args.weights),
        pretrained=args.pretrained, shard=parse_shard(args.shard),
        batch_size=getattr(args, "batch_size", None), workers=getattr(args, "workers", None),
        strict=getattr(args, "strict", False), overwrite=getattr(args, "overwrite", False),
        repair=getattr(args, "repair", False), retry_invalid=getattr(args, "retry_invalid", False),
        compile=getattr(args, "compile", False), allow_partial=getattr(args, "allow_partial", False),
        decode=getattr(args, "decode", "pil"),
        progress=False if getattr(args, "no_progress", False) else None,
        storage_options=parse_storage_options(args.storage_options),
    )


def cmd_run(args) -> int:
    from extract import runner

    opts = _options(args)
    redirect = contextlib.nullcontext()
    if opts.progress is not False and sys.stderr.isatty():
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm(loggers=[log])
    with redirect, _sigterm_as_interrupt(args):
        result = runner.run(opts)
    print(result.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result_to_json(result), f, indent=1)
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt(args) -> Iterator[None]:
    """SIGTERM (what batch schedulers send) stops a run as Ctrl-C does: the blocks in flight are finished and
    flagged, the rest is left for a rerun. ``args.stopped_by`` records it for the exit code and message."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def stop(signum, frame):
        if args.stopped_by is None:  # once: a second SIGTERM must not cut the finishing writes short
            args.stopped_by = "SIGTERM"
            raise KeyboardInterrupt

    args.stopped_by = None
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised; what a signalled DataLoader worker's death looks like
        if args.stopped_by is not None:
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def result_to_json(result) -> dict:
    return {
        "store": result.store, "device": result.device, "precision": result.precision,
        "batch_size": result.batch_size, "workers": result.workers, "decode": result.decode,
        "shard": list(result.shard) if result.shard else None,
        "images": result.images, "seconds": result.seconds, "images_per_s": result.images_per_s,
        "invalid": [{"dataset": d, "transform": t, "sample_id": s, "reason": r} for d, t, s, r in result.invalid],
        "warnings": [{"dataset": d, "transform": t, "sample_id": s, "warning": w} for d, t, s, w in result.warned],
        "units": [{"dataset": u.dataset, "transform": u.transform, "models": u.models,
                   "blocks_total": u.blocks_total, "blocks_mine": u.blocks_mine, "blocks_written": u.blocks_written,
                   "blocks_skipped": u.blocks_skipped, "images": u.images, "seconds": u.seconds,
                   "decoded_on_device": u.decoded_on_device,
                   "retried": u.retried, "still_invalid": u.still_invalid}
                  for u in result.units],
    }


def cmd_plan(args) -> int:
    from extract.plan import format_plan, plan

    print(format_plan(plan(_options(args)), throughput=args.throughput))
    return 0


def cmd_status(args) -> int:
    from extract.status import store_status

    runs = store_status(args.store, storage_options=parse_storage_options(args.storage_options))
    if args.json:
        print(json.dumps([{"run": r.path, "blocks_done": r.blocks_done, "blocks_total": r.blocks_total,
                           "n_samples": r.n_samples, "complete": r.complete, "invalid": r.invalid,
                           "partial": r.partial,
                           "damaged": r.damaged,
                           "invalid_reasons": dict(zip(r.invalid, r.reasons)),
                           "weights_id": r.attrs.get("weights_id"), "precision": r.attrs.get("precision")}
                          for r in runs], indent=1))
        return 0
    if not runs:
        print(f"{args.store}: no runs")
        return 0
    width = max(len(r.path) for r in runs)
    for r in runs:
        state = "damaged" if r.damaged else "complete" if r.complete else "incomplete"
        weights = r.attrs.get("weights_id", "?")
        partial = (f"  PARTIAL dataset: {r.partial['found']} of {r.partial['expected']} samples"
                   if r.partial else "")
        print(f"{r.path:<{width}}  blocks {r.blocks_done}/{r.blocks_total}  {state:<10}  "
              f"{r.n_samples} samples  invalid {len(r.invalid)}  weights {weights}{partial}")
        shown = r.invalid if args.all else r.invalid[:10]
        for sid, reason in zip(shown, r.reasons):
            print(f"    invalid: {sid}: {reason}")
        if len(r.invalid) > len(shown):
            print(f"    ... and {len(r.invalid) - len(shown)} more (--all lists them)")
        for line in r.damaged:
            print(f"    damaged: {line}")
    done = sum(r.complete for r in runs)
    partial = sum(bool(r.partial) for r in runs)
    damaged = sum(bool(r.damaged) for r in runs)
    print(f"{done} of {len(runs)} runs complete; {sum(len(r.invalid) for r in runs)} invalid rows"
          + (f"; {partial} runs on partial datasets (extracted with --allow-partial: their numbers are not "
             f"the whole dataset's)" if partial else "")
          + (f"; {damaged} runs with missing chunks: extract verify {args.store} names them, extract run --repair "
             f"re-extracts them" if damaged else ""))
    return 0


def cmd_verify(args) -> int:
    import schemas

    problems = schemas.validate(args.store, quick=args.quick,
                                storage_options=parse_storage_options(args.storage_options))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p)
    print(f"{args.store}: {len(errors)} errors, {len(problems) - len(errors)} warnings"
          + ("" if errors else " - valid") + (" (--quick: chunk presence only, checksums not read)" if args.quick else ""))
    return 1 if errors else 0


def cmd_ls(args) -> int:
    from extract.inventory import get_manifest, lookup

    if args.what == "models":
        from extract.spec.models import list_models

        specs = list_models()
        w = max(len(s.id) for s in specs)
        for s in specs:
            pre = s.preprocess
            print(f"{s.id:<{w}}  {s.kind:<10} {s.family}:{s.hub_name:<40} "
                  f"Resize({pre.resize}, {pre.interpolation}) -> CenterCrop({pre.crop})  {s.description}")
        print("also: timm:<name>[.<tag>] and open_clip:<arch>/<tag>")
        return 0
    if args.what == "transforms":
        from extract.spec.transforms import list_transforms

        print("\n".join(list_transforms()))
        print("also any value of: center, scale-<s>, shift-<px>, res-<px>")
        return 0
    m = get_manifest(args.manifest)
    if args.what == "suites":
        for sid in m.suite_ids():
            s = m.suite(sid)
            plan = m.suite_plan(sid)
            units = sum(len(ts) for _, ts in plan)
            print(f"{sid:<11} {len(s['models'])} models x {len(plan)} datasets ({units} dataset x transform units)"
                  f"{' [bundled data]' if s.get('data_root') == 'demo' else ''}: {s.get('description', '')}")
            print(f"{'':<11} models: {', '.join(s['models'])}")
        return 0
    # datasets
    ids = None
    if args.suite:
        ids = list(lookup(m.suite, args.suite)["datasets"])
    if args.data_root:
        from extract.datasets import check_datasets, format_statuses

        root = os.path.expanduser(args.data_root)
        if not os.path.isdir(root):
            raise ExtractError(f"--data-root {root}: no such directory")
        print(format_statuses(check_datasets(root, m, ids, suite=args.suite)))
        return 0
    for did in ids or m.dataset_ids():
        e = m.dataset(did, suite=args.suite)
        print(f"{did:<22} {e['expected_samples']:>8} samples  {e['layout']['kind']:<13} {e['layout']['path']:<28} "
              f"{e['title']}")
    print("(--data-root DIR says which are present, missing or of the wrong size)")
    return 0


COMMANDS = {"run": cmd_run, "plan": cmd_plan, "status": cmd_status, "verify": cmd_verify, "ls": cmd_ls}


class _NetworkLeftovers(logging.Filter):
    """Drops asyncio's report of a request task whose network error nobody awaited: when the object storage goes
    away, aiohttp's pending writes end so (with a traceback) while the run itself stops with the fault in one
    line (schemas/remote.py). Every other asyncio message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        network = isinstance(error, OSError) or type(error).__module__.split(".")[0] == "aiohttp"
        return not (network and "exception was never retrieved" in record.getMessage())


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    asyncio_log = logging.getLogger("asyncio")
    if not verbose and not any(isinstance(f, _NetworkLeftovers) for f in asyncio_log.filters):
        asyncio_log.addFilter(_NetworkLeftovers())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    prefix = f"extract {args.command}:"
    quiet_cancelled_requests()
    try:
        with network_errors(getattr(args, "store", None)):
            return COMMANDS[args.command](args)
    except StoreUnreachableError as e:  # the object storage's fault: the URL and the fix
        after = "; done blocks are kept: rerun to resume" if args.command == "run" else ""
        print(f"{prefix} error: {e}{after}", file=sys.stderr)
        return 1
    except (BadImageError, SampleError) as e:
        print(f"{prefix} error: {e}", file=sys.stderr)
        return 1
    except (ExtractError, StoreError) as e:
        print(f"{prefix} error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `extract ls models | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:  # read-only, disk full, no permission: the system's word, the path and the fix
        store = getattr(args, "store", None) or getattr(args, "data_root", None)
        after = "done blocks are kept: rerun to resume" if args.command == "run" else ""
        print(f"{prefix} error: {os_error_message(e, failed_path(e, store), after=after)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        by = getattr(args, "stopped_by", None)
        print(f"{prefix} {'stopped by ' + by if by else 'interrupted'}; done blocks are kept, rerun to resume",
              file=sys.stderr)
        return 143 if by == "SIGTERM" else 130


if __name__ == "__main__":
    raise SystemExit(main())
