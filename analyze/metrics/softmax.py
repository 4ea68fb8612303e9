"""Per-sample summaries of a block of logits, softmax in float64.

For logits ``z`` (restricted to a class subset ``S`` when given): ``p_j = exp(z_j - max z) / sum_k exp(z_k - max z)``.
``confidence = max_j p_j = 1 / sum_k exp(z_k - max z)``; ``p_true = p_label`` (NaN when the label is not in ``S``).
A row holding NaN or +inf, or only -inf, has a NaN sum, which callers read as invalid.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from ..scratch import thread_buffer

# Rows summarised per pass: 256 x 1000 float64 (2 MB) stays in cache from the exp through the sum,
# where whole 10,000-row blocks (80 MB) would stream through memory several times.
PASS_ROWS = 256

_exp_kernel = None
_half_kernel = None
_building = threading.Lock()  # one build of each kernel, whichever thread asks first; the others wait for it


def _compiled(name: str, build) -> object | None:
    """The compiled kernel kept in the module global ``name``, built on first use by ``build()`` (the kernel, or
    False when it computes wrong values); None when it cannot be built here (no numba, no writable cache, a
    compiler error): numpy is used then."""
    kernel = globals()[name]
    if kernel is None:
        with _building:
            kernel = globals()[name]
            if kernel is None:
                try:
                    kernel = build()
                except Exception as e:  # noqa: BLE001 - any failure to build it only costs speed
                    logging.getLogger(__name__).info("%s unavailable (%s: %s); using numpy", name,
                                                     type(e).__name__, e)
                    kernel = False
                globals()[name] = kernel
    return kernel or None


def prepare_kernel() -> threading.Thread:
    """Build the exp kernel on a background thread (started and returned): importing numba and loading the kernel
    from its cache take about a second, which would otherwise come before the first block's summary. Much
    of the loading is LLVM's, which runs without holding the interpreter, beside whatever the caller does."""
    thread = threading.Thread(target=_kernel, name="exp-kernel", daemon=True)
    thread.start()
    return thread


def _build_exp():
    from .exp64 import exp_shifted

    one = np.empty((1, 1))
    exp_shifted(np.zeros((1, 1), np.float32), np.zeros(1), one)  # compiles now
    return exp_shifted if one[0, 0] == 1.0 else False


def _build_widen():
    """The processor's conversion where it widens every bit pattern as numpy does (NaN for NaN, payloads aside),
    else the table; checked on all 65,536 half-precision values."""
    from .exp64 import HALF_TO_SINGLE, widen_half, widen_half_table

    every = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    want = HALF_TO_SINGLE.reshape(every.shape)  # numpy's widening of each bit pattern
    for kernel in (widen_half, widen_half_table):
        try:
            got = kernel(every, np.empty(every.shape, np.float32))
        except Exception as e:  # noqa: BLE001 - no such instruction here: the next one
            logging.getLogger(__name__).info("%s unavailable (%s: %s)", kernel.__name__, type(e).__name__, e)
            continue
        nan = np.isnan(want)
        if np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32)):
            return kernel
    return False


def _kernel():
    """The compiled float64 exp (analyze.metrics.exp64), the same values as numpy's within 2^-52; or None."""
    return _compiled("_exp_kernel", _build_exp)


def _widen_kernel():
    """The compiled float16 widening (analyze.metrics.exp64), numpy's values (NaN for NaN); or None."""
    return _compiled("_half_kernel", _build_widen)


