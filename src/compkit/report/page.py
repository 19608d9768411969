"""The report's HTML page: one section per topic, figures embedded, and the stage entry point :func:`run`.

Over 400 lines: one short function per section of the page, read top to bottom in the order the page shows them.
"""

from __future__ import annotations

import base64
import html
import io
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, confusion_matrix

from compkit import console, tasks
from compkit.config import Competition, Config, Paths
from compkit.data import Images, load_labels, load_train
from compkit.errors import CompkitError
from compkit.artifacts import Layout
from compkit.io import atomic_path
from compkit.metrics import best, gain, label, score, score_table, sign
from compkit.report.platform import report_section as platform_section
from compkit.report.figures import (blends_figure, confusion_figure, correlation_figure, crop_figure, extra_accuracy_figure,
                                    heads_figure, intervals_figure, leaderboard_figure, learning_curves_figure,
                                    regression_figure, roc_figure, tags_figure, wrong_figure)
from compkit.report.loaders import (Candidate, Model, backbone_oof, blend_oof, holdout_candidates, read_leaderboard,
                                    rows_of)
from compkit.report.stats import N_BOOT, fold_spread, metric_flip_probability, metric_interval, true_class_correlation

N_WRONG = 24  # images in the grid of confidently wrong OOF predictions
N_CROPS = 6  # train images shown with their object's box (competition.crop_to_object)
MAX_EXTRA_VALUES = 40  # values of an extra column shown (the most frequent ones)


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


def _leaderboard_section(page: _Page, board: pd.DataFrame | None, candidates: list[Candidate], truth: np.ndarray,
                         usage: np.ndarray, metric: str) -> None:
    page.add('<h2 id="leaderboard">Leaderboard</h2>')
    if board is None or board.empty:
        page.para("No submissions yet: leaderboard.csv does not exist. Run `make submit` after `make ensemble`; "
                  "the figures below use the backbones' and the ensemble's holdout predictions.", note=True)
    else:
        page.para(f"Every submission in leaderboard.csv, scored by the competition's metric, {label(metric)}: CV is the "
                  "OOF score of the blend, public and private the score of the submitted file on the two parts of the "
                  "solution file or of the local holdout.")
        page.add(_table(board, "leaderboard"))
    points = [] if board is None else [
        {"name": str(r.name), "kind": "submission", "cv": r.cv, "public": r.public, "private": r.private}
        for r in board.itertuples(index=False)
    ]
    for c in candidates:
        if c.kind != "submission":
            points.append({"name": c.name, "kind": c.kind, "cv": c.cv,
                           **{part.lower(): score(metric, truth[usage == part], c.proba[usage == part]) for part in ("Public", "Private")}})
    page.add(page.figure("leaderboard.png", leaderboard_figure(pd.DataFrame(points), metric),
                         "CV vs public vs private per submission (and per backbone)"))


