"""The task: what the target is and everything that follows from it, in one place (AutoGluon's ``problem_type``).

``competition.task`` is one of:

============ ========================== ==================== ======================= ==============================
task         target (train.csv)         model head           prediction files        decision
============ ========================== ==================== ======================= ==============================
multiclass   one of ``classes``         softmax, K units     ``p_<class>`` (K cols)  argmax
binary       one of 2 ``classes``       sigmoid, 1 unit      ``p_<classes[1]>``      threshold (fitted on OOF)
regression   a number                   linear (or sigmoid   ``value``               clip to ``target_range``
                                        on a 0-1 scaled
                                        target)
ordinal      one of ``classes``, graded linear, 1 unit       ``score`` (grade units) cut points (fitted on OOF)
multilabel   any of ``classes`` (tags,  sigmoid, T units     ``p_<tag>`` (T cols)    thresholds (fitted on OOF)
             space-separated, or a
             0/1 column per tag)
multihead    one class per head, each   a softmax per head,  ``p_<head>_<class>``    argmax per head
             head its own column        concatenated         (sum of K_h cols)
sequence     a number as text, 1 to     a softmax per head:  ``p_<head>_<class>``    the length's argmax; each
             ``sequence_length`` symbols the length, then a   (length, digit1..L)     position inside it its symbol's
             (default the digits 0-9)   position each                                argmax, "none" past it
============ ========================== ==================== ======================= ==============================

A task owns: reading and validating the target (:meth:`Task.read_target`: one ``target_column``, or with
``target_column = ""`` one column per class), the strata for folds, the training targets
and the head, loss, Keras metrics and class weights, the decision and the post-processing fitted on OOF
(a binary threshold, ordinal cut points, tag thresholds), the scores, the blends that apply, the submission's values and the
pseudo-label rule. Stages ask it; they never test its kind. A *prediction* is an (N, D) float array in the
task's space (D = ``width``); ``truth`` is (N,) int64 class indices, (N,) float64 values for regression, an
(N, T) int64 0/1 tag matrix for multi-label, or (N, H) int64 class indices, one column per head, for multi-head (for a
sequence: the length's index, then each position's symbol, "none" past the length).

Over 400 lines on purpose: the tasks side by side, each a small class, are what keeps every stage free of
``if task == ...``; split per task, a change to one kind (a new decision rule) would hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.model_selection import PredefinedSplit

from compkit import blends
from compkit.config import Competition, Config, Head
from compkit.errors import CompkitError, DataError, line, shown
from compkit.heads import bounds, keras_parts
from compkit.metrics import (BINARY, CLASSIFY, DEFAULT_METRIC, MULTIHEAD, MULTILABEL, ORDINAL, REGRESSION, SCORERS, SEQUENCE, Scorer,
                             call_metric_file, weighted_macro_recall)


def _zero_one(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """(N, C) int64 of ``frame``'s columns, each value 0 or 1.

    Raises:
        DataError: a value that is not 0 or 1 (empty, text, 2, 0.5); names the file, line and column.
    """
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"{path}: line {line(row)}, column {frame.columns[col]!r}: {shown(frame.iat[row, col])} is not "
                        "0 or 1; write 1 where the class applies and 0 where it does not")
    return values.astype(np.int64)


def _indices(values: pd.Series, classes: list, path: Path, column: str, key: str) -> np.ndarray:
    """Labels as written in a CSV -> (N,) int64 indices into ``classes``.

    Raises:
        DataError: a label is empty or not one of the classes; names the file, line and column, and the config ``key``
            listing the classes.
    """
    index = {str(c): i for i, c in enumerate(classes)}
    mapped = values.map(_label_text).map(index)
    bad = mapped.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line(row)}, column {column!r}: label {shown(values.iloc[row])} is not one of the "
                        f"classes {classes}; fix the row or {key}")
    return mapped.to_numpy(dtype=np.int64)


def _label_text(value) -> str:
    """A label as text: ``3.0`` is ``"3"``, because one empty cell makes pandas read a whole integer column as float."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Submitted:
    """What a submission column holds, parsed: task-space predictions (N, D) or (N,) decisions; one is None."""

    pred: np.ndarray | None = None
    decision: np.ndarray | None = None


