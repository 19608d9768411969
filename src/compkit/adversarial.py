"""`make adversarial`: can CV be trusted for this test set? Adversarial validation.

A classifier learns to tell train images (label 0) from test images (label 1); labels of the competition
are never used. With K stratified folds every image gets an out-of-fold P(test); their ROC AUC
(``sklearn.metrics.roc_auc_score``) is about 0.5 when train and test come from one distribution (CV then
estimates the test score) and near 1 when they are shifted (CV can mislead). The train rows the classifier
finds most test-like are a validation set that resembles test. Recipe: Pan et al., "Adversarial Validation
Approach to Concept Drift Problem in User Targeting Automation Systems at Uber" (2020, arXiv:2004.03045).

The classifier is ``adversarial.backbone`` (default ``cnn_small`` at width 0.5, the kit's smallest
backbone, at the image's own size), trained from scratch for a few epochs without augmentation; its K folds are units
of ``adversarial.executor`` (fresh processes on ``train.workers`` slots, or Ray tasks: :mod:`compkit.executors`). Writes
``runs/<competition>/adversarial/``: ``adversarial.json`` (AUC, per-fold AUC, sizes, the verdict),
``oof.csv`` (split, id, fold, p_test per sampled image) and ``train_like_test.csv`` (the top train rows).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from compkit import console, executors
from compkit.config import Config, ConfigError, Hyper, Paths
from compkit.data import has_test, load_test, load_train
from compkit.errors import CompkitError
from compkit.io import write_csv, write_json

# Verdict thresholds on the AUC: conventions of the recipe's users, not derived bounds.
SAME, SHIFTED = 0.6, 0.8


def verdict(auc: float) -> str:
    """One sentence on what ``auc`` means for choosing models by CV."""
    if auc < SAME:
        return (f"AUC {auc:.3f}: the classifier cannot tell train from test, so they look like one distribution; "
                "CV estimates the test score and choosing by CV is sound.")
    if auc < SHIFTED:
        return (f"AUC {auc:.3f}: train and test differ somewhat; CV may be optimistic, so also score candidates "
                "on the train rows most like test (train_like_test.csv) before trusting a CV gain.")
    return (f"AUC {auc:.3f}: train and test are clearly different distributions; CV can mislead, so validate on "
            "the train rows most like test and treat CV differences with suspicion.")


def sample_rows(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """(m,) sorted int64 row indices: all ``n`` rows, or ``max_rows`` of them drawn without replacement."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def sample(config: Config, paths: Paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows the classifier sees: up to ``adversarial.max_rows`` of train, then of test, drawn with ``adversarial.seed``
    (the same in every process that asks).

    Returns:
        ((N, H, W, C) uint8 pixels 0-255, (N,) int64 0 for a train row and 1 for a test row, (N,) ids).

    Raises:
        CompkitError: fewer rows of train or test than ``adversarial.n_splits``.
    """
    comp, settings = config.competition, config.adversarial
    train, test = load_train(paths.data, comp, paths.cache), load_test(paths.data, comp, paths.cache)
    rng = np.random.default_rng(settings.seed)
    rows = [sample_rows(len(split.ids), settings.max_rows, rng) for split in (train, test)]
    if min(len(r) for r in rows) < settings.n_splits:
        raise CompkitError(f"{paths.data}: {len(rows[0])} train and {len(rows[1])} test images, too few for "
                           f"adversarial.n_splits={settings.n_splits}; lower it")
    images = np.concatenate([train.images[rows[0]], test.images[rows[1]]])
    is_test = np.concatenate([np.zeros(len(rows[0]), dtype=np.int64), np.ones(len(rows[1]), dtype=np.int64)])
    return images, is_test, np.concatenate([train.ids[rows[0]], test.ids[rows[1]]])


def fold_probability(config: Config, paths: Paths, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Train classifier ``k`` of ``adversarial.n_splits`` (folds stratified on train/test) on the other folds of
    :func:`sample`.

    Returns:
        ((n,) int64 indices of fold ``k``'s rows in the sample, (n,) float64 P(test) the classifier gives them).
    """
    import keras

    from compkit.backbones import build_model

    settings = config.adversarial
    images, is_test, _ = sample(config, paths)
    hyper = Hyper(width=settings.width, input_size=settings.input_size, dropout=0.0)
    splitter = StratifiedKFold(n_splits=settings.n_splits, shuffle=True, random_state=settings.seed)
    fit, val = list(splitter.split(images, is_test))[k]
    keras.utils.set_random_seed(settings.seed + k)
    x = images.astype(np.float32)
    model = build_model(settings.backbone, list(images.shape[1:]), 2, hyper)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="sparse_categorical_crossentropy")
    model.fit({"image": x[fit]}, is_test[fit], epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True, verbose=0)
    proba = model.predict({"image": x[val]}, batch_size=256, verbose=0)[:, 1].astype(np.float64)
    keras.backend.clear_session()
    return val, proba


