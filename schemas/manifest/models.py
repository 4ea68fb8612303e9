"""The typed data_manifest.yaml: one pydantic model per layout kind, dataset entries, suites, the manifest.

Key lists, required fields, allowed values and per-kind rules are the class bodies; rules across fields
(label space sizes, suite references, VTAB groups) are validators. A rule that names a field other than
the one validated raises ``rule(field, message)``, which load.py turns into ``<file>: <dotted path>: ...``.
pydantic, numpy-free; nothing from extract/ or analyze/, no torch.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..label_spaces import CLASS_SUBSETS, LABEL_SPACES, LOGIT_SPACES
from ..registry import unknown_name

# The study modules of analyze/studies (the name of the module, of the manifest entry's `studies` item
# and of `analyze report --studies`).
ClassOrder = Literal["synsets", "numeric", "sorted", "names"]
CLASS_ORDERS: tuple[str, ...] = get_args(ClassOrder)
StudyId = Literal["robustness", "imagenet_x", "shape_bias", "calibration", "pug", "invariance", "transfer",
                  "agreement"]
# Stores written before the names were unified hold these spellings in their `manifest` attrs.
FORMER_STUDY_NAMES = {"mistakes": "imagenet_x", "shape-bias": "shape_bias", "synthetic": "pug"}

LabelSpaceId = Literal[tuple(LABEL_SPACES)]  # type: ignore[valid-type]
LogitSpaceId = Literal[LOGIT_SPACES]  # type: ignore[valid-type]
ClassSubsetId = Literal[CLASS_SUBSETS]  # type: ignore[valid-type]

_SCALAR_DTYPES = ("str", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64")
_LIST_DTYPE = re.compile(r"^(u?int(?:8|16|32|64))\[(max|\d*)\]$")
_TRANSFORM = re.compile(r"^(center|scale-\d+(\.\d+)?|shift-\d+|res-\d+)$")
_DATASET_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def rule(field: str, message: str) -> PydanticCustomError:
    """A broken rule about ``field`` (dotted, relative to the model validated): load.py appends it to the path."""
    return PydanticCustomError("manifest_rule", "{field}: {message}", {"field": field, "message": message})


def parse_column_dtype(dtype: str) -> tuple[str, int | None]:
    """``"int16"`` -> ``("int16", None)``; ``"int32[max]"`` -> ``("int32", 0)``; ``"int32[10]"`` -> ``("int32", 10)``.

    The second item is None for a scalar column, 0 for a list padded to the longest list found,
    K for a list padded to exactly K slots. Lists are padded with -1.
    """
    if dtype in _SCALAR_DTYPES:
        return dtype, None
    m = _LIST_DTYPE.match(str(dtype))
    if not m:
        raise ValueError(f"unknown column dtype {dtype!r}; expected one of {', '.join(_SCALAR_DTYPES)} "
                         "or <int dtype>[max] / <int dtype>[K] for padded label lists")
    width = m.group(2)
    return m.group(1), (0 if width in ("max", "") else int(width))


def is_transform_id(name: str) -> bool:
    """center, scale-<s>, shift-<px>, res-<px>."""
    return bool(_TRANSFORM.match(str(name)))


def _must(test, message: str):
    """An after-validator: the value if ``test(value)``, else ValueError(message)."""
    def check(value):
        if not test(value):
            raise ValueError(message)
        return value
    return AfterValidator(check)


def _one_of_shapes(test, message: str):
    """A before-validator for a union of shapes: one message instead of one error per union member."""
    def check(value):
        if not test(value):
            raise ValueError(f"{message}, got {type(value).__name__} {value!r}")
        return value
    return BeforeValidator(check)


def _strs(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _not_renamed(study: Any) -> Any:
    if study in FORMER_STUDY_NAMES:
        raise ValueError(f"study {study!r} is now called {FORMER_STUDY_NAMES[study]!r}")
    return study


def _column_dtype(dtype: str) -> str:
    parse_column_dtype(dtype)
    return dtype


ColumnName = Annotated[str, _must(lambda c: c not in ("sample_id", "label") and not c.startswith("_"),
                                   "reserved column name")]
ColumnDtype = Annotated[str, AfterValidator(_column_dtype)]
TransformId = Annotated[str, _must(is_transform_id, "not a transform id (center, scale-<s>, shift-<px>, res-<px>)")]
TransformList = Annotated[list[TransformId], Field(min_length=1),
                          _must(lambda ts: len(set(ts)) == len(ts), "transforms listed twice")]
Study = Annotated[StudyId, BeforeValidator(_not_renamed)]
DatasetId = Annotated[str, _must(lambda d: bool(_DATASET_ID.match(d)),
                                  "dataset ids are lower-case letters, digits and '-'")]


class _Model(BaseModel):
    """Frozen, strict (no silent coercion: ``"1000"`` is not an int), unknown keys refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        unknown = [k for k in data if k not in cls.model_fields] if isinstance(data, dict) else []
        if unknown:
            raise rule(str(unknown[0]), str(unknown_name("field", unknown[0], cls.model_fields)))
        return data


