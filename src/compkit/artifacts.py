"""The artefact layer: every file a stage writes or reads, where it lives, its writer and its verified reader.

Stages ask a :class:`Layout` for their inputs and outputs, never each other. Under the project root::

    folds/<c>/folds.csv, holdout.csv   id, fold / id, Usage (make folds)
    folds/<c>/folds.json               their record: the sha256 of each file's bytes; written last
    folds/<c>/pseudo.csv               id, fold, label, confidence (make pseudo)
    runs/<c>/<backbone>/fold<k>/       model*.keras, history.csv, oof.csv, holdout.csv, test.csv, .lock, and
                                       fold.json, the record: scores, lineage, sha256 of each CSV; written last
    runs/<c>/best/<backbone>.json      the best Optuna trial (make tune)
    runs/<c>/cache/                    <split>-<key>.npy: decoded pixels, read as a memory map, and <split>-<key>.json
    runs/<c>/ensemble/                 oof.csv, holdout.csv, test.csv and ensemble.json, their record (make ensemble)
    submissions/<c>/<time>_<name>.csv  a submission; leaderboard.csv holds a row per submission (make submit)
    bundle/<c>/                        the selected blend's offline inference bundle (make package)

Every reader checks what it reads against the record that made it, and fails with one line naming
the file and the fix: folds.csv and holdout.csv against folds.json (a pair from two runs of `make
folds` is refused); a fold's CSVs against fold.json's digests, and oof.csv's ids against the ids the
fold validated on; each backbone's fold.json against the current fold files and its other folds; the
ensemble's files against ensemble.json's digests, and ensemble.json against the current fold files
and fold records; the leaderboard's columns and numbers.

Multi-file outputs are committed as a whole (:class:`compkit.records.RecordedFiles`). The record (folds.json,
fold.json) is written after the files it describes, so a kill in between leaves files that fail verification, never a mismatched set
that passes. The ensemble set is written into a fresh folder that replaces ``ensemble/`` by two
renames: a kill leaves the old set or the new one (between the two renames, none: rerun `make ensemble`).

Over 400 lines until each artefact gets a store class of its own (fold files, a fold's run, tuned parameters,
the ensemble set, the leaderboard; issue 26) and :class:`Layout` only hands them out.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import tasks
from compkit.config import Config, Paths
from compkit.data import DataError, Images, load_test, load_train
from compkit.errors import CompkitError, shown
from compkit.foldfiles import check_fold_values, check_usage_values, read_fold_file
from compkit.io import held, is_held, proba_frame, read_id_csv, read_json, read_proba, replace_folder, write_csv, write_json
from compkit.lineage import FOLDS_CSV, FOLDS_RECORD, HOLDOUT_CSV, PSEUDO_CSV, clean_hint, digest, folds_digest, ids_digest
from compkit.records import RecordedFiles, digests, sha256_bytes, sha256_file
from compkit.tasks import Task

FOLD_PROBAS = ("oof.csv", "holdout.csv", "test.csv")  # test.csv only with a test file
ENSEMBLE_PROBAS = FOLD_PROBAS
LEADERBOARD_COLUMNS = ["time", "name", "file", "backbones", "blend", "cv", "public", "private"]
LEADERBOARD_NUMBERS = ("cv", "public", "private")
LEADERBOARD_WAIT_S = 120  # seconds a submit waits for another's leaderboard lock (a submit holds it well under a second)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as the CSV bytes compkit writes (no index)."""
    return frame.to_csv(index=False).encode()


