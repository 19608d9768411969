"""Decode-once pixel cache: a split's (N, H, W, C) uint8 pixels as one ``.npy`` file, read through a memory map.

In ``runs/<competition>/cache/`` (:attr:`compkit.config.Paths.cache`)::

    <split>-<key>.npy    (N, H, W, C) uint8, C order: the decoded (and resized) images, in the split's row order
    <split>-<key>.json   its record: key, shape, sources, seconds to build, and the sha256 of each
                         :data:`BLOCK` bytes of the .npy (``sha256``); written after the .npy

``key`` is a digest of the source files' stamps (name, size, modification time in ns: :func:`stamp`),
the image shape and :data:`VERSION`, so a changed, added or removed source file or a new
``image_shape`` gives a new key and a rebuild; the superseded files of that split are deleted then.
The ``.npy`` is written to a temporary file and renamed, and its record after it: a killed build
leaves a ``.build-<pid>-*`` file (deleted by the next build: its writer holds a kernel lock on it while it lives,
so a reused pid does not keep it) or a ``.npy`` without a record, neither of which is used. The reader checks the
record's key and shape, the ``.npy`` header (uint8, C order, the shape, the file's size) and the content against
the record's block digests (threads hash the blocks, ~1.4 GB/s a core); a mismatch is one line and a rebuild
(`compkit check` only reads a cache: it builds none and deletes none).

Stamps, not content digests: hashing 10 GB of photos per stage would cost more than the decode it
saves; an edit that keeps a file's size and modification time is not seen (``make clean`` clears it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from compkit import console
from compkit.errors import CompkitError

VERSION = 1  # bump when the decoding changes (resampling, channel conversion): every cache is rebuilt
BUILDING = ".build-"  # prefix of a .npy or record being written: .build-<pid>-<split>-<key>.npy
BLOCK = 16 * 2**20  # bytes per content digest of the .npy: blocks are hashed in parallel threads
HASH_THREADS = min(8, os.cpu_count() or 1)
FRESH_S = 10  # a build file younger than this is never deleted (its writer may not have locked it yet)


def stamp(folder: Path, name: str) -> list:
    """``[name, size in bytes, modification time in ns]`` of the file ``name`` in ``folder``; raises FileNotFoundError.

    ``os.stat`` on a string path: pathlib's parsing cost more than the stat itself, 70,000 times per stage.
    """
    info = os.stat(os.path.join(folder, name))
    return [str(name), info.st_size, info.st_mtime_ns]


def key(sources: list, shape: tuple[int, ...], decode: dict | None = None) -> str:
    """16 hex digits of the sha256 of the source stamps, the (H, W, C) shape, :data:`VERSION` and the ``decode`` settings
    that change the pixels (the crop to the object: :func:`compkit.photos.object_box`; None: none, the key of a plain decode)."""
    fields = {"version": VERSION, "shape": list(shape), "sources": sources} | ({"decode": decode} if decode else {})
    text = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _paths(folder: Path, split: str, digest: str) -> tuple[Path, Path]:
    return Path(folder) / f"{split}-{digest}.npy", Path(folder) / f"{split}-{digest}.json"


def _header_problem(path: Path) -> str | None:
    """Why the ``.npy`` at ``path`` is not a whole (N, ...) uint8 C-order array file, or None."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as exc:
            return f"not a .npy file ({exc})"
        expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
    if dtype != np.uint8 or fortran:
        return f"its header says {dtype}{', Fortran order' if fortran else ''}, not uint8 in C order"
    return None if size == expected else f"{size} bytes, not the {expected} of its header (cut short?)"


def open_pixels(path: Path) -> np.memmap:
    """The ``.npy`` at ``path`` as a read-only ``np.memmap`` (``np.load(mmap_mode="r")``): opened in milliseconds
    whatever its size; pages are read from disk when rows are indexed.

    Raises:
        ValueError: not a ``.npy`` file, not uint8 in C order, or shorter than its header says (cut short).
    """
    problem = _header_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return np.load(path, mmap_mode="r")


def block_digests(path: Path) -> list[str]:
    """The sha256 (first 32 hex digits) of each :data:`BLOCK` bytes of the file at ``path``, in order.

    :data:`HASH_THREADS` threads read and hash the blocks (hashlib releases the GIL): memory, one block a thread.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        def one(offset: int) -> str:
            return hashlib.sha256(os.pread(fd, BLOCK, offset)).hexdigest()[:32]

        with ThreadPoolExecutor(HASH_THREADS) as pool:
            return list(pool.map(one, range(0, os.fstat(fd).st_size, BLOCK)))
    finally:
        os.close(fd)


def _refuse_folders(folder: Path, npy: Path, record: Path) -> None:
    """Raise :class:`CompkitError` when the cache folder is a file, or a cache file's name is a folder."""
    if folder.exists() and not folder.is_dir():
        raise CompkitError(f"{folder}: a file where compkit's pixel cache folder goes; move or delete it")
    for path in (npy, record):
        if path.is_dir():
            raise CompkitError(f"{path}: a folder where compkit's pixel cache file goes; delete it (rm -r {path})")