class Task:
    """Base of the tasks; see the module docstring. Built by :func:`of`."""

    kind = ""
    table_metrics: tuple[str, ...] = ()  # the scores every table shows, before the competition's own metric
    blend_names: tuple[str, ...] = ("equal", "fitted", "caruana")  # the stacked blend joins with ensemble.stacking
    default_loss = "crossentropy"

    def __init__(self, comp: Competition, loss: str = "auto", tag_thresholds: str = "global"):
        self.comp = comp
        self.classes = list(comp.classes or [])
        self.scorer = self._scorer(comp)
        self.loss_name = self.default_loss if loss == "auto" else loss  # train.loss
        self.tag_thresholds = tag_thresholds  # ensemble.tag_thresholds: a multi-label task's thresholds

    # -- the metric -----------------------------------------------------------------------------------------------
    def _scorer(self, comp: Competition) -> Scorer:
        metric = comp.metric or DEFAULT_METRIC[self.kind]
        if isinstance(metric, str):
            return SCORERS[metric]
        file, needs = metric.file, "proba" if metric.probabilities else "decision"

        def score(truth: np.ndarray, output: np.ndarray) -> float:
            id_column, target = comp.id_key, comp.target_column or "target"
            rows = np.arange(len(truth))
            solution = pd.DataFrame({id_column: rows, target: self.written(truth)})
            return call_metric_file(file, solution, self.metric_frame(rows, output, needs), id_column)

        return Scorer(Path(file).stem, metric.greater_is_better, needs, score, (self.kind,))

    def metric_frame(self, rows: np.ndarray, output: np.ndarray, needs: str) -> pd.DataFrame:
        """The submission-shaped frame a metric file scores: the id column, then the decisions as written
        (``needs = "decision"``) or the probabilities (one column per class)."""
        if needs == "decision":
            return pd.DataFrame({self.comp.id_key: rows, self.comp.target_column or "target": self.written(output)})
        frame = pd.DataFrame(output, columns=[str(c) for c in self.classes])
        frame.insert(0, self.comp.id_key, rows)
        return frame

    @property
    def metric_names(self) -> list[str]:
        """The columns of every score table: :attr:`table_metrics`, then the competition's metric if not among them."""
        names = list(self.table_metrics)
        return names if self.scorer.name in names else [*names, self.scorer.name]

    def _scorer_named(self, name: str) -> Scorer:
        return self.scorer if name == self.scorer.name else SCORERS[name]

    # -- the target -----------------------------------------------------------------------------------------------
    @property
    def heads(self) -> list[str]:
        """The heads of a multi-head target (each a column of its own, in submissions too); [] for one target."""
        return []

    @property
    def submitted_heads(self) -> list[str]:
        """The heads a submission holds, each its own column (wide) or row (long); [] for one target column."""
        return self.heads

    @property
    def text_columns(self) -> list[str]:
        """The target columns every reader takes as text, as written (a number's leading zeros kept); [] to let
        pandas infer their types."""
        return []

    @property
    def label_columns(self) -> list[str]:
        """The train file's target columns: ``[target_column]``, or with ``target_column = ""`` one column per class,
        named as the classes (one-hot, as Plant Pathology 2020's ``train.csv``; 0/1 tags for multi-label, as RANZCR's)."""
        return [self.comp.target_column] if self.comp.target_column else [str(c) for c in self.classes]

    def read_target(self, frame: pd.DataFrame, path: Path) -> np.ndarray:
        """The encoded target of a train (or solution) ``frame`` holding :attr:`label_columns`, as :meth:`encode`
        or :meth:`from_columns` returns it.

        Raises:
            DataError: as :meth:`encode` or :meth:`from_columns`.
        """
        if self.comp.target_column:
            return self.encode(frame[self.comp.target_column], path, self.comp.target_column)
        return self.from_columns(frame[[str(c) for c in self.classes]], path)

    def from_columns(self, frame: pd.DataFrame, path: Path) -> np.ndarray:
        """One 0/1 column per class, one-hot per row -> (N,) int64 class indices.

        Raises:
            DataError: a row that is not one-hot (a value other than 0 or 1, or not exactly one 1); names the file,
                line and the row's values.
        """
        values = _zero_one(frame, path)
        bad = values.sum(axis=1) != 1
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: line {line(row)}: class columns {frame.iloc[row].tolist()} are not one-hot; "
                            "put 1 in the true class's column and 0 elsewhere")
        return values.argmax(axis=1)

    def encode(self, values: pd.Series, path: Path, column: str) -> np.ndarray:
        """The target as written in a CSV -> (N,) int64 class indices into ``classes``.

        Raises:
            DataError: a label is empty or not one of the classes; names the file, line and column.
        """
        return _indices(values, self.classes, path, column, "competition.classes")

    def written(self, truth: np.ndarray) -> np.ndarray:
        """(N,) class indices as a CSV writes them: the class names (object array)."""
        return np.asarray(self.classes, dtype=object)[np.asarray(truth, dtype=np.int64)]

    def strata(self, truth: np.ndarray) -> np.ndarray:
        """(N,) str stratification key of the target: the class name."""
        return self.written(truth).astype(str)

    @property
    def target_names(self) -> list[str]:
        """The names ``folds.stratify`` may give the target by, the first its default: ``[target_column]``."""
        return [self.comp.target_column]

    def stratum(self, name: str, truth: np.ndarray) -> np.ndarray:
        """The strata of the target named ``name`` (one of :attr:`target_names`): :meth:`strata`."""
        return self.strata(truth)

    def describe(self, truth: np.ndarray) -> str:
        """One line on the target's distribution, for ``make check``."""
        counts = np.bincount(truth, minlength=len(self.classes))
        return f"{len(self.classes)} classes, {counts.min()}-{counts.max()} rows each"

    def target_table(self, truth: np.ndarray) -> pd.DataFrame:
        """The target's distribution as a table, for ``make check``: rows per class."""
        counts = np.bincount(truth, minlength=len(self.classes))
        return pd.DataFrame({"class": [str(c) for c in self.classes], "rows": counts})

    # -- the model ------------------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """D: columns of a prediction (and units of the head)."""
        return len(self.columns)

    @property
    def columns(self) -> list[str]:
        """The prediction files' value columns (after the id column)."""
        raise NotImplementedError

    def targets(self, truth: np.ndarray) -> np.ndarray:
        """(N, D) float32 training targets of (N,) truth."""
        raise NotImplementedError

    def head(self, x):
        """The output layer on features ``x``: a float32 Dense of :attr:`width` units with the task's activation."""
        from keras import layers

        return layers.Dense(self.width, activation=self.activation, dtype="float32", name=self.head_name)(x)

    activation, head_name = "softmax", "proba"

    def loss(self, label_smoothing: float):
        """The Keras loss ``train.loss`` names (``auto``: the task's default), with ``label_smoothing`` where it applies."""
        raise NotImplementedError

    def keras_metrics(self) -> list:
        """The Keras metrics compiled into the model; the first is the one the progress lines show."""
        return ["accuracy"]

    epoch_metric = "accuracy"  # the logged name of keras_metrics()[0]

    def from_model(self, raw: np.ndarray) -> np.ndarray:
        """(N, D) model outputs -> (N, D) predictions in the task's space (identity but for a scaled regression target)."""
        return raw

    def class_weight(self, how: str, truth: np.ndarray) -> dict[int, float] | None:
        """``balanced`` class weights of the fitted rows (sklearn: n / (k * count)), or None for ``none``."""
        if how == "none":
            return None
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(len(self.classes)), y=truth)
        return dict(enumerate(weights.tolist()))

    def prune_monitor(self) -> str | None:
        """The per-epoch log value Optuna's pruner may follow (same direction as the metric), or None: no pruning."""
        return "val_accuracy" if self.scorer.greater_is_better else "val_loss"

    # -- decisions and scores -------------------------------------------------------------------------------------
    def class_proba(self, pred: np.ndarray) -> np.ndarray:
        """(N, D) predictions -> (N, K) class probabilities (classification tasks)."""
        return pred

    def from_class_proba(self, proba: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities -> (N, D) predictions; the inverse of :meth:`class_proba`."""
        return proba

    def fit_post(self, truth: np.ndarray, pred: np.ndarray) -> dict:
        """Post-processing fitted on labelled predictions (JSON-able); {} when the task has none."""
        return {}

    def decide(self, pred: np.ndarray, post: dict | None = None) -> np.ndarray:
        """(N, D) predictions -> (N,) decisions (class indices, or values), with ``post`` (None: the default)."""
        raise NotImplementedError

    def cross_fit_decide(self, truth: np.ndarray, pred: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """(N,) out-of-fold decisions: fold k's rows decided by post-processing fitted on the other folds' rows only
        (as the blends are: ``PredefinedSplit`` over the competition's folds), so the OOF score stays honest."""
        out = np.zeros_like(truth)
        for fit_rows, rows in PredefinedSplit(fold).split():
            out[rows] = self.decide(pred[rows], self.fit_post(truth[fit_rows], pred[fit_rows]))
        return out

    def score(self, truth: np.ndarray, pred: np.ndarray | None = None, decision: np.ndarray | None = None,
              metric: str | None = None) -> float:
        """``metric`` (default: the competition's) of predictions ``pred`` and/or ``decisions``.

        Without ``decision`` the default post-processing decides; without ``pred`` (a label submission) a
        probability metric scores the decisions' one-hot rows.
        """
        scorer = self._scorer_named(metric or self.scorer.name)
        if decision is None:
            decision = self.decide(pred)
        if scorer.needs == "decision":
            return scorer.fn(truth, decision)
        proba = self.class_proba(pred) if pred is not None else self.decision_proba(decision)
        return scorer.fn(truth, proba)

    def decision_proba(self, decision: np.ndarray) -> np.ndarray:
        """What decisions score as under a probability metric (a label submission): one-hot class rows."""
        return np.eye(len(self.classes))[decision]

    def score_table(self, truth: np.ndarray, pred: np.ndarray | None, decision: np.ndarray | None = None) -> dict[str, float]:
        """Every metric of :attr:`metric_names`, as :meth:`score` computes them."""
        return {name: self.score(truth, pred, decision, name) for name in self.metric_names}

    # -- blends (algorithms: blends.py) ---------------------------------------------------------------------------
    def _class_probas(self, preds: np.ndarray) -> np.ndarray:
        """(M, N, D) predictions -> (M, N, K) class probabilities."""
        return np.stack([self.class_proba(p) for p in preds])

    def fit_weights(self, preds: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """(M,) soft-voting weights fitted on (M, N, D) OOF predictions: log loss on the simplex."""
        return blends.fit_weights(self._class_probas(preds), truth)

    def hard_vote(self, preds: np.ndarray) -> np.ndarray:
        """(N, D) majority vote of (M, N, D) predictions (:func:`compkit.blends.hard_vote` on the class probabilities)."""
        return self.from_class_proba(blends.hard_vote(self._class_probas(preds)))

    def stack(self, preds: np.ndarray, truth: np.ndarray, fold: np.ndarray, c: float) -> tuple[np.ndarray, dict]:
        """The stacked blend of (M, N, D) OOF predictions: its (N, D) out-of-fold predictions and the meta-model refitted
        on all rows, as data (:meth:`apply_stack` applies it); logistic regression on the class probabilities, C = ``c``."""
        oof = blends.stacked_oof(self._class_probas(preds), truth, fold, c)
        return self.from_class_proba(oof), blends.fit_meta_model(self._class_probas(preds), truth, c)

    def apply_stack(self, meta: dict, preds: np.ndarray) -> np.ndarray:
        """(N, D) predictions of the fitted meta-model ``meta`` (:meth:`stack`) from (M, N, D) predictions."""
        return self.from_class_proba(blends.meta_model_proba(meta, self._class_probas(preds)))

    def apply_blend(self, blend: dict, preds: np.ndarray) -> np.ndarray:
        """The blend ``blend`` (ensemble.json's ``apply``: ``{"weights": (M,)}`` soft vote, ``{"vote": "hard"}`` or
        ``{"meta": ...}`` the stacked meta-model) of (M, N, D) predictions in ensemble.json's backbone order: (N, D)
        float64. `make ensemble` writes holdout.csv and test.csv with it, `compkit predict` a submission."""
        if "weights" in blend:
            return blends.soft_vote(preds, np.asarray(blend["weights"], dtype=np.float64))
        if blend.get("vote") == "hard":
            return self.hard_vote(preds)
        return self.apply_stack(blend["meta"], preds)

    tiebreak = "log_loss"  # Caruana's second key: ties in the metric (frequent for accuracy) go to the lower one

    def caruana_key(self, truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
        """Caruana's objective on a blend, larger is better: (the metric, then minus the tie-break loss)."""
        return self.scorer.sign * self.score(truth, pred), -self.score(truth, pred, metric=self.tiebreak)

    # -- submissions ----------------------------------------------------------------------------------------------
    @property
    def normalises_rows(self) -> bool:
        """True when a probability submission's rows are class probabilities summing to 1 (not multi-label tags)."""
        return True

    @property
    def writes_probability(self) -> bool:
        """True when the submission's single target column holds a probability, not a label (binary under a
        probability metric)."""
        return False

    def submitted(self, pred: np.ndarray, post: dict | None) -> np.ndarray:
        """(N,) values of a submission's target column: the decisions as written, or a probability."""
        return self.written(self.decide(pred, post))

    def parse_submitted(self, values: pd.Series, path: Path, column: str) -> Submitted:
        """A submission's target column read back: decisions (labels) or predictions (binary probabilities).

        Raises:
            DataError: a value that is not a label (or a probability); names the file, line and column.
        """
        return Submitted(decision=self.encode(values, path, column))

    def pseudo(self, pred: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pseudo-labels of (N, D) test predictions: (N,) bool rows kept, (k,) labels as written, (k,) confidence.

        Raises:
            CompkitError: the task has no pseudo-label rule (:meth:`require_pseudo`).
        """
        self.require_pseudo()
        raise NotImplementedError

    figure = "confusion"  # the report's figure of OOF predictions: confusion (of classes or grades), roc, scatter

    @property
    def full_report(self) -> bool:
        """True when ``make report`` draws the whole class-probability report (per-class tables, the public/private
        bootstrap, wrong images): a multiclass task under a built-in metric; else the task's compact report."""
        return False

    def distill_targets(self, truth: np.ndarray, teacher: np.ndarray, temperature: float) -> np.ndarray:
        """(N, 2D) float32 targets of a distilled student: :meth:`targets` of (N,) ``truth``, then the (N, D) ``teacher``
        probabilities softened at ``temperature`` (softmax(log q / T); :func:`compkit.heads.distill_loss` reads both).

        Raises:
            CompkitError: the task has no distillation rule (:meth:`require_distill`).
        """
        self.require_distill()
        raise NotImplementedError

    def distill_loss(self, temperature: float, alpha: float):
        """The student's Keras loss on :meth:`distill_targets` (Hinton et al., 2015; :func:`compkit.heads.distill_loss`)."""
        self.require_distill()
        raise NotImplementedError

    def require_distill(self) -> None:
        """Raises CompkitError, one line, when the task has no distillation rule (all but multiclass)."""
        if type(self).distill_loss is not Task.distill_loss:
            return
        raise CompkitError(f"competition.task = {self.kind!r} has no distillation rule; `make distill` is for multiclass "
                           "tasks (a softmax over classes)")

    def require_pseudo(self) -> None:
        """Raises CompkitError, one line, when the task has no pseudo-label rule (regression, ordinal)."""
        if type(self).pseudo is not Task.pseudo:
            return
        raise CompkitError(f"competition.task = {self.kind!r} has no pseudo-label rule; "
                           "pseudo-labelling is for multiclass and binary tasks")


class Multiclass(Task):
    """One class of K: softmax, categorical cross-entropy, argmax (compkit's original task)."""

    kind = CLASSIFY
    table_metrics = ("accuracy", "macro_f1", "log_loss")
    blend_names = ("equal", "fitted", "hard", "caruana")

    @property
    def full_report(self):
        return self.scorer.name in SCORERS

    @property
    def columns(self) -> list[str]:
        return [f"p_{c}" for c in self.classes]

    def targets(self, truth):
        return np.eye(len(self.classes), dtype=np.float32)[truth]

    def loss(self, label_smoothing):
        import keras

        if self.loss_name == "focal":  # Lin et al., 2017, gamma 2
            return keras.losses.CategoricalFocalCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def decide(self, pred, post=None):
        return pred.argmax(axis=1)

    def pseudo(self, pred, threshold):
        keep = pred.max(axis=1) >= threshold
        return keep, self.written(pred[keep].argmax(axis=1)), pred[keep].max(axis=1)

    def distill_targets(self, truth, teacher, temperature):
        logits = np.log(np.clip(teacher, 1e-7, 1.0)) / temperature
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.concatenate([self.targets(truth), soft / soft.sum(axis=1, keepdims=True)], axis=1).astype(np.float32)

    def distill_loss(self, temperature, alpha):
        from compkit.heads import distill_loss

        return distill_loss()(temperature, alpha)


class Binary(Task):
    """Two classes, ``classes = [negative, positive]``: one sigmoid unit of P(positive), binary cross-entropy, and a
    threshold fitted on OOF when the metric scores labels (accuracy, F1); 0.5 otherwise."""

    kind = BINARY
    table_metrics = ("roc_auc", "accuracy", "log_loss")
    blend_names = ("equal", "fitted", "hard", "caruana")
    activation, figure = "sigmoid", "roc"
    epoch_metric = "auc"

    @property
    def columns(self):
        return [f"p_{self.classes[1]}"]

    def targets(self, truth):
        return np.asarray(truth, dtype=np.float32)[:, None]

    def loss(self, label_smoothing):
        import keras

        if self.loss_name == "focal":
            return keras.losses.BinaryFocalCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def keras_metrics(self):
        import keras

        return [keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")]

    def prune_monitor(self):
        return {"roc_auc": "val_auc", "accuracy": "val_accuracy", "log_loss": "val_loss"}.get(self.scorer.name)

    def class_proba(self, pred):
        return np.concatenate([1 - pred, pred], axis=1)

    def from_class_proba(self, proba):
        return proba[:, 1:] / proba.sum(axis=1, keepdims=True)

    def fit_post(self, truth, pred):
        """The threshold on P(positive) that maximises the metric on these rows (when it scores labels), ties going to
        the one nearest 0.5; candidates: 0.5 and the 1st-99th percentiles of the predictions."""
        if self.scorer.needs != "decision":
            return {"threshold": 0.5}
        p = pred[:, 0]
        candidates = np.unique(np.concatenate([[0.5], np.quantile(p, np.linspace(0.01, 0.99, 99))]))
        keys = [(self.scorer.sign * self.scorer.fn(truth, (p >= t).astype(np.int64)), -abs(t - 0.5)) for t in candidates]
        return {"threshold": float(candidates[max(range(len(keys)), key=keys.__getitem__)])}

    def decide(self, pred, post=None):
        return (pred[:, 0] >= (post or {}).get("threshold", 0.5)).astype(np.int64)

    @property
    def writes_probability(self):
        return self.scorer.needs == "proba"

    def submitted(self, pred, post):
        return pred[:, 0] if self.writes_probability else super().submitted(pred, post)

    def parse_submitted(self, values, path, column):
        if not self.writes_probability:
            return super().parse_submitted(values, path, column)
        p = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~((p >= 0) & (p <= 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: line {line(row)}, column {column!r}: {shown(values.iloc[row])} is not a probability "
                            f"in [0, 1]; write P({self.classes[1]})")
        return Submitted(pred=p[:, None])

    def pseudo(self, pred, threshold):
        confidence = np.maximum(pred[:, 0], 1 - pred[:, 0])
        keep = confidence >= threshold
        return keep, self.written(self.decide(pred[keep])), confidence[keep]


class Regression(Task):
    """A number: a linear head with MSE or Huber loss, or the bounded-target recipe (``train.loss = "crossentropy"``:
    the target scaled to 0-1 by ``target_range``, a sigmoid, binary cross-entropy; the PetFinder Pawpularity recipe).
    Submitted values are clipped to ``target_range``."""

    kind = REGRESSION
    table_metrics = ("rmse", "mae")
    activation, head_name, epoch_metric, figure = "linear", "value", "rmse", "scatter"
    default_loss = "mse"

    @property
    def bounded(self) -> bool:
        """True under the bounded-target recipe: the model predicts the target scaled to 0-1."""
        return self.loss_name == "crossentropy"

    @property
    def columns(self):
        return ["value"]

    def encode(self, values, path, column):
        """The target as (N,) float64 values.

        Raises:
            DataError: a value that is empty, not a number, or outside ``competition.target_range``.
        """
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        low, high = self.comp.target_range or (-np.inf, np.inf)
        bad = ~np.isfinite(numbers) | (numbers < low) | (numbers > high)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            within = f" in competition.target_range {self.comp.target_range}" if self.comp.target_range else ""
            raise DataError(f"{path}: line {line(row)}, column {column!r}: {shown(values.iloc[row])} is not a number{within}; "
                            "fix the row or the range")
        return numbers

    def written(self, truth):
        return np.asarray(truth, dtype=np.float64)

    def strata(self, truth):
        """Quantile bins of the target, as many as Sturges' rule gives (1 + log2 N; A. Thakur's ``create_folds``
        uses that count with equal-width bins; quantile bins keep every bin as full as the folds need)."""
        bins = int(1 + np.log2(len(truth)))
        return pd.qcut(truth, bins, labels=False, duplicates="drop").astype(str)

    def describe(self, truth):
        return f"target {truth.min():g}-{truth.max():g}, mean {truth.mean():.4g}, sd {truth.std():.4g}"

    def target_table(self, truth):
        """Quantiles of the target."""
        points = [0, 0.25, 0.5, 0.75, 1]
        return pd.DataFrame({"quantile": points, "target": np.quantile(truth, points)})

    def _scale(self) -> tuple[float, float]:
        low, high = self.comp.target_range
        return low, high - low

    def targets(self, truth):
        values = np.asarray(truth, dtype=np.float32)
        if self.bounded:
            low, span = self._scale()
            values = (values - low) / span
        return values[:, None]

    def loss(self, label_smoothing):
        import keras

        if self.bounded:
            return keras.losses.BinaryCrossentropy()
        return keras.losses.Huber() if self.loss_name == "huber" else keras.losses.MeanSquaredError()

    def head(self, x):
        from keras import layers

        return layers.Dense(1, activation="sigmoid" if self.bounded else "linear", dtype="float32", name=self.head_name)(x)

    def keras_metrics(self):
        import keras

        return [keras.metrics.RootMeanSquaredError(name="rmse")]

    def prune_monitor(self):
        # val_rmse is of the scaled target under the bounded recipe: same direction, so the pruner may follow it
        return "val_rmse" if not self.scorer.greater_is_better else None

    def from_model(self, raw):
        if not self.bounded:
            return raw
        low, span = self._scale()
        return low + span * raw

    def class_weight(self, how, truth):
        return None  # refused at config load for regression

    blend_names = ("equal", "fitted", "caruana")  # no hard vote: nothing to vote for
    tiebreak = "rmse"

    def fit_weights(self, preds, truth):
        """Least squares on the simplex (:func:`compkit.blends.fit_weights_lsq`)."""
        return blends.fit_weights_lsq(preds, np.asarray(truth, dtype=np.float64))

    def stack(self, preds, truth, fold, c):
        """A ridge meta-model (alpha = 1 / ``c``) on the backbones' predictions."""
        values = np.asarray(truth, dtype=np.float64)
        return blends.ridge_oof(preds, values, fold, c), blends.fit_ridge(preds, values, c)

    def apply_stack(self, meta, preds):
        return blends.ridge_predict(meta, preds)

    def decide(self, pred, post=None):
        values = pred[:, 0].astype(np.float64)
        return np.clip(values, *self.comp.target_range) if self.comp.target_range else values

    def parse_submitted(self, values, path, column):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: line {line(row)}, column {column!r}: {shown(values.iloc[row])} is not a number; write numbers")
        return Submitted(decision=numbers)


class Ordinal(Regression):
    """Grades ``classes[0] < ... < classes[K-1]``: a regression head on the grade index, and cut points fitted on OOF to
    maximise the metric (the "optimized rounder" of APTOS 2019's top solutions); plain rounding by default."""

    kind = ORDINAL
    table_metrics = ("qwk", "accuracy", "rmse")
    figure = "confusion"  # of grades

    @property
    def columns(self):
        return ["score"]

    encode, written, strata, describe, target_table = Task.encode, Task.written, Task.strata, Task.describe, Task.target_table
    parse_submitted, class_weight = Task.parse_submitted, Task.class_weight

    def _scale(self):
        return 0.0, float(len(self.classes) - 1)

    def prune_monitor(self):
        return None if self.scorer.greater_is_better else "val_rmse"

    def default_cuts(self) -> np.ndarray:
        """(K-1,) plain rounding: k - 0.5 between grades k-1 and k."""
        return np.arange(1, len(self.classes)) - 0.5

    def decide(self, pred, post=None):
        cuts = np.sort(np.asarray((post or {}).get("cuts", self.default_cuts()), dtype=np.float64))
        return np.searchsorted(cuts, pred[:, 0], side="right").astype(np.int64)

    def fit_post(self, truth, pred):
        """Cut points maximising the metric on these rows: Nelder-Mead from plain rounding (the kept cuts are the
        start's unless they score better)."""
        start = self.default_cuts()
        if self.scorer.needs != "decision":
            return {"cuts": start.tolist()}

        def loss(cuts):
            return -self.scorer.sign * self.scorer.fn(truth, self.decide(pred, {"cuts": cuts}))

        found = np.sort(minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-3, "maxiter": 200 * len(start)}).x)
        return {"cuts": (found if loss(found) < loss(start) else start).round(6).tolist()}


class Multilabel(Task):
    """Any number of ``classes`` (tags) per image, written space-separated in ``target_column`` (Planet 2017): one
    sigmoid per tag, binary cross-entropy (or focal), folds by iterative stratification, and thresholds fitted on OOF,
    one global and then one per tag, to maximise the metric. Probability rows are never renormalised."""

    kind = MULTILABEL
    table_metrics = ("f2_samples", "f1_micro", "f1_macro", "roc_auc", "log_loss")
    activation, figure, epoch_metric = "sigmoid", "tags", "auc"
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)  # thresholds tried, global and per tag

    @property
    def columns(self):
        return [f"p_{c}" for c in self.classes]

    def encode(self, values, path, column):
        """Space-separated tags -> an (N, T) int64 0/1 matrix over ``classes`` (an empty cell: no tag).

        Raises:
            DataError: a tag that is not one of the classes; names the file, line and column.
        """
        index = {str(c): i for i, c in enumerate(self.classes)}
        out = np.zeros((len(values), len(self.classes)), dtype=np.int64)
        for row, cell in enumerate(values.fillna("").astype(str)):
            for tag in cell.split():
                if tag not in index:
                    raise DataError(f"{path}: line {line(row)}, column {column!r}: tag {tag!r} is not one of the classes "
                                    f"{self.classes}; fix the row or competition.classes")
                out[row, index[tag]] = 1
        return out

    def from_columns(self, frame, path):
        """One 0/1 column per tag -> the (N, T) int64 tag matrix (a row may have no tag, or several).

        Raises:
            DataError: a value other than 0 or 1; names the file, line and column.
        """
        return _zero_one(frame, path)

    def written(self, truth):
        names = np.asarray([str(c) for c in self.classes], dtype=object)
        return np.array([" ".join(names[np.flatnonzero(row)]) for row in truth], dtype=object)

    def strata(self, truth):
        """The (N, T) tag matrix itself: folds split it by iterative stratification (Sechidis et al., 2011)."""
        return truth

    def describe(self, truth):
        per_row = truth.sum(axis=1)
        return f"{len(self.classes)} tags, {per_row.min()}-{per_row.max()} per image (mean {per_row.mean():.2f})"

    def target_table(self, truth):
        return pd.DataFrame({"tag": [str(c) for c in self.classes], "rows": truth.sum(axis=0)})

    def targets(self, truth):
        """(N, T) float32 0/1 rows; no rows may come as (0,) (no pseudo-labels)."""
        return np.asarray(truth, dtype=np.float32).reshape(-1, len(self.classes))

    def loss(self, label_smoothing):
        import keras

        if self.loss_name == "focal":
            return keras.losses.BinaryFocalCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def keras_metrics(self):
        import keras

        return [keras.metrics.AUC(multi_label=True, num_labels=len(self.classes), name="auc"),
                keras.metrics.BinaryAccuracy(name="accuracy")]

    def prune_monitor(self):
        return {"roc_auc": "val_auc", "log_loss": "val_loss"}.get(self.scorer.name)

    def class_weight(self, how, truth):
        return None  # refused at config load for multi-label

    def decision_proba(self, decision):
        return decision.astype(np.float64)

    def decide(self, pred, post=None):
        post = post or {}
        thresholds = np.asarray(post.get("thresholds", [post.get("threshold", 0.5)] * pred.shape[1]))
        return (pred >= thresholds).astype(np.int64)

    def fit_post(self, truth, pred):
        """A global threshold from :attr:`grid` and, with ``ensemble.tag_thresholds = "per_tag"``, one per tag from
        there (a coordinate-ascent pass, each kept where it scores better); 0.5 everywhere under a probability metric.
        Global is the default: measured on the Fashion-MNIST canvases (3 folds, cross-fitted), OOF F2 0.692 global
        against 0.665 per tag and 0.533 at 0.5: with a few hundred rows per tag, per-tag thresholds overfit."""
        tags = pred.shape[1]
        if self.scorer.needs != "decision":
            return {"threshold": 0.5, "thresholds": [0.5] * tags}
        best = self._global_threshold(truth, pred)
        thresholds = self._tag_thresholds(truth, pred, best) if self.tag_thresholds == "per_tag" else np.full(tags, best)
        return {"threshold": float(best), "thresholds": thresholds.round(6).tolist()}

    def _value(self, truth, pred, thresholds) -> float:
        return self.scorer.sign * self.scorer.fn(truth, (pred >= thresholds).astype(np.int64))

    def _global_threshold(self, truth, pred) -> float:
        """The :attr:`grid` threshold for every tag at once that scores best (ties: nearest 0.5)."""
        return max(self.grid, key=lambda t: (self._value(truth, pred, np.full(pred.shape[1], t)), -abs(t - 0.5)))

    def _tag_thresholds(self, truth, pred, start: float) -> np.ndarray:
        """(T,) thresholds: from ``start`` everywhere, each tag's in turn set to its best :attr:`grid` value."""
        thresholds = np.full(pred.shape[1], start)
        for tag in range(pred.shape[1]):
            trials = {t: self._value(truth, pred, np.where(np.arange(pred.shape[1]) == tag, t, thresholds)) for t in self.grid}
            top = max(trials, key=lambda t: (trials[t], t == thresholds[tag]))
            if trials[top] > self._value(truth, pred, thresholds):
                thresholds[tag] = top
        return thresholds

    def fit_weights(self, preds, truth):
        """Mean binary cross-entropy over every row and tag, minimised on the simplex."""
        return blends.fit_weights_bce(preds, truth)

    @property
    def normalises_rows(self):
        return False

    def parse_submitted(self, values, path, column):
        return Submitted(decision=self.encode(values, path, column))


class Multihead(Task):
    """Several targets of one image (Bengali.AI 2020: grapheme root, vowel and consonant diacritic), each a head of
    ``[competition.targets.<head>]`` with its own classes, read from the train file's column named as the head: one
    softmax per head on the shared features, concatenated into one output, so fitting, TTA, the prediction files and
    the soft-vote blends see one (N, sum K_h) array; the loss weighs the heads' categorical cross-entropies by their
    ``loss_weight`` (:mod:`compkit.heads`); each head decided by its argmax. Truth and decisions: (N, H) int64."""

    kind = MULTIHEAD
    table_metrics = ("weighted_macro_recall", "exact_match")
    blend_names = ("equal", "fitted", "caruana")  # no hard vote, no stacking (refused at config load)
    figure = "heads"

    @property
    def head_table(self) -> dict[str, Head]:
        """The heads in order, each name -> its classes and loss weight: ``[competition.targets.<head>]``."""
        return dict(self.comp.targets)

    @property
    def heads(self) -> list[str]:
        """The heads' names, in the config's order: the train file's target columns."""
        return list(self.head_table)

    @property
    def head_classes(self) -> list[list]:
        """Each head's classes."""
        return [list(head.classes) for head in self.head_table.values()]

    @property
    def spans(self) -> list[tuple[int, int]]:
        """(start, end) columns of each head in a prediction."""
        return bounds([len(c) for c in self.head_classes])

    def _scorer(self, comp):
        return self._scorer_named(comp.metric or DEFAULT_METRIC[self.kind])

    def _scorer_named(self, name):
        """The scorer ``name``; weighted_macro_recall with ``competition.metric_weights`` (a head not named weighs 1)."""
        weights = np.array([self.comp.metric_weights.get(h, 1.0) for h in self.heads])
        scorer = SCORERS[name]
        return Scorer(name, scorer.greater_is_better, scorer.needs,
                      partial(weighted_macro_recall, weights=weights) if scorer.fn is weighted_macro_recall else scorer.fn,
                      scorer.tasks)

    @property
    def label_columns(self):
        return self.heads

    target_names = label_columns

    def read_target(self, frame, path):
        """(N, H) int64 class indices of the heads' columns.

        Raises:
            DataError: a label that is empty or not one of its head's classes; names the file, line and column.
        """
        return np.stack([self.encode(frame[head], path, head) for head in self.heads], axis=1)

    def encode(self, values, path, column):
        """Head ``column``'s labels as written -> (N,) int64 indices into its classes.

        Raises:
            DataError: a label that is empty or not one of the head's classes; names the file, line and column.
        """
        return _indices(values, list(self.head_table[column].classes), path, column,
                        f"competition.targets.{column}.classes")

    def encode_rows(self, values: pd.Series, heads: np.ndarray, path: Path, column: str) -> np.ndarray:
        """A long submission's labels, row r of head ``heads[r]`` (Bengali's ``row_id,target``) -> (n,) int64 class
        indices into each row's head's classes.

        Raises:
            DataError: a label that is empty or not one of its head's classes; names the file, line and ``column``.
        """
        index = {(h, str(c)): i for h, classes in zip(self.heads, self.head_classes) for i, c in enumerate(classes)}
        mapped = pd.Series([index.get((h, _label_text(v))) for h, v in zip(heads, values)], dtype=object)
        bad = mapped.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            head = heads[row]
            raise DataError(f"{path}: line {line(row)}, column {column!r}: label {shown(values.iloc[row])} is not one of head "
                            f"{head!r}'s classes {list(self.head_table[head].classes)}; fix the row or "
                            f"competition.targets.{head}.classes")
        return mapped.to_numpy(dtype=np.int64)

    def written(self, truth):
        """(N, H) class indices -> (N, H) object array of the heads' labels."""
        return np.stack([np.asarray(c, dtype=object)[truth[:, h]] for h, c in enumerate(self.head_classes)], axis=1)

    def stratum(self, name, truth):
        """Head ``name``'s labels, as text."""
        return self.written(truth)[:, self.heads.index(name)].astype(str)

    def strata(self, truth):
        return self.stratum(self.heads[0], truth)

    def heads_one_hot(self, names: list[str], truth: np.ndarray) -> np.ndarray:
        """(N, sum K_h) int64 0/1: the one-hot classes of the heads ``names`` of (N, H) ``truth``, side by side (their
        folds split iteratively, as a multi-label target's tags)."""
        one_hot = self.targets(truth).astype(np.int64)
        return np.concatenate([one_hot[:, slice(*self.spans[self.heads.index(name)])] for name in names], axis=1)

    def describe(self, truth):
        return f"{len(self.heads)} heads: " + ", ".join(f"{h} {len(c)} classes" for h, c in zip(self.heads, self.head_classes))

    def target_table(self, truth):
        """Rows per class of every head."""
        return pd.DataFrame([{"head": h, "class": str(c), "rows": int(n)} for i, (h, classes) in enumerate(zip(self.heads, self.head_classes))
                             for c, n in zip(classes, np.bincount(truth[:, i], minlength=len(classes)))])

    @property
    def columns(self):
        return [f"p_{h}_{c}" for h, classes in zip(self.heads, self.head_classes) for c in classes]

    def targets(self, truth):
        """(N, sum K_h) float32: the heads' one-hot rows side by side (MixUp and CutMix mix every head by one lambda).
        No rows may come as (0,) (no pseudo-labels)."""
        truth = np.asarray(truth, dtype=np.int64).reshape(-1, len(self.heads))
        return np.concatenate([np.eye(len(c), dtype=np.float32)[truth[:, h]] for h, c in enumerate(self.head_classes)], axis=1)

    def head(self, x):
        """One float32 Dense + softmax per head (``proba_<head>``) on ``x``, concatenated (``proba``)."""
        from keras import layers

        outputs = [layers.Dense(len(c), activation="softmax", dtype="float32", name=f"proba_{h}")(x)
                   for h, c in zip(self.heads, self.head_classes)]
        return layers.Concatenate(dtype="float32", name=self.head_name)(outputs)

    def loss(self, label_smoothing):
        heads_loss, _ = keras_parts()
        return heads_loss([len(c) for c in self.head_classes], [t.loss_weight for t in self.head_table.values()],
                          label_smoothing, focal=self.loss_name == "focal")

    def keras_metrics(self):
        _, accuracy = keras_parts()
        return [accuracy([len(c) for c in self.head_classes])]

    def prune_monitor(self):
        return None  # the logged accuracy is the heads' mean, not the metric

    def class_weight(self, how, truth):
        return None  # refused at config load for multi-head

    def decide(self, pred, post=None):
        """(N, sum K_h) -> (N, H) int64: each head's argmax."""
        return np.stack([pred[:, start:end].argmax(axis=1) for start, end in self.spans], axis=1).astype(np.int64)

    def log_loss(self, truth, pred) -> float:
        """The sum over heads of each head's log loss (natural log, rows renormalised)."""
        return float(sum(SCORERS["log_loss"].fn(truth[:, h], pred[:, start:end]) for h, (start, end) in enumerate(self.spans)))

    def fit_weights(self, preds, truth):
        """Soft-voting weights minimising the sum of the heads' log losses on the simplex (each head's mean negative
        log probability of its truth: :func:`compkit.blends.fit_weights_heads`)."""
        return blends.fit_weights_heads(preds, truth, [start for start, _ in self.spans])

    def caruana_key(self, truth, pred):
        return self.scorer.sign * self.score(truth, pred), -self.log_loss(truth, pred)


class Sequence(Multihead):
    """A number of 1 to ``competition.sequence_length`` symbols (SVHN's house numbers: Goodfellow et al., 2013,
    "Multi-digit Number Recognition from Street View Imagery using Deep Convolutional Neural Networks"), written as
    text in ``target_column`` and submitted so. A multi-head target whose heads are derived, not declared: ``length``
    (classes "1".."L") and ``digit1``..``digitL`` (the symbols, ``competition.classes`` or the digits 0-9, then
    ``none``). Truth and decisions are (N, 1 + L) int64 codes, normalised: "none" exactly past the length, so
    exact_match is whole-number accuracy (the length and every symbol right)."""

    kind = SEQUENCE
    table_metrics = ("exact_match",)
    none = "none"  # a position's class past the number's end
    label_columns = Task.label_columns  # the one number column, not a column per head
    target_names = Task.target_names
    read_target = Task.read_target

    @cached_property
    def head_table(self) -> dict[str, Head]:
        """``length`` (classes "1".."L"), then ``digit1``..``digitL`` (the symbols, then ``none``), loss weight 1."""
        length = self.comp.sequence_length
        table = {"length": Head(classes=[str(n) for n in range(1, length + 1)])}
        return table | {f"digit{p}": Head(classes=[*self.symbols, self.none]) for p in range(1, length + 1)}

    @property
    def symbols(self) -> list[str]:
        """A position's symbols, one character each: ``competition.classes`` as text, default the digits 0-9."""
        return [str(c) for c in self.comp.classes or range(10)]

    @property
    def submitted_heads(self):
        return []  # one column: the number as text

    @property
    def text_columns(self):
        return [self.comp.target_column]

    def encode(self, values, path, column):
        """Numbers as text (``"007"``: 3 symbols) -> (N, 1 + L) int64: the length's index, each position's symbol's,
        the ``none`` class's past the length.

        Raises:
            DataError: a number that is empty, longer than ``sequence_length`` or holds a character that is not a
                symbol; names the file, line and column.
        """
        length, index = self.comp.sequence_length, {c: i for i, c in enumerate(self.symbols)}
        out = np.full((len(values), 1 + length), len(self.symbols), dtype=np.int64)
        for row, value in enumerate(values):
            text = "" if pd.isna(value) else _label_text(value)
            if not 1 <= len(text) <= length or any(c not in index for c in text):
                what = shown(value) if text else "an empty cell"
                raise DataError(f"{path}: line {line(row)}, column {column!r}: {what} is not a number of 1 to "
                                f"{length} symbols of {self.symbols}; fix the row, competition.classes or "
                                "competition.sequence_length")
            out[row, 0] = len(text) - 1
            out[row, 1:1 + len(text)] = [index[c] for c in text]
        return out

    def written(self, truth):
        """(N, 1 + L) codes -> (N,) the numbers as text (object array): the first ``length`` positions' symbols."""
        names = np.asarray(self.symbols, dtype=object)
        return np.array(["".join(names[row[1:2 + row[0]]]) for row in np.asarray(truth, dtype=np.int64)], dtype=object)

    def strata(self, truth):
        """(N,) str: the number's length (each length spread evenly over the folds)."""
        return (np.asarray(truth)[:, 0] + 1).astype(str)

    def stratum(self, name, truth):
        return self.strata(truth)

    def describe(self, truth):
        lengths = np.bincount(truth[:, 0], minlength=self.comp.sequence_length)
        return (f"numbers of 1-{self.comp.sequence_length} symbols of {len(self.symbols)}, "
                f"{lengths.min()}-{lengths.max()} rows per length")

    def decide(self, pred, post=None):
        """(N, sum K_h) -> (N, 1 + L) int64 normalised codes: the length head's argmax; each position inside the
        length its symbols' argmax (never ``none``), ``none`` past it."""
        spans = self.spans
        length = pred[:, slice(*spans[0])].argmax(axis=1)
        symbols = np.stack([pred[:, start:end - 1].argmax(axis=1) for start, end in spans[1:]], axis=1)
        inside = np.arange(len(spans) - 1)[None, :] <= length[:, None]
        return np.concatenate([length[:, None], np.where(inside, symbols, len(self.symbols))], axis=1).astype(np.int64)


TASKS = {task.kind: task for task in (Multiclass, Binary, Regression, Ordinal, Multilabel, Multihead, Sequence)}


def of(comp: Competition, loss: str = "auto", tag_thresholds: str = "global") -> Task:
    """The task of competition ``comp`` (``competition.task``), training with ``loss`` (``train.loss``), deciding tags
    by ``tag_thresholds`` (``ensemble.tag_thresholds``)."""
    return TASKS[comp.task](comp, loss, tag_thresholds)


def for_config(config: Config) -> Task:
    """The task of a resolved config: its competition's, with ``train.loss`` and ``ensemble.tag_thresholds``."""
    return of(config.competition, config.train.loss, config.ensemble.tag_thresholds)