def _exp_rows(logits: np.ndarray, m: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(z - m), sum)`` in float64 for row maxima ``m`` (NaN rows where ``m`` is not finite)."""
    m = m.astype(np.float64)
    finite = np.isfinite(m)
    shift = m if finite.all() else np.where(finite, m, 0.0)
    kernel = _kernel()
    if kernel is not None:
        kernel(logits, shift, out)
    else:
        out[...] = logits
        out -= shift[:, None]
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
    total = out.sum(axis=1)
    if not finite.all():
        out[~finite] = np.nan
        total[~finite] = np.nan
    return out, total


def _widened(logits: np.ndarray, scratch: str | None = None) -> np.ndarray:
    """float32 or float64, the dtypes the kernel is built for (float16 widens exactly). ``scratch``: widen float16
    into this thread's buffer of that name (valid until the next call with it)."""
    logits = np.asarray(logits)
    if logits.dtype in (np.float32, np.float64):
        return logits
    kernel = _widen_kernel() if logits.dtype == np.float16 and logits.ndim == 2 else None
    if kernel is None:
        return logits.astype(np.float32)
    out = thread_buffer(scratch, logits.shape, np.float32) if scratch else np.empty(logits.shape, np.float32)
    return kernel(logits, out)


def stable_exp(logits: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(z - max z), sum)`` in float64, row-wise (NaN rows where the max is not finite).

    The max is exact in the logits' own dtype, and the float64 difference of two float32 values is exact.
    """
    logits = _widened(logits)
    return _exp_rows(logits, logits.max(axis=1), np.empty(logits.shape) if out is None else out)


def softmax(logits: np.ndarray) -> np.ndarray:
    e, s = stable_exp(logits)
    return e / s[:, None]


def _argmax_passes(logits: np.ndarray, subset: np.ndarray | None, arg: np.ndarray):
    """``PASS_ROWS`` rows at a time: fills ``arg[rows]`` with each row's argmax over ``subset`` (first of ties; a
    column of the subset) and yields ``(rows, part, top)``: the rows, their widened logits over the subset (this
    thread's buffer, valid until the next pass) and each row's max (NaN where the row holds one: NaN wins numpy's
    argmax)."""
    n = len(logits)
    for start in range(0, n, PASS_ROWS):
        rows = slice(start, min(n, start + PASS_ROWS))
        part = _widened(logits[rows] if subset is None else logits[rows][:, subset], scratch="widened")
        arg[rows] = part.argmax(axis=1)
        yield rows, part, part[np.arange(len(part)), arg[rows]]


def decide(logits: np.ndarray, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, finite)`` of each row: the argmax over ``subset`` (first of ties; an index in the full label space)
    and whether the row's logits there are finite, without the softmax: the decision and the validity
    ``summarize`` gives (its softmax sum is NaN exactly where the row max is not finite)."""
    logits = np.asarray(logits)
    arg, finite = np.empty(len(logits), np.intp), np.empty(len(logits), bool)
    for rows, _, top in _argmax_passes(logits, subset, arg):
        finite[rows] = np.isfinite(top)
    pred = arg if subset is None else np.asarray(subset)[arg]
    return pred.astype(np.int32), finite


def summarize(logits: np.ndarray, label: np.ndarray, subset: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``pred`` (index in the full label space), ``confidence`` and ``p_true`` of each row."""
    logits = np.asarray(logits)
    label = np.asarray(label)
    n = len(logits)
    if subset is None:
        col = label
        known = (label >= 0) & (label < logits.shape[1])
    else:
        subset = np.asarray(subset)
        col = np.clip(np.searchsorted(subset, label), 0, len(subset) - 1)
        known = (label >= 0) & (subset[col] == label)
    col = np.where(known, col, 0)
    width = logits.shape[1] if subset is None else len(subset)
    total, e_true = np.empty(n), np.empty(n)
    arg = np.empty(n, np.intp)
    # exp is monotonic, so the argmax of the logits is the argmax of the probabilities (first of ties alike); its
    # logit is the row max, the softmax's shift, so one pass gives both.
    for rows, part, top in _argmax_passes(logits, subset, arg):
        e, total[rows] = _exp_rows(part, top, thread_buffer("exp", (len(part), width)))
        e_true[rows] = e[np.arange(len(part)), col[rows]]
    pred = arg if subset is None else subset[arg]
    with np.errstate(invalid="ignore"):
        p_true = np.where(known, e_true / total, np.nan)
    return {"pred": pred.astype(np.int32), "confidence": 1.0 / total, "p_true": p_true}
