"""Every metric function against an independent computation written here from the definitions.

The expectations come from plain loops (conftest's ``ref_*``) or hand-planted values, never from the
function under test. The weighted (bootstrap) form is checked against the metric on the sample list with
each sample repeated ``w_i`` times.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from analyze.bootstrap import Bootstrap
from analyze.metrics import weighted_product, wmean
from analyze.metrics.accuracy import accuracy, correct_multi, correct_single, subset_argmax
from analyze.metrics.calibration import N_BINS, bin_index, ece, reliability
from analyze.metrics.grouped import group_means
from analyze.metrics.imagenet_x import error_ratios
from analyze.metrics.linear_probe import linear_probe
from analyze.metrics.shape_bias import category_probabilities, shape_bias, shape_bias_per_category
from analyze.metrics.softmax import decide, softmax, summarize

RNG = np.random.default_rng(12345)


# ------------------------------------------------------------------------------------------ top-1 / softmax
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_summarize_matches_loop_reference(kit, dtype):
    rng = np.random.default_rng(1)
    n, k = 40, 12
    logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
    label = rng.integers(0, k, n)
    label[:3] = -1          # no label
    label[3] = k + 5        # a label that is not a logit class
    out = summarize(logits, label)
    for i in range(n):
        p = kit.ref_softmax(logits[i])
        assert out["pred"][i] == kit.ref_argmax(logits[i])
        assert out["confidence"][i] == pytest.approx(max(p), rel=1e-12)
        if 0 <= label[i] < k:
            assert out["p_true"][i] == pytest.approx(p[label[i]], rel=1e-12)
        else:
            assert math.isnan(out["p_true"][i])
    assert out["confidence"].dtype == np.float64
    np.testing.assert_allclose(softmax(logits)[np.arange(n), out["pred"]], out["confidence"], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("with_subset", [False, True])
def test_decide_gives_summarize_decisions_without_the_softmax(kit, dtype, with_subset):
    """The argmax (first of ties) and whether the row counts: no NaN, no +inf, some value above -inf (over the
    subset when given). Rows span several of the passes the rows are taken in."""
    rng = np.random.default_rng(4)
    n, k = 700, 30
    logits = np.round(rng.standard_normal((n, k)) * 2).astype(dtype)  # rounded: many ties
    logits[10, 4] = np.nan
    logits[11, 7] = np.inf
    logits[12, :] = -np.inf
    logits[13, ::2] = -np.inf
    logits[300, 29] = np.nan
    logits[301, :5] = np.inf
    subset = np.array([1, 4, 7, 8, 20, 29]) if with_subset else None
    columns = list(range(k)) if subset is None else subset.tolist()
    pred, finite = decide(logits, subset)
    for i in range(n):
        values = [float(logits[i, j]) for j in columns]
        expected = not any(math.isnan(v) or v == math.inf for v in values) and max(values) > -math.inf
        assert finite[i] == expected, i
        if expected:
            assert pred[i] == kit.ref_argmax(logits[i], columns), i
    assert pred.dtype == np.int32 and finite.sum() < n - 3
    out = summarize(logits, np.zeros(n, int) if subset is None else np.full(n, subset[0]), subset)
    np.testing.assert_array_equal(finite, np.isfinite(out["confidence"]))
    np.testing.assert_array_equal(pred[finite], out["pred"][finite])


def test_top1_accuracy_plain(kit):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((200, 7)).astype(np.float32)
    label = rng.integers(0, 7, 200)
    expected = sum(kit.ref_argmax(logits[i]) == label[i] for i in range(200)) / 200
    assert float(accuracy(correct_single(subset_argmax(logits), label))) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("subset_name", ["imagenet-a-200", "imagenet-r-200"])
def test_subset_argmax_ignores_classes_outside_the_subset(kit, subset_name):
    """The global argmax lies outside the 200 classes; the argmax over the subset is the label."""
    subset = kit.read_subset(subset_name)
    outside = sorted(set(range(1000)) - set(subset))
    rng = np.random.default_rng(3)
    n = 30
    label = rng.choice(subset, n)
    logits = rng.random((n, 1000)).astype(np.float32)
    logits[np.arange(n), rng.choice(outside, n)] = 20.0     # global winner, not an ImageNet-A/R class
    logits[np.arange(n), label] = 10.0                      # best of the subset
    wrong = np.arange(n) % 5 == 0                           # a few rows where another subset class wins
    other = np.array([subset[(subset.index(l) + 1) % 200] for l in label])
    logits[np.flatnonzero(wrong), other[wrong]] = 15.0
    expected_pred = [kit.ref_argmax(logits[i], subset) for i in range(n)]
    assert all(expected_pred[i] == (other[i] if wrong[i] else label[i]) for i in range(n))

    idx = np.asarray(subset)
    np.testing.assert_array_equal(subset_argmax(logits, idx), expected_pred)
    assert float(accuracy(correct_single(subset_argmax(logits, idx), label))) == pytest.approx(1 - wrong.mean())
    assert float(accuracy(correct_single(subset_argmax(logits), label))) == 0.0  # unmasked: always wrong

    out = summarize(logits, label, idx)
    np.testing.assert_array_equal(out["pred"], expected_pred)
    for i in range(n):
        p = kit.ref_softmax([logits[i][j] for j in subset])       # softmax over the 200 classes only
        assert out["confidence"][i] == pytest.approx(max(p), rel=1e-12)
        assert out["p_true"][i] == pytest.approx(p[subset.index(label[i])], rel=1e-12)
    # A label that is not one of the subset's classes has no probability in the subset softmax.
    out = summarize(logits[:2], np.array([outside[0], -1]), idx)
    assert np.isnan(out["p_true"]).all()


def test_real_multilabel_empty_sets_excluded(kit):
    sets = kit.read_real()[:60]
    assert any(len(s) == 0 for s in sets) and any(len(s) > 1 for s in sets)
    width = max(map(len, sets))
    padded = np.full((60, width), -1)
    for i, s in enumerate(sets):
        padded[i, : len(s)] = s
    pred = []
    for i, s in enumerate(sets):
        if s and i % 3 != 0:
            pred.append(s[-1])                        # the LAST label of the set: any member counts
        else:
            pred.append(next(c for c in range(1000) if c not in s))
    pred = np.array(pred)
    correct, counted = correct_multi(pred, padded)
    counted_ref = [len(s) > 0 for s in sets]
    hits_ref = [pred[i] in s for i, s in enumerate(sets)]
    np.testing.assert_array_equal(counted, counted_ref)
    expected = sum(h for h, c in zip(hits_ref, counted_ref) if c) / sum(counted_ref)
    assert float(accuracy(correct[counted])) == pytest.approx(expected, abs=1e-15)
    # An empty-set image never counts as correct, even if the prediction happens to be -1.
    c2, k2 = correct_multi(np.array([-1]), np.array([[-1, -1]]))
    assert not c2[0] and not k2[0]


def test_hard_multilabel_any_listed_label():
    label_set = np.array([[5, -1, -1], [1, 7, -1], [2, 3, 9], [4, -1, -1]])
    pred = np.array([5, 7, 8, 1])
    correct, counted = correct_multi(pred, label_set)
    np.testing.assert_array_equal(correct, [True, True, False, False])
    assert counted.all()
    assert float(accuracy(correct)) == 0.5
    with pytest.raises(ValueError):
        correct_multi(pred, label_set[:, 0])


# ------------------------------------------------------------------------------------------------ ECE
def test_ece_random_vs_loop_reference(kit):
    rng = np.random.default_rng(4)
    conf = rng.uniform(1 / 1000, 1.0, 500)
    correct = rng.random(500) < conf ** 0.7
    assert float(ece(conf, correct)) == pytest.approx(kit.ref_ece(conf, correct), abs=1e-12)
    assert N_BINS == 15


def test_ece_confidences_on_bin_edges(kit):
    """lower < conf <= upper: a confidence exactly on k/15 belongs to the bin BELOW the edge."""
    edges = [k / 15 for k in range(1, 16)]
    conf = np.array(edges + [e + 1e-9 for e in edges[:-1]] + [1.0])
    correct = np.arange(len(conf)) % 2 == 0
    expected_bin = [next(m for m in range(15) if m / 15 < c <= (m + 1) / 15) for c in conf]
    np.testing.assert_array_equal(bin_index(conf), expected_bin)
    assert list(bin_index(np.array(edges))) == list(range(15))
    assert float(ece(conf, correct)) == pytest.approx(kit.ref_ece(conf, correct), abs=1e-12)
    rel = reliability(conf, correct)
    for m, (count, acc, c) in enumerate(kit.ref_bins(conf, correct)):
        assert rel["count"][m] == count


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 15, 20, 100])
def test_bins_are_those_of_a_binary_search_over_the_edges(n_bins):
    """Against numpy's binary search: every edge and the floats either side of it, values outside [0, 1], NaN last."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = np.concatenate([np.random.default_rng(n_bins).random(20_000), edges, np.nextafter(edges, 2.0),
                           np.nextafter(edges, -1.0), np.arange(1001) / 1000,
                           [1e-300, 1.5, -0.5, np.inf, -np.inf, np.nan]])
    for values in (conf, conf.astype(np.float32)):
        search = np.searchsorted(edges, values.astype(np.float64), side="left") - 1
        np.testing.assert_array_equal(bin_index(values, n_bins), np.clip(search, 0, n_bins - 1))


