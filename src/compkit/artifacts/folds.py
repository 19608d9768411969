"""The fold files: ``folds/<c>/folds.csv`` and ``holdout.csv`` with their record ``folds.json``, and ``pseudo.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from compkit.artifacts.store import Store, csv_bytes
from compkit.data import DataError, Images
from compkit.foldfiles import check_fold_values, check_usage_values, read_fold_file
from compkit.io import read_id_csv, write_csv
from compkit.lineage import FOLDS_CSV, FOLDS_RECORD, HOLDOUT_CSV, PSEUDO_CSV, digest, folds_digest
from compkit.records import RecordedFiles


class FoldFiles(Store):
    """folds.csv (id, fold 0..K-1) and holdout.csv (id, Usage), sorted by id, valid only with their record folds.json."""

    @property
    def folds_csv(self) -> Path:
        """``folds/<c>/folds.csv``: id, fold (0..K-1), sorted by id."""
        return self.paths.folds / FOLDS_CSV

    @property
    def holdout_csv(self) -> Path:
        """``folds/<c>/holdout.csv``: id, Usage (Public|Private), sorted by id."""
        return self.paths.folds / HOLDOUT_CSV

    @property
    def files(self) -> RecordedFiles:
        """folds.csv, holdout.csv and their record folds.json (sha256 of each, written after them)."""
        return RecordedFiles(self.paths.folds, FOLDS_RECORD)

    def settings(self) -> str:
        """Digest of the config that decides the fold files: ``[folds]`` and the competition's name, files and columns."""
        comp = self.config.competition.model_dump(mode="json", include={"name", "train_file", "id_column", "target_column", "classes"})
        return digest({"folds": self.config.folds.model_dump(mode="json"), "competition": comp})

    def write(self, folds: pd.DataFrame, holdout: pd.DataFrame) -> None:
        """Write folds.csv and holdout.csv, then their record folds.json (the pair is only valid with it)."""
        files = {HOLDOUT_CSV: csv_bytes(holdout), FOLDS_CSV: csv_bytes(folds)}
        self.files.write(files, {"n_folds": len(folds), "n_holdout": len(holdout), "settings": self.settings()})

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """folds.csv and holdout.csv, checked against folds.json; ids keep their text (:func:`compkit.io.as_ids`).

        Raises:
            DataError: a file is missing, or differs from its digest in folds.json (from two runs of
                `make folds`, one cut short, or edited), or folds.json records other fold settings than this
                config's (a `make folds --set folds.seed=...` while `make train` ran): names the file and the fix.
        """
        remake = f"run {self.make('folds')}"
        for path in (self.folds_csv, self.holdout_csv):
            if not path.is_file():
                raise DataError(f"{path}: not found; {remake} first")
        record = self.files.read(f"{remake} again")
        for path in (self.folds_csv, self.holdout_csv):
            if self.files.problem(record, path.name):
                raise DataError(f"{path}: differs from its digest in {FOLDS_RECORD} (written by another or an "
                                f"interrupted `make folds`, or edited); {remake} again")
        if record.get("settings", self.settings()) != self.settings():  # absent: an older compkit's folds.json
            raise DataError(f"{self.files.path(FOLDS_RECORD)}: the fold files were made with other [folds] settings (folds.seed, "
                            f"n_splits, ...) than this command's, e.g. by a `make folds` since it started; {remake} with this "
                            "config, or run this command with the settings that made them")
        folds, holdout = (read_fold_file(self.config, path) for path in (self.folds_csv, self.holdout_csv))
        check_fold_values(folds, self.folds_csv, self.config)
        check_usage_values(holdout, self.holdout_csv, self.config)
        return folds, holdout

    def every_file(self) -> tuple[Path, ...]:
        """folds.csv, holdout.csv, folds.json and pseudo.csv: what a fold or trial reads of the fold files (a remote
        worker gets a copy of each that exists)."""
        return self.folds_csv, self.holdout_csv, self.files.path(FOLDS_RECORD), self.pseudo_csv

    def digest(self) -> str:
        """The current fold files' digest, pseudo.csv included (:func:`compkit.lineage.folds_digest`)."""
        return folds_digest(self.paths)

    @property
    def pseudo_csv(self) -> Path:
        """``folds/<c>/pseudo.csv``: id, fold, label, confidence (see pseudo.py)."""
        return self.paths.folds / PSEUDO_CSV

    def write_pseudo(self, table: pd.DataFrame) -> None:
        """Write pseudo.csv (one file, atomically; it joins the fold files' digest)."""
        write_csv(table, self.pseudo_csv)

    def read_pseudo(self, train: Images, test: Images | None, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Fold ``fold``'s pseudo-labelled rows: (n,) int row indices into ``test`` and (n,) int class indices.

        Empty when ``pseudo.csv`` does not exist.

        Raises:
            DataError: names ``pseudo.csv``'s row and the fix when an id is not a test id, is a train or holdout
                id, or a label is not a class.
        """
        path, comp = self.pseudo_csv, self.config.competition
        if not path.is_file():
            return np.zeros(0, int), np.zeros(0, int)
        table = read_id_csv(path, comp.id_key)
        remake = f"rerun `make pseudo COMPETITION={comp.name}` or delete {path}"
        if test is None:
            raise DataError(f"{path}: pseudo-labels but no {comp.test_file} in {self.paths.data}; delete {path}")
        ids = table[comp.id_key].astype(str).to_numpy()
        for bad, what in ((np.isin(ids, train.ids.astype(str)) & bool(comp.id_column), f"a {comp.train_file} id: holdout and train rows are never pseudo-labelled"),
                          (~np.isin(ids, test.ids.astype(str)), f"not in {comp.test_file}"),
                          (~table["label"].astype(str).isin([str(c) for c in self.task.classes]).to_numpy(), "labelled outside the classes")):
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{path}: row {row + 1}: {comp.id_key} {ids[row]} is {what}; {remake}")
        mine = table[table["fold"] == fold]
        row_of = {i: r for r, i in enumerate(test.ids.astype(str))}
        rows = np.array([row_of[i] for i in mine[comp.id_key].astype(str)], dtype=int)
        return rows, self.task.encode(mine["label"].reset_index(drop=True), path, "label")
