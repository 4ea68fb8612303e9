"""Arrays read without zarr (schemas/local_arrays.py): zarr's values, zarr's fill value for a chunk or shard never
written, and zarr's own read (with its errors) for every layout or chunk it does not take."""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from analyze.store import AnalysisError, RunKey, StoreReader
from schemas import integrity
from schemas.local_arrays import EMPTY, read_local, read_sharded, read_whole


def _array(tmp_path, values, chunks, *, fill=0, compressors=ZstdCodec(level=3), endian="little", skip_empty=False):
    arr = zarr.create_array(tmp_path / "a.zarr", shape=values.shape, chunks=chunks, dtype=values.dtype,
                            fill_value=fill, compressors=compressors, serializer=BytesCodec(endian=endian),
                            config={"write_empty_chunks": not skip_empty})
    arr[...] = values
    return zarr.open_array(tmp_path / "a.zarr", mode="r")


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint32, np.int64, np.float16, np.float32, np.float64])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_values_are_zarrs(tmp_path, dtype, endian):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((13, 5)) * 100).astype(dtype)  # chunks of 4 x 2: the edge ones padded
    arr = _array(tmp_path, values, (4, 2), endian=endian)
    got = read_local(arr)
    assert got is not None and got.dtype == arr.dtype and got.shape == values.shape
    np.testing.assert_array_equal(got, arr[...])
    np.testing.assert_array_equal(got, values)


def test_uncompressed_chunks(tmp_path):
    values = np.arange(10, dtype=np.uint32)
    got = read_local(_array(tmp_path, values, (3,), compressors=None))
    np.testing.assert_array_equal(got, values)


def test_a_chunk_never_written_is_the_fill_value(tmp_path):
    values = np.arange(12, dtype=np.float32)
    values[4:8] = -1.5
    arr = _array(tmp_path, values, (4,), fill=-1.5, skip_empty=True)
    assert not (tmp_path / "a.zarr" / "c" / "1").exists()  # zarr left it out: only the fill value
    np.testing.assert_array_equal(read_local(arr), arr[...])


def test_a_damaged_chunk_is_left_to_zarr(tmp_path):
    arr = _array(tmp_path, np.arange(12, dtype=np.uint32), (4,))
    chunk = tmp_path / "a.zarr" / "c" / "1"
    chunk.write_bytes(chunk.read_bytes()[:-3])  # a truncated frame
    assert read_local(arr) is None
    with pytest.raises(Exception):
        arr[...]  # what the caller meets: zarr's own error


def test_a_chunk_of_another_size_is_left_to_zarr(tmp_path):
    arr = _array(tmp_path, np.arange(12, dtype=np.uint32), (4,), compressors=None)
    (tmp_path / "a.zarr" / "c" / "2").write_bytes(b"\0" * 8)
    assert read_local(arr) is None


def test_other_layouts_are_left_to_zarr(tmp_path):
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    sharded = zarr.create_array(tmp_path / "s.zarr", shape=values.shape, chunks=(2, 2), shards=(10, 2),
                                dtype=values.dtype)
    sharded[...] = values
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=values.shape, chunks=(5, 2), dtype=values.dtype)
    in_memory[...] = values
    text = zarr.create_array(tmp_path / "t.zarr", shape=(3,), chunks=(3,), dtype=str)
    text[...] = np.array(["a", "bb", "c"])
    for arr in (sharded, in_memory, text):
        assert read_local(arr) is None, arr


def _sharded(tmp_path, values, *, shard=12, chunk=4, fill=None, endian="little", skip_empty=False, name="s.zarr"):
    """A 1-D array as the extractor writes per-sample arrays: one shard a block, zstd chunks inside."""
    strings = values.dtype.kind in "UOT"
    arr = zarr.create_array(tmp_path / name, shape=values.shape, chunks=(chunk,), shards=(shard,),
                            dtype=str if strings else values.dtype,
                            fill_value=fill if fill is not None else "" if strings else 0,
                            compressors=ZstdCodec(level=3), serializer="auto" if strings else BytesCodec(endian=endian),
                            config={"write_empty_chunks": not skip_empty})
    arr[...] = values
    return zarr.open_array(tmp_path / name, mode="r")


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.uint64, np.float16, np.float64])
@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("n", [1, 12, 13, 23, 25])  # shards of 12, chunks of 4: the last shard and chunk padded
def test_sharded_values_are_zarrs(tmp_path, dtype, endian, n):
    rng = np.random.default_rng(2)
    values = (rng.standard_normal(n) * 100).astype(dtype)
    arr = _sharded(tmp_path, values, endian=endian)
    got = read_sharded(arr)
    assert got is not None and got.dtype == arr.dtype and got.shape == values.shape
    np.testing.assert_array_equal(got, arr[...])
    np.testing.assert_array_equal(got, values)


