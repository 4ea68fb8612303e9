"""``exp(z - m)`` row by row in float64, compiled and vectorised.

numpy's float64 ``exp`` is a scalar libm call on CPUs without AVX-512 (about 9 ns a value on a laptop
core) and was most of the analysis's time. This kernel computes the same float64 values at about 2 ns:

    d = z - m <= 0;  n = round(d / ln 2);  r = d - n ln 2, |r| <= ln 2 / 2
    exp(d) = 2^n * P(r),  P = the Taylor polynomial of exp of degree 13

``ln 2`` is split into a head with 32 significant bits and a tail (Cody & Waite), so ``n * head`` is
exact and ``r`` keeps full precision; P's truncation error is below 5e-18 relative; ``2^n`` is applied by
adding ``n`` to the exponent bits, reinterpreted in registers so that one vectorised loop does it all. Every
value is within 2^-52 relative of libm's. Differences below -708 give 0 (``exp(-708) < 3.3e-308`` adds
nothing to a softmax sum, which is at least 1).

numba compiles the kernels on first use and caches them on disk. This module imports numba; callers
fall back to numpy's exp when it is missing.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LN2_HI = 6.93147180369123816490e-01  # 32 significant bits (fdlibm's split)
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
SHIFTER = 6755399441055744.0  # 1.5 * 2**52: x + SHIFTER - SHIFTER rounds x to an integer
SHIFTER_BITS = int(np.float64(SHIFTER).view(np.int64))
FLOOR = -708.0
C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13 = (1.0 / math.factorial(i) for i in range(14))


@intrinsic
def _bits(typingctx, x):
    """The int64 holding a float64's bits (a register move)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, x):
    """The float64 whose bits an int64 holds."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


# No fastmath beyond fused multiply-adds: reassociation would undo the Cody-Waite split.
@numba.njit(nogil=True, cache=True, fastmath={"contract"})
def _exp_row(x, mi, out):
    for j in range(len(x)):
        d = np.float64(x[j]) - mi
        keep = d >= FLOOR  # False for NaN too
        d = d if keep else 0.0
        t = d * INV_LN2 + SHIFTER  # its low mantissa bits hold n + 2**51
        n = t - SHIFTER
        r = (d - n * LN2_HI) - n * LN2_LO
        p = ((((((((((((C13 * r + C12) * r + C11) * r + C10) * r + C9) * r + C8) * r + C7) * r + C6) * r
                  + C5) * r + C4) * r + C3) * r + C2) * r + C1) * r + C0
        # n added to the exponent field: P(r) * 2^n, exact while the result is a normal number
        out[j] = _from_bits(_bits(p) + ((_bits(t) - SHIFTER_BITS) << 52)) if keep else 0.0


@numba.njit(nogil=True, cache=True)
def exp_shifted(x, m, out):
    """``out[i, j] = exp(x[i, j] - m[i])`` in float64, for ``x`` float32 or float64 and finite ``m``."""
    for i in range(x.shape[0]):
        _exp_row(x[i], m[i], out[i])


# float16 -> float32. The processor's own conversion (x86's F16C, one instruction for 8 or 16 values; LLVM lowers
# ``fpext half`` to it) is exact for every number and gives NaN for NaN, but quiets signalling NaNs' payloads. The
# table of all 65,536 half-precision values (numpy's own conversion: every bit pattern widens as ``astype`` would)
# is the fallback where the instruction is missing or converts wrong. numpy converts a value at a time in a scalar
# loop (about 3 ns); the table is a cache-resident gather (under 1 ns), the instruction about 0.1 ns.
# ImageNet-C's logits are float16.
HALF_TO_SINGLE = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)


@intrinsic
def _half_to_single(typingctx, bits):
    """The float32 value of the float16 whose bits a uint16 holds."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@numba.njit(nogil=True, cache=True)
def _widen_half_native(bits, out):
    rows, cols = bits.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = _half_to_single(bits[i, j])


@numba.njit(nogil=True, cache=True)
def _widen_half_table(bits, table, out):
    rows, cols = bits.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = table[bits[i, j]]


def widen_half(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = x`` for float16 ``x`` [rows, cols] and float32 ``out`` of its shape, by the processor's
    conversion (NaN payloads may differ from numpy's); returns ``out``."""
    _widen_half_native(x.view(np.uint16), out)
    return out


def widen_half_table(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``widen_half`` through the table: bit for bit numpy's ``astype``."""
    _widen_half_table(x.view(np.uint16), HALF_TO_SINGLE, out)
    return out
