"""`make clean`: delete one competition's ``folds/<competition>`` and ``runs/<competition>`` (submissions are kept)."""

from __future__ import annotations

import shutil
from pathlib import Path

from compkit import console
from compkit.config import check_name


def run(root: Path, competition: str) -> list[Path]:
    """Delete ``<root>/runs/<competition>`` and ``<root>/folds/<competition>``; returns those that existed.

    ``competition`` must be a safe name (:func:`compkit.config.check_name`), so the two folders are
    children of ``runs/`` and ``folds/``: an empty name, ``..``, ``../src`` or ``/`` is refused before
    anything is deleted. A symbolic link there is removed, never what it points to.

    Raises:
        ConfigError: ``competition`` is not a safe name.
    """
    check_name(competition, "COMPETITION")
    removed = []
    for kind in ("runs", "folds"):
        target = Path(root) / kind / competition
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            continue
        removed.append(target)
    console.summary(f"clean: removed {', '.join(map(str, removed)) or 'nothing (no runs or folds)'} for {competition}; submissions kept")
    return removed
