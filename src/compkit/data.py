"""Reading and validating a competition's CSV files (pixel layout: id, target, extras, pixels).

Every problem is a :class:`DataError` whose one-line message names the file, the line (as an editor
shows it: the header is line 1, the first data row line 2) or column, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import cache, tasks
from compkit.config import Competition
from compkit.errors import DataError, line, shown
from compkit.io import as_ids, read_id_csv
from compkit.photos import decode_chunks, read_image_files


DECODE_CHUNK = 512  # images decoded per block on the way into the cache: bounds the builder's memory


@dataclass(frozen=True)
class Images:
    """One split of a competition.

    Attributes:
        ids: (N,) the id column, in file order.
        images: (N, H, W, C) uint8 pixels 0-255 (a read-only memory map when read through the cache:
            :mod:`compkit.cache`); None when read without pixels (:func:`load_labels`).
        labels: the encoded target (:meth:`compkit.tasks.Task.read_target`: (N,) int64 class indices or float64 values,
            (N, T) 0/1 tags for multi-label, (N, H) class indices for multi-head); None for unlabelled test data.
        extras: (N, E) DataFrame of the configured extra columns (e.g. DACON's letter).
    """

    ids: np.ndarray
    images: np.ndarray | None
    labels: np.ndarray | None
    extras: pd.DataFrame


def locate(data_dir: Path, filename: str, comp: Competition) -> Path:
    """Path of ``filename`` in ``data_dir``; raises :class:`DataError` saying where to get it."""
    path = Path(data_dir) / filename
    if not path.is_file():
        where = f" (download it from {comp.url})" if comp.url else ""
        raise DataError(
            f"{filename}: not found in {Path(data_dir).resolve()}{where}; put it there or pass DATA_DIR=<folder>"
        )
    return path


def _checked_csv(path: Path, read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    """``read(path)``: an empty or unreadable file, or one with a header only, is one DataError line."""
    try:
        frame = read(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; download it again") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); download it again") from None
    if frame.empty:
        raise DataError(f"{path}: header only, no rows; download it again")
    return frame


def _read_csv(path: Path, id_column: str = "", text: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    return _checked_csv(path, lambda p: read_id_csv(p, id_column, text))


def _require_columns(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{path}: missing column(s) {shown} ({len(missing)} in all); "
            "fix the file or the column names in the competition config"
        )


def _reject_unknown_columns(frame: pd.DataFrame, path: Path, known: list[str]) -> None:
    unknown = [c for c in frame.columns if c not in set(known)]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{path}: unexpected column(s) {shown} ({len(unknown)} in all); drop them from the file "
            "or list them in competition.extra_columns"
        )


def _first_bad(mask: np.ndarray) -> int:
    """0-based index of the first True in ``mask``."""
    return int(np.flatnonzero(mask)[0])


def _check_ids(frame: pd.DataFrame, path: Path, id_column: str) -> np.ndarray:
    """The id column as (N,) values, refusing an empty, duplicate or mixed (text among numbers) id."""
    ids = frame[id_column]
    if ids.isna().any():
        raise DataError(f"{path}: line {line(_first_bad(ids.isna().to_numpy()))}: column {id_column!r} is empty; fill in the id")
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        first = _first_bad((ids == ids.iloc[row]).to_numpy())
        raise DataError(
            f"{path}: line {line(row)}: duplicate {id_column} {shown(ids.iloc[row])} (also on line {line(first)}); ids must be unique"
        )
    numeric = pd.to_numeric(ids, errors="coerce").notna().to_numpy()
    if numeric.any() and not numeric.all():  # text among numbers: no order, no one type to read them back as
        row = _first_bad(numeric != numeric[0])
        kinds = ("a number", "text") if numeric[0] else ("text", "a number")  # (line 2's kind, this line's kind)
        raise DataError(
            f"{path}: line {line(row)}: {id_column} {shown(ids.iloc[row])} is {kinds[1]} where line 2's {shown(ids.iloc[0])} "
            f"is {kinds[0]}; use ids of one kind (all numbers or all text)"
        )
    return ids.to_numpy()


def _pixels(frame: pd.DataFrame, path: Path, comp: Competition) -> np.ndarray:
    columns = comp.pixel_columns
    _require_columns(frame, path, columns)
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 255) | (values != np.floor(values))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raw = frame[columns[col]].iloc[row]
        raise DataError(
            f"{path}: line {line(row)}, column {columns[col]!r}: pixel {shown(raw)} is not an integer in 0-255; fix or drop the row"
        )
    return values.astype(np.uint8).reshape(len(frame), *comp.image_shape)


def _ids(frame: pd.DataFrame, path: Path, comp: Competition) -> np.ndarray:
    if not comp.id_column:  # Kaggle digit-recognizer: the id is the 1-based row number
        return np.arange(1, len(frame) + 1)
    return _check_ids(frame, path, comp.id_column)


def read_images(path: Path, comp: Competition, labelled: bool) -> Images:
    """Read and validate a pixel CSV (train when ``labelled``, else test).

    Raises:
        DataError: empty file, missing id/target/extra/pixel column, any other column, empty, duplicate or mixed
            (text among numbers) id, pixel missing, not an integer or outside 0-255, label outside the classes.
    """
    frame = _read_csv(path, comp.id_column, tasks.of(comp).text_columns if labelled else ())
    id_columns = [comp.id_column] if comp.id_column else []
    columns = [*id_columns, *(tasks.of(comp).label_columns if labelled else []), *comp.extra_columns]
    _require_columns(frame, path, columns)
    _reject_unknown_columns(frame, path, [*columns, *comp.pixel_columns])
    ids = _ids(frame, path, comp)
    labels = tasks.of(comp).read_target(frame, path) if labelled else None
    return Images(ids, _pixels(frame, path, comp), labels, frame[comp.extra_columns].reset_index(drop=True))


def _image_folder_table(data_dir: Path, comp: Competition) -> Images:
    path = locate(data_dir, comp.train_file, comp)
    task = tasks.of(comp)
    frame = _read_csv(path, comp.id_column, task.text_columns)
    _require_columns(frame, path, [comp.id_column, *task.label_columns, *comp.extra_columns])
    ids = _check_ids(frame, path, comp.id_column)
    labels = task.read_target(frame, path)
    return Images(ids, None, labels, frame[comp.extra_columns].reset_index(drop=True))


def _test_names(data_dir: Path, comp: Competition) -> np.ndarray | None:
    folder = Path(data_dir) / comp.test_images
    if not folder.is_dir():
        return None
    return np.array(sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))


def _folder_pixels(folder: Path, names: list[str], comp: Competition, cache_dir: Path | None, split: str,
                   build: bool = True) -> np.ndarray:
    """The named images decoded (no ``cache_dir``), or from ``split``'s cache in ``cache_dir``, built on first use
    (without ``build``, a missing or damaged cache is left as it is and the images are decoded in memory)."""
    if cache_dir is None:
        return read_image_files(folder, names, comp)
    try:
        sources = [cache.stamp(folder, name) for name in names]
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: not found; the labels name a file that is not in {folder}") from None
    crop = {"crop_to_object": comp.object_margin} if comp.crop_to_object else None
    digest, shape = cache.key(sources, comp.image_shape, crop), tuple(comp.image_shape)
    pixels = cache.find(cache_dir, split, digest, shape)
    if pixels is None and not build:
        return read_image_files(folder, names, comp)
    if pixels is None:
        chunks = decode_chunks(folder, names, comp, DECODE_CHUNK)
        pixels = cache.build(cache_dir, split, digest, shape, len(names), chunks, sources=len(names))
    return pixels


def _csv_split(path: Path, comp: Competition, labelled: bool, cache_dir: Path | None, split: str, build: bool = True) -> Images:
    """A pixel CSV read whole (no ``cache_dir``), or its table plus ``split``'s cache, parsed once on first use
    (without ``build``, a missing or damaged cache is left as it is and the CSV read whole)."""
    if cache_dir is None:
        return read_images(path, comp, labelled)
    digest, shape = cache.key([cache.stamp(path.parent, path.name)], comp.image_shape), tuple(comp.image_shape)
    pixels = cache.find(cache_dir, split, digest, shape)
    if pixels is not None:
        return replace(read_table(path, comp, labelled), images=pixels)
    whole = read_images(path, comp, labelled)
    if not build:
        return whole
    return replace(whole, images=cache.build(cache_dir, split, digest, shape, len(whole.ids), [whole.images], sources=1))


def read_table(path: Path, comp: Competition, labelled: bool) -> Images:
    """A pixel CSV's ids, labels (when ``labelled``) and extras, its pixel columns left unparsed (``images`` None).

    Raises:
        DataError: as :func:`read_images`, except for the pixels' values, which are not read.
    """
    id_columns, texts = [comp.id_column] if comp.id_column else [], tasks.of(comp).text_columns if labelled else []
    columns = [*id_columns, *(tasks.of(comp).label_columns if labelled else []), *comp.extra_columns]

    def read(path: Path) -> pd.DataFrame:  # the header checked before any row is parsed
        head = pd.read_csv(path, nrows=0)
        _require_columns(head, path, columns)
        _reject_unknown_columns(head, path, [*columns, *comp.pixel_columns])
        return pd.read_csv(path, usecols=columns or comp.pixel_columns[:1], dtype=dict.fromkeys([*id_columns, *texts], str))

    frame = _checked_csv(path, read)
    for column in id_columns:
        frame[column] = as_ids(frame[column])
    labels = tasks.of(comp).read_target(frame, path) if labelled else None
    return Images(_ids(frame, path, comp), None, labels, frame[comp.extra_columns].reset_index(drop=True))


def load_train(data_dir: Path, comp: Competition, cache_dir: Path | None = None, build: bool = True) -> Images:
    """The labelled training split; see :func:`read_images` and :func:`read_image_files`.

    With ``cache_dir`` (:attr:`compkit.config.Paths.cache`) the pixels are decoded (or parsed) once into
    the split's cache there and returned as a read-only memory map (:mod:`compkit.cache`). Without ``build`` the cache
    is only read: a missing or damaged one is left as it is and the pixels are decoded in memory (`compkit check`).
    """
    if comp.layout == "image_folder":
        table = _image_folder_table(data_dir, comp)
        names = [str(i) for i in table.ids]
        return replace(table, images=_folder_pixels(Path(data_dir) / comp.train_images, names, comp, cache_dir, "train", build))
    return _csv_split(locate(data_dir, comp.train_file, comp), comp, True, cache_dir, "train", build)


def load_test(data_dir: Path, comp: Competition, cache_dir: Path | None = None, build: bool = True) -> Images | None:
    """The unlabelled test split, or None when the competition's test file (or folder) is not in ``data_dir``;
    ``cache_dir`` and ``build`` as in :func:`load_train`."""
    if comp.layout == "image_folder":
        names = _test_names(data_dir, comp)
        if names is None:
            return None
        pixels = _folder_pixels(Path(data_dir) / comp.test_images, list(names), comp, cache_dir, "test", build)
        return Images(names, pixels, None, pd.DataFrame(index=range(len(names))))
    path = Path(data_dir) / comp.test_file
    return _csv_split(path, comp, False, cache_dir, "test", build) if path.is_file() else None


def load_labels(data_dir: Path, comp: Competition) -> Images:
    """The training split's ids, labels and extras without decoding or parsing a pixel (``images`` None)."""
    if comp.layout == "image_folder":
        return _image_folder_table(data_dir, comp)
    return read_table(locate(data_dir, comp.train_file, comp), comp, labelled=True)


def load_test_ids(data_dir: Path, comp: Competition) -> np.ndarray | None:
    """The test split's (N,) ids without reading a pixel, or None without a test file (or folder)."""
    if comp.layout == "image_folder":
        return _test_names(data_dir, comp)
    path = Path(data_dir) / comp.test_file
    return read_table(path, comp, labelled=False).ids if path.is_file() else None


def has_test(data_dir: Path, comp: Competition) -> bool:
    """True when the test split is there, without reading it."""
    name = comp.test_images if comp.layout == "image_folder" else comp.test_file
    return (Path(data_dir) / name).exists()


def load_sample_submission(data_dir: Path, comp: Competition) -> pd.DataFrame:
    """The sample submission, checked to have exactly ``comp.submission_columns`` when the config gives them
    (its format: :func:`compkit.formats.submission_format`), and unique, non-empty ids of one kind.

    Raises:
        DataError: other columns, or an empty, duplicate or mixed id (names the line).
    """
    path = locate(data_dir, comp.sample_submission, comp)
    frame = _read_csv(path)
    id_column = comp.submission_columns[0] if comp.submission_columns else str(frame.columns[0])
    frame = _read_csv(path, id_column)  # again, ids as text (leading zeros kept)
    if comp.submission_columns is not None and list(frame.columns) != comp.submission_columns:
        raise DataError(
            f"{path}: columns {list(frame.columns)} differ from competition.submission_columns "
            f"{comp.submission_columns}; fix the config"
        )
    _check_ids(frame, path, id_column)
    return frame


def check_test_ids(train: Images, test: Images, data_dir: Path, comp: Competition) -> None:
    """Refuse a test file sharing ids with train (a leak, or files from two releases); row-number ids are exempt.

    Raises:
        DataError: names the first test row whose id is also a train id.
    """
    if not comp.id_column:  # row-number ids (Kaggle digit-recognizer) restart at 1 in each file
        return
    shared = np.isin(test.ids.astype(str), train.ids.astype(str))
    if shared.any():
        row = _first_bad(shared)
        raise DataError(
            f"{Path(data_dir) / comp.test_file}: line {line(row)}: {comp.id_key} {shown(test.ids[row])} is also in "
            f"{comp.train_file} ({int(shared.sum())} shared ids); use the train and test files of one release"
        )


def check_sample_ids(sample: pd.DataFrame, test_ids: np.ndarray, data_dir: Path, comp: Competition) -> None:
    """Refuse a sample submission whose ids are not exactly the test ids (in any order).

    Raises:
        DataError: names the first sample row whose id is not a test id, or the first test id the sample lacks.
    """
    id_column = sample.columns[0]
    sample_ids, test_keys = sample[id_column].to_numpy().astype(str), np.asarray(test_ids).astype(str)  # str arrays: np.isin sorts
    unknown = ~np.isin(sample_ids, test_keys)
    where = f"{Path(data_dir) / comp.sample_submission}"
    if unknown.any():
        row = _first_bad(unknown)
        raise DataError(
            f"{where}: line {line(row)}: {id_column} {shown(sample[id_column].iloc[row])} is not in {comp.test_file}; "
            "use the sample submission that ships with this test file"
        )
    missing = ~np.isin(test_keys, sample_ids)
    if missing.any():
        raise DataError(
            f"{where}: lacks {int(missing.sum())} ids of {comp.test_file} (first: {shown(np.asarray(test_ids)[missing][0])}); "
            "use the sample submission that ships with this test file"
        )
