"""Group metrics (PROTOCOLS §5): hand-computed cases, fairlearn/sklearn agreement, bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import equalized_odds_difference
from sklearn.metrics import balanced_accuracy_score

from debias.metrics import (
    BOOTSTRAP_METRICS,
    GroupReport,
    accuracy,
    balanced_accuracy,
    bias_aligned_accuracy,
    bias_conflicting_accuracy,
    bias_metric_frame,
    equalized_odds,
    from_metric_frame,
    group_report,
    metric_frame,
    unbiased_accuracy,
    worst_group_accuracy,
)


def make_groups(
    spec: dict[tuple[int, int], tuple[int, int]], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with exactly ``spec[(y, b)] = (n, correct)``; wrong rows predict ``(y + 1) % C``."""
    ys, ps, bs = [], [], []
    for (y, b), (n, correct) in spec.items():
        pred = np.full(n, (y + 1) % num_classes)
        pred[:correct] = y
        ys.append(np.full(n, y))
        ps.append(pred)
        bs.append(np.full(n, b))
    y, p, b = (np.concatenate(a) for a in (ys, ps, bs))
    order = np.random.default_rng(seed).permutation(len(y))  # order must not matter
    return y[order], p[order], b[order]


# 2 classes x 2 bias values: acc_g = .9, .5, .2, .8
TWO_BY_TWO = {(0, 0): (40, 36), (0, 1): (10, 5), (1, 0): (10, 2), (1, 1): (40, 32)}


