"""Linear probes on frozen features (VTAB-1k protocol).

Features are L2-normalised; a multinomial logistic regression (scikit-learn, lbfgs) is fit on the 800 train
images for each regularisation strength ``C`` in a grid, the ``C`` with the best top-1 on the 200 val images is
kept, the probe is refit on train+val and evaluated on test: the result is the per-test-image correctness.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class ProbeResult:
    correct: np.ndarray        # [test] bool
    c: float                   # chosen regularisation strength
    val_accuracy: dict         # C -> val top-1


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _fit(x, y, c):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, cs=DEFAULT_CS) -> ProbeResult:
    """Select C on val, refit on train+val, return test correctness."""
    for name, (x, y) in {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}.items():
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"linear probe {name} split: {len(x)} feature rows, {len(y)} labels (need equal, > 0)")
    train_x, val_x, test_x = map(l2_normalize, (train_x, val_x, test_x))
    if len(np.unique(train_y)) < 2:
        raise ValueError("linear probe: the train split holds a single class")
    val_acc = {float(c): float((_fit(train_x, train_y, c).predict(val_x) == val_y).mean()) for c in cs}
    best = max(val_acc, key=lambda c: (val_acc[c], -c))  # ties -> the stronger regularisation
    probe = _fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]), best)
    return ProbeResult(probe.predict(test_x) == np.asarray(test_y), best, val_acc)
