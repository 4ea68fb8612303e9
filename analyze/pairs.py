"""Which runs the report compares, model A minus model B, with a paired bootstrap (``differences.*``).

By default the paper's comparisons, found by name: ConvNeXt against ViT with the same training, i.e.
``...convnext-<x>`` against ``...vit-<x>``, and the paper's models under the names of its code and published
files (``convnext-base-21k`` against ``deit3-21k`` / ``vit-base-21k``; schemas/paper.py). ``--pairs A:B,C:D``
names any pairs instead. Either way the report says which pairs were formed and which were not, and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import polars as pl

from schemas.paper import PAPER_NAMES, PAPER_PAIRS, paper_id
from schemas.registry import close_names

# The metrics the report's table shows; differences.csv holds every metric.
HEADLINE = ("top1", "ece", "shape_bias", "top1_mean")


@dataclass
class PairPlan:
    formed: list[tuple[str, str]] = field(default_factory=list)
    not_formed: list[tuple[str, str, str]] = field(default_factory=list)   # (A, B, why)
    requested: bool = False                                                  # --pairs given

    def settle(self, diffs: pl.DataFrame, results: list[dict]) -> "PairPlan":
        """Move a formed pair with no metric in common to ``not_formed``, saying where each model has results."""
        kept, dropped = [], []
        for a, b in self.formed:
            if len(diffs) and len(diffs.filter((pl.col("model_a") == a) & (pl.col("model_b") == b))):
                kept.append((a, b))
                continue
            where = {m: sorted({f"{r['dataset']}/{r['transform']}" for r in results if r["model"] == m}) for m in (a, b)}
            dropped.append((a, b, f"no metric in common ({a}: {', '.join(where[a]) or 'no results'}; "
                                  f"{b}: {', '.join(where[b]) or 'no results'})"))
        return PairPlan(kept, self.not_formed + dropped, self.requested)


def parse(text: str) -> list[str]:
    """``A:B,C:D`` as its items (each must hold a colon); the split inside an item waits for the store's models,
    since model ids may hold colons themselves (``timm:convnext_small...``)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if ":" not in item.strip(":"):
            raise ValueError(f"--pairs item {item!r}: expected MODEL_A:MODEL_B")
    return items


def _split(item: str, models: Sequence[str]) -> tuple[str, str]:
    """The split of ``A:B`` at a colon that makes both sides (else one side, else the first colon) run names."""
    cuts = [i for i, ch in enumerate(item) if ch == ":" and 0 < i < len(item) - 1]
    known = set(models)
    for want in (2, 1):
        for i in cuts:
            a, b = item[:i], item[i + 1:]
            if (a in known) + (b in known) >= want:
                return a, b
    i = cuts[0] if cuts else item.index(":")
    return item[:i], item[i + 1:]


def plan(requested: Sequence[str] | None, models: Sequence[str]) -> PairPlan:
    """The pairs to form among ``models`` (the store's), explicit or the paper's defaults."""
    return explicit(requested, models) if requested else default(models)


def explicit(items: Sequence[str], models: Sequence[str]) -> PairPlan:
    out = PairPlan(requested=True)
    for item in items:
        a, b = _split(item, models)
        missing = [m for m in (a, b) if m not in models]
        if a == b:
            out.not_formed.append((a, b, "a run against itself"))
        elif missing:
            why = []
            for m in missing:
                near = close_names(m, models)
                why.append(f"no run named {m!r} in the store" + (f" (did you mean {near[0]!r}?)" if near else ""))
            out.not_formed.append((a, b, "; ".join(why)))
        elif (a, b) not in out.formed:
            out.formed.append((a, b))
    return out


def default(models: Sequence[str]) -> PairPlan:
    """``...convnext-<x>`` against ``...vit-<x>``, and the paper's pairs under any of the paper's names."""
    out = PairPlan()
    for m in models:
        if "convnext" in m:
            partner = m.replace("convnext", "vit", 1)
            if partner in models:
                out.formed.append((m, partner))
            elif paper_id(m) is None:
                out.not_formed.append((m, partner, f"the store holds no {partner!r} run"))
    by_paper: dict[str, list[str]] = {}
    for m in models:
        if paper_id(m) is not None:
            by_paper.setdefault(paper_id(m), []).append(m)
    for a_id, b_id in PAPER_PAIRS:
        a_runs, b_runs = by_paper.get(a_id, []), by_paper.get(b_id, [])
        for a in a_runs:
            for b in b_runs:
                if (a, b) not in out.formed:
                    out.formed.append((a, b))
        if bool(a_runs) != bool(b_runs):
            have, lack = (a_runs, b_id) if a_runs else (b_runs, a_id)
            names = ", ".join((lack,) + PAPER_NAMES.get(lack, ()))
            for m in have:
                pair = (m, lack) if a_runs else (lack, m)
                out.not_formed.append((*pair, f"the store holds no run of the paper's {lack} (looked for {names})"))
    return out


def section(pairs: PairPlan, diffs: pl.DataFrame) -> str:
    """report.md's section: the pairs formed and not formed, and the headline differences."""
    title = "## Paired differences, A − B (paired bootstrap)" if pairs.requested else \
        "## ConvNeXt minus ViT (paired bootstrap)"
    if not pairs.formed and not pairs.not_formed:
        return ""
    lines = [title, ""]
    source = "given with `--pairs`" if pairs.requested else \
        "the paper's ConvNeXt/ViT pairs, found by name; `--pairs A:B,...` names others"
    if pairs.formed:
        lines.append(f"Pairs ({source}): " + ", ".join(f"`{a}` − `{b}`" for a, b in pairs.formed) + ".")
    else:
        lines.append(f"No pair formed ({source}).")
    if pairs.not_formed:
        lines += ["", "Not formed:", ""] + [f"- `{a}` − `{b}`: {why}" for a, b, why in pairs.not_formed]
    top = diffs.filter(pl.col("metric").is_in(list(HEADLINE))) if len(diffs) else diffs
    if len(top):
        lines += ["", "| A − B | dataset | transform | metric | diff | 95% CI |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model_a']} − {r['model_b']} | {r['dataset']} | {r['transform']} | {r['metric']} | "
                  f"{r['diff']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |" for r in top.iter_rows(named=True)]
    return "\n".join(lines)


__all__ = ["HEADLINE", "PairPlan", "default", "explicit", "parse", "plan", "section"]
