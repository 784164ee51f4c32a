"""Any image dataset described by a metadata table (CSV or Parquet), e.g. SubpopBench's.

The table has one row per image and at least three columns: the image file, the target label
and the bias label; a split column is optional. SubpopBench's ``metadata.csv`` (Waterbirds,
CelebA, MetaShift, ...) has exactly this shape: ``filename, split, y, a``. Column names are
arguments; the defaults are SubpopBench's (``y``, ``a``, ``split``), and the file column is the
first of :data:`PATH_COLUMNS` present (``filename``, group_DRO's ``img_filename``, ``path``, ...).

Paths. Relative paths are resolved against ``root`` if given, else the metadata file's folder;
absolute paths are used as they are.

Labels. Integer labels must be ``0..K-1`` (every value present; a gap is reported as an unknown
label); any other labels (strings such as ``"female"``) are coded ``0..K-1`` in sorted order,
the names kept in :attr:`MetadataDataset.classes` / :attr:`MetadataDataset.bias_classes`.
Empty or NaN labels and non-integer numbers are errors.

Splits. With a split column, its values say where a row goes: ``0``/``train``,
``1``/``val``/``valid``/``validation``, ``2``/``test`` (case-insensitive; SubpopBench and
group_DRO use 0/1/2). Without one, rows are split 80/10/10 per ``(target, bias)`` group by a
permutation seeded with ``seed`` (the CelebA fallback rule, :func:`debias.data.groups.stratified`;
``split_source`` says which happened). Split membership depends on the table only, never on
which files exist or decode.

Aligned groups. ``aligned_groups=[(y, b), ...]`` in the table's own label values, or by default
derived from the training split's labels with the CelebA rule: each bias value ``b`` is aligned
with ``argmax_y n(y, b) / n(y)``, the target value most over-represented among images with bias
``b`` (ties go to ``y = b`` when that is among them); :attr:`MetadataDataset.aligned_rule`
records which was used.

Integrity, checked before any image is decoded (so a broken table fails in seconds, not after
a decode pass), each a one-line error: a missing column (with close names), a table that is
not comma-separated (``;`` or ``|`` in its one column's name), duplicated files, empty/NaN or
unknown labels, a target or bias column with a single value, unknown split values, missing
files (the first few listed, with the count). Then, while decoding: unreadable images (the
first few named, with the count). ``on_error="skip"`` drops missing and unreadable images instead and counts them in
:attr:`MetadataDataset.skipped`. A split that ends up empty is an error; empty ``(y, b)``
groups in a split are reported by a warning (their accuracy is undefined; worst-group metrics
skip them) and listed in :attr:`MetadataDataset.empty_groups`.

Images are decoded once through :mod:`debias.data.cache` (every row of every split, so one
cache entry serves all splits and seeds), centre-square cropped by default and resized to
``image_size``.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from debias._hints import close_names
from debias.data.base import DEFAULT_IMAGE_SIZE, SPLITS, TensorImageDataset
from debias.data.cache import DEPTH_VERSION, DecodedImages, ImageDecodeError, load_images
from debias.data.groups import aligned_from_counts, group_code, stratified

__all__ = ["MetadataDataset", "read_metadata", "PATH_COLUMNS", "SPLIT_VALUES"]

PATH_COLUMNS = ("filename", "img_filename", "path", "file", "image", "image_path", "filepath")
SPLIT_VALUES = {
    "0": "train",
    "train": "train",
    "1": "val",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "2": "test",
    "test": "test",
}
SKIP_MISSING = "missing file"
SKIP_UNREADABLE = "unreadable image"
ALIGNED_RULE = (
    "bias value b is aligned with argmax_y n(y, b) / n(y) over the training split "
    "(the target value most over-represented among images with bias b; ties go to y = b)"
)
_SHOW = 5  # how many offending files or rows an error message names


@dataclass(frozen=True)
class _Columns:
    path: str
    target: str
    bias: str
    split: str | None


# Tables read, by (resolved path, mtime, size): a run builds its three splits from one table,
# which is parsed and checked once; a changed file is read again. The last few are kept.
_TABLES: OrderedDict[tuple[str, int, int], pd.DataFrame] = OrderedDict()
_TABLES_KEPT = 4


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``.csv`` (also ``.csv.gz``, ``.tsv``) or ``.parquet`` metadata table (a copy of
    the one read before while the file is unchanged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _TABLES:
        _TABLES[key] = _parse_table(path)
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    _TABLES.move_to_end(key)
    return _TABLES[key].copy()


def _parse_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError as err:
            raise ImportError(
                f"reading {path} needs a Parquet engine: pip install pyarrow (or save it as CSV)"
            ) from err
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        sep = "\t" if name.endswith(".tsv") else ","
        # Labels stay text until checked: pandas would turn "1", "", "x" into float/NaN/object.
        try:
            table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except UnicodeDecodeError:
            raise ValueError(
                f"metadata file {path} is not UTF-8 text (Latin-1 or UTF-16?); save it as UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8 IN > OUT, or 'CSV UTF-8' in a spreadsheet)"
            ) from None
        _check_delimiter(table, path, sep)
        return table
    raise ValueError(f"metadata file {path}: expected a .csv, .tsv or .parquet file")


_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def _check_delimiter(table: pd.DataFrame, path: Path, sep: str) -> None:
    """A table read as one column whose name holds another delimiter was written with that one
    (a spreadsheet's "CSV" in many locales uses semicolons): say so instead of "no column"."""
    if len(table.columns) != 1:
        return
    header = str(table.columns[0])
    found = [d for d in _DELIMITERS if d != sep and d in header]
    if found:
        raise ValueError(
            f"{path}: read as {_DELIMITERS[sep]}-separated it has one column {header!r}; it "
            f"looks {_DELIMITERS[found[0]]}-separated, but a .csv is read with commas (a .tsv "
            "with tabs): save it comma-separated"
        )


def _find_column(table: pd.DataFrame, name: str, role: str, source: Path) -> str:
    if name in table.columns:
        return name
    cols = [str(c) for c in table.columns]
    close = close_names(name, cols, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"{source}: no {role} column {name!r}.{hint} Columns: {', '.join(cols)}")


def _columns(
    table: pd.DataFrame,
    source: Path,
    target: str,
    bias: str,
    path_column: str | None,
    split_column: str | None,
) -> _Columns:
    if path_column is None:
        found = [c for c in PATH_COLUMNS if c in table.columns]
        if not found:
            raise ValueError(
                f"{source}: no image-file column; expected one of {', '.join(PATH_COLUMNS)} or "
                f"path_column=<name>. Columns: {', '.join(map(str, table.columns))}"
            )
        path_column = found[0]
    cols = _Columns(
        path=_find_column(table, path_column, "image-file", source),
        target=_find_column(table, target, "target", source),
        bias=_find_column(table, bias, "bias", source),
        split=None if split_column is None else _find_column(table, split_column, "split", source),
    )
    named = [c for c in (cols.path, cols.target, cols.bias, cols.split) if c is not None]
    if len(set(named)) < len(named):
        raise ValueError(f"{source}: the file, target, bias and split columns must differ: {cols}")
    return cols


def _rows(table: pd.DataFrame, mask: np.ndarray, path_col: str) -> str:
    """'row 3 (a.jpg), row 9 (b.jpg), ... (N in all)' for the first few rows of ``mask``."""
    where = np.flatnonzero(mask)
    shown = ", ".join(f"row {i + 1} ({table[path_col].iloc[i]})" for i in where[:_SHOW])
    return shown + (f", ... ({len(where)} in all)" if len(where) > _SHOW else "")


def encode_labels(
    table: pd.DataFrame, column: str, path_col: str, source: Path
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Column -> (int64 codes ``[N]``, label names in code order); see the module docstring."""
    raw = table[column]
    text = raw.astype(str).str.strip()
    empty = (raw.isna() | text.isin(["", "nan", "NaN", "None", "<NA>"])).to_numpy()
    if empty.any():
        raise ValueError(
            f"{source}: column {column!r} has {int(empty.sum())} empty/NaN label(s): "
            f"{_rows(table, empty, path_col)}; every image needs a label"
        )
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    if not np.isnan(numbers).any():
        bad = (numbers != np.round(numbers)) | (numbers < 0)
        if bad.any():
            raise ValueError(
                f"{source}: column {column!r} has unknown label(s) (not an integer >= 0): "
                f"{_rows(table, bad, path_col)}"
            )
        codes = numbers.astype(np.int64)
        present = set(codes.tolist())
        top = max(present)
        if top + 1 > 2 * len(present) + 1000:
            # Checked before range(top + 1) is built: {0, 10**9} (an ID column) would take GBs.
            raise ValueError(
                f"{source}: column {column!r}: integer labels must be 0..max with every value "
                f"present; its {len(present)} distinct value(s) reach {top} (an ID column used "
                "as a label?). Choose the label column, or recode it to 0..K-1"
            )
        gaps = sorted(set(range(top + 1)) - present)
        if gaps:
            raise ValueError(
                f"{source}: column {column!r}: integer labels must be 0..{max(present)} with "
                f"every value present; unknown label set: {sorted(present)} lacks {gaps}. "
                "Recode the column (or use text labels, which are coded in sorted order)"
            )
        return torch.from_numpy(codes), tuple(str(v) for v in range(max(present) + 1))
    names = tuple(sorted(set(text.tolist())))
    lookup = {n: i for i, n in enumerate(names)}
    return torch.tensor([lookup[t] for t in text], dtype=torch.long), names


def _check_two_values(names: Sequence[str], column: str, role: str, source: Path) -> None:
    """One target value trains no classifier; one bias value makes every image "aligned" or
    "conflicting" by its target alone, so the group metrics would mean nothing."""
    if len(names) < 2:
        raise ValueError(
            f"{source}: {role} column {column!r} holds a single value ({names[0]!r}) in every "
            f"row; expected at least 2 {role} values (is {column!r} the right column?)"
        )


def _split_of_rows(
    table: pd.DataFrame, cols: _Columns, groups: torch.Tensor, seed: int, source: Path
) -> tuple[dict[str, torch.Tensor], str]:
    """Row indices of each split and where the split came from (``column`` or ``stratified``)."""
    if cols.split is not None:
        text = table[cols.split].astype(str).str.strip().str.lower()
        # "0.0" from a float column is split 0.
        text = text.str.replace(r"^(\d)\.0+$", r"\1", regex=True)
        named = text.map(SPLIT_VALUES)
        unknown = named.isna().to_numpy()
        if unknown.any():
            values = sorted(set(table[cols.split][unknown].astype(str)))
            raise ValueError(
                f"{source}: column {cols.split!r} has unknown split value(s) {values[:_SHOW]} "
                f"in {_rows(table, unknown, cols.path)}; expected 0/1/2 or train/val/test"
            )
        return {s: torch.from_numpy(np.flatnonzero(named.to_numpy() == s)) for s in SPLITS}, (
            "column"
        )
    gen = torch.Generator().manual_seed(seed)
    parts = stratified(torch.arange(len(table)), groups, (0.8, 0.1, 0.1), gen)
    return {s: p.sort().values for s, p in zip(SPLITS, parts)}, "stratified"


def _resolve_files(
    table: pd.DataFrame, cols: _Columns, base: Path, source: Path, on_error: str
) -> tuple[list[str], np.ndarray]:
    """Absolute, normalised file paths and a bool mask of the rows whose file exists."""
    files = [
        os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))
        for p in table[cols.path].astype(str).str.strip()
    ]
    seen: dict[str, int] = {}
    dup = np.array([seen.setdefault(f, i) != i for i, f in enumerate(files)], dtype=bool)
    if dup.any():
        raise ValueError(
            f"{source}: {int(dup.sum())} image file(s) listed more than once: "
            f"{_rows(table, dup, cols.path)}; each image may appear once"
        )
    exists = np.array([os.path.isfile(f) for f in files], dtype=bool)
    if not exists.any() or (on_error == "raise" and not exists.all()):
        raise FileNotFoundError(
            f"{source}: {int((~exists).sum())} of {len(files)} image files do not exist "
            f"(relative paths are read from {base}): {_rows(table, ~exists, cols.path)}. "
            "Fix the paths, pass root= (--root) to the image folder, or on_error='skip'"
        )
    return files, exists


def _decode(
    files: list[str],
    rows: np.ndarray,
    image_size: int,
    crop: str,
    cache_dir: str | os.PathLike | None,
    on_error: str,
    source: Path,
) -> tuple[DecodedImages, np.ndarray]:
    """Decode ``files[rows]`` once (cached) -> (DecodedImages, bool ``[len(rows)]`` decoded)."""
    chosen = [files[i] for i in rows]
    common = os.path.commonpath(chosen) if len(chosen) > 1 else os.path.dirname(chosen[0])
    if os.path.isfile(common):  # a single file
        common = os.path.dirname(common)
    decoded = load_images(
        chosen,
        image_size,
        root=common,
        name=f"metadata-{source.stem}",
        crop=crop,
        cache_key_parts={"depth": DEPTH_VERSION},
        cache_dir=cache_dir,
        on_error="skip",
        root_is_data=False,  # ``common`` is only the images' common ancestor
    )
    if decoded.failed and on_error == "raise":
        shown = ", ".join(f"{chosen[i]} ({m})" for i, m in list(decoded.failed.items())[:_SHOW])
        more = f"; {len(decoded.failed)} in all" if len(decoded.failed) > _SHOW else ""
        raise ImageDecodeError(
            f"{source}: cannot decode {len(decoded.failed)} image(s): {shown}{more}. Replace "
            "them, drop their rows, or pass on_error='skip' to skip and count them"
        )
    return decoded, decoded.ok.numpy()


def _aligned(
    given: Iterable[tuple[object, object]] | None,
    classes: Sequence[str],
    bias_classes: Sequence[str],
    y_train: torch.Tensor,
    b_train: torch.Tensor,
) -> tuple[list[tuple[int, int]], str]:
    if given is None:
        return aligned_from_counts(y_train, b_train, len(classes), len(bias_classes)), ALIGNED_RULE
    out = []
    for yv, bv in given:
        ys, bs = str(yv).strip(), str(bv).strip()
        if ys not in classes or bs not in bias_classes:
            raise ValueError(
                f"aligned_groups: ({yv!r}, {bv!r}) is not a (target, bias) pair of the table; "
                f"targets {list(classes)}, bias values {list(bias_classes)}"
            )
        out.append((classes.index(ys), bias_classes.index(bs)))
    return out, "given"


class MetadataDataset(TensorImageDataset):
    """Images listed in a metadata table, with target and bias columns; see the module docstring.

    Args:
        metadata: the ``.csv`` / ``.parquet`` table.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder that relative image paths start from (default: the table's folder).
        target, bias: label column names (SubpopBench: ``y``, ``a``).
        path_column: image-file column (default: the first of :data:`PATH_COLUMNS` present).
        split_column: split column; ``"split"`` by default, used only if present. None ignores
            any split column and makes the seeded stratified split.
        aligned_groups: bias-aligned ``(target, bias)`` pairs in the table's label values;
            default: derived from the training split (module docstring).
        seed: seeds the stratified split when there is no split column.
        image_size: side of the stored square images.
        crop: ``"center-square"`` or ``"none"`` (see :mod:`debias.data.cache`).
        mean, std: per-channel normalisation (default ``(0.5,) * 3``; pass ImageNet statistics
            for an ImageNet-pretrained encoder).
        transform: optional per-image callable (else :meth:`normalize`).
        cache_dir: decode cache folder (default ``$DEBIAS_CACHE`` or ``~/.cache/debias``).
        on_error: ``"raise"`` on a missing or unreadable image, ``"skip"`` to drop and count it.

    Attributes beyond :class:`TensorImageDataset`: ``metadata_path``, ``root``, ``columns``,
    ``files`` (absolute paths), ``rows`` (table row of each image), ``classes``,
    ``bias_classes``, ``split_source``, ``split_info``, ``aligned_rule``, ``empty_groups``,
    ``skipped``, ``skipped_files``, ``cache_path``, ``cache_hit``.
    """

    name = "metadata"

    def __init__(
        self,
        metadata: str | os.PathLike,
        split: str = "train",
        *,
        root: str | os.PathLike | None = None,
        target: str = "y",
        bias: str = "a",
        path_column: str | None = None,
        split_column: str | None = "split",
        aligned_groups: Iterable[tuple[object, object]] | None = None,
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        crop: str = "center-square",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
        self.metadata_path = Path(metadata).expanduser()
        table = read_metadata(self.metadata_path)
        if len(table) == 0:
            raise ValueError(f"{self.metadata_path}: the table has no rows")
        self.root = Path(root).expanduser() if root is not None else self.metadata_path.parent
        self.split, self.seed = split, int(seed)
        src = self.metadata_path

        # 1. columns and labels
        if split_column == "split" and "split" not in table.columns:
            split_column = None  # the default is optional; a named column is required
        self.columns = _columns(table, src, target, bias, path_column, split_column)
        y_all, self.classes = encode_labels(table, self.columns.target, self.columns.path, src)
        b_all, self.bias_classes = encode_labels(table, self.columns.bias, self.columns.path, src)
        _check_two_values(self.classes, self.columns.target, "target", src)
        _check_two_values(self.bias_classes, self.columns.bias, "bias", src)
        self.target_name, self.bias_name = self.columns.target, self.columns.bias
        num_bias = len(self.bias_classes)

        # 2. splits, from the table only
        parts, self.split_source = _split_of_rows(
            table, self.columns, group_code(y_all, b_all, num_bias), self.seed, src
        )
        train = parts["train"]
        aligned, self.aligned_rule = _aligned(
            aligned_groups, self.classes, self.bias_classes, y_all[train], b_all[train]
        )

        # 3. files: every row of every split is checked and decoded once
        files, exists = _resolve_files(table, self.columns, self.root, src, on_error)
        present = np.flatnonzero(exists)
        decoded, ok = _decode(files, present, image_size, crop, cache_dir, on_error, src)
        self.cache_path, self.cache_hit = decoded.cache_path, decoded.cache_hit
        image_row = np.full(len(table), -1, dtype=np.int64)
        image_row[present[ok]] = np.flatnonzero(ok)

        # 4. this split
        idx = parts[split].numpy()
        self._record_skips(idx, exists, image_row, files)
        idx = idx[image_row[idx] >= 0]
        if len(idx) == 0:
            raise ValueError(
                f"{src}: split {split!r} is empty ({self.split_source} split; "
                f"{ {s: len(p) for s, p in parts.items()} } rows per split before skipping)"
            )
        self.files = [files[i] for i in idx]
        self.rows = torch.from_numpy(idx)
        super().__init__(
            decoded.images[torch.from_numpy(image_row[idx])],
            y_all[idx],
            b_all[idx],
            aligned_groups=aligned,
            num_classes=len(self.classes),
            num_bias=num_bias,
            mean=mean,
            std=std,
            transform=transform,
            class_names=[str(c) for c in self.classes],
            bias_names=[str(c) for c in self.bias_classes],
        )
        self._report_groups(parts)

    def _record_skips(
        self, idx: np.ndarray, exists: np.ndarray, image_row: np.ndarray, files: list[str]
    ) -> None:
        self.skipped: dict[str, int] = {}
        self.skipped_files: list[str] = []
        for reason, mask in (
            (SKIP_MISSING, ~exists[idx]),
            (SKIP_UNREADABLE, exists[idx] & (image_row[idx] < 0)),
        ):
            if mask.any():
                self.skipped[reason] = int(mask.sum())
                self.skipped_files += [files[i] for i in idx[mask]]

    def _report_groups(self, parts: dict[str, torch.Tensor]) -> None:
        counts = torch.bincount(
            self.targets * self.num_bias + self.bias, minlength=self.num_classes * self.num_bias
        ).view(self.num_classes, self.num_bias)
        self.empty_groups = [tuple(g) for g in (counts == 0).nonzero().tolist()]
        self.split_info = {
            "split": self.split,
            "split_source": self.split_source,
            "n_split": {s: len(p) for s, p in parts.items()},
            "groups": {
                f"y={y},b={b}": int(counts[y, b])
                for y in range(self.num_classes)
                for b in range(self.num_bias)
            },
            "skipped": dict(self.skipped),
        }
        if self.empty_groups:
            names = ", ".join(
                f"(y={self.classes[y]}, b={self.bias_classes[b]})" for y, b in self.empty_groups
            )
            warnings.warn(
                f"{self.metadata_path}: split {self.split!r} has no images in group(s) {names}; "
                "their accuracy is undefined and worst-group metrics skip them",
                stacklevel=3,
            )
