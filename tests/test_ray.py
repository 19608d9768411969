"""The Ray executor on a real local Ray cluster (2 CPUs): the TINY DACON job's folds as Ray tasks match the local
executor's, a worker killed mid-fold is retried without a half-written file, a Ray tune study on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import ray
from optuna.trial import TrialState

from compkit.cli import main
from conftest import REPO, TINY, read_oof, tree_digest


# One xdist worker runs this module: one Ray cluster, and its tune study shares the CI PostgreSQL study name with test_tune.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]

FOLDS = 3  # TINY's
RUNS = "runs/dacon-cv-2020/cnn_small"
TASK = b"ray::train_fold"  # the title Ray gives a worker process while it runs that task


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module (workers inherit PYTHONPATH from this process)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="warning")
    yield
    ray.shutdown()


def _task_pids() -> list[int]:
    """Pids of the processes running a fold task now (read from /proc: no hook in compkit)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(TASK):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _kill_first_fold_worker(after: float, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first process seen running a fold task once it has run ``after`` seconds (mid-training)."""
    seen: dict[int, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        for pid in _task_pids():
            if now - seen.setdefault(pid, now) >= after:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ray_run(cluster, tiny_run, tmp_path_factory, dacon_dir):
    """`train --executor ray` of the TINY job on tiny_run's folds, its first fold worker killed after 6 s of work.

    Returns the root, the killed pids and the CLI options.
    """
    root = tmp_path_factory.mktemp("ray")
    shutil.copytree(tiny_run[0] / "folds", root / "folds")
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_fold_worker, args=(6.0, killed, stop), daemon=True)
    killer.start()
    try:
        argv = [*TINY, "--data-dir", str(dacon_dir), "--root", str(root), "--config-dir", str(REPO / "configs")]
        # 2 CPUs a task; TINY is deterministic, so a task runs DETERMINISTIC_THREADS TensorFlow threads, as the local
        # run does (the float sums, and so the bits, depend on the thread count)
        code = main(["train", *argv, "--executor", "ray", "--set", "ray.cpus_per_task=2"])
    finally:
        stop.set()
        killer.join()
    assert code == 0
    return root, killed, argv


def test_ray_folds_equal_the_local_executors(ray_run, tiny_run):
    ray_oof, local_oof = read_oof(ray_run[0], "cnn_small", FOLDS), read_oof(tiny_run[0], "cnn_small", FOLDS)
    assert ray_oof["id"].tolist() == local_oof["id"].tolist()
    np.testing.assert_allclose(ray_oof.filter(like="p_").to_numpy(), local_oof.filter(like="p_").to_numpy(), atol=1e-6)
    for k in range(FOLDS):
        record = json.loads((ray_run[0] / RUNS / f"fold{k}/fold.json").read_text())
        local = json.loads((tiny_run[0] / RUNS / f"fold{k}/fold.json").read_text())
        assert record["where"]["executor"] == "ray" and local["where"]["executor"] == "local"
        assert record["where"]["pid"] != os.getpid() and record["where"]["device"] == "CPU"
        assert record["lineage"] == local["lineage"]  # same config and fold digests: the executor is not part of a fold's lineage
    assert main(["ensemble", *ray_run[2]]) == 0  # the next stage reads the Ray folds as it reads local ones


def test_a_killed_fold_worker_is_retried_and_leaves_no_half_file(ray_run):
    root, killed, _ = ray_run
    assert len(killed) == 1, "no fold task was seen running"
    out = root / RUNS
    pids = [json.loads((out / f"fold{k}/fold.json").read_text())["where"]["pid"] for k in range(FOLDS)]
    assert killed[0] not in pids  # the killed attempt delivered nothing; its retry did
    for k in range(FOLDS):
        assert {p.name for p in (out / f"fold{k}").iterdir()} == {"model.keras", "history.csv", "oof.csv", "holdout.csv", "fold.json"}
    assert not list(root.rglob(".tmp-*")) and not list(root.rglob(".lock"))


def test_a_task_bigger_than_the_cluster_is_one_line_not_a_hang(cluster, tiny_run, tmp_path, dacon_dir, capsys):
    shutil.copytree(tiny_run[0] / "folds", tmp_path / "folds")
    argv = [*TINY, "--data-dir", str(dacon_dir), "--root", str(tmp_path), "--config-dir", str(REPO / "configs")]
    assert main(["train", *argv, "--executor", "ray", "--set", "ray.cpus_per_task=3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "compkit: error: ray: a task needs 3 CPU(s) and 0 GPU(s), but the cluster has 2 CPUs and 0 GPUs; "
        "lower ray.cpus_per_task / ray.gpus_per_task (--set) or add nodes")
    assert not list(tmp_path.rglob("fold.json")) and not list(tmp_path.rglob(".lock"))


def test_ray_tune_study_finishes_exactly_n_distinct_trials_on_postgres(cluster, tmp_path, dacon_dir):
    url = os.environ.get("COMPKIT_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server: set COMPKIT_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: `source .ci/postgres.sh`")
    name = "dacon-cv-2020-cnn_small"
    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path),
            "--config-dir", str(REPO / "configs"), "--backbones", "cnn_small", "--set", "folds.n_splits=2", "--set", "train.epochs=1",
            "--set", "train.batch_size=128", "--set", "folds.max_rows=600"]
    assert main(["folds", *argv]) == 0
    os.environ["OPTUNA_STORAGE"] = url
    try:
        assert main(["tune", *argv, "--executor", "ray", "--trials", "2", "--set", "tune.pruner='none'"]) == 0
    finally:
        del os.environ["OPTUNA_STORAGE"]
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 2  # no trial run twice
    spans = sorted((t.user_attrs["compute"]["started"], t.user_attrs["compute"]["finished"]) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials ran at once: not 2 parallel tasks"
    assert (tmp_path / "runs/dacon-cv-2020/best/cnn_small.json").is_file()


def test_without_ray_the_ray_executor_is_one_line_naming_the_install(tmp_path, dacon_dir):
    """In a Python where `import ray` fails (blocked in sys.modules), `train --executor ray` stops with one line."""
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path),
            "--config-dir", str(REPO / "configs"), "--backbones", "cnn_small", "--set", "folds.n_splits=2"]
    assert main(["folds", *argv]) == 0
    before = tree_digest(tmp_path)  # folds/ and the pixel cache `make folds` built
    code = ("import sys; sys.modules['ray'] = None\nfrom compkit.cli import main\n"
            f"sys.exit(main({['train', *argv, '--executor', 'ray']!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("compkit: error: executor 'ray': Ray is not installed; "
                                                    "run `pip install -e '.[ray]'` (or use the local executor)")
    assert tree_digest(tmp_path) == before  # nothing started, nothing written


def _ray_start(log: Path, env: dict, *options: str) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own (so the test can end all its processes), output to ``log``."""
    ray_cli = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray_cli), "start", "--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats",
                             "--block", *options], env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def two_node_cluster(tmp_path):
    """A real two-node Ray cluster as `ray start` makes one: a head, and a worker node whose address is 127.0.0.2
    (another machine, as far as Ray can tell). Yields the environment a driver needs (RAY_ADDRESS, the token)."""
    port = 56400 + os.getpid() % 90
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    nodes = [_ray_start(tmp_path / "head.log", env, "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={short}")]
    try:
        for log in (tmp_path / "head.log", tmp_path / "worker.log"):
            if log.name == "worker.log":
                nodes.append(_ray_start(log, env, f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.2"))
            deadline = time.monotonic() + 120
            while "Ray runtime started" not in log.read_text():
                assert time.monotonic() < deadline and nodes[-1].poll() is None, log.read_text()[-2000:]
                time.sleep(0.5)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # the session holds every process that node started
            node.wait()
        shutil.rmtree(short, ignore_errors=True)


def test_sqlite_study_is_refused_on_a_cluster_of_two_machines(two_node_cluster, tmp_path, dacon_dir):
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path),
            "--config-dir", str(REPO / "configs"), "--backbones", "cnn_small", "--set", "folds.n_splits=2"]
    assert main(["folds", *argv]) == 0
    env = {**two_node_cluster, "PYTHONPATH": str(REPO / "src")}
    env.pop("OPTUNA_STORAGE", None)
    done = subprocess.run([sys.executable, "-m", "compkit", "tune", *argv, "--executor", "ray"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    db = (tmp_path / "runs/dacon-cv-2020/optuna.db").resolve()
    assert done.stderr.strip().splitlines()[-1] == (
        f"compkit: error: tune storage sqlite:///{db}: a file on this machine, but the Ray cluster has nodes on 127.0.0.2; "
        "give a database every node reaches: OPTUNA_STORAGE=postgresql://host/db")
    assert "2 node(s)" in done.stdout + done.stderr
