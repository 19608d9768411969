"""`compkit predict` / `make predict`: the selected blend applied to any test data in the competition's layout.

A code competition reruns the submission on a hidden test set, so the ensemble must predict data it has never seen,
offline. What it applies is what `make train` and `make ensemble` made: every fold model of every backbone in
ensemble.json (``model*.keras``), each with the TTA views train predicted test.csv with
(:func:`compkit.fitting.predict_rows`, the same seed), the fold models averaged per backbone, the selected blend as
ensemble.json's ``apply`` records it (:meth:`compkit.tasks.Task.apply_blend`, the call that wrote ensemble/test.csv),
the fitted post-processing (``post``), the sample submission's format (:func:`compkit.formats.to_frame`), validated
as `make submit` validates (:func:`compkit.submit.validate_submission`). On the test set `make train` predicted, its
submission is `make submit`'s.

The members come from ``runs/`` (:func:`from_runs`, verified by :meth:`compkit.artifacts.ensemble.EnsembleSet.read`) or
from a bundle folder `make package` wrote (:func:`from_bundle`, its manifest checked by the bundle's predict.py
first). The submission is written atomically, after every check: a failure writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.config import Competition, Config, Hyper, Paths
from compkit.data import DataError, Images, check_sample_ids, load_sample_submission, load_test
from compkit.devices import augment_where
from compkit.errors import CompkitError
from compkit.fitting import model_seed, predict_rows
from compkit.formats import image_ids, in_sample_rows, submission_format, submission_ids, to_frame
from compkit.io import read_json, write_csv
from compkit.submit import in_sample_order, validate_submission

DEFAULT_OUT = Path("submission.csv")
BUNDLE_CONFIG = "config.json"  # in a bundle: the resolved config, each backbone's hyperparameters and model files
BUNDLE_ENSEMBLE = "ensemble.json"


@dataclass(frozen=True)
class Members:
    """What inference applies.

    Attributes:
        config: the resolved config the models were trained with.
        record: ensemble.json: ``backbones`` (M, in blend order), ``apply`` (the blend), ``post``, ``selected``.
        models: backbone -> per fold, per seed (``train.seeds``): the ``.keras`` file.
        hypers: backbone -> the hyperparameters its folds were trained with (fold.json's ``hyper``: tuned ones included).
    """

    config: Config
    record: dict
    models: dict[str, list[list[Path]]]
    hypers: dict[str, Hyper]


def _require_apply(record: dict, source: Path, fix: str) -> dict:
    """``record`` when it holds the blend as data (``apply``), else a one-line error naming ``source`` and ``fix``."""
    if not isinstance(record.get("apply"), dict):
        raise CompkitError(f"{source}: no 'apply' (the blend as data; made by an older compkit); {fix}")
    return record


def from_runs(config: Config, paths: Paths) -> Members:
    """The members of ``runs/<c>/``: ensemble.json (verified: :meth:`compkit.artifacts.ensemble.EnsembleSet.read`) and each
    of its backbones' fold models and hyperparameters (fold.json).

    Raises:
        CompkitError: no or a stale ensemble, an ensemble.json without ``apply``, a fold not done or a model file missing;
            names the file and the `make` command that remakes it.
    """
    layout = Layout(config, paths)
    again = f"rerun `make ensemble COMPETITION={config.competition.name}`"
    record = _require_apply(layout.ensemble.read(), layout.ensemble.record, again)
    models, hypers = {}, {}
    for backbone in record["backbones"]:
        folds = [layout.runs.read(backbone, k) for k in range(config.folds.n_splits)]
        hypers[backbone] = Hyper.model_validate(folds[0]["hyper"])
        models[backbone] = [[layout.runs.model_path(backbone, k, s) for s in range(fold.get("seeds", 1))] for k, fold in enumerate(folds)]
        for path in (p for fold in models[backbone] for p in fold):
            if not path.is_file():
                raise CompkitError(f"{path}: not found; delete {path.parent} and rerun `make train ensemble "
                                   f"COMPETITION={config.competition.name}`")
    return Members(config, record, models, hypers)


def bundle_config(members: Members, names: dict[Path, str]) -> dict:
    """A bundle's config.json: the resolved ``config``, each backbone's ``hyper`` and its model files per fold and seed,
    by their names in the bundle (``names``: source path -> file name)."""
    return {"config": members.config.model_dump(mode="json"),
            "hypers": {b: h.model_dump(mode="json") for b, h in members.hypers.items()},
            "models": {b: [[names[p] for p in fold] for fold in folds] for b, folds in members.models.items()}}


def from_bundle(folder: Path) -> Members:
    """The members of a bundle folder (`make package`): config.json and ensemble.json, read as they are (the bundle's
    predict.py checks every file against manifest.json before it calls this).

    Raises:
        CompkitError: a file is missing or not a JSON object, or ensemble.json has no ``apply``.
    """
    fix = "rebuild the bundle with `make package` and copy it again"
    spec = read_json(folder / BUNDLE_CONFIG, fix)
    record = _require_apply(read_json(folder / BUNDLE_ENSEMBLE, fix), folder / BUNDLE_ENSEMBLE, fix)
    models = {b: [[folder / name for name in fold] for fold in folds] for b, folds in spec["models"].items()}
    hypers = {b: Hyper.model_validate(h) for b, h in spec["hypers"].items()}
    return Members(Config.model_validate(spec["config"]), record, models, hypers)


def _read_test(comp: Competition, data_dir: Path) -> Images:
    """The test split of ``data_dir``, decoded in memory (no cache: the folder may be read-only, as on Kaggle).

    Raises:
        DataError: no such folder, or no test file or folder in it; names it and the fix.
    """
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder; pass --data-dir the folder holding {comp.test_file} and {comp.sample_submission}")
    test = load_test(data_dir, comp)
    if test is None:
        what = comp.test_images if comp.layout == "image_folder" else comp.test_file
        raise DataError(f"{data_dir / what}: not found; pass --data-dir the folder holding the competition's test data")
    return test


def backbone_predictions(members: Members, backbone: str, test: Images) -> np.ndarray:
    """(N, D) float64: the mean over ``backbone``'s fold models (each the mean over its seeds) of their TTA predictions
    of every ``test`` row, as `make train` predicted test.csv. Prints each model's images/s (images x views / s)."""
    from compkit.backbones import load_model  # TensorFlow is imported here, not by `compkit predict`'s error paths

    config, hyper, task = members.config, members.hypers[backbone], tasks.for_config(members.config)
    where, rows, folds = augment_where(config.train.augment_on, hyper.augment), np.arange(len(test.ids)), []
    for k, files in enumerate(members.models[backbone]):
        pred = np.zeros((len(rows), task.width), np.float32)
        for s, path in enumerate(files):
            start = time.perf_counter()
            model = load_model(path, compile=False)
            pred += predict_rows(model, test, rows, hyper, model_seed(config, k, s), task, where) / len(files)
            seconds = time.perf_counter() - start
            console.info(f"predict: {backbone} fold {k}{f' seed {s}' if s else ''}: {len(rows)} images x {hyper.tta} views "
                         f"in {seconds:.1f}s ({len(rows) * hyper.tta / seconds:.0f} images/s, model load included)")
        folds.append(pred.astype(np.float64))
    return np.mean(folds, axis=0)


def blended(members: Members, test: Images) -> np.ndarray:
    """(N, D) float64: the selected blend (ensemble.json's ``apply``) of the backbones' predictions of ``test``."""
    preds = np.stack([backbone_predictions(members, b, test) for b in members.record["backbones"]])
    return tasks.for_config(members.config).apply_blend(members.record["apply"], preds)


def submission(members: Members, data_dir: Path, out: Path) -> pd.DataFrame:
    """The submission of ``data_dir``'s test data: the sample submission's ids, order and columns, validated as `make
    submit` validates (the messages name ``out``). Returns a DataFrame; writes nothing.

    Raises:
        DataError: no data folder, test data or sample submission; a sample id that is not a test id.
        SubmissionError: the submission does not match the sample.
    """
    config = members.config
    comp, task = config.competition, tasks.for_config(config)
    test = _read_test(comp, data_dir)
    sample, fmt = load_sample_submission(data_dir, comp), submission_format(data_dir, comp)
    check_sample_ids(sample, submission_ids(fmt, test.ids), data_dir, comp)
    order = image_ids(sample, fmt, data_dir / comp.sample_submission)
    pred = in_sample_order(order, test.ids, blended(members, test))
    frame = in_sample_rows(to_frame(fmt, order, pred, task, members.record.get("post")), sample, fmt)
    validate_submission(frame, sample, comp, str(out))
    return frame


def write(members: Members, data_dir: Path, out: Path) -> Path:
    """Predict ``data_dir``'s test data and write the submission to ``out`` (atomically, after every check); returns ``out``."""
    start = time.perf_counter()
    frame = submission(members, Path(data_dir), Path(out))
    write_csv(frame, Path(out))
    n_models = sum(len(fold) for folds in members.models.values() for fold in folds)
    console.summary(f"predict: {out} ({len(frame)} rows) from the {members.record['selected']} blend of "
                    f"{', '.join(members.record['backbones'])} ({n_models} models) in {time.perf_counter() - start:.0f}s")
    return Path(out)


def run(config: Config, paths: Paths, out: Path | None = None) -> Path:
    """Stage entry point: ``runs/<c>/``'s blend on ``paths.data``'s test data, written to ``out`` (default submission.csv)."""
    return write(from_runs(config, paths), paths.data, out or DEFAULT_OUT)


def run_bundle(folder: Path, data_dir: Path, out: Path) -> Path:
    """A bundle's blend (:func:`from_bundle`) on ``data_dir``'s test data, written to ``out``: the bundle's predict.py."""
    return write(from_bundle(Path(folder)), data_dir, out)