@pytest.mark.parametrize("k_classes, expected_bin", [(3, 4), (5, 2), (15, 0), (2, 7)])
def test_equal_logits_give_confidence_exactly_on_an_edge(k_classes, expected_bin):
    """K equal logits: confidence 1/K exactly (1/3 == 5/15, 1/5 == 3/15, 1/15); 1/2 is inside bin 7."""
    out = summarize(np.zeros((1, k_classes), np.float32), np.array([0]))
    assert out["confidence"][0] == 1 / k_classes
    assert bin_index(out["confidence"])[0] == expected_bin
    assert reliability(out["confidence"], np.array([True]))["count"][expected_bin] == 1


def test_confidence_exactly_one():
    logits = np.zeros((3, 1000), np.float32)
    logits[:, 7] = 1000.0
    out = summarize(logits, np.array([7, 3, -1]))
    assert (out["confidence"] == 1.0).all()
    assert (bin_index(out["confidence"]) == 14).all()
    correct = out["pred"] == np.array([7, 3, -1])
    # bin 14 holds all three at confidence 1.0 with accuracy 1/3: ECE = |1/3 - 1|.
    assert float(ece(out["confidence"], correct)) == pytest.approx(2 / 3, abs=1e-15)
    rel = reliability(out["confidence"], correct)
    assert rel["count"][14] == 3 and rel["count"][:14].sum() == 0
    assert rel["accuracy"][14] == pytest.approx(1 / 3) and rel["confidence"][14] == 1.0


