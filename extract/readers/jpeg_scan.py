"""Damage in a JPEG's coded data that PIL decodes without a word.

libjpeg only *warns* about damaged entropy-coded data (zeroed or overwritten bytes, a lost restart
marker): "Corrupt JPEG data: N extraneous bytes before marker", "bad Huffman code", "premature end of
data segment". It then decodes on, and the picture is visibly garbled. PIL discards these warnings, so
such an image would be stored as a valid row. ``jpeg_damage`` walks the Huffman-coded blocks of every
scan of a sequential (baseline or extended) Huffman JPEG, as libjpeg's decoder does but without the
inverse DCT, and says what libjpeg would have warned about. Progressive, arithmetic-coded and lossless
JPEGs are not checked (None), nor are files whose scans need tables they do not carry.

numba compiles the walk on first use (cached on disk); it costs a fraction of PIL's decode.
"""
from __future__ import annotations

import functools
import re

import numpy as np

_SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended sequential
_OTHER_SOF = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the marker that ends a scan's coded data
LOOKAHEAD = 9  # bits of the fast Huffman lookup, as in libjpeg (jpeg_walk.LOOKAHEAD)

# Outcome codes of the compiled walk (jpeg_walk's).
OK, BAD_CODE, PAST_END, EXTRANEOUS, BAD_RESTART = 0, 1, 2, 3, 4


def jpeg_damage(data: bytes) -> str | None:
    """What is damaged in the coded data of a sequential Huffman JPEG, or None (clean, or not checked)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    frame: dict | None = None
    tables: dict[tuple[int, int], bytes] = {}
    restart = 0
    pos, scan_no = 2, 0
    n = len(buf)
    while pos + 1 < n:
        if buf[pos] != 0xFF:
            return None  # not where a marker must be: PIL has already judged the file; nothing more to say
        marker = int(buf[pos + 1])
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 3 >= n:
            return None
        length = int(buf[pos + 2]) << 8 | int(buf[pos + 3])
        seg = buf[pos + 4: pos + 2 + length]
        pos += 2 + length
        if marker in _OTHER_SOF:
            return None
        if marker in _SEQUENTIAL_HUFFMAN:
            frame = _frame(seg)
            if frame is None:
                return None
        elif marker == 0xC4:
            if not _tables(seg, tables):
                return None
        elif marker == 0xDD and len(seg) >= 2:
            restart = int(seg[0]) << 8 | int(seg[1])
        elif marker == 0xDA:
            if frame is None:
                return None
            m = _SCAN_END.search(data, pos)
            end = m.start() if m else n
            scan_no += 1
            problem = _check_scan(buf[pos:end], seg, frame, tables, restart)
            if problem:
                return f"damaged JPEG data in scan {scan_no}: {problem}"
            pos = end
    return None


def _frame(seg: np.ndarray) -> dict | None:
    if len(seg) < 6:
        return None
    height, width, nc = int(seg[1]) << 8 | int(seg[2]), int(seg[3]) << 8 | int(seg[4]), int(seg[5])
    if height == 0 or width == 0 or len(seg) < 6 + 3 * nc:  # height 0: given later by a DNL marker
        return None
    comps = {int(seg[6 + 3 * i]): (int(seg[7 + 3 * i]) >> 4, int(seg[7 + 3 * i]) & 15) for i in range(nc)}
    if any(h == 0 or v == 0 for h, v in comps.values()):
        return None
    return {"height": height, "width": width, "comps": comps,
            "hmax": max(h for h, _ in comps.values()), "vmax": max(v for _, v in comps.values())}


def _tables(seg: np.ndarray, tables: dict) -> bool:
    p = 0
    while p + 17 <= len(seg):
        tc, th = int(seg[p]) >> 4, int(seg[p]) & 15
        total = int(seg[p + 1: p + 17].sum())
        if tc > 1 or th > 3 or total > 256 or p + 17 + total > len(seg):
            return False
        tables[(tc, th)] = seg[p + 1: p + 17 + total].tobytes()
        p += 17 + total
    return True


@functools.lru_cache(maxsize=64)  # most files carry the same few tables (the standard ones)
def _compile_table(spec: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maxcode[18], valptr[17], lookahead[2**LOOKAHEAD]) of a DHT table (16 counts, then the symbols),
    as in libjpeg's jdhuff.c; a lookahead entry is length << 8 | symbol."""
    counts, values = spec[:16], spec[16:]
    maxcode = np.full(18, -1, dtype=np.int64)
    valptr = np.zeros(17, dtype=np.int64)
    look = np.zeros(1 << LOOKAHEAD, dtype=np.int64)
    code = k = 0
    for length in range(1, 17):
        cnt = int(counts[length - 1])
        if cnt:
            valptr[length] = k - code
            for _ in range(cnt):
                if length <= LOOKAHEAD:
                    shift = LOOKAHEAD - length
                    look[code << shift:(code + 1) << shift] = length << 8 | int(values[k])
                code += 1
                k += 1
            maxcode[length] = code - 1
        code <<= 1
    maxcode[17] = 1 << 40  # ends the slow search: longer than 16 bits is a bad code
    return maxcode, valptr, look


