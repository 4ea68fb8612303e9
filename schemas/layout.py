"""Names, dimensions, dtypes and chunking of the store: the contract as constants.

Store tree (Zarr v3; every array carries ``dimension_names``)::

    <store>/                          attrs: schema, schema_version, created_with
      <dataset>/                      sample_id, label, <columns>; attrs: manifest entry, label space, digest
        <transform>/                  attrs: transform spec
          <model>/                    logits, features, valid, invalid_reason, block_done, block_seconds,
                                      block_checksum; attrs: run attrs
      _heads/<model>                  zero-shot head [class, embed] (optional)

A block is done once ``block_done[b]`` is set; before setting it the writer records in ``block_checksum[b]``
the crc32c of what it wrote to each of logits, features and valid (``schemas/integrity.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "beyond-imagenet-store"
SCHEMA_VERSION = 1

CHUNK_ROWS = 1000
SHARD_ROWS = 10000
# Below this many samples a store is small enough that sharding only adds overhead.
SHARD_MIN_SAMPLES = 20000
ZSTD_LEVEL = 3
# Chunk keys "c.<row>.<column>": every chunk of an array is a file of the array's folder. With zarr's default "/"
# each row chunk of a 2-D array is a folder of its own, and opening a store (listing each run's chunks to find
# missing ones) then visits about 30 folders a run instead of 8: the most of its time when they are not cached.
CHUNK_KEY_ENCODING = {"name": "default", "configuration": {"separator": "."}}

HEADS_GROUP = "_heads"

# Dataset-level arrays.
SAMPLE_ID = "sample_id"
LABEL = "label"
# Run-level arrays.
LOGITS = "logits"
FEATURES = "features"
VALID = "valid"
INVALID_REASON = "invalid_reason"  # str per sample: why the row is invalid, "" when valid (optional: newer stores)
BLOCK_DONE = "block_done"
BLOCK_SECONDS = "block_seconds"
# [block, array] uint32: the crc32c of each row array's block as written (schemas/integrity.py), recorded
# before the block's done flag. Its attrs name the columns ("arrays") and the "algorithm". Runs written
# before checksums lack it: their blocks are checked for chunk presence only.
BLOCK_CHECKSUM = "block_checksum"

SAMPLE_DIM = "sample"
CLASS_DIM = "class"
FEATURE_DIM = "feature"
BLOCK_DIM = "block"
ARRAY_DIM = "array"

LOGIT_DTYPES = ("float32", "float16")
FEATURE_DTYPE = "float16"

# Attributes every group must carry.
ROOT_ATTRS = ("schema", "schema_version", "created_with")
DATASET_ATTRS = ("manifest", "label_space", "n_samples", "sample_digest")
TRANSFORM_ATTRS = ("transform",)
RUN_ATTRS = ("model", "preprocess", "precision", "logit_kind", "fingerprint", "fingerprint_inputs")


def is_sharded(n_samples: int) -> bool:
    return n_samples >= SHARD_MIN_SAMPLES


def rows_per_block(n_samples: int) -> int:
    """A block, the unit of work and of resumption, is one shard (or one chunk when unsharded)."""
    return SHARD_ROWS if is_sharded(n_samples) else CHUNK_ROWS


@dataclass(frozen=True)
class Blocks:
    """The block partition of ``n_samples`` rows."""

    n_samples: int

    @property
    def rows(self) -> int:
        return rows_per_block(self.n_samples)

    def __len__(self) -> int:
        return -(-self.n_samples // self.rows)

    def slice(self, block: int) -> slice:
        if not 0 <= block < len(self):
            raise IndexError(f"block {block} out of range: the store has {len(self)} blocks")
        start = block * self.rows
        return slice(start, min(start + self.rows, self.n_samples))

    def __iter__(self):
        return (self.slice(b) for b in range(len(self)))


def row_chunking(n_samples: int, width: int | None = None) -> dict:
    """Zarr ``chunks``/``shards`` arguments for an array of ``n_samples`` rows (and ``width`` columns)."""
    tail = () if width is None else (width,)
    chunks = (min(CHUNK_ROWS, max(n_samples, 1)),) + tail
    shards = (SHARD_ROWS,) + tail if is_sharded(n_samples) else None
    return {"chunks": chunks, "shards": shards}
