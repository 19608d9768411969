"""Throughput benchmark: images/s of compkit's training loop against a bare ``model.fit``, and of prediction.

On the real DACON data with the cpu preset's hyperparameters, fold 0 (folds written in a temporary
root), for each backbone of the preset (or ``--backbones``) it prints one row:

- compkit img/s: ``compkit.fitting.fit`` (tf.data pipeline, per-epoch validation, EpochLogger,
  EarlyStopping, ReduceLROnPlateau; no W&B: WANDB_MODE=disabled) for ``--epochs`` epochs, early
  stopping off (patience = epochs). Counted as fit rows x timed epochs / seconds of the *training
  part* of each epoch (epoch begin to validation begin), so it compares like with like.
- bare img/s: ``model.fit(x, y, batch_size, epochs, verbose=0)`` on numpy arrays of the same fit rows,
  same ``build_model`` call and the compile (optimizer, loss, metrics) compkit's model had when its
  training began; no validation, no callbacks but the timer.
- ratio = compkit / bare, verdict ``ok`` when >= 0.95 else ``SLOW``.
- whole-epoch img/s and ratio: compkit's epochs including validation and the callbacks, with the
  seconds per epoch of validation and of the rest (callbacks, Keras bookkeeping), to see what costs.
- predict img/s: train_fold's prediction (``predict_tta``: ``tta`` views per image) of the holdout + test rows.

Each row is repeated per precision policy (``--precisions float32,mixed_bfloat16``: ``train.precision``, both
loops under it) and per worker count (``--workers 1,2``: n processes measuring at once, each with cores // n
intra-op threads as ``train.workers = n`` runs folds; the img/s columns are the sum over the n processes,
the ratios their mean), so a user on a GPU or a many-core CPU can choose with figures.

Warm-up rule (both loops): the first epoch (tracing) is run but not timed;
epochs are timed by a Keras callback with epoch hooks only (no per-batch hook, so Keras keeps
dispatching batches asynchronously). Prediction: one untimed call, then the median of ``--repeats``.
A benchmark that prints figures, not a test; timings need a quiet machine. About 1.5 minutes per
backbone x precision x worker count on 2 cores.

    python bench/throughput.py [--epochs 3] [--backbones cnn_small,resnet_small] [--precisions float32,mixed_bfloat16]
                               [--workers 1,2] [--data-dir DIR] [--set key=value]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "disabled")  # measure training, not W&B's offline writer
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compkit import devices, fitting, folds  # noqa: E402
from compkit.augment import predict_tta  # noqa: E402
from compkit.backbones import build_model  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.executors import LocalExecutor, Unit  # noqa: E402

WARMUP_EPOCHS = 1  # run, not timed: graph tracing and the tf.data cache
OK_RATIO = 0.95  # issue 17: compkit's loop may cost at most 5% against a bare model.fit


def epoch_timer():
    """A Keras callback recording perf_counter at each epoch's begin/end and around its validation.

    It also keeps the model's compile config as it was when training began (before any LR change).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict[str, float]] = []
            self.compile_config = None

        def on_train_begin(self, logs=None):
            self.compile_config = self.model.get_compile_config()

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append({"begin": time.perf_counter()})

        def on_test_begin(self, logs=None):
            self.epochs[-1]["val_begin"] = time.perf_counter()

        def on_test_end(self, logs=None):
            self.epochs[-1]["val_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[-1]["end"] = time.perf_counter()

    return EpochTimer()


def steady_seconds(timer) -> dict[str, float]:
    """Seconds summed over the timed epochs (all but the warm-up): train part, validation, whole epoch."""
    timed = timer.epochs[WARMUP_EPOCHS:]
    train_s = sum(e.get("val_begin", e["end"]) - e["begin"] for e in timed)
    val_s = sum(e["val_end"] - e["val_begin"] for e in timed if "val_begin" in e)
    wall_s = sum(e["end"] - e["begin"] for e in timed)
    return {"epochs": len(timed), "train": train_s, "val": val_s, "wall": wall_s}


def time_compkit(config, data, backbone: str, seed: int):
    """compkit.fitting.fit with an epoch timer; returns (fitted model, timer)."""
    import keras

    keras.utils.set_random_seed(seed)
    timer = epoch_timer()
    model, _ = fitting.fit(config, config.hyper(backbone), backbone, data, seed, f"[{backbone} bench]", [timer])
    return model, timer


def time_bare(config, data, backbone: str, seed: int, compile_config: dict):
    """A bare model.fit on numpy arrays of the same rows, model and compile; returns the timer."""
    import keras

    comp, hyper = config.competition, config.hyper(backbone)
    keras.utils.set_random_seed(seed)
    model = build_model(backbone, comp.image_shape, len(comp.classes), hyper, fitting.vocabularies(data.train, hyper))
    model.compile_from_config(compile_config)
    x, y = data.fit_set(hyper)  # the same rows and inputs compkit trains on, without its augmentation map
    timer = epoch_timer()
    model.fit(x, y, batch_size=hyper.batch_size, epochs=hyper.epochs, verbose=0, callbacks=[timer])
    return timer


def predict_inputs(data, hyper):
    """(streamed batches, rows) train_fold predicts besides OOF: the holdout, and test when the competition ships it."""
    inputs, rows = fitting.stream(data.train, data.held, hyper), len(data.held)
    if data.test is not None:
        inputs = inputs.concatenate(fitting.stream(data.test, np.arange(len(data.test.ids)), hyper))
        rows += len(data.test.ids)
    return inputs, rows


def time_predict(model, inputs, hyper, repeats: int, where: str) -> float:
    """Median seconds of train_fold's prediction (``predict_tta`` with the config's ``tta`` views, made ``where``
    ``train.augment_on`` says) after one untimed call."""
    predict_tta(model, inputs, hyper.augment, hyper.tta, seed=0, where=where)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_tta(model, inputs, hyper.augment, hyper.tta, seed=0, where=where)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(config, data, backbone: str, repeats: int) -> dict:
    """One table row: compkit's and the bare loop's img/s, their ratios, the epoch breakdown, predict img/s."""
    hyper, n_fit = config.hyper(backbone), len(data.fit) + len(data.pseudo)
    where = devices.augment_where(config.train.augment_on, hyper.augment)
    model, ck_timer = time_compkit(config, data, backbone, config.train.seed)
    if len(ck_timer.epochs) != hyper.epochs:
        raise SystemExit(f"{backbone}: compkit ran {len(ck_timer.epochs)} of {hyper.epochs} epochs; raise train.patience")
    bare = steady_seconds(time_bare(config, data, backbone, config.train.seed, ck_timer.compile_config))
    ck = steady_seconds(ck_timer)
    trained = n_fit * ck["epochs"]  # images through the timed epochs, the same for both loops
    inputs, predict_rows = predict_inputs(data, hyper)
    row = {
        "backbone": backbone,
        "fit_rows": n_fit,
        "batch": hyper.batch_size,
        "timed": f"{WARMUP_EPOCHS + 1}-{hyper.epochs}",
        "compkit": trained / ck["train"],
        "bare": trained / bare["wall"],
        "epoch": trained / ck["wall"],
        "val_s": ck["val"] / ck["epochs"],
        "other_s": (ck["wall"] - ck["train"] - ck["val"]) / ck["epochs"],
        "predict_rows": predict_rows,
        "predict": predict_rows / time_predict(model, inputs, hyper, repeats, where),
    }
    row["ratio"], row["epoch_ratio"] = row["compkit"] / row["bare"], row["epoch"] / row["bare"]
    return row


def measure_fold0(config, paths, backbone: str, repeats: int) -> dict:
    """:func:`measure` on fold 0 of ``paths`` (read here: it runs in a worker process)."""
    return measure(config, fitting.fold_data(config, paths, 0), backbone, repeats)


SUMMED = ("compkit", "bare", "epoch", "predict")  # img/s, added up over concurrent workers


def measure_workers(config, paths, backbone: str, repeats: int, workers: int) -> dict:
    """:func:`measure` in ``workers`` processes at once, each on a :class:`compkit.devices.Slot` with cores // workers threads."""
    threads = max(1, devices.cores() // workers) if workers > 1 else 0
    executor = LocalExecutor([devices.Slot(None, threads)] * workers)
    for w in range(workers):
        executor.submit(Unit(w, f"{backbone} worker {w}", measure_fold0, config, paths, (backbone, repeats)))
    rows = []
    while executor.busy():
        for _, row, error in executor.finished(timeout=5):
            if error is not None:
                raise error
            rows.append(row)
    total = {**rows[0], **{k: sum(r[k] for r in rows) for k in SUMMED}}
    total["ratio"], total["epoch_ratio"] = np.mean([r["ratio"] for r in rows]), np.mean([r["epoch_ratio"] for r in rows])
    return total


COLUMNS = [  # (header, key, format)
    ("backbone", "backbone", "<14"), ("precision", "precision", "<14"), ("workers", "workers", ">7"), ("fit rows", "fit_rows", ">8"), ("batch", "batch", ">5"),
    ("epochs timed", "timed", ">12"), ("compkit img/s", "compkit", ">13.0f"), ("bare img/s", "bare", ">10.0f"),
    ("ratio", "ratio", ">5.2f"), ("verdict", "verdict", ">7"), ("epoch img/s", "epoch", ">11.0f"),
    ("epoch ratio", "epoch_ratio", ">11.2f"), ("val s/ep", "val_s", ">8.2f"), ("other s/ep", "other_s", ">10.3f"),
    ("predict rows", "predict_rows", ">12"), ("predict img/s", "predict", ">13.0f"),
]


def print_row(row: dict | None) -> None:
    """The header (row None) or one row, columns aligned."""
    cells = []
    for header, key, fmt in COLUMNS:
        width = fmt.lstrip("<>").split(".")[0] or "0"
        cells.append(f"{header:{fmt[0]}{width}}" if row is None else f"{row[key]:{fmt}}")
    print("  ".join(cells), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit, the first one untimed (default %(default)s)")
    p.add_argument("--backbones", default=None, help="comma- or space-separated (default: the cpu preset's)")
    p.add_argument("--competition", default="dacon-cv-2020", help="configs/<name>.toml (default %(default)s)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed predict calls; their median is shown")
    p.add_argument("--precisions", default=None, help="comma-separated train.precision policies, one row each "
                   "(default: float32 and mixed_float16 with a GPU, else float32 and mixed_bfloat16)")
    p.add_argument("--workers", default=None, help="comma-separated worker counts: processes measuring at once (default: 1,2 on a CPU, 1 with a GPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    args = p.parse_args()
    gpu = bool(devices.visible_gpus())
    args.precisions = args.precisions or ("float32,mixed_float16" if gpu else "float32,mixed_bfloat16")
    args.workers = args.workers or ("1" if gpu or devices.cores() < 2 else "1,2")
    if args.epochs <= WARMUP_EPOCHS:
        p.error(f"--epochs must be above {WARMUP_EPOCHS}: the first epoch is not timed")
    # No warm-up (the DACON preset's 3 epochs of it would not fit in 3): the learning rate's schedule does not change the speed.
    overrides = [f"train.epochs={args.epochs}", f"train.patience={args.epochs}", "train.warmup_epochs=0", *args.overrides]
    if args.backbones:
        overrides.append("train.backbones=[" + ", ".join(f'"{b}"' for b in args.backbones.replace(",", " ").split()) + "]")
    config = load_config(args.competition, args.preset, overrides, REPO / "configs")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        paths = Paths.for_competition(config.competition.name, Path(root), args.data_dir)
        folds.run(config, paths)
        for precision in args.precisions.split(","):
            policy = config.model_copy(update={"train": config.train.model_copy(update={"precision": precision})})
            for workers in map(int, args.workers.split(",")):
                for backbone in config.train.backbones:
                    if workers == 1:
                        row = measure(policy, fitting.fold_data(policy, paths, 0), backbone, args.repeats)
                    else:
                        row = measure_workers(policy, paths, backbone, args.repeats, workers)
                    rows.append({**row, "precision": precision, "workers": workers})
    for row in rows:
        row["verdict"] = "ok" if row["ratio"] >= OK_RATIO else "SLOW"
    print(f"\nthroughput, {args.competition} fold 0, preset {args.preset}, {args.epochs} epochs (epoch 1 untimed), {devices.cores()} cores")
    print_row(None)
    for row in rows:
        print_row(row)
    print(
        "compkit img/s: training part of compkit.fitting.fit's epochs (validation excluded); bare img/s: model.fit on numpy\n"
        f"arrays, no validation, no callbacks but the epoch timer; ratio = compkit / bare (ok >= {OK_RATIO}). epoch img/s: compkit's whole epochs,\n"
        "validation and callbacks included; val s/ep and other s/ep (callbacks, Keras bookkeeping) split their cost.\n"
        f"predict img/s: model.predict of holdout + test rows in training-sized batches, median of {args.repeats} calls.\n"
        "workers n > 1: n processes measured at once, each with cores // n intra-op threads; img/s summed, ratios averaged."
    )
    verdicts = ", ".join(f"{r['backbone']}/{r['precision']}/x{r['workers']} {r['ratio']:.2f} {r['verdict']}" for r in rows)
    epochs = ", ".join(f"{r['backbone']}/{r['precision']}/x{r['workers']} {r['epoch_ratio']:.2f}" for r in rows)
    print(f"throughput: compkit / bare model.fit (training part): {verdicts}; whole epochs incl. validation: {epochs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
