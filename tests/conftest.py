"""Shared fixtures: the real DACON files, read where they are (``../shared`` beside the repo)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from filelock import FileLock

from compkit.config import Paths, load_config
from compkit.datasets import DEBIAN_FASHION_MNIST, fashion_mnist

REPO = Path(__file__).resolve().parents[1]
DACON = Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared" / "data" / "dacon-cv-2020"))


def pytest_configure(config) -> None:
    """Give each xdist worker, and every process it starts, ``cores // workers`` TensorFlow and OpenMP threads.

    Each worker's TensorFlow would otherwise take every core: two concurrent regression runs on this 2-core
    machine took 71 s that way and 53 s with one thread each. The hook runs in each worker before any test
    module imports TensorFlow; compkit's own slots (fold workers, ``train.deterministic``) still set theirs.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(var, threads)


ARTEFACT_DIRS = ("folds", "runs", "submissions")


def tree_digest(root: Path, parts: tuple[str, ...] = ARTEFACT_DIRS) -> dict[str, str]:
    """sha256 hex of every file under ``root/<part>`` for each of ``parts``, keyed by path relative to ``root``.

    Folders map to ``"dir"``, so a folder a failed command left behind shows too. Compare two calls to
    prove that a command changed, added or removed nothing there.
    """
    out = {}
    for part in parts:
        for path in sorted((Path(root) / part).rglob("*")):
            key = str(path.relative_to(root))
            out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def snapshot(root: Path) -> dict:
    """Every file under ``root``: relative path -> (size, mtime in ns). Equal before and after: nothing was touched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def one_line_error(capsys, code: int, *, absent: tuple[str, ...] = ()) -> str:
    """Assert that a command failed the way compkit's errors do, and return its stderr line (newline included).

    Exit status ``code`` 2 and exactly one line on stderr, ``compkit: error: ...``; none of ``absent`` (e.g. a
    secret) anywhere in stdout or stderr.
    """
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2 and err.count("\n") == 1 and err.startswith("compkit: error: "), err
    for text in absent:
        assert text not in captured.out + captured.err
    return err


def dacon_config(*overrides: str, preset: str | None = "smoke"):
    """The DACON config (configs/dacon-cv-2020.toml) with ``preset`` and ``--set``-style ``overrides``."""
    return load_config("dacon-cv-2020", preset, list(overrides), REPO / "configs")


def read_oof(root: Path, backbone: str, folds: int, competition: str = "dacon-cv-2020") -> pd.DataFrame:
    """A backbone's OOF rows under ``root``, read from each fold's oof.csv, with their ``fold``, sorted by id (index 0..n-1)."""
    return pd.concat(
        pd.read_csv(root / f"runs/{competition}/{backbone}/fold{k}/oof.csv").assign(fold=k) for k in range(folds)
    ).sort_values("id").reset_index(drop=True)


def with_root(argv: list[str], root: Path) -> list[str]:
    """CLI options ``argv`` with ``--root`` pointing at ``root`` instead."""
    at = argv.index("--root")
    return [*argv[:at], "--root", str(root), *argv[at + 2 :]]


def write_image_competition(root: Path, name: str, toml: str, columns: list[str], rows: list, tests: list,
                            guess: str) -> tuple[Path, Path]:
    """An image-folder competition's tables and config folder under ``root``: ``data/labels.csv`` (``columns``: file,
    target) of the ``rows``, ``solution.csv`` of the ``tests`` alternating Public/Private, ``sample_submission.csv``
    predicting ``guess`` everywhere, and ``configs/<name>.toml`` (``toml``) with the smoke preset. The image files are
    the caller's (``data/train``, ``data/test``). Returns the data and config folders."""
    data, configs = root / "data", root / "configs"
    pd.DataFrame(rows, columns=columns).to_csv(data / "labels.csv", index=False)
    solution = pd.DataFrame(tests, columns=columns).assign(Usage=["Public", "Private"] * (len(tests) // 2))
    solution.to_csv(data / "solution.csv", index=False)
    solution[[columns[0]]].assign(**{columns[1]: guess}).to_csv(data / "sample_submission.csv", index=False)
    (configs / "presets").mkdir(parents=True)
    (configs / f"{name}.toml").write_text(toml)
    (configs / "presets/smoke.toml").write_text((REPO / "configs/presets/smoke.toml").read_text())
    return data, configs


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A session fixture's folder, built by the first pytest-xdist worker that asks and reused by the others.

    pytest-xdist's recipe for session fixtures (docs: "Making session-scoped fixtures execute only once"): the
    workers share the parent of their base temp folder; a lock lets one build while the others wait. The folder
    is read-only to tests (they copy it before changing it); ``.built`` marks it whole, so a failed build is redone.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


SMOKE_FOLDS = 2  # the shared smoke run's folds: 4 fold processes for its two backbones, not DACON's 10


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, dacon_dir) -> tuple[Path, list[str]]:
    """One smoke run on the real DACON data, shared by the pipeline and tracking tests.

    `make tune` (2 one-epoch trials of cnn_small), then `make all` (a process per fold), with W&B in its
    default offline mode. Returns the root and the CLI options used.
    """
    from compkit.cli import main

    def argv(root: Path) -> list[str]:
        return ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(root),
                "--config-dir", str(REPO / "configs"), "--set", f"folds.n_splits={SMOKE_FOLDS}"]

    def build(root: Path) -> None:
        assert main(["folds", *argv(root)]) == 0
        assert main(["tune", *argv(root), "--backbones", "cnn_small", "--trials", "2", "--set", "tune.pruner='none'",
                     "--set", "train.epochs=1"]) == 0  # trials of one epoch: the tracking tests read their records, not scores
        assert main(["all", *argv(root)]) == 0

    root = built_once(tmp_path_factory, "smoke", build)
    return root, argv(root)