def biased_mnist_like() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10x10: diagonal 90 rows at .9, off-diagonal 10 rows at .5, (3, 7) at .1, (2, 5) empty."""
    spec = {}
    for y in range(10):
        for b in range(10):
            if y == b:
                spec[(y, b)] = (90, 81)
            elif (y, b) == (3, 7):
                spec[(y, b)] = (10, 1)
            elif (y, b) != (2, 5):
                spec[(y, b)] = (10, 5)
    return make_groups(spec, 10)


# --------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------
def test_two_by_two_hand_computed() -> None:
    y, p, b = make_groups(TWO_BY_TWO, 2)
    r = group_report(y, p, b)
    assert r.n == 100 and r.n_aligned == 80 and r.n_conflicting == 20
    assert r.accuracy == pytest.approx((36 + 5 + 2 + 32) / 100)
    assert r.unbiased_accuracy == pytest.approx((0.9 + 0.5 + 0.2 + 0.8) / 4)
    assert r.worst_group_accuracy == pytest.approx(0.2)
    assert r.worst_group == (1, 0)
    assert r.aligned_accuracy == pytest.approx((0.9 + 0.8) / 2)
    assert r.conflicting_accuracy == pytest.approx((0.5 + 0.2) / 2)
    assert r.balanced_accuracy == pytest.approx((41 / 50 + 34 / 50) / 2)
    # TPR_b = acc of (1, b) = .2, .8; TNR_b = acc of (0, b) = .9, .5
    assert r.equalized_odds_mean_gap == pytest.approx((0.6 + 0.4) / 2)
    assert r.equalized_odds_max_gap == pytest.approx(0.6)
    assert r.ci == {}

    expected = pd.DataFrame(
        {
            "y": [0, 0, 1, 1],
            "b": [0, 1, 0, 1],
            "n": [40, 10, 10, 40],
            "correct": [36, 5, 2, 32],
            "accuracy": [0.9, 0.5, 0.2, 0.8],
            "aligned": [True, False, False, True],
        }
    )
    pd.testing.assert_frame_equal(r.groups[list(expected.columns)], expected, check_dtype=False)

    # the plain functions give the same numbers
    assert accuracy(y, p) == pytest.approx(r.accuracy)
    assert unbiased_accuracy(y, p, b) == pytest.approx(r.unbiased_accuracy)
    assert worst_group_accuracy(y, p, b) == pytest.approx(r.worst_group_accuracy)
    assert bias_aligned_accuracy(y, p, b) == pytest.approx(r.aligned_accuracy)
    assert bias_conflicting_accuracy(y, p, b) == pytest.approx(r.conflicting_accuracy)
    assert balanced_accuracy(y, p) == pytest.approx(r.balanced_accuracy)
    assert equalized_odds(y, p, b) == pytest.approx((0.5, 0.6))


def test_explicit_aligned_groups_swap_aligned_and_conflicting() -> None:
    y, p, b = make_groups(TWO_BY_TWO, 2)
    celeba_like = group_report(y, p, b, aligned={(0, 0), (1, 1)})
    utk_like = group_report(y, p, b, aligned=[(0, 1), (1, 0)])
    assert celeba_like.aligned_accuracy == pytest.approx(0.85)
    assert celeba_like.conflicting_accuracy == pytest.approx(0.35)
    assert utk_like.aligned_accuracy == pytest.approx(0.35)
    assert utk_like.conflicting_accuracy == pytest.approx(0.85)
    assert (utk_like.n_aligned, utk_like.n_conflicting) == (20, 80)
    assert utk_like.groups["aligned"].tolist() == [False, True, True, False]
    # aligned/conflicting do not change the group-wise metrics
    assert utk_like.unbiased_accuracy == pytest.approx(celeba_like.unbiased_accuracy)
    assert bias_aligned_accuracy(y, p, b, aligned={(0, 1), (1, 0)}) == pytest.approx(0.35)
    assert bias_conflicting_accuracy(y, p, b, aligned={(0, 1), (1, 0)}) == pytest.approx(0.85)
    # a dataset's aligned_groups tuple (numpy ints inside) is accepted too
    tuple_of_np = ((np.int64(0), np.int64(1)), (np.int64(1), np.int64(0)))
    assert group_report(y, p, b, aligned=tuple_of_np).aligned_accuracy == pytest.approx(0.35)


def test_missing_aligned_or_conflicting_groups_give_nan() -> None:
    # a "conflicting" test split: no aligned group at all
    y, p, b = make_groups({(0, 1): (10, 7), (1, 0): (10, 4)}, 2)
    r = group_report(y, p, b, bootstrap=50)
    assert math.isnan(r.aligned_accuracy)
    assert r.conflicting_accuracy == pytest.approx((0.7 + 0.4) / 2)
    assert r.n_aligned == 0
    assert all(math.isnan(v) for v in r.ci["aligned_accuracy"])
    assert not math.isnan(r.ci["conflicting_accuracy"][0])
    assert math.isnan(group_report(y, p, b, aligned=[]).aligned_accuracy)
    assert math.isnan(bias_conflicting_accuracy(y, p, b, aligned=[(0, 1), (1, 0)]))


def test_biased_mnist_like_10x10_and_empty_group() -> None:
    y, p, b = biased_mnist_like()
    r = group_report(y, p, b)
    assert len(r.groups) == 99  # (2, 5) is empty and absent
    assert r.n == 10 * 90 + 89 * 10
    assert r.accuracy == pytest.approx((10 * 81 + 88 * 5 + 1) / (10 * 90 + 89 * 10))
    assert r.unbiased_accuracy == pytest.approx((10 * 0.9 + 88 * 0.5 + 0.1) / 99)
    assert r.worst_group_accuracy == pytest.approx(0.1)
    assert r.worst_group == (3, 7)
    assert r.aligned_accuracy == pytest.approx(0.9)
    assert r.conflicting_accuracy == pytest.approx((88 * 0.5 + 0.1) / 89)
    recall = [(81 + 45) / 180] * 10
    recall[2] = (81 + 8 * 5) / 170
    recall[3] = (81 + 8 * 5 + 1) / 180
    assert r.balanced_accuracy == pytest.approx(np.mean(recall))

    table = r.accuracy_table()
    assert table.shape == (10, 10)
    assert list(table.index) == list(range(10)) and list(table.columns) == list(range(10))
    assert math.isnan(table.loc[2, 5])
    assert table.loc[3, 7] == pytest.approx(0.1)
    assert np.allclose(np.diag(table.to_numpy()), 0.9)
    counts = r.count_table()
    assert counts.loc[2, 5] == 0 and counts.loc[4, 4] == 90 and counts.to_numpy().sum() == r.n
    assert counts.dtypes.map(lambda d: d.kind == "i").all()


def test_negative_and_sparse_label_values() -> None:
    # CelebA raw attributes are -1/1; results must equal the 0/1 coding
    y, p, b = make_groups(TWO_BY_TWO, 2)
    r01 = group_report(y, p, b)
    r_pm = group_report(2 * y - 1, 2 * p - 1, 2 * b - 1)
    for key in ("accuracy", "unbiased_accuracy", "worst_group_accuracy", "aligned_accuracy"):
        assert getattr(r_pm, key) == pytest.approx(getattr(r01, key))
    assert r_pm.worst_group == (1, -1)
    assert r_pm.equalized_odds_mean_gap == pytest.approx(r01.equalized_odds_mean_gap)
    assert r_pm.equalized_odds_max_gap == pytest.approx(r01.equalized_odds_max_gap)
    # huge label values take the np.unique path
    r_big = group_report(y * 10**9, p * 10**9, b + 5 * 10**8, aligned={(0, 5 * 10**8)})
    assert r_big.unbiased_accuracy == pytest.approx(r01.unbiased_accuracy)
    assert r_big.aligned_accuracy == pytest.approx(0.9)


# --------------------------------------------------------------------------------------------
# Equalized odds
# --------------------------------------------------------------------------------------------
def test_equalized_odds_multiclass_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 2, 2] * 2)
    p = np.array([0, 1, 1, 1, 2, 0, 0, 0, 1, 1, 2, 2])
    b = np.array([0] * 6 + [1] * 6)
    # per class (ΔTPR, ΔTNR): c0 (.5, .25), c1 (0, .25), c2 (.5, 0)
    mean_gap, max_gap = equalized_odds(y, p, b)
    assert mean_gap == pytest.approx((0.375 + 0.125 + 0.25) / 3)
    assert max_gap == pytest.approx(0.5)


def test_equalized_odds_skips_groups_without_positives() -> None:
    y = np.array([1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 1, 0, 0])
    b = np.array([0, 0, 0, 0, 1, 1])
    # TPR only defined in b=0 -> ΔTPR = 0; TNR .5 vs 1 -> ΔTNR = .5
    assert equalized_odds(y, p, b) == pytest.approx((0.25, 0.5))
    # TNR defined nowhere (no negatives): the gaps come from TPR alone
    assert equalized_odds([1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]) == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_gaps_match_fairlearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    b = rng.integers(0, 3, n)
    y = rng.integers(0, 2, n)
    flip = rng.random(n) < 0.15 + 0.1 * b  # error rate depends on the bias group
    p = np.where(flip, 1 - y, y)
    mean_gap, max_gap = equalized_odds(y, p, b)
    assert max_gap == pytest.approx(equalized_odds_difference(y, p, sensitive_features=b))
    assert mean_gap == pytest.approx(
        equalized_odds_difference(y, p, sensitive_features=b, agg="mean")
    )
    assert max_gap > 0.05  # the data is built to be unfair; a zero would hide a bug


def _reference_multiclass_eo(y: np.ndarray, p: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Loop-based one-vs-rest reference, written from the definition."""
    means, maxes = [], []
    for c in np.unique(y):
        tprs, tnrs = [], []
        for g in np.unique(b):
            m = b == g
            pos, neg = m & (y == c), m & (y != c)
            if pos.any():
                tprs.append(np.mean(p[pos] == c))
            if neg.any():
                tnrs.append(np.mean(p[neg] != c))
        gaps = [max(r) - min(r) for r in (tprs, tnrs) if r]
        means.append(np.mean(gaps))
        maxes.append(max(gaps))
    return float(np.mean(means)), float(max(maxes))


