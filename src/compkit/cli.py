"""Command line: ``python -m compkit <stage> --competition NAME --preset NAME --set key=value ...``.

Stages run alone or in order (``all``); ``report`` (not part of ``all``) writes an HTML report of
the runs; ``pseudo`` (not part of ``all``) turns confident test predictions into training rows; ``distill`` teaches
the selected blend to one student model per fold; ``predict`` applies
the ensemble to the test data in ``--data-dir``, ``package`` writes it as an offline bundle and ``rehearse`` times that
bundle offline at the hidden test set's size (code competitions); ``env``
prints the versions, devices and CPU features, and the preset and precision ``all`` would use. The Makefile
targets call this. A :class:`CompkitError` ends the run with its one-line message (URL passwords masked) and
exit status 2, and so does a file that cannot be written (permission, read-only, full disk, file-size limit: the path and
the fix); Ctrl-C ends it with one line and exit status 130. ``clean`` deletes a competition's folds/ and
runs/ without reading its config.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the progress lines

from compkit.config import Paths, check_name, load_config  # noqa: E402
from compkit.errors import CompkitError  # noqa: E402
from compkit.redact import mask  # noqa: E402

STAGES = ("folds", "train", "ensemble", "submit")  # `all` runs these, in this order
# Stages run on their own, not by `all`: name -> (module, function).
EXTRA = {
    "data": ("platform", "data"),
    "check": ("check", "run"),
    "tune": ("tune", "run"),
    "tune-status": ("tune", "status"),
    "pseudo": ("pseudo", "run"),
    "distill": ("distill", "run"),
    "report": ("report", "run"),
    "upload": ("platform", "upload"),
    "upload-bundle": ("kernel", "upload_bundle"),
    "push-kernel": ("kernel", "push_kernel"),
    "lb-sync": ("platform", "lb_sync"),
    "adversarial": ("adversarial", "run"),
    "env": ("devices", "env"),
    "predict": ("predict", "run"),
    "package": ("package", "run"),
    "rehearse": ("rehearse", "run"),
}


def default_preset() -> str:
    """``gpu`` when TensorFlow sees a GPU, else ``cpu`` (see :func:`compkit.devices.default_preset`)."""
    from compkit.devices import default_preset

    return default_preset()


def parser() -> argparse.ArgumentParser:
    """The argument parser; ``--help`` lists every option."""
    p = argparse.ArgumentParser(prog="compkit", description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=[*STAGES, "all", *EXTRA, "clean"], help="stage to run; `all` runs folds, train, ensemble, submit (building the data first when it can); "
                   "`report` writes runs/<competition>/report/")
    p.add_argument("--competition", default="fashion-mnist", help="configs/<competition>.toml (default: %(default)s)")
    p.add_argument("--preset", default=None, help="configs/presets/<preset>.toml: smoke, cpu or gpu (default: gpu with a GPU, else cpu)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the competition's files (default: data/<competition>)")
    p.add_argument("--devices", default=None, help="train/tune: comma-separated GPU ids, one fold or trial process per GPU (default: every GPU)")
    p.add_argument("--backbones", default=None, help="comma- or space-separated backbones, replacing train.backbones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder of competition configs (default: %(default)s)")
    p.add_argument("--root", type=Path, default=Path("."), help="project root holding folds/, runs/, submissions/ (default: .)")
    p.add_argument("--group", default=None, help="W&B group of this experiment (default: $COMPKIT_GROUP, else the start time)")
    p.add_argument("--name", default=None, help="submit: name of the submission, letters, digits, . _ - (default: blend-<selected blend>)")
    p.add_argument("--trials", type=int, default=None, help="tune: finished trials per study, replacing tune.trials")
    p.add_argument("--worker", type=int, default=0, help="tune: this worker's number when several share a study (default 0)")
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="train/tune: local processes, or Ray tasks on "
                   "$RAY_ADDRESS's cluster (a local one without it); sets train.executor, tune.executor and adversarial.executor")
    p.add_argument("--deterministic", action="store_true", help="train: deterministic ops (same seed, same predictions; slower on GPU)")
    p.add_argument("--from-zip", type=Path, default=None, help="data: unpack and check this zip of the competition's files")
    p.add_argument("--file", default=None, help="upload: this submission file instead of the latest")
    p.add_argument("--out", type=Path, default=None, help="predict: the submission to write (default: submission.csv)")
    p.add_argument("--no-tuned", action="store_true", help="train: ignore the best parameters exported by `make tune`")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the stage(s) named in ``argv``; returns the exit status."""
    args = parser().parse_args(argv)
    # Fold and trial processes inherit the group, so one command's W&B runs stay together.
    os.environ["COMPKIT_GROUP"] = args.group or os.environ.get("COMPKIT_GROUP") or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    overrides = list(args.overrides)
    if args.backbones:
        names = args.backbones.replace(",", " ").split()
        overrides.append("train.backbones=[" + ", ".join(f'"{n}"' for n in names) + "]")
    if args.devices:
        overrides.append(f"train.devices=[{', '.join(args.devices.replace(',', ' ').split())}]")
    if args.trials is not None:
        overrides.append(f"tune.trials={args.trials}")
    if args.no_tuned:
        overrides.append("train.use_tuned=false")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    if args.executor:
        overrides += [f"{stage}.executor='{args.executor}'" for stage in ("train", "tune", "adversarial")]
    try:
        check_args(args)
        if args.stage == "clean":  # without the config: a broken or deleted config must not block a clean
            from compkit import clean

            clean.run(args.root, args.competition)
            return 0
        config = load_config(args.competition, args.preset or default_preset(), overrides, args.config_dir)
        paths = Paths.for_competition(config.competition.name, args.root, args.data_dir)
        if args.stage == "all":
            from compkit import datasets

            datasets.ensure(config, paths)
        if args.stage != "data":  # `make data` may be what brings the sample submission
            from compkit.formats import with_sample_columns

            config = with_sample_columns(config, paths.data)
        for stage in STAGES if args.stage == "all" else (args.stage,):
            run_stage(stage, config, paths, args)
    except CompkitError as exc:
        print(f"compkit: error: {mask(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        print(f"compkit: error: {mask(disk_error(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # files are written atomically and trained folds are kept: a rerun goes on
        print("compkit: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


DISK_ERRORS = {  # errno -> the fix, for a file compkit could not write
    errno.EACCES: "permission denied; make the folder writable (chmod u+w) or pass --root <a folder you own>",
    errno.EPERM: "operation not permitted; make the folder writable (chmod u+w) or pass --root <a folder you own>",
    errno.EROFS: "the file system is read-only; pass --root <a writable folder>",
    errno.ENOSPC: "no space left on the disk; free some (`make clean` deletes a competition's runs) or pass --root <a larger disk>",
    errno.EDQUOT: "the disk quota is used up; free some or pass --root <another disk>",
    errno.EFBIG: "file too large for this system's file-size limit (ulimit -f); raise the limit or pass --root <another disk>",
}


def disk_error(exc: OSError) -> str:
    """One line for an OSError in :data:`DISK_ERRORS`: the path (or the project root) and the fix."""
    return f"{exc.filename or 'a file under --root'}: {DISK_ERRORS[exc.errno]}"


def check_args(args: argparse.Namespace) -> None:
    """Refuse a ``--root`` that is not a folder and a ``--name`` that is not a safe file name.

    Raises:
        CompkitError: names the option, its value and the fix.
    """
    if args.root.exists() and not args.root.is_dir():
        raise CompkitError(f"--root {args.root}: is a file, not a folder; pass the project folder (default: .)")
    if args.name is not None:
        check_name(args.name, "--name")


def run_stage(stage: str, config, paths: Paths, args: argparse.Namespace) -> None:
    """Import and run one stage module (imports are lazy: `folds` never loads TensorFlow)."""
    module, function = EXTRA.get(stage, (stage, "run"))
    run = getattr(importlib.import_module(f"compkit.{module}"), function)
    if stage == "submit":
        run(config, paths, args.name)
    elif stage == "tune":
        run(config, paths, args.worker)
    elif stage == "data":
        run(config, paths, args.from_zip)
    elif stage == "upload":
        run(config, paths, args.file)
    elif stage == "predict":
        run(config, paths, args.out)
    else:
        run(config, paths)
