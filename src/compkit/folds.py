"""Stage 1: a stratified public/private holdout carved from train, and stratified K folds of the rest.

Writes ``folds/<competition>/holdout.csv`` (id, Usage: Public|Private) and
``folds/<competition>/folds.csv`` (id, fold: 0..K-1), both sorted by id, then ``folds.json``, the
sha256 of both: readers refuse a pair it does not describe (compkit.artifacts). The same seed gives
byte-identical files. Holdout rows are in no fold, so no model ever trains on them.
"""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.config import Config, ConfigError, Paths
from compkit.data import (DataError, Images, check_sample_ids, check_test_ids, load_labels, load_sample_submission,
                          load_test, load_test_ids, load_train)
from compkit.formats import load_solution, submission_format, submission_ids


def strata(train: Images, config: Config) -> np.ndarray:
    """(N,) str stratification key per row: the ``folds.stratify`` columns' values joined by '|'; the target's value
    is the task's stratum (:meth:`compkit.tasks.Task.stratum`: the class, a quantile bin of a regression target, or
    a multi-head target's head's class, the head named as its column).
    Without ``folds.stratify``, the target's strata alone (a multi-head target: its first head's). A multi-label target's strata are its (N, T) 0/1 tag matrix,
    split by iterative stratification (Sechidis et al., ECML PKDD 2011; the ``iterative-stratification`` package); so
    are several heads of a multi-head target named together: the (N, sum K_h) one-hot of their classes.

    Raises:
        DataError: an unknown column, or a multi-label target or several heads stratified together with other columns.
    """
    comp, task = config.competition, tasks.of(config.competition)
    columns, parts = config.folds.stratify or task.target_names[:1], []
    heads = [c for c in columns if c in task.heads]
    if len(heads) > 1:  # several heads at once: their joined labels would leave most strata a row or two
        if len(heads) < len(columns):
            raise DataError(f"folds.stratify: the heads {heads} are stratified together (iteratively, on their one-hot) "
                            "and alone; remove the other columns")
        return task.heads_one_hot(heads, train.labels)
    for column in columns:
        if column in task.target_names:
            key = task.stratum(column, train.labels)
            if key.ndim == 2 and len(columns) > 1:
                raise DataError(f"folds.stratify: the multi-label target {column!r} is stratified alone (iteratively, on "
                                "every tag); remove the other columns")
            if key.ndim == 2:
                return key
            parts.append(key)
        elif column in train.extras:
            parts.append(train.extras[column].astype(str).to_numpy())
        else:
            raise DataError(
                f"folds.stratify: {column!r} is neither the target nor an extra column; "
                f"use {[*task.target_names, *comp.extra_columns]}"
            )
    return np.array(["|".join(values) for values in zip(*parts)])


def _check_counts(keys: np.ndarray, needed: int, what: str) -> None:
    if keys.ndim == 2:  # tag matrices: iterative stratification spreads each tag as far as its rows go
        return
    values, counts = np.unique(keys, return_counts=True)
    if counts.min() < needed:
        rare = str(values[counts.argmin()])
        raise DataError(
            f"train: stratum {rare!r} of folds.stratify has only {counts.min()} rows, too few for {what}; "
            "lower folds.n_splits or folds.holdout_fraction, or stratify on fewer columns"
        )


