"""The per-epoch validation read-out (``represent_every``, debias.train.readout): its values, the
epochs it runs after, and that it reads the validation split only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_represent import _binary_digits, _features, quiet, tiny

from debias.audit.dfr import fit_dfr
from debias.data import registry
from debias.train import TrainConfig, train
from debias.train.loop import Trainer, load_trained
from debias.train.readout import PREFIX, cross_fit_predictions, halves, val_readout


@pytest.fixture
def binary_digits():
    """test_represent's two-colour digits, whose validation split DFR can balance."""
    registry.register_dataset(
        "binary-digits", _binary_digits, options={"rho": None}, colour_bias=True, replace=True
    )
    yield "binary-digits"


def test_halves_are_disjoint_cover_every_row_and_are_seeded():
    a, b = halves(11, seed=3)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))
    assert len(a) == 5 and len(b) == 6 and not set(a) & set(b)
    assert np.array_equal(a, halves(11, seed=3)[0]) and not np.array_equal(a, halves(11, 4)[0])


@pytest.mark.parametrize("encodes", ["target", "bias"])
def test_readout_is_high_when_the_features_hold_the_target_and_low_when_only_the_bias(encodes):
    f = _features(encodes, 40, seed=1)  # 4 classes x 4 bias values, 40 images per group
    row = val_readout(f.Z, f.targets, f.bias, f.aligned_groups, seed=0, refits=2)
    assert set(row) == {f"{PREFIX}{m}" for m in ("accuracy", "unbiased_accuracy",
                                                  "worst_group_accuracy")}  # fmt: skip
    if encodes == "target":
        assert row[f"{PREFIX}unbiased_accuracy"] > 0.95
        assert row[f"{PREFIX}worst_group_accuracy"] > 0.85
    else:  # chance is 0.25
        assert row[f"{PREFIX}unbiased_accuracy"] < 0.45


def test_each_half_is_predicted_by_a_head_fitted_on_the_other_half():
    f = _features("target", 30, seed=2)
    f.Z[:] += np.random.RandomState(5).randn(*f.Z.shape) * 3  # room for mistakes
    pred = cross_fit_predictions(f.Z, f.targets, f.bias, seed=1, refits=2)
    a, b = halves(len(f.targets), seed=1)
    head_a = fit_dfr(f.Z[a], f.targets[a], f.bias[a], f.Z[a], seed=1, refits=2)
    head_b = fit_dfr(f.Z[b], f.targets[b], f.bias[b], f.Z[b], seed=1, refits=2)
    assert np.array_equal(pred[b], head_a.predict(f.Z[b]))
    assert np.array_equal(pred[a], head_b.predict(f.Z[a]))
    row = val_readout(f.Z, f.targets, f.bias, f.aligned_groups, seed=1, refits=2)
    assert row[f"{PREFIX}accuracy"] == pytest.approx(float(np.mean(pred == f.targets)))
    assert 0.5 < row[f"{PREFIX}accuracy"] < 1.0


def test_a_validation_split_too_small_to_balance_is_recorded_as_skipped():
    f = _features("target", 1, seed=0)  # one image per group: a half misses groups
    row = val_readout(f.Z, f.targets, f.bias, f.aligned_groups, seed=0, refits=1)
    assert (
        list(row) == [f"{PREFIX}skipped"]
        and "use a larger validation split" in row[f"{PREFIX}skipped"]
    )


def test_a_run_records_the_readout_on_the_encoders_epochs_and_its_values(tmp_path, binary_digits):
    kw = dict(method="contex", epochs=3, linear_epochs=2, represent_every=2, represent_refits=2)
    train(tiny(tmp_path / "r", binary_digits, **kw), log=quiet)
    h = pd.read_csv(tmp_path / "r" / "history.csv")
    key = f"{PREFIX}unbiased_accuracy"
    # pretraining epochs 2 (every 2nd) and 3 (the stage's last); none in the linear stage
    assert h[key].notna().tolist() == [False, True, True, False, False]
    assert h["stage"].tolist() == ["pretrain"] * 3 + ["linear"] * 2
    # the last pretraining epoch's read-out is that of the finished encoder's val features
    model, splits, cfg = load_trained(tmp_path / "r", device="cpu")
    val = splits["val"]
    with torch.no_grad():
        z = model.features(val.normalize(val.images)).numpy()
    want = val_readout(z, val.targets.numpy(), val.bias.numpy(), val.aligned_groups, seed=0,
                       refits=2)  # fmt: skip
    for m in ("accuracy", "unbiased_accuracy", "worst_group_accuracy"):
        assert h[f"{PREFIX}{m}"].iloc[2] == pytest.approx(want[f"{PREFIX}{m}"], abs=1e-9)


class _Untouchable:
    """A split that fails the test when anything of it is read."""

    def __getattr__(self, name):
        raise AssertionError(f"the read-out read the test split ({name})")

    def __len__(self):
        raise AssertionError("the read-out read the test split (len)")


def test_the_readout_reads_the_validation_split_only(tmp_path, binary_digits):
    cfg = tiny(tmp_path / "r", binary_digits, method="contex", epochs=1, represent_every=1)
    trainer = Trainer(cfg, log=quiet)
    trainer.load_data()
    trainer.build()
    trainer.enter_stage(0)
    for name in trainer.eval_splits:
        if name != "val":
            trainer.splits[name] = _Untouchable()
    row = trainer.readout_row(trainer.stages[0], 0)
    assert 0.0 <= row[f"{PREFIX}unbiased_accuracy"] <= 1.0


def test_represent_every_is_a_non_negative_integer_and_not_part_of_the_runs_identity():
    with pytest.raises(ValueError, match="represent_every"):
        TrainConfig(out="x", rho=0.99, represent_every=-1)
    from debias.train.config import RUNTIME_FIELDS

    assert "represent_every" in RUNTIME_FIELDS  # a run resumed with another value is the same run