def test_multiclass_gaps_match_reference() -> None:
    rng = np.random.default_rng(3)
    n = 500
    y = rng.integers(0, 4, n)
    b = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.3 + 0.1 * b, rng.integers(0, 5, n), y)  # 4 = unseen class
    assert equalized_odds(y, p, b) == pytest.approx(_reference_multiclass_eo(y, p, b))


# --------------------------------------------------------------------------------------------
# Agreement with fairlearn / sklearn
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_group_metrics_match_fairlearn_metric_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 800
    y = rng.integers(0, 5, n)
    b = np.where(rng.random(n) < 0.8, y, rng.integers(0, 4, n))
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, 5, n))
    r = group_report(y, p, b)
    mf = metric_frame(y, p, b)
    assert list(mf.by_group.index.names) == ["y", "b"]
    assert r.worst_group_accuracy == pytest.approx(mf.group_min()["accuracy"])
    assert r.unbiased_accuracy == pytest.approx(mf.by_group["accuracy"].mean())
    assert r.accuracy == pytest.approx(mf.overall["accuracy"])
    # fairlearn lists every (y, b) combination, empty ones as NaN; ours keeps non-empty only
    present = mf.by_group.dropna()
    assert len(mf.by_group) > len(present) == len(r.groups)
    assert present["count"].to_numpy() == pytest.approx(r.groups["n"].to_numpy())
    bridged = from_metric_frame(mf)
    d = r.to_dict()
    for key in ("accuracy", "unbiased_accuracy", "worst_group_accuracy", "n_groups"):
        assert bridged[key] == pytest.approx(d[key])
    with pytest.raises(ValueError, match="metric 'recall'"):
        from_metric_frame(mf, "recall")


