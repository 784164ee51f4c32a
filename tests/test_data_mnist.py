"""MNIST loading, exact Biased-MNIST (PROTOCOLS §1) and the scikit-learn digits fallback.

Real MNIST is read from ``$DEBIAS_DATA/mnist``; the tests that need it skip, with the reason,
when that folder lacks the files.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MNIST_DIR, needs_mnist

from debias.data import (
    PALETTES,
    ColouredMNIST,
    biased_mnist,
    colour_bias,
    digits_splits,
    load_digits_28,
    load_mnist,
)
from debias.data.base import TensorImageDataset
from debias.data.biased_mnist import SPLITS, assign_colours, validation_rows
from debias.data.mnist import IDXFormatError
from debias.data.registry import label_names

REPO = Path(__file__).resolve().parents[1]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CONFLICTING = {0.999: 63, 0.997: 184, 0.995: 305, 0.99: 606, 0.95: 3006, 0.9: 6006}


@pytest.fixture(scope="module")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("train")


@pytest.fixture(scope="module")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("test")


def _raw_idx(name: str) -> bytes:
    d = MNIST_DIR
    if (d / name).is_file():
        return (d / name).read_bytes()
    return gzip.decompress((d / f"{name}.gz").read_bytes())


def _white(images: torch.Tensor) -> torch.Tensor:
    """Bool [N, H, W]: pixels that are (255, 255, 255). No palette colour is all-255."""
    return (images == 255).all(dim=1)


# -- palettes ---------------------------------------------------------------------------------
def test_palettes_are_rebias_and_fairkl_exactly():
    assert PALETTES["rebias"] == (
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (225, 225, 0),
        (225, 0, 225),
        (0, 255, 255),
        (255, 128, 0),
        (255, 0, 128),
        (128, 0, 255),
        (128, 128, 128),
    )
    assert PALETTES["rebias"][3] == (225, 225, 0) and PALETTES["rebias"][4] == (225, 0, 225)
    assert PALETTES["fairkl"][:9] == PALETTES["rebias"][:9]
    assert PALETTES["fairkl"][9] == (50, 255, 128)
    # No background colour may equal the white digit, or binarisation would be ambiguous.
    for pal in PALETTES.values():
        assert (255, 255, 255) not in pal and len(set(pal)) == 10


# -- load_mnist -------------------------------------------------------------------------------
@needs_mnist
def test_load_mnist_shapes_dtypes_and_label_counts(mnist_train, mnist_test):
    x, y = mnist_train
    assert x.shape == (60_000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60_000,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    xt, yt = mnist_test
    assert xt.shape == (10_000, 28, 28) and torch.bincount(yt).tolist() == TEST_COUNTS
    # First training digit of MNIST is a 5, first test digit a 7 (well-known).
    assert int(y[0]) == 5 and int(yt[0]) == 7
    # The parse agrees with a direct read of the IDX bytes.
    raw = _raw_idx("t10k-images-idx3-ubyte")
    assert torch.equal(
        xt, torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(-1, 28, 28)
    )


@needs_mnist
def test_load_mnist_returns_copies_not_the_cache():
    x, y = load_mnist("test")
    x[0].fill_(123)
    y[0] = 9
    x2, y2 = load_mnist("test")
    assert int(y2[0]) == 7 and not torch.equal(x2[0], x[0])


def test_load_mnist_bad_split():
    with pytest.raises(ValueError, match=r"'foo'.*'train', 'test'"):
        load_mnist("foo")


def test_load_mnist_missing_files_lists_every_path(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train", root=tmp_path)
    msg = str(err.value)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        for folder in (tmp_path / "mnist", tmp_path / "MNIST" / "raw"):
            assert str(folder / name) in msg
            assert str(folder / f"{name}.gz") in msg
    assert "DEBIAS_DATA" in msg and "download=True" in msg
    # How to point the CLI at the data: the shell variable (which `make demo` sets only for
    # itself) or the option.
    assert "`export DEBIAS_DATA=/path/to/data`" in msg and "--root DIR" in msg


def test_load_mnist_download_failure_is_file_not_found(tmp_path, monkeypatch):
    calls = []

    def offline(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("Error downloading t10k-images-idx3-ubyte.gz (no network)")

    # A stand-in torchvision: importing the real one costs seconds and must not hit the network.
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=offline))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(FileNotFoundError, match="no network"):
        load_mnist("test", root=tmp_path, download=True)
    assert calls == [{"root": str(tmp_path), "train": False, "download": True}]


@needs_mnist
def test_load_mnist_torchvision_layout_uncompressed(tmp_path, mnist_test):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(_raw_idx(name))
    x, y = load_mnist("test", root=tmp_path)
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])


def _labels_file(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir(exist_ok=True)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(_raw_idx("t10k-labels-idx1-ubyte"))


@needs_mnist
def test_truncated_idx_names_file_and_expected_size(tmp_path):
    _labels_file(tmp_path)
    bad = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    bad.write_bytes(_raw_idx("t10k-images-idx3-ubyte")[:1234])
    with pytest.raises(ValueError) as err:
        load_mnist("test", root=tmp_path)
    assert isinstance(err.value, IDXFormatError)
    msg = str(err.value)
    assert str(bad.resolve()) in msg and "expected 7840016 bytes" in msg and "found 1234" in msg


@needs_mnist
def test_truncated_gzip_names_file(tmp_path):
    _labels_file(tmp_path)
    bad = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    good = (MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXFormatError, match="t10k-images-idx3-ubyte.gz.*gzip"):
        load_mnist("test", root=tmp_path)


@needs_mnist
def test_wrong_magic_and_count_mismatch(tmp_path):
    _labels_file(tmp_path)
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    # A labels file where the images should be: magic 0x801 instead of 0x803.
    images.write_bytes(_raw_idx("t10k-labels-idx1-ubyte"))
    with pytest.raises(IDXFormatError, match=r"magic number 0x00000801, expected 0x00000803"):
        load_mnist("test", root=tmp_path)
    # Test images with a 3-image header and body: a valid file but the wrong count.
    raw = _raw_idx("t10k-images-idx3-ubyte")
    images.write_bytes(raw[:4] + (3).to_bytes(4, "big") + raw[8:16] + raw[16 : 16 + 3 * 784])
    with pytest.raises(IDXFormatError, match="3 images but .* 10000 labels"):
        load_mnist("test", root=tmp_path)


# -- colour assignment: exact counts, and equal to the ReBias code --------------------------
@needs_mnist
@pytest.mark.parametrize("rho", sorted(CONFLICTING))
def test_conflicting_counts_exact(mnist_train, rho):
    y = mnist_train[1].numpy()
    colours = assign_colours(y, rho, seed=0)
    assert int((colours != y).sum()) == CONFLICTING[rho]
    aligned_per_class = np.bincount(y[colours == y], minlength=10).tolist()
    assert aligned_per_class == [int(n * rho) for n in TRAIN_COUNTS]


@needs_mnist
def test_biased_mnist_train_without_val_is_all_60k():
    ds = biased_mnist("train", 0.99, seed=3, val_size=0)
    assert len(ds) == 60_000 and torch.equal(ds.source_index, torch.arange(60_000))
    assert int((~ds.aligned).sum()) == CONFLICTING[0.99]
    assert torch.equal(ds.bias, torch.from_numpy(assign_colours(ds.targets.numpy(), 0.99, 3)))


def _rebias_bias_labels(targets: np.ndarray, rho: float, seed: int) -> np.ndarray:
    """ReBias' ``_update_bias_indices`` transcribed (global numpy RNG, torch.split), n_conf=9."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        targets_t = torch.from_numpy(targets)
        bias_indices = {label: torch.LongTensor() for label in range(10)}
        for label in range(10):
            indices = np.where((targets_t == label).numpy())[0]
            np.random.shuffle(indices)
            indices = torch.LongTensor(indices)
            n_samples = len(indices)
            n_corr = int(n_samples * rho)
            n_decorr = int(np.ceil((n_samples - n_corr) / 9))
            bias_indices[label] = torch.cat([bias_indices[label], indices[:n_corr]])
            decorrelated = torch.split(indices[n_corr:], n_decorr)
            other = [lab % 10 for lab in range(label + 1, label + 10)]
            np.random.shuffle(other)
            for idx, chunk in enumerate(decorrelated):
                bias_indices[other[idx]] = torch.cat([bias_indices[other[idx]], chunk])
    finally:
        np.random.set_state(state)
    out = np.full(len(targets), -1)
    for colour, rows in bias_indices.items():
        out[rows.numpy()] = colour
    return out


