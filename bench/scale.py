"""Data-scale benchmark: the same photo competition at increasing rows and image sizes; per fold process,
peak resident memory, seconds to the first batch and images/s; per size, the one decode into the cache.

Fashion-MNIST (all 70,000 images: 60,000 labelled train, 10,000 test; Debian's dataset-fashion-mnist)
is written ONCE as real PNG files into ``--scratch`` (default: the system temp folder, not the repo),
an image-folder competition. Each ``--rows`` N takes its first N * 6/7 train and N / 7 test images; each
``--sizes`` S configures ``image_shape = [S, S, 3]`` (the 28 px gray images upscaled and made RGB on decode).
Per (N, S), in a fresh root under ``--scratch``:

1. ``folds.run`` (as `make folds`): validates, writes the fold files and decodes every image once into
   ``runs/<c>/cache/`` (decode seconds and images/s from the cache's record).
2. Two fold processes in turn (fresh processes, as `make train` runs folds), each: ``fitting.fold_data``
   (opens the cache), the streamed training pipeline of ``--backbone`` (from scratch) for ``--steps`` batches (a full
   epoch of 43,200 rows at 224 px took 12 minutes on 2 cores), then the streamed prediction of ``--predict`` OOF rows.
   Printed per process: peak RSS (ru_maxrss; also as it stood after training, before prediction), seconds to open the
   fold's data (``open_s``: the cache's memory maps) and from process start (TensorFlow's import included) to the
   first batch, train and predict images/s.

The verdict compares the fold processes' peak RSS across N at each size: "flat" when the largest N is within
10% of the smallest. A benchmark that prints figures, not a test; timings need a quiet machine.

    python bench/scale.py [--rows 10000,30000,70000] [--sizes 96,224] [--steps 20] [--predict 1024]
                          [--backbone mobilenetv3small] [--scratch DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compkit import folds  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.datasets import fashion_mnist  # noqa: E402
from compkit.process import in_fresh_process  # noqa: E402

CLASSES = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
CONFIG = """
[competition]
name = "fmnist-photos"
layout = "image_folder"
train_file = "labels.csv"
train_images = "train"
test_images = "test"
sample_submission = "sample_submission.csv"
id_column = "file"
target_column = "category"
classes = {classes}
image_shape = [{size}, {size}, 3]
metric = "accuracy"
submission_columns = ["file", "category"]

[folds]
n_splits = 5
stratify = ["category"]
holdout_fraction = 0.1

