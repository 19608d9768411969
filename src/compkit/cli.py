"""Command line: ``python -m compkit <stage> --competition NAME --preset NAME --set key=value ...``.

Stages run alone or in order (``all``); ``report`` (not part of ``all``) writes an HTML report of
the runs. The Makefile targets call this. A :class:`CompkitError` ends the run with its one-line
message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the progress lines

from compkit.config import Paths, load_config  # noqa: E402
from compkit.errors import CompkitError  # noqa: E402

STAGES = ("folds", "train", "ensemble", "submit")
EXTRAS = ("report",)  # stages run on their own, after the pipeline; not part of `all`


def default_preset() -> str:
    """``gpu`` when an NVIDIA driver is installed (nvidia-smi on PATH), else ``cpu``."""
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


def parser() -> argparse.ArgumentParser:
    """The argument parser; ``--help`` lists every option."""
    p = argparse.ArgumentParser(prog="compkit", description=__doc__.splitlines()[0])
    p.add_argument(
        "stage", choices=[*STAGES, "all", *EXTRAS],
        help="stage to run; `all` runs folds, train, ensemble, submit; `report` writes runs/<competition>/report/",
    )
    p.add_argument("--competition", default="dacon-cv-2020", help="configs/<competition>.toml (default: %(default)s)")
    p.add_argument("--preset", default=None, help="configs/presets/<preset>.toml: smoke, cpu or gpu (default: gpu with a GPU, else cpu)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the competition's files (default: data/<competition>)")
    p.add_argument("--backbones", default=None, help="comma- or space-separated backbones, replacing train.backbones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder of competition configs (default: %(default)s)")
    p.add_argument("--root", type=Path, default=Path("."), help="project root holding folds/, runs/, submissions/ (default: .)")
    p.add_argument("--name", default=None, help="submit: name of the submission (default: blend-<selected blend>)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the stage(s) named in ``argv``; returns the exit status."""
    args = parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.backbones:
        names = args.backbones.replace(",", " ").split()
        overrides.append("train.backbones=[" + ", ".join(f'"{n}"' for n in names) + "]")
    try:
        config = load_config(args.competition, args.preset or default_preset(), overrides, args.config_dir)
        paths = Paths.for_competition(config.competition.name, args.root, args.data_dir)
        for stage in STAGES if args.stage == "all" else (args.stage,):
            run_stage(stage, config, paths, args)
    except CompkitError as exc:
        print(f"compkit: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_stage(stage: str, config, paths: Paths, args: argparse.Namespace) -> None:
    """Import and run one stage module (imports are lazy: `folds` never loads TensorFlow)."""
    if stage == "folds":
        from compkit import folds

        folds.run(config, paths)
    elif stage == "train":
        from compkit import train

        train.run(config, paths)
    elif stage == "ensemble":
        from compkit import ensemble

        ensemble.run(config, paths)
    elif stage == "submit":
        from compkit import submit

        submit.run(config, paths, args.name)
    elif stage == "report":
        from compkit import report

        report.run(config, paths)
    else:
        raise ValueError(f"unknown stage {stage!r}")