# ---------------------------------------------------------------- layouts
class _Layout(_Model):
    kind: str
    path: str = Field(min_length=1)                    # relative to --data-root (an absolute path is used as is)
    note: str | None = None                            # the layout's assumptions, in words
    extensions: list[str] | None = None                # image file extensions read (default: the reader's)
    alternatives: list[Layout] | None = None           # further layouts tried in order when this one is missing

    @model_validator(mode="after")
    def _flat_alternatives(self) -> _Layout:
        if any(a.alternatives is not None for a in self.alternatives or ()):
            raise rule("alternatives", "alternatives cannot be nested")
        return self

    @model_serializer(mode="wrap")
    def _manifest_order(self, handler) -> dict:
        """The kind's own keys before note/extensions/alternatives, as the manifest writes them."""
        out = handler(self)
        if not isinstance(out, dict):
            return out
        tail = ("note", "extensions", "alternatives")
        return {**{k: v for k, v in out.items() if k not in tail}, **{k: out[k] for k in tail if k in out}}


class ClassFoldersLayout(_Layout):
    """<path>/<class>/<image>."""

    kind: Literal["class-folders"]
    class_order: ClassOrder
    sample_id: Literal["relative", "basename"] = "relative"


class FlatFolderLayout(_Layout):
    """<path>/<image> plus a labels file (ImageNet val); class folders accepted with the fallback."""

    kind: Literal["flat-folder"]
    labels_file: Annotated[str | list[str], _one_of_shapes(lambda v: isinstance(v, str) or (_strs(v) and bool(v)),
                                                   "must be a file name or a list of candidate file names")]
    labels_format: Literal["auto", "loc-csv", "txt"] = "auto"
    class_folders_fallback: bool = False


class FileListLayout(_Layout):
    """CSV / Parquet / whitespace txt lists: a path column or embedded bytes."""

    kind: Literal["file-list"]
    files: Annotated[str | list[str] | dict[str, str], _one_of_shapes(
        lambda v: isinstance(v, str) or _strs(v) or (isinstance(v, dict) and _strs(list(v.values()))),
        "must be a glob, a list of globs, or a mapping split -> glob")]
    format: Literal["auto", "csv", "parquet", "txt"] = "auto"
    path_column: str | None = None                     # image paths (default: column 'path', or a txt's first field)
    image_column: str | None = None                    # embedded image bytes
    image_root: str | None = None
    label_column: str = "label"
    label_list: bool = False                           # the label column holds lists -> column label_set
    label_set_column: str = "label_set"
    extra_columns: dict[str, str] = {}                 # output column -> source column
    delimiter: str | None = None

    @model_validator(mode="after")
    def _one_image_source(self) -> FileListLayout:
        if self.path_column is not None and self.image_column is not None:
            raise rule("image_column", "give one of path_column (image paths; the default: column 'path', or the "
                                       "first field of a whitespace txt list) or image_column (embedded bytes), "
                                       "not both")
        return self


