"""``python -m schemas.manifest [PATH]``: validate a manifest and print a summary (exit 1 on a problem)."""
from __future__ import annotations

import sys

from .load import ManifestError, load_manifest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        m = load_manifest(argv[0] if argv else None)
    except (ManifestError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{m.path}: {len(m.datasets)} datasets, {len(m.suites)} suites - valid")
    for sid in m.suite_ids():
        plan = m.suite_plan(sid)
        print(f"  suite {sid}: {len(plan)} datasets, {sum(len(t) for _, t in plan)} dataset x transform runs "
              f"x {len(m.suite(sid)['models'])} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
