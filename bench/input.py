"""Input benchmark: images/s of the CPU side of compkit's training input pipeline alone (no model), per core.

A pixel cache of ``--rows`` real RGB photos (scikit-image's astronaut, coffee, chelsea, rocket, ..., resized to
``--size``) is written in a temporary folder as `make folds` writes one (:mod:`compkit.cache`) and read through the
training pipeline (:func:`compkit.fitting._dataset` over :func:`compkit.fitting.stream_rows`: shuffle, batch 64,
:class:`compkit.cache.Gather`), with a photo competition's augmentation (shift 0.1, rotation 10, zoom 0.1, CutMix 1.0):

- ``device``: as a GPU run configures it (``train.augment_on = "device"``): the CPU gathers uint8 rows and draws each
  batch's transform parameters; the transforms themselves are the training step's, on the GPU (not run here).
- ``pipeline``: the transforms in the tf.data map on the CPU (``augment_on = "pipeline"``, what a CPU run does and what
  every run did before): what a GPU run would cost the CPU without device augmentation.

Per row: images/s (wall clock, after one untimed batch), CPU ms per image (the process's user + system time, all
threads), images/s per core (images/s / cores this process may use: run it under ``taskset``, as
``make bench-input CORES=n`` does). Then the published GPU rates (:mod:`compkit.rates`) against the device row scaled
to 16 cores (a DGX A100's per GPU) and to this machine's cores. The last line reads
``input pipeline: <N> images/s per core at <SIZE> px`` (the device row).

    python bench/input.py [--size 224] [--rows 512] [--batches 40] [--modes device,pipeline]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compkit import cache, devices, fitting, rates  # noqa: E402
from compkit.config import Augment, Hyper  # noqa: E402
from compkit.data import Images  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")  # skimage.data RGB photos
PHOTO_AUGMENT = Augment(shift=0.1, rotation=10.0, zoom=0.1, cutmix=1.0)
DGX_CORES = 16  # CPU cores per GPU of a DGX A100 (2 x 64-core EPYC for 8 GPUs)


def photo_cache(folder: Path, size: int, rows: int) -> np.ndarray:
    """A ``rows`` x (size, size, 3) uint8 pixel cache of the photos in turn, as a memory map (:func:`compkit.cache.build`)."""
    import skimage.data
    from skimage.transform import resize

    photos = [(resize(getattr(skimage.data, n)()[..., :3], (size, size), anti_aliasing=True) * 255).astype(np.uint8) for n in PHOTOS]
    chunks = (np.stack([photos[i % len(photos)] for i in range(start, min(start + 64, rows))]) for start in range(0, rows, 64))
    return cache.build(folder, "train", "bench", (size, size, 3), rows, chunks, len(PHOTOS))


def measure(pixels: np.ndarray, mode: str, batches: int, batch_size: int) -> dict:
    """images/s and CPU ms per image of ``batches`` batches of the training pipeline in ``mode`` (after one untimed batch)."""
    split = Images(ids=np.arange(len(pixels)), images=pixels, labels=np.zeros(len(pixels), np.int64), extras=None)
    hyper = Hyper(batch_size=batch_size, augment=PHOTO_AUGMENT)
    rows = np.arange(len(pixels))
    elements, load = fitting.stream_rows([(split, rows)], hyper)
    targets = np.eye(10, dtype=np.float32)[rows % 10]
    ds = fitting._dataset(elements, targets, hyper, seed=0, load=load, where=mode).repeat()
    it = iter(ds)
    next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * batch_size
    return {"mode": mode, "images_s": images / wall, "cpu_ms": 1000 * cpu / images, "per_core": images / wall / devices.cores()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="image side, pixels (default %(default)s)")
    p.add_argument("--rows", type=int, default=512, help="rows of the pixel cache (default %(default)s)")
    p.add_argument("--batches", type=int, default=300, help="timed batches of 64 in device mode (default %(default)s)")
    p.add_argument("--pipeline-batches", type=int, default=6, help="timed batches in pipeline mode, slow (default %(default)s)")
    p.add_argument("--modes", default="pipeline,device", help="comma-separated: device, pipeline (default %(default)s)")
    args = p.parse_args()
    cores = devices.cores()
    with tempfile.TemporaryDirectory() as root:
        pixels = photo_cache(Path(root), args.size, args.rows)
        rows = [measure(pixels, m, args.batches if m == "device" else args.pipeline_batches, 64) for m in args.modes.split(",")]
    load = os.getloadavg()
    print(f"\ninput pipeline, {args.rows} photos at {args.size}x{args.size}x3 (uint8 cache), batch 64, augment "
          f"shift 0.1 rotation 10 zoom 0.1 cutmix 1.0; {cores} core(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'mode':<9} {'images/s':>9} {'CPU ms/image':>12} {'images/s per core':>17}")
    for r in rows:
        print(f"{r['mode']:<9} {r['images_s']:>9.0f} {r['cpu_ms']:>12.3f} {r['per_core']:>17.0f}")
    device = next((r for r in rows if r["mode"] == "device"), rows[-1])
    for label, n in ((f"{DGX_CORES} cores (a DGX A100's per GPU)", DGX_CORES), (f"this machine's {cores}", cores)):
        fed = device["per_core"] * n
        print(f"\nthe {device['mode']} pipeline gives ~{fed:,.0f} img/s on {label}:")
        for rate in rates.for_gpu():
            print(f"  {rates.verdict(fed, rate)}")
    print(f"input pipeline: {device['per_core']:.0f} images/s per core at {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
