"""Waterbirds (Sagawa et al., ICLR 2020) read from the official release, as users have it.

Layout (kohpangwei/group_DRO ``data/cub_dataset.py``): a folder
``waterbird_complete95_forest2water2/`` holding ``metadata.csv`` with the columns
``img_id, img_filename, y, split, place, place_filename`` and the images at ``img_filename``
(relative to that folder). It is found as ``<root>/waterbird_complete95_forest2water2``,
``<root>/waterbirds/waterbird_complete95_forest2water2`` (SubpopBench's layout) or ``root``
itself.

Labels: target ``y`` (0 landbird, 1 waterbird), bias ``place`` (0 land, 1 water); splits
``split`` 0 / 1 / 2 = train / val / test; the four groups ``g = 2 y + place`` of Group DRO;
bias-aligned: landbirds on land and waterbirds on water.

Images: group_DRO and SubpopBench resize the whole image to 256 x 256 (aspect ratio not kept)
and centre-crop 224. Here images are decoded once with ``crop="none"`` (the whole image resized
to ``image_size`` square); with ``image_size=256`` and an ImageNet-pretrained torchvision
encoder the trainer's centre crop to the weights' 224 gives exactly that transform.

Integrity (torchvision's ``_check_integrity`` in spirit, each a one-line error): the folder and
``metadata.csv`` exist, the table has the official columns, and with ``official_counts=True``
(the default) its split and group counts are the release's, :data:`EXPECTED_COUNTS`:
4,795 / 1,199 / 5,794 images (train 3,498 / 184 / 56 / 1,057 by group ``(y, place)`` =
(0,0) / (0,1) / (1,0) / (1,1)). Then every listed image must exist and decode
(:class:`~debias.data.metadata.MetadataDataset`'s checks). ``official_counts=False`` reads a
subset or a rebuilt copy in the same layout (the tests' small fake trees).

Example:
    >>> ds = Waterbirds("/data", "test", image_size=256)   # doctest: +SKIP
    >>> ds.bias_names
    ('land', 'water')
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from debias.data.base import DEFAULT_IMAGE_SIZE, SPLITS
from debias.data.metadata import MetadataDataset, read_metadata
from debias.data.root import data_root, find_holding

__all__ = [
    "CLASS_NAMES",
    "BIAS_NAMES",
    "COLUMNS",
    "EXPECTED_COUNTS",
    "FOLDER",
    "Waterbirds",
    "check_counts",
    "find_folder",
    "write_synthetic_release",
]

FOLDER = "waterbird_complete95_forest2water2"
METADATA = "metadata.csv"
COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")
CLASS_NAMES = ("landbird", "waterbird")
BIAS_NAMES = ("land", "water")
ALIGNED = ((0, 0), (1, 1))
# The official release: images per split and (y, place) group, as its metadata.csv lists them
# (the group sizes Sagawa et al. 2020 report).
EXPECTED_COUNTS: dict[str, dict[tuple[int, int], int]] = {
    "train": {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057},
    "val": {(0, 0): 467, (0, 1): 466, (1, 0): 133, (1, 1): 133},
    "test": {(0, 0): 2255, (0, 1): 2255, (1, 0): 642, (1, 1): 642},
}
_SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}


def find_folder(root: str | os.PathLike | None = None) -> Path:
    """The release folder under the data root (see the module docstring), or a one-line error
    naming the places looked at."""
    base = data_root(root)
    folder, looked = find_holding([base / FOLDER, base / "waterbirds" / FOLDER, base], METADATA)
    if folder is not None:
        return folder
    raise FileNotFoundError(
        f"Waterbirds not found: looked for {looked}. Unpack the official release "
        f"({FOLDER}.tar.gz, from the group_DRO repository) under the data root (--root or "
        "DEBIAS_DATA)"
    )


def _check_columns(table: pd.DataFrame, path: Path) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: not the official Waterbirds metadata: missing column(s) {missing}; "
            f"expected {', '.join(COLUMNS)}"
        )


def check_counts(table: pd.DataFrame, path: Path | str) -> None:
    """The table's images per split and ``(y, place)`` group are the official release's
    (:data:`EXPECTED_COUNTS`); else a one-line error with every difference."""
    split = table["split"].astype(str).str.strip().map(_SPLIT_CODES)
    y = table["y"].astype(str).str.strip()
    place = table["place"].astype(str).str.strip()
    wrong = []
    for name, groups in EXPECTED_COUNTS.items():
        for (gy, gp), want in groups.items():
            got = int(((split == name) & (y == str(gy)) & (place == str(gp))).sum())
            if got != want:
                wrong.append(f"{name} (y={gy}, place={gp}) {got:,} (expected {want:,})")
    if wrong or len(table) != sum(sum(g.values()) for g in EXPECTED_COUNTS.values()):
        totals = " / ".join(f"{int((split == s).sum()):,}" for s in SPLITS)
        raise ValueError(
            f"{path} does not match the official Waterbirds release: {len(table):,} rows, "
            f"{totals} train/val/test (expected 4,795 / 1,199 / 5,794); "
            f"{'; '.join(wrong[:4]) or 'extra rows with other split/label values'}. For a "
            "subset or a rebuilt copy pass official_counts=False (--data-option "
            "official_counts=false)"
        )


class Waterbirds(MetadataDataset):
    """One split of the official Waterbirds release; see the module docstring.

    Args:
        root: data root (default :func:`debias.data.root.data_root`) or the release folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side of the stored square images (256 for the published recipes).
        official_counts: check the split and group counts against the release.
        transform, cache_dir, on_error: as :class:`~debias.data.metadata.MetadataDataset`.
    """

    name = "waterbirds"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        image_size: int = DEFAULT_IMAGE_SIZE,
        official_counts: bool = True,
        transform=None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> None:
        folder = find_folder(root)
        path = folder / METADATA
        table = read_metadata(path)
        _check_columns(table, path)
        if official_counts:
            check_counts(table, path)
        super().__init__(
            path,
            split,
            root=folder,
            target="y",
            bias="place",
            path_column="img_filename",
            split_column="split",
            aligned_groups=ALIGNED,
            image_size=image_size,
            crop="none",
            transform=transform,
            cache_dir=cache_dir,
            on_error=on_error,
        )
        self.official_counts = bool(official_counts)
        self.class_names, self.bias_names = CLASS_NAMES, BIAS_NAMES

    @property
    def groups(self) -> torch.Tensor:
        """int64 ``[N]``: Group DRO's group index ``2 * y + place``."""
        return 2 * self.targets + self.bias