def test_clip_scale_logits(kit):
    """Zero-shot logits = 100 x cosine: large spreads, softmax still exact in float64."""
    rng = np.random.default_rng(5)
    cos = rng.uniform(0.1, 0.35, (80, 50))
    logits = (100 * cos).astype(np.float32)
    label = rng.integers(0, 50, 80)
    out = summarize(logits, label)
    conf_ref, correct_ref = [], []
    for i in range(80):
        p = kit.ref_softmax(logits[i])
        conf_ref.append(max(p))
        correct_ref.append(kit.ref_argmax(logits[i]) == label[i])
        assert out["p_true"][i] == pytest.approx(p[label[i]], rel=1e-9, abs=1e-300)
    np.testing.assert_allclose(out["confidence"], conf_ref, rtol=1e-12)
    correct = correct_single(out["pred"], label)
    np.testing.assert_array_equal(correct, correct_ref)
    assert float(ece(out["confidence"], correct)) == pytest.approx(kit.ref_ece(conf_ref, correct_ref), abs=1e-12)


def test_reliability_diagram_and_histogram(kit):
    rng = np.random.default_rng(6)
    conf = np.concatenate([rng.uniform(0.05, 1.0, 300), [1.0, 1 / 15, 0.5]])
    correct = rng.random(len(conf)) < conf
    rel = reliability(conf, correct)
    np.testing.assert_allclose(rel["lower"], [m / 15 for m in range(15)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(rel["upper"], [(m + 1) / 15 for m in range(15)], rtol=0, atol=1e-15)
    ref = kit.ref_bins(conf, correct)
    np.testing.assert_array_equal(rel["count"], [r[0] for r in ref])
    np.testing.assert_allclose(rel["accuracy"], [r[1] for r in ref], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(rel["confidence"], [r[2] for r in ref], rtol=1e-12, equal_nan=True)
    assert rel["count"].sum() == len(conf)
    # ECE is the count-weighted gap of the diagram.
    gap = sum(c / len(conf) * abs(a - m) for c, a, m in ref if c)
    assert float(ece(conf, correct)) == pytest.approx(gap, abs=1e-12)
    # Bins handed in (the calibration study bins once for the point estimate, its replicates and the curve).
    bins = bin_index(conf)
    assert float(ece(conf, correct, bins=bins)) == float(ece(conf, correct))
    weights = rng.integers(0, 3, (4, len(conf))).astype(np.uint8)
    np.testing.assert_array_equal(ece(conf, correct, weights=weights, bins=bins), ece(conf, correct, weights=weights))
    for name, values in reliability(conf, correct, bins=bins).items():
        np.testing.assert_array_equal(values, rel[name])


def test_ece_rejects_confidence_outside_unit_interval():
    with pytest.raises(ValueError):
        ece(np.array([0.5, 1.5]), np.array([True, False]))
    with pytest.raises(ValueError):
        ece(np.array([0.5, 0.5]), np.array([True]))


# --------------------------------------------------------------------------------------------- ImageNet-X
def _ref_error_ratios(correct, factor_of):
    n_f = 16
    acc_all = sum(correct) / len(correct)
    out = []
    for f in range(n_f):
        members = [i for i in range(len(correct)) if factor_of[i] == f]
        if not members:
            out.append(math.nan)
            continue
        acc_f = sum(correct[i] for i in members) / len(members)
        out.append((1 - acc_f) / (1 - acc_all))
    return out


def test_imagenet_x_error_ratios_vs_reference():
    rng = np.random.default_rng(7)
    n = 600
    factor_of = rng.integers(0, 15, n)          # factor 15 never occurs -> NaN
    correct = rng.random(n) < 0.3 + 0.04 * factor_of
    onehot = np.zeros((n, 16), bool)
    onehot[np.arange(n), factor_of] = True
    got = error_ratios(correct, onehot)
    np.testing.assert_allclose(got, _ref_error_ratios(list(correct), list(factor_of)), rtol=1e-12, equal_nan=True)
    # The point estimate's own sums and the replicates' table give the same numbers: a replicate of unit weights.
    np.testing.assert_array_equal(got, error_ratios(correct, onehot, weights=np.ones((1, n), np.uint8))[0])
    with pytest.raises(ValueError):
        error_ratios(correct, factor_of)


def test_imagenet_x_hand_example():
    # acc_all = 6/10 -> error 0.4. factor 0: 2 of 4 wrong -> 0.5 / 0.4 = 1.25; factor 1: 2 of 6 wrong -> (1/3)/0.4
    correct = np.array([1, 1, 0, 0, 1, 1, 1, 1, 0, 0], bool)
    factors = np.zeros((10, 16))
    factors[:4, 0] = 1
    factors[4:, 1] = 1
    got = error_ratios(correct, factors)
    assert got[0] == pytest.approx(1.25) and got[1] == pytest.approx((1 / 3) / 0.4)


# --------------------------------------------------------------------------------------------- shape bias
def _ref_shape_bias(decision, shape, texture):
    kept = [i for i in range(len(shape)) if shape[i] != texture[i]]
    s = sum(decision[i] == shape[i] for i in kept)
    t = sum(decision[i] == texture[i] for i in kept)
    return {"shape_bias": s / (s + t) if s + t else math.nan, "shape_fraction": s / len(kept),
            "texture_fraction": t / len(kept)}


def test_shape_bias_drops_shape_equals_texture():
    #            kept: 3 shape hits, 1 texture hit, 1 neither  -> 3/4, 3/5, 1/5
    shape = [0, 1, 2, 3, 4, 5, 5, 5, 5]
    texture = [1, 2, 3, 4, 5, 5, 5, 5, 5]
    decision = [0, 1, 2, 4, 9, 5, 5, 5, 5]   # the four shape == texture images decide "5": hit both cues
    got = shape_bias(np.array(decision), np.array(shape), np.array(texture))
    assert float(got["shape_bias"]) == pytest.approx(3 / 4)
    assert float(got["shape_fraction"]) == pytest.approx(3 / 5)
    assert float(got["texture_fraction"]) == pytest.approx(1 / 5)
    # Not dropping them would give (3+4) / (3+4+1+4) = 7/12: the drop matters.
    assert 7 / 12 != pytest.approx(3 / 4)
    ref = _ref_shape_bias(decision, shape, texture)
    for name, value in ref.items():
        assert float(got[name]) == pytest.approx(value)


def test_shape_bias_random_and_per_category():
    rng = np.random.default_rng(8)
    n = 400
    shape = rng.integers(0, 16, n)
    texture = np.where(rng.random(n) < 0.1, shape, rng.integers(0, 16, n))
    decision = np.where(rng.random(n) < 0.4, shape, np.where(rng.random(n) < 0.5, texture, rng.integers(0, 16, n)))
    got = shape_bias(decision, shape, texture)
    ref = _ref_shape_bias(list(decision), list(shape), list(texture))
    for name in ref:
        assert float(got[name]) == pytest.approx(ref[name], rel=1e-12)
    per_cat = shape_bias_per_category(decision, shape, texture, 17)
    for c in range(17):
        rows = [i for i in range(n) if shape[i] == c]
        if not rows:
            assert math.isnan(per_cat[c])
            continue
        expected = _ref_shape_bias([decision[i] for i in rows], [shape[i] for i in rows], [texture[i] for i in rows])
        np.testing.assert_allclose(per_cat[c], expected["shape_bias"], rtol=1e-12, equal_nan=True)


def test_cue_conflict_decision_is_the_category_mean_probability(kit):
    """Mean (not sum, not max) of the member probabilities decides: a 3-class win in the 109-class 'dog'
    category loses to a single strong 'knife' class under the mean, though it wins under the sum."""
    cats = kit.read_cue_categories()
    names = [c for c, _ in cats]
    members = [np.asarray(m) for _, m in cats]
    dog, knife, bird = names.index("dog"), names.index("knife"), names.index("bird")
    logits = np.zeros((3, 1000), np.float32)
    logits[0, members[dog][:3]] = 10.0
    logits[0, members[knife][0]] = 10.5        # sum: dog 3e^10 > knife e^10.5; mean: knife wins
    logits[1, members[bird][5]] = 12.0         # single clear winner
    rng = np.random.default_rng(9)
    logits[2] = rng.standard_normal(1000) * 4  # random
    probs = softmax(logits)
    got = category_probabilities(probs, members)
    for i in range(3):
        p = kit.ref_softmax(logits[i])
        ref = [math.fsum(p[j] for j in m) / len(m) for m in members]
        np.testing.assert_allclose(got[i], ref, rtol=1e-9)
        assert got[i].argmax() == kit.ref_cue_decision(logits[i], cats)
    assert got[0].argmax() == knife and got[1].argmax() == bird


# ------------------------------------------------------------------------------------------- group means
def test_group_means_vs_loop():
    rng = np.random.default_rng(10)
    groups = rng.choice(np.array(["desert", "city", "forest", "beach"]), 300)
    values = rng.random(300) < 0.6
    keys, means = group_means(values, groups)
    assert list(keys) == sorted(set(groups.tolist()))
    for k, m in zip(keys, means):
        rows = [i for i in range(300) if groups[i] == k]
        assert m == pytest.approx(sum(values[i] for i in rows) / len(rows), rel=1e-12)
    keys, means = group_means(np.array([1.0, 2.0, 3.0, 10.0]), np.array([45, 0, 45, 0]))
    np.testing.assert_array_equal(keys, [0, 45])
    np.testing.assert_allclose(means, [6.0, 2.0])


# ------------------------------------------------------------------------------------------ linear probes
def _blobs(rng, n, centers, spread):
    y = np.arange(n) % len(centers)
    x = centers[y] + rng.standard_normal((n, centers.shape[1])) * spread
    return x * rng.uniform(0.5, 5.0, (n, 1)), y   # random norms: L2 normalisation must undo them


def test_linear_probe_separable_reaches_100_percent():
    rng = np.random.default_rng(11)
    centers = np.eye(8)[:4] * 3
    tr, va, te = (_blobs(rng, n, centers, 0.05) for n in (80, 40, 120))
    res = linear_probe(*tr, *va, *te)
    assert res.correct.shape == (120,)
    assert res.correct.all()
    assert set(res.val_accuracy) == {0.01, 0.1, 1.0, 10.0, 100.0, 1000.0}


def test_linear_probe_chooses_c_on_val_and_refits_on_train_plus_val():
    """Recompute the protocol with scikit-learn directly: L2-normalise, fit per C on train, pick the best
    val top-1 (ties -> smaller C), refit on train+val, predict test."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(12)
    centers = rng.standard_normal((3, 6))
    tr, va, te = (_blobs(rng, n, centers, 1.2) for n in (90, 45, 90))
    cs = (0.001, 0.1, 10.0)

    def norm(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    val_acc = {c: float((LogisticRegression(C=c, max_iter=1000).fit(norm(tr[0]), tr[1]).predict(norm(va[0])) == va[1]).mean())
               for c in cs}
    best = sorted(cs, key=lambda c: (-val_acc[c], c))[0]
    probe = LogisticRegression(C=best, max_iter=1000).fit(norm(np.concatenate([tr[0], va[0]])), np.concatenate([tr[1], va[1]]))
    expected = probe.predict(norm(te[0])) == te[1]

    res = linear_probe(*tr, *va, *te, cs=cs)
    assert res.val_accuracy == pytest.approx(val_acc)
    assert len(set(val_acc.values())) > 1, "the toy problem should make C matter"
    assert res.c == best
    np.testing.assert_array_equal(res.correct, expected)


def test_linear_probe_bad_splits():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="val"):
        linear_probe(x, np.array([0, 1, 0, 1]), x[:0], np.array([]), x, np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, np.zeros(4), x, np.zeros(4), x, np.zeros(4))


# ---------------------------------------------------------------------------- weighted (bootstrap) form
def _int_weights(rng, n):
    w = rng.integers(0, 4, n)
    w[rng.integers(0, n)] += 1
    return w


WEIGHT_RTOL = 1e-5  # the weighted sums run in float32 (fast matmul); the repeated list in float64


def test_weighted_accuracy_and_mean_equal_repetition():
    rng = np.random.default_rng(13)
    n = 257
    correct = rng.random(n) < 0.7
    p_true = rng.random(n)
    w = _int_weights(rng, n)
    assert float(accuracy(correct, w)) == pytest.approx(np.repeat(correct, w).mean(), rel=WEIGHT_RTOL)
    assert float(wmean(p_true, w)) == pytest.approx(np.repeat(p_true, w).mean(), rel=WEIGHT_RTOL)


def test_weighted_ece_equals_repetition(kit):
    rng = np.random.default_rng(14)
    n = 300
    conf = np.concatenate([rng.uniform(0.07, 1.0, n - 3), [1.0, 5 / 15, 1 / 15]])
    correct = rng.random(n) < conf
    w = _int_weights(rng, n)
    expected = kit.ref_ece(list(np.repeat(conf, w)), list(np.repeat(correct, w)))
    assert float(ece(conf, correct, weights=w)) == pytest.approx(expected, rel=WEIGHT_RTOL, abs=1e-7)


def test_weighted_error_ratios_equal_repetition():
    rng = np.random.default_rng(15)
    n = 400
    factor_of = rng.integers(0, 16, n)
    correct = rng.random(n) < 0.6
    onehot = np.eye(16, dtype=bool)[factor_of]
    w = _int_weights(rng, n)
    expected = _ref_error_ratios(list(np.repeat(correct, w)), list(np.repeat(factor_of, w)))
    np.testing.assert_allclose(error_ratios(correct, onehot, weights=w), expected, rtol=WEIGHT_RTOL, equal_nan=True)


def test_weighted_shape_bias_equals_repetition():
    rng = np.random.default_rng(16)
    n = 300
    shape = rng.integers(0, 16, n)
    texture = np.where(rng.random(n) < 0.1, shape, rng.integers(0, 16, n))
    decision = np.where(rng.random(n) < 0.5, shape, texture)
    w = _int_weights(rng, n)
    got = shape_bias(decision, shape, texture, weights=w)
    ref = _ref_shape_bias(*(list(np.repeat(a, w)) for a in (decision, shape, texture)))
    for name in ref:
        assert float(got[name]) == pytest.approx(ref[name], rel=WEIGHT_RTOL)


def test_weighted_group_means_equal_repetition():
    rng = np.random.default_rng(17)
    n = 200
    groups = rng.integers(0, 5, n)
    values = rng.random(n)
    w = _int_weights(rng, n)
    keys, means = group_means(values, groups, w)
    rep_v, rep_g = np.repeat(values, w), np.repeat(groups, w)
    for k, m in zip(keys, means):
        rows = rep_g == k
        expected = rep_v[rows].mean() if rows.any() else math.nan
        np.testing.assert_allclose(m, expected, rtol=WEIGHT_RTOL, equal_nan=True)


def test_weight_matrix_gives_one_value_per_replicate(kit):
    """[B, n] weights -> B values, each equal to the 1-D weighted value of its row."""
    rng = np.random.default_rng(18)
    n, b = 150, 7
    conf = rng.uniform(0.1, 1.0, n)
    correct = rng.random(n) < conf
    factor_of = rng.integers(0, 16, n)
    shape, texture = rng.integers(0, 16, n), rng.integers(0, 16, n)
    decision = np.where(rng.random(n) < 0.5, shape, texture)
    groups = rng.integers(0, 3, n)
    w = rng.poisson(1.0, (b, n)).astype(np.float32)
    cases = {
        "accuracy": lambda ww: accuracy(correct, ww),
        "wmean": lambda ww: wmean(conf, ww),
        "ece": lambda ww: ece(conf, correct, weights=ww),
        "error_ratios": lambda ww: error_ratios(correct, np.eye(16)[factor_of], weights=ww),
        "shape_bias": lambda ww: shape_bias(decision, shape, texture, weights=ww)["shape_bias"],
        "group_means": lambda ww: group_means(conf, groups, ww)[1],
    }
    for name, f in cases.items():
        many = np.asarray(f(w))
        assert many.shape[0] == b, name
        for i in range(b):
            np.testing.assert_allclose(many[i], f(w[i]), rtol=1e-6, equal_nan=True, err_msg=name)
    # ECE replicate 0 against the loop reference on the repeated list (weights are integers).
    wi = w[0].astype(int)
    assert float(ece(conf, correct, weights=w)[0]) == pytest.approx(
        kit.ref_ece(list(np.repeat(conf, wi)), list(np.repeat(correct, wi))), rel=WEIGHT_RTOL, abs=1e-7)


def test_unit_weights_equal_point_estimate():
    rng = np.random.default_rng(19)
    correct = rng.random(100) < 0.5
    conf = rng.uniform(0.1, 1, 100)
    assert float(accuracy(correct, np.ones(100))) == pytest.approx(float(accuracy(correct)), rel=1e-7)
    assert float(ece(conf, correct, weights=np.ones((1, 100)))[0]) == pytest.approx(float(ece(conf, correct)), rel=1e-6)


@pytest.mark.parametrize("n", [0, 7, 50_000, 249_999])
def test_group_sums_point_estimate_is_the_one_hot_columns_sum_bit_for_bit(n):
    """Without weights the sums come from bincount; a report cached before that change summed one-hot columns.
    Both must give the same bits (ECE, reliability, per-group accuracy are recomputed from cached summaries)."""
    from analyze.metrics import group_sums

    rng = np.random.default_rng(n)
    group, a, b = rng.integers(0, 15, n), rng.random(n), (rng.random(n) < 0.5)
    onehot = np.zeros((n, 15))
    onehot[np.arange(n), group] = 1.0
    columns = np.concatenate([onehot, onehot * a[:, None], onehot * b.astype(float)[:, None]], axis=1)
    expected = columns.sum(axis=0, dtype=np.float64)
    got = group_sums(group, 15, [a, b])
    assert got.dtype == np.float64 and got.shape == (45,)
    np.testing.assert_array_equal(got.view(np.uint64), expected.view(np.uint64))
    if n == 0:
        return
    weights = rng.poisson(1.0, (3, n)).astype(np.uint8)
    np.testing.assert_allclose(group_sums(group, 15, [a, b], weights), (weights @ columns), rtol=1e-5)


# ------------------------------------------------------------------------------------------- bootstrap
def _percentile(values, q):
    """Linear-interpolation percentile (numpy's default), written out."""
    v = sorted(values)
    pos = q / 100 * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_bootstrap_weights_are_seeded_poisson():
    a = Bootstrap(n_boot=400, seed=3).weights("imagenet-val", 500)
    b = Bootstrap(n_boot=400, seed=3).weights("imagenet-val", 500)
    c = Bootstrap(n_boot=400, seed=4).weights("imagenet-val", 500)
    d = Bootstrap(n_boot=400, seed=3).weights("imagenet-r", 500)
    assert a.shape == (400, 500)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert (a >= 0).all() and np.array_equal(a, np.round(a))
    assert a.mean() == pytest.approx(1.0, abs=0.02) and a.var() == pytest.approx(1.0, abs=0.05)
    assert Bootstrap(n_boot=0).weights("x", 10) is None


def test_bootstrap_draws_prepared_in_the_background_equal_lazy_draws():
    lazy = Bootstrap(n_boot=50, seed=9)
    early = Bootstrap(n_boot=50, seed=9)
    early.prepare([("imagenet-val", 300), ("imagenet-r", 40)])
    for key, n in (("imagenet-val", 300), ("imagenet-r", 40), ("imagenet-a", 7)):
        np.testing.assert_array_equal(early.counts(key, n), lazy.counts(key, n))
        assert early.counts(key, n).dtype == np.uint8


@pytest.mark.parametrize("slice_rows", [1, 7, 4096])
def test_weighted_product_of_counts_in_slices(slice_rows):
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 6, (30, 101)).astype(np.uint8)
    x = rng.random((101, 4)).astype(np.float32)
    expected = counts.astype(np.float64) @ x.astype(np.float64)
    np.testing.assert_allclose(weighted_product(counts, x, slice_rows=slice_rows), expected, rtol=1e-5)
    rows = np.flatnonzero(rng.random(101) < 0.4)  # a subset of the samples, gathered slice by slice
    subset = counts[:, rows].astype(np.float64) @ x[rows].astype(np.float64)
    np.testing.assert_allclose(weighted_product(counts, x[rows], slice_rows=slice_rows, rows=rows), subset, rtol=1e-5)


def test_bootstrap_interval_percentiles():
    boot = Bootstrap(n_boot=10, level=0.9)
    reps = np.array([5.0, 1.0, 3.0, np.nan, 2.0, 4.0, 9.0, 7.0, 6.0, 8.0, np.inf])
    finite = [r for r in reps if np.isfinite(r)]
    low, high = boot.interval(reps)
    assert low == pytest.approx(_percentile(finite, 5)) and high == pytest.approx(_percentile(finite, 95))
    assert all(math.isnan(v) for v in boot.interval(None))
    assert all(math.isnan(v) for v in boot.interval(np.array([np.nan])))


def _ci(seed, correct, n_boot=300):
    boot = Bootstrap(n_boot=n_boot, seed=seed)
    return boot.interval(accuracy(correct, boot.weights("d", len(correct))))


def test_bootstrap_ci_seeded_and_contains_point_estimate():
    rng = np.random.default_rng(20)
    correct = rng.random(400) < 0.7
    point = float(accuracy(correct))
    ci = _ci(0, correct)
    assert ci == _ci(0, correct)
    assert ci != _ci(1, correct)
    assert ci[0] < point < ci[1]
    # The Poisson bootstrap's width matches the binomial standard error (within Monte-Carlo noise).
    se = math.sqrt(point * (1 - point) / len(correct))
    assert (ci[1] - ci[0]) == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_paired_difference_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(21)
    correct = rng.random(300) < 0.6
    boot = Bootstrap(n_boot=200, seed=0)
    w = boot.weights("imagenet-val", 300)
    a = accuracy(correct, w)
    b = accuracy(correct.copy(), boot.weights("imagenet-val", 300))   # same dataset -> same replicates
    assert boot.interval(a - b) == (0.0, 0.0)
    # A model that is better on exactly the same images: the paired interval is far tighter than unpaired.
    better = correct | (rng.random(300) < 0.1)
    diff = accuracy(better, w) - a
    low, high = boot.interval(diff)
    assert 0 <= low <= float(accuracy(better) - accuracy(correct)) <= high