@needs_mnist
@pytest.mark.parametrize(("rho", "seed"), [(0.99, 0), (0.997, 1), (0.9, 7), (0.1, 3)])
def test_colours_equal_rebias_code(mnist_train, rho, seed):
    y = mnist_train[1].numpy()
    expected = _rebias_bias_labels(y, rho, seed)
    assert (expected >= 0).all()
    assert np.array_equal(assign_colours(y, rho, seed), expected)
    ds = colour_bias(*mnist_train, rho, seed=seed)
    assert np.array_equal(ds.colours.numpy(), expected)


@needs_mnist
def test_high_rho_uses_few_other_colours(mnist_train):
    # rho .999, class 0: 5923 - 5917 = 6 conflicting, chunk ceil(6/9) = 1 -> 6 distinct colours.
    ds = colour_bias(*mnist_train, 0.999, seed=0)
    conflicting0 = ds.bias[(ds.targets == 0) & ~ds.aligned]
    assert len(conflicting0) == 6 and len(set(conflicting0.tolist())) == 6
    # rho .99, class 1: 6742 - 6674 = 68 conflicting, chunks of 8 -> 8 x 8 + 4.
    ds = colour_bias(*mnist_train, 0.99, seed=0)
    counts = torch.bincount(ds.bias[(ds.targets == 1) & ~ds.aligned], minlength=10)
    assert sorted(counts[counts > 0].tolist()) == [4] + [8] * 8 and counts[1] == 0