def _shakeup_section(page: _Page, candidates: list[Candidate], truth: np.ndarray, usage: np.ndarray, metric: str, seed: int,
                     n_oof: int) -> None:
    n_public, n_private = int((usage == "Public").sum()), int((usage == "Private").sum())
    parts = {"public": usage == "Public", "private": usage == "Private"}
    page.add('<h2 id="shakeup">How far to trust public and private</h2>')
    rows = []
    for c in candidates:
        row = {"name": c.name, "kind": c.kind, "cv": c.cv}
        for part, rows_of_part in parts.items():
            point, low, high = metric_interval(metric, truth[rows_of_part], c.proba[rows_of_part], seed=seed)
            row.update({part: point, f"{part}_low": low, f"{part}_high": high})
        rows.append(row)
    table = pd.DataFrame(rows)
    shown = table[["name", "kind", "cv"]].copy()
    for part in ("public", "private"):
        shown[part] = table[part]
        shown[f"{part} 95% interval"] = [f"{lo:.4f} to {hi:.4f}" for lo, hi in zip(table[f"{part}_low"], table[f"{part}_high"])]
    width = float(np.median(table["public_high"] - table["public_low"]))
    private_width = float(np.median(table["private_high"] - table["private_low"]))
    one_image = f"one image moves a public accuracy by {100 / n_public:.2f} points, and " if metric == "accuracy" else ""
    page.para(
        f"The public part of the holdout has {n_public} images: {one_image}a public {metric}'s 95% interval here is "
        f"about {width:.4f} wide. A public gap smaller than that says little about which submission is better on "
        f"private (P(flip) below measures it pair by pair): choose by CV ({n_oof} OOF images), not by public. "
        f"The private part has {n_private} images (interval about {private_width:.4f} wide).",
        note=True,
    )
    page.para(f"Scores in {label(metric)}. Intervals: percentile bootstrap (Efron & Tibshirani 1993) of each part's rows, "
              f"{N_BOOT} resamples, seed {seed}.")
    page.add(_table(shown, "holdout"))
    page.add(page.figure("holdout_intervals.png", intervals_figure(table, n_public, n_private, metric),
                         "public and private score with 95% bootstrap intervals"))

    public = {c.name: score(metric, truth[parts["public"]], c.proba[parts["public"]]) for c in candidates}
    private = {c.name: score(metric, truth[parts["private"]], c.proba[parts["private"]]) for c in candidates}
    ranked = sorted(candidates, key=lambda c: (-sign(metric) * public[c.name], -sign(metric) * c.cv))
    pairs = []
    for a, b in zip(ranked, ranked[1:]):
        same = np.array_equal(a.proba, b.proba)
        pairs.append({
            "better on public": a.name, "worse on public": b.name,
            "public gain": gain(metric, public[a.name], public[b.name]),
            "private gain": gain(metric, private[a.name], private[b.name]),
            "P(flip)": metric_flip_probability(metric, truth, a.proba, b.proba, n_public, n_private, seed=seed),
            "note": "same predictions: the order is a coin toss" if same else "",
        })
    if pairs:
        page.add("<h3>Shake-up: neighbours in the public ranking</h3>")
        page.para(f"Gains are how much better the first is, in {metric} (positive: better{', lower' if sign(metric) < 0 else ''}). "
                  f"P(flip): the probability that the two are ordered one way on a public part of {n_public} images "
                  f"and the other way on a private part of {n_private}, both resampled from the whole holdout "
                  "(paired bootstrap, ties count one half). Near 0.5 the public order says nothing.")
        top = pairs[0]
        page.para(f"Here {top['better on public']} leads {top['worse on public']} on public by "
                  f"{top['public gain']:.4f} {metric}; the chance that private orders them the other way is "
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
                     **({f"OOF {metric}": scores[metric]} if metric not in ("accuracy", "log_loss") else {}),
                     "rows": len(m.ids)})
    page.para("OOF accuracy and log loss over all OOF rows; fold mean ± std: accuracy of each fold's OOF rows "
              "(each fold's oof.csv), its mean and population std.")
    page.add(_table(pd.DataFrame(rows), "oof"))

    backbones, selected = blend["backbones"], blend["selected"]
    best_single = best(metric, {b: blend["scores"][b][metric] for b in backbones})
    rows = []
    for name, spec in blend["blends"].items():
        row = {"blend": name, "selected": "yes" if name == selected else ""}
        row.update({f"w {b}": np.nan if name == "hard" or "weights" not in spec else spec["weights"][b] for b in backbones})
        row.update({"accuracy": spec["accuracy"], "log loss": spec["log_loss"],
                    f"{metric} gain": gain(metric, spec[metric], blend["scores"][best_single][metric])})
        if metric != "log_loss":  # else the same column twice
            row["log loss gain"] = blend["scores"][best_single]["log_loss"] - spec["log_loss"]
        if "predict_hours" in spec:  # projected at the hidden test size (ensemble.time_budget)
            row["predict h"] = spec["predict_hours"]
        rows.append(row)
    page.add("<h3>Blends</h3>")
    page.para(f"Every blend is scored out of fold (fitted on the other folds' OOF rows). Gains are over the best "
              f"single backbone by the competition's metric ({label(metric)}), {best_single} (OOF {metric} "
              f"{blend['scores'][best_single][metric]:.4f}, log loss {blend['scores'][best_single]['log_loss']:.4f}); "
              "a positive gain is a better score (for log loss: a lower one). "
              "Hard voting gives each backbone one vote: it has no weights (n/a)."
              + (" The stacked blend is a logistic regression on all backbones' probabilities, scored out of fold: "
                 "it has no weight per backbone (n/a)." if "stacked" in blend["blends"] else ""))
    page.add(_table(pd.DataFrame(rows), "blends"))
    weights = pd.DataFrame({n: s["weights"] for n, s in blend["blends"].items() if n != "hard" and "weights" in s}).T[backbones]
    scores = pd.Series({**{b: blend["scores"][b][metric] for b in backbones},
                        **{f"blend {n}": s[metric] for n, s in blend["blends"].items()}})
    page.add(page.figure("blends.png", blends_figure(weights, scores, blend["scores"][best_single][metric], selected, metric),
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
    logged = tasks.for_config(config).epoch_metric
    for backbone in backbones:
        histories = []
        for k in range(config.folds.n_splits):
            history = pd.read_csv(Layout(config, paths).runs.file(backbone, k, "history.csv"))
            histories.append(history[history["seed"] == 0] if "seed" in history else history)  # seed averaging: the first
        page.add(page.figure(f"learning_curves_{backbone}.png", learning_curves_figure(histories, backbone, logged),
                             f"{backbone}: loss and {logged} per epoch, every fold"))


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
        page.add(page.figure(f"accuracy_by_{column}.png", extra_accuracy_figure(bars, column, overall, blend.title, tasks.of(comp).scorer.name),
                             f"OOF accuracy of {blend.title} per {column}"))
        page.add(_table(table, f"extra-{column}"))


def run(config: Config, paths: Paths) -> Path:
    """Stage entry point: write ``runs/<competition>/report/index.html`` and its PNG figures; returns the page's path."""
    start = time.perf_counter()
    comp, layout = config.competition, Layout(config, paths)
    if not tasks.for_config(config).full_report:
        return _task_report(config, paths, start)
    blend = layout.ensemble.read()
    folds, holdout = layout.folds.read()
    train = load_train(paths.data, comp, paths.cache)  # pixels (a memory map of the cache) for the wrong-images figure
    models = [blend_oof(config, paths, blend, folds), *(backbone_oof(config, paths, b) for b in blend["backbones"])]
    rows = {m.key: rows_of(m.ids, train, paths.runs / (m.key if m.key != "blend" else "ensemble")) for m in models}
    labels = {key: train.labels[r] for key, r in rows.items()}
    board = read_leaderboard(config, paths)
    usage = holdout["Usage"].to_numpy()
    for m in models[1:]:
        if not np.array_equal(m.ids, models[0].ids):
            raise CompkitError(f"{paths.runs / m.key}: its OOF ids differ from ensemble/oof.csv's; rerun `make ensemble`")
    # A competition scored on its own solution file has no holdout to bootstrap.
    candidates, skipped, truth = holdout_candidates(config, paths, blend, train, holdout, board) if len(holdout) else ([], [], None)

    folder = paths.runs / "report"
    page = _Page(folder)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page.add(f"<h1>{html.escape(comp.name)}: report</h1>")
    page.para(f"Written {now} from {paths.runs}. Selected blend: {blend['selected']}, CV (OOF {blend['metric']}) "
              f"{blend['cv']:.4f} over {len(models[0].ids)} OOF rows; backbones: {', '.join(blend['backbones'])}; "
              f"submissions: {0 if board is None else len(board)}; holdout {len(holdout)} images.")
    page.add("<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in [
        ("leaderboard", "leaderboard"), ("shakeup", "public vs private"), ("oof", "OOF scores"), ("correlation", "diversity"),
        ("classes", "per model"), ("curves", "learning curves"), ("wrong", "wrong images"),
        *((f"extra-{html.escape(c)}", f"per {html.escape(c)}") for c in comp.extra_columns),
        *([("crops", "crop to the object")] if comp.crop_to_object else [])]) + "</nav>")
    _leaderboard_section(page, board, candidates, truth, usage, blend["metric"])
    from compkit import adversarial  # sections drawn only when lb-sync / adversarial have run

    platform_section(page, board, blend["metric"])
    adversarial.report_section(page, paths)
    if skipped:
        page.para(f"Not in the bootstrap below (their file is missing or predicts the test file, whose labels are "
                  f"unknown): {', '.join(skipped)}.", note=True)
    if candidates:
        _shakeup_section(page, candidates, truth, usage, blend["metric"], config.folds.seed, len(models[0].ids))
    else:
        page.para(f"No holdout: submissions are scored on {comp.solution_file}, so the public/private bootstrap "
                  "is not drawn; the leaderboard above holds the scores.", note=True)
    _oof_section(page, models, labels, blend, blend["metric"])
    tuned = [b for b in blend["backbones"] if config.train.use_tuned and layout.tuned.path(b).is_file()]
    if tuned:  # the tuning folds' OOF rows are in the CV: it is optimistic by the selection made on them
        page.para(f"Tuning bias: {', '.join(tuned)} use hyperparameters chosen by Optuna on fold(s) "
                  f"{', '.join(map(str, config.tune.folds))}, whose OOF rows are part of this CV and of the blend "
                  "selection, so the CV is optimistic; the other folds' scores (per fold, above) and the holdout are not.",
                  note=True)
    _correlation_section(page, models[1:], labels["blend"])
    _per_model_section(page, models, labels, comp)
    _curves_section(page, config, paths, blend["backbones"])
    _wrong_section(page, models[0], labels["blend"], train, rows["blend"], comp)
    _extra_section(page, models, labels, train, rows["blend"], comp)
    _crop_section(page, comp, paths, train)

    return _write(page, comp, f"{len(candidates)} holdout entries, CV {blend['cv']:.4f} ({blend['selected']})", start)


