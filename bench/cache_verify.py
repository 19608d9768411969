"""Cost of verifying a pixel cache on open (compkit.cache.find: header + block digests), by rows and image size.

Usage: python bench/cache_verify.py [rows px channels ...]   (default: 10000 28 1  70000 28 1  10000 224 3)
Writes a cache of random uint8 pixels under a temporary folder with compkit.cache.build, then times find()
twice (the file then in the page cache, as after the build or a previous stage) and prints one line per case.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compkit import cache


def case(rows: int, px: int, channels: int) -> str:
    shape = (px, px, channels)
    rng = np.random.default_rng(0)
    chunk = 1000
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:
        chunks = (rng.integers(0, 256, (min(chunk, rows - i), *shape), dtype=np.uint8) for i in range(0, rows, chunk))
        start = time.perf_counter()
        cache.build(Path(folder), "train", "0" * 16, shape, rows, chunks, sources=rows)
        built = time.perf_counter() - start
        times = []
        for _ in range(2):
            start = time.perf_counter()
            assert cache.find(Path(folder), "train", "0" * 16, shape) is not None
            times.append(time.perf_counter() - start)
        size = (Path(folder) / f"train-{'0' * 16}.npy").stat().st_size
    return (f"{rows} rows x {px}x{px}x{channels}: {size / 1e9:.3f} GB, build (random pixels, digests included) {built:.2f} s, "
            f"verified open {min(times):.3f} s ({size / 1e9 / min(times):.2f} GB/s, {cache.HASH_THREADS} threads)")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [10000, 28, 1, 70000, 28, 1, 10000, 224, 3]
    for i in range(0, len(args), 3):
        print(case(*args[i:i + 3]), flush=True)
