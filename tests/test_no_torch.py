"""The analysis never loads the GPU stack: not on import, not while building a report."""
from __future__ import annotations

import json
import os
import subprocess
import sys

FORBIDDEN = ("torch", "timm", "open_clip", "torchvision")

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path

FORBIDDEN = %r

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)

import analyze, analyze.report, analyze.cli, analyze.store, analyze.summaries, analyze.bootstrap, analyze.labels
import analyze.synthetic, analyze.metrics.linear_probe, schemas, schemas.manifest
from analyze import studies
for name in studies.available():
    studies.get(name)
after_import = loaded()

from analyze.report import build_report
from analyze.synthetic import build_synthetic_store
tmp = Path(tempfile.mkdtemp())
store = build_synthetic_store(tmp / "s.zarr", sizes={"imagenet-val": 40, "cue-conflict": 32, "pug-imagenet": 20},
                              transforms=("center", "scale-2"), models={"convnext-sup": 0.8})
info = build_report(store, tmp / "out", n_boot=10, progress=False)
print(json.dumps({"after_import": after_import, "after_report": loaded(), "results": info["results"]}))
""" % (FORBIDDEN,)


def test_analysis_loads_no_torch_timm_open_clip_torchvision(kit):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(kit.ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=kit.ROOT, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["after_import"] == [], out
    assert out["after_report"] == [], out
    assert out["results"] > 0
