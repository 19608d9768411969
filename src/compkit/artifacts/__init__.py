"""The artefact layer: every file a stage writes or reads, where it lives, its writer and its verified reader.

Stages ask a :class:`Layout` for the store of an artefact, never each other. Under the project root::

    folds/<c>/folds.csv, holdout.csv   id, fold / id, Usage (make folds)               FoldFiles
    folds/<c>/folds.json               their record: the sha256 of each file's bytes; written last
    folds/<c>/pseudo.csv               id, fold, label, confidence (make pseudo)
    runs/<c>/<backbone>/fold<k>/       model*.keras, history.csv, oof.csv, holdout.csv,  FoldRuns
                                       test.csv, .lock, and fold.json, the record: scores,
                                       lineage, sha256 of each CSV; written last
    runs/<c>/best/<backbone>.json      the best Optuna trial (make tune)               TunedParams
    runs/<c>/cache/                    decoded pixels (Paths.cache, compkit.cache)
    runs/<c>/ensemble/                 oof.csv, holdout.csv, test.csv and              EnsembleSet
                                       ensemble.json, their record (make ensemble)
    submissions/<c>/<time>_<name>.csv  a submission; leaderboard.csv holds a row per   Leaderboard
                                       submission (make submit)
    bundle/<c>/                        the selected blend's offline inference bundle (make package)

Every reader checks what it reads against the record that made it, and fails with one line naming the file
and the fix: folds.csv and holdout.csv against folds.json (a pair from two runs of `make folds` is refused); a
fold's CSVs against fold.json's digests, and oof.csv's ids against the ids the fold validated on; each
backbone's fold.json against the current fold files and its other folds; the ensemble's files against
ensemble.json's digests, and ensemble.json against the current fold files and fold records; the leaderboard's
columns and numbers.

The fold files, a fold's run, the tuned parameters and the ensemble set are each files plus a record of their
digests written last (:class:`compkit.records.RecordedFiles`): a kill in between leaves files that fail
verification, never a mismatched set that passes.
"""

from __future__ import annotations

from pathlib import Path

from compkit.artifacts.ensemble import EnsembleSet
from compkit.artifacts.folds import FoldFiles
from compkit.artifacts.leaderboard import Leaderboard
from compkit.artifacts.runs import FoldRuns
from compkit.artifacts.store import Store
from compkit.artifacts.tuned import TunedParams


class Layout(Store):
    """Every artefact of one competition's run, from its config and :class:`~compkit.config.Paths`: hands out the stores."""

    @property
    def folds(self) -> FoldFiles:
        """folds.csv, holdout.csv, their record folds.json, and pseudo.csv."""
        return FoldFiles(self.config, self.paths)

    @property
    def runs(self) -> FoldRuns:
        """Each backbone's fold runs: models, history, probability files and fold.json."""
        return FoldRuns(self.config, self.paths)

    @property
    def tuned(self) -> TunedParams:
        """The best Optuna trial of each backbone."""
        return TunedParams(self.config, self.paths)

    @property
    def ensemble(self) -> EnsembleSet:
        """The selected blend's files and ensemble.json."""
        return EnsembleSet(self.config, self.paths)

    @property
    def board(self) -> Leaderboard:
        """The submissions and leaderboard.csv."""
        return Leaderboard(self.config, self.paths)

    @property
    def bundle_dir(self) -> Path:
        """``bundle/<c>/``: the offline inference bundle (`make package`, package.py)."""
        return self.paths.root / "bundle" / self.config.competition.name

    @property
    def kernel_record(self) -> Path:
        """``runs/<c>/platform/kernel.json``: the kernel `make push-kernel` pushed, its version and bundle (kernel.py)."""
        return self.paths.runs / "platform" / "kernel.json"