def test_sharded_strings_are_zarrs_values_as_objects(tmp_path):
    values = np.array(["n01440764/ILSVRC2012_val_00000293.JPEG", "", "é/ü/ß", "a" * 300, "x"] * 5)
    arr = _sharded(tmp_path, values, shard=6, chunk=3)
    got = read_sharded(arr)
    assert got is not None and got.dtype == object and all(type(v) is str for v in got)
    assert got.tolist() == arr[...].tolist() == values.tolist()


def test_sharded_unwritten_shards_and_chunks_are_the_fill_value(tmp_path):
    values = np.arange(30, dtype=np.int32)
    values[12:16] = 7  # one whole chunk of the fill value: left out of its shard
    arr = _sharded(tmp_path, values, fill=7, skip_empty=True)
    (tmp_path / "s.zarr" / "c" / "2").unlink()  # rows 24:30: a shard never written
    want = arr[...]
    assert (want[24:] == 7).all() and (want[:24] == values[:24]).all()
    np.testing.assert_array_equal(read_sharded(arr), want)
    words = ["a", "b", "c", "d", "e"] * 5
    text = _sharded(tmp_path, np.array(words), name="t.zarr")
    (tmp_path / "t.zarr" / "c" / "1").unlink()  # rows 12:24
    assert read_sharded(text).tolist() == text[...].tolist() == words[:12] + [""] * 12 + words[24:]


@pytest.mark.parametrize("fill", ["NA", "é"])
def test_sharded_strings_fill_unwritten_rows_with_the_arrays_fill_value(tmp_path, fill):
    words = ["x"] * 4 + [fill] * 4 + ["y"] * 4 + ["z"] * 13  # rows 4:8 hold only the fill value: not written
    arr = _sharded(tmp_path, np.array(words), fill=fill, skip_empty=True)
    (tmp_path / "s.zarr" / "c" / "1").unlink()  # rows 12:24: a shard never written
    got = read_sharded(arr)
    assert got.tolist() == arr[...].tolist() == words[:12] + [fill] * 12 + ["z"]
    assert all(type(v) is str for v in got)


def _rewrite_entry(shard, chunk: int, offset: int, size: int, per_shard: int = 3) -> None:
    """Set one entry of a shard's index and give the index its right crc32c again: damage only the values show."""
    import google_crc32c

    data = bytearray(shard.read_bytes())
    at = len(data) - 16 * per_shard - 4 + 16 * chunk
    data[at:at + 16] = np.array([offset, size], "<u8").tobytes()
    data[-4:] = google_crc32c.value(bytes(data[len(data) - 16 * per_shard - 4:-4])).to_bytes(4, "little")
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("entry", ["offset-empty", "size-empty", "past-the-body"])
def test_a_shard_index_that_checks_but_points_wrong_is_left_to_zarr(tmp_path, entry):
    """An index entry with a right crc32c that is not a whole chunk: zarr raises on it, so it is zarr's to read."""
    arr = _sharded(tmp_path, np.arange(30, dtype=np.int64))
    shard = tmp_path / "s.zarr" / "c" / "1"
    offset, size = {"offset-empty": (EMPTY, 25), "size-empty": (0, EMPTY), "past-the-body": (0, 10**6)}[entry]
    _rewrite_entry(shard, 1, offset, size)
    assert read_sharded(arr) is None
    with pytest.raises(Exception):
        arr[...]