def test_bias_metric_frame_rates() -> None:
    y, p, b = make_groups(TWO_BY_TWO, 2)
    mf = bias_metric_frame(y, p, b)
    assert list(mf.by_group.index) == [0, 1]
    assert mf.by_group["true_positive_rate"].tolist() == pytest.approx([0.2, 0.8])
    assert mf.by_group["true_negative_rate"].tolist() == pytest.approx([0.9, 0.5])
    assert mf.difference()["true_positive_rate"] == pytest.approx(0.6)
    assert mf.by_group["count"].tolist() == [50, 50]
    # multiclass: the binary-only rates are left out
    y10, p10, b10 = biased_mnist_like()
    assert set(bias_metric_frame(y10, p10, b10).by_group.columns) == {"accuracy", "count"}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 300)
    p = np.where(rng.random(300) < 0.5, y, rng.integers(0, 7, 300))  # 6 never in y_true
    expected = balanced_accuracy_score(y, p)
    assert balanced_accuracy(y, p) == pytest.approx(expected)
    assert group_report(y, p, rng.integers(0, 3, 300)).balanced_accuracy == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------
def test_bootstrap_contains_point_and_is_seeded() -> None:
    y, p, b = make_groups(
        {(0, 0): (300, 240), (0, 1): (60, 30), (1, 0): (60, 39), (1, 1): (300, 270)}, 2
    )
    r = group_report(y, p, b, bootstrap=400, ci=0.9, seed=7)
    assert set(r.ci) == set(BOOTSTRAP_METRICS)
    for name, (low, high) in r.ci.items():
        point = getattr(r, name)
        assert low <= point <= high, name
        assert low < high, name
    assert r.ci_level == 0.9
    again = group_report(y, p, b, bootstrap=400, ci=0.9, seed=7)
    assert again.ci == r.ci
    other = group_report(y, p, b, bootstrap=400, ci=0.9, seed=8)
    assert other.ci != r.ci
    # a wider level gives a wider interval on the same replicates
    wide = group_report(y, p, b, bootstrap=400, ci=0.99, seed=7)
    lo9, hi9 = r.ci["unbiased_accuracy"]
    lo99, hi99 = wide.ci["unbiased_accuracy"]
    assert lo99 <= lo9 and hi99 >= hi9 and (hi99 - lo99) > (hi9 - lo9)


def test_bootstrap_narrows_with_more_data() -> None:
    small = {(0, 0): (40, 32), (0, 1): (10, 6), (1, 0): (10, 4), (1, 1): (40, 36)}
    large = {g: (10 * n, 10 * c) for g, (n, c) in small.items()}  # same rates, 10x rows
    r_small = group_report(*make_groups(small, 2), bootstrap=300, seed=0)
    r_large = group_report(*make_groups(large, 2), bootstrap=300, seed=0)
    assert r_small.unbiased_accuracy == pytest.approx(r_large.unbiased_accuracy)
    for name in BOOTSTRAP_METRICS:
        w_small = np.subtract(*r_small.ci[name][::-1])
        w_large = np.subtract(*r_large.ci[name][::-1])
        assert w_large < 0.6 * w_small, name  # about 1/sqrt(10) ~ .32 in theory