# -- images -----------------------------------------------------------------------------------
@needs_mnist
@pytest.mark.parametrize("palette", ["rebias", "fairkl"])
def test_binarisation_white_digit_on_palette_background(mnist_test, palette):
    ds = biased_mnist("test", palette=palette)
    assert ds.images.shape == (10_000, 3, 28, 28) and ds.images.dtype == torch.uint8
    fg = mnist_test[0][ds.source_index] > 0
    assert torch.equal(_white(ds.images), fg)
    pal = torch.tensor(PALETTES[palette], dtype=torch.uint8)
    white = torch.tensor(255, dtype=torch.uint8)
    expected = torch.where(fg.unsqueeze(1), white, pal[ds.bias][:, :, None, None])
    assert torch.equal(ds.images, expected)
    if palette == "fairkl":
        row = int(torch.nonzero(ds.bias == 9)[0])
        assert ds.images[row, :, 0, 0].tolist() == [50, 255, 128]


@needs_mnist
def test_aligned_flag_and_dataset_metadata():
    ds = biased_mnist("test", seed=1)
    assert isinstance(ds, TensorImageDataset) and isinstance(ds, ColouredMNIST)
    assert ds.name == "biased-mnist" and ds.split == "test"
    assert ds.aligned_groups == tuple((c, c) for c in range(10))
    assert ds.num_classes == 10 and ds.num_bias == 10
    assert ds.mean == (0.5, 0.5, 0.5) and ds.std == (0.5, 0.5, 0.5)
    assert torch.equal(ds.aligned, ds.bias == ds.targets)
    assert ds.colours is ds.bias and ds.rho == 0.1 and ds.seed == 1 and ds.palette == "rebias"
    assert ds.class_names == tuple("0123456789")
    assert ds.bias_names[:3] == ("red", "green", "blue") and ds.bias_names[9] == "grey"
    assert label_names("biased-mnist", {"palette": "rebias"}) == (ds.class_names, ds.bias_names)


@needs_mnist
def test_getitem_is_normalised_to_minus_one_one():
    ds = biased_mnist("test_conflicting")
    x, y, b = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 28, 28)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert isinstance(y, int) and isinstance(b, int) and y == int(ds.targets[0]) != b
    colour = torch.tensor(PALETTES["rebias"][b], dtype=torch.float32) / 255 * 2 - 1
    assert torch.allclose(x[:, 0, 0], colour)  # corner pixel is background
    fg = _white(ds.images[:1])[0]
    assert torch.all(x[:, fg] == 1.0)


