"""The report's figures: each function takes plain arrays/frames and returns one matplotlib Figure (Agg)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compkit.metrics import label


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
    names = [str(c) for c in classes]
    long_names = k > 12 or max(map(len, names)) > 2  # class names, not digits: rotated so they do not overlap
    ax.set_xticks(ticks, names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  rotation_mode="anchor")
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


def learning_curves_figure(histories: list[pd.DataFrame], backbone: str, logged: str = "accuracy") -> Figure:
    """Train (solid) and validation (dashed) loss and the task's logged metric per epoch, one colour per fold.

    ``histories``: one ``history.csv`` frame per fold (epoch, loss, ``logged``, val_loss, val_``logged``; ``logged`` is
    :attr:`compkit.tasks.Task.epoch_metric`: accuracy, auc or rmse); a dot marks each fold's best epoch (lowest
    val_loss, whose weights were kept).
    """
    fig = _figure(10, 3.8)
    axes = fig.subplots(1, 2)
    few = max(len(h) for h in histories) <= 15
    for ax, metric in zip(axes, ("loss", logged)):
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
    right.set_xlabel(f"OOF {label(metric)}")
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
    ax.set_xlabel(f"CV (OOF {label(metric)})")
    ax.set_ylabel(f"public / private {metric}")
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
    ax.set_xlabel(f"holdout {label(metric)} with 95% bootstrap interval")
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


def crop_figure(whole: np.ndarray, boxes: list[tuple[float, float, float, float]], crops: np.ndarray, names: list[str]) -> Figure:
    """Two rows: (n, H, W, C) uint8 ``whole`` images with each one's box (top, left, bottom, right as fractions of the
    side) drawn in red, and under each its (H, W, C) uint8 crop; titled by ``names``."""
    from matplotlib.patches import Rectangle

    n = len(whole)
    fig = _figure(2.0 * n, 4.4)
    axes = np.atleast_2d(fig.subplots(2, n).reshape(2, n))
    for i, (image, (top, left, bottom, right), crop, name) in enumerate(zip(whole, boxes, crops, names)):
        h, w = image.shape[:2]
        for ax, shown in ((axes[0, i], image), (axes[1, i], crop)):
            ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray" if shown.shape[-1] == 1 else None)
            ax.axis("off")
        axes[0, i].add_patch(Rectangle((left * w - 0.5, top * h - 0.5), (right - left) * w, (bottom - top) * h,
                                       fill=False, edgecolor="red", linewidth=1.5))
        axes[0, i].set_title(name, fontsize=8)
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


def roc_figure(truth: np.ndarray, p: np.ndarray, title: str) -> Figure:
    """ROC curve of (N,) P(positive) against (N,) 0/1 truth (``sklearn.metrics.roc_curve``), its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(truth, p)
    fig = _figure(5, 4.6)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.6, label=f"ROC AUC {roc_auc_score(truth, p):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def regression_figure(truth: np.ndarray, predicted: np.ndarray, title: str) -> Figure:
    """Predicted against true values (the diagonal is perfect) and the histogram of residuals (predicted - true)."""
    fig = _figure(10, 4.2)
    scatter, residuals = fig.subplots(1, 2)
    scatter.scatter(truth, predicted, s=6, alpha=0.4)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    scatter.plot([low, high], [low, high], color="grey", ls="--", lw=1)
    scatter.set_xlabel("true")
    scatter.set_ylabel("predicted")
    scatter.grid(alpha=0.3)
    error = predicted - truth
    residuals.hist(error, bins=40, color="C0", alpha=0.8)
    residuals.axvline(0, color="grey", ls="--", lw=1)
    residuals.set_xlabel(f"residual (mean {error.mean():.3f}, RMSE {np.sqrt(np.mean(error ** 2)):.3f})")
    residuals.set_ylabel("rows")
    fig.suptitle(title)
    return fig


def tags_figure(truth: np.ndarray, pred: np.ndarray, decision: np.ndarray, tags: list, title: str) -> Figure:
    """Per tag of a multi-label target: its share of rows, ROC AUC of its probability and F1 of its decisions
    ((N, T) 0/1 truth and decisions, (N, T) probabilities; sklearn's ``roc_auc_score`` and ``f1_score``)."""
    from sklearn.metrics import f1_score, roc_auc_score

    names = [str(t) for t in tags]
    auc = [roc_auc_score(truth[:, t], pred[:, t]) if 0 < truth[:, t].sum() < len(truth) else np.nan for t in range(len(names))]
    f1 = f1_score(truth, decision, average=None, zero_division=0)
    fig = _figure(max(6, 0.6 * len(names) + 2), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x - 0.27, truth.mean(axis=0), 0.27, label="share of rows", color="C7")
    ax.bar(x, auc, 0.27, label="ROC AUC", color="C0")
    ax.bar(x + 0.27, f1, 0.27, label="F1 (fitted thresholds)", color="C1")
    ax.set_xticks(x, names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    return fig


def heads_figure(truth: np.ndarray, decision: np.ndarray, heads: list[str], classes: list[list], title: str) -> Figure:
    """Per head of a multi-head target, one panel: each class's recall, the head's macro recall (its mean, sklearn's
    ``recall_score(average="macro")`` over the classes present) in the panel's title ((N, H) int truth and decisions)."""
    from sklearn.metrics import recall_score

    fig = _figure(max(6.0, 0.25 * sum(len(c) for c in classes) + 2), 3.0 * len(heads))
    for h, (head, names) in enumerate(zip(heads, classes)):
        ax = fig.add_subplot(len(heads), 1, h + 1)
        recall = recall_score(truth[:, h], decision[:, h], labels=np.arange(len(names)), average=None, zero_division=0)
        macro = recall_score(truth[:, h], decision[:, h], average="macro", zero_division=0)
        ax.bar(np.arange(len(names)), recall, color="C0")
        ax.set_xticks(np.arange(len(names)), [str(c) for c in names])
        ax.set_ylim(0, 1)
        ax.set_ylabel("recall")
        ax.grid(alpha=0.3, axis="y")
        ax.set_title(f"{head}: macro recall {macro:.3f}", fontsize=10)
    fig.suptitle(title)
    return fig
