"""DFR (debias.audit.dfr) against a transcription of the official code, on fixed features.

The reference is PolinaKirichenko/deep_feature_reweighting ``dfr_evaluate_spurious.py``
(commit 9d8d5de): ``dfr_on_validation_tune`` and ``dfr_on_validation_eval`` below are its
functions with the script's defaults (``balance_val=True``, ``add_train=False``, from
``--balance_dfr_val`` and ``--notrain_dfr_val``), only their ``print`` calls removed and
``penalty="l1"`` spelled ``l1_ratio=1.0`` (scikit-learn 1.8 deprecates ``penalty``; the same fit,
checked below). The official script draws from numpy's global random state; so does this
transcription, seeded with ``np.random.seed``.

scikit-learn >= 1.8 refuses liblinear with more than two classes, which the official call did
one-vs-rest under older versions: for the multi-class case ``LogisticRegression`` is bound to
:class:`_LiblinearBefore18`, which does what those versions did (one draw of the global random
state per fit, then one binary liblinear fit per class).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.preprocessing import StandardScaler

from debias.audit.dfr import C_GRID, REFITS, DFRError, fit_dfr, group_codes

# The official module-level settings (WaterBirds block, the one the script runs).
C_OPTIONS = [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
CLASS_WEIGHT_OPTIONS = [1.0, 2.0, 3.0, 10.0, 100.0, 300.0, 1000.0]
REG = "l1"
CLASS_WEIGHT_OPTIONS = [{0: 1, 1: w} for w in CLASS_WEIGHT_OPTIONS] + [
    {0: w, 1: 1} for w in CLASS_WEIGHT_OPTIONS
]


class _LiblinearBefore18:
    """``LogisticRegression(penalty="l1", solver="liblinear")`` on > 2 classes as scikit-learn
    < 1.8 ran it: one ``randint`` of the global random state for the liblinear seed, then
    liblinear's one-vs-rest (a binary fit per class; class weights 1 only, which is all the
    protocol uses)."""

    def __init__(self, C, class_weight):
        assert set(class_weight.values()) == {1.0}
        self.C = C

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        seed = np.random.randint(np.iinfo("i").max)
        fits = [
            SkLogisticRegression(l1_ratio=1.0, C=self.C, solver="liblinear", random_state=seed).fit(
                X, (y == c).astype(np.int64)
            )
            for c in self.classes_
        ]
        self.coef_ = np.concatenate([m.coef_ for m in fits])
        self.intercept_ = np.concatenate([m.intercept_ for m in fits])
        return self

    def predict(self, X):
        return self.classes_[(X @ self.coef_.T + self.intercept_).argmax(1)]


MULTICLASS = False


def LogisticRegression(penalty, C, solver, class_weight):  # noqa: N802 (the official name)
    assert penalty == "l1" and solver == "liblinear"
    if MULTICLASS:
        return _LiblinearBefore18(C, class_weight)
    return SkLogisticRegression(l1_ratio=1.0, C=C, solver=solver, class_weight=class_weight)


# ---- official code (dfr_evaluate_spurious.py), prints removed ---------------------------------
def dfr_on_validation_tune(
    all_embeddings, all_y, all_g, preprocess=True, balance_val=False, add_train=True, num_retrains=1
):
    worst_accs = {}
    for i in range(num_retrains):
        x_val = all_embeddings["val"]
        y_val = all_y["val"]
        g_val = all_g["val"]
        n_groups = np.max(g_val) + 1

        n_val = len(x_val) // 2
        idx = np.arange(len(x_val))
        np.random.shuffle(idx)

        x_valtrain = x_val[idx[n_val:]]
        y_valtrain = y_val[idx[n_val:]]
        g_valtrain = g_val[idx[n_val:]]

        n_groups = np.max(g_valtrain) + 1
        g_idx = [np.where(g_valtrain == g)[0] for g in range(n_groups)]
        min_g = np.min([len(g) for g in g_idx])
        for g in g_idx:
            np.random.shuffle(g)
        if balance_val:
            x_valtrain = np.concatenate([x_valtrain[g[:min_g]] for g in g_idx])
            y_valtrain = np.concatenate([y_valtrain[g[:min_g]] for g in g_idx])
            g_valtrain = np.concatenate([g_valtrain[g[:min_g]] for g in g_idx])

        x_val = x_val[idx[:n_val]]
        y_val = y_val[idx[:n_val]]
        g_val = g_val[idx[:n_val]]

        n_train = len(x_valtrain) if add_train else 0

        x_train = np.concatenate([all_embeddings["train"][:n_train], x_valtrain])
        y_train = np.concatenate([all_y["train"][:n_train], y_valtrain])
        g_train = np.concatenate([all_g["train"][:n_train], g_valtrain])  # noqa: F841 (official)
        if preprocess:
            scaler = StandardScaler()
            x_train = scaler.fit_transform(x_train)
            x_val = scaler.transform(x_val)

        if balance_val and not add_train:
            cls_w_options = [{0: 1.0, 1: 1.0}]
        else:
            cls_w_options = CLASS_WEIGHT_OPTIONS
        for c in C_OPTIONS:
            for class_weight in cls_w_options:
                logreg = LogisticRegression(
                    penalty=REG, C=c, solver="liblinear", class_weight=class_weight
                )
                logreg.fit(x_train, y_train)
                preds_val = logreg.predict(x_val)
                group_accs = np.array(
                    [(preds_val == y_val)[g_val == g].mean() for g in range(n_groups)]
                )
                worst_acc = np.min(group_accs)
                if i == 0:
                    worst_accs[c, class_weight[0], class_weight[1]] = worst_acc
                else:
                    worst_accs[c, class_weight[0], class_weight[1]] += worst_acc
    ks, vs = list(worst_accs.keys()), list(worst_accs.values())
    best_hypers = ks[np.argmax(vs)]
    return best_hypers


def dfr_on_validation_eval(
    c, w1, w2, all_embeddings, all_y, all_g, num_retrains=20, preprocess=True,
    balance_val=False, add_train=True,
):  # fmt: skip
    coefs, intercepts = [], []
    if preprocess:
        scaler = StandardScaler()
        scaler.fit(all_embeddings["train"])

    for i in range(num_retrains):  # noqa: B007 (official)
        x_val = all_embeddings["val"]
        y_val = all_y["val"]
        g_val = all_g["val"]
        n_groups = np.max(g_val) + 1
        g_idx = [np.where(g_val == g)[0] for g in range(n_groups)]
        min_g = np.min([len(g) for g in g_idx])
        for g in g_idx:
            np.random.shuffle(g)
        if balance_val:
            x_val = np.concatenate([x_val[g[:min_g]] for g in g_idx])
            y_val = np.concatenate([y_val[g[:min_g]] for g in g_idx])
            g_val = np.concatenate([g_val[g[:min_g]] for g in g_idx])

        n_train = len(x_val) if add_train else 0
        train_idx = np.arange(len(all_embeddings["train"]))
        np.random.shuffle(train_idx)
        train_idx = train_idx[:n_train]

        x_train = np.concatenate([all_embeddings["train"][train_idx], x_val])
        y_train = np.concatenate([all_y["train"][train_idx], y_val])
        g_train = np.concatenate([all_g["train"][train_idx], g_val])
        if preprocess:
            x_train = scaler.transform(x_train)

        logreg = LogisticRegression(
            penalty=REG, C=c, solver="liblinear", class_weight={0: w1, 1: w2}
        )
        logreg.fit(x_train, y_train)
        coefs.append(logreg.coef_)
        intercepts.append(logreg.intercept_)

    x_test = all_embeddings["test"]
    y_test = all_y["test"]
    g_test = all_g["test"]

    if preprocess:
        x_test = scaler.transform(x_test)
    logreg = LogisticRegression(penalty=REG, C=c, solver="liblinear", class_weight={0: w1, 1: w2})
    n_classes = np.max(y_train) + 1
    # the fit is only needed to set up logreg
    logreg.fit(x_train[:n_classes], np.arange(n_classes))
    logreg.coef_ = np.mean(coefs, axis=0)
    logreg.intercept_ = np.mean(intercepts, axis=0)
    preds_test = logreg.predict(x_test)
    preds_train = logreg.predict(x_train)
    n_groups = np.max(g_train) + 1
    test_accs = [(preds_test == y_test)[g_test == g].mean() for g in range(n_groups)]
    test_mean_acc = (preds_test == y_test).mean()
    train_accs = [(preds_train == y_train)[g_train == g].mean() for g in range(n_groups)]
    return test_accs, test_mean_acc, train_accs


# ---- the script's "DFR on validation" block ----------------------------------------------------
def official_dfr(all_embeddings, all_y, all_g, seed):
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an empty group: NaN
        c, w1, w2 = dfr_on_validation_tune(
            all_embeddings, all_y, all_g, balance_val=True, add_train=False
        )
        test_accs, test_mean_acc, _ = dfr_on_validation_eval(
            c, w1, w2, all_embeddings, all_y, all_g, balance_val=True, add_train=False
        )
    return c, np.array(test_accs), test_mean_acc


def features(n_classes, n_bias, sizes_val, seed, d=12):
    """Fixed synthetic features: class and bias directions, the bias correlated with the class
    in train and val (group sizes ``sizes_val`` per (y, b)), independent in test."""
    rng = np.random.RandomState(100 + seed)
    mu_y, mu_b = rng.randn(n_classes, d), 1.5 * rng.randn(n_bias, d)

    def split(sizes):
        y = np.repeat([k // n_bias for k in range(len(sizes))], sizes)
        b = np.repeat([k % n_bias for k in range(len(sizes))], sizes)
        x = (mu_y[y] * 0.6 + mu_b[b] + rng.randn(len(y), d)).astype(np.float32)
        return x, y, b

    x_val, y_val, b_val = split(sizes_val)
    x_tr, y_tr, b_tr = split([4 * s for s in sizes_val])
    x_te, y_te, b_te = split([60] * (n_classes * n_bias))
    emb = {"train": x_tr, "val": x_val, "test": x_te}
    ys = {"train": y_tr, "val": y_val, "test": y_te}
    gs = {
        "train": y_tr * n_bias + b_tr,
        "val": y_val * n_bias + b_val,
        "test": y_te * n_bias + b_te,
    }
    return emb, ys, gs, {"train": b_tr, "val": b_val, "test": b_te}


CASES = {
    # WaterBirds-like: 2 classes x 2 backgrounds, minority groups of 12 and 9 images.
    "binary": (2, 2, [70, 12, 9, 60]),
    # 3 classes x 3 bias values, every off-diagonal group small.
    "multiclass": (3, 3, [40, 8, 7, 9, 38, 8, 6, 8, 42]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dfr_chooses_the_official_c_and_gets_the_official_test_accuracies(case, monkeypatch):
    n_classes, n_bias, sizes = CASES[case]
    monkeypatch.setattr(sys.modules[__name__], "MULTICLASS", n_classes > 2)
    chosen = []
    for seed in range(4):
        emb, ys, gs, bs = features(n_classes, n_bias, sizes, seed)
        c, test_accs, test_mean_acc = official_dfr(emb, ys, gs, seed)
        head = fit_dfr(emb["val"], ys["val"], bs["val"], emb["train"], seed=seed)
        assert head.C == c
        pred = head.predict(emb["test"])
        correct = pred == ys["test"]
        # Exact: the same draws, the same liblinear fits, the same averaged head.
        assert correct.mean() == test_mean_acc
        mine = np.array([correct[gs["test"] == g].mean() for g in range(n_classes * n_bias)])
        np.testing.assert_array_equal(mine, test_accs)
        assert head.refits == REFITS and head.per_group == min(sizes)
        chosen.append(c)
    # The tuning matters on these features: not every seed keeps the first C of the grid.
    assert set(chosen) != {C_GRID[0]}, chosen


def test_l1_ratio_one_is_the_official_penalty_l1():
    rng = np.random.RandomState(0)
    x, y = rng.randn(200, 6), (rng.rand(200) > 0.5).astype(int)
    ours = SkLogisticRegression(l1_ratio=1.0, C=0.3, solver="liblinear", random_state=1).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # penalty is deprecated (FutureWarning, UserWarning)
        official = SkLogisticRegression(
            penalty="l1", C=0.3, solver="liblinear", random_state=1, class_weight={0: 1.0, 1: 1.0}
        ).fit(x, y)
    np.testing.assert_array_equal(ours.coef_, official.coef_)
    np.testing.assert_array_equal(ours.intercept_, official.intercept_)


def test_the_folded_linear_layer_predicts_what_the_head_predicts():
    for n_classes, n_bias, sizes in CASES.values():
        emb, ys, _, bs = features(n_classes, n_bias, sizes, seed=0)
        head = fit_dfr(emb["val"], ys["val"], bs["val"], emb["train"], seed=0)
        w, b = head.linear()
        logits = emb["test"] @ w.numpy().T + b.numpy()
        assert (logits.argmax(1) == head.predict(emb["test"])).mean() > 0.99


def test_group_codes_are_consecutive_in_target_bias_order():
    y = np.array([1, 0, 1, 0, 2])
    b = np.array([3, 3, 0, 0, 3])
    # present pairs sorted: (0,0) (0,3) (1,0) (1,3) (2,3)
    np.testing.assert_array_equal(group_codes(y, b), [3, 1, 2, 0, 4])


def test_a_group_missing_from_the_fitted_half_is_a_clear_error():
    emb, ys, _, bs = features(2, 2, [70, 1, 9, 60], seed=0)  # a group of one image
    with pytest.raises(DFRError, match="no image in the half DFR fits on"):
        # seeds alternate which half holds the lone image; one of the first few misses it
        for seed in range(8):
            fit_dfr(emb["val"], ys["val"], bs["val"], emb["train"], seed=seed)
    emb, ys, _, bs = features(2, 2, [30, 30, 1, 1], seed=0)  # class 1: two images
    messages = set()
    for seed in range(16):  # seeds where both class-1 images fall in the scoring half
        try:
            fit_dfr(emb["val"], ys["val"], bs["val"], emb["train"], seed=seed)
        except DFRError as err:
            messages.add(str(err).split(" (")[0])
    assert "the half of the validation split DFR fits on holds target class [0] only" in messages
    with pytest.raises(DFRError, match="single target class"):
        fit_dfr(emb["val"][:50], np.zeros(50), bs["val"][:50], emb["train"])


def test_a_tie_in_the_c_tuning_is_recorded_and_goes_to_the_larger_c():
    """Features that separate the target perfectly: several Cs score worst-group accuracy 1 on
    the scoring half, so the grid does not decide; the record says so and names the rule."""
    from debias.audit.dfr import TIE_RULE, tied

    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 80)
    b = np.tile([0, 1], 80)
    X = np.c_[10.0 * (2 * y - 1), rng.randn(160, 3)]  # the target, far apart; noise
    head = fit_dfr(X, y, b, X, seed=0, refits=3)
    rec = head.record()
    perfect = [c for c, v in head.tuning.items() if v == 1.0]  # the strongest L1 zeroes all
    assert len(perfect) > 1 and perfect[0] == C_GRID[0] == 1.0
    assert rec["C"] == 1.0 and rec["refits"] == 3
    assert rec["C_tied"] == [f"{c:g}" for c in perfect] and rec["tie_rule"] == TIE_RULE
    # by hand: one best score, no tie; NaN scores (a group absent) tie nothing
    assert tied({1.0: 0.5, 0.7: 0.75, 0.3: 0.75}) == [0.7, 0.3]
    assert tied({1.0: float("nan"), 0.7: float("nan")}) == []
