"""The report cache's array files: what is written is read back (dtype, shape, values, writable), and a damaged
or foreign file is refused with its name."""
from __future__ import annotations

import numpy as np
import pytest

from analyze.array_file import read_arrays, write_arrays

ARRAYS = {
    "pred": np.arange(7, dtype=np.int32),
    "confidence": np.linspace(0, 1, 7),
    "valid": np.array([True, False, True, True, False, True, True]),
    "probs": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
    "kind": np.array("classifier"),  # 0-d string
    "notes": np.zeros(0, dtype="<U1"),
    "names": np.array([b"\x00ab", b"cd\x00"], dtype="S3"),
    "big-endian": np.arange(3, dtype=">f8"),
    "empty-matrix": np.zeros((0, 5)),
    "interval:top1": np.array([0.25, 0.75]),
}


def write(path, arrays):
    with open(path, "wb") as f:
        write_arrays(f, arrays)


def test_arrays_read_back_as_written(tmp_path):
    write(tmp_path / "a.arrays", ARRAYS)
    got = read_arrays(tmp_path / "a.arrays")
    assert list(got) == list(ARRAYS)
    for name, want in ARRAYS.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    assert got["names"].tobytes() == ARRAYS["names"].tobytes()  # trailing and leading zero bytes kept
    assert str(got["kind"]) == "classifier"
    got["pred"][0] = 5  # the arrays are the caller's to change
    assert got["pred"][0] == 5
    assert read_arrays(tmp_path / "a.arrays")["pred"][0] == ARRAYS["pred"][0]  # ... and the file is not
    for name, a in got.items():  # each array starts on a multiple of 64 bytes in memory
        assert a.flags.aligned and (a.nbytes == 0 or a.ctypes.data % 64 == 0), name


def test_every_damaged_byte_is_detected(tmp_path):
    path = tmp_path / "a.arrays"
    write(path, {"x": np.arange(100, dtype=np.float64), "y": np.array(["a", "bc"])})
    data = path.read_bytes()
    for at in range(len(data)):
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
        with pytest.raises(ValueError, match=str(path)):
            read_arrays(path)
    for cut in (0, 5, 12, 40, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=str(path)):
            read_arrays(path)


def test_files_not_written_here_and_objects_are_refused(tmp_path):
    np.savez(tmp_path / "old.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="not an array file"):
        read_arrays(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="'o'.*Python objects"):
        write(tmp_path / "o.arrays", {"o": np.array([{}, None], dtype=object)})
