"""A set of files plus a record of their digests: the one way compkit commits a multi-file artefact.

The files are written first, each atomically, then the record (a JSON object whose ``files`` maps each file's name
to the sha256 of its bytes), so a kill in between leaves files that fail verification, never a mismatched set that
passes. Reading back checks a file against the record before anyone uses it. The fold files (folds.json), each
fold's run (fold.json) and the ensemble set (ensemble.json) are such sets (see compkit.artifacts).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from compkit.io import atomic_path, read_json


def sha256_bytes(data: bytes) -> str:
    """sha256 hex of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 hex of the file's bytes."""
    return sha256_bytes(Path(path).read_bytes())


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def digests(record: dict) -> dict:
    """A record's ``files`` (name -> sha256), or {} when it has none."""
    files = record.get("files")
    return files if isinstance(files, dict) else {}


def record_bytes(record: dict, files: dict[str, bytes]) -> bytes:
    """``record`` plus ``files``, the sha256 of each of ``files`` (name -> bytes), as the JSON bytes written."""
    return (json.dumps({**record, "files": {n: sha256_bytes(d) for n, d in files.items()}}, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class RecordedFiles:
    """Files in ``folder`` and their digest record ``folder / record``, written after them."""

    folder: Path
    record: str

    def path(self, name: str) -> Path:
        """File ``name`` of the set (the record's own name too)."""
        return self.folder / name

    def write(self, files: dict[str, bytes], record: dict) -> dict:
        """Write ``files`` (name -> bytes), then the record: ``record`` plus their digests. Returns the record written."""
        self.write_raw(files, record_bytes(record, files))
        return {**record, "files": {n: sha256_bytes(d) for n, d in files.items()}}

    def write_raw(self, files: dict[str, bytes], record: bytes) -> None:
        """Write ``files``, then the record's own bytes ``record`` (a record made elsewhere, already checked)."""
        for name, data in files.items():
            write_bytes(self.path(name), data)
        write_bytes(self.path(self.record), record)

    def read(self, fix: str) -> dict:
        """The record; missing, empty or corrupt raises one line ending in ``fix`` (:func:`compkit.io.read_json`)."""
        return read_json(self.path(self.record), fix)

    def problem(self, record: dict, name: str) -> str | None:
        """Why file ``name`` does not match ``record``: ``"not found"``, ``"no digest"`` or ``"differs"``; None when it matches."""
        path = self.path(name)
        if not path.is_file():
            return "not found"
        if name not in digests(record):
            return "no digest"
        return None if sha256_file(path) == digests(record)[name] else "differs"
