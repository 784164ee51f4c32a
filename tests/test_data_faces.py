"""UTKFace and CelebA loaders and the decode cache (PROTOCOLS §2-3).

The real copies (``$DEBIAS_DATA/utkface``, ``$DEBIAS_DATA/celeba``) are decoded once per
module into a shared temporary cache; the cache itself and the error paths are tested on tiny
synthetic folders written into ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import debias.data.celeba as celeba_mod
from debias.data.cache import ImageDecodeError, cache_info, load_images
from debias.data.celeba import CelebA
from debias.data.registry import label_names
from debias.data.root import data_root
from debias.data.utkface import UTKFace, parse_utkface_name

OFF_PATTERN = {
    "14_0_0_2017011022340900.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_3_20170109150557335.jpg.chip.jpg",
}


def _real(name: str, probe: str) -> Path:
    root = data_root()
    if not (root / name / probe).exists():
        pytest.skip(f"real {name} copy not found under DEBIAS_DATA={root} ({root / name / probe})")
    return root


# -- real copies, decoded once ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("face-cache")


@pytest.fixture(scope="module")
def utk(cache):
    root = _real("utkface", "crop_part1")
    return {s: UTKFace(root, s, cache_dir=cache) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def utk_age(cache):
    return UTKFace(_real("utkface", "crop_part1"), "train", bias="age", cache_dir=cache)


@pytest.fixture(scope="module")
def celeba(cache):
    """Both protocols, 3 splits each, plus the warnings issued while building them."""
    root = _real("celeba", "list_attr_celeba.txt")
    celeba_mod._fallback_warned = False  # this fixture checks the once-per-process warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = {
            (p, s): CelebA(root, s, protocol=p, cache_dir=cache)
            for p in ("official", "biascon")
            for s in ("train", "val", "test")
        }
    out["warnings"] = [w for w in caught if "stratified-fallback" in str(w.message)]
    return out


def _utk_well_named(root: Path) -> list[str]:
    names = sorted(os.listdir(root / "utkface" / "crop_part1"))
    return [n for n in names if n.count("_") == 3 and len(n.split("_")[3].split(".")[0]) == 17]


def test_utkface_skips_off_pattern_names(utk):
    d = utk["train"]
    assert d.skipped == {"off-pattern name": 3}
    assert {Path(f).name for f in d.skipped_files} == OFF_PATTERN
    assert parse_utkface_name("14_0_0_2017011022340900.jpg.chip.jpg") is None
    assert parse_utkface_name("61_1_20170109142408075.jpg.chip.jpg") is None
    assert parse_utkface_name("25_1_3_20170116174525125.jpg.chip.jpg") == (25, 1, 3)
    assert parse_utkface_name("25_2_3_20170116174525125.jpg") is None  # gender must be 0/1
    assert parse_utkface_name("25_1_5_20170116174525125.jpg") is None  # race must be 0..4


def test_utkface_splits_disjoint_and_covering(utk):
    tr, va, te = (set(utk[s].files) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    info = utk["train"].split_info
    assert info["n_pool"] == 9777
    assert info["n_split"] == {"train": 7821, "val": 977, "test": 979}
    assert len(va) == 977 and len(te) == 979
    # Covering: every well-named file is in a split or is a minor image dropped by biasing.
    pool = {f"crop_part1/{n}" for n in _utk_well_named(data_root())}
    assert tr | va | te <= pool
    dropped = sum(info["n_minor_available"][i] - info["n_minor_wanted"][i] for i in (0, 1))
    assert len(pool - (tr | va | te)) == dropped
    assert all("/" in f and "\\" not in f for f in tr)


def test_utkface_labels_match_file_names(utk):
    for split in ("train", "test"):
        d = utk[split]
        for i in (0, 1, 7, len(d) // 2, len(d) - 1):
            age, gender, race = (int(v) for v in Path(d.files[i]).name.split("_")[:3])
            assert int(d.targets[i]) == gender
            assert int(d.bias[i]) == (0 if race == 0 else 1)
            assert int(d.ages[i]) == age and int(d.races[i]) == race
    assert utk["train"].aligned_groups == ((0, 0), (1, 1))
    assert (utk["train"].num_classes, utk["train"].num_bias) == (2, 2)


def test_utkface_train_keeps_int_tenth_of_major_as_minor(utk):
    d = utk["train"]
    info = d.split_info
    for i in (0, 1):
        n_major = int(((d.targets == i) & (d.bias == i)).sum())
        n_minor = int(((d.targets == 1 - i) & (d.bias == i)).sum())
        assert n_major == info["before"][f"y={i},b={i}"]  # every major image kept
        assert n_minor == int(0.1 * n_major)
    assert info["after"] == {"y=0,b=0": 1956, "y=0,b=1": 206, "y=1,b=0": 195, "y=1,b=1": 2063}
    assert info["minor_short"] == []
    # val/test keep their natural distribution
    for s in ("val", "test"):
        assert utk[s].split_info["before"] == utk[s].split_info["after"]
        assert utk[s].split_info["after"]["y=0,b=1"] > 0.25 * utk[s].split_info["after"]["y=1,b=1"]


def test_utkface_age_bias_drops_11_to_19(utk_age):
    d = utk_age
    names = _utk_well_named(data_root())
    teens = sum(11 <= int(n.split("_")[0]) <= 19 for n in names)
    assert d.skipped == {"off-pattern name": 3, "age 11-19 (bias=age)": teens}
    assert teens == 1077
    assert not bool(((d.ages >= 11) & (d.ages <= 19)).any())
    assert torch.equal(d.bias, (d.ages <= 10).long())
    assert d.split_info["n_pool"] == 9777 - teens
    for i in (0, 1):
        n_major = int(((d.targets == i) & (d.bias == i)).sum())
        assert int(((d.targets == 1 - i) & (d.bias == i)).sum()) == int(0.1 * n_major)


def test_utkface_images_match_their_files(utk):
    d = utk["val"]
    assert d.images.dtype == torch.uint8 and d.images.shape == (977, 3, 64, 64)
    assert d.cache_hit  # the train split of the fixture decoded the folder already
    for i in (0, 500):
        with Image.open(d.root / d.files[i]) as im:
            ref = np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR)).astype(float)
        ours = d.images[i].permute(1, 2, 0).numpy().astype(float)
        assert np.abs(ours - ref).mean() < 3.0  # a mismatched file would be ~40 off
    x, y, b = d[0]
    assert x.dtype == torch.float32 and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert (y, b) == (int(d.targets[0]), int(d.bias[0]))


def test_celeba_labels_match_attribute_file(celeba):
    d = celeba[("official", "train")]
    path = d.root / "list_attr_celeba.txt"
    raw = path.read_bytes().decode()
    lines = raw.split("\r\n")
    header = lines[1].split(" ")
    col_b, col_m = header.index("Blond_Hair"), header.index("Male")
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:] if ln}
    for i in (0, 3, 100, len(d) // 2, len(d) - 1):
        vals = rows[d.files[i]]
        assert int(d.targets[i]) == (1 if vals[col_b] == "1" else 0)
        assert int(d.bias[i]) == (1 if vals[col_m] == "1" else 0)
        assert d.attributes[i].tolist() == [1 if v == "1" else 0 for v in vals]
    assert torch.equal(d.groups, 2 * d.targets + d.bias)


def test_celeba_fallback_split_has_all_groups_and_warns_once(celeba):
    assert len(celeba["warnings"]) == 1
    assert "list_eval_partition.txt" in str(celeba["warnings"][0].message)
    files = {}
    for s in ("train", "val", "test"):
        d = celeba[("official", s)]
        assert d.split_source == "stratified-fallback"
        assert sorted(d.group_counts()["n"].gt(0).tolist()) == [True] * 4
        assert len(d.group_counts()) == 4
        files[s] = set(d.files)
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"])
    assert not (files["val"] & files["test"])
    assert len(files["train"] | files["val"] | files["test"]) == 10000
    # Blond_Hair/Male: aligned = (blond, female) and (non-blond, male), from the train pool
    assert celeba[("official", "test")].aligned_groups == ((0, 1), (1, 0))
    assert celeba[("official", "train")].split_info["after"]["y=1,b=1"] == 65


def test_celeba_biascon_keeps_2000_non_blond_women(celeba):
    tr, ref = celeba[("biascon", "train")], celeba[("official", "train")]
    assert int(((tr.targets == 0) & (tr.bias == 0)).sum()) == 2000
    assert tr.split_info["non_blond_women"] == {"available": 3530, "kept": 2000, "short": False}
    # every other training image is kept: the same fallback split as groupdro's train
    other = {f for f, g in zip(tr.files, tr.groups.tolist()) if g != 0}
    assert other == {f for f, g in zip(ref.files, ref.groups.tolist()) if g != 0}
    women = {f for f, g in zip(tr.files, tr.groups.tolist()) if g == 0}
    assert women <= set(ref.files)
    assert tr.aligned_groups == ((0, 1), (1, 0))
    assert celeba[("biascon", "test")].files == celeba[("official", "test")].files


def test_celeba_image_crop_and_shape(celeba):
    d = celeba[("official", "val")]
    assert d.images.dtype == torch.uint8 and d.images.shape == (1000, 3, 64, 64)
    with Image.open(d.root / "img_align_celeba" / d.files[10]) as im:
        w, h = im.size
        top = (h - w) // 2
        ref = im.convert("RGB").crop((0, top, w, top + w)).resize((64, 64), Image.BILINEAR)
    ours = d.images[10].permute(1, 2, 0).numpy().astype(float)
    assert np.abs(ours - np.asarray(ref).astype(float)).mean() < 3.0


def test_celeba_unknown_attribute_message():
    root = _real("celeba", "list_attr_celeba.txt")
    with pytest.raises(ValueError, match="unknown CelebA attribute 'blond_hair'") as err:
        CelebA(root, target="blond_hair")
    msg = str(err.value)
    assert "Did you mean 'Blond_Hair'" in msg and "Valid names:" in msg and "Wearing_Hat" in msg
    with pytest.raises(ValueError, match="protocol"):
        CelebA(root, protocol="jtt")


# -- synthetic folders ------------------------------------------------------------------------
def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    arr = np.clip(base + rng.integers(-20, 20, size=(size[1], size[0], 3)), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=95)


def _synthetic_utk(folder: Path) -> list[str]:
    """15 (male, White) and 5 (female, Black) faces, nested, plus an off-pattern file."""
    names = [f"{30 + k}_0_0_2017010{k % 10}000000000.jpg.chip.jpg" for k in range(15)]
    names += [f"{5 + k}_1_1_2017020{k}000000000.jpg.chip.jpg" for k in range(5)]
    rels = [f"part{k % 2}/deeper/{n}" for k, n in enumerate(names)]
    for k, rel in enumerate(rels):
        _jpeg(folder / rel, k)
    _jpeg(folder / "part0" / "not_a_face.jpg", 99)
    return rels


def test_cache_hit_then_rebuild_when_a_file_changes(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rels = _synthetic_utk(data / "utkface")
    first = UTKFace(data, "test", cache_dir=cache)
    assert not first.cache_hit and first.cache_path.parent == cache / "images"
    assert first.skipped == {"off-pattern name": 1}
    second = UTKFace(data, "test", cache_dir=cache)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert torch.equal(first.images, second.images) and first.files == second.files

    changed = data / "utkface" / first.files[0]
    _jpeg(changed, 1234)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))  # mtime surely differs
    third = UTKFace(data, "test", cache_dir=cache)
    assert not third.cache_hit and third.cache_path != first.cache_path
    assert not torch.equal(third.images[0], first.images[0])
    assert len(cache_info(cache)["entries"]) == 2
    assert all(e["name"] == "utkface" and e["n_images"] == 20 for e in cache_info(cache)["entries"])
    assert not any(p.suffix == ".tmp" for p in (cache / "images").iterdir())

    # The cache is keyed by the sorted file list: another caller order is still a hit.
    paths = [data / "utkface" / r for r in sorted(rels)]
    fwd = load_images(paths, 64, root=data / "utkface", name="utkface", cache_dir=cache)
    rev = load_images(paths[::-1], 64, root=data / "utkface", name="utkface", cache_dir=cache)
    assert fwd.cache_hit and rev.cache_hit
    assert torch.equal(rev.images, fwd.images.flip(0))
    with pytest.raises(ValueError, match="inside the dataset folder"):
        load_images(paths, 64, root=data, name="x", cache_dir=data / "utkface" / "c")


def test_truncated_cache_entry_is_rebuilt_with_a_warning_at_the_caller(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rels = _synthetic_utk(data / "utkface")
    paths = [data / "utkface" / r for r in rels]
    first = load_images(paths, 16, root=data / "utkface", name="utkface", cache_dir=cache)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ignoring unreadable image cache") as caught:
        again = load_images(paths, 16, root=data / "utkface", name="utkface", cache_dir=cache)
    assert caught[0].filename == __file__  # points at the caller of load_images
    assert not again.cache_hit and torch.equal(again.images, first.images)
    assert load_images(paths, 16, root=data / "utkface", name="utkface", cache_dir=cache).cache_hit


def test_utkface_synthetic_split_minor_short_and_resize(tmp_path):
    data = tmp_path / "data"
    _synthetic_utk(data / "utkface")
    parts = {
        s: UTKFace(data / "utkface", s, image_size=16, cache_dir=tmp_path / "c")
        for s in ("train", "val", "test")
    }
    assert [parts[s].split_info["n_split"][s] for s in parts] == [16, 2, 2]
    tr = parts["train"]
    assert 0 in tr.split_info["minor_short"]  # no (female, White) image exists at all
    assert tr.split_info["n_minor_available"][0] == 0 and tr.split_info["n_minor_wanted"][0] == 1
    assert tr.images.shape[1:] == (3, 16, 16)
    assert tr.class_names == ("male", "female") and tr.bias_names == ("White", "non-White")
    assert label_names("utkface", {"bias": "race"}) == (tr.class_names, tr.bias_names)
    same = UTKFace(data, "train", image_size=16, cache_dir=tmp_path / "c")
    other = UTKFace(data, "train", image_size=16, seed=1, cache_dir=tmp_path / "c")
    assert same.files == tr.files and other.files != tr.files


def test_utkface_skipped_files_warning_once_for_all_splits(tmp_path):
    """The three splits scan the same folder: its off-pattern file is reported once, even with
    every warning shown (a notebook's or pytest's filter), and group_counts() names the groups."""

    data = tmp_path / "data"
    _synthetic_utk(data / "utkface")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = [
            UTKFace(data, s, image_size=16, cache_dir=tmp_path / "c")
            for s in ("train", "val", "test")
        ]
    skipped = [w for w in caught if "skipped 1 file(s)" in str(w.message)]
    assert len(skipped) == 1 and all(p.skipped == {"off-pattern name": 1} for p in parts)
    counts = parts[0].group_counts()
    assert list(counts.columns) == ["y", "b", "target", "bias", "n", "aligned"]
    male_white = counts[(counts["target"] == "male") & (counts["bias"] == "White")]
    assert male_white[["y", "b"]].values.tolist() == [[0, 0]] and bool(
        male_white["aligned"].iloc[0]
    )


def test_utkface_bad_arguments_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="split"):
        UTKFace(tmp_path, "validation")
    with pytest.raises(ValueError, match="bias"):
        UTKFace(tmp_path, bias="gender")
    with pytest.raises(FileNotFoundError, match="no UTKFace images"):
        UTKFace(tmp_path, cache_dir=tmp_path / "c")


def test_unreadable_image_raises_or_is_skipped(tmp_path):
    data = tmp_path / "data"
    _synthetic_utk(data / "utkface")
    bad = data / "utkface" / "40_0_0_20170301000000000.jpg.chip.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match="40_0_0_20170301000000000"):
        UTKFace(data, cache_dir=tmp_path / "c")
    d = UTKFace(data, "test", cache_dir=tmp_path / "c", on_error="skip")
    assert d.skipped == {"off-pattern name": 1, "unreadable image": 1}
    assert d.split_info["n_pool"] == 20


def _synthetic_celeba(folder: Path, partitions: list[int], missing: set[int] = frozenset()):
    """24 images, non-square 20x24; labels cycle through the four (Blond_Hair, Male) groups."""
    names = ["5_o_Clock_Shadow", "Blond_Hair", "Male", "Young"]
    lines = [str(len(partitions)), " ".join(names) + " "]
    part_lines = []
    for k, p in enumerate(partitions):
        fname = f"{k + 1:06d}.jpg"
        blond, male = (k // 2) % 2, k % 2
        vals = [-1, 1 if blond else -1, 1 if male else -1, 1]
        lines.append(fname + " " + " ".join(f"{v:2d}" for v in vals))
        part_lines.append(f"{fname} {p}")
        if k not in missing:
            _jpeg(folder / "img_align_celeba" / fname, k, size=(20, 24))
    (folder / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (folder / "list_eval_partition.txt").write_bytes(("\r\n".join(part_lines) + "\r\n").encode())


def test_celeba_official_partitions_on_synthetic_copy(tmp_path):
    folder = tmp_path / "data" / "celeba"
    _synthetic_celeba(folder, [0] * 12 + [1] * 6 + [2] * 6, missing={0})
    g = {
        s: CelebA(tmp_path / "data", s, cache_dir=tmp_path / "c") for s in ("train", "val", "test")
    }
    assert all(d.split_source == "official" for d in g.values())
    assert [len(g[s]) for s in ("train", "val", "test")] == [11, 6, 6]  # 000001 is missing
    assert g["train"].n_listed == 24 and g["train"].n_present == 23
    assert g["val"].partition.tolist() == [1] * 6 and g["test"].partition.tolist() == [2] * 6
    assert g["train"].images.shape == (11, 3, 64, 64)
    assert g["test"].class_names == ("not Blond_Hair", "Blond_Hair")
    assert g["test"].bias_names == ("female", "male")  # Male = 0 is female
    assert label_names("celeba", {}) == (g["test"].class_names, g["test"].bias_names)
    # groups cycle (y, b) = (0,0), (0,1), (1,0), (1,1) by image index
    k = [int(f[:6]) - 1 for f in g["test"].files]
    assert g["test"].groups.tolist() == [2 * ((i // 2) % 2) + i % 2 for i in k]
    # BiasCon: test is the official valid partition, val a held-out part of train
    b = {
        s: CelebA(folder, s, protocol="biascon", cache_dir=tmp_path / "c") for s in ("val", "test")
    }
    assert b["test"].files == g["val"].files
    assert set(b["val"].files) <= {f"{i:06d}.jpg" for i in range(2, 13)}
    assert g["train"].split_info["copy"] == "partial"


def test_celeba_full_copy_must_carry_the_official_partition():
    from debias.data.celeba import FULL_IMAGES, check_full_partition

    official = torch.tensor([0] * 162_770 + [1] * 19_867 + [2] * 19_962)
    assert len(official) == FULL_IMAGES
    check_full_partition(official, "list_eval_partition.txt")
    wrong = official.clone()
    wrong[-1] = 1  # one test image moved to valid
    with pytest.raises(ValueError, match="162,770 / 19,868 / 19,961 train/valid/test"):
        check_full_partition(wrong, "list_eval_partition.txt")


def test_celeba_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt") as err:
        CelebA(tmp_path)
    assert str(tmp_path / "celeba" / "list_attr_celeba.txt") in str(err.value)
    folder = tmp_path / "celeba"
    _synthetic_celeba(folder, [0] * 8)
    (folder / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning, tested on the real copy
        with pytest.raises(ImageDecodeError, match="000003.jpg"):
            CelebA(tmp_path, cache_dir=tmp_path / "c")
        d = CelebA(tmp_path, "train", cache_dir=tmp_path / "c", on_error="skip")
    assert d.split_source == "stratified-fallback"
    assert d.skipped == {"unreadable image": 1} and d.skipped_files == ["000003.jpg"]
    assert len(d) == 7 and "000003.jpg" not in d.files  # groups of 2: all go to train
    for f in folder.glob("img_align_celeba/*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="none of the 8 images"):
        CelebA(tmp_path, cache_dir=tmp_path / "c")


def test_minor_count_and_aligned_rule_arithmetic():
    from debias.data.groups import aligned_from_counts as _aligned_from_pool
    from debias.data.utkface import _minor_count

    # exact decimals: float 1 - 0.9 = 0.0999... would give 99 here
    assert _minor_count(0.9, 1000) == 100 and _minor_count(0.9, 1956) == 195
    assert _minor_count(0.95, 40) == 2 and _minor_count(1.0, 50) == 0
    # CelebA-like pool: most women are not blond, yet (blond, female) is the aligned pair
    y = torch.tensor([0] * 44 + [0] * 41 + [1] * 14 + [1] * 1)
    b = torch.tensor([0] * 44 + [1] * 41 + [0] * 14 + [1] * 1)
    assert sorted(_aligned_from_pool(y, b)) == [(0, 1), (1, 0)]
    # independent labels: diagonal fallback
    y, b = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert sorted(_aligned_from_pool(y, b)) == [(0, 0), (1, 1)]


def test_cli_on_error_skip_trains_past_an_unreadable_face_and_records_it(tmp_path, capsys):
    from debias.cli import main

    data = tmp_path / "data"
    _synthetic_utk(data / "utkface")
    (data / "utkface" / "40_0_0_20170301000000000.jpg.chip.jpg").write_bytes(b"not a jpeg")
    common = [
        "train",
        "--dataset",
        "utkface",
        "--root",
        str(data),
        "--model",
        "smallconvnet",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    rc = main([*common, "--out", str(tmp_path / "raise")])
    err = capsys.readouterr().err
    assert rc == 2 and "--on-error skip" in err and "40_0_0_20170301000000000" in err
    rc = main([*common, "--on-error", "skip", "--out", str(tmp_path / "skip")])
    assert rc == 0
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["config"]["on_error"] == "skip"
    assert metrics["data"]["train"]["skipped"] == {"off-pattern name": 1, "unreadable image": 1}