def _check_scan(coded: np.ndarray, sos: np.ndarray, frame: dict, tables: dict, restart: int) -> str | None:
    ns = int(sos[0]) if len(sos) else 0
    if ns < 1 or len(sos) < 1 + 2 * ns + 3:
        return None
    ss, se = int(sos[1 + 2 * ns]), int(sos[2 + 2 * ns])
    if ss != 0 or se != 63:
        return None
    members = []
    for i in range(ns):
        cid, td_ta = int(sos[1 + 2 * i]), int(sos[2 + 2 * i])
        if cid not in frame["comps"] or (0, td_ta >> 4) not in tables or (1, td_ta & 15) not in tables:
            return None  # a table the file does not carry (motion JPEG): libjpeg's defaults, not checked here
        members.append((cid, td_ta >> 4, td_ta & 15))
    hmax, vmax = frame["hmax"], frame["vmax"]
    if ns == 1:  # a non-interleaved scan: one block per MCU over the component's own size
        h, v = frame["comps"][members[0][0]]
        cols = _cdiv(_cdiv(frame["width"] * h, hmax), 8)
        rows = _cdiv(_cdiv(frame["height"] * v, vmax), 8)
        n_mcus, layout = cols * rows, [(members[0][1], members[0][2])]
    else:
        n_mcus = _cdiv(frame["width"], 8 * hmax) * _cdiv(frame["height"], 8 * vmax)
        layout = []
        for cid, td, ta in members:
            h, v = frame["comps"][cid]
            layout += [(td, ta)] * (h * v)
    ids = sorted({(0, td) for td, _ in layout} | {(1, ta) for _, ta in layout})
    index = {key: i for i, key in enumerate(ids)}
    compiled = [_compile_table(tables[key]) for key in ids]
    maxcode = np.stack([c[0] for c in compiled])
    valptr = np.stack([c[1] for c in compiled])
    look = np.stack([c[2] for c in compiled])
    values = np.zeros((len(ids), 256), dtype=np.int64)
    for key, i in index.items():
        values[i, : len(tables[key]) - 16] = np.frombuffer(tables[key][16:], dtype=np.uint8)
    dc = np.asarray([index[(0, td)] for td, _ in layout], dtype=np.int64)
    ac = np.asarray([index[(1, ta)] for _, ta in layout], dtype=np.int64)
    from .jpeg_walk import walk_scan

    code, mcu, extra = walk_scan(np.ascontiguousarray(coded), dc, ac, maxcode, valptr, look, values,
                                 int(n_mcus), int(restart))
    if code == BAD_CODE:
        return f"bad Huffman code at MCU {mcu} of {n_mcus}"
    if code == PAST_END:
        return f"premature end of the coded data at MCU {mcu} of {n_mcus} (the rest decodes as grey)"
    if code == EXTRANEOUS:
        return (f"{extra} extraneous bytes before the marker after MCU {mcu} of {n_mcus} "
                "(the blocks decode from fewer bytes than were coded)")
    if code == BAD_RESTART:
        return f"restart marker missing or out of order after MCU {mcu} of {n_mcus}"
    return None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["jpeg_damage"]
