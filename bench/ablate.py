"""Ablation: train one fold per variant through the real code path and print each variant's scores.

Every variant is a list of ``--set`` overrides on top of a base (competition, preset, backbone). Variants
with the same fold count and sample size (``folds.n_splits``, ``folds.max_rows``) share one set of fold files,
so they differ only by their overrides. For each variant, fold
``--fold`` is trained as `make train` trains it (``train_fold`` in a fresh process) and scored on its
validation rows (OOF) and on the holdout's public and private parts (for a competition that ships its test
labels, on test against its solution file), with the seconds it took. Rows are
appended to ``<root>/ablation.csv`` as they finish, with the same scores under ``--tta`` views per
image (``*_tta`` columns, computed from the saved models, so TTA's effect on every variant costs no retraining), so a long ablation can be read while it runs and
resumed (finished variants are skipped). A benchmark that prints figures, not a test.

One fold is noisy: on DACON's fold 0 (328 rows) one standard error of an accuracy near 0.8 is about
2.2 points, on the 410 holdout rows about 2 points. Read differences below ~3 points as noise.

    python bench/ablate.py --root runs-ablation [--variants base,masks] [--backbone cnn_small] [--set k=v]
                           [--competition fashion-mnist --data-dir data/fashion-mnist] [--variant 'name=k=v;k=v']
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from compkit import fitting, folds, train  # noqa: E402
from compkit.artifacts import Layout  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.formats import load_solution, submission_format  # noqa: E402
from compkit.augment import predict_tta  # noqa: E402
from compkit.backbones import load_model  # noqa: E402
from compkit.process import in_fresh_process  # noqa: E402

# name -> overrides; each is measured against `base` (the preset as it is)
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "bilinear": ["train.augment.interpolation='bilinear'"],
    "masks2": ["train.masks=[4, 140]"],
    "letter": ['train.embed=["letter"]'],
    "upscale56": ["train.input_size=56"],
    "wide2": ["train.width=2.0"],
    "shear_zoom": ["train.augment.shear=0.15", "train.augment.zoom=0.1"],
    "elastic": ["train.augment.elastic=0.5"],
    "erasing": ["train.augment.erasing=0.5"],
    "mixup": ["train.augment.mixup=0.2"],
    "cutmix": ["train.augment.cutmix=1.0"],
    "smooth": ["train.label_smoothing=0.1"],
    "smooth2": ["train.label_smoothing=0.2"],  # airbench's (Jordan, 2024)
    "sgd_b256": ["train.optimizer='sgd'", "train.learning_rate=0.2", "train.batch_size=256"],  # Nesterov SGD, larger batches
    "epochs6": ["train.epochs=6", "train.patience=6"],
    "cosine": ["train.lr_schedule='cosine'"],
    "ema": ["train.ema=0.99"],
    "whiten2": ["train.whiten=2"],  # airbench's frozen patch-whitening first convolution (Jordan, 2024)
    "whiten3": ["train.whiten=3"],
    "dirac": ["train.dirac=true"],  # airbench's identity initialisation
    "seeds3": ["train.seeds=3"],
    "folds10": ["folds.n_splits=10"],
}


def accuracies(oof: tuple, scored: tuple, truth: pd.DataFrame, labels: pd.Series, suffix: str = "") -> dict:
    """Accuracy of the fold's OOF rows and of the scored rows (holdout, or test with a solution file), all and
    their public and private parts; ``oof`` and ``scored`` are (ids, (n, K) probabilities), ``truth`` has
    ``label`` (class index) and ``Usage`` indexed by id."""
    out = {f"oof{suffix}": float(np.mean(oof[1].argmax(1) == labels.loc[oof[0]].to_numpy()))}
    usage = truth.loc[scored[0], "Usage"].to_numpy()
    correct = scored[1].argmax(1) == truth.loc[scored[0], "label"].to_numpy()
    out[f"holdout{suffix}"] = float(correct.mean())
    for part in ("Public", "Private"):
        out[f"{part.lower()}{suffix}"] = float(correct[usage == part].mean())
    return out


def tta_probas(config, data, variant_dir: Path, backbone: str, n: int, on_test: bool) -> tuple[tuple, tuple]:
    """OOF and holdout (or test) (ids, probabilities) of the fold's saved models (every seed) with ``n`` TTA views each."""
    hyper = config.hyper(backbone)
    models = [load_model(m) for m in sorted(variant_dir.glob("model*.keras"))]
    parts = []
    for split, rows in ((data.train, data.val), (data.test, np.arange(len(data.test.ids))) if on_test else (data.train, data.held)):
        inputs = fitting.model_inputs(split, rows, hyper)
        proba = np.mean([predict_tta(m, inputs, hyper.augment, n, seed=i, batch_size=hyper.batch_size) for i, m in enumerate(models)], axis=0)
        parts.append((split.ids[rows], proba))
    return parts[0], parts[1]


