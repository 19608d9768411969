"""A fold's run: ``runs/<c>/<backbone>/fold<k>/`` holds model*.keras, history.csv, oof.csv, holdout.csv, test.csv,
``.lock`` and fold.json, the record (scores, lineage, sha256 of each CSV), written last; its presence marks the fold done."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.artifacts.store import Store, csv_bytes
from compkit.errors import CompkitError
from compkit.io import is_held, proba_frame, read_proba
from compkit.lineage import clean_hint, digest, folds_digest, ids_digest
from compkit.records import RecordedFiles, digests, sha256_bytes

FOLD_PROBAS = ("oof.csv", "holdout.csv", "test.csv")  # test.csv only with a test file
FIX = {"not found": "not found", "no digest": "fold.json records no digest of it (an older compkit made it)",
       "differs": "differs from its digest in fold.json (changed or cut short after training)"}


class FoldRuns(Store):
    """Every fold run of the competition, by backbone and fold index."""

    def dir(self, backbone: str, fold: int) -> Path:
        """``runs/<c>/<backbone>/fold<fold>/``."""
        return self.paths.runs / backbone / f"fold{fold}"

    @staticmethod
    def student(backbone: str) -> str:
        """The runs' name of ``backbone``'s distilled student (`make distill`): ``runs/<c>/student-<backbone>/``."""
        return f"student-{backbone}"

    def record(self, backbone: str, fold: int) -> Path:
        """``fold<k>/fold.json``: the fold's record; its presence marks the fold done."""
        return self.dir(backbone, fold) / "fold.json"

    def model_path(self, backbone: str, fold: int, seed: int = 0) -> Path:
        """``fold<k>/model.keras`` (seed 0), ``model-seed<s>.keras`` for the extra seeds of ``train.seeds``."""
        return self.dir(backbone, fold) / ("model.keras" if seed == 0 else f"model-seed{seed}.keras")

    def lock(self, backbone: str, fold: int) -> Path:
        """``fold<k>/.lock``: the driver training the fold holds a kernel lock on it (:func:`compkit.io.claim`)."""
        return self.dir(backbone, fold) / ".lock"

    def is_done(self, backbone: str, fold: int) -> bool:
        """True when the fold's last artefact, ``fold.json``, exists."""
        return self.record(backbone, fold).is_file()

    def _files(self, backbone: str, fold: int) -> RecordedFiles:
        return RecordedFiles(self.dir(backbone, fold), "fold.json")

    def _retrain(self, backbone: str, fold: int) -> str:
        return f"delete {self.dir(backbone, fold)} and rerun {self.make('train')}"

    def write(self, backbone: str, fold: int, history: pd.DataFrame, probas: dict[str, tuple[np.ndarray, np.ndarray]],
              result: dict) -> dict:
        """Write a fold's history.csv and probability files (``name -> ((N,) ids, (N, K) probabilities)``),
        then fold.json: ``result`` plus ``files``, the sha256 of each CSV. Returns the record written."""
        comp = self.config.competition
        files = {"history.csv": csv_bytes(history)}
        files |= {name: csv_bytes(proba_frame(comp.id_key, ids, p, self.task.columns)) for name, (ids, p) in probas.items()}
        return self._files(backbone, fold).write(files, result)

    def write_files(self, backbone: str, fold: int, files: dict[str, bytes]) -> dict:
        """Write a fold trained elsewhere (a Ray worker, see executors/cluster.py) from its files' bytes; returns its record.

        Only a fold's own file names are taken (model*.keras, history.csv, the probability files, fold.json), and
        fold.json must be this fold's and every CSV must match its digest there, so a damaged or foreign transfer
        never reaches ``runs/``. Each file is written atomically, fold.json last (as :meth:`write`).

        Raises:
            CompkitError: no readable fold.json, another fold's, an unexpected name, or a CSV missing or unlike its digest.
        """
        what, retrain = f"{backbone} fold {fold} (returned by its worker)", f"rerun {self.make('train')}"
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
        self._files(backbone, fold).write_raw({n: d for n, d in files.items() if n != "fold.json"}, files["fold.json"])
        return record

    def read(self, backbone: str, fold: int) -> dict:
        """The fold's fold.json; missing, empty or corrupt raises :class:`CompkitError` saying to retrain it (or, while
        another process trains the fold, to wait for it)."""
        if not self.is_done(backbone, fold) and is_held(self.lock(backbone, fold)):
            raise CompkitError(f"{self.dir(backbone, fold)}: {backbone} fold {fold} is being trained by another process "
                               f"(it holds {self.lock(backbone, fold).name}); wait for that `make train` to finish, then rerun")
        return self._files(backbone, fold).read(self._retrain(backbone, fold))

    def file(self, backbone: str, fold: int, name: str) -> Path:
        """A fold file (``history.csv``, ``oof.csv``, ...), checked against its digest in fold.json.

        Raises:
            CompkitError: the fold is not done, the file is missing, fold.json records no digest of it,
                or its bytes differ from the digest (changed or cut short after training).
        """
        problem = self._files(backbone, fold).problem(self.read(backbone, fold), name)
        if problem:
            raise CompkitError(f"{self.dir(backbone, fold) / name}: {FIX[problem]}; {self._retrain(backbone, fold)}")
        return self.dir(backbone, fold) / name

    def read_proba(self, backbone: str, fold: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A fold's verified ``oof.csv``, ``holdout.csv`` or ``test.csv``: (N,) ids, (N, K) float64 probabilities.

        Raises:
            CompkitError: see :meth:`file`; and oof.csv's ids are not the ``n_val`` ids fold.json's
                lineage says the fold validated on.
        """
        path = self.file(backbone, fold, name)
        ids, proba = read_proba(path, self.config.competition.id_key, self.task.columns)
        lineage = self.read(backbone, fold).get("lineage", {})
        if name == "oof.csv" and (len(ids) != lineage.get("n_val") or ids_digest(ids) != lineage.get("val_ids")):
            raise CompkitError(f"{path}: its {len(ids)} ids are not the {lineage.get('n_val')} ids fold {fold} validated on "
                               f"(fold.json); {self._retrain(backbone, fold)}")
        return ids, proba

    def _every_fold(self, backbone: str, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.read_proba(backbone, k, name) for k in range(self.config.folds.n_splits)]

    def load_oof(self, backbone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All folds' OOF predictions of ``backbone``, sorted by id: (N,) ids, (N, K) probabilities, (N,) int fold."""
        parts = self._every_fold(backbone, "oof.csv")
        ids = np.concatenate([p[0] for p in parts])
        fold = np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)])
        order = np.argsort(ids, kind="stable")
        return ids[order], np.concatenate([p[1] for p in parts])[order], fold[order]

    def load_fold_mean(self, backbone: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The fold models' mean prediction of ``name`` (``holdout.csv`` or ``test.csv``): (N,) ids, (N, K) probabilities.

        Raises:
            CompkitError: a fold's file fails verification, or its ids differ from fold 0's.
        """
        parts = self._every_fold(backbone, name)
        for k, (ids, _) in enumerate(parts[1:], start=1):
            if not np.array_equal(ids, parts[0][0]):
                raise CompkitError(f"{self.dir(backbone, k) / name}: ids differ from fold 0's; {self._retrain(backbone, k)}")
        return parts[0][0], np.mean([p[1] for p in parts], axis=0)

    def inputs(self, backbones: list[str]) -> dict[str, str]:
        """The digest of each backbone's fold lineages, after checking the folds are done, current and unmixed.

        Raises:
            CompkitError: a fold is missing, was made from other fold files than ``folds/`` holds now, or was
                made from another config than the backbone's fold 0; names its ``fold.json`` and how to clean.
        """
        current, inputs = folds_digest(self.paths), {}
        for backbone in backbones:
            lineages = []
            for k in range(self.config.folds.n_splits):
                lineage = self.read(backbone, k).get("lineage", {})
                if lineage.get("folds") != current:
                    what = "other fold files (folds.csv, holdout.csv, pseudo.csv) than now"
                elif lineages and lineage.get("config") != lineages[0]["config"]:
                    what = f"another config than {self.record(backbone, 0)}"
                else:
                    lineages.append(lineage)
                    continue
                raise CompkitError(f"{self.record(backbone, k)}: made from {what}; {clean_hint(self.config, self.paths, backbone)}")
            inputs[backbone] = digest(lineages)
        return inputs
