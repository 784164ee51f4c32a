"""``print(Embeddings)``: a one-line summary (n, dim, labels, source), never the arrays; the
source follows the embeddings through save and load."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from debias.audit import Embeddings, embed
from debias.data.base import TensorImageDataset


def test_repr_is_a_summary_not_the_arrays(tmp_path):
    rng = np.random.default_rng(0)
    emb = Embeddings(rng.normal(size=(1000, 64)), rng.integers(0, 10, 1000),
                     rng.integers(0, 3, 1000), aligned_groups=[(0, 0), (1, 1)])  # fmt: skip
    text = repr(emb)
    assert text == (
        "Embeddings(n=1000, dim=64, targets: 10 classes, bias: 3 values, aligned groups: "
        "2 given, source='not recorded')"
    )
    assert str(emb) == text and "\n" not in text and len(text) < 200
    back = Embeddings.load(emb.save(tmp_path / "e"))
    assert repr(back).endswith(f"source='{tmp_path / 'e.npz'}')")
    np.testing.assert_array_equal(back.Z, emb.Z)


def test_embed_records_the_encoder_and_the_data(tmp_path):
    ds = TensorImageDataset(
        torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 0, 1]),
        torch.tensor([0, 0, 1, 1, 0, 1]), aligned_groups=[(0, 0), (1, 1)], num_classes=2,
        num_bias=2, mean=(0.5,), std=(0.5,),
    )  # fmt: skip
    emb = embed(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), ds, device="cpu")
    assert emb.source == "Sequential (output) on tensor"
    assert repr(emb).startswith("Embeddings(n=6, dim=5, targets: 2 classes, bias: 2 values, ")
    back = Embeddings.load(emb.save(tmp_path / "e.npz"))
    assert back.source == f"{tmp_path / 'e.npz'} (Sequential (output) on tensor)"