def test_bootstrap_matches_row_resampling() -> None:
    """Our binomial draws must give the same intervals as literally resampling rows per group."""
    spec = {(0, 0): (200, 150), (0, 1): (30, 12), (1, 0): (30, 21), (1, 1): (200, 180)}
    y, p, b = make_groups(spec, 2)
    r = group_report(y, p, b, bootstrap=2000, seed=0)
    rng = np.random.default_rng(123)
    idx = {g: np.flatnonzero((y == g[0]) & (b == g[1])) for g in spec}
    hits = (y == p).astype(float)
    unbiased, acc = [], []
    for _ in range(2000):
        per_group = {g: hits[rng.choice(i, size=len(i), replace=True)] for g, i in idx.items()}
        unbiased.append(np.mean([v.mean() for v in per_group.values()]))
        acc.append(np.concatenate(list(per_group.values())).mean())
    for name, values in (("unbiased_accuracy", unbiased), ("accuracy", acc)):
        low, high = np.quantile(values, [0.025, 0.975])
        assert r.ci[name][0] == pytest.approx(low, abs=0.01)
        assert r.ci[name][1] == pytest.approx(high, abs=0.01)


# --------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y_pred": [0, 1]}, r"y_pred has 2 entries but y_true has 4"),
        ({"bias": [0, 1, 0]}, r"bias has 3 entries but y_true has 4"),
        ({"y_true": [], "y_pred": [], "bias": []}, r"y_true is empty"),
        ({"y_pred": [0.0, 1.0, float("nan"), 1.0]}, r"y_pred contains 1 NaN/inf"),
        ({"bias": np.array([0, np.inf, 1, 0])}, r"bias contains 1 NaN/inf"),
        ({"y_true": [0, 0.5, 1, 1]}, r"y_true must hold integer labels; got non-integer value"),
        ({"y_pred": np.zeros((4, 2))}, r"y_pred must be a 1-D array.*shape \(4, 2\).*argmax"),
        ({"y_true": 3}, r"y_true must be a 1-D array of labels; got shape \(\)"),
        ({"bias": ["a", "b", "c", "d"]}, r"bias must hold integer labels; got dtype <U1"),
        ({"y_true": [0, None, 1, 1]}, r"y_true contains 1 NaN/inf"),
        ({"aligned": [(0, 0), (1,)]}, r"aligned must be a collection of \(y, b\) pairs"),
        ({"aligned": [(0, 0.5)]}, r"aligned must be a collection of \(y, b\) pairs"),
        ({"aligned": 5}, r"aligned must be a collection of \(y, b\) pairs"),
        ({"bootstrap": -1}, r"bootstrap must be a non-negative integer"),
        ({"bootstrap": 10, "ci": 1.5}, r"ci must be a confidence level"),
    ],
)
def test_bad_inputs_raise_with_argument_named(kwargs: dict, match: str) -> None:
    args = {"y_true": [0, 1, 1, 0], "y_pred": [0, 1, 0, 0], "bias": [0, 0, 1, 1]} | kwargs
    with pytest.raises(ValueError, match=match):
        group_report(**args)


def test_plain_functions_validate_too() -> None:
    with pytest.raises(ValueError, match="y_pred has 1 entries but y_true has 2"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="bias is empty"):
        worst_group_accuracy([0], [0], [])
    with pytest.raises(ValueError, match="y_pred must be a 1-D array"):
        metric_frame([0, 1], [[0.1, 0.9], [0.8, 0.2]], [0, 1])


def test_torch_and_float_inputs_give_the_same_report() -> None:
    y, p, b = make_groups(TWO_BY_TWO, 2)
    ref = group_report(y, p, b).to_dict()
    from_torch = group_report(torch.from_numpy(y), torch.from_numpy(p).int(), torch.tensor(b))
    assert from_torch.to_dict() == ref
    # labels that went through float containers (whole numbers) are accepted
    as_float = group_report(y.astype(np.float32), torch.from_numpy(p).half(), pd.Series(b * 1.0))
    assert as_float.to_dict() == ref
    assert accuracy(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1])) == pytest.approx(2 / 3)
    assert group_report([True, False], [True, True], [0, 1]).accuracy == pytest.approx(0.5)