[train]
backbones = ["{backbone}"]
epochs = 1
batch_size = 32
"""


def write_pngs(pool: Path) -> tuple[np.ndarray, int]:
    """All of Fashion-MNIST as PNG files under ``pool/train`` and ``pool/test``, once (a marker file says done);
    returns (train labels, number of test images)."""
    from PIL import Image

    (x_train, y_train), (x_test, _) = fashion_mnist()
    done = pool / "written.json"
    if not done.is_file():
        start = time.perf_counter()
        for split, images in (("train", x_train), ("test", x_test)):
            (pool / split).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(pool / split / f"{split}_{i:05d}.png")
        done.write_text(json.dumps({"train": len(x_train), "test": len(x_test), "seconds": time.perf_counter() - start}))
        print(f"wrote {len(x_train) + len(x_test)} PNG files to {pool} in {time.perf_counter() - start:.0f}s", flush=True)
    return y_train, len(x_test)


def competition(pool: Path, data: Path, labels: np.ndarray, n_train: int, n_test: int) -> None:
    """A data folder of the first ``n_train`` train and ``n_test`` test PNGs (symbolic links into ``pool``)."""
    if (data / "labels.csv").is_file():
        return
    (data / "test").mkdir(parents=True)
    (data / "train").symlink_to(pool / "train")  # labels.csv names the rows; other files are not read
    test_files = [f"test_{i:05d}.png" for i in range(n_test)]
    for name in test_files:
        (data / "test" / name).symlink_to(pool / "test" / name)
    files = [f"train_{i:05d}.png" for i in range(n_train)]
    pd.DataFrame({"file": files, "category": [CLASSES[c] for c in labels[:n_train]]}).to_csv(data / "labels.csv", index=False)
    pd.DataFrame({"file": test_files, "category": CLASSES[0]}).to_csv(data / "sample_submission.csv", index=False)


def probe_fold(config, paths: Paths, fold: int, steps: int, predict: int, started: float) -> dict:
    """In a fresh fold process: open the fold's data, train ``steps`` streamed batches of the config's backbone,
    predict ``predict`` OOF rows; returns the figures."""
    import keras

    from compkit import fitting
    from compkit.augment import predict_tta
    from compkit.backbones import build_model

    backbone, comp = config.train.backbones[0], config.competition
    hyper = config.hyper(backbone)
    start = time.perf_counter()
    data = fitting.fold_data(config, paths, fold)
    open_seconds = time.perf_counter() - start
    model = build_model(backbone, comp.image_shape, len(comp.classes), hyper, fitting.vocabularies(data.train, hyper))
    model.compile(optimizer=keras.optimizers.Adam(hyper.learning_rate), loss="categorical_crossentropy")
    batches = iter(fitting.training_set(data, hyper, seed=fold))
    first = next(batches)
    first_batch = time.time() - started
    model.train_on_batch(*first)  # traced here, not timed
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(batches))
    train_seconds = time.perf_counter() - start
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before prediction: which phase sets the peak
    del batches  # an iterator left open holds tf.data's prefetch threads
    rows = data.val[:predict]
    predict_tta(model, fitting.stream(data.train, rows[:64], hyper), hyper.augment, 1, seed=0)  # traced
    start = time.perf_counter()
    predict_tta(model, fitting.stream(data.train, rows, hyper), hyper.augment, 1, seed=0)
    predict_seconds = time.perf_counter() - start
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "train_peak_rss_mb": train_peak,
            "first_batch_s": first_batch,
            "open_s": open_seconds,
            "train_img_s": steps * hyper.batch_size / train_seconds, "predict_img_s": len(rows) / predict_seconds}


def measure(pool: Path, scratch: Path, labels: np.ndarray, n_test_all: int, rows: int, size: int, args) -> list[dict]:
    n_test = min(n_test_all, round(rows / 7))
    n_train = min(len(labels), rows - n_test)
    tag = f"{rows}-{size}px"
    data, root, configs = scratch / f"data-{rows}", scratch / f"root-{tag}", scratch / f"configs-{size}"
    competition(pool, data, labels, n_train, n_test)
    configs.mkdir(exist_ok=True)
    (configs / "fmnist-photos.toml").write_text(CONFIG.format(classes=json.dumps(CLASSES), size=size, backbone=args.backbone))
    config = load_config("fmnist-photos", None, [], configs)
    paths = Paths.for_competition("fmnist-photos", root, data)
    start = time.perf_counter()
    folds.run(config, paths)  # decodes train and test into the cache, once
    folds_seconds = time.perf_counter() - start
    records = [json.loads(p.read_text()) for p in sorted(paths.cache.glob("*.json"))]
    decode = sum(r["seconds"] for r in records)
    cache_gb = sum(p.stat().st_size for p in paths.cache.glob("*.npy")) / 1e9
    out = []
    for fold in (0, 1):
        row = in_fresh_process(f"{tag} fold {fold}", probe_fold, config, paths, fold, args.steps, args.predict, time.time())
        row.update(rows=n_train + n_test, size=size, fold=fold, decode_s=decode, decode_img_s=(n_train + n_test) / decode,
                   folds_s=folds_seconds, cache_gb=cache_gb)
        print(f"{row['rows']:>6} {size:>4}px fold {fold}: peak RSS {row['peak_rss_mb']:.0f} MiB "
              f"(after training {row['train_peak_rss_mb']:.0f}), data opened in "
              f"{row['open_s']:.1f}s, first batch "
              f"{row['first_batch_s']:.1f}s, train {row['train_img_s']:.0f} img/s, predict {row['predict_img_s']:.0f} img/s "
              f"(cache {cache_gb:.2f} GB decoded in {decode:.0f}s, {row['decode_img_s']:.0f} img/s)", flush=True)
        out.append(row)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)  # its cache: 10.5 GB at 70,000 x 224 px
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="10000,30000,70000", help="comma-separated row counts (train + test)")
    p.add_argument("--sizes", default="96,224", help="comma-separated square image sizes (px)")
    p.add_argument("--steps", type=int, default=20, help="training batches timed per fold process")
    p.add_argument("--predict", type=int, default=1024, help="OOF rows predicted per fold process")
    p.add_argument("--backbone", default="mobilenetv3small", help="from scratch; a 224 px backbone (default %(default)s)")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "compkit-bench-scale")
    p.add_argument("--keep", action="store_true", help="keep each run's root (and its cache)")
    args = p.parse_args()
    pool = args.scratch / "fashion-mnist-png"
    labels, n_test = write_pngs(pool)
    rows = []
    for size in map(int, args.sizes.split(",")):
        for n in map(int, args.rows.split(",")):
            rows += measure(pool, args.scratch, labels, n_test, n, size, args)
    table = pd.DataFrame(rows)[["rows", "size", "fold", "peak_rss_mb", "train_peak_rss_mb", "open_s", "first_batch_s", "train_img_s", "predict_img_s",
                                "decode_s", "decode_img_s", "cache_gb"]]
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for size, group in table.groupby("size"):
        peaks = group.groupby("rows")["peak_rss_mb"].max()
        low, high = peaks.iloc[0], peaks.iloc[-1]
        verdict = "flat" if abs(high - low) <= 0.1 * low else "GROWING"
        print(f"{size}px: fold-process peak RSS {low:.0f} MiB at {peaks.index[0]} rows, {high:.0f} MiB at "
              f"{peaks.index[-1]} rows ({100 * (high - low) / low:+.1f}%): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