@pytest.fixture(autouse=True)
def offline_tracking(monkeypatch):
    """Every test starts in W&B's default offline mode, whatever the shell has set."""
    monkeypatch.delenv("WANDB_MODE", raising=False)


@pytest.fixture(scope="session")
def dacon_dir() -> Path:
    """The real DACON train.csv and submission.csv; set COMPKIT_DACON_DIR if they live elsewhere."""
    assert (DACON / "train.csv").is_file(), f"{DACON}/train.csv not found: put ../shared beside the repo or set COMPKIT_DACON_DIR"
    return DACON


@pytest.fixture
def config_dir() -> Path:
    return REPO / "configs"


@pytest.fixture
def dacon():
    """A factory: the DACON config with a preset and overrides (:func:`dacon_config`)."""
    return lambda preset="smoke", *overrides: dacon_config(*overrides, preset=preset)


@pytest.fixture
def paths(tmp_path, dacon_dir) -> Paths:
    """DACON paths whose folds/, runs/ and submissions/ live in a fresh temporary root."""
    return Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)


# A tiny deterministic training job: one backbone, 3 folds, 1 epoch (about 12 s a fold on 2 cores).
TINY = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.n_splits=3", "--set", "train.epochs=1",
        "--set", "train.batch_size=128", "--deterministic"]  # the batch these tests were written with


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, dacon_dir) -> tuple[Path, list[str]]:
    """`make folds train ensemble` of the TINY job on the real DACON data, uninterrupted.

    Returns the root and the CLI options (without the stage), for reruns and comparisons.
    """
    from compkit.cli import main

    def argv(root: Path) -> list[str]:
        return [*TINY, "--data-dir", str(dacon_dir), "--root", str(root), "--config-dir", str(REPO / "configs")]

    def build(root: Path) -> None:
        for stage in ("folds", "train", "ensemble"):
            assert main([stage, *argv(root)]) == 0

    root = built_once(tmp_path_factory, "tiny", build)
    return root, argv(root)


@pytest.fixture
def copy(tiny_run, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the TINY run (folds, train, ensemble done) to change, and the CLI options pointing at it."""
    root, argv = tiny_run
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    return tmp_path / "run", with_root(argv, tmp_path / "run")


@pytest.fixture(scope="session")
def fmnist():
    """The real Fashion-MNIST arrays from Debian's dataset-fashion-mnist package."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DEBIAN_FASHION_MNIST} missing on CI: `make setup` installs dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    return fashion_mnist()


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / ".kaggle"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


FAKE_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def fake_credentials(no_credentials, monkeypatch):
    """Credentials that exist but cannot be used: there is no network here."""
    monkeypatch.setenv("KAGGLE_USERNAME", "compkit-test")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
