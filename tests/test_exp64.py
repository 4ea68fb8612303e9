"""The compiled float64 exp against numpy's (libm) exp, and the softmax with and without it."""
from __future__ import annotations

import numpy as np
import pytest

from analyze.metrics import softmax as sm
from analyze.metrics.exp64 import FLOOR, exp_shifted

ULP = 2.0**-52


def _kernel_exp(d: np.ndarray) -> np.ndarray:
    """exp of a column of differences, through the kernel (one row per value, max 0)."""
    x = d.reshape(-1, 1)
    out = np.empty(x.shape)
    exp_shifted(x, np.zeros(len(x)), out)
    return out[:, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_within_one_ulp_of_libm_over_the_whole_range(dtype):
    rng = np.random.default_rng(0)
    d = np.concatenate([np.linspace(FLOOR, 0.0, 400_001), -rng.exponential(5.0, 200_000),
                        -rng.random(200_000) * 1e-6]).astype(dtype)
    d = d[d >= FLOOR]
    ref = np.exp(d.astype(np.float64))
    got = _kernel_exp(d)
    assert np.abs(got / ref - 1).max() <= ULP


def test_exact_points_and_underflow():
    d = np.array([0.0, -np.log(2.0), FLOOR, -708.5, -1000.0, -np.inf, np.nan])
    got = _kernel_exp(d)
    assert got[0] == 1.0
    assert got[1] == pytest.approx(0.5, rel=ULP)
    assert got[2] == pytest.approx(np.exp(FLOOR), rel=ULP) and got[2] > 0
    assert (got[3:] == 0.0).all()  # below the floor, -inf and NaN: 0 (callers flag NaN rows from the max)


def test_row_shift_is_per_row():
    x = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 9.0]], np.float32)
    m = x.max(axis=1).astype(np.float64)
    out = np.empty(x.shape)
    exp_shifted(x, m, out)
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64) - m[:, None]), rtol=ULP)


@pytest.fixture
def numpy_exp(monkeypatch):
    """The softmax as it runs without numba."""
    monkeypatch.setattr(sm, "_exp_kernel", False)


def _mixed_logits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((600, 100)) * rng.uniform(0.1, 40, (600, 1))).astype(np.float32)
    logits[5, 3] = np.nan
    logits[6, 9] = np.inf
    logits[7, :] = -np.inf
    logits[8, 50:] = -np.inf
    return logits, rng.integers(0, 100, 600)


def test_summaries_equal_with_and_without_the_kernel(monkeypatch):
    logits, label = _mixed_logits()
    fast = sm.summarize(logits, label)
    monkeypatch.setattr(sm, "_exp_kernel", False)
    slow = sm.summarize(logits, label)
    np.testing.assert_array_equal(fast["pred"], slow["pred"])
    for name in ("confidence", "p_true"):
        np.testing.assert_array_equal(np.isnan(fast[name]), np.isnan(slow[name]))
        np.testing.assert_allclose(fast[name], slow[name], rtol=4 * ULP)
    assert np.isnan(fast["confidence"][[5, 6, 7]]).all() and np.isfinite(fast["confidence"][8])


def test_numpy_fallback_matches_definition(numpy_exp, kit):
    logits, label = _mixed_logits()
    out = sm.summarize(logits[:20], label[:20])
    for i in (0, 1, 8):
        row = logits[i][np.isfinite(logits[i])]
        p = kit.ref_softmax(row)
        assert out["confidence"][i] == pytest.approx(max(p), rel=1e-12)
    assert np.isnan(out["confidence"][[5, 6, 7]]).all()


def test_kernel_that_cannot_be_built_falls_back_to_numpy(monkeypatch, kit):
    import sys

    monkeypatch.setattr(sm, "_exp_kernel", None)
    monkeypatch.setitem(sys.modules, "analyze.metrics.exp64", None)  # import fails as without numba
    logits = np.array([[0.0, 1.0, 2.0]], np.float32)
    out = sm.summarize(logits, np.array([2]))
    assert sm._kernel() is None
    assert out["confidence"][0] == pytest.approx(max(kit.ref_softmax(logits[0])), rel=1e-12)


EVERY_HALF = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(256, 256)  # NaNs, infinities, subnormals


def test_float16_table_widening_equals_numpy_for_every_bit_pattern():
    from analyze.metrics.exp64 import widen_half_table

    got = widen_half_table(EVERY_HALF, np.empty(EVERY_HALF.shape, np.float32))
    np.testing.assert_array_equal(got.view(np.uint32), EVERY_HALF.astype(np.float32).view(np.uint32))
    strided = EVERY_HALF[::3, 1::2]  # a block's columns of a class subset are not contiguous
    np.testing.assert_array_equal(widen_half_table(strided, np.empty(strided.shape, np.float32)),
                                  strided.astype(np.float32))


def test_float16_widening_in_use_gives_numpy_numbers_and_nan_for_nan():
    kernel = sm._widen_kernel()
    assert kernel is not None
    want = EVERY_HALF.astype(np.float32)
    got = kernel(EVERY_HALF, np.empty(EVERY_HALF.shape, np.float32))
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 and subnormals too
    strided = EVERY_HALF[::3, 1::2]
    np.testing.assert_array_equal(kernel(strided, np.empty(strided.shape, np.float32)), strided.astype(np.float32))


def test_a_processor_conversion_that_widens_wrong_is_not_used(monkeypatch):
    from analyze.metrics import exp64

    def flushes_subnormals(x, out):
        out[...] = x.astype(np.float32)
        out[np.abs(out) < 2.0**-14] = 0.0
        return out

    monkeypatch.setattr(exp64, "widen_half", flushes_subnormals)
    monkeypatch.setattr(sm, "_half_kernel", None)
    assert sm._widen_kernel() is exp64.widen_half_table


def test_float16_summaries_equal_the_widened_float32_ones():
    logits, label = _mixed_logits()
    half = logits.astype(np.float16)
    fast, plain = sm.summarize(half, label), sm.summarize(half.astype(np.float32), label)
    for name in ("pred", "confidence", "p_true"):
        np.testing.assert_array_equal(fast[name], plain[name])


def test_the_kernel_prepared_in_the_background_is_built_once_for_every_thread(monkeypatch):
    import threading
    import time

    builds = []

    def slow_build():
        builds.append(threading.current_thread().name)
        time.sleep(0.2)  # the reading threads ask while it is being built
        return exp_shifted

    monkeypatch.setattr(sm, "_exp_kernel", None)
    monkeypatch.setattr(sm, "_build_exp", slow_build)
    background = sm.prepare_kernel()
    got = []
    readers = [threading.Thread(target=lambda: got.append(sm._kernel())) for _ in range(3)]
    time.sleep(0.05)
    for reader in readers:
        reader.start()
    for thread in (background, *readers):
        thread.join(5)
    assert builds == ["exp-kernel"] and got == [exp_shifted] * 3
