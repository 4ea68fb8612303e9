"""The store contract both stages obey: layout, ids, fingerprints and validation.

Never imports torch: the analysis stage depends on it.
"""
from .door import StoreWarning
from .fingerprint import diff as fingerprint_diff
from .fingerprint import fingerprint, fingerprint_inputs
from .layout import SCHEMA, SCHEMA_VERSION, Blocks
from .store import (
    FingerprintMismatch,
    RunWriter,
    StoreError,
    StoreMissing,
    ensure_dataset,
    jsonable,
    metadata_errors,
    open_read_only,
    open_root,
    open_run,
    refresh_metadata_copy,
    repair_sample_list,
    sample_digest,
    write_run,
)
from .validate import Violation, validate

__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "Blocks", "FingerprintMismatch", "RunWriter", "StoreError", "StoreMissing", "StoreWarning", "Violation",
    "ensure_dataset", "fingerprint", "fingerprint_diff", "fingerprint_inputs", "jsonable", "metadata_errors", "open_read_only", "open_root", "open_run",
    "refresh_metadata_copy",
    "repair_sample_list", "sample_digest", "validate", "write_run",
]