def test_to_dict_is_json_safe_and_flat() -> None:
    y, p, b = make_groups({(0, 1): (20, 15), (1, 0): (20, 10)}, 2)
    r = group_report(y, p, b, bootstrap=50)
    d = r.to_dict()
    text = json.dumps(d)  # NaN is allowed (aligned_accuracy here)
    back = json.loads(text)
    assert math.isnan(back["aligned_accuracy"])
    assert back["worst_group_y"] == 1 and back["worst_group_b"] == 0
    assert back["worst_group_accuracy"] == pytest.approx(0.5)
    assert back["unbiased_accuracy_ci_low"] <= 0.625 <= back["unbiased_accuracy_ci_high"]
    assert all(type(v) in (int, float) for v in d.values())
    assert {"n", "n_aligned", "n_conflicting", "n_groups"} <= set(d)


def test_summary_is_readable() -> None:
    y, p, b = make_groups(TWO_BY_TWO, 2)
    r = group_report(y, p, b, bootstrap=100)
    text = str(r)
    assert text == r.summary()
    assert isinstance(r, GroupReport)
    assert "n=100 in 4 (y, b) groups" in text
    assert "worst-group accuracy   20.00%" in text
    assert "(y=1, b=0, 2/10 correct)" in text
    assert "95% bootstrap CIs" in text
    assert "mean 50.00%  max 60.00%" in text
    assert len(text.splitlines()) == 8


def test_summary_prints_the_exact_worst_group_interval_and_names_empty_subsets() -> None:
    # 0 of 98 correct in the worst group: the bootstrap interval is the point [0, 0], the
    # exact one of the group table [0, 3.69]; every group is aligned (no conflicting sample).
    y = np.r_[np.zeros(98, int), np.ones(50, int)]
    rep = group_report(y, np.ones(148, int), y, bootstrap=200)
    assert rep.ci["worst_group_accuracy"] == (0.0, 0.0)  # what the headline used to print
    high = rep.groups.set_index("y").loc[0, "ci_high"]
    text = str(rep)
    lines = text.splitlines()
    assert lines[3] == f"  worst-group accuracy    0.00%  [0.00, {100 * high:.2f}] exact  " + (
        "(y=0, b=0, 0/98 correct)"
    )
    assert "[0.00, 3.69] exact" in lines[3]  # 1 - 0.025^(1/98)
    assert lines[5] == "  bias-conflicting acc. no conflicting samples"
    assert "n/a" not in text and "[0.00, 0.00]" not in text
    # the same without bootstrap, and an aligned set that matches no sample
    plain = group_report(y, np.ones(148, int), y, aligned=[(0, 1)])
    assert "[0.00, 3.69] exact  (y=0, b=0, 0/98 correct)" in str(plain)
    assert "  bias-aligned acc.     no aligned samples" in str(plain).splitlines()