@dataclass(frozen=True)
class Layout:
    """Every artefact of one competition's run, from its config and :class:`~compkit.config.Paths`."""

    config: Config
    paths: Paths

    @property
    def task(self) -> Task:
        """The competition's task: it names the prediction files' columns and reads their labels."""
        return tasks.of(self.config.competition)

    def _make(self, stages: str) -> str:
        return f"`make {stages} COMPETITION={self.config.competition.name}`"

    # ----------------------------------------------------------------------------------------- fold files

    @property
    def folds_csv(self) -> Path:
        """``folds/<c>/folds.csv``: id, fold (0..K-1), sorted by id."""
        return self.paths.folds / FOLDS_CSV

    @property
    def holdout_csv(self) -> Path:
        """``folds/<c>/holdout.csv``: id, Usage (Public|Private), sorted by id."""
        return self.paths.folds / HOLDOUT_CSV

    @property
    def folds_record(self) -> Path:
        """``folds/<c>/folds.json``: sha256 of folds.csv and holdout.csv, written after them."""
        return self.paths.folds / FOLDS_RECORD

    def write_folds(self, folds: pd.DataFrame, holdout: pd.DataFrame) -> None:
        """Write folds.csv and holdout.csv, then their record folds.json (the pair is only valid with it)."""
        files = {self.holdout_csv.name: csv_bytes(holdout), self.folds_csv.name: csv_bytes(folds)}
        self._fold_files.write(files, {"n_folds": len(folds), "n_holdout": len(holdout), "settings": self._fold_settings()})

    @property
    def _fold_files(self) -> RecordedFiles:
        """folds.csv, holdout.csv and their record folds.json."""
        return RecordedFiles(self.paths.folds, self.folds_record.name)

    def _fold_settings(self) -> str:
        """Digest of the config that decides the fold files: ``[folds]`` and the competition's name, files and columns."""
        comp = self.config.competition.model_dump(mode="json", include={"name", "train_file", "id_column", "target_column", "classes"})
        return digest({"folds": self.config.folds.model_dump(mode="json"), "competition": comp})

    def read_folds(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """folds.csv and holdout.csv, checked against folds.json; ids keep their text (:func:`compkit.io.as_ids`).

        Raises:
            DataError: a file is missing, or differs from its digest in folds.json (from two runs of
                `make folds`, one cut short, or edited), or folds.json records other fold settings than this
                config's (a `make folds --set folds.seed=...` while `make train` ran): names the file and the fix.
        """
        remake = f"run {self._make('folds')}"
        for path in (self.folds_csv, self.holdout_csv):
            if not path.is_file():
                raise DataError(f"{path}: not found; {remake} first")
        record = self._fold_files.read(f"{remake} again")
        for path in (self.folds_csv, self.holdout_csv):
            if self._fold_files.problem(record, path.name):
                raise DataError(f"{path}: differs from its digest in {self.folds_record.name} (written by another or an "
                                f"interrupted `make folds`, or edited); {remake} again")
        if record.get("settings", self._fold_settings()) != self._fold_settings():  # absent: an older compkit's folds.json
            raise DataError(f"{self.folds_record}: the fold files were made with other [folds] settings (folds.seed, n_splits, ...) "
                            f"than this command's, e.g. by a `make folds` since it started; {remake} with this config, "
                            "or run this command with the settings that made them")
        folds, holdout = (read_fold_file(self.config, path) for path in (self.folds_csv, self.holdout_csv))
        check_fold_values(folds, self.folds_csv, self.config)
        check_usage_values(holdout, self.holdout_csv, self.config)
        return folds, holdout

    def folds_digest(self) -> str:
        """The current fold files' digest (:func:`compkit.lineage.folds_digest`)."""
        return folds_digest(self.paths)

    # --------------------------------------------------------------------------------------- pixel cache

    @property
    def cache_dir(self) -> Path:
        """``runs/<c>/cache/``: each split's decoded pixels, ``<split>-<key>.npy`` and its record (:mod:`compkit.cache`)."""
        return self.paths.runs / "cache"

    def load_train(self, build: bool = True) -> Images:
        """The training split with its pixels from the decode-once cache (:func:`compkit.data.load_train`; without
        ``build`` the cache is only read)."""
        return load_train(self.paths.data, self.config.competition, self.cache_dir, build)

    def load_test(self, build: bool = True) -> Images | None:
        """The test split with its pixels from the decode-once cache, or None without one (:func:`compkit.data.load_test`)."""
        return load_test(self.paths.data, self.config.competition, self.cache_dir, build)

    # -------------------------------------------------------------------------------------- pseudo-labels

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

    # ------------------------------------------------------------------------------------------ fold runs

    def fold_dir(self, backbone: str, fold: int) -> Path:
        """``runs/<c>/<backbone>/fold<fold>/``."""
        return self.paths.runs / backbone / f"fold{fold}"

    def fold_record(self, backbone: str, fold: int) -> Path:
        """``fold<k>/fold.json``: the fold's record; its presence marks the fold done."""
        return self.fold_dir(backbone, fold) / "fold.json"

    def model_path(self, backbone: str, fold: int, seed: int = 0) -> Path:
        """``fold<k>/model.keras`` (seed 0), ``model-seed<s>.keras`` for the extra seeds of ``train.seeds``."""
        return self.fold_dir(backbone, fold) / ("model.keras" if seed == 0 else f"model-seed{seed}.keras")

    def lock(self, backbone: str, fold: int) -> Path:
        """``fold<k>/.lock``: the driver training the fold holds a kernel lock on it (:func:`compkit.io.claim`)."""
        return self.fold_dir(backbone, fold) / ".lock"

    def is_done(self, backbone: str, fold: int) -> bool:
        """True when the fold's last artefact, ``fold.json``, exists."""
        return self.fold_record(backbone, fold).is_file()

    def _retrain(self, backbone: str, fold: int) -> str:
        return f"delete {self.fold_dir(backbone, fold)} and rerun {self._make('train')}"

    def write_fold(self, backbone: str, fold: int, history: pd.DataFrame,
                   probas: dict[str, tuple[np.ndarray, np.ndarray]], result: dict) -> dict:
        """Write a fold's history.csv and probability files (``name -> ((N,) ids, (N, K) probabilities)``),
        then fold.json: ``result`` plus ``files``, the sha256 of each CSV. Returns the record written."""
        comp = self.config.competition
        files = {"history.csv": csv_bytes(history)}
        files |= {name: csv_bytes(proba_frame(comp.id_key, ids, p, self.task.columns)) for name, (ids, p) in probas.items()}
        return self._run(backbone, fold).write(files, result)

    def _run(self, backbone: str, fold: int) -> RecordedFiles:
        """A fold's files and its record fold.json."""
        return RecordedFiles(self.fold_dir(backbone, fold), self.fold_record(backbone, fold).name)

    def write_fold_files(self, backbone: str, fold: int, files: dict[str, bytes]) -> dict:
        """Write a fold trained elsewhere (a Ray worker, see executors.py) from its files' bytes; returns its record.

        Only a fold's own file names are taken (model*.keras, history.csv, the probability files, fold.json), and
        fold.json must be this fold's and every CSV must match its digest there, so a damaged or foreign transfer
        never reaches ``runs/``. Each file is written atomically, fold.json last (as :meth:`write_fold`).

        Raises:
            CompkitError: no readable fold.json, another fold's, an unexpected name, or a CSV missing or unlike its digest.
        """
        what, retrain = f"{backbone} fold {fold} (returned by its worker)", f"rerun {self._make('train')}"
        try:
            record = json.loads(files["fold.json"])
        except (KeyError, ValueError):
            raise CompkitError(f"{what}: no readable fold.json among {sorted(files)}; {retrain}") from None
        if not isinstance(record, dict) or (record.get("backbone"), record.get("fold")) != (backbone, fold):
            raise CompkitError(f"{what}: its fold.json is not this fold's; {retrain}")
        known = {"history.csv", *FOLD_PROBAS, "fold.json"}
        for name in files:
            if name not in known and not re.fullmatch(r"model(-seed[0-9]+)?\.keras", name):
                raise CompkitError(f"{what}: {name!r} is not a fold file; {retrain}")
        for name, recorded in digests(record).items():
            if name not in files or sha256_bytes(files[name]) != recorded:
                raise CompkitError(f"{what}: {name} is missing or differs from its digest in fold.json; {retrain}")
        self._run(backbone, fold).write_raw({n: d for n, d in files.items() if n != "fold.json"}, files["fold.json"])
        return record

    def read_fold(self, backbone: str, fold: int) -> dict:
        """The fold's fold.json; missing, empty or corrupt raises :class:`CompkitError` saying to retrain it (or, while
        another process trains the fold, to wait for it)."""
        if not self.is_done(backbone, fold) and is_held(self.lock(backbone, fold)):
            raise CompkitError(f"{self.fold_dir(backbone, fold)}: {backbone} fold {fold} is being trained by another process "
                               f"(it holds {self.lock(backbone, fold).name}); wait for that `make train` to finish, then rerun")
        return self._run(backbone, fold).read(self._retrain(backbone, fold))

    def fold_file(self, backbone: str, fold: int, name: str) -> Path:
        """A fold file (``history.csv``, ``oof.csv``, ...), checked against its digest in fold.json.

        Raises:
            CompkitError: the fold is not done, the file is missing, fold.json records no digest of it,
                or its bytes differ from the digest (changed or cut short after training).
        """
        record, path, fix = self.read_fold(backbone, fold), self.fold_dir(backbone, fold) / name, self._retrain(backbone, fold)
        problem = self._run(backbone, fold).problem(record, name)
        if problem:
            why = {"not found": "not found", "no digest": "fold.json records no digest of it (an older compkit made it)",
                   "differs": "differs from its digest in fold.json (changed or cut short after training)"}[problem]
            raise CompkitError(f"{path}: {why}; {fix}")
        return path

    def read_fold_proba(self, backbone: str, fold: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A fold's verified ``oof.csv``, ``holdout.csv`` or ``test.csv``: (N,) ids, (N, K) float64 probabilities.

        Raises:
            CompkitError: see :meth:`fold_file`; and oof.csv's ids are not the ``n_val`` ids fold.json's
                lineage says the fold validated on.
        """
        comp = self.config.competition
        path = self.fold_file(backbone, fold, name)
        ids, proba = read_proba(path, comp.id_key, self.task.columns)
        lineage = self.read_fold(backbone, fold).get("lineage", {})
        if name == "oof.csv" and (len(ids) != lineage.get("n_val") or ids_digest(ids) != lineage.get("val_ids")):
            raise CompkitError(f"{path}: its {len(ids)} ids are not the {lineage.get('n_val')} ids fold {fold} validated on "
                               f"(fold.json); {self._retrain(backbone, fold)}")
        return ids, proba

    def read_folds_proba(self, backbone: str, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`read_fold_proba` of every fold of ``backbone``, in fold order: the one fold-reading loop."""
        return [self.read_fold_proba(backbone, k, name) for k in range(self.config.folds.n_splits)]

    def load_oof(self, backbone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All folds' OOF predictions of ``backbone``, sorted by id: (N,) ids, (N, K) probabilities, (N,) int fold."""
        parts = self.read_folds_proba(backbone, "oof.csv")
        ids = np.concatenate([p[0] for p in parts])
        fold = np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)])
        order = np.argsort(ids, kind="stable")
        return ids[order], np.concatenate([p[1] for p in parts])[order], fold[order]

    def load_fold_mean(self, backbone: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The fold models' mean prediction of ``name`` (``holdout.csv`` or ``test.csv``): (N,) ids, (N, K) probabilities.

        Raises:
            CompkitError: a fold's file fails verification, or its ids differ from fold 0's.
        """
        parts = self.read_folds_proba(backbone, name)
        for k, (ids, _) in enumerate(parts[1:], start=1):
            if not np.array_equal(ids, parts[0][0]):
                raise CompkitError(f"{self.fold_dir(backbone, k) / name}: ids differ from fold 0's; {self._retrain(backbone, k)}")
        return parts[0][0], np.mean([p[1] for p in parts], axis=0)

    def fold_inputs(self, backbones: list[str]) -> dict[str, str]:
        """The digest of each backbone's fold lineages, after checking the folds are done, current and unmixed.

        Raises:
            CompkitError: a fold is missing, was made from other fold files than ``folds/`` holds now, or was
                made from another config than the backbone's fold 0; names its ``fold.json`` and how to clean.
        """
        current, inputs = self.folds_digest(), {}
        for backbone in backbones:
            lineages = []
            for k in range(self.config.folds.n_splits):
                lineage = self.read_fold(backbone, k).get("lineage", {})
                if lineage.get("folds") != current:
                    what = "other fold files (folds.csv, holdout.csv, pseudo.csv) than now"
                elif lineages and lineage.get("config") != lineages[0]["config"]:
                    what = f"another config than {self.fold_record(backbone, 0)}"
                else:
                    lineages.append(lineage)
                    continue
                raise CompkitError(f"{self.fold_record(backbone, k)}: made from {what}; {clean_hint(self.config, self.paths, backbone)}")
            inputs[backbone] = digest(lineages)
        return inputs

    # ------------------------------------------------------------------------------------------- tuning

    def best_params_path(self, backbone: str) -> Path:
        """``runs/<c>/best/<backbone>.json``: the best Optuna trial of ``backbone`` (see tune.py)."""
        return self.paths.runs / "best" / f"{backbone}.json"

    def write_best_params(self, backbone: str, record: dict) -> None:
        """Write the best trial's record (study, trial, value, metric, params)."""
        write_json(record, self.best_params_path(backbone))

    def read_best_params(self, backbone: str) -> dict | None:
        """The tuned ``params`` of ``backbone``, or None when `make tune` has not written them.

        Raises:
            CompkitError: the file is empty, corrupt or has no ``params`` object.
        """
        path = self.best_params_path(backbone)
        if not path.is_file():
            return None
        params = read_json(path, f"delete it or rerun {self._make('tune')}").get("params")
        if not isinstance(params, dict):
            raise CompkitError(f"{path}: no 'params' object; delete it or rerun {self._make('tune')}")
        return params

    # ----------------------------------------------------------------------------------------- ensemble

    @property
    def ensemble_dir(self) -> Path:
        """``runs/<c>/ensemble/``: the selected blend's files and ensemble.json."""
        return self.paths.runs / "ensemble"

    @property
    def ensemble_record(self) -> Path:
        """``runs/<c>/ensemble/ensemble.json``."""
        return self.ensemble_dir / "ensemble.json"

    @property
    def _ensemble_files(self) -> RecordedFiles:
        """The ensemble set's files and their record ensemble.json."""
        return RecordedFiles(self.ensemble_dir, self.ensemble_record.name)

    def write_ensemble(self, record: dict, probas: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Commit a new ensemble set as a whole: ``probas`` (``name -> ((N,) ids, (N, K) probabilities)``) and
        ensemble.json (``record`` plus ``files``, the sha256 of each CSV) go into a fresh folder beside
        ``ensemble/``, which then replaces it by two renames."""
        comp = self.config.competition
        files = {name: csv_bytes(proba_frame(comp.id_key, ids, p, self.task.columns)) for name, (ids, p) in probas.items()}
        replace_folder(self.ensemble_dir, lambda new: RecordedFiles(new, self.ensemble_record.name).write(files, record))

    def read_ensemble(self) -> dict:
        """ensemble.json, checked against the current fold files and fold records and against its files' digests.

        Raises:
            CompkitError: ensemble.json is missing or corrupt; the fold files or a backbone's folds changed
                since it was made; or one of its files is missing or differs from its digest.
        """
        again = f"rerun {self._make('ensemble')}"
        ensemble = self._ensemble_files
        record = ensemble.read(f"run {self._make('ensemble')} first")
        lineage = record.get("lineage", {})
        if not isinstance(record.get("files"), dict) or not isinstance(record.get("backbones"), list):
            raise CompkitError(f"{self.ensemble_record}: no file digests or backbones (an older compkit, or edited); {again}")
        if lineage.get("folds") != self.folds_digest():
            raise CompkitError(f"{self.ensemble_record}: made from other fold files than {self.paths.folds} holds now; "
                               f"{self._make('train')} on them, then {again}")
        current = self.fold_inputs(record["backbones"])
        changed = [b for b in record["backbones"] if lineage.get("inputs", {}).get(b) != current[b]]
        if changed:
            raise CompkitError(f"{self.ensemble_record}: the folds of {changed[0]} changed since it was made; {again}")
        for name in record["files"]:
            path, problem = self.ensemble_dir / name, ensemble.problem(record, name)
            if problem:
                state = "missing" if problem == "not found" else "differs from its digest in ensemble.json"
                raise CompkitError(f"{path}: {state} (changed, or from an interrupted `make ensemble`); {again}")
        return record

    def read_ensemble_proba(self, record: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One file of the ensemble set ``record`` (from :meth:`read_ensemble`), checked against its digest.

        Returns (N,) ids and (N, K) float64 probabilities.
        """
        comp, path = self.config.competition, self.ensemble_dir / name
        again = f"rerun {self._make('ensemble')}"
        if name not in record["files"]:
            raise CompkitError(f"{path}: not in {self.ensemble_record.name} (no {name} was made); {again}")
        if self._ensemble_files.problem(record, name):
            raise CompkitError(f"{path}: missing or differs from its digest in ensemble.json; {again}")
        return read_proba(path, comp.id_key, self.task.columns)

    @property
    def bundle_dir(self) -> Path:
        """``bundle/<c>/``: the offline inference bundle (`make package`, package.py)."""
        return self.paths.root / "bundle" / self.config.competition.name

    @property
    def kernel_record(self) -> Path:
        """``runs/<c>/platform/kernel.json``: the kernel `make push-kernel` pushed, its version and bundle (kernel.py)."""
        return self.paths.runs / "platform" / "kernel.json"

    # -------------------------------------------------------------------------------------- submissions

    @property
    def leaderboard(self) -> Path:
        """``submissions/<c>/leaderboard.csv``: one row per submission (:data:`LEADERBOARD_COLUMNS`)."""
        return self.paths.submissions / "leaderboard.csv"

    def submission_path(self, name: str, n: int = 1) -> Path:
        """``submissions/<c>/<UTC time>_<name>.csv``, or ``<name>-<n>`` for ``n`` > 1 (the path's name, not reserved)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return self.paths.submissions / f"{stamp}_{name}{'' if n == 1 else f'-{n}'}.csv"

    def _reserve_submission(self, name: str) -> Path:
        """Create an empty ``submission_path(name, n)`` exclusively (``O_EXCL``), for the first ``n`` whose file is free."""
        self.paths.submissions.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = self.submission_path(name, n)
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue
            return path

    def read_leaderboard(self) -> pd.DataFrame:
        """leaderboard.csv (an empty table with :data:`LEADERBOARD_COLUMNS` when there is none).

        Raises:
            CompkitError: unreadable, a column missing, or a cv/public/private cell that is not a number
                (names the row); the fix is to correct the row or move the file away.
        """
        path = self.leaderboard
        if not path.is_file():
            return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
        fix = f"correct it or move it away (a new one is started; the submission files stay in {path.parent})"
        try:
            board = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            raise CompkitError(f"{path}: not a readable CSV; {fix}") from None
        missing = [c for c in LEADERBOARD_COLUMNS if c not in board.columns]
        if missing:
            raise CompkitError(f"{path}: missing column(s) {missing}; {fix}")
        for column in LEADERBOARD_NUMBERS:
            number = pd.to_numeric(board[column], errors="coerce")
            bad = (number.isna() & board[column].notna()).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise CompkitError(f"{path}: row {row + 1}, column {column!r}: {shown(board[column].iloc[row])} is not a number; {fix}")
            board[column] = number
        return board

    def write_leaderboard(self, board: pd.DataFrame) -> None:
        """Write leaderboard.csv (atomically): ``board``, rows as :meth:`read_leaderboard` returns them."""
        write_csv(board, self.leaderboard)

    def write_submission(self, name: str, submission: pd.DataFrame, row: dict) -> tuple[Path, pd.DataFrame]:
        """Add a submission named ``name``: returns its path and the leaderboard with its ``row`` appended.

        Under a kernel lock on ``submissions/<c>/.leaderboard.lock`` (waiting up to :data:`LEADERBOARD_WAIT_S`), so
        concurrent submits each get their own file and row: the file is created exclusively under a free name
        (:meth:`submission_path`), the submission written into it, then the leaderboard is read again, ``row`` (with
        ``file``, the name, and ``sha256``, the file's digest) appended and written. A failure removes the CSV again.
        """
        with held(self.paths.submissions / ".leaderboard.lock", LEADERBOARD_WAIT_S):
            path = self._reserve_submission(name)
            try:
                write_csv(submission, path)
                row = {**row, "file": path.name, "sha256": sha256_file(path)}  # `make upload` sends only these bytes
                board = pd.concat([self.read_leaderboard(), pd.DataFrame([row])], ignore_index=True)
                self.write_leaderboard(board)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path, board
