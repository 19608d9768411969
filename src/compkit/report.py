"""Report (``make report``): one self-contained HTML page on a competition's runs, after ensemble/submit.

Reads only what the stages wrote: ``folds/<competition>/{folds,holdout}.csv``, every backbone's
``runs/<competition>/<backbone>/fold<k>/{oof,holdout,history}.csv``, ``runs/<competition>/ensemble/``
(``ensemble.json``, ``oof.csv``, ``holdout.csv``), ``submissions/<competition>/leaderboard.csv`` and the
submission files it lists, and the labels and images of the training file. Writes
``runs/<competition>/report/index.html`` with every figure embedded as a base64 PNG (it opens from
disk, offline) and the same figures as PNG files beside it.

Sections: the leaderboard (CV, public, private); how far the holdout's public and private scores
can be trusted (percentile-bootstrap intervals, the probability that two submissions swap places
between public and private); OOF scores per backbone and blend with their fold-to-fold spread,
blend weights and gains, the correlation of the backbones' OOF predictions; a confusion matrix
and per-class precision/recall/F1 per model; learning curves; the most confidently wrong OOF
images; accuracy per value of each extra column (DACON's ``letter``).
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix

from compkit import console
from compkit.config import Competition, Config, Paths
from compkit.data import Images, load_train
from compkit.errors import CompkitError
from compkit.folds import load_folds
from compkit.formats import SubmissionFormat, read_submission, submission_format
from compkit.io import atomic_path, read_json, read_proba
from compkit.metrics import score_table
from compkit.train import fold_dir, load_fold_mean

N_WRONG = 24  # images in the grid of confidently wrong OOF predictions
MAX_EXTRA_VALUES = 40  # values of an extra column shown (the most frequent ones)
N_BOOT = 10_000  # bootstrap resamples


# ---------------------------------------------------------------------------------------------
# Pure statistics (unit-tested on their own)
# ---------------------------------------------------------------------------------------------


def bootstrap_interval(correct, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of an accuracy.

    Source: Efron & Tibshirani, *An Introduction to the Bootstrap* (Chapman & Hall, 1993), ch. 13,
    the percentile interval: resample the N rows with replacement ``n_boot`` times, score each
    resample, and take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the scores.
    For 0/1 rows the number of correct rows in a resample is exactly Binomial(N, p̂), p̂ the
    observed accuracy, so the resamples are drawn as binomial counts (no N x n_boot index matrix).

    Args:
        correct: (N,) bool or 0/1, N >= 1: whether each row's prediction is right.
        level: coverage of the interval, in (0, 1).
        n_boot: number of resamples.
        seed: seed of ``np.random.default_rng``; the same seed gives the same interval.

    Returns:
        ``(point, low, high)`` floats: the observed accuracy and the interval's bounds
        (``low <= point <= high``).
    """
    correct = np.asarray(correct, dtype=bool).ravel()
    if correct.size == 0:
        raise ValueError("bootstrap_interval: no rows")
    point = float(correct.mean())
    scores = np.random.default_rng(seed).binomial(correct.size, point, size=n_boot) / correct.size
    low, high = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def flip_probability(correct_a, correct_b, n_public: int, n_private: int, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Probability that submissions a and b are ordered one way on public and the other on private.

    The "shake-up" of a leaderboard, by the bootstrap of Efron & Tibshirani (*An Introduction to
    the Bootstrap*, 1993): the N holdout rows, on which both submissions were scored, stand for
    the population. Each resample draws a public part of ``n_public`` rows and, independently, a
    private part of ``n_private`` rows, with replacement, and scores a and b on the same rows
    (paired). A flip: a - b has one sign on public and the other on private. A tie on either part
    counts as half a flip (a leaderboard orders ties arbitrarily), so two submissions that are right
    equally often score 0.5 in expectation, and two with the same rows right score exactly 0.5.
    Each row is one of three kinds (only a right, only b right, both or neither), so a part's
    resample is drawn as a Multinomial count of the three kinds.

    Args:
        correct_a, correct_b: (N,) bool or 0/1, the same rows in the same order, N >= 1.
        n_public, n_private: sizes of the two parts of the leaderboard (>= 1).
        n_boot: number of resamples; seed: seed of ``np.random.default_rng``.

    Returns:
        A float in [0, 1].
    """
    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"flip_probability: need two equal, non-empty row sets, got {a.size} and {b.size}")
    only_a, only_b = np.count_nonzero(a & ~b) / a.size, np.count_nonzero(~a & b) / a.size
    pvals = np.array([only_a, only_b, max(0.0, 1.0 - only_a - only_b)])
    rng = np.random.default_rng(seed)
    signs = []
    for n in (n_public, n_private):
        counts = rng.multinomial(n, pvals / pvals.sum(), size=n_boot)
        signs.append(np.sign(counts[:, 0] - counts[:, 1]))
    public, private = signs
    flips = np.where((public == 0) | (private == 0), 0.5, (public != private).astype(float))
    return float(flips.mean())


def true_class_correlation(probas: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pearson correlation, between models, of the probability each model gives the true class.

    Args:
        probas: (M, N, K) float probabilities of M models on the same N rows.
        labels: (N,) int true class indices.

    Returns:
        (M, M) float64; 1 on the diagonal, NaN for a model whose true-class probability is constant.
        Low values mark models that err on different rows: those add diversity to a blend.
    """
    p_true = probas[:, np.arange(len(labels)), labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.atleast_2d(np.corrcoef(p_true))
    np.fill_diagonal(corr, 1.0)
    return corr


def fold_spread(correct: np.ndarray, fold: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Accuracy per fold and its spread: (mean, std, (n_folds,) accuracies in fold order).

    ``correct`` (N,) bool and ``fold`` (N,) int per OOF row; std is the population std (ddof=0),
    as ``sklearn.model_selection.cross_val_score(...).std()`` is usually reported.
    """
    per_fold = np.array([correct[fold == k].mean() for k in np.unique(fold)])
    return float(per_fold.mean()), float(per_fold.std()), per_fold


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """One model's OOF predictions: a backbone, or the selected blend (key ``blend``).

    Attributes:
        key: backbone name or ``blend``; used in file names and table ids.
        title: as shown, e.g. ``cnn_small`` or ``blend (fitted)``.
        ids: (N,) ids sorted ascending; proba: (N, K) float64; fold: (N,) int fold of each row.
    """

    key: str
    title: str
    ids: np.ndarray
    proba: np.ndarray
    fold: np.ndarray


@dataclass(frozen=True)
class Candidate:
    """One set of holdout predictions: a submission from the leaderboard, or a backbone's fold mean.

    ``correct`` is (H,) bool over the holdout rows in ``holdout.csv`` order.
    """

    name: str
    kind: str  # "submission", "backbone" or "ensemble"
    cv: float
    correct: np.ndarray


def _backbone_oof(config: Config, paths: Paths, backbone: str) -> Model:
    """A backbone's OOF rows from each fold's ``oof.csv``, sorted by id."""
    comp = config.competition
    parts = [
        read_proba(fold_dir(paths, backbone, k) / "oof.csv", comp.id_key, comp.classes)
        for k in range(config.folds.n_splits)
    ]
    ids = np.concatenate([p[0] for p in parts])
    fold = np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)])
    order = np.argsort(ids, kind="stable")
    return Model(backbone, backbone, ids[order], np.concatenate([p[1] for p in parts])[order], fold[order])


def _blend_oof(config: Config, paths: Paths, selected: str, folds: pd.DataFrame) -> Model:
    """The selected blend's ``ensemble/oof.csv``, each row's fold from ``folds.csv``."""
    comp = config.competition
    path = paths.runs / "ensemble" / "oof.csv"
    ids, proba = read_proba(path, comp.id_key, comp.classes)
    fold = folds.set_index(comp.id_key)["fold"].reindex(ids)
    if fold.isna().any():
        raise CompkitError(f"{path}: id {ids[fold.isna().to_numpy()][0]!r} is in no fold of folds.csv; rerun `make ensemble`")
    order = np.argsort(ids, kind="stable")
    return Model("blend", f"blend ({selected})", ids[order], proba[order], fold.to_numpy(dtype=np.int64)[order])


def _rows(ids: np.ndarray, train: Images, source: Path) -> np.ndarray:
    """(N,) rows of ``train`` holding ``ids``; an id not in train raises :class:`CompkitError`."""
    rows = pd.Series(np.arange(len(train.ids)), index=train.ids).reindex(ids)
    if rows.isna().any():
        raise CompkitError(f"{source}: id {ids[rows.isna().to_numpy()][0]!r} is not in the training file; rerun its stage")
    return rows.to_numpy(dtype=np.int64)


def _leaderboard(paths: Paths) -> pd.DataFrame | None:
    path = paths.submissions / "leaderboard.csv"
    return pd.read_csv(path) if path.is_file() else None


def _submission_correct(path: Path, comp: Competition, fmt: SubmissionFormat, held_ids: np.ndarray, truth: np.ndarray) -> np.ndarray | None:
    """(H,) bool per holdout row for a submission file that predicts the holdout ids; None otherwise
    (a missing file, or one that predicts the test file, whose labels are unknown)."""
    if not path.is_file():
        return None
    ids, proba = read_submission(path, fmt, comp)
    if len(ids) != len(held_ids) or set(ids) != set(held_ids):
        return None
    pred = pd.Series(proba.argmax(axis=1), index=ids).loc[held_ids].to_numpy()
    return pred == truth


def holdout_candidates(config: Config, paths: Paths, blend: dict, train: Images, holdout: pd.DataFrame,
                       board: pd.DataFrame | None) -> tuple[list[Candidate], list[str]]:
    """Every leaderboard submission that predicts the holdout, then every backbone's fold-mean holdout
    prediction; the ensemble's ``holdout.csv`` stands in when no submission file predicts the holdout.

    Returns:
        The candidates, and the names of the submissions left out (file missing, or it predicts test).
    """
    comp = config.competition
    held_ids, fmt = holdout[comp.id_key].to_numpy(), submission_format(paths.data, comp)
    truth = train.labels[_rows(held_ids, train, paths.folds / "holdout.csv")]
    out, skipped = [], []
    for row in ([] if board is None else board.itertuples(index=False)):
        correct = _submission_correct(paths.submissions / str(row.file), comp, fmt, held_ids, truth)
        if correct is None:
            skipped.append(str(row.name))
        else:
            out.append(Candidate(str(row.name), "submission", float(row.cv), correct))
    if not out:
        ids, proba = read_proba(paths.runs / "ensemble" / "holdout.csv", comp.id_key, comp.classes)
        pred = pd.Series(proba.argmax(axis=1), index=ids).loc[held_ids].to_numpy()
        out.append(Candidate(f"ensemble ({blend['selected']}), not submitted", "ensemble", float(blend["cv"]), pred == truth))
    for backbone in blend["backbones"]:
        ids, proba = load_fold_mean(config, paths, backbone, "holdout.csv")
        pred = pd.Series(proba.argmax(axis=1), index=ids).loc[held_ids].to_numpy()
        out.append(Candidate(backbone, "backbone", float(blend["scores"][backbone][comp.metric]), pred == truth))
    return out, skipped


# ---------------------------------------------------------------------------------------------
# Figures: each function takes plain arrays/frames and returns one matplotlib Figure (Agg)
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def confusion_figure(matrix: np.ndarray, classes: list, title: str) -> Figure:
    """Heat map of a (K, K) confusion matrix normalised by true class (rows sum to 1)."""
    k = len(classes)
    fig = _figure(5.6, 4.8)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.85, label="share of the true class")
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90 if k > 12 else 0)
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for (i, j), value in np.ndenumerate(matrix):
            if value >= 0.005:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7 if k > 10 else 8,
                        color="white" if value > 0.55 else "black")
    return fig


def learning_curves_figure(histories: list[pd.DataFrame], backbone: str) -> Figure:
    """Train (solid) and validation (dashed) loss and accuracy per epoch, one colour per fold.

    ``histories``: one ``history.csv`` frame per fold (epoch, loss, accuracy, val_loss, val_accuracy);
    a dot marks each fold's best epoch (lowest val_loss, whose weights were kept).
    """
    fig = _figure(10, 3.8)
    axes = fig.subplots(1, 2)
    few = max(len(h) for h in histories) <= 15
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for k, hist in enumerate(histories):
            color = f"C{k % 10}"
            marker = "o" if few else None
            ax.plot(hist["epoch"], hist[metric], color=color, marker=marker, ms=4, lw=1.3, label=f"fold {k}")
            ax.plot(hist["epoch"], hist[f"val_{metric}"], color=color, marker=marker, ms=4, lw=1.3, ls="--")
            best = hist["val_loss"].idxmin()
            ax.plot(hist["epoch"][best], hist[f"val_{metric}"][best], "o", color=color, ms=7, mfc="none", mew=1.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "loss":  # early spikes of validation loss would flatten the rest of the curves
            values = pd.concat([h[c] for h in histories for c in ("loss", "val_loss")])
            top = 3 * float(pd.concat([h["val_loss"] for h in histories]).median())
            if values.max() > top:
                ax.set_ylim(min(0, values.min()), top)
                ax.set_ylabel("loss (clipped at 3× median val loss)")
        ax.set_xlim(0.5, max(len(h) for h in histories) + 0.5)
        if few:
            ax.set_xticks(np.arange(1, max(len(h) for h in histories) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].plot([], [], color="grey", label="train")
    axes[0].plot([], [], color="grey", ls="--", label="validation")
    axes[0].plot([], [], "o", color="grey", mfc="none", label="best epoch")
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(f"{backbone}: learning curves")
    return fig


def correlation_figure(corr: np.ndarray, names: list[str]) -> Figure:
    """Annotated heat map of an (M, M) correlation matrix between models."""
    m = len(names)
    fig = _figure(3.0 + 0.75 * m, 1.8 + 0.65 * m)
    ax = fig.add_subplot()
    finite = corr[np.isfinite(corr)]
    low = min(0.5, float(np.floor(finite.min() * 10) / 10)) if finite.size else 0.0
    image = ax.imshow(corr, cmap="viridis", vmin=low, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.85, label="Pearson r")
    ax.set_xticks(np.arange(m), names, rotation=30, ha="right")
    ax.set_yticks(np.arange(m), names)
    for (i, j), value in np.ndenumerate(corr):
        ax.text(j, i, "n/a" if not np.isfinite(value) else f"{value:.2f}", ha="center", va="center", fontsize=9,
                color="black" if np.isfinite(value) and value > low + 0.7 * (1 - low) else "white")
    ax.set_title("OOF true-class probability: correlation")
    return fig


def blends_figure(weights: pd.DataFrame, scores: pd.Series, best_single: float, selected: str, metric: str) -> Figure:
    """Left: soft-voting weights per blend (grouped bars). Right: OOF score of each backbone and blend.

    Args:
        weights: blends x backbones frame of weights (each row sums to 1).
        scores: OOF score by model name (backbones, then ``blend <name>``).
        best_single: the best backbone's score, drawn as a vertical line.
        selected: name of the selected blend, highlighted.
    """
    fig = _figure(11, 0.9 + 0.42 * max(len(scores), 4))
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    n = len(weights.columns)
    width = 0.8 / n
    x = np.arange(len(weights))
    for i, backbone in enumerate(weights.columns):
        left.bar(x + (i - (n - 1) / 2) * width, weights[backbone], width, label=backbone, color=f"C{i % 10}")
    left.set_xticks(x, weights.index)
    left.set_ylim(0, 1.05)
    left.set_ylabel("weight")
    left.set_title("soft-voting weights")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)

    y = np.arange(len(scores))[::-1]
    colors = ["C3" if name == f"blend {selected}" else ("C0" if name.startswith("blend ") else "grey") for name in scores.index]
    right.hlines(y, scores.min() - 0.02, scores.to_numpy(), color=colors, lw=2)
    right.scatter(scores.to_numpy(), y, color=colors, zorder=3)
    for yi, value in zip(y, scores.to_numpy()):
        right.text(value + 0.002, yi, f"{value:.4f}", va="center", fontsize=8)
    right.axvline(best_single, color="black", ls=":", lw=1)
    right.set_yticks(y, scores.index)
    span = scores.max() - scores.min()
    right.set_xlim(scores.min() - 0.02, scores.max() + max(0.02, 0.25 * span))
    right.set_xlabel(f"OOF {metric}")
    right.set_title(f"OOF {metric} (red: selected blend, dotted: best backbone)")
    right.grid(axis="x", alpha=0.3)
    return fig


def leaderboard_figure(points: pd.DataFrame, metric: str) -> Figure:
    """CV against public (hollow) and private (filled) score, one vertical segment per entry.

    ``points``: columns name, kind (``submission``/``backbone``/``ensemble``), cv, public, private.
    """
    fig = _figure(8, 5.2)
    ax = fig.add_subplot()
    values = points[["cv", "public", "private"]].to_numpy(dtype=float)
    low, high = np.nanmin(values), np.nanmax(values)
    pad = max(0.01, 0.08 * (high - low))
    low, high = max(0.0, low - pad), high + pad  # not clipped at 1: a perfect score stays visible
    ax.plot([low, high], [low, high], color="grey", ls=":", lw=1, label="score = CV")
    markers = {"submission": "o", "ensemble": "D", "backbone": "s"}
    for i, row in enumerate(points.itertuples(index=False)):
        color = f"C{i % 10}"
        ax.vlines(row.cv, min(row.public, row.private), max(row.public, row.private), color=color, lw=1, alpha=0.6)
        ax.scatter(row.cv, row.public, marker=markers[row.kind], facecolors="none", edgecolors=color, s=55, zorder=3)
        ax.scatter(row.cv, row.private, marker=markers[row.kind], color=color, s=55, zorder=3,
                   label=f"{row.name}" + ("" if row.kind == "submission" else f" ({row.kind})"))
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="black", label="hollow: public, filled: private")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"CV (OOF {metric})")
    ax.set_ylabel(f"holdout {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.set_title("CV vs public vs private")
    return fig


def intervals_figure(table: pd.DataFrame, n_public: int, n_private: int, metric: str) -> Figure:
    """95% bootstrap intervals of each entry's public and private score (horizontal error bars).

    ``table``: columns name, public, public_low, public_high, private, private_low, private_high.
    """
    fig = _figure(8, 1.2 + 0.55 * len(table))
    ax = fig.add_subplot()
    y = np.arange(len(table))[::-1].astype(float)
    for part, offset, color in (("public", 0.15, "C1"), ("private", -0.15, "C0")):
        point = table[part].to_numpy(dtype=float)
        err = np.vstack([point - table[f"{part}_low"].to_numpy(dtype=float), table[f"{part}_high"].to_numpy(dtype=float) - point])
        n = n_public if part == "public" else n_private
        ax.errorbar(point, y + offset, xerr=err, fmt="o", color=color, capsize=3, label=f"{part} ({n} images)")
    ax.set_yticks(y, table["name"])
    ax.set_ylim(y.min() - 0.6, y.max() + 0.6)
    ax.set_xlabel(f"holdout {metric} with 95% bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, borderaxespad=0.3)
    return fig


def wrong_figure(images: np.ndarray, captions: list[str]) -> Figure:
    """Grid of (n, H, W, C) uint8 images, 6 per row, each titled by its caption."""
    cols = 6
    rows = int(np.ceil(len(images) / cols))
    fig = _figure(1.9 * cols, 2.25 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        shown = image[..., 0] if image.shape[-1] == 1 else image
        ax.imshow(shown, cmap="gray" if image.shape[-1] == 1 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    return fig


def extra_accuracy_figure(table: pd.DataFrame, column: str, overall: float, title: str, metric: str) -> Figure:
    """Bars of the OOF accuracy per value of an extra column; each tick shows the value and its row count.

    ``table``: columns value, n, accuracy; ``overall`` (the whole OOF's accuracy) is a dotted line.
    """
    fig = _figure(max(6.0, 0.36 * len(table) + 1.5), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    ax.bar(x, table["accuracy"], color="C0")
    ax.axhline(overall, color="C3", ls=":")
    names = table["value"].astype(str)
    if names.str.len().max() > 3:
        ax.set_xticks(x, [f"{v} ({n})" for v, n in zip(names, table["n"])], rotation=90)
    else:
        ax.set_xticks(x, [f"{v}\n{n}" for v, n in zip(names, table["n"])], fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.7, len(table) - 0.3)
    ax.set_xlabel(f"{column} (and its OOF rows)")
    ax.set_ylabel(f"OOF {metric}")
    ax.set_title(f"{title}: OOF {metric} per {column} (dotted: all OOF rows, {overall:.3f})")
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #777; font-size: 12px; }
.note { background: #fff8e0; border-left: 4px solid #e8b400; padding: 0.6em 1em; }
.pair { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
nav a { margin-right: 1em; }
"""


def _f4(value: float) -> str:
    return f"{value:.4f}"


def _table(frame: pd.DataFrame, table_id: str) -> str:
    """``frame`` as an HTML table with id ``table_id``; floats with 4 decimals, text escaped."""
    return frame.to_html(index=False, table_id=table_id, float_format=_f4, border=0, na_rep="n/a", escape=True)


class _Page:
    """Collects the page's HTML and its figures; each figure is written once, as PNG bytes, to
    ``folder/<name>`` and embedded as base64 from the same bytes."""

    def __init__(self, folder: Path):
        self.folder, self.parts, self.figures = folder, [], {}

    def add(self, text: str) -> None:
        self.parts.append(text)

    def para(self, text: str, note: bool = False) -> None:
        self.add(f"<p{' class=note' if note else ''}>{html.escape(text)}</p>")

    def figure(self, name: str, fig: Figure, what: str) -> str:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
        data = buffer.getvalue()
        with atomic_path(self.folder / name) as tmp:
            tmp.write_bytes(data)
        self.figures[name] = data
        console.info(f"[report] {name}: {what}")
        encoded = base64.b64encode(data).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(what)}" data-file="{name}">'
                f"<figcaption>{html.escape(name)}: {html.escape(what)}</figcaption></figure>")


def _leaderboard_section(page: _Page, board: pd.DataFrame | None, candidates: list[Candidate], usage: np.ndarray,
                         metric: str) -> None:
    page.add('<h2 id="leaderboard">Leaderboard</h2>')
    if board is None or board.empty:
        page.para("No submissions yet: leaderboard.csv does not exist. Run `make submit` after `make ensemble`; "
                  "the figures below use the backbones' and the ensemble's holdout predictions.", note=True)
    else:
        page.para(f"Every submission in leaderboard.csv: CV is the OOF {metric} of the blend, public and private "
                  "its score on the two parts of the local holdout.")
        page.add(_table(board, "leaderboard"))
    points = [] if board is None else [
        {"name": str(r.name), "kind": "submission", "cv": r.cv, "public": r.public, "private": r.private}
        for r in board.itertuples(index=False)
    ]
    for c in candidates:
        if c.kind != "submission":
            points.append({"name": c.name, "kind": c.kind, "cv": c.cv,
                           "public": c.correct[usage == "Public"].mean(), "private": c.correct[usage == "Private"].mean()})
    page.add(page.figure("leaderboard.png", leaderboard_figure(pd.DataFrame(points), metric),
                         "CV vs public vs private per submission (and per backbone)"))


def _shakeup_section(page: _Page, candidates: list[Candidate], usage: np.ndarray, metric: str, seed: int, n_oof: int) -> None:
    n_public, n_private = int((usage == "Public").sum()), int((usage == "Private").sum())
    page.add('<h2 id="shakeup">How far to trust public and private</h2>')
    rows = []
    for c in candidates:
        row = {"name": c.name, "kind": c.kind, "cv": c.cv}
        for part in ("public", "private"):
            point, low, high = bootstrap_interval(c.correct[usage == part.title()], seed=seed)
            row.update({part: point, f"{part}_low": low, f"{part}_high": high})
        rows.append(row)
    table = pd.DataFrame(rows)
    shown = table[["name", "kind", "cv"]].copy()
    for part in ("public", "private"):
        shown[part] = table[part]
        shown[f"{part} 95% interval"] = [f"{lo:.4f} to {hi:.4f}" for lo, hi in zip(table[f"{part}_low"], table[f"{part}_high"])]
    width = float(np.median(table["public_high"] - table["public_low"]))
    page.para(
        f"The public part of the holdout has {n_public} images: one image moves a public score by "
        f"{100 / n_public:.2f} points, and a public score's 95% interval here is about {100 * width:.1f} points wide. "
        "A public gap of a point or two says little about which submission is better on private (P(flip) below "
        f"measures it pair by pair): choose by CV ({n_oof} OOF images), not by public. "
        f"The private part has {n_private} images (interval about "
        f"{100 * float(np.median(table['private_high'] - table['private_low'])):.1f} points wide).",
        note=True,
    )
    page.para("Intervals: percentile bootstrap (Efron & Tibshirani 1993) of each part's rows, "
              f"{N_BOOT} resamples, seed {seed}.")
    page.add(_table(shown, "holdout"))
    page.add(page.figure("holdout_intervals.png", intervals_figure(table, n_public, n_private, metric),
                         "public and private score with 95% bootstrap intervals"))

    ranked = sorted(candidates, key=lambda c: (-c.correct[usage == "Public"].mean(), -c.cv))
    pairs = []
    for a, b in zip(ranked, ranked[1:]):
        same = np.array_equal(a.correct, b.correct)
        pairs.append({
            "higher on public": a.name, "lower on public": b.name,
            "public gap": a.correct[usage == "Public"].mean() - b.correct[usage == "Public"].mean(),
            "private gap": a.correct[usage == "Private"].mean() - b.correct[usage == "Private"].mean(),
            "P(flip)": flip_probability(a.correct, b.correct, n_public, n_private, seed=seed),
            "note": "same rows right: the order is a coin toss" if same else "",
        })
    if pairs:
        page.add("<h3>Shake-up: neighbours in the public ranking</h3>")
        page.para(f"P(flip): the probability that the two are ordered one way on a public part of {n_public} images "
                  f"and the other way on a private part of {n_private}, both resampled from the whole holdout "
                  "(paired bootstrap, ties count one half). Near 0.5 the public order says nothing.")
        top = pairs[0]
        page.para(f"Here {top['higher on public']} leads {top['lower on public']} on public by "
                  f"{100 * top['public gap']:.1f} points; the chance that private orders them the other way is "
                  f"{top['P(flip)']:.2f}.", note=True)
        page.add(_table(pd.DataFrame(pairs), "shakeup"))
    else:
        page.para("Only one set of holdout predictions: no pair to compare.")


def _oof_section(page: _Page, models: list[Model], labels: dict[str, np.ndarray], blend: dict, metric: str) -> None:
    page.add('<h2 id="oof">OOF scores</h2>')
    rows = []
    for m in models:
        correct = m.proba.argmax(axis=1) == labels[m.key]
        mean, std, per_fold = fold_spread(correct, m.fold)
        scores = score_table(labels[m.key], m.proba)
        rows.append({"model": m.title, "OOF accuracy": scores["accuracy"], "fold mean ± std": f"{mean:.4f} ± {std:.4f}",
                     "per fold": ", ".join(f"{v:.4f}" for v in per_fold), "OOF log loss": scores["log_loss"],
                     "rows": len(m.ids)})
    page.para("OOF accuracy and log loss over all OOF rows; fold mean ± std: accuracy of each fold's OOF rows "
              "(each fold's oof.csv), its mean and population std.")
    page.add(_table(pd.DataFrame(rows), "oof"))

    backbones, selected = blend["backbones"], blend["selected"]
    best = max(backbones, key=lambda b: blend["scores"][b][metric])
    rows = []
    for name, spec in blend["blends"].items():
        row = {"blend": name, "selected": "yes" if name == selected else ""}
        row.update({f"w {b}": np.nan if name == "hard" or "weights" not in spec else spec["weights"][b] for b in backbones})
        row.update({"accuracy": spec["accuracy"], "log loss": spec["log_loss"],
                    f"{metric} gain": spec[metric] - blend["scores"][best][metric],
                    "log loss gain": blend["scores"][best]["log_loss"] - spec["log_loss"]})
        rows.append(row)
    page.add("<h3>Blends</h3>")
    page.para(f"Gains are over the best single backbone, {best} (OOF {metric} {blend['scores'][best][metric]:.4f}, "
              f"log loss {blend['scores'][best]['log_loss']:.4f}); a positive log-loss gain is a lower log loss. "
              "Hard voting gives each backbone one vote: it has no weights (n/a)."
              + (" The stacked blend is a logistic regression on all backbones' probabilities, scored out of fold: "
                 "it has no weight per backbone (n/a)." if "stacked" in blend["blends"] else ""))
    page.add(_table(pd.DataFrame(rows), "blends"))
    weights = pd.DataFrame({n: s["weights"] for n, s in blend["blends"].items() if n != "hard" and "weights" in s}).T[backbones]
    scores = pd.Series({**{b: blend["scores"][b][metric] for b in backbones},
                        **{f"blend {n}": s[metric] for n, s in blend["blends"].items()}})
    page.add(page.figure("blends.png", blends_figure(weights, scores, blend["scores"][best][metric], selected, metric),
                         "blend weights and OOF score of each backbone and blend"))


def _correlation_section(page: _Page, models: list[Model], labels: np.ndarray) -> None:
    backbones = [m for m in models if m.key != "blend"]
    names = [m.key for m in backbones]
    corr = true_class_correlation(np.stack([m.proba for m in backbones]), labels)
    page.add('<h2 id="correlation">Diversity: correlation of the backbones\' OOF predictions</h2>')
    if len(backbones) < 2:
        page.para("Only one backbone: there is no diversity to measure; train another to blend.", note=True)
    else:
        upper = [(corr[i, j], names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))
                 if np.isfinite(corr[i, j])]
        if upper:
            r, a, b = min(upper)
            page.para(f"Pearson correlation, over the OOF rows, of the probability each backbone gives the true class. "
                      f"The least correlated pair is {a} and {b} (r = {r:.2f}): they err on the most different rows "
                      "and add the most to a blend; a pair near 1 adds little.")
    page.add(_table(pd.DataFrame(corr, columns=names).assign(backbone=names)[["backbone", *names]], "correlation"))
    page.add(page.figure("correlation.png", correlation_figure(corr, names), "correlation of the backbones' OOF true-class probability"))


def _per_model_section(page: _Page, models: list[Model], labels: dict[str, np.ndarray], comp: Competition) -> None:
    page.add('<h2 id="classes">Per model: confusion matrix and per-class scores</h2>')
    k = len(comp.classes)
    for m in models:
        pred = m.proba.argmax(axis=1)
        matrix = confusion_matrix(labels[m.key], pred, labels=np.arange(k), normalize="true")
        report = classification_report(labels[m.key], pred, labels=np.arange(k), target_names=[str(c) for c in comp.classes],
                                       output_dict=True, zero_division=0)
        rows = [{"class": name, **{key: report[name][key] for key in ("precision", "recall", "f1-score")},
                 "support": int(report[name]["support"])} for name in [*map(str, comp.classes), "macro avg", "weighted avg"]]
        page.add(f"<h3>{html.escape(m.title)}</h3><div class=pair>")
        page.add(page.figure(f"confusion_{m.key}.png", confusion_figure(matrix, comp.classes, f"{m.title}: OOF confusion matrix"),
                             f"OOF confusion matrix of {m.title}, normalised by true class"))
        page.add(_table(pd.DataFrame(rows), f"per-class-{m.key}") + "</div>")


def _curves_section(page: _Page, config: Config, paths: Paths, backbones: list[str]) -> None:
    page.add('<h2 id="curves">Learning curves</h2>')
    page.para("Train (solid) and validation (dashed: the fold's own OOF rows) per epoch, one colour per fold; "
              "a ring marks the best epoch (lowest validation loss), whose weights were kept.")
    for backbone in backbones:
        histories = []
        for k in range(config.folds.n_splits):
            path = fold_dir(paths, backbone, k) / "history.csv"
            if not path.is_file():
                raise CompkitError(f"{path}: not found; rerun `make train`")
            history = pd.read_csv(path)
            histories.append(history[history["seed"] == 0] if "seed" in history else history)  # seed averaging: the first
        page.add(page.figure(f"learning_curves_{backbone}.png", learning_curves_figure(histories, backbone),
                             f"{backbone}: loss and accuracy per epoch, every fold"))


def _wrong_section(page: _Page, blend: Model, labels: np.ndarray, train: Images, rows: np.ndarray, comp: Competition) -> None:
    page.add('<h2 id="wrong">Most confidently wrong OOF images</h2>')
    pred, confidence = blend.proba.argmax(axis=1), blend.proba.max(axis=1)
    wrong = np.flatnonzero(pred != labels)
    if wrong.size == 0:
        page.para(f"{blend.title} gets every OOF row right: nothing to show.")
        return
    top = wrong[np.argsort(-confidence[wrong], kind="stable")][:N_WRONG]
    classes = np.asarray(comp.classes, dtype=object)
    extras = train.extras.iloc[rows[top]].reset_index(drop=True)
    table = pd.DataFrame({"id": blend.ids[top], "true": classes[labels[top]], "predicted": classes[pred[top]],
                          "confidence": confidence[top], "p(true)": blend.proba[top, labels[top]]})
    for column in comp.extra_columns:
        table[column] = extras[column].to_numpy()
    captions = [
        f"id {r.id}: {r.true} → {r.predicted}\np={r.confidence:.2f}"
        + "".join(f" {c} {v}" for c, v in zip(comp.extra_columns, extras.iloc[i]))
        for i, r in enumerate(table.itertuples(index=False))
    ]
    page.para(f"The {len(top)} OOF rows of {wrong.size} wrong ones where {blend.title} is most sure of a wrong class "
              "(caption: id, true → predicted, its probability): look for wrong labels and hard cases.")
    page.add(page.figure("wrong.png", wrong_figure(train.images[rows[top]], captions), f"most confidently wrong OOF images of {blend.title}"))
    page.add(_table(table, "wrong"))


def _extra_section(page: _Page, models: list[Model], labels: dict[str, np.ndarray], train: Images, rows: np.ndarray,
                   comp: Competition) -> None:
    for column in comp.extra_columns:
        values = train.extras[column].iloc[rows].astype(str).to_numpy()
        frame = pd.DataFrame({"value": values})
        for m in models:
            frame[m.title] = m.proba.argmax(axis=1) == labels[m.key]
        grouped = frame.groupby("value", sort=True)
        table = grouped.size().rename("n").to_frame().join(grouped.mean()).reset_index()
        page.add(f'<h2 id="extra-{html.escape(column)}">OOF accuracy per {html.escape(column)}</h2>')
        if len(table) > MAX_EXTRA_VALUES:
            page.para(f"{len(table)} values of {column}: the {MAX_EXTRA_VALUES} most frequent are shown.")
            table = table.nlargest(MAX_EXTRA_VALUES, "n", keep="first").sort_values("value")
        blend = models[0]
        bars = table[["value", "n", blend.title]].rename(columns={blend.title: "accuracy"})
        overall = float(frame[blend.title].mean())
        page.add(page.figure(f"accuracy_by_{column}.png", extra_accuracy_figure(bars, column, overall, blend.title, comp.metric),
                             f"OOF accuracy of {blend.title} per {column}"))
        page.add(_table(table, f"extra-{column}"))


def run(config: Config, paths: Paths) -> Path:
    """Stage entry point: write ``runs/<competition>/report/index.html`` and its PNG figures; returns the page's path."""
    start = time.perf_counter()
    comp = config.competition
    blend = read_json(paths.runs / "ensemble" / "ensemble.json")
    folds, holdout = load_folds(config, paths)
    train = load_train(paths.data, comp)
    models = [_blend_oof(config, paths, blend["selected"], folds), *(_backbone_oof(config, paths, b) for b in blend["backbones"])]
    rows = {m.key: _rows(m.ids, train, paths.runs / (m.key if m.key != "blend" else "ensemble")) for m in models}
    labels = {key: train.labels[r] for key, r in rows.items()}
    board = _leaderboard(paths)
    usage = holdout["Usage"].to_numpy()
    for m in models[1:]:
        if not np.array_equal(m.ids, models[0].ids):
            raise CompkitError(f"{paths.runs / m.key}: its OOF ids differ from ensemble/oof.csv's; rerun `make ensemble`")
    # A competition scored on its own solution file has no holdout to bootstrap.
    candidates, skipped = holdout_candidates(config, paths, blend, train, holdout, board) if len(holdout) else ([], [])

    folder = paths.runs / "report"
    page = _Page(folder)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page.add(f"<h1>{html.escape(comp.name)}: report</h1>")
    page.para(f"Written {now} from {paths.runs}. Selected blend: {blend['selected']}, CV (OOF {comp.metric}) "
              f"{blend['cv']:.4f} over {len(models[0].ids)} OOF rows; backbones: {', '.join(blend['backbones'])}; "
              f"submissions: {0 if board is None else len(board)}; holdout {len(holdout)} images.")
    page.add("<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in [
        ("leaderboard", "leaderboard"), ("shakeup", "public vs private"), ("oof", "OOF scores"), ("correlation", "diversity"),
        ("classes", "per model"), ("curves", "learning curves"), ("wrong", "wrong images"),
        *((f"extra-{html.escape(c)}", f"per {html.escape(c)}") for c in comp.extra_columns)]) + "</nav>")
    _leaderboard_section(page, board, candidates, usage, comp.metric)
    if skipped:
        page.para(f"Not in the bootstrap below (their file is missing or predicts the test file, whose labels are "
                  f"unknown): {', '.join(skipped)}.", note=True)
    if candidates:
        _shakeup_section(page, candidates, usage, comp.metric, config.folds.seed, len(models[0].ids))
    else:
        page.para(f"No holdout: submissions are scored on {comp.solution_file}, so the public/private bootstrap "
                  "is not drawn; the leaderboard above holds the scores.", note=True)
    _oof_section(page, models, labels, blend, comp.metric)
    _correlation_section(page, models[1:], labels["blend"])
    _per_model_section(page, models, labels, comp)
    _curves_section(page, config, paths, blend["backbones"])
    _wrong_section(page, models[0], labels["blend"], train, rows["blend"], comp)
    _extra_section(page, models, labels, train, rows["blend"], comp)

    for stale in folder.glob("*.png"):  # figures of an earlier report that this one no longer draws
        if stale.name not in page.figures:
            stale.unlink()
    index = folder / "index.html"
    body = "\n".join(page.parts)
    with atomic_path(index) as tmp:
        tmp.write_text(f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(comp.name)} report</title>"
                       f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n", encoding="utf-8")
    size = index.stat().st_size / 1e6
    console.summary(
        f"report: {len(page.figures)} figures, {len(candidates)} holdout entries, CV {blend['cv']:.4f} "
        f"({blend['selected']}) -> {index} ({size:.1f} MB) in {time.perf_counter() - start:.0f}s"
    )
    return index