def test_a_flipped_index_entry_is_found_by_the_crc32c(tmp_path):
    arr = _sharded(tmp_path, np.arange(30, dtype=np.int64))
    shard = tmp_path / "s.zarr" / "c" / "0"
    data = bytearray(shard.read_bytes())
    data[-4 - 16 * 3 + 16] ^= 0x01  # chunk 1's offset moved by one byte, still inside the shard
    shard.write_bytes(bytes(data))
    assert read_sharded(arr) is None


@pytest.mark.parametrize("damage", ["index", "frame", "short"])
def test_a_damaged_shard_is_left_to_zarr(tmp_path, damage):
    arr = _sharded(tmp_path, np.arange(30, dtype=np.int64))
    shard = tmp_path / "s.zarr" / "c" / "1"
    data = bytearray(shard.read_bytes())
    if damage == "index":
        data[-10] ^= 0xFF  # the index no longer gives its crc32c
    elif damage == "frame":
        data[6:10] = b"\0\0\0\0"  # inside the first chunk's zstd frame
    else:
        data = data[:20]
    shard.write_bytes(bytes(data))
    assert read_sharded(arr) is None
    with pytest.raises(Exception):
        arr[...]  # what the caller meets: zarr's own error
    with pytest.raises(Exception):
        read_whole(arr)


def test_other_layouts_are_not_read_as_shards_but_read_whole_reads_them(tmp_path):
    values = np.arange(24, dtype=np.float32)
    plain = _array(tmp_path, values, (5,))
    two_d = zarr.create_array(tmp_path / "d.zarr", shape=(12, 2), chunks=(2, 2), shards=(6, 2), dtype=np.float32)
    two_d[...] = values.reshape(12, 2)
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(24,), chunks=(4,), shards=(8,), dtype=np.float32)
    in_memory[...] = values
    for arr in (plain, two_d, in_memory):
        assert read_sharded(arr) is None, arr
        np.testing.assert_array_equal(read_whole(arr), arr[...])


def _run_store(kit, tmp_path):
    """A store of one run of three blocks, as the extractor writes it."""
    rng = np.random.default_rng(1)
    n = 25_000
    store = tmp_path / "s.zarr"
    kit.write(store, "imagenet-val", "center", "m", rng.standard_normal((n, 4)).astype(np.float32),
              sample_id=kit.val_ids(n), label=rng.integers(0, 4, n).astype(np.int32))
    return store


def test_a_torn_done_flag_is_still_found(kit, tmp_path):
    """integrity.done_flags reads local flags this way; an undecodable flag chunk still counts as not done."""
    store = _run_store(kit, tmp_path)
    run = zarr.open_group(store, mode="r")["imagenet-val/center/m"]
    assert read_local(run["block_done"]) is not None
    np.testing.assert_array_equal(integrity.done_flags(run)[0], [True, True, True])
    (store / "imagenet-val/center/m/block_done/c.1").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    flags, torn = integrity.done_flags(zarr.open_group(store, mode="r")["imagenet-val/center/m"])
    assert torn == [1] and flags.tolist() == [True, False, True]


def test_a_damaged_checksum_table_is_refused_by_name(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    key = RunKey("imagenet-val", "center", "m")
    table = StoreReader(store).checksums(key)
    assert table is not None and table.shape[0] == 3
    np.testing.assert_array_equal(table, zarr.open_group(store, mode="r")[f"{key.path}/block_checksum"][...])
    (store / f"{key.path}/block_checksum/c.2.0").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(AnalysisError, match="block_checksum.*unreadable"):
        StoreReader(store).checksums(key)


def test_a_stores_sample_list_and_valid_flags_read_from_shards_equal_zarrs(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    group = zarr.open_group(store, mode="r")
    for name in ("imagenet-val/sample_id", "imagenet-val/label", "imagenet-val/center/m/valid"):
        got = read_sharded(group[name])
        assert got is not None, name
        assert got.tolist() == group[name][...].tolist(), name
    samples = StoreReader(store).samples("imagenet-val")
    assert samples.sample_id.dtype == object and all(type(s) is str for s in samples.sample_id)
    assert samples.sample_id.tolist() == group["imagenet-val/sample_id"][...].tolist()
