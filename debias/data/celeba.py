"""CelebA with the Group DRO and BiasCon protocols, working on partial copies (PROTOCOLS §3).

Layout (torchvision's): a folder holding ``img_align_celeba/NNNNNN.jpg``,
``list_attr_celeba.txt`` (image count, 40 attribute names, then ``<file> <40 x -1/1>``) and
``list_eval_partition.txt`` (``<file> <0 train | 1 valid | 2 test>``). The folder is
``<root>/celeba`` if it holds the attribute file, else ``root`` itself, so both torchvision's
parent layout and the folder itself are accepted. The list files are parsed by whitespace
splitting, so CRLF endings, the header's trailing space and runs of spaces are all fine.
Attribute values -1/1 become 0/1.

Only images whose file is present are used (real copies are often partial). Images are decoded
once through :mod:`debias.data.cache`: a centred square of side ``min(H, W)`` is cropped (for
the aligned 178x218 images, or the 89x109 ones here, this removes the vertical margin; the
face stays centred) and resized to ``image_size``. ``mean``/``std`` default to ``(0.5,) * 3``.

Protocols (``protocol=``):

``"official"`` (the task of Group DRO / JTT / SubpopBench): splits are the official
partitions, train 0, ``"val"`` 1, ``"test"`` 2; four groups ``g = 2 * y + bias``
(:attr:`CelebA.groups`). It was called ``"groupdro"`` before (a name easily mistaken for the
Group DRO training method); that name is still accepted, with a warning, as an alias.

``"biascon"`` (Hong & Yang 2021): ``"test"`` is the official *valid* partition, as in BiasCon;
``"val"`` is **ours**: a seeded 10 % of the official train partition, stratified by
``(target, bias)``, held out so that nothing is selected on test. ``"train"`` is the rest of the
train partition; for target ``Blond_Hair`` with bias ``Male`` it keeps only
:data:`BIASCON_NON_BLOND_WOMEN` = 2,000 seeded random non-blond women (``y=0, b=0``) plus every
other training image. Other targets are not subsampled.

Copies and protocols. With the full release (all 202,599 images and the official
``list_eval_partition.txt``, checked: 162,770 / 19,867 / 19,962 images, a one-line error
otherwise; ``split_info["copy"] == "full"``) both protocols are the published ones, the numbers
comparable with Group DRO / JTT / SubpopBench (``official``) and BiasCon (``biascon``). A
partial copy (``"partial"``) uses the official partition where it covers every split the
protocol needs, else the fallback below; the shared 10,000-image copy is all partition 0, so it
supports both protocols only through the fallback: a CPU-scale stand-in, not the benchmark.

Fallback. When the partition file is missing or leaves a split of the protocol empty among the
present images (the copy in ``shared/data`` is all partition 0), all present images are split
80/10/10 per ``(target, bias)`` group by a seeded permutation (``round(0.1 n)`` val and test
images per group, at least one each for groups of 3+ images; the rest train), a warning is
issued once per process, and ``split_source`` is ``"stratified-fallback"`` instead of
``"official"``. The BiasCon subsampling is then applied to that train split.

Aligned groups (explicit, needed by the metrics). Computed from the labels of the training pool
of the protocol (after any subsampling): bias value ``b`` is aligned with the target value ``y``
most over-represented among images with bias ``b`` relative to its overall rate, i.e.
``argmax_y n(y, b) / n(y)`` (a tie, i.e. no correlation, falls back to ``y = b``). For
Blond_Hair/Male this gives the literature's (blond, female) and (non-blond, male); the plain
"most frequent ``y`` given ``b``" would call non-blond aligned with both sexes, because most
women are not blond either. The rule is in
:attr:`CelebA.aligned_rule`.

Split membership depends on labels only, never on which files decode: with
``on_error="skip"`` an unreadable image is dropped from its split afterwards and counted in
:attr:`CelebA.skipped`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from debias._hints import close_names
from debias.data.base import DEFAULT_IMAGE_SIZE, SPLITS, TensorImageDataset
from debias.data.cache import load_images
from debias.data.groups import aligned_from_counts, stratified
from debias.data.root import data_root, find_holding

__all__ = [
    "CelebA",
    "PROTOCOLS",
    "PROTOCOL_ALIASES",
    "attribute_names",
    "canonical_protocol",
    "read_attributes",
    "read_partition",
    "BIASCON_NON_BLOND_WOMEN",
    "FULL_IMAGES",
    "OFFICIAL_PARTITION_COUNTS",
    "check_full_partition",
]

PROTOCOLS = ("official", "biascon")
# Old protocol names, still accepted (with a warning) and read from old runs' configs.
PROTOCOL_ALIASES = {"groupdro": "official"}
BIASCON_NON_BLOND_WOMEN = 2000
# The full release: 202,599 aligned images, official partition train / valid / test.
FULL_IMAGES = 202_599
OFFICIAL_PARTITION_COUNTS = {0: 162_770, 1: 19_867, 2: 19_962}
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
SKIP_UNREADABLE = "unreadable image"
ALIGNED_RULE = (
    "bias value b is aligned with argmax_y n(y, b) / n(y) over the training pool "
    "(the target value most over-represented among images with bias b)"
)

_fallback_warned = False


def _lines(path: Path) -> list[str]:
    # utf-8-sig drops a BOM; splitlines() handles CRLF; blank lines are noise.
    return [ln for ln in path.read_bytes().decode("utf-8-sig").splitlines() if ln.strip()]


def read_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], torch.Tensor]:
    """Parse ``list_attr_celeba.txt`` -> (attribute names, file names, uint8 ``[N, A]`` 0/1)."""
    path = Path(path)
    lines = _lines(path)
    start = 1 if lines and lines[0].strip().isdigit() else 0  # the optional image-count line
    if len(lines) <= start:
        raise ValueError(f"{path}: no attribute header line found")
    names = lines[start].split()
    files: list[str] = []
    rows: list[list[int]] = []
    for lineno, line in enumerate(lines[start + 1 :], start=start + 2):
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(
                f"{path}, line {lineno}: expected a file name and {len(names)} values, "
                f"got {len(parts)} fields"
            )
        try:
            values = [int(v) for v in parts[1:]]
        except ValueError as err:
            raise ValueError(f"{path}, line {lineno}: attribute values must be -1 or 1") from err
        if any(v not in (-1, 1) for v in values):
            raise ValueError(f"{path}, line {lineno}: attribute values must be -1 or 1")
        files.append(parts[0])
        rows.append(values)
    attrs = torch.tensor(rows, dtype=torch.int8).reshape(len(rows), len(names))
    return names, files, (attrs > 0).to(torch.uint8)


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` -> ``{file name: 0 train | 1 valid | 2 test}``."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(
                f"{path}, line {lineno}: expected '<file> <0|1|2>', got {line.strip()!r}"
            )
        out[parts[0]] = int(parts[1])
    return out


def _resolve_folder(root: Path) -> Path:
    folder, looked = find_holding([root / "celeba", root], ATTR_FILE)
    if folder is not None:
        return folder
    raise FileNotFoundError(
        f"CelebA attribute file not found; looked for {looked}. Set DEBIAS_DATA or pass root= "
        "(--root on the command line) to the folder holding celeba/ (or the CelebA folder itself)"
    )


def canonical_protocol(protocol: str, *, warn: bool = True) -> str:
    """Today's name of a CelebA protocol: a deprecated alias (:data:`PROTOCOL_ALIASES`) is
    replaced, with a one-line FutureWarning unless ``warn`` is False; other names pass as is."""
    new = PROTOCOL_ALIASES.get(protocol)
    if new is None:
        return protocol
    if warn:
        warnings.warn(
            f"protocol {protocol!r} is deprecated, use {new!r} (the official CelebA partitions; "
            f"not the Group DRO method)",
            FutureWarning,
            stacklevel=3,
        )
    return new


def _check_attr(name: str, role: str, names: Sequence[str]) -> int:
    if name in names:
        return names.index(name)
    close = close_names(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown CelebA attribute {name!r} for {role} (names are case-sensitive).{hint} "
        f"Valid names: {', '.join(names)}"
    )


def _warn_fallback_once(message: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(message + " (This warning is shown once per process.)", stacklevel=3)


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {value!r}")


def _find_image_dir(root: Path) -> Path:
    image_dir = root / IMAGE_DIR
    if (image_dir / IMAGE_DIR).is_dir():  # a Kaggle zip unpacked into its own folder
        image_dir = image_dir / IMAGE_DIR
    if not image_dir.is_dir():
        raise FileNotFoundError(f"CelebA image folder not found: {image_dir}")
    return image_dir


def _target_bias_columns(target: str, bias: str, names: Sequence[str]) -> tuple[int, int]:
    t_col = _check_attr(target, "target", names)
    b_col = _check_attr(bias, "bias", names)
    if t_col == b_col:
        raise ValueError(f"target and bias must differ; both are {target!r}")
    return t_col, b_col


def _partition_of(path: Path, files: Sequence[str]) -> torch.Tensor:
    """Official partition of each file (0 train, 1 valid, 2 test); -1 if unknown or no file."""
    if not path.is_file():
        return torch.full((len(files),), -1, dtype=torch.long)
    part_map = read_partition(path)
    return torch.tensor([part_map.get(f, -1) for f in files], dtype=torch.long)


def check_full_partition(partition: torch.Tensor, path: Path | str) -> None:
    """A full copy (all :data:`FULL_IMAGES` images present) must carry the official partition,
    :data:`OFFICIAL_PARTITION_COUNTS` images in partitions 0 / 1 / 2; else a one-line error (a
    wrong or truncated ``list_eval_partition.txt`` would silently change the benchmark)."""
    got = {p: int((partition == p).sum()) for p in OFFICIAL_PARTITION_COUNTS}
    if got != OFFICIAL_PARTITION_COUNTS:
        shown = " / ".join(f"{n:,}" for n in got.values())
        raise ValueError(
            f"{path}: all {FULL_IMAGES:,} CelebA images are present but the partition gives "
            f"{shown} train/valid/test (official: 162,770 / 19,867 / 19,962); restore the "
            "official list_eval_partition.txt"
        )


def _biascon_non_blond_women(
    parts: dict[str, torch.Tensor], groups_all: torch.Tensor, gen: torch.Generator
) -> dict[str, Any]:
    """BiasCon's training set keeps :data:`BIASCON_NON_BLOND_WOMEN` seeded non-blond women
    (``parts["train"]`` is replaced); returns how many were available and kept."""
    train = parts["train"]
    women = train[groups_all[train] == 0]  # y=0 non-blond, b=0 female
    chosen = women[torch.randperm(len(women), generator=gen)[:BIASCON_NON_BLOND_WOMEN]]
    parts["train"] = torch.cat([train[groups_all[train] != 0], chosen])
    return {
        "available": len(women),
        "kept": len(chosen),
        "short": len(women) < BIASCON_NON_BLOND_WOMEN,
    }


def attribute_names(attribute: str) -> tuple[str, str]:
    """What values 0 and 1 of a binary CelebA attribute mean: ``("not Blond_Hair",
    "Blond_Hair")``; ``Male`` reads ``("female", "male")``."""
    return ("female", "male") if attribute == "Male" else (f"not {attribute}", attribute)


class CelebA(TensorImageDataset):
    """CelebA faces with a binary target and bias attribute; see the module docstring.

    Args:
        root: data root (default :func:`debias.data.root.data_root`); the dataset folder is
            ``<root>/celeba`` if it holds ``list_attr_celeba.txt``, else ``root``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        target, bias: any two of the 40 attribute names (case-sensitive).
        protocol: ``"official"`` or ``"biascon"`` (``"groupdro"``: deprecated ``"official"``).
        seed: seeds the fallback split, BiasCon's val hold-out and its subsampling.
        image_size: side of the stored square images.
        transform: optional per-image callable (else :meth:`normalize`).
        cache_dir: decode cache folder (default ``$DEBIAS_CACHE`` or ``~/.cache/debias``).
        on_error: ``"raise"`` on an unreadable image, or ``"skip"`` to drop and count it.

    Attributes beyond :class:`TensorImageDataset`: ``root`` (dataset folder), ``image_dir``,
    ``files``, ``attributes`` (uint8 ``[N, 40]``),
    ``attr_names``, ``partition`` (official partition per image), ``groups`` (``2 y + b``),
    ``split_source``, ``split_info``, ``aligned_rule``, ``n_listed``, ``n_present``,
    ``skipped``, ``skipped_files``, ``cache_path``, ``cache_hit``.
    """

    name = "celeba"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        target: str = "Blond_Hair",
        bias: str = "Male",
        protocol: str = "official",
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> None:
        _check_choice("split", split, SPLITS)
        protocol = canonical_protocol(protocol)
        _check_choice("protocol", protocol, PROTOCOLS)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
        self.root = _resolve_folder(data_root(root))
        self.image_dir = _find_image_dir(self.root)
        names, listed, attrs = read_attributes(self.root / ATTR_FILE)
        t_col, b_col = _target_bias_columns(target, bias, names)
        self.attr_names = names
        self.target_name, self.bias_name = target, bias
        self.protocol, self.split, self.seed = protocol, split, int(seed)

        files, attrs = self._keep_present(listed, attrs)
        y_all, b_all = attrs[:, t_col], attrs[:, b_col]
        groups_all = 2 * y_all + b_all
        partition = _partition_of(self.root / PARTITION_FILE, files)
        if self.n_present == FULL_IMAGES:
            check_full_partition(partition, self.root / PARTITION_FILE)
        gen = torch.Generator().manual_seed(self.seed)
        parts, decode_pool = self._split_parts(partition, groups_all, gen)
        info: dict = {
            "protocol": protocol,
            "split": split,
            "split_source": self.split_source,
            "n_listed": self.n_listed,
            "n_present": self.n_present,
            "copy": "full" if self.n_present == FULL_IMAGES else "partial",
            "n_split": {s: len(v) for s, v in parts.items()},
            "before": _group_counts(groups_all[parts[split]]),
        }
        if protocol == "biascon" and target == "Blond_Hair" and bias == "Male":
            info["non_blond_women"] = _biascon_non_blond_women(parts, groups_all, gen)
        self.aligned_rule = ALIGNED_RULE
        aligned = aligned_from_counts(y_all[parts["train"]], b_all[parts["train"]])

        images, idx = self._decode(
            files, decode_pool, parts[split].sort().values, image_size, cache_dir, on_error
        )
        info["after"] = _group_counts(groups_all[idx])
        self.split_info = info
        self.files = [files[i] for i in idx.tolist()]
        self.attributes = attrs[idx].to(torch.uint8)
        self.partition = partition[idx]
        super().__init__(
            images,
            y_all[idx],
            b_all[idx],
            aligned_groups=aligned,
            num_classes=2,
            num_bias=2,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            transform=transform,
            class_names=attribute_names(target),
            bias_names=attribute_names(bias),
        )

    # -- the steps of __init__ -----------------------------------------------------------------
    def _keep_present(
        self, listed: list[str], attrs: torch.Tensor
    ) -> tuple[list[str], torch.Tensor]:
        """Partial copies: keep the listed images whose file exists, sorted by file name."""
        on_disk = set(os.listdir(self.image_dir))
        present = torch.tensor([f in on_disk for f in listed], dtype=torch.bool)
        self.n_listed, self.n_present = len(listed), int(present.sum())
        if self.n_present == 0:
            raise FileNotFoundError(
                f"none of the {len(listed)} images listed in {self.root / ATTR_FILE} exist in "
                f"{self.image_dir}"
            )
        keep = present.nonzero().flatten()
        order = sorted(keep.tolist(), key=listed.__getitem__)
        return [listed[i] for i in order], attrs[order].long()

    def _split_parts(
        self, partition: torch.Tensor, groups_all: torch.Tensor, gen: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``({split: indices}, indices to decode)``: the protocol's use of the official
        partitions, or a seeded stratified 80/10/10 split when one they need is empty."""
        # Which official partitions feed which split.
        sources = (
            {"train": (0,), "val": (1,), "test": (2,)}
            if self.protocol == "official"
            else {"train": (0,), "val": (0,), "test": (1,)}
        )
        needed = sorted({p for v in sources.values() for p in v})
        empty = [p for p in needed if not bool((partition == p).any())]
        everything = torch.arange(len(partition))
        if not empty:
            self.split_source = "official"
            if self.protocol == "official":
                parts = {s: everything[partition == p[0]] for s, p in sources.items()}
            else:
                train_pool = everything[partition == 0]
                train, val = stratified(train_pool, groups_all, (0.9, 0.1), gen)
                parts = {"train": train, "val": val, "test": everything[partition == 1]}
            decode_pool = everything[torch.isin(partition, torch.tensor(sources[self.split]))]
            return parts, decode_pool
        self.split_source = "stratified-fallback"
        part_path = self.root / PARTITION_FILE
        why = (
            f"{part_path} is missing"
            if not part_path.is_file()
            else f"{part_path} leaves official partition(s) {empty} empty among the "
            f"{len(partition)} images present"
        )
        _warn_fallback_once(
            f"CelebA at {self.root}: {why}; using a seeded 80/10/10 split stratified by "
            f"({self.target_name}, {self.bias_name}) instead (split_source='stratified-fallback')"
        )
        train, val, test = stratified(everything, groups_all, (0.8, 0.1, 0.1), gen)
        return {"train": train, "val": val, "test": test}, everything

    def _decode(
        self,
        files: list[str],
        decode_pool: torch.Tensor,
        idx: torch.Tensor,
        image_size: int,
        cache_dir: str | os.PathLike | None,
        on_error: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode (or load from the cache) the images of ``decode_pool``; return the images of
        ``idx`` and ``idx`` without the unreadable ones (counted in ``skipped``)."""
        decoded = load_images(
            [f"{self.image_dir.relative_to(self.root).as_posix()}/{files[i]}" for i in decode_pool],
            image_size,
            root=self.root,
            name=self.name,
            crop="center-square",
            cache_dir=cache_dir,
            on_error=on_error,
        )
        self.cache_path, self.cache_hit = decoded.cache_path, decoded.cache_hit
        # Row of each image in the decoded tensor.
        row = torch.full((len(files),), -1, dtype=torch.long)
        row[decode_pool] = torch.arange(len(decode_pool))
        failed_rows = torch.tensor(sorted(decoded.failed), dtype=torch.long)
        ok = ~torch.isin(row[idx], failed_rows)
        self.skipped: dict[str, int] = {}
        self.skipped_files = [files[i] for i in idx[~ok].tolist()]
        if self.skipped_files:
            self.skipped[SKIP_UNREADABLE] = len(self.skipped_files)
        idx = idx[ok]
        return decoded.images[row[idx]], idx

    @property
    def groups(self) -> torch.Tensor:
        """int64 ``[N]``: Group DRO's group index ``2 * target + bias``."""
        return 2 * self.targets + self.bias


def _group_counts(groups: torch.Tensor) -> dict[str, int]:
    return {f"y={g // 2},b={g % 2}": int((groups == g).sum()) for g in range(4)}
