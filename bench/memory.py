"""Memory benchmark: train 10 folds in sequence through the real code path and print peak RSS per fold.

Each fold runs as `make train` runs it (``train_fold`` in a fresh process, ``process.in_fresh_process``),
with the smoke preset, cnn_small, 1 epoch, on the real DACON data, in a temporary root. After each fold
it prints the fold process's peak resident memory (recorded in its fold.json) and this (parent)
process's current RSS, then a verdict: "flat" when the last fold's peak is within 10% of the second's
(the first pays one-off costs), else "GROWING". A benchmark that prints figures, not a test.

    python bench/memory.py [--folds 10] [--data-dir ../shared/data/dacon-cv-2020]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "disabled")  # measure training, not W&B's offline writer
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compkit import folds, train  # noqa: E402
from compkit.config import Paths, load_config  # noqa: E402
from compkit.artifacts import Layout  # noqa: E402
from compkit.process import in_fresh_process  # noqa: E402


def current_rss_mb() -> float:
    """This process's resident memory now, in MiB (VmRSS of /proc/self/status; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    args = p.parse_args()
    overrides = [f"folds.n_splits={args.folds}", "train.epochs=1", 'train.backbones=["cnn_small"]']
    config = load_config("dacon-cv-2020", "smoke", overrides, REPO / "configs")
    peaks = []
    with tempfile.TemporaryDirectory() as root:
        paths = Paths.for_competition(config.competition.name, Path(root), args.data_dir)
        folds.run(config, paths)
        print(f"{'fold':>4} {'fold process peak RSS MiB':>26} {'parent RSS MiB':>15} {'seconds':>8}")
        for k in range(args.folds):
            start = time.perf_counter()
            in_fresh_process(f"cnn_small fold {k}", train.train_fold, config, paths, "cnn_small", k)
            peaks.append(Layout(config, paths).runs.read("cnn_small", k)["peak_rss_mb"])
            print(f"{k:>4} {peaks[-1]:>26.1f} {current_rss_mb():>15.1f} {time.perf_counter() - start:>8.1f}", flush=True)
    second, last = peaks[1], peaks[-1]
    verdict = "flat: last within 10% of second" if abs(last - second) <= 0.1 * second else "GROWING"
    print(f"{verdict} (second {second:.1f} MiB, last {last:.1f} MiB, {100 * (last - second) / second:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
