"""Ablation: train one fold per variant through the real code path and print each variant's scores.

Every variant is a list of ``--set`` overrides on top of a base (competition, preset, backbone). All
variants share one set of fold files, so they differ only by their overrides. For each variant, fold
``--fold`` is trained as `make train` trains it (``train_fold`` in a fresh process) and scored on its
validation rows (OOF) and on the holdout's public and private parts, with the seconds it took. Rows are
appended to ``<root>/ablation.csv`` as they finish, so a long ablation can be read while it runs and
resumed (finished variants are skipped). A benchmark that prints figures, not a test.

One fold is noisy: on DACON's fold 0 (328 rows) one standard error of an accuracy near 0.8 is about
2.2 points, on the 410 holdout rows about 2 points. Read differences below ~3 points as noise.

    python bench/ablate.py --root runs-ablation [--variants base,masks] [--backbone cnn_small] [--set k=v]
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

from compkit import folds, train  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.data import load_train  # noqa: E402
from compkit.io import read_proba  # noqa: E402
from compkit.process import in_fresh_process  # noqa: E402

# name -> overrides; each is measured against `base` (the preset as it is)
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "masks": ["train.masks=[4]"],
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
    "cosine": ["train.lr_schedule='cosine'"],
    "ema": ["train.ema=0.99"],
    "tta8": ["train.tta=8"],
    "seeds3": ["train.seeds=3"],
}


def score(paths: Paths, config, variant_dir: Path, holdout: pd.DataFrame, labels: pd.Series) -> dict:
    """Accuracy of the fold's OOF rows and of the holdout's public and private rows."""
    comp = config.competition
    out = {}
    ids, proba = read_proba(variant_dir / "oof.csv", comp.id_key, comp.classes)
    out["oof"] = float(np.mean(proba.argmax(1) == labels.loc[ids].to_numpy()))
    ids, proba = read_proba(variant_dir / "holdout.csv", comp.id_key, comp.classes)
    usage = holdout.set_index(comp.id_key).loc[ids, "Usage"].to_numpy()
    correct = proba.argmax(1) == labels.loc[ids].to_numpy()
    out["holdout"] = float(correct.mean())
    for part in ("Public", "Private"):
        out[part.lower()] = float(correct[usage == part].mean())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="where fold files, runs and ablation.csv go")
    p.add_argument("--competition", default="dacon-cv-2020")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--backbone", default="cnn_small")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every variant")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    args = p.parse_args()
    results = args.root / "ablation.csv"
    done = set(pd.read_csv(results)["variant"]) if results.is_file() else set()
    base = [*args.overrides, f'train.backbones=["{args.backbone}"]', "train.use_tuned=false"]
    for name in args.variants.split(","):
        if name in done:
            continue
        config = load_config(args.competition, args.preset, [*base, *VARIANTS[name]], REPO / "configs")
        paths = Paths.for_competition(config.competition.name, args.root, args.data_dir)
        paths = Paths(paths.root, paths.data, paths.folds, paths.runs / name, paths.submissions)
        if not (paths.folds / "folds.csv").is_file():
            folds.run(config, paths)
        start = time.perf_counter()
        result = in_fresh_process(f"{name}", train.train_fold, config, paths, args.backbone, args.fold)
        train_ = load_train(paths.data, config.competition)
        labels = pd.Series(train_.labels, index=train_.ids)
        holdout = pd.read_csv(paths.folds / "holdout.csv")
        row = {"variant": name, "overrides": " ".join(VARIANTS[name]),
               **score(paths, config, train.fold_dir(paths, args.backbone, args.fold), holdout, labels),
               "epochs": result["epochs"], "seconds": round(time.perf_counter() - start)}
        pd.DataFrame([row]).to_csv(results, mode="a", header=not results.is_file(), index=False)
        print(f"== {name}: " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "variant"), flush=True)
    table = pd.read_csv(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
