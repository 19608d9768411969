"""The ensemble set: ``runs/<c>/ensemble/`` holds the selected blend's oof.csv, holdout.csv, test.csv and
ensemble.json, their record (make ensemble). A new set goes into a fresh folder that replaces the old one by two
renames: a kill leaves the old set or the new one (between the two renames, none: rerun `make ensemble`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compkit.artifacts.runs import FoldRuns
from compkit.artifacts.store import Store, csv_bytes
from compkit.errors import CompkitError
from compkit.io import proba_frame, read_proba, replace_folder
from compkit.lineage import folds_digest
from compkit.records import RecordedFiles


class EnsembleSet(Store):
    """The selected blend's probability files and ensemble.json, verified against the folds that made them."""

    @property
    def dir(self) -> Path:
        """``runs/<c>/ensemble/``: the selected blend's files and ensemble.json."""
        return self.paths.runs / "ensemble"

    @property
    def record(self) -> Path:
        """``runs/<c>/ensemble/ensemble.json``."""
        return self.dir / "ensemble.json"

    def write(self, record: dict, probas: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Commit a new ensemble set as a whole: ``probas`` (``name -> ((N,) ids, (N, K) probabilities)``) and
        ensemble.json (``record`` plus ``files``, the sha256 of each CSV) go into a fresh folder beside
        ``ensemble/``, which then replaces it by two renames."""
        comp = self.config.competition
        files = {name: csv_bytes(proba_frame(comp.id_key, ids, p, self.task.columns)) for name, (ids, p) in probas.items()}
        replace_folder(self.dir, lambda new: RecordedFiles(new, self.record.name).write(files, record))

    def read(self) -> dict:
        """ensemble.json, checked against the current fold files and fold records and against its files' digests.

        Raises:
            CompkitError: ensemble.json is missing or corrupt; the fold files or a backbone's folds changed
                since it was made; or one of its files is missing or differs from its digest.
        """
        again, files = f"rerun {self.make('ensemble')}", RecordedFiles(self.dir, self.record.name)
        record = files.read(f"run {self.make('ensemble')} first")
        lineage = record.get("lineage", {})
        if not isinstance(record.get("files"), dict) or not isinstance(record.get("backbones"), list):
            raise CompkitError(f"{self.record}: no file digests or backbones (an older compkit, or edited); {again}")
        if lineage.get("folds") != folds_digest(self.paths):
            raise CompkitError(f"{self.record}: made from other fold files than {self.paths.folds} holds now; "
                               f"{self.make('train')} on them, then {again}")
        current = FoldRuns(self.config, self.paths).inputs(record["backbones"])
        changed = [b for b in record["backbones"] if lineage.get("inputs", {}).get(b) != current[b]]
        if changed:
            raise CompkitError(f"{self.record}: the folds of {changed[0]} changed since it was made; {again}")
        for name in record["files"]:
            problem = files.problem(record, name)
            if problem:
                state = "missing" if problem == "not found" else "differs from its digest in ensemble.json"
                raise CompkitError(f"{self.dir / name}: {state} (changed, or from an interrupted `make ensemble`); {again}")
        return record

    def read_proba(self, record: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One file of the ensemble set ``record`` (from :meth:`read`), checked against its digest.

        Returns (N,) ids and (N, K) float64 probabilities.
        """
        path, again = self.dir / name, f"rerun {self.make('ensemble')}"
        if name not in record["files"]:
            raise CompkitError(f"{path}: not in {self.record.name} (no {name} was made); {again}")
        if RecordedFiles(self.dir, self.record.name).problem(record, name):
            raise CompkitError(f"{path}: missing or differs from its digest in ensemble.json; {again}")
        return read_proba(path, self.config.competition.id_key, self.task.columns)
