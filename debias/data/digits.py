"""Offline fallback digits: scikit-learn's bundled handwritten digits, made MNIST-shaped.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1,797 real 8x8 digits from the UCI
optical-recognition set, values 0..16), so ``debias demo`` can run with no data folder and no
network. Each image is upsampled bilinearly to 20x20 and framed by a 4-pixel zero border, like
MNIST's 20x20 digit in a 28x28 frame, so :func:`debias.data.biased_mnist.colour_bias` can colour
it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DIGIT_THRESHOLD", "digits_splits", "load_digits_28"]

# Bilinear upsampling smears every stroke into a halo of faint values; colour_bias binarises at
# > 0, so without a cut the halo would turn the whole neighbourhood white. 64/255 (= 4/16 in
# sklearn's scale) keeps the stroke and drops the halo.
DIGIT_THRESHOLD = 64


def load_digits_28(seed: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as MNIST-like ``(uint8 [N, 28, 28], int64 [N])``.

    ``x28 = pad4(round(bilinear_20x20(x8) * 255 / 16))``, then values below
    :data:`DIGIT_THRESHOLD` set to 0.

    Args:
        seed: rows are permuted with ``RandomState(seed)`` (scikit-learn's order groups the
            writers); ``None`` keeps scikit-learn's order.
    """
    from sklearn.datasets import load_digits  # lazy: sklearn import is slow and rarely needed

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # [N, 1, 8, 8], 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    up = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    up = (up * (255.0 / 16.0)).round().clamp_(0, 255)
    up[up < DIGIT_THRESHOLD] = 0
    images = F.pad(up[:, 0], (4, 4, 4, 4)).to(torch.uint8)
    if seed is not None:
        order = torch.from_numpy(np.random.RandomState(seed).permutation(len(labels)))
        images, labels = images[order], labels[order]
    return images.contiguous(), labels.contiguous()


def digits_splits(
    test_fraction: float = 0.3, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Seeded, class-stratified train/test split of :func:`load_digits_28`.

    Returns ``((train_images, train_labels), (test_images, test_labels))``; images uint8
    ``[N, 28, 28]``, labels int64 ``[N]``; ``round(test_fraction * 1797)`` test images (up to
    scikit-learn's rounding), every class in the same proportion in both parts.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_28(seed=None)
    rows = np.arange(len(labels))
    train_rows, test_rows = train_test_split(
        rows, test_size=test_fraction, random_state=seed, stratify=labels.numpy()
    )
    train_idx, test_idx = torch.from_numpy(train_rows), torch.from_numpy(test_rows)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