def write_synthetic_release(
    folder: str | os.PathLike,
    per_group: dict[str, dict[tuple[int, int], int]] | None = None,
    *,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a small synthetic tree in the official layout, for tests and toy runs (no real
    birds): ``folder/waterbird_complete95_forest2water2/metadata.csv`` with the official
    columns and one PNG per row, ``<y>.<species>/<img_id>.png``. Each image is a background
    tinted by ``place`` (green land, blue water) with a centred square whose brightness codes
    ``y``, plus noise. ``per_group``: ``{split: {(y, place): count}}`` (default 6 per group).
    Returns the release folder.
    """
    import numpy as np
    from PIL import Image

    per_group = per_group or {s: {g: 6 for g in EXPECTED_COUNTS["train"]} for s in SPLITS}
    out = Path(folder) / FOLDER
    rng = np.random.default_rng(seed)
    rows = []
    codes = {name: code for code, name in enumerate(SPLITS)}
    for split in per_group:
        code = codes[split]
        for (y, place), count in per_group[split].items():
            for _ in range(count):
                img_id = len(rows) + 1
                name = f"{y:03d}.{CLASS_NAMES[y]}/{img_id:05d}.png"
                tint = np.array([60, 140, 60] if place == 0 else [50, 80, 170], dtype=float)
                img = tint + rng.normal(0, 20, (size, size, 3))
                q = size // 4
                img[q:-q, q:-q] = 40 + 170 * y + rng.normal(0, 10, (size - 2 * q, size - 2 * q, 3))
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.clip(0, 255).astype("uint8")).save(out / name)
                rows.append((img_id, name, y, code, place, f"{BIAS_NAMES[place]}/{img_id}.jpg"))
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(out / METADATA, index=False)
    return out
