"""The entry point of an offline inference bundle: `make package` copies this file to ``bundle/<c>/predict.py``.

Run inside the bundle folder, or as the Kaggle kernel whose inputs hold the bundle as a dataset::

    python predict.py [--data-dir DIR] [--out FILE] [--bundle DIR]

Defaults: the data folder manifest.json names (``/kaggle/input/<slug>``), ``submission.csv``, and the bundle in this
file's folder, else the one folder under ``/kaggle/input`` holding a manifest.json. Before anything is read from the
bundle, every file manifest.json lists is checked (size and sha256) with the standard library only: a changed byte
ends the run with one line naming the file and the fix. Then the bundle's compkit wheel is installed (``pip install
--no-index --no-deps``) into a temporary folder put first on ``sys.path``, so the compkit that runs is the bundle's
whatever else is installed (its folder is printed), and :func:`compkit.predict.run_bundle` writes the submission.
It needs compkit's dependencies (TensorFlow, Keras, pandas, scikit-learn, pydantic: Kaggle's image has them), no network.
Exit status 0, or 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
KAGGLE_INPUT = Path("/kaggle/input")
FIX = "rebuild the bundle with `make package` and copy or upload it again"


class BundleError(Exception):
    """A bundle that cannot run: its message is one line naming the file and the fix."""


def find_bundle(given: str | None) -> Path:
    """The bundle folder: ``given``, else this file's folder when it holds manifest.json, else the first folder up to three
    levels under ``/kaggle/input`` that does (a Kaggle kernel's script is a copy away from its dataset)."""
    if given:
        return Path(given)
    here = Path(__file__).resolve().parent
    if (here / MANIFEST).is_file():
        return here
    found = sorted(p.parent for depth in ("*", "*/*", "*/*/*") for p in KAGGLE_INPUT.glob(f"{depth}/{MANIFEST}"))
    if not found:
        raise BundleError(f"{here / MANIFEST}: not found, nor under {KAGGLE_INPUT}; run predict.py in the bundle folder or pass --bundle DIR")
    return found[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(folder: Path) -> dict:
    """manifest.json of ``folder``, after checking each file it lists: present, its size and sha256 as recorded.

    Raises:
        BundleError: no readable manifest, a file missing, or a file whose bytes differ; names the file and the fix.
    """
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"{path}: missing or not a bundle manifest; {FIX}") from None
    for name, entry in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{file}: missing from the bundle; {FIX}")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise BundleError(f"{file}: differs from its sha256 in {MANIFEST} (changed, or cut short in transfer); {FIX}")
    return manifest


def install_wheel(wheel: Path, target: Path) -> None:
    """Install ``wheel`` (no index, no dependencies) into ``target`` and put ``target`` first on ``sys.path``.

    Raises:
        BundleError: pip failed; names the wheel and pip's last line.
    """
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--target",
                           str(target), str(wheel)], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BundleError(f"{wheel}: pip could not install it ({last}); run with a Python that has pip, or {FIX}")
    sys.path.insert(0, str(target))


def main(argv: list[str] | None = None) -> int:
    """Check the bundle, install its compkit, write the submission; returns the exit status."""
    p = argparse.ArgumentParser(prog="predict.py", description="compkit's offline inference bundle: the blend on a test set")
    p.add_argument("--data-dir", default=None, help="folder of the competition's test data (default: the manifest's data_dir)")
    p.add_argument("--out", default="submission.csv", help="the submission to write (default: %(default)s)")
    p.add_argument("--bundle", default=None, help="the bundle folder (default: this file's, else under /kaggle/input)")
    args = p.parse_args(argv)
    try:
        folder = find_bundle(args.bundle)
        manifest = check_manifest(folder)
        with tempfile.TemporaryDirectory(prefix="compkit-wheel-") as target:
            install_wheel(folder / manifest["wheel"], Path(target))
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, as the CLI silences it
            import compkit
            from compkit.errors import CompkitError
            from compkit.predict import run_bundle

            print(f"predict.py: compkit from {Path(compkit.__file__).parent}", flush=True)
            try:
                run_bundle(folder, Path(args.data_dir or manifest["data_dir"]), Path(args.out))
            except CompkitError as exc:
                raise BundleError(str(exc)) from None
    except BundleError as exc:
        print(f"predict.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
