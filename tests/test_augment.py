"""Batched augmentation: seeded, device-local, bias-preserving by default."""

from __future__ import annotations

import pytest
import torch

from debias.data.augment import AugmentConfig, BatchAugment


def _coloured_batch(n=8):
    x = torch.zeros(n, 3, 28, 28)
    x[:, 0] = 1.0  # red background
    x[:, :, 10:18, 12:16] = 1.0  # a white stroke
    return x


def test_same_generator_same_views_and_different_views_differ():
    aug = BatchAugment(AugmentConfig(crop_padding=2, rotation=10))
    x = _coloured_batch()
    v1 = aug.views(x, 2, torch.Generator().manual_seed(3))
    v2 = aug.views(x, 2, torch.Generator().manual_seed(3))
    assert v1.shape == (8, 2, 3, 28, 28)
    torch.testing.assert_close(v1, v2)
    assert not torch.allclose(v1[:, 0], v1[:, 1])


def test_identity_config_is_identity():
    aug = BatchAugment(AugmentConfig(crop_padding=0, rotation=0, hflip=False))
    x = _coloured_batch()
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(0)), x)


def test_pure_shift_moves_pixels_by_integers():
    aug = BatchAugment(AugmentConfig(crop_padding=3, rotation=0))
    x = _coloured_batch(16)
    y = aug(x, torch.Generator().manual_seed(1))
    # integer shifts with border replication: values stay exactly 0 or 1 (no interpolation blur)
    assert torch.all((y.abs() < 1e-4) | ((y - 1).abs() < 1e-4))
    # the stroke keeps its area
    assert torch.all(y[:, 1].sum(dim=(1, 2)) >= 8 * 4 - 8 * 3)


def test_background_colour_is_preserved_without_jitter():
    # Border replication keeps the background colour: the bias attribute is not perturbed.
    aug = BatchAugment(AugmentConfig(crop_padding=2, rotation=10))
    y = aug(_coloured_batch(), torch.Generator().manual_seed(0))
    corners = y[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners[:, 0], torch.ones_like(corners[:, 0]))
    torch.testing.assert_close(corners[:, 1:], torch.zeros_like(corners[:, 1:]))


def test_colour_jitter_warns_on_colour_bias_and_changes_colour():
    with pytest.warns(UserWarning, match="perturbs the very shortcut"):
        aug = BatchAugment(
            AugmentConfig(crop_padding=0, rotation=0, colour_jitter=0.8), bias_is_colour=True
        )
    x = _coloured_batch()
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1
    assert (y[:, :, 0, 0] - x[:, :, 0, 0]).abs().max() > 0.05


def test_hflip_mirrors_some_images():
    aug = BatchAugment(AugmentConfig(crop_padding=0, rotation=0, hflip=True))
    x = torch.rand(64, 3, 8, 8)
    y = aug(x, torch.Generator().manual_seed(0))
    flipped = torch.isclose(y, x.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(y, x, atol=1e-5).flatten(1).all(1)
    assert torch.all(flipped | same) and 10 < flipped.sum() < 54
