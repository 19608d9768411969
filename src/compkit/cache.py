"""Decode-once pixel cache: a split's (N, H, W, C) uint8 pixels as one ``.npy`` file, read through a memory map.

In ``runs/<competition>/cache/`` (:attr:`compkit.artifacts.Layout.cache_dir`)::

    <split>-<key>.npy    (N, H, W, C) uint8, C order: the decoded (and resized) images, in the split's row order
    <split>-<key>.json   its record: key, shape, sources, seconds to build; written after the .npy

``key`` is a digest of the source files' stamps (name, size, modification time in ns: :func:`stamp`),
the image shape and :data:`VERSION`, so a changed, added or removed source file or a new
``image_shape`` gives a new key and a rebuild; the superseded files of that split are deleted then.
The ``.npy`` is written to a temporary file and renamed, and its record after it: a killed build
leaves a ``.build-<pid>-*`` file (deleted by the next build) or a ``.npy`` without a record, neither of which
is used. The reader checks the record's key and shape and the file's size against the ``.npy`` header.

Stamps, not content digests: hashing 10 GB of photos per stage would cost more than the decode it
saves; an edit that keeps a file's size and modification time is not seen (``make clean`` clears it).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compkit.io import write_json

VERSION = 1  # bump when the decoding changes (resampling, channel conversion): every cache is rebuilt
BUILDING = ".build-"  # prefix of a .npy being written: .build-<pid>-<split>-<key>.npy
RELEASE_BYTES = 256 * 2**20  # gathered bytes after which a reader drops its mapped pages (:class:`Gather`)


def stamp(path: Path, root: Path) -> list:
    """``[path relative to root, size in bytes, modification time in ns]``; raises FileNotFoundError."""
    info = Path(path).stat()
    return [str(Path(path).relative_to(root)), info.st_size, info.st_mtime_ns]


def key(sources: list, shape: tuple[int, ...]) -> str:
    """16 hex digits of the sha256 of the source stamps, the (H, W, C) shape and :data:`VERSION`."""
    text = json.dumps({"version": VERSION, "shape": list(shape), "sources": sources}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _paths(folder: Path, split: str, digest: str) -> tuple[Path, Path]:
    return Path(folder) / f"{split}-{digest}.npy", Path(folder) / f"{split}-{digest}.json"


def open_pixels(path: Path) -> np.ndarray:
    """The ``.npy`` at ``path`` as a read-only array over a memory map (its ``base`` is the ``mmap.mmap``).

    Opening costs milliseconds whatever the size; pages are read from disk when rows are indexed.

    Raises:
        ValueError: not a version 1 or 2 ``.npy`` file, or shorter than its header says (cut short).
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
        if fortran or size != offset + int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: {size} bytes, not the {offset + int(np.prod(shape)) * dtype.itemsize} of its header")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype, buffer=mapped, offset=offset)


def find(folder: Path, split: str, digest: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached pixels of ``split`` under ``digest`` as a memory map, or None when absent, unrecorded or damaged."""
    npy, record = _paths(folder, split, digest)
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        pixels = open_pixels(npy)
    except (OSError, ValueError):  # no record (a build killed before it), no .npy, corrupt JSON, truncated .npy
        return None
    if meta.get("key") != digest or pixels.shape[1:] != tuple(shape) or list(pixels.shape) != meta.get("shape"):
        return None
    return pixels


def build(folder: Path, split: str, digest: str, shape: tuple[int, ...], n: int, chunks: Iterable[np.ndarray],
          sources: int) -> np.ndarray:
    """Write ``chunks`` ((m, H, W, C) uint8 blocks of ``n`` rows in all) as ``split``'s cache under ``digest``;
    returns it as a memory map (:func:`open_pixels`).

    The ``.npy`` goes through a temporary file and a rename, then its record; afterwards the split's
    caches under other keys and killed builds' temporary files are deleted. Memory: one chunk. A failed build
    (an exception from ``chunks``, e.g. a :class:`compkit.data.DataError`) leaves no file or folder it made.

    Raises:
        ValueError: the chunks hold other than ``n`` rows or another shape (a bug, not bad data).
    """
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if the build fails
    folder.mkdir(parents=True, exist_ok=True)
    _clear_killed(folder)
    npy, record = _paths(folder, split, digest)
    start = time.perf_counter()
    tmp = folder / f"{BUILDING}{os.getpid()}-{npy.name}"  # the pid tells a killed build's file from a running one's
    try:
        _write_npy(tmp, n, shape, chunks)
        os.replace(tmp, npy)
    except BaseException:  # a bad image (DataError from the chunks), Ctrl-C: leave the folders as they were
        tmp.unlink(missing_ok=True)
        for made_dir in made:
            if made_dir.is_dir() and not any(made_dir.iterdir()):
                made_dir.rmdir()
        raise
    write_json({"key": digest, "shape": [n, *shape], "sources": sources,
                "seconds": round(time.perf_counter() - start, 2)}, record)
    for old in folder.glob(f"{split}-*"):  # superseded keys (a process still reading one keeps its open file)
        if old not in (npy, record):
            old.unlink(missing_ok=True)
    return open_pixels(npy)


def _write_npy(tmp: Path, n: int, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> None:
    """Write the .npy header of (n, *shape) uint8, then the chunks' bytes; checks rows and shapes."""
    written = 0
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": (n, *shape)})
        for chunk in chunks:
            if chunk.shape[1:] != tuple(shape) or chunk.dtype != np.uint8:
                raise ValueError(f"{tmp}: a chunk of {chunk.shape} {chunk.dtype}, not (m, {shape}) uint8")
            f.write(np.ascontiguousarray(chunk).data)
            written += len(chunk)
    if written != n:
        raise ValueError(f"{tmp}: {written} rows written, not {n}")


def _clear_killed(folder: Path) -> None:
    """Delete ``.build-<pid>-...`` files whose writing process is gone: a killed build's."""
    for tmp in folder.glob(f"{BUILDING}*"):
        pid = tmp.name.split("-")[1]
        if not pid.isdigit() or not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Gather:
    """Rows of one or more pixel arrays by index, for a ``tf.numpy_function`` in an input pipeline.

    Keeps resident memory O(batch): pages of a memory-mapped cache that were read count toward the
    process's resident set until the kernel reclaims them, so after every :data:`RELEASE_BYTES`
    gathered the mapping's pages are dropped (``madvise(MADV_DONTNEED)``: they stay in the page cache,
    a later read maps them again without disk I/O).
    """

    def __init__(self, sources: list[np.ndarray]):
        self.sources = sources
        self.since_release = 0

    def __call__(self, source: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B,) source indices into ``sources`` and (B,) row indices -> (B, H, W, C) uint8, in the given order."""
        if len(self.sources) == 1:
            out = np.take(self.sources[0], rows, axis=0)
        else:
            out = np.empty((len(rows), *self.sources[0].shape[1:]), np.uint8)
            for s in np.unique(source):
                mask = source == s
                out[mask] = np.take(self.sources[s], rows[mask], axis=0)
        self.since_release += out.nbytes
        if self.since_release >= RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        """Drop the mapped pages of every memory-mapped source (others are left as they are)."""
        self.since_release = 0
        for array in self.sources:
            if isinstance(array.base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
                array.base.madvise(mmap.MADV_DONTNEED)
