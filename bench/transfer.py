"""Transfer, measured offline: a backbone pretrained by compkit on one real task, fine-tuned on a disjoint one.

Task A: Fashion-MNIST's classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat), ``--pretrain-rows`` train
images (default 30,000: all of them). compkit trains ``--backbone`` on fold 0 of A (`make train`'s code path)
and its ``model.keras`` is the weights file.
Task B: a small competition of classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) in the Kaggle layout:
``--finetune-rows`` train images (default 1,000), the 5,000 test images of those classes with a
``solution.csv`` (Public/Private halves). B is run end to end (folds, train, ensemble, submit) twice with the
same epochs: from scratch, and from A's weights (``freeze_epochs`` head-only epochs, then fine-tuning at
``backbone_lr_scale``, BatchNorm frozen or, ``pretrained-bn``, learning). A finished pretraining is reused and
rows are appended to ``<root>/transfer.csv``. Printed: the mean fold OOF accuracy and the public/private test accuracy of each.
A benchmark that prints figures, not a test; the images come from Debian's dataset-fashion-mnist.

    python bench/transfer.py --root runs-transfer                                   # the full size of issue 18
    python bench/transfer.py --root runs-transfer --pretrain-rows 6000 --pretrain-epochs 4 --epochs 10   # 2 cores
"""

from __future__ import annotations

import argparse
import json
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
from sklearn.model_selection import train_test_split  # noqa: E402

from compkit import folds, train  # noqa: E402
from compkit.artifacts import Layout  # noqa: E402
from compkit.cli import main  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.datasets import fashion_mnist  # noqa: E402

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

CONFIG = """
[competition]
name = "{name}"
target_column = "label"
classes = {classes}
image_shape = [28, 28, 1]
pixel_prefix = "pixel"
submission_columns = ["id", "label"]
pretrained_allowed = true

[folds]
n_splits = 5
stratify = ["label"]
holdout_fraction = 0.05
public_share = 0.5

[train.augment]
shift = 0.05
rotation = 0.0
"""


def _frame(ids, images, labels=None) -> pd.DataFrame:
    out = pd.DataFrame(images.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(784)])
    if labels is not None:
        out.insert(0, "label", labels)
    out.insert(0, "id", ids)
    return out


def write_competition(root: Path, name: str, classes: list[int], rows: int, seed: int, with_test: bool) -> Path:
    """Write ``configs/<name>.toml`` and ``data/<name>/`` (a stratified sample of ``rows`` train images of ``classes``)."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    keep = np.flatnonzero(np.isin(y_train, classes))
    if rows < len(keep):
        keep, _ = train_test_split(keep, train_size=rows, stratify=y_train[keep], random_state=seed)
    names = np.asarray(NAMES, dtype=object)
    data = root / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    _frame(keep + 1, x_train[keep], names[y_train[keep]]).to_csv(data / "train.csv", index=False)
    if with_test:
        test = np.flatnonzero(np.isin(y_test, classes))
        ids = test + 100_001
        _frame(ids, x_test[test]).to_csv(data / "test.csv", index=False)
        pd.DataFrame({"id": ids, "label": NAMES[classes[0]]}).to_csv(data / "sample_submission.csv", index=False)
        public, _ = train_test_split(ids, train_size=0.5, stratify=y_test[test], random_state=seed)
        usage = np.where(np.isin(ids, public), "Public", "Private")
        pd.DataFrame({"id": ids, "label": names[y_test[test]], "Usage": usage}).to_csv(data / "solution.csv", index=False)
    configs = root / "configs"
    (configs / "presets").mkdir(parents=True, exist_ok=True)
    (configs / "presets" / "cpu.toml").write_text((REPO / "configs/presets/cpu.toml").read_text())
    (configs / f"{name}.toml").write_text(CONFIG.format(name=name, classes=json.dumps([NAMES[c] for c in classes])))
    return configs


def pretrain(args, configs: Path) -> Path:
    """Train fold 0 of task A through compkit's own `make train` code path; returns its model.keras."""
    overrides = [f"train.backbones=['{args.backbone}']", f"train.epochs={args.pretrain_epochs}", f"train.patience={args.pretrain_epochs}", *args.set]
    config = load_config("fashion-0-4", "cpu", overrides, configs)
    paths = Paths.for_competition("fashion-0-4", args.root, args.root / "data" / "fashion-0-4")
    layout = Layout(config, paths)
    model = layout.runs.model_path(args.backbone, 0)
    if layout.runs.is_done(args.backbone, 0):
        print(f"pretrain: {model} exists, reused")
        return model
    folds.run(config, paths)
    start = time.perf_counter()
    result = train.train_fold(config, paths, args.backbone, 0)
    print(f"pretrain: {args.backbone} on classes 0-4, {result['lineage']['n_fit']} images, {result['epochs']} epochs: "
          f"fold-0 accuracy {result['oof_accuracy']:.4f} in {time.perf_counter() - start:.0f}s")
    return model


