"""Pipeline benchmark: wall time of each stage of `make folds train ensemble submit`, and the scores it reached.

Runs ``python -m compkit folds``, ``train``, ``ensemble``, ``submit`` one after another, each in its
own process as make runs them (this checkout's src/ first on PYTHONPATH), for the DACON competition
with the cpu preset, in ``--root`` (default: a fresh temporary folder, deleted afterwards) with
``--config-dir`` the repo's configs/. Each stage's output streams through; at the end it prints a
table of stage -> seconds and share of the total, the total, then the selected blend's OOF score
(``runs/<competition>/ensemble/ensemble.json``) and the public/private scores of the submission
(the last row of ``submissions/<competition>/leaderboard.csv``), and a one-line summary.
W&B runs as in make: ``WANDB_MODE`` as set, offline when unset (written under the root).
A benchmark that prints figures, not a test. The cpu preset takes 17-45 minutes on 2 cores;
check the script itself with ``--preset smoke`` (a couple of minutes).

    python bench/pipeline.py [--preset cpu] [--root DIR] [--data-dir DIR] [--backbones ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("folds", "train", "ensemble", "submit")


def stage_command(stage: str, args: argparse.Namespace, root: Path) -> list[str]:
    """``python -m compkit <stage>`` with the benchmark's competition, preset, folders and overrides."""
    command = [
        sys.executable, "-m", "compkit", stage, "--competition", args.competition, "--preset", args.preset,
        "--data-dir", str(args.data_dir.resolve()), "--config-dir", str(args.config_dir.resolve()), "--root", str(root),
    ]
    if args.backbones:
        command += ["--backbones", args.backbones]
    for override in args.overrides:
        command += ["--set", override]
    return command


def stage_env() -> dict[str, str]:
    """This checkout's src/ first on PYTHONPATH; one W&B group for the whole run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env.setdefault("COMPKIT_GROUP", "bench-pipeline-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    return env


def run_stages(args: argparse.Namespace, root: Path) -> tuple[dict[str, float], int]:
    """Run the stages in order, stopping at the first failure; returns ({stage: seconds}, exit status)."""
    seconds, env = {}, stage_env()
    for stage in STAGES:
        print(f"== compkit {stage}", flush=True)
        start = time.perf_counter()
        status = subprocess.run(stage_command(stage, args, root), cwd=root, env=env, check=False).returncode
        seconds[stage] = time.perf_counter() - start
        if status:
            print(f"compkit {stage} failed with exit status {status}", flush=True)
            return seconds, status
    return seconds, 0


def read_scores(root: Path, competition: str) -> dict:
    """The selected blend and its OOF score (ensemble.json), public and private scores (leaderboard's last row)."""
    scores = {}
    blend_path = root / "runs" / competition / "ensemble" / "ensemble.json"
    if blend_path.is_file():
        blend = json.loads(blend_path.read_text())
        scores.update(metric=blend["metric"], selected=blend["selected"], oof=blend["cv"])
    board_path = root / "submissions" / competition / "leaderboard.csv"
    if board_path.is_file():
        with board_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            scores.update(public=float(rows[-1]["public"]), private=float(rows[-1]["private"]))
    return scores


def print_report(seconds: dict[str, float], scores: dict, args: argparse.Namespace) -> None:
    """Stage -> seconds table with the total, the scores, and the one-line summary."""
    total = sum(seconds.values())
    print(f"\npipeline, {args.competition}, preset {args.preset}, W&B {os.environ.get('WANDB_MODE', 'offline')}")
    print(f"{'stage':<10} {'seconds':>9} {'share':>6}")
    for stage, s in seconds.items():
        print(f"{stage:<10} {s:>9.1f} {100 * s / total:>5.1f}%")
    print(f"{'total':<10} {total:>9.1f} ({total / 60:.1f} min)")
    found = ", ".join(f"{k} {scores[k]:.4f}" for k in ("oof", "public", "private") if k in scores)
    if found:
        print(f"{scores.get('metric', 'score')} ({scores.get('selected', '?')} blend): {found}")
    stages = ", ".join(f"{stage} {s:.0f}s" for stage, s in seconds.items())
    print(f"pipeline: {total:.0f}s ({stages}); {found or 'no scores'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--competition", default="dacon-cv-2020")
    p.add_argument("--preset", default="cpu", help="smoke, cpu or gpu (default %(default)s)")
    p.add_argument("--root", type=Path, default=None, help="keep the run's folds/, runs/, submissions/ here (default: a temporary folder)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    p.add_argument("--config-dir", type=Path, default=REPO / "configs")
    p.add_argument("--backbones", default=None, help="comma- or space-separated, replacing train.backbones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, passed to every stage")
    args = p.parse_args()
    root = args.root.resolve() if args.root else Path(tempfile.mkdtemp(prefix="compkit-bench-pipeline-"))
    root.mkdir(parents=True, exist_ok=True)
    if (root / "runs" / args.competition).exists():
        print(f"note: {root / 'runs' / args.competition} exists: train skips its finished folds, so this is not a full run's time")
    print(f"root: {root}{'' if args.root else ' (temporary; --root DIR keeps it)'}", flush=True)
    try:
        seconds, status = run_stages(args, root)
        print_report(seconds, read_scores(root, args.competition), args)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
