"""Where a store's runs come from, for the report: imported per-image predictions (``analyze import``, the run's
``imported`` attribute) as against logits extracted here from images (real or random weights)."""
from __future__ import annotations

from schemas import logit_kinds

from .store import StoreReader


def origin_note(reader: StoreReader) -> str | None:
    """A paragraph naming the imported runs by source and what they hold (None when no run was imported)."""
    groups: dict[tuple[str, str], dict] = {}
    extracted = set()
    for key in reader.runs():
        attrs = reader.run_attrs(key)
        imported = attrs.get("imported")
        if not isinstance(imported, dict):
            extracted.add(key.model)
            continue
        kind = logit_kinds.kind_name(attrs.get("logit_kind"))
        group = groups.setdefault((str(imported.get("source", "")), kind), {"models": set(), "files": set(),
                                                                            "datasets": set()})
        group["models"].add(key.model)
        group["files"].add(str(imported.get("file", "")))
        group["datasets"].add(key.dataset)
    if not groups:
        return None
    lines = ["**Where the runs come from.** Imported per-image predictions (`analyze import`; published results of "
             "real models or observers, not extracted here):"]
    for (source, kind), g in sorted(groups.items()):
        files = sorted(g["files"])
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        lines.append(f"- {', '.join(f'`{m}`' for m in sorted(g['models']))} on {', '.join(sorted(g['datasets']))}: "
                     f"{source or 'imported'}; {logit_kinds.HOLDS.get(kind, kind)} (logit kind `{kind}`); from {shown}")
    if extracted:
        lines.append(f"- Extracted from images by `extract run`: {', '.join(f'`{m}`' for m in sorted(extracted))}")
    return "\n".join(lines)


__all__ = ["origin_note"]