def test_group_intervals_are_exact_and_never_a_point() -> None:
    from debias.metrics import clopper_pearson

    # 0 of 98 correct: the one-sided bound 1 - 0.025^(1/98) = 3.69%, not [0, 0].
    y = np.r_[np.zeros(98, int), np.ones(2, int)]
    rep = group_report(y, np.ones(100, int), np.zeros(100, int))
    row = rep.groups.set_index("y").loc[0]
    assert row["accuracy"] == 0.0 and row["ci_low"] == 0.0
    assert (
        row["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 98)) == pytest.approx(0.036942, abs=1e-6)
    )
    assert rep.groups.set_index("y").loc[1, "ci_high"] == 1.0  # 2/2 correct
    low, high = clopper_pearson(5, 10)  # scipy binomtest(5, 10).proportion_ci('exact')
    assert (float(low), float(high)) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(3, 2)


def test_bootstrap_from_saved_groups_matches_group_report() -> None:
    from debias.metrics import bootstrap_from_groups

    rng = np.random.default_rng(0)
    y, b = rng.integers(0, 3, 600), rng.integers(0, 3, 600)
    p = np.where(rng.random(600) < 0.7, y, rng.integers(0, 3, 600))
    rep = group_report(y, p, b, bootstrap=200, seed=4)
    saved = pd.DataFrame(json.loads(rep.groups.to_json(orient="records")))
    again = bootstrap_from_groups(saved.sample(frac=1, random_state=1), n_boot=200, seed=4)
    assert set(again) == set(rep.ci)
    for name, interval in rep.ci.items():
        assert again[name] == pytest.approx(interval), name


def test_holm_adjust_by_hand():
    """Holm's step-down adjustment: sorted p times (m, m-1, ..., 1), running maximum, cut at 1."""
    from debias.metrics import holm_adjust

    # by hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4·0.005, 3·0.01, 2·0.03, max(0.06, 1·0.04)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # six tests, worked by hand (statsmodels is not a dependency: its multipletests(p,
    # method="holm")[1] is the same formula): sorted 0.0007·6, 0.0030·5, 0.0111·4, 0.0495·3,
    # 0.1282·2, 0.9·1, already increasing
    p = [0.0007, 0.0111, 0.1282, 0.0030, 0.0495, 0.9]
    expected = [0.0042, 0.0444, 0.2564, 0.015, 0.1485, 0.9]
    assert holm_adjust(p) == pytest.approx(expected)
    # the running maximum and the cut at 1: 2·0.6 = 1.2 -> 1, and 1·0.7 -> max(1, 0.7) = 1
    assert holm_adjust([0.7, 0.6]).tolist() == [1.0, 1.0]
    # a comparison without a test stays NaN and does not count in m
    out = holm_adjust([0.02, np.nan, 0.04])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert np.isnan(holm_adjust([np.nan])).all() and holm_adjust([]).size == 0
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm_adjust([0.5, 1.5])


# -- degenerate inputs and selection directions (issue 34) ---------------------------------------
def test_equalized_odds_over_a_single_bias_value_is_undefined_not_zero():
    with pytest.warns(UserWarning, match="need at least 2 bias values; bias takes only \\[3\\]"):
        rep = group_report([0, 1, 0, 1], [0, 1, 1, 1], [3, 3, 3, 3])
    assert math.isnan(rep.equalized_odds_mean_gap) and math.isnan(rep.equalized_odds_max_gap)
    assert rep.accuracy == 0.75  # the rest is still reported


def test_derived_aligned_pairs_are_not_checked_as_if_given():
    y, p, b = [10, 11, 10, 11], [10, 11, 11, 11], [0, 1, 1, 0]
    with pytest.raises(ValueError, match="no sample could be bias-aligned"):
        group_report(y, p, b, aligned=[(0, 0), (1, 1)])
    rep = group_report(y, p, b, aligned=[(0, 0), (1, 1)], derived_aligned=True)
    assert rep.n_aligned == 0 and rep.accuracy == 0.75


def test_one_dimensional_aligned_groups_are_refused():
    with pytest.raises(ValueError, match="pairs of integers; got item 0"):
        group_report([0, 1], [0, 1], [0, 1], aligned=[0, 1])


def test_every_selectable_metric_has_a_direction_and_counts_have_none():
    from debias.metrics import report_metrics
    from debias.metrics.groups import SELECTION_DIRECTION

    assert set(SELECTION_DIRECTION) < set(report_metrics())
    assert {k for k, d in SELECTION_DIRECTION.items() if d < 0} == {
        "equalized_odds_mean_gap",
        "equalized_odds_max_gap",
    }
    for index_or_count in ("worst_group_y", "worst_group_b", "n", "n_aligned", "n_groups"):
        assert index_or_count not in SELECTION_DIRECTION


def test_a_gap_is_selected_at_its_smallest_value():
    from types import SimpleNamespace

    from debias.train.selection import TrainerSelection

    state = SimpleNamespace(
        cfg=SimpleNamespace(select="val/equalized_odds_mean_gap"), best=None, _best_reports=None
    )
    for epoch, gap in enumerate([0.30, 0.10, 0.20, float("nan")]):
        row = {"val/equalized_odds_mean_gap": gap}
        TrainerSelection.select(state, epoch, row, {}, lambda e=epoch: {"epoch": e})
    assert state.best["epoch"] == 2 and state.best["value"] == 0.10
