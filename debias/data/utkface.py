"""UTKFace with the BiasCon biased split (Hong & Yang, NeurIPS 2021; PROTOCOLS §2).

Labels come from the file names, ``age_gender_race_datetime.jpg.chip.jpg`` (plain ``.jpg`` is
accepted too): age an integer, gender 0 male / 1 female, race 0 White, 1 Black, 2 Asian,
3 Indian, 4 Others, datetime ``yyyymmddHHMMSSFFF`` (17 digits). Any other ``.jpg`` name is
"off-pattern": skipped and counted in :attr:`UTKFace.skipped`, never a crash. (The real
``crop_part1`` has three: two with a field missing and one with a 16-digit timestamp.)

Encodings: target ``gender`` (male 0, female 1); bias ``race`` (White 0, non-White 1) or ``age``
(age >= 20 -> 0, age <= 10 -> 1, ages 11-19 dropped and counted). Bias value ``i`` is aligned
with target ``i``: (male, White) and (female, non-White); (male, >= 20) and (female, <= 10).

Split (BiasCon, made portable): pattern filter (and the 11-19 drop for ``bias="age"``) -> sort
by relative path (BiasCon used ``os.listdir`` order) -> seeded permutation -> first 80 % train,
next 10 % val, rest test (``int(0.8 n)``, ``int(0.1 n)``, remainder). In the train split only,
for each bias value ``i`` all ``n_major`` "major" images (target ``i``, bias ``i``) are kept and
``n_minor = floor((1 - bias_rate) * n_major)`` "minor" ones (target ``1 - i``, bias ``i``),
chosen by a seeded permutation. ``1 - bias_rate`` is computed in exact decimal arithmetic, so
``bias_rate=0.9`` gives ``int(0.1 * n_major)`` as PROTOCOLS states (the official code's float
``1 - 0.9 = 0.0999...`` drops one image whenever ``n_major`` is a multiple of 10). Val and test
keep their natural distribution.

Images are decoded once to uint8 ``[N, 3, S, S]`` through :mod:`debias.data.cache` (the faces
are square, so the centre-square crop is a no-op). ``mean``/``std`` default to ``(0.5,) * 3``,
i.e. pixels scaled to [-1, 1]; a trainer using an ImageNet-pretrained encoder passes ImageNet
statistics instead.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Collection
from fractions import Fraction
from pathlib import Path

import torch

from debias.data.base import DEFAULT_IMAGE_SIZE, SPLITS, TensorImageDataset
from debias.data.cache import DecodedImages, load_images
from debias.data.root import data_root

__all__ = ["UTKFace", "parse_utkface_name", "RACES"]

RACES = ("White", "Black", "Asian", "Indian", "Others")
BIASES = ("race", "age")
# What the codes mean (see the module docstring's encodings).
CLASS_NAMES = {"gender": ("male", "female")}
BIAS_NAMES = {"race": ("White", "non-White"), "age": ("age >= 20", "age <= 10")}
SKIP_OFF_PATTERN = "off-pattern name"
SKIP_AGE = "age 11-19 (bias=age)"
SKIP_UNREADABLE = "unreadable image"
_SUFFIXES = (".jpg.chip.jpg", ".jpg")
_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d{17})$")


def parse_utkface_name(filename: str) -> tuple[int, int, int] | None:
    """``"25_1_3_20170116174525125.jpg.chip.jpg"`` -> ``(age, gender, race)``.

    None if the name is off-pattern: not four ``_``-separated fields with an integer age, gender
    0/1, race 0-4 and a 17-digit timestamp, or not ending in ``.jpg.chip.jpg`` / ``.jpg``.
    """
    lower = filename.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix):
            stem = filename[: -len(suffix)]
            break
    else:
        return None
    m = _NAME.match(stem)
    if m is None:
        return None
    age, gender, race = int(m[1]), int(m[2]), int(m[3])
    if gender not in (0, 1) or not 0 <= race <= 4:
        return None
    return age, gender, race


def _find_jpgs(folder: Path) -> list[str]:
    """'/'-joined paths, relative to ``folder``, of every ``.jpg`` at any depth."""
    out = []
    top = os.fspath(folder)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        out.extend(prefix + f for f in filenames if f.lower().endswith(".jpg"))
    return sorted(out)


def _resolve_folder(root: Path) -> tuple[Path, list[str]]:
    folder = root / "utkface" if (root / "utkface").is_dir() else root
    files = _find_jpgs(folder) if folder.is_dir() else []
    if not any(parse_utkface_name(f.rsplit("/", 1)[-1]) for f in files):
        raise FileNotFoundError(
            f"no UTKFace images (age_gender_race_datetime.jpg.chip.jpg) found: looked in "
            f"{root / 'utkface'} and then {root}. Set DEBIAS_DATA or pass root= (--root on the "
            "command line) to the folder holding utkface/ (or the images themselves)"
        )
    return folder, files


def _minor_count(bias_rate: float, n_major: int) -> int:
    return int((1 - Fraction(repr(float(bias_rate)))) * n_major)


class UTKFace(TensorImageDataset):
    """UTKFace faces, target gender, bias race or age, BiasCon biased training split.

    Args:
        root: data root (default :func:`debias.data.root.data_root`). The dataset folder is
            ``<root>/utkface`` if that exists, else ``root`` itself; images are found at any
            depth below it.
        split: ``"train"``, ``"val"`` or ``"test"``.
        target: ``"gender"`` (male 0, female 1).
        bias: ``"race"`` (White 0, non-White 1) or ``"age"`` (>= 20 -> 0, <= 10 -> 1).
        bias_rate: share of aligned images per bias value in train; see the module docstring.
        seed: seeds the 80/10/10 split and the choice of minor images.
        image_size: side of the stored square images.
        transform: optional per-image callable (else :meth:`normalize`).
        cache_dir: decode cache folder (default ``$DEBIAS_CACHE`` or ``~/.cache/debias``).
        on_error: ``"raise"`` on an unreadable image, or ``"skip"`` to drop and count it.

    Attributes beyond :class:`TensorImageDataset`: ``files`` (relative '/'-paths), ``ages``,
    ``races`` (int64), ``skipped`` (reason -> count over the whole folder), ``skipped_files``,
    ``split_info`` (group counts before and after biasing), ``cache_path``, ``cache_hit``.
    """

    name = "utkface"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        target: str = "gender",
        bias: str = "race",
        bias_rate: float = 0.9,
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> None:
        _check_arguments(split, target, bias, bias_rate, on_error)
        self.root, all_files = _resolve_folder(data_root(root))
        self.split = split
        self.target_name = target
        self.bias_name = bias
        self.bias_rate = float(bias_rate)
        self.seed = int(seed)
        self.skipped: dict[str, int] = {}
        self.skipped_files: list[str] = []

        parsed = self._parse_names(all_files)
        decoded = self._decode(parsed, image_size, cache_dir, on_error)
        pool = self._pool(parsed, decoded.failed)
        _warn_skipped(self.root, self.skipped)
        genders = torch.tensor([p[2] for p in parsed], dtype=torch.long)
        ages = torch.tensor([p[1] for p in parsed], dtype=torch.long)
        races = torch.tensor([p[3] for p in parsed], dtype=torch.long)
        bias_all = (races != 0).long() if bias == "race" else (ages <= 10).long()

        gen = torch.Generator().manual_seed(self.seed)
        parts = _split_pool(pool, gen)
        idx = parts[split]
        info: dict = {
            "split": split,
            "n_pool": len(pool),
            "n_split": {name: len(v) for name, v in parts.items()},
            "before": _group_counts(genders[idx], bias_all[idx]),
        }
        if split == "train":
            idx, biasing = _bias_train(idx, genders, bias_all, self.bias_rate, gen)
            info.update(biasing)
        # Sorted indices keep the stored order independent of the permutation.
        idx = idx.sort().values
        info["after"] = _group_counts(genders[idx], bias_all[idx])
        self.split_info = info

        self.files = [parsed[i][0] for i in idx.tolist()]
        self.ages = ages[idx]
        self.races = races[idx]
        super().__init__(
            decoded.images[idx],
            genders[idx],
            bias_all[idx],
            aligned_groups=[(0, 0), (1, 1)],
            num_classes=2,
            num_bias=2,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            transform=transform,
            class_names=CLASS_NAMES[target],
            bias_names=BIAS_NAMES[bias],
        )

    # -- the steps of __init__ -----------------------------------------------------------------
    def _skip(self, reason: str, rel: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_files.append(rel)

    def _parse_names(self, all_files: list[str]) -> list[tuple[str, int, int, int]]:
        """``(relative path, age, gender, race)`` of every well-named file; skip the others."""
        parsed: list[tuple[str, int, int, int]] = []
        for rel in all_files:
            labels = parse_utkface_name(rel.rsplit("/", 1)[-1])
            if labels is None:
                self._skip(SKIP_OFF_PATTERN, rel)
            else:
                parsed.append((rel, *labels))
        return parsed

    def _decode(
        self,
        parsed: list[tuple[str, int, int, int]],
        image_size: int,
        cache_dir: str | os.PathLike | None,
        on_error: str,
    ) -> DecodedImages:
        # Decode every well-named file (not only this split or bias choice): one cache entry
        # then serves all splits, both biases and all seeds.
        decoded = load_images(
            [p[0] for p in parsed],
            image_size,
            root=self.root,
            name=self.name,
            crop="center-square",
            cache_dir=cache_dir,
            on_error=on_error,
        )
        self.cache_path = decoded.cache_path
        self.cache_hit = decoded.cache_hit
        return decoded

    def _pool(self, parsed: list[tuple[str, int, int, int]], failed: Collection[int]) -> list[int]:
        """Indices into ``parsed`` (sorted relative-path order) of the images this bias can use;
        skip the unreadable ones and, for ``bias="age"``, ages 11-19."""
        pool: list[int] = []
        for i, (rel, age, _, _) in enumerate(parsed):
            if i in failed:
                self._skip(SKIP_UNREADABLE, rel)
            elif self.bias_name == "age" and 11 <= age <= 19:
                self._skip(SKIP_AGE, rel)
            else:
                pool.append(i)
        return pool


def _check_arguments(split: str, target: str, bias: str, bias_rate: float, on_error: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if target != "gender":
        raise ValueError(f"target must be 'gender' (the BiasCon protocol); got {target!r}")
    if bias not in BIASES:
        raise ValueError(f"bias must be one of {BIASES}; got {bias!r}")
    if not 0.0 <= float(bias_rate) <= 1.0:
        raise ValueError(f"bias_rate must be in [0, 1]; got {bias_rate!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")


def _split_pool(pool: list[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded permutation of ``pool``: first 80 % train, next 10 % val, the rest test."""
    pool_t = torch.tensor(pool, dtype=torch.long)
    perm = pool_t[torch.randperm(len(pool), generator=gen)]
    n_train, n_val = int(0.8 * len(pool)), int(0.1 * len(pool))
    return {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }


