"""Waterbirds in the official layout: a small synthetic tree, the integrity checks, the adjusted
average, and a toy training run with a pretrained torchvision encoder (weights file built in a
temporary TORCH_HOME; nothing is downloaded)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from debias.data.registry import load_splits
from debias.data.waterbirds import (
    COLUMNS,
    EXPECTED_COUNTS,
    FOLDER,
    Waterbirds,
    check_counts,
    write_synthetic_release,
)
from debias.metrics import group_report
from debias.metrics.groups import adjusted_accuracy

SMALL = {
    "train": {(0, 0): 9, (0, 1): 2, (1, 0): 1, (1, 1): 4},
    "val": {(0, 0): 3, (0, 1): 3, (1, 0): 2, (1, 1): 2},
    "test": {(0, 0): 4, (0, 1): 4, (1, 0): 3, (1, 1): 3},
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("wb")
    write_synthetic_release(root, SMALL, size=24)
    return root


def test_synthetic_tree_loads_with_official_labels(tree, tmp_path):
    splits = load_splits(
        "waterbirds", root=str(tree), image_size=16, official_counts=False,
        cache_dir=None, data_seed=0,
    )  # fmt: skip
    assert {s: len(d) for s, d in splits.items()} == {"train": 16, "val": 10, "test": 14}
    train = splits["train"]
    counts = {(int(r.y), int(r.b)): int(r.n) for r in train.group_counts().itertuples()}
    assert counts == SMALL["train"]
    assert train.class_names == ("landbird", "waterbird")
    assert train.bias_names == ("land", "water")
    assert train.aligned_groups == ((0, 0), (1, 1))
    assert train.groups.tolist() == (2 * train.targets + train.bias).tolist()
    assert train.images.shape[1:] == (3, 16, 16)
    # the label is in the image: the centre square is brighter for waterbirds (y = 1)
    centre = train.images[:, :, 6:10, 6:10].float().mean((1, 2, 3))
    assert centre[train.targets == 1].min() > centre[train.targets == 0].max()
    # SubpopBench's layout (root/waterbirds/<release>) is found as well
    shutil.copytree(tree / FOLDER, tmp_path / "waterbirds" / FOLDER)
    ds = Waterbirds(tmp_path, "test", image_size=16, official_counts=False)
    assert len(ds) == 14


def test_counts_checked_by_default(tree):
    with pytest.raises(ValueError) as err:
        Waterbirds(tree, "train", image_size=16)
    text = str(err.value)
    assert "\n" not in text and "does not match the official Waterbirds release" in text
    assert "train (y=1, place=0) 1 (expected 56)" in text
    assert "official_counts=False" in text


def _official_table() -> pd.DataFrame:
    rows = []
    for code, split in enumerate(EXPECTED_COUNTS):
        for (y, place), n in EXPECTED_COUNTS[split].items():
            for _ in range(n):
                i = len(rows) + 1
                rows.append((i, f"x/{i}.jpg", y, code, place, f"p/{i}.jpg"))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(str)


def test_official_counts_accept_the_release_and_reject_one_row_less(tmp_path):
    table = _official_table()
    assert len(table) == 4795 + 1199 + 5794
    check_counts(table, "metadata.csv")  # the release's counts pass
    # the full table without its images: past the count check, the missing files are reported
    folder = tmp_path / FOLDER
    folder.mkdir()
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(FileNotFoundError, match="11788 of 11788 image files do not exist"):
        Waterbirds(tmp_path, "train")
    short = table.drop(index=int(table.index[(table.y == "1") & (table.place == "0")][0]))
    with pytest.raises(ValueError, match=r"train \(y=1, place=0\) 55 \(expected 56\)"):
        check_counts(short, "metadata.csv")


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"Waterbirds not found: looked for .*{FOLDER}"):
        Waterbirds(tmp_path, "train")
    folder = tmp_path / FOLDER
    folder.mkdir()
    pd.DataFrame({"img_filename": ["a.jpg"], "y": [0], "split": [0]}).to_csv(
        folder / "metadata.csv", index=False
    )
    with pytest.raises(ValueError, match=r"missing column\(s\) \['img_id', 'place'"):
        Waterbirds(tmp_path, "train")


def test_adjusted_average_weights_test_groups_by_training_frequencies():
    # test accuracies 1.0 (0,0), 0.5 (0,1), 0.0 (1,0), 1.0 (1,1); train counts 3498/184/56/1057
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    b = [0, 0, 1, 1, 0, 0, 1, 1]
    p = [0, 0, 0, 1, 0, 0, 1, 1]
    w = EXPECTED_COUNTS["train"]
    expected = (3498 * 1.0 + 184 * 0.5 + 56 * 0.0 + 1057 * 1.0) / 4795
    assert adjusted_accuracy(y, p, b, w) == pytest.approx(expected)
    rep = group_report(y, p, b, aligned=[(0, 0), (1, 1)], group_weights=w)
    assert rep.to_dict()["adjusted_accuracy"] == pytest.approx(expected)
    assert rep.unbiased_accuracy == pytest.approx(0.625)  # the plain group mean differs
    assert "adjusted_accuracy" not in group_report(y, p, b).to_dict()


def test_toy_run_pretrained_encoder_on_the_synthetic_tree(tree, tmp_path, monkeypatch):
    """`debias train --model tv_resnet18 --pretrained IMAGENET1K_V1 --dataset waterbirds`
    at toy scale: weights from TORCH_HOME, their mean/std applied and recorded, the adjusted
    average beside worst-group, SGD with momentum."""
    import torchvision.models as tvm

    from debias.models.pretrained import expected_weights_file, resolve_weights
    from debias.train import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = expected_weights_file(resolve_weights("resnet18", "IMAGENET1K_V1"))
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(tvm.resnet18(weights=None).state_dict(), path)
    out = tmp_path / "run"
    cfg = {
        "dataset": "waterbirds", "root": str(tree), "image_size": 32,
        "data_options": {"official_counts": False}, "model": "tv_resnet18",
        "weights": "IMAGENET1K_V1", "optimizer": "sgd", "momentum": 0.9, "lr": 1e-3,
        "batch_size": 8, "epochs": 2, "select": "val/worst_group_accuracy",
        "device": "cpu", "progress": False, "represent": False, "out": str(out),
    }  # fmt: skip
    m = train(cfg, log=lambda *a, **k: None)
    pre = m["preprocessing"]
    assert pre["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and pre["crop"] == 224
    assert pre["mean"] == [0.485, 0.456, 0.406]
    assert pre["applied"] == {"stored": [32, 32], "input": [32, 32]}  # smaller than 224: no crop
    test = m["splits"]["test"]
    acc = {(g["y"], g["b"]): g["correct"] / g["n"] for g in test["groups"]}
    w = SMALL["train"]
    expected = sum(w[g] * acc[g] for g in acc) / sum(w[g] for g in acc)
    assert test["adjusted_accuracy"] == pytest.approx(expected)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["weights"] == "IMAGENET1K_V1"