def _crop_section(page: _Page, comp: Competition, paths: Paths, train: Images) -> None:
    """With ``competition.crop_to_object``: :data:`N_CROPS` train files spread over the train file, each with its object's
    box drawn, above the cached crops the models train and predict on."""
    if not comp.crop_to_object:
        return
    from compkit.photos import file_box, read_image_files

    rows = np.unique(np.linspace(0, len(train.ids) - 1, N_CROPS).astype(int))  # spread over the file, not one class's first rows
    folder, names = paths.data / comp.train_images, [str(i) for i in train.ids[rows]]
    whole = read_image_files(folder, names, comp.model_copy(update={"crop_to_object": False}))
    boxes = [file_box(folder / name, comp.object_margin) for name in names]
    page.add('<h2 id="crops">Crop to the object</h2>')
    page.para(f"competition.crop_to_object: each image is cut to its object's box (+{comp.object_margin:.0%} of its sides) before "
              f"the resize to {comp.image_shape[0]}x{comp.image_shape[1]}; top: {len(names)} train files with the box, "
              "bottom: the cached pixels the models train and predict on.")
    page.add(page.figure("crops.png", crop_figure(whole, boxes, np.asarray(train.images[rows]), names),
                         "the object's box on each file, and the crop"))


def _write(page: _Page, comp: Competition, what: str, start: float) -> Path:
    """Write the page and its figures (deleting an earlier report's figures this one no longer draws); its path."""
    folder = page.folder
    for stale in folder.glob("*.png"):  # figures of an earlier report that this one no longer draws
        if stale.name not in page.figures:
            stale.unlink()
    index = folder / "index.html"
    body = "\n".join(page.parts)
    with atomic_path(index) as tmp:
        tmp.write_text(f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(comp.name)} report</title>"
                       f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n", encoding="utf-8")
    size = index.stat().st_size / 1e6
    console.summary(f"report: {len(page.figures)} figures, {what} -> {index} ({size:.1f} MB) in {time.perf_counter() - start:.0f}s")
    return index


