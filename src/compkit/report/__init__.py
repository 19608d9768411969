"""Report (``make report``): one self-contained HTML page on a competition's runs, after ensemble/submit.

Reads only what the stages wrote, each file verified against its record (compkit.artifacts): ``folds/<competition>/{folds,holdout}.csv``, every backbone's
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

Every score is in the competition's metric and direction (``metrics.best``, ``metrics.gain``), and
says which. Modules: ``stats`` (bootstrap and shake-up in any metric), ``loaders`` (the stage
files), ``figures`` (matplotlib), ``platform`` (CV against the platform's scores), ``page`` (the HTML
sections and :func:`run`).
"""

from compkit.report.page import run
from compkit.report.stats import (bootstrap_interval, flip_probability, fold_spread, metric_flip_probability, metric_interval,
                                  resampled_scores, true_class_correlation)

__all__ = ["bootstrap_interval", "flip_probability", "fold_spread", "metric_flip_probability", "metric_interval",
           "resampled_scores", "run", "true_class_correlation"]