class WebdatasetLayout(_Layout):
    """Uncompressed tar shards: <key>.jpg|jpeg|png|webp + <key>.cls|<key>.json."""

    kind: Literal["webdataset"]
    shards: str = "**/*.tar"
    split_from: Literal["path", "json", "none"] = "path"
    split_field: str = "split"
    splits: list[str] | None = None
    label_from: Literal["cls", "json"] = "cls"
    label_field: str = "label"
    classnames_file: str = "classnames.txt"


class ImagenetCLayout(_Layout):
    """<path>/<corruption>/<severity>/<synset>/<image>."""

    kind: Literal["imagenet-c"]
    corruptions: list[str] | None = None               # corruption folders read (default: the 15 of the benchmark)
    severities: list[int] = [1, 2, 3, 4, 5]


class CueConflictLayout(_Layout):
    """<path>/<shape>/<shape><i>-<texture><j>.png."""

    kind: Literal["cue-conflict"]
    categories_file: str = "cue_conflict_16.json"      # in schemas/labels


class PugImagenetLayout(_Layout):
    """<path>/<Factor>/<Class>/<image> (+ optional factor CSV)."""

    kind: Literal["pug-imagenet"]
    factors: list[str] | None = None
    metadata_file: str | None = None
    metadata_columns: dict[str, str] = {}              # output column -> CSV column


LAYOUTS = (ClassFoldersLayout, FlatFolderLayout, FileListLayout, WebdatasetLayout, ImagenetCLayout,
           CueConflictLayout, PugImagenetLayout)
LAYOUT_KINDS = tuple(get_args(m.model_fields["kind"].annotation)[0] for m in LAYOUTS)
Layout = Annotated[Union[LAYOUTS], Field(discriminator="kind")]  # noqa: UP007 - a tuple of classes
for _m in LAYOUTS:
    _m.model_rebuild()


# ---------------------------------------------------------------- datasets and suites
class DatasetEntry(_Model):
    """One dataset: where it lives, how it is laid out, what its labels mean, which columns it carries."""

    title: str
    source: str                                        # where to obtain it (URL / paper) and its license
    layout: Layout
    label_space: LabelSpaceId                          # what `label` indexes
    num_labels: int = Field(ge=1)                      # size of that label space (own: the task's classes)
    logit_space: LogitSpaceId                          # what the model logits index
    class_subset: ClassSubsetId | None                 # applied at analysis time
    label_kind: Literal["single", "multi"]             # multi: label lists in column label_set, padded with -1
    columns: dict[ColumnName, ColumnDtype]             # per-sample columns: name -> dtype
    expected_samples: int = Field(ge=0)                # samples of the complete dataset
    studies: list[Study]                               # analysis studies that read it
    group: Literal["natural", "specialized", "structured"] | None   # VTAB group
    logits_dtype: Literal["float32", "float16"] = "float32"         # stored logits (float16 halves the store)

    @model_validator(mode="after")
    def _label_rules(self) -> DatasetEntry:
        size = LABEL_SPACES[self.label_space]
        if size is not None and self.num_labels != size:
            raise rule("num_labels", f"label space {self.label_space} has {size} labels, got {self.num_labels}")
        if self.label_kind == "multi":
            if "label_set" not in self.columns:
                raise rule("columns", "label_kind multi needs a column label_set: <int dtype>[max]")
            if parse_column_dtype(self.columns["label_set"])[1] is None:
                raise rule("columns.label_set", "must be a list dtype such as int32[max]")
        return self


# A suite's `overrides` for one dataset: any DatasetEntry fields, each typed as there.
EntryOverride = create_model("EntryOverride", __base__=_Model,
                             **{name: (f.rebuild_annotation(), None) for name, f in DatasetEntry.model_fields.items()})