def split_holdout(ids: np.ndarray, keys: np.ndarray, fraction: float, public_share: float, seed: int) -> pd.DataFrame:
    """Carve a stratified holdout and tag its rows Public or Private (stratified too).

    Args:
        ids: (N,) row ids; keys: (N,) stratification keys.
        fraction: share of rows held out, in (0, 1); public_share: share of the holdout that is Public.

    Returns:
        DataFrame ``id, Usage`` of the holdout rows, sorted by id.
    """
    _check_counts(keys, 4, "a stratified public/private holdout (4 rows per stratum)")
    fix = "raise folds.holdout_fraction and keep folds.public_share away from 0 and 1, or stratify on fewer columns"
    rest, held, _, held_keys = _stratified_split(ids, keys, {"test_size": fraction}, seed, f"the holdout ({fraction:g} of {len(ids)} rows)", fix)
    public, private, _, _ = _stratified_split(held, held_keys, {"train_size": public_share}, seed,
                                              f"the public part ({public_share:g} of {len(held)} holdout rows)", fix)
    usage = pd.DataFrame({"id": np.concatenate([public, private]), "Usage": ["Public"] * len(public) + ["Private"] * len(private)})
    return usage.sort_values("id", kind="stable").reset_index(drop=True)


def _stratified_split(ids: np.ndarray, keys: np.ndarray, size: dict, seed: int, what: str, fix: str) -> list:
    """:func:`sklearn.model_selection.train_test_split` stratified on ``keys``; its refusal becomes a one-line DataError.

    sklearn refuses a split that leaves a part empty, or that cannot give each stratum a row on both sides
    (a stratum of 4-5 rows in a 20% holdout); the message names the rarest stratum and ``fix``.
    """
    try:
        if keys.ndim == 2:
            splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=_test_size(size, len(ids)), random_state=seed)
            rest, part = next(splitter.split(ids, keys))
            return ids[rest], ids[part], keys[rest], keys[part]
        return train_test_split(ids, keys, **size, stratify=keys, random_state=seed)
    except ValueError as exc:
        if keys.ndim == 2:
            raise DataError(f"train: cannot split off {what}: {str(exc).splitlines()[0]}; {fix}") from None
        values, counts = np.unique(keys, return_counts=True)
        raise DataError(
            f"train: cannot split off {what}: {str(exc).splitlines()[0]} (rarest stratum {str(values[counts.argmin()])!r}: "
            f"{counts.min()} rows); {fix}"
        ) from None


def _test_size(size: dict, n: int) -> float | int:
    """``test_size`` of a split given as ``{"test_size": ...}`` or ``{"train_size": ...}`` (a share or a count):
    iterstrat's shuffle split needs it spelled out."""
    if "test_size" in size:
        return size["test_size"]
    train = size["train_size"]
    return 1 - train if isinstance(train, float) else n - train


def split_grouped_holdout(ids: np.ndarray, keys: np.ndarray, groups: np.ndarray, fraction: float, public_share: float,
                          seed: int) -> pd.DataFrame:
    """:func:`split_holdout` with every group whole: the holdout is one part of a shuffled
    :class:`sklearn.model_selection.StratifiedGroupKFold` into ``round(1 / fraction)`` parts, and its Public rows one part
    of ``round(1 / public_share)`` (so the shares are 1/n: 0.2 and 0.5 exactly; 0.3 becomes 1/3).

    Raises:
        DataError: fewer groups than parts.
    """
    held = _group_part(keys, groups, fraction, seed, "the holdout")
    public = held[_group_part(keys[held], groups[held], public_share, seed, "the public part")]
    usage = pd.Series("Private", index=held)
    usage[public] = "Public"
    frame = pd.DataFrame({"id": ids[held], "Usage": usage.to_numpy()})
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def _group_part(keys: np.ndarray, groups: np.ndarray, share: float, seed: int, what: str) -> np.ndarray:
    """(n,) positions of the first part of a shuffled, grouped, stratified split of the rows into round(1 / share) parts."""
    parts = max(2, round(1 / share))
    if len(np.unique(groups)) < parts:
        raise DataError(f"train: {len(np.unique(groups))} groups of folds.group_column cannot make {what} "
                        f"(1 of {parts} parts); use more groups or a larger share")
    splitter = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed)
    _, part = next(splitter.split(keys, keys, groups))
    return part