def score(config, paths: Paths, args) -> dict:
    """The variant's accuracies as trained and with ``args.tta`` TTA views (``*_tta``): on the holdout, or, for a
    competition that ships its test labels (no holdout), on test against the solution file."""
    comp, layout = config.competition, Layout(config, paths)
    out = layout.runs.dir(args.backbone, args.fold)
    data = fitting.fold_data(config, paths, args.fold)
    labels = pd.Series(data.train.labels, index=data.train.ids)
    solution = load_solution(paths.data, comp, submission_format(paths.data, comp))
    on_test = len(data.held) == 0 and solution is not None
    if on_test:
        truth = solution.set_index(comp.id_key)
    else:
        holdout = pd.read_csv(paths.folds / "holdout.csv").set_index(comp.id_key)
        truth = holdout.assign(label=labels.loc[holdout.index].to_numpy())
    oof, scored = (layout.runs.read_proba(args.backbone, args.fold, f) for f in ("oof.csv", "test.csv" if on_test else "holdout.csv"))
    return {**accuracies(oof, scored, truth, labels),
            **accuracies(*tta_probas(config, data, out, args.backbone, args.tta, on_test), truth, labels, "_tta")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="where fold files, runs and ablation.csv go")
    p.add_argument("--competition", default="dacon-cv-2020")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--backbone", default="cnn_small")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--tta", type=int, default=8, help="views per image of the *_tta scores")
    p.add_argument("--variant", dest="adhoc", action="append", default=[], metavar="NAME=K=V;K=V",
                   help="an ad-hoc variant: a name and its overrides separated by ';' (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every variant")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    args = p.parse_args()
    results = args.root / "ablation.csv"
    table = pd.read_csv(results) if results.is_file() else pd.DataFrame(columns=["variant"])
    adhoc = {n: o.split(";") for n, _, o in (v.partition("=") for v in args.adhoc)}
    variants, names = {**VARIANTS, **adhoc}, list(adhoc) or args.variants.split(",")
    base = [*args.overrides, f'train.backbones=["{args.backbone}"]', "train.use_tuned=false"]
    for name in names:
        config = load_config(args.competition, args.preset, [*base, *variants[name]], REPO / "configs")
        paths = Paths.for_competition(config.competition.name, args.root, args.data_dir)
        # fold files per fold count and sample size (the holdout is carved first, so it is the same for every count)
        folds_dir = args.root / f"folds-k{config.folds.n_splits}-r{config.folds.max_rows}" / config.competition.name
        paths = Paths(paths.root, paths.data, folds_dir, paths.runs / name, paths.submissions)
        done = table["variant"].eq(name)
        if done.any() and "oof_tta" in table and table.loc[done, "oof_tta"].notna().all():
            continue
        if not (paths.folds / "folds.csv").is_file():
            folds.run(config, paths)
        if not done.any():
            start = time.perf_counter()
            result = in_fresh_process(f"{name}", train.train_fold, config, paths, args.backbone, args.fold)
            extra = {"epochs": result["epochs"], "seconds": round(time.perf_counter() - start)}
        else:  # trained before the *_tta columns existed: score its saved models
            extra = table.loc[done, ["epochs", "seconds"]].iloc[0].to_dict()
        row = {"variant": name, "overrides": " ".join(variants[name]), **score(config, paths, args), **extra}
        table = pd.concat([table[~done], pd.DataFrame([row])], ignore_index=True)
        table.to_csv(results, index=False)
        print(f"== {name}: " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "variant"), flush=True)
    table = pd.read_csv(results)
    print(table.drop(columns="overrides").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