# (root, what was skipped) already warned about: one warning per data folder and process, not
# one per split (every split scans the same folder), whatever the warnings filter.
_WARNED: set[tuple[str, tuple[tuple[str, int], ...]]] = set()


def _warn_skipped(root: Path, skipped: dict[str, int]) -> None:
    """One line for files left out because of the data, not the protocol (see ``skipped``)."""
    bad = {k: v for k, v in skipped.items() if k != SKIP_AGE}
    key = (str(root), tuple(sorted(bad.items())))
    if bad and key not in _WARNED:
        _WARNED.add(key)
        what = ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
        warnings.warn(
            f"UTKFace under {root}: skipped {sum(bad.values())} file(s) ({what}); their names are "
            "in UTKFace.skipped_files, the counts in UTKFace.skipped",
            stacklevel=3,
        )


def _group_counts(y: torch.Tensor, b: torch.Tensor) -> dict[str, int]:
    return {f"y={t},b={c}": int(((y == t) & (b == c)).sum()) for t in (0, 1) for c in (0, 1)}


def _bias_train(
    idx: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    bias_rate: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict]:
    """Keep every major image and ``floor((1 - bias_rate) * n_major)`` minor ones per bias value."""
    keep = []
    info: dict = {"n_major": {}, "n_minor_wanted": {}, "n_minor_available": {}, "minor_short": []}
    yi, bi = y[idx], b[idx]
    for i in (0, 1):
        major = idx[(yi == i) & (bi == i)]
        minor = idx[(yi == 1 - i) & (bi == i)]
        wanted = _minor_count(bias_rate, len(major))
        if wanted > len(minor):
            info["minor_short"].append(i)
        chosen = minor[torch.randperm(len(minor), generator=gen)[:wanted]]
        keep += [major, chosen]
        info["n_major"][i] = len(major)
        info["n_minor_wanted"][i] = wanted
        info["n_minor_available"][i] = len(minor)
    return torch.cat(keep), info