def oof_test_probability(config: Config, paths: Paths, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(test) of each of the ``n`` sampled rows: the ``adversarial.n_splits`` classifiers of
    :func:`fold_probability` as units of ``adversarial.executor`` (:mod:`compkit.executors`), as many at once as it
    has room for.

    Returns:
        ((n,) float64 P(test) from the classifier that did not train on the row, (n,) int64 fold of the row).

    Raises:
        CompkitError: a classifier's process died; else its own exception, after the others are stopped.
    """
    executor, settings = executors.make(config, config.adversarial.executor), config.adversarial
    proba, fold = np.zeros(n), np.zeros(n, dtype=np.int64)
    pending = list(range(settings.n_splits))
    try:
        while pending or executor.busy():
            while pending and executor.has_free():
                k = pending.pop(0)
                executor.submit(executors.Unit(k, f"adversarial fold {k}", fold_probability, config, paths, (k,)))
            for k, result, error in executor.finished(timeout=1):
                if error is not None:
                    raise error
                proba[result[0]], fold[result[0]] = result[1], k
                console.info(f"[adversarial fold {k + 1}/{settings.n_splits}] done")
    finally:
        executor.cancel()
    return proba, fold


def _check(config: Config, paths: Paths) -> None:
    from compkit.registry import BACKBONES

    settings, comp = config.adversarial, config.competition
    if settings.backbone not in BACKBONES:
        raise ConfigError(f"adversarial.backbone: unknown backbone {settings.backbone!r}; choose from {sorted(BACKBONES)}")
    size = settings.input_size or comp.image_shape[0]
    if size < BACKBONES[settings.backbone].min_size:
        raise ConfigError(f"adversarial.input_size: {settings.backbone} needs >= {BACKBONES[settings.backbone].min_size}, "
                          f"got {size}; set adversarial.input_size")
    if not has_test(paths.data, comp):
        name = comp.test_images if comp.layout == "image_folder" else comp.test_file
        raise CompkitError(f"{paths.data / name}: not found; adversarial validation compares train with the test set, "
                           "so it runs only for competitions that ship one")


def run(config: Config, paths: Paths) -> dict:
    """Stage entry point: train the train-vs-test classifier, write ``runs/<competition>/adversarial/``; returns the summary.

    Raises:
        CompkitError: no test set, an unknown backbone or too small an input size, or a bad data file.
    """
    _check(config, paths)
    start = time.perf_counter()
    comp, settings = config.competition, config.adversarial
    _, is_test, ids = sample(config, paths)  # fails fast, before any process starts
    proba, fold = oof_test_probability(config, paths, len(ids))
    n_train, n_test = int((is_test == 0).sum()), int(is_test.sum())
    auc = float(roc_auc_score(is_test, proba))
    per_fold = [float(roc_auc_score(is_test[fold == k], proba[fold == k])) for k in range(settings.n_splits)]
    oof = pd.DataFrame({"split": np.where(is_test == 1, "test", "train"), "id": ids, "fold": fold, "p_test": proba})
    like = oof[oof["split"] == "train"].sort_values("p_test", ascending=False, kind="stable").head(settings.top)
    like = like[["id", "p_test"]].rename(columns={"id": comp.id_key})
    like.insert(0, "rank", np.arange(1, len(like) + 1))
    summary = {"auc": auc, "auc_folds": per_fold, "n_train": n_train, "n_test": n_test,
               "backbone": settings.backbone, "width": settings.width, "input_size": settings.input_size or comp.image_shape[0],
               "epochs": settings.epochs, "n_splits": settings.n_splits, "seconds": round(time.perf_counter() - start, 1),
               "verdict": verdict(auc)}
    folder = paths.runs / "adversarial"
    write_csv(oof, folder / "oof.csv")
    write_csv(like, folder / "train_like_test.csv")
    write_json(summary, folder / "adversarial.json")
    console.summary(f"adversarial: {summary['verdict']} ({n_train} train vs {n_test} test images, "
                    f"{settings.n_splits} folds of {settings.backbone}, {summary['seconds']:.0f}s) -> {folder}")
    return summary


def histogram_figure(oof: pd.DataFrame, auc: float):
    """Histograms of the OOF P(test) of train rows and of test rows (0-1, 20 bins)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for split in ("train", "test"):
        ax.hist(oof.loc[oof["split"] == split, "p_test"], bins=np.linspace(0, 1, 21), alpha=0.6, label=split)
    ax.set_xlabel("out-of-fold P(test)")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title(f"adversarial validation: ROC AUC {auc:.3f}")
    return fig


def report_section(page, paths: Paths) -> None:
    """Add "Adversarial validation" to the report ``page`` (report.page._Page) when `make adversarial` has run."""
    folder = paths.runs / "adversarial"
    if not (folder / "adversarial.json").is_file():
        return
    from compkit.io import read_json

    summary = read_json(folder / "adversarial.json")
    page.add('<h2 id="adversarial">Adversarial validation</h2>')
    page.para(f"{summary['verdict']} ({summary['n_train']} train vs {summary['n_test']} test images, {summary['n_splits']} "
              f"folds of {summary['backbone']}; per-fold AUC {', '.join(f'{a:.3f}' for a in summary['auc_folds'])}.)")
    oof = pd.read_csv(folder / "oof.csv")
    page.add(page.figure("adversarial.png", histogram_figure(oof, summary["auc"]), "OOF P(test) of train and test images"))
