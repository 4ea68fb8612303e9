"""The compiled part of ``jpeg_scan``: walk the Huffman-coded blocks of one scan (numba, cached on disk).

Imported only when a JPEG is checked, so that importing the readers does not import numba.
"""
from __future__ import annotations

import numba
import numpy as np

# Outcome codes (the same as jpeg_scan's).
OK, BAD_CODE, PAST_END, EXTRANEOUS, BAD_RESTART = 0, 1, 2, 3, 4
LOOKAHEAD = 9
# Unused bytes tolerated at the end of a scan: libjpeg does not see the up to 8 bytes its bit buffer
# has read ahead there (it counts them only at a restart marker), so it warns from 8 on, as this does.
END_SLACK = 8


@numba.njit(nogil=True, cache=True)
def _is_marker(coded, pos):
    n = coded.shape[0]
    return coded[pos] == 0xFF and (pos + 1 >= n or coded[pos + 1] != 0)


@numba.njit(nogil=True, cache=True)
def _left_before_marker(coded, pos):
    """Coded bytes from ``pos`` up to the next marker (fill bytes 0xFF not counted)."""
    n = coded.shape[0]
    count = 0
    while pos < n and not _is_marker(coded, pos):
        pos += 2 if coded[pos] == 0xFF else 1
        count += 1
    return count, pos


@numba.njit(nogil=True, cache=True)
def walk_scan(coded, dc, ac, maxcode, valptr, look, values, n_mcus, restart):
    """(outcome, mcu, extra): OK, or where the walk found damage (extra: extraneous bytes)."""
    n = coded.shape[0]
    pos = 0
    bits = np.int64(0)   # the low ``count`` bits are buffered, oldest first (higher bits: already used)
    count = 0
    fake = 0             # zero bits buffered past a marker or the end: damage only once consumed
    next_rst = 0
    blocks = dc.shape[0]
    for mcu in range(n_mcus):
        if restart > 0 and mcu > 0 and mcu % restart == 0:
            extra, pos = _left_before_marker(coded, pos)
            extra += (count - fake) // 8
            if extra:
                return EXTRANEOUS, mcu, extra
            while pos + 1 < n and coded[pos] == 0xFF and coded[pos + 1] == 0xFF:
                pos += 1
            if pos + 1 >= n or coded[pos + 1] != 0xD0 + next_rst:
                return BAD_RESTART, mcu, 0
            pos += 2
            next_rst = (next_rst + 1) & 7
            bits = np.int64(0)
            count = 0
            fake = 0
        for b in range(blocks):
            t = dc[b]
            k = 0  # 0: the DC symbol is next; then the index of the next AC coefficient
            while k < 64:
                if count < 32:  # top up to more than 48 bits: a symbol and its extra bits take at most 32
                    bits &= (np.int64(1) << count) - 1
                    while count <= 48:
                        byte = np.int64(0)
                        if pos < n:
                            byte = np.int64(coded[pos])
                            if byte != 0xFF:
                                pos += 1
                            elif pos + 1 < n and coded[pos + 1] == 0:
                                pos += 2  # a stuffed 0xFF
                            else:
                                byte = np.int64(0)  # a marker: libjpeg feeds zeros from here on
                                fake += 8
                        else:
                            fake += 8
                        bits = (bits << 8) | byte
                        count += 8
                entry = look[t, (bits >> (count - LOOKAHEAD)) & ((1 << LOOKAHEAD) - 1)]
                if entry:
                    length = entry >> 8
                    sym = entry & 255
                else:
                    length = LOOKAHEAD + 1
                    code = (bits >> (count - length)) & ((np.int64(1) << length) - 1)
                    while code > maxcode[t, length]:
                        length += 1
                        if length > 16:
                            return BAD_CODE, mcu, 0
                        code = (bits >> (count - length)) & ((np.int64(1) << length) - 1)
                    sym = values[t, code + valptr[t, length]]
                if k == 0:
                    if sym > 16:
                        return BAD_CODE, mcu, 0
                    count -= length + sym
                    k = 1
                    t = ac[b]
                else:
                    count -= length + (sym & 15)
                    if sym & 15 == 0 and sym >> 4 != 15:
                        k = 64  # end of block
                    else:
                        k += (sym >> 4) + 1
                if count < fake:
                    return PAST_END, mcu, 0
    extra, pos = _left_before_marker(coded, pos)
    extra += (count - fake) // 8
    if extra >= END_SLACK:
        return EXTRANEOUS, n_mcus, extra
    return OK, n_mcus, 0