@needs_mnist
def test_source_index_maps_back_to_source(mnist_train):
    ds = biased_mnist("train", 0.995, seed=2, val_size=1000)
    x, y = mnist_train
    assert torch.equal(ds.targets, y[ds.source_index])
    assert torch.equal(_white(ds.images), x[ds.source_index] > 0)
    assert bool((ds.source_index[1:] > ds.source_index[:-1]).all())  # source order kept


@needs_mnist
def test_numpy_input_and_explicit_source_index(mnist_test):
    x, y = mnist_test
    rows = np.arange(100, 400)
    ds_np = colour_bias(x[rows].numpy(), y[rows].numpy(), 0.5, seed=4, source_index=rows)
    ds_t = colour_bias(x[rows], y[rows], 0.5, seed=4)
    assert torch.equal(ds_np.images, ds_t.images) and torch.equal(ds_np.bias, ds_t.bias)
    assert ds_np.source_index.tolist() == rows.tolist()
    assert ds_t.source_index.tolist() == list(range(300))
    assert ds_np.split is None


# -- splits -----------------------------------------------------------------------------------
@needs_mnist
def test_train_val_disjoint_and_stable():
    train = biased_mnist("train", 0.99, seed=5, val_size=3000)
    val = biased_mnist("val", seed=5, val_size=3000)
    assert len(val) == 3000 and len(train) == 57_000
    t, v = set(train.source_index.tolist()), set(val.source_index.tolist())
    assert not t & v and len(t | v) == 60_000
    assert val.rho == 0.1 and val.split == "val" and train.split == "train"
    assert torch.equal(val.source_index, torch.from_numpy(validation_rows(60_000, 3000, 5)))
    # Same seed and val_size -> same validation images; another seed -> others.
    assert torch.equal(biased_mnist("val", seed=5, val_size=3000).source_index, val.source_index)
    other = biased_mnist("val", seed=6, val_size=3000).source_index
    assert not torch.equal(other, val.source_index)
    # The val colours are near uniform (rho .1): about a tenth aligned.
    assert abs(float(val.aligned.float().mean()) - 0.1) < 0.01


@needs_mnist
def test_test_splits_rho(mnist_test):
    test = biased_mnist("test")
    # rho .1 is an exact count: sum_c int(0.1 n_c) aligned = 996 of 10,000.
    assert int(test.aligned.sum()) == sum(int(n * 0.1) for n in TEST_COUNTS) == 996
    per_colour = torch.bincount(test.bias, minlength=10)
    assert int(per_colour.min()) > 900 and int(per_colour.max()) < 1100
    cells = torch.bincount(test.targets * 10 + test.bias, minlength=100)
    assert int(cells.min()) >= 70 and int(cells.max()) <= 130  # ~100 per (digit, colour)
    assert torch.equal(test.source_index, torch.arange(10_000))
    biased = biased_mnist("test_biased")
    assert bool(biased.aligned.all()) and biased.rho == 1.0
    conflicting = biased_mnist("test_conflicting")
    assert not bool(conflicting.aligned.any()) and conflicting.rho == 0.0
    assert biased_mnist("test", rho=0.5).rho == 0.5
    assert SPLITS == ("train", "val", "test", "test_biased", "test_conflicting")


_FINGERPRINT = (
    "from debias.data import biased_mnist; "
    "print(biased_mnist('train', 0.997, seed={seed}, val_size=2000).fingerprint())"
)


@needs_mnist
def test_fingerprint_deterministic_across_processes():
    # A fresh interpreter (own hash seed, own RNG state) must give this process' fingerprint.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _FINGERPRINT.format(seed=11)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    here = biased_mnist("train", 0.997, seed=11, val_size=2000).fingerprint()
    assert out.stdout.strip() == here and len(here) == 64
    assert biased_mnist("train", 0.997, seed=12, val_size=2000).fingerprint() != here