def _problem(npy: Path, record: Path, digest: str, shape: tuple[int, ...]) -> str | None:
    """Why the cache ``npy`` with its ``record`` may not be used for key ``digest`` and (H, W, C) ``shape``, or None."""
    if not record.is_file():
        return "no record beside it (a build killed before writing it)"
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"its record {record.name} is not readable JSON"
    if not isinstance(meta, dict):
        return f"its record {record.name} holds a JSON {type(meta).__name__}, not an object"
    problem = _header_problem(npy)
    if problem:
        return problem
    pixels = np.load(npy, mmap_mode="r")
    if meta.get("key") != digest or pixels.shape[1:] != tuple(shape) or list(pixels.shape) != meta.get("shape"):
        return f"shape {list(pixels.shape)} or key differ from its record's and the config's ({list(shape)})"
    if meta.get("block") != BLOCK or not isinstance(meta.get("sha256"), list):
        return "its record has no content digests (an older compkit made it)"
    if block_digests(npy) != meta["sha256"]:
        return "its content differs from the digests in its record (changed on disk)"
    return None


def find(folder: Path, split: str, digest: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached pixels of ``split`` under ``digest`` as a memory map, or None when absent or damaged.

    A cache that is there but damaged (no record, another dtype, order or shape, content unlike its digests)
    is reported in one line and None returned, so the caller rebuilds it.

    Raises:
        CompkitError: ``folder`` is a file, or the cache's file name is a folder (names it and the fix).
    """
    folder = Path(folder)
    npy, record = _paths(folder, split, digest)
    _refuse_folders(folder, npy, record)
    if not npy.is_file():
        return None
    problem = _problem(npy, record, digest, shape)
    if problem:
        console.info(f"cache: {npy}: {problem}; decoding the images again")
        return None
    return np.load(npy, mmap_mode="r")


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
    npy, record = _paths(folder, split, digest)
    _refuse_folders(folder, npy, record)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if the build fails
    folder.mkdir(parents=True, exist_ok=True)
    _clear_killed(folder)
    start = time.perf_counter()
    tmp = folder / f"{BUILDING}{os.getpid()}-{npy.name}"  # the pid tells a killed build's file from a running one's
    try:
        with _locked(tmp) as f:
            _write_npy(f, tmp, n, shape, chunks)
            blocks = block_digests(tmp)
            os.replace(tmp, npy)
    except BaseException as exc:  # a bad image (DataError from the chunks), Ctrl-C, a full disk: leave the folders as they were
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a write() that failed: name the cache file
            exc.filename = str(npy)
        for made_dir in made:
            if made_dir.is_dir() and not any(made_dir.iterdir()):
                made_dir.rmdir()
        raise
    _write_record({"key": digest, "shape": [n, *shape], "sources": sources, "block": BLOCK, "sha256": blocks,
                   "seconds": round(time.perf_counter() - start, 2)}, record)
    for old in folder.glob(f"{split}-*"):  # superseded keys (a process still reading one keeps its open file)
        if old not in (npy, record):
            old.unlink(missing_ok=True)
    return open_pixels(npy)


@contextlib.contextmanager
def _locked(tmp: Path) -> Iterator[BinaryIO]:
    """``tmp`` opened for writing under an exclusive ``flock`` held until the block ends (or the process dies)."""
    with open(tmp, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f


def _write_record(meta: dict, record: Path) -> None:
    """Write the record through a locked ``.build-<pid>-`` file and a rename (a kill leaves what :func:`_clear_killed` removes)."""
    tmp = record.parent / f"{BUILDING}{os.getpid()}-{record.name}"
    try:
        with _locked(tmp) as f:
            f.write((json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
            os.replace(tmp, record)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_npy(f: BinaryIO, tmp: Path, n: int, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> None:
    """Write the .npy header of (n, *shape) uint8, then the chunks' bytes, to ``f`` (the file ``tmp``); checks rows and shapes."""
    written = 0
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": (n, *shape)})
    for chunk in chunks:
        if chunk.shape[1:] != tuple(shape) or chunk.dtype != np.uint8:
            raise ValueError(f"{tmp}: a chunk of {chunk.shape} {chunk.dtype}, not (m, {shape}) uint8")
        f.write(np.ascontiguousarray(chunk).data)
        written += len(chunk)
    f.flush()
    if written != n:
        raise ValueError(f"{tmp}: {written} rows written, not {n}")


def _clear_killed(folder: Path) -> None:
    """Delete ``.build-<pid>-...`` files no live writer holds: a killed build's (its ``flock`` died with it).

    A file younger than :data:`FRESH_S` is left: its writer may have created it and not yet locked it.
    """
    for tmp in folder.glob(f"{BUILDING}*"):
        try:
            with open(tmp, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if time.time() - os.fstat(f.fileno()).st_mtime > FRESH_S or not _alive(tmp.name.split("-")[1]):
                    tmp.unlink(missing_ok=True)
        except (BlockingIOError, FileNotFoundError, IsADirectoryError):  # a live writer's, gone meanwhile, or a folder
            continue


def _alive(pid: str) -> bool:
    """True when ``pid`` (the text of a build file's name) is a running process."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
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