def fine_tune(args, configs: Path, variant: str, overrides: list[str]) -> dict:
    """Run task B end to end in ``<root>/<variant>/``; returns its OOF and test scores and seconds."""
    root, start = args.root / variant, time.perf_counter()
    argv = ["--competition", "fashion-5-9", "--preset", "cpu", "--config-dir", str(configs), "--root", str(root),
            "--data-dir", str(args.root / "data" / "fashion-5-9"), "--backbones", args.backbone, "--set", f"train.epochs={args.epochs}",
            "--set", f"train.patience={args.epochs}", *[f"--set={o}" for o in [*overrides, *args.set]]]
    for stage in ("folds", "train", "ensemble", "submit"):
        assert main([stage, *argv]) == 0, f"{variant}: {stage} failed"
    fold_scores = [json.loads((root / f"runs/fashion-5-9/{args.backbone}/fold{k}/fold.json").read_text())["oof_accuracy"] for k in range(5)]
    board = pd.read_csv(root / "submissions/fashion-5-9/leaderboard.csv").iloc[-1]
    return {"variant": variant, "oof_accuracy": np.mean(fold_scores), "public": board["public"], "private": board["private"],
            "seconds": round(time.perf_counter() - start)}


def main_(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="working folder: data, configs, runs of both tasks")
    p.add_argument("--backbone", default="cnn_small")
    p.add_argument("--pretrain-rows", type=int, default=30_000, help="train images of classes 0-4 (default: all 30,000)")
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--finetune-rows", type=int, default=1_000, help="train images of classes 5-9 (default 1,000)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each fine-tuning run, the same for scratch and pretrained")
    p.add_argument("--freeze-epochs", type=int, default=2)
    p.add_argument("--backbone-lr-scale", type=float, default=0.3)
    p.add_argument("--variants", default="scratch,pretrained,pretrained-bn", help="which of scratch, pretrained, pretrained-bn (BatchNorm learns while fine-tuning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    args = p.parse_args(argv)
    args.root = args.root.resolve()
    configs = write_competition(args.root, "fashion-0-4", [0, 1, 2, 3, 4], args.pretrain_rows, args.seed, False)
    write_competition(args.root, "fashion-5-9", [5, 6, 7, 8, 9], args.finetune_rows, args.seed, True)
    weights = pretrain(args, configs)
    tuned = [f"train.weights='{weights}'", f"train.freeze_epochs={args.freeze_epochs}", f"train.backbone_lr_scale={args.backbone_lr_scale}"]
    variants = {"scratch": [], "pretrained": tuned, "pretrained-bn": [*tuned, "train.finetune_batchnorm=true"]}
    table = pd.DataFrame([fine_tune(args, configs, v, variants[v]) for v in args.variants.split(",")])
    table.to_csv(args.root / "transfer.csv", mode="a", header=not (args.root / "transfer.csv").is_file(), index=False)
    print(f"fine-tune: {args.backbone} on {args.finetune_rows} images of classes 5-9, {args.epochs} epochs, 5 folds; "
          "test: the 5,000 test images of classes 5-9 (public / private halves)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main_()
