"""Helpers the studies share: model order, the standard transform, the datasets a study reads."""
from __future__ import annotations

from typing import Callable

import numpy as np

from schemas import logit_kinds
from schemas.paper import PAPER_MODELS

from .. import labels
from ..context import Context, Section
from ..store import manifest_entries

CENTER = "center"
# Datasets whose rows are cells (corruption x severity) of underlying images: the bootstrap resamples the images,
# one weight serving all of an image's cells.
PER_IMAGE = ("imagenet-c",)


def order_models(models: list[str]) -> list[str]:
    """The paper's four first (ConvNeXt beside ViT), then the rest alphabetically."""
    first = [m for m in PAPER_MODELS if m in models]
    return first + sorted(m for m in models if m not in first)


def listed(study: str) -> str:
    """The datasets data_manifest.yaml lists for ``study``, as "`a` or `b`" (for "the store holds none")."""
    return " or ".join(f"`{d}`" for d, e in manifest_entries().items() if study in e["studies"]) or "no dataset"


def for_each_dataset(ctx, study: str, title: str, empty: str, run_one: Callable[[object, str, str], None]) -> None:
    """``run_one(ctx, dataset, tag)`` for each of the store's datasets listed for ``study``; ``tag`` is "" or, when
    there are several, the dataset (for titles and figure names). With none, a section saying ``empty``."""
    datasets = ctx.datasets_for(study)
    if not datasets:
        ctx.sections.append(Section(title, empty))
    for dataset in datasets:
        run_one(ctx, dataset, dataset if len(datasets) > 1 else "")


def tagged(name: str, tag: str, sep: str = "_") -> str:
    """``name`` with the dataset tag of ``for_each_dataset`` appended when there is one."""
    return f"{name}{sep}{tag}" if tag else name


def lacks(ctx, summary, capability: str, what: str) -> bool:
    """True, with a note naming the run and why, when the run's logit kind cannot give ``capability`` (a run
    of decisions has no confidence, probabilities are not logits; schemas.logit_kinds)."""
    if summary.provides(capability):
        return False
    kind = summary.kind
    ctx.reader.notes.append(f"{summary.key.path}: {what} not computed: the run holds "
                            f"{logit_kinds.HOLDS.get(kind, kind)} (logit kind `{kind}`), which give no {capability}")
    return True


def skipped_line(models: list[str], why: str) -> str:
    """A report sentence naming the models a study skipped ("" when none)."""
    return f"\n\nNot computed for {', '.join(order_models(sorted(set(models))))}: {why}." if models else ""


HUMAN_PREFIXES = ("human", "subject-")  # model-vs-human's observer names, kept by ``analyze import``


def is_human(model: str) -> bool:
    """Whether a run's model id names a human observer (compared with the models, never ranked among them)."""
    return model.startswith(HUMAN_PREFIXES)


def codes(values) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for many values of few distinct ones: one pass of hashing and a
    sort of the distinct values, not a sort of them all (ImageNet-C: 3.75 M sample ids of 50,000 images)."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    first: dict = {}
    inverse = np.fromiter((first.setdefault(v, len(first)) for v in values), np.intp, len(values))
    distinct = np.array(list(first))
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(order), np.intp)
    rank[order] = np.arange(len(order))
    return distinct[order], rank[inverse]


def population(ctx: Context, dataset: str) -> tuple[str, int, np.ndarray | None]:
    """What the bootstrap resamples for ``dataset``: its weight key, the population's size and, for ``PER_IMAGE``
    datasets, each row's image index (images in file-name order; derived once per report). Other datasets
    resample their rows (index None)."""
    if dataset not in PER_IMAGE:
        return dataset, ctx.reader.n_samples(dataset), None
    key = ("population", dataset)
    if key not in ctx.shared:
        images, index = codes(labels.base_file_name(s) for s in ctx.reader.samples(dataset).sample_id.tolist())
        ctx.shared[key] = (f"{dataset}:images", len(images), index)
    return ctx.shared[key]
