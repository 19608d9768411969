"""`make package`: ``bundle/<competition>/``, the selected blend as an offline inference bundle for a code competition.

A code competition reruns a notebook on a hidden test set, offline. The bundle holds what `compkit predict` needs and
nothing else from ``runs/`` (flat: a Kaggle dataset keeps no folders)::

    predict.py                 the entry point (entry.py): python predict.py [--data-dir DIR] [--out FILE]
    model-<backbone>-fold<k>.keras   every fold model of every backbone in the blend (-seed<s> for train.seeds > 1)
    ensemble.json              the ensemble record: backbones, the blend as data (apply), the fitted post-processing (post)
    config.json                the resolved config, each backbone's hyperparameters and model files (read instead of configs/)
    compkit-<version>-py3-none-any.whl   compkit, built offline from its source (pip wheel --no-deps --no-build-isolation)
    manifest.json              size and sha256 of each file above, the wheel's name, the default data folder; written last
    kernel-metadata.json       the Kaggle kernel (`kaggle kernels push -p bundle/<c>`): predict.py, no internet,
                               the bundle's dataset and the competition as inputs (not in the manifest: edit it freely)
    dataset-metadata.json      the bundle as a Kaggle dataset (`kaggle datasets create -p bundle/<c>`; not in the manifest)

The folder is replaced as a whole (:func:`compkit.io.replace_folder`): a failure leaves the previous bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from compkit import console
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.errors import CompkitError
from compkit.io import replace_folder
from compkit.predict import BUNDLE_CONFIG, BUNDLE_ENSEMBLE, Members, bundle_config, from_runs
from compkit.records import sha256_file

MANIFEST = "manifest.json"
KERNEL_METADATA = "kernel-metadata.json"  # the names the kaggle package reads (KaggleApi.KERNEL_METADATA_FILE)
DATASET_METADATA = "dataset-metadata.json"
KAGGLE_INPUT = "/kaggle/input"  # where a Kaggle kernel finds its competition's and datasets' files
NO_OWNER = "YOUR-KAGGLE-USERNAME"  # kernel-metadata.json's owner without bundle.owner


def model_name(backbone: str, fold: int, seed: int) -> str:
    """A model's file name in the bundle: ``model-<backbone>-fold<k>.keras``, ``-seed<s>`` for the extra seeds."""
    return f"model-{backbone}-fold{fold}{f'-seed{seed}' if seed else ''}.keras"


def build_wheel(into: Path) -> Path:
    """A wheel of the running compkit, built offline from its source checkout into ``into``; returns its path.

    The source (pyproject.toml, README.md, src/) is copied to a temporary folder first, so the build leaves nothing in
    the checkout (setuptools writes build/ and *.egg-info beside its input).

    Raises:
        CompkitError: compkit is not run from a source checkout, or pip's build failed (its last line).
    """
    source = Path(__file__).resolve().parents[2]
    if not (source / "pyproject.toml").is_file():
        raise CompkitError(f"{source}: no pyproject.toml (compkit is not run from its source checkout); run `make package` "
                           "in the compkit repository")
    with tempfile.TemporaryDirectory(prefix="compkit-src-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(source / name, tmp)
        shutil.copytree(source / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                               "--quiet", "--wheel-dir", str(into), tmp], capture_output=True, text=True)
    wheels = sorted(into.glob("compkit-*.whl"))
    if done.returncode or len(wheels) != 1:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise CompkitError(f"{source}: pip wheel failed ({last}); install setuptools>=68 into this venv (the wheel is "
                           "built without network or build isolation)")
    return wheels[0]


def kaggle_metadata(config: Config) -> tuple[dict, dict]:
    """kernel-metadata.json and dataset-metadata.json, as the kaggle package reads them (``kernels_push``,
    ``dataset_create_new``): a private-by-default script kernel running predict.py with internet off, its inputs the
    bundle's dataset ``<owner>/<name>-compkit-bundle`` and the competition; the owner is ``bundle.owner``."""
    comp, spec = config.competition, config.bundle
    owner, name = spec.owner or NO_OWNER, comp.name
    dataset = f"{owner}/{name}-compkit-bundle"
    kernel = {"id": f"{owner}/{name}-compkit-predict", "title": f"{name} compkit predict", "code_file": "predict.py",
              "language": "python", "kernel_type": "script", "is_private": spec.is_private, "enable_gpu": spec.enable_gpu,
              "enable_tpu": False, "enable_internet": False, "dataset_sources": [dataset],
              "competition_sources": [comp.slug or name], "kernel_sources": [], "model_sources": []}
    return kernel, {"id": dataset, "title": f"{name} compkit bundle", "licenses": [{"name": "CC0-1.0"}]}


def _fill(folder: Path, members: Members) -> dict:
    """Write the bundle's files into ``folder``, manifest.json after the files it lists; returns the manifest."""
    names = {path: model_name(b, k, s) for b, folds in members.models.items()
             for k, fold in enumerate(folds) for s, path in enumerate(fold)}
    for path, name in names.items():
        shutil.copyfile(path, folder / name)
    (folder / BUNDLE_ENSEMBLE).write_text(json.dumps(members.record, indent=2, sort_keys=True) + "\n")
    (folder / BUNDLE_CONFIG).write_text(json.dumps(bundle_config(members, names), indent=2, sort_keys=True) + "\n")
    shutil.copyfile(Path(__file__).with_name("entry.py"), folder / "predict.py")
    wheel = build_wheel(folder)
    comp = members.config.competition
    manifest = {"competition": comp.name, "wheel": wheel.name, "data_dir": f"{KAGGLE_INPUT}/{comp.slug or comp.name}",
                "files": {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(folder.iterdir())}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_kaggle_metadata(folder, members.config)
    return manifest


def write_kaggle_metadata(folder: Path, config: Config) -> None:
    """Write :func:`kaggle_metadata`'s kernel-metadata.json and dataset-metadata.json into ``folder``."""
    for name, metadata in zip((KERNEL_METADATA, DATASET_METADATA), kaggle_metadata(config)):
        (folder / name).write_text(json.dumps(metadata, indent=2) + "\n")


def run(config: Config, paths: Paths) -> Path:
    """Stage entry point: write ``bundle/<competition>/`` from ``runs/<competition>/``'s verified ensemble; returns it.

    Raises:
        CompkitError: as :func:`compkit.predict.from_runs` (no or a stale ensemble, a model missing) or
            :func:`build_wheel`; the previous bundle is left as it was.
    """
    members, target = from_runs(config, paths), Layout(config, paths).bundle_dir
    written = {}
    replace_folder(target, lambda folder: written.update(_fill(folder, members)))
    size = sum(entry["bytes"] for entry in written["files"].values())
    owner = "" if config.bundle.owner else f"; set bundle.owner to your Kaggle user name in {KERNEL_METADATA}'s ids"
    console.summary(f"package: {target} ({len(written['files'])} files, {size / 2**20:.1f} MiB; the {members.record['selected']} "
                    f"blend of {', '.join(members.record['backbones'])}, compkit {written['wheel']}){owner}")
    return target