def assign_folds(ids: np.ndarray, keys: np.ndarray, n_splits: int, seed: int, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Shuffled :class:`sklearn.model_selection.StratifiedKFold`, or ``StratifiedGroupKFold`` with ``groups`` (no group
    in two folds): DataFrame ``id, fold`` sorted by id."""
    _check_counts(keys, n_splits, f"{n_splits} stratified folds")
    fold = np.empty(len(ids), dtype=np.int64)
    if groups is None:
        splitter = MultilabelStratifiedKFold if keys.ndim == 2 else StratifiedKFold
        split = splitter(n_splits=n_splits, shuffle=True, random_state=seed).split(ids, keys)
    else:
        if len(np.unique(groups)) < n_splits:
            raise DataError(f"train: {len(np.unique(groups))} groups of folds.group_column, too few for {n_splits} folds; "
                            "lower folds.n_splits")
        split = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(ids, keys, groups)
    for k, (_, val) in enumerate(split):
        fold[val] = k
    frame = pd.DataFrame({"id": ids, "fold": fold})
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def subsample(ids: np.ndarray, keys: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """A boolean (N,) mask keeping a stratified sample of at most ``max_rows`` rows (all rows when None)."""
    if max_rows is None or max_rows >= len(ids):
        return np.ones(len(ids), dtype=bool)
    kept, _, _, _ = _stratified_split(ids, keys, {"train_size": max_rows}, seed, f"a sample of {max_rows} rows",
                                      "raise folds.max_rows (at least one row per stratum) or unset it")
    return np.isin(ids, kept)


def make_folds(train: Images, config: Config, with_holdout: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (folds, holdout) tables for ``train``; holdout ids are excluded from the folds.

    Without a holdout (``with_holdout=False``: the competition ships its test labels) the holdout
    table is empty and every row may join a fold. ``folds.max_rows`` caps the fold rows by a
    stratified subsample; rows left out are in neither table.
    """
    spec = config.folds
    keys = strata(train, config)
    groups = train.extras[spec.group_column].astype(str).to_numpy() if spec.group_column else None
    if not with_holdout:
        holdout = pd.DataFrame({"id": train.ids[:0], "Usage": pd.Series([], dtype=str)})
    elif groups is None:
        holdout = split_holdout(train.ids, keys, spec.holdout_fraction, spec.public_share, spec.seed)
    else:
        holdout = split_grouped_holdout(train.ids, keys, groups, spec.holdout_fraction, spec.public_share, spec.seed)
    rest = ~np.isin(train.ids, holdout["id"].to_numpy())
    rest[rest] = subsample(train.ids[rest], keys[rest], spec.max_rows, spec.seed)
    folds = assign_folds(train.ids[rest], keys[rest], spec.n_splits, spec.seed, None if groups is None else groups[rest])
    id_column = config.competition.id_key
    return folds.rename(columns={"id": id_column}), holdout.rename(columns={"id": id_column})


def load_folds(config: Config, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``folds.csv`` and ``holdout.csv``, verified against ``folds.json`` (:meth:`compkit.artifacts.folds.FoldFiles.read`).

    Raises:
        DataError: a file is missing or the pair is not the one ``folds.json`` records; says to run ``make folds``.
    """
    return Layout(config, paths).folds.read()


def check_inputs(config: Config, paths: Paths) -> tuple[Images, Images | None]:
    """Read and validate every competition file before anything is written: train, with a test file
    test (no id shared with train) and the sample submission (exactly the test ids), and the solution
    file when there is one. Returns (train, test) without pixels (``images`` None): :func:`check_pixels` reads those.

    Raises:
        DataError: the first problem found (see :func:`compkit.data.read_images`, :func:`compkit.formats.load_solution`).
    """
    comp = config.competition
    train, test_ids = load_labels(paths.data, comp), load_test_ids(paths.data, comp)
    test = None if test_ids is None else Images(test_ids, None, None, pd.DataFrame(index=range(len(test_ids))))
    if test is not None:
        check_test_ids(train, test, paths.data, comp)
        fmt = submission_format(paths.data, comp)
        check_sample_ids(load_sample_submission(paths.data, comp), submission_ids(fmt, test.ids), paths.data, comp)
    if (paths.data / comp.solution_file).is_file():  # its problems surface here, not after a day of training
        load_solution(paths.data, comp, submission_format(paths.data, comp))
    return train, test


def memory_bytes() -> int:
    """The machine's memory in bytes: physical memory, or the cgroup's limit (``memory.max``) when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with suppress(OSError, ValueError):
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    return total


def check_room(config: Config, paths: Paths, rows: int, build: bool) -> None:
    """Refuse an ``image_shape`` whose ``rows`` decoded images (train and test, uint8) would not fit: the pixel cache
    (with ``build``) in ``limits.disk_fraction`` of the free disk under runs/, and a split decoded in memory (a pixel
    CSV's, or any without ``build``) in ``limits.memory_fraction`` of the machine's memory (:func:`memory_bytes`).

    Raises:
        ConfigError: names competition.image_shape, the bytes needed and the budget, and the fix.
    """
    comp, limits = config.competition, config.limits
    needed = rows * int(np.prod(comp.image_shape, dtype=np.int64))
    budgets = []
    if build:
        existing = next(p for p in (paths.runs, *paths.runs.parents) if p.exists())
        budgets.append((int(shutil.disk_usage(existing).free * limits.disk_fraction), f"limits.disk_fraction of the free disk under {existing}"))
    if not build or comp.layout == "pixel_csv":
        budgets.append((int(memory_bytes() * limits.memory_fraction), "limits.memory_fraction of this machine's memory"))
    for budget, what in budgets:
        if needed > budget:
            raise ConfigError(f"competition.image_shape = {comp.image_shape}: {rows} images decode to {needed:,} bytes, more than "
                              f"{budget:,} ({what}); choose a smaller image_shape or free space")


def check_pixels(config: Config, paths: Paths, rows: int, build: bool = True) -> tuple[Images, Images | None]:
    """Train and test with their pixels, validated while decoded (or parsed) once into the cache later stages
    read (:mod:`compkit.cache`); a bad image or pixel raises before any cache file is written. Without ``build``
    (`compkit check`) a current cache is read and nothing written: the pixels are decoded in memory otherwise.
    ``rows`` (train and test) are first checked to fit (:func:`check_room`).

    Raises:
        DataError: see :func:`compkit.data.read_images` and :func:`compkit.photos.read_image_files`.
        ConfigError: see :func:`check_room`.
    """
    check_room(config, paths, rows, build)
    return load_train(paths.data, config.competition, paths.cache, build), load_test(paths.data, config.competition, paths.cache, build)


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: validate the inputs, write the fold and holdout files, print a summary."""
    comp = config.competition
    train, test = check_inputs(config, paths)
    has_solution = (paths.data / comp.solution_file).is_file()
    folds, holdout = make_folds(train, config, with_holdout=not has_solution)
    check_pixels(config, paths, len(train.ids) + (len(test.ids) if test is not None else 0))  # last before the fold files: every other problem is found without a decode
    Layout(config, paths).folds.write(folds, holdout)
    sizes = folds["fold"].value_counts()
    public = int((holdout["Usage"] == "Public").sum())
    if has_solution:
        scored = f"no holdout: submissions are scored on {comp.solution_file}"
    else:
        scored = f"holdout {len(holdout)} ({public} public / {len(holdout) - public} private)"
    unused = len(train.ids) - len(folds) - len(holdout)
    sample = f", {unused} rows left out by folds.max_rows={config.folds.max_rows}" if unused else ""
    console.summary(
        f"folds: {len(folds)} rows in {config.folds.n_splits} stratified folds ({sizes.min()}-{sizes.max()} each)"
        f"{sample}; {scored} -> {paths.folds}"
    )