def _task_report(config: Config, paths: Paths, start: float) -> Path:
    """The report of a task without class-probability sections (binary, regression, ordinal, a metric file): the
    leaderboard, the OOF scores of every backbone and blend (ensemble.json), one figure per model of its OOF rows
    (:attr:`compkit.tasks.Task.figure`: a ROC curve, predicted vs true with residuals, or the confusion matrix of
    grades; decided by post-processing cross-fitted over the folds, as the scores are), and the learning curves."""
    comp, layout, task = config.competition, Layout(config, paths), tasks.for_config(config)
    blend, (folds, holdout) = layout.ensemble.read(), layout.folds.read()
    train = load_labels(paths.data, comp)
    models = [blend_oof(config, paths, blend, folds), *(backbone_oof(config, paths, b) for b in blend["backbones"])]
    board = read_leaderboard(config, paths)
    page = _Page(paths.runs / "report")
    metric = task.scorer
    page.add(f"<h1>{html.escape(comp.name)}: report</h1>")
    page.para(f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {paths.runs}. Task {task.kind}; "
              f"selected blend: {blend['selected']}, CV (OOF {metric.label}) {blend['cv']:.4f} over {len(models[0].ids)} "
              f"OOF rows; post-processing {blend.get('post') or 'none'}; holdout {len(holdout)} images.")
    page.add('<h2 id="leaderboard">Leaderboard</h2>')
    if board is None:
        page.para("No submission yet: `make submit`.", note=True)
    else:
        page.add(_table(board.drop(columns=["file"]).sort_values("cv", ascending=not metric.greater_is_better), "leaderboard"))
    page.add('<h2 id="oof">OOF scores</h2>')
    rows = [{"model": b, "kind": "backbone", **blend["scores"][b]} for b in blend["backbones"]]
    rows += [{"model": n, "kind": "blend", **{k: v for k, v in s.items() if k != "weights"}} for n, s in blend["blends"].items()]
    page.add(_table(pd.DataFrame(rows), "oof-scores"))
    for m in models:
        truth = train.labels[rows_of(m.ids, train, paths.runs / m.key)]
        decision = task.cross_fit_decide(truth, m.proba, m.fold)
        page.add(page.figure(f"oof_{m.key}.png", _task_figure(task, truth, m.proba, decision, f"{m.title}: OOF"),
                             f"{m.title}: OOF predictions"))
    _curves_section(page, config, paths, blend["backbones"])
    if comp.crop_to_object:
        _crop_section(page, comp, paths, load_train(paths.data, comp, paths.cache))
    return _write(page, comp, f"task {task.kind}, CV {blend['cv']:.4f} ({blend['selected']})", start)


def _task_figure(task, truth: np.ndarray, pred: np.ndarray, decision: np.ndarray, title: str):
    """The figure :attr:`compkit.tasks.Task.figure` names, of (N,) truth, (N, D) predictions and (N,) decisions (a
    multi-label or multi-head target: (N, T) or (N, H))."""
    if task.figure == "roc":
        return roc_figure(truth, pred[:, 0], title)
    if task.figure == "scatter":
        return regression_figure(truth, decision, title)
    if task.figure == "tags":
        return tags_figure(truth, pred, decision, task.classes, title)
    if task.figure == "heads":
        return heads_figure(truth, decision, task.heads, task.head_classes, title)
    k = len(task.classes)
    matrix = confusion_matrix(truth, decision, labels=np.arange(k)).astype(float)
    return confusion_figure(matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None), task.classes, title)
