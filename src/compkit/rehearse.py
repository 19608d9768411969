"""`make rehearse`: the bundle run as a code competition will run it, before the platform does.

``bundle/<c>/`` (`make package`) is copied to a temporary folder and its predict.py run there in a fresh process, with a
throwaway HOME, no PYTHONPATH and no network (``unshare -n``, or ``unshare -rn`` for a user without the right; where
neither works it says so and runs with the network), on the local test set resampled to ``bundle.rehearse_rows`` rows
(default ``competition.hidden_test_rows``, else the local test set's size): rows (or a test folder's images) drawn
with replacement (seed ``train.seed``) under new ids 1..n, and a sample submission for them. The run is killed at ``competition.time_limit``
seconds. It prints the bundle's images/s per model (its TTA views counted) and the time projected at the hidden size
(the run's wall time x hidden rows / rows run: start-up is scaled too, so the projection errs long), and fails with one
line when the run or the projection exceeds the limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from compkit import console
from compkit.artifacts import Layout
from compkit.config import Competition, Config, Paths
from compkit.data import DataError, load_sample_submission, load_test_ids
from compkit.errors import CompkitError
from compkit.io import read_id_csv

MANIFEST = "manifest.json"  # the bundle's record (package.py), present once the bundle is whole


def local_test_size(comp: Competition, data_dir: Path) -> int:
    """Rows of ``data_dir``'s test set (test file rows, or test folder images), the set a rehearsal draws from.

    Raises:
        DataError: no test file or folder, or an empty one; names it and the fix.
    """
    ids = load_test_ids(data_dir, comp)
    if ids is None or not len(ids):
        where = data_dir / (comp.test_images if comp.layout == "image_folder" else comp.test_file)
        raise DataError(f"{where}: not found or empty; `make rehearse` resamples the local test set: pass "
                        "DATA_DIR=<folder with it>")
    return len(ids)


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``, or a copy where the two are on different file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def resample(comp: Competition, data_dir: Path, rows: int, seed: int, into: Path) -> None:
    """Write into ``into`` a test set of ``rows`` rows drawn with replacement (seed ``seed``) from ``data_dir``'s, and a
    sample submission for it (the values of ``data_dir``'s sample's first row). A test file's rows get ids 1..rows; a
    test folder's images are hard links (copies across file systems) named ``<n><suffix>``, n = 1..rows."""
    into.mkdir(parents=True)
    draw = np.random.default_rng(seed).integers
    if comp.layout == "image_folder":
        names = load_test_ids(data_dir, comp)
        picked = names[draw(0, len(names), rows)]
        ids = [f"{n}{Path(name).suffix}" for n, name in enumerate(picked, start=1)]
        (into / comp.test_images).mkdir()
        for new, name in zip(ids, picked):
            _link(data_dir / comp.test_images / name, into / comp.test_images / new)
    else:
        path = data_dir / comp.test_file
        test = read_id_csv(path, comp.id_column) if comp.id_column else pd.read_csv(path)
        picked = test.iloc[draw(0, len(test), rows)].reset_index(drop=True)
        ids = np.arange(1, rows + 1)
        if comp.id_column:
            picked[comp.id_column] = ids
        picked.to_csv(into / comp.test_file, index=False)
    sample = load_sample_submission(data_dir, comp)
    frame = pd.DataFrame({c: np.repeat(sample[c].iloc[:1].to_numpy(), rows) for c in sample.columns})
    frame[sample.columns[0]] = ids
    frame.to_csv(into / comp.sample_submission, index=False)


def offline_prefix() -> tuple[list[str], str]:
    """The command prefix that runs a process without network (``unshare -n``, else ``unshare -rn``), and a note;
    ``[]`` and why not where neither works here."""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
                return prefix, f"no network ({' '.join(prefix)})"
        except (OSError, subprocess.TimeoutExpired):
            break
    return [], "WITH the network: `unshare -n` is not available here (util-linux, and root or user namespaces)"


def _run(bundle: Path, data: Path, tmp: Path, limit: float) -> tuple[subprocess.CompletedProcess, float, str]:
    """predict.py of a copy of ``bundle`` on ``data`` in a fresh offline process: (the finished run, seconds, network note).

    Raises:
        CompkitError: the run passed ``limit`` seconds (killed), or failed (its last line).
    """
    copy, home = tmp / "bundle", tmp / "home"
    shutil.copytree(bundle, copy)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HOME")} | {"HOME": str(home)}
    prefix, network = offline_prefix()
    command = [*prefix, sys.executable, "predict.py", "--data-dir", str(data), "--out", str(tmp / "submission.csv")]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise CompkitError(f"{bundle}: predict.py ran past competition.time_limit ({limit:g}s) and was stopped; predict "
                           "with fewer models or TTA views (train.tta), on a GPU (bundle.enable_gpu), or set the "
                           "platform's limit in competition.time_limit") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise CompkitError(f"{bundle}: predict.py failed in the rehearsal ({last})")
    return done, time.perf_counter() - start, network


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: rehearse ``bundle/<c>/`` on the resampled local test set (module docstring).

    Raises:
        CompkitError: no bundle; a test set that cannot be resampled; the run failed, was stopped at
            ``competition.time_limit``, or its projection at ``competition.hidden_test_rows`` exceeds it.
    """
    comp, bundle = config.competition, Layout(config, paths).bundle_dir
    if not (bundle / MANIFEST).is_file():
        raise CompkitError(f"{bundle / MANIFEST}: not found; run `make package COMPETITION={comp.name}` first")
    size = local_test_size(comp, paths.data)
    hidden = comp.hidden_test_rows or size
    rows = config.bundle.rehearse_rows or hidden
    with tempfile.TemporaryDirectory(prefix="compkit-rehearse-") as folder:
        tmp = Path(folder)
        resample(comp, paths.data, rows, config.train.seed, tmp / "data")
        done, seconds, network = _run(bundle, tmp / "data", tmp, comp.time_limit)
    for line in done.stdout.splitlines():
        if "images/s" in line:
            console.info(f"rehearse: {line.removeprefix('predict: ')}")
    projected = seconds * hidden / rows
    measured = f"{seconds:.0f}s on {rows} rows, {network}"
    if projected > comp.time_limit:
        raise CompkitError(f"{bundle}: projected {projected:.0f}s on {hidden} hidden test rows ({measured}) exceeds "
                           f"competition.time_limit {comp.time_limit:g}s; predict with fewer models or TTA views "
                           "(train.tta), or on a GPU (bundle.enable_gpu)")
    console.summary(f"rehearse: {bundle} projected {projected:.0f}s on {hidden} hidden test rows of the "
                    f"{comp.time_limit:g}s limit ({measured})")