class Suite(_Model):
    """Which datasets x transforms x models a run covers."""

    description: str = ""
    models: list[str] = Field(min_length=1)            # model ids
    datasets: Annotated[Literal["all"] | list[str], _one_of_shapes(
        lambda v: v == "all" or (_strs(v) and bool(v)), "must be 'all' or a non-empty list of dataset ids")]
    transforms: TransformList = ["center"]
    dataset_transforms: dict[str, TransformList] = {}  # dataset -> its transforms instead of `transforms`
    overrides: dict[str, EntryOverride] = {}           # dataset -> fields replaced in this suite
    data_root: Literal["demo"] | None = None           # demo: the bundled demo data


class Manifest(_Model):
    """A validated data_manifest.yaml (``path``: the file it came from)."""

    datasets: dict[DatasetId, DatasetEntry] = Field(min_length=1)
    suites: dict[str, Suite] = {}
    _path: Any = PrivateAttr(default=None)

    @property
    def path(self):
        return self._path

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        for did, entry in self.datasets.items():
            if did.startswith("vtab-") and entry.group is None:
                raise rule(f"datasets.{did}.group", "a VTAB task needs its group (natural, specialized or structured)")
        for sid, suite in self.suites.items():
            listed = self.suite_datasets(sid)
            for d in listed:
                if d not in self.datasets:
                    raise rule(f"suites.{sid}.datasets", str(unknown_name("dataset", d, self.datasets)))
            for name, per in (("dataset_transforms", suite.dataset_transforms), ("overrides", suite.overrides)):
                for d in per:
                    if d not in listed:
                        raise rule(f"suites.{sid}.{name}.{d}", "dataset is not in this suite's datasets")
        return self

    # -- datasets
    def dataset(self, id: str, suite: str | None = None) -> dict:
        """The resolved entry of dataset ``id``: a JSON-able dict with ``"id"`` first, as the manifest writes it.

        With ``suite``, the suite's ``overrides`` for that dataset replace fields (e.g. the demo
        suite's smaller ``expected_samples``).
        """
        if id not in self.datasets:
            raise unknown_name("dataset", id, self.datasets, where=str(self.path))
        entry = self.datasets[id].model_dump(mode="json", exclude_unset=True)
        if suite is not None:
            override = self.suite_model(suite).overrides.get(id)
            if override is not None:
                entry.update(override.model_dump(mode="json", exclude_unset=True))
        return {"id": id, **entry}

    def dataset_ids(self) -> list[str]:
        return list(self.datasets)

    # -- suites
    def suite_model(self, id: str) -> Suite:
        if id not in self.suites:
            raise unknown_name("suite", id, self.suites, where=str(self.path))
        return self.suites[id]

    def suite_datasets(self, id: str) -> list[str]:
        datasets = self.suite_model(id).datasets
        return list(self.datasets) if datasets == "all" else list(datasets)

    def suite(self, id: str) -> dict:
        """The resolved suite ``id``: ``datasets`` as a list, ``transforms`` per dataset under
        ``dataset_transforms`` (filled for every dataset), ``overrides``, ``models``, ``"id"``."""
        s = self.suite_model(id).model_dump(mode="json")
        s["datasets"] = self.suite_datasets(id)
        s["dataset_transforms"] = {d: list(s["dataset_transforms"].get(d, s["transforms"])) for d in s["datasets"]}
        overrides = self.suites[id].overrides
        s["overrides"] = {d: o.model_dump(mode="json", exclude_unset=True) for d, o in overrides.items()}
        return {"id": id, **s}

    def suite_ids(self) -> list[str]:
        return list(self.suites)

    def suite_plan(self, id: str) -> list[tuple[str, list[str]]]:
        """``[(dataset, [transform, ...]), ...]`` in the suite's dataset order."""
        s = self.suite(id)
        return [(d, s["dataset_transforms"][d]) for d in s["datasets"]]
