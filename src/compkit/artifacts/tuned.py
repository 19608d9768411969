"""Tuned parameters: ``runs/<c>/best/<backbone>.json``, the best Optuna trial of a backbone (make tune)."""

from __future__ import annotations

from pathlib import Path

from compkit.artifacts.store import Store
from compkit.errors import CompkitError
from compkit.records import RecordedFiles


class TunedParams(Store):
    """The best trial of each backbone's study: study, trial, value, metric and the trial's ``params``."""

    def path(self, backbone: str) -> Path:
        """``runs/<c>/best/<backbone>.json``: the best Optuna trial of ``backbone`` (see tune.py)."""
        return self.paths.runs / "best" / f"{backbone}.json"

    def _files(self, backbone: str) -> RecordedFiles:
        """A record with no files beside it: written atomically, read back with one-line errors."""
        return RecordedFiles(self.path(backbone).parent, self.path(backbone).name)

    def write(self, backbone: str, record: dict) -> None:
        """Write the best trial's record (study, trial, value, metric, params)."""
        self._files(backbone).write({}, record)

    def read(self, backbone: str) -> dict | None:
        """The tuned ``params`` of ``backbone``, or None when `make tune` has not written them.

        Raises:
            CompkitError: the file is empty, corrupt or has no ``params`` object.
        """
        path, fix = self.path(backbone), f"delete it or rerun {self.make('tune')}"
        if not path.is_file():
            return None
        params = self._files(backbone).read(fix).get("params")
        if not isinstance(params, dict):
            raise CompkitError(f"{path}: no 'params' object; {fix}")
        return params