def test_fingerprint_is_sha256_of_little_endian_int64():
    import hashlib

    x = torch.zeros(4, 28, 28, dtype=torch.uint8)
    ds = colour_bias(x, torch.tensor([0, 1, 2, 3]), 1.0, source_index=[7, 8, 9, 10])
    expected = hashlib.sha256(
        np.array([7, 8, 9, 10], "<i8").tobytes() + np.array([0, 1, 2, 3], "<i8").tobytes()
    ).hexdigest()
    assert ds.fingerprint() == expected


# -- bad inputs -------------------------------------------------------------------------------
def test_colour_bias_rejects_bad_input():
    x = torch.zeros(20, 28, 28, dtype=torch.uint8)
    y = torch.arange(20) % 10
    with pytest.raises(ValueError, match=r"rho must be .*\[0, 1\].*1.5"):
        colour_bias(x, y, 1.5)
    with pytest.raises(ValueError, match=r"palette 'x'.*'fairkl', 'rebias'"):
        colour_bias(x, y, 0.5, palette="x")
    with pytest.raises(ValueError, match=r"\[N, 28, 28\].*\(20, 32, 32\)"):
        colour_bias(torch.zeros(20, 32, 32, dtype=torch.uint8), y, 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(20,\)"):
        colour_bias(x, y[:5], 0.5)
    with pytest.raises(ValueError, match=r"labels must be in 0..9.*0..10"):
        colour_bias(x, torch.arange(20) % 11, 0.5)
    with pytest.raises(ValueError, match="uint8"):
        colour_bias(x.float(), y, 0.5)
    with pytest.raises(ValueError, match="source_index"):
        colour_bias(x, y, 0.5, source_index=np.arange(3))


def test_biased_mnist_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"split 'foo'.*'train', 'val', 'test'"):
        biased_mnist("foo", 0.99, root=tmp_path)
    with pytest.raises(ValueError, match="rho is required"):
        biased_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="rho must be"):
        biased_mnist("train", 1.5, root=tmp_path)
    with pytest.raises(ValueError, match="palette"):
        biased_mnist("train", 0.99, palette="x", root=tmp_path)
    with pytest.raises(ValueError, match="defined by rho=1"):
        biased_mnist("test_biased", 0.5, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="DEBIAS_DATA"):
        biased_mnist("test", root=tmp_path)


# -- scikit-learn digits fallback -------------------------------------------------------------
def test_digits_fallback_shapes_labels_and_frame():
    x, y = load_digits_28(seed=0)
    assert x.shape == (1797, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # 4-pixel empty border, a stroke inside, a background inside.
    assert int(x[:, :4].max()) == 0 and int(x[:, -4:].max()) == 0
    assert int(x[:, :, :4].max()) == 0 and int(x[:, :, -4:].max()) == 0
    ink = (x > 0).float().mean(dim=(1, 2))
    assert float(ink.min()) > 0.05 and float(ink.max()) < 0.5
    assert int(x.max()) == 255
    # The seed only permutes the rows.
    x0, y0 = load_digits_28(seed=None)
    assert not torch.equal(y, y0) and torch.equal(torch.bincount(y), torch.bincount(y0))
    assert torch.equal(load_digits_28(seed=0)[0], x)


def test_digits_splits_stratified_and_colourable():
    (xtr, ytr), (xte, yte) = digits_splits(test_fraction=0.3, seed=0)
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 0.3 * 1797) <= 1
    ratio = torch.bincount(yte, minlength=10).float() / torch.bincount(ytr, minlength=10).float()
    assert float((ratio - 0.3 / 0.7).abs().max()) < 0.03
    (xtr2, _), _ = digits_splits(test_fraction=0.3, seed=0)
    (xtr3, _), _ = digits_splits(test_fraction=0.3, seed=1)
    assert torch.equal(xtr, xtr2) and not torch.equal(xtr, xtr3)
    ds = colour_bias(xtr, ytr, 0.9)
    assert int((~ds.aligned).sum()) == sum(
        int(n) - int(int(n) * 0.9) for n in torch.bincount(ytr, minlength=10)
    )
    assert torch.equal(_white(ds.images), xtr > 0)
    with pytest.raises(ValueError, match="test_fraction"):
        digits_splits(test_fraction=1.5)
