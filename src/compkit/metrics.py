"""The scorer registry: every competition metric compkit knows, with its direction, what it scores, and the tasks
it applies to (scikit-learn's scorer registry and AutoGluon's ``Scorer`` objects are the model).

A scorer scores either **probabilities** (``needs = "proba"``: (N, K) class probabilities, K >= 2; a multi-label
task's (N, T) tag probabilities) or **decisions** (``needs = "decision"``: (N,) class indices, (N,) values for
regression, an (N, T) 0/1 tag matrix for multi-label). Which one a prediction becomes is the
task's business (:mod:`compkit.tasks`); the functions here only score. A competition's own metric code (Kaggle's
``score(solution, submission, row_id_column_name)``) is a scorer too: :func:`metric_file`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import (accuracy_score, cohen_kappa_score, f1_score, fbeta_score, log_loss, mean_absolute_error,
                             mean_squared_error, recall_score, roc_auc_score)

from compkit.errors import CompkitError

CLASSIFY, BINARY, REGRESSION, ORDINAL, MULTILABEL, MULTIHEAD = "multiclass", "binary", "regression", "ordinal", "multilabel", "multihead"
SEQUENCE = "sequence"
TASKS = (CLASSIFY, BINARY, REGRESSION, ORDINAL, MULTILABEL, MULTIHEAD, SEQUENCE)


@dataclass(frozen=True)
class Scorer:
    """One metric: ``fn(truth, output) -> float``.

    Attributes:
        name: as in configs and tables (``accuracy``, ``roc_auc``, ...; a metric file's stem).
        greater_is_better: the direction: blends, Optuna, the leaderboard and the report follow it.
        needs: ``"proba"`` ((N, K) float class probabilities) or ``"decision"`` ((N,) class indices or values).
        fn: the function, on (N,) truth (int class indices, or float values) and the output ``needs`` names.
        tasks: the tasks it applies to; a config pairing it with another is refused.
    """

    name: str
    greater_is_better: bool
    needs: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    tasks: tuple[str, ...]

    @property
    def sign(self) -> int:
        """+1 where larger is better, -1 where smaller is: ``sign * value`` is "higher is better"."""
        return 1 if self.greater_is_better else -1

    @property
    def direction(self) -> str:
        """Optuna's study direction: ``"maximize"`` or ``"minimize"``."""
        return "maximize" if self.greater_is_better else "minimize"

    @property
    def label(self) -> str:
        """The name with its direction, for tables and figure axes: ``"log_loss (lower is better)"``."""
        return f"{self.name} ({'higher' if self.greater_is_better else 'lower'} is better)"

    def best(self, values: dict[str, float]) -> str:
        """The key of ``values`` with the best value; ties go to the first key."""
        return max(values, key=lambda k: self.sign * values[k])

    def gain(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old``: positive when better (a drop for a lower-is-better metric)."""
        return self.sign * (new - old)


def _log_loss(truth: np.ndarray, proba: np.ndarray) -> float:
    """sklearn's log loss (natural log) over classes ``0..K-1``, rows renormalised first: float32 softmax rows sum
    to 1 only within ~1e-7, which sklearn warns about. With an (N, T) 0/1 tag matrix as truth (multi-label): the mean
    over tags of each tag's binary log loss, rows never renormalised."""
    if truth.ndim == 2:
        return float(np.mean([log_loss(truth[:, t], proba[:, t], labels=[0, 1]) for t in range(truth.shape[1])]))
    proba = proba / proba.sum(axis=1, keepdims=True)
    return float(log_loss(truth, proba, labels=np.arange(proba.shape[1])))


def _roc_auc(truth: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: of P(class 1) for two classes; one-vs-rest macro AUC for more; the mean column-wise AUC of an (N, T) tag
    matrix (multi-label: RANZCR's metric) (``sklearn.metrics.roc_auc_score``)."""
    if truth.ndim == 2:
        return float(roc_auc_score(truth, proba, average="macro"))
    if proba.shape[1] == 2:
        return float(roc_auc_score(truth, proba[:, 1]))
    proba = proba / proba.sum(axis=1, keepdims=True)
    return float(roc_auc_score(truth, proba, multi_class="ovr", labels=np.arange(proba.shape[1])))


def weighted_macro_recall(truth: np.ndarray, decision: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Bengali.AI's metric: each head's macro recall (``sklearn.metrics.recall_score(average="macro")``), averaged
    with ``weights`` ((H,) float, default equal) over the (N, H) int64 truth and decision matrices."""
    recalls = [recall_score(truth[:, h], decision[:, h], average="macro", zero_division=0) for h in range(truth.shape[1])]
    return float(np.average(recalls, weights=weights))


def exact_match(truth: np.ndarray, decision: np.ndarray) -> float:
    """Share of the (N, H) rows whose every head is right. On a sequence task's normalised codes (the length, then
    each position's symbol, "none" past the length: :meth:`compkit.tasks.Sequence.decide`) this is whole-number
    accuracy: the length and every symbol right (SVHN's sequence accuracy, Goodfellow et al., 2013)."""
    return float((np.asarray(truth) == np.asarray(decision)).all(axis=1).mean())


SCORERS: dict[str, Scorer] = {s.name: s for s in (
    Scorer("accuracy", True, "decision", lambda y, d: float(accuracy_score(y, d)), (CLASSIFY, BINARY, ORDINAL)),
    # macro-F1 over the classes present in the truth or the prediction (a class absent from both is not an F1 of 0)
    Scorer("macro_f1", True, "decision", lambda y, d: float(f1_score(y, d, average="macro", zero_division=0)),
           (CLASSIFY, BINARY, ORDINAL)),
    Scorer("log_loss", False, "proba", _log_loss, (CLASSIFY, BINARY, MULTILABEL)),
    Scorer("roc_auc", True, "proba", _roc_auc, (CLASSIFY, BINARY, MULTILABEL)),
    # multi-label, on (N, T) 0/1 tag matrices: F2 per row, averaged (Planet 2017's metric), and F1 micro / macro over tags
    Scorer("f2_samples", True, "decision", lambda y, d: float(fbeta_score(y, d, beta=2, average="samples", zero_division=0)),
           (MULTILABEL,)),
    Scorer("f1_micro", True, "decision", lambda y, d: float(f1_score(y, d, average="micro", zero_division=0)), (MULTILABEL,)),
    Scorer("f1_macro", True, "decision", lambda y, d: float(f1_score(y, d, average="macro", zero_division=0)), (MULTILABEL,)),
    Scorer("rmse", False, "decision", lambda y, v: float(mean_squared_error(y, v) ** 0.5), (REGRESSION, ORDINAL)),
    Scorer("mae", False, "decision", lambda y, v: float(mean_absolute_error(y, v)), (REGRESSION, ORDINAL)),
    # quadratic weighted kappa (Cohen 1968), the metric of APTOS 2019 and PANDA
    Scorer("qwk", True, "decision", lambda y, d: float(cohen_kappa_score(y, d, weights="quadratic")), (ORDINAL,)),
    # multi-head, on (N, H) class indices: equal head weights here; the task binds competition.metric_weights
    Scorer("weighted_macro_recall", True, "decision", weighted_macro_recall, (MULTIHEAD,)),
    # multi-head: every head right; sequence: the whole number right
    Scorer("exact_match", True, "decision", exact_match, (MULTIHEAD, SEQUENCE)),
)}


# A task's metric when the config names none: the field's usual one (Kaggle's for such competitions).
DEFAULT_METRIC = {CLASSIFY: "accuracy", BINARY: "roc_auc", REGRESSION: "rmse", ORDINAL: "qwk", MULTILABEL: "f2_samples",
                  MULTIHEAD: "weighted_macro_recall", SEQUENCE: "exact_match"}


def problem(metric: str, task: str) -> str | None:
    """Why the built-in ``metric`` cannot score ``task``, or None when it can."""
    if metric not in SCORERS:
        return f"unknown metric {metric!r}; use one of {sorted(SCORERS)} or a metric file ({{ file = ..., greater_is_better = ... }})"
    if task not in SCORERS[metric].tasks:
        fits = sorted(n for n, s in SCORERS.items() if task in s.tasks)
        return f"metric {metric!r} does not apply to task {task!r}; use one of {fits}"
    return None


@cache
def _load_score(file: str, stamp: tuple[int, int]) -> Callable:
    """The ``score`` function of the Python file ``file``, loaded once per process and version (``stamp``: its
    modification time in ns and size, so an edited file is loaded again)."""
    spec = importlib.util.spec_from_file_location(f"compkit_metric_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any exception is one line naming the file
        raise CompkitError(f"{file}: the metric file failed to load ({type(exc).__name__}: {exc}); fix it") from None
    if not callable(getattr(module, "score", None)):
        raise CompkitError(f"{file}: no function score(solution, submission, row_id_column_name); define it")
    return module.score


def call_metric_file(file: str, solution, submission, row_id_column_name: str) -> float:
    """Kaggle's metric call ``score(solution, submission, row_id_column_name)`` on two DataFrames, as a float.

    Raises:
        CompkitError: the file cannot be loaded, ``score`` raises, or returns no finite number; one line naming
            the file and the exception.
    """
    stat = Path(file).stat()
    score = _load_score(str(file), (stat.st_mtime_ns, stat.st_size))
    try:
        value = float(score(solution.copy(), submission.copy(), row_id_column_name))
    except Exception as exc:  # the user's code: any exception is one line naming the file
        raise CompkitError(f"{file}: score() raised {type(exc).__name__}: {exc}; fix the metric file") from None
    if not np.isfinite(value):
        raise CompkitError(f"{file}: score() returned {value}, not a finite number; fix the metric file")
    return value


# Name-based helpers for the built-in metrics on (N, K) class probabilities: the report's bootstrap tables and tests.
GREATER_IS_BETTER = {name: s.greater_is_better for name, s in SCORERS.items()}


def score_table(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and log loss of (N, K) class probabilities against (N,) int class indices (argmax decides);
    the multiclass task's table (:class:`compkit.tasks.Multiclass`)."""
    predicted = proba.argmax(axis=1)
    return {"accuracy": SCORERS["accuracy"].fn(labels, predicted), "macro_f1": SCORERS["macro_f1"].fn(labels, predicted),
            "log_loss": _log_loss(labels, proba)}


def score(metric: str, labels: np.ndarray, proba: np.ndarray) -> float:
    """The built-in ``metric`` of (N, K) class probabilities, argmax deciding where it scores labels."""
    scorer = SCORERS[metric]
    return scorer.fn(labels, proba.argmax(axis=1) if scorer.needs == "decision" else proba)


def sign(metric: str) -> int:
    """:attr:`Scorer.sign` of the built-in ``metric``."""
    return SCORERS[metric].sign


def direction(metric: str) -> str:
    """:attr:`Scorer.direction` of the built-in ``metric``."""
    return SCORERS[metric].direction


def best(metric: str, values: dict[str, float]) -> str:
    """:meth:`Scorer.best` of the built-in ``metric``."""
    return SCORERS[metric].best(values)


def gain(metric: str, new: float, old: float) -> float:
    """:meth:`Scorer.gain` of the built-in ``metric``."""
    return SCORERS[metric].gain(new, old)


def label(metric: str) -> str:
    """:attr:`Scorer.label` of the built-in ``metric``."""
    return SCORERS[metric].label
