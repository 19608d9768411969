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


def stamp(folder: Path, name: str) -> list:
    """``[name, size in bytes, modification time in ns]`` of the file ``name`` in ``folder``; raises FileNotFoundError.

    ``os.stat`` on a string path: pathlib's parsing cost more than the stat itself, 70,000 times per stage.
    """
    info = os.stat(os.path.join(folder, name))
    return [str(name), info.st_size, info.st_mtime_ns]


def key(sources: list, shape: tuple[int, ...]) -> str:
    """16 hex digits of the sha256 of the source stamps, the (H, W, C) shape and :data:`VERSION`."""
    text = json.dumps({"version": VERSION, "shape": list(shape), "sources": sources}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _paths(folder: Path, split: str, digest: str) -> tuple[Path, Path]:
    return Path(folder) / f"{split}-{digest}.npy", Path(folder) / f"{split}-{digest}.json"


def open_pixels(path: Path) -> np.memmap:
    """The ``.npy`` at ``path`` as a read-only ``np.memmap`` (``np.load(mmap_mode="r")``): opened in milliseconds
    whatever its size; pages are read from disk when rows are indexed.

    Raises:
        ValueError: not a ``.npy`` file, or shorter than its header says (cut short).
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
        if os.fstat(f.fileno()).st_size != expected:
            raise ValueError(f"{path}: {os.fstat(f.fileno()).st_size} bytes, not the {expected} of its header")
    return np.load(path, mmap_mode="r")


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

    Rows of a cache (the ``np.memmap`` of :func:`open_pixels`) are read with ``os.preadv`` into the batch, not
    through the memory map: pages a process maps count toward its resident memory, and the kernel maps more than
    the row around each fault (read-ahead, fault-around), so indexing the map row by row grew a fold process by
    ~20 MB a batch (96 px). Read with ``preadv`` the file's pages stay in the page cache, shared and reclaimable,
    and the process holds one batch. In-memory arrays are indexed.
    """

    def __init__(self, sources: list[np.ndarray]):
        self.sources = sources
        self.files = [os.open(a.filename, os.O_RDONLY) if _whole_file(a) else None for a in sources]

    def __del__(self):
        for fd in getattr(self, "files", []):
            if fd is not None:
                os.close(fd)

    def __call__(self, source: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B,) source indices into ``sources`` and (B,) row indices -> (B, H, W, C) uint8, in the given order."""
        out = np.empty((len(rows), *self.sources[0].shape[1:]), np.uint8)
        for s in np.unique(source):
            at = np.flatnonzero(source == s)
            array, fd = self.sources[s], self.files[s]
            if fd is None:
                out[at] = np.take(array, rows[at], axis=0)
                continue
            size = out[0].nbytes
            for i, row in zip(at, rows[at]):
                if os.preadv(fd, [out[i]], array.offset + int(row) * size) != size:
                    raise OSError(f"{array.filename}: row {row} cut short; clear the cache (rm -r {Path(array.filename).parent})")
        return out


def _whole_file(array: np.ndarray) -> bool:
    """True for a whole ``.npy`` opened by :func:`open_pixels` (not a slice or copy of one, whose rows lie elsewhere)."""
    return isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)
