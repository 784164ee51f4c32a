"""What the test modules share: where the real data is, the marker for tests that need real
MNIST, a silent ``log=`` for training runs, and the tiny digits run many tests train.

Import them by name (``from conftest import needs_mnist, quiet, tiny``); pytest puts this folder on
``sys.path``. Tests marked ``slow`` (longer end-to-end runs, notebooks, processes) are skipped by
``make test-quick`` (``pytest -m "not slow"``); ``make test`` and CI run everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The session's local one-node SLURM (tests/slurm_cluster.py), for the tests that ask for it.
from slurm_cluster import slurm_cluster  # noqa: F401

from debias.data.root import data_root

# Real MNIST as the shared data root holds it (DEBIAS_DATA, else ./data).
MNIST_DIR: Path = data_root() / "mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def have_mnist() -> bool:
    """All four MNIST IDX files are under :data:`MNIST_DIR` (plain or ``.gz``)."""
    return all((MNIST_DIR / n).is_file() or (MNIST_DIR / f"{n}.gz").is_file() for n in MNIST_FILES)


needs_mnist = pytest.mark.skipif(
    not have_mnist(),
    reason=f"MNIST IDX files not found in {MNIST_DIR} (set DEBIAS_DATA to the shared data folder)",
)


def tiny(out, **kw):
    """The tests' seconds-long CE run on the scikit-learn digits (no files needed): a
    :class:`~debias.train.TrainConfig` of 2 epochs of at most 3 steps at a constant lr on the
    CPU; ``kw`` overrides any option."""
    from debias.train import TrainConfig

    base = dict(
        out=str(out), dataset="digits", rho=0.95, model="smallconvnet", epochs=2,
        batch_size=64, max_steps=3, lr_milestones=[], progress=False, device="cpu",
    )  # fmt: skip
    return TrainConfig(**(base | kw))


def quiet(*_) -> None:
    """A ``log=`` that prints nothing."""
