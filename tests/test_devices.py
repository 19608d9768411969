"""Devices without a GPU: the slot plan from a device list, fold processes one per (fake) GPU id and never two on one
at once, CPU workers splitting the cores, MirroredStrategy over two logical CPU devices, `compkit env`, and the
gpu preset end to end (`make all PRESET=gpu`) in smoke size under mixed_float16."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from compkit import devices, fitting
from compkit.artifacts import Layout
from compkit.backbones import load_model
from compkit.cli import main
from compkit.config import Paths, load_config
from compkit.errors import CompkitError
from conftest import REPO

# Tiny folds in fresh processes: cnn_small a quarter wide, 1 epoch, 240 real CV rows.
TINY = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.max_rows=240",
        "--set", "train.epochs=1", "--set", "train.width=0.25", "--config-dir", str(REPO / "configs")]


def _train(**keys):
    overrides = [f"train.{k}={json.dumps(v)}" for k, v in keys.items()]
    return load_config("dacon-cv-2020", "smoke", overrides, REPO / "configs").train


def test_slots_from_a_device_list_workers_and_mirrored(monkeypatch):
    """Here TensorFlow sees no GPU: device ids are scheduled as given (a simulation), cores split between processes."""
    assert devices.visible_gpus() == ()
    half = max(1, devices.cores() // 2)
    assert devices.slots(_train()) == [devices.Slot(None, 0)]
    assert devices.slots(_train(devices=[0, 2, 0])) == [devices.Slot("0", half), devices.Slot("2", half)]
    assert devices.slots(_train(devices=[0, 2], strategy="mirrored")) == [devices.Slot("0,2", 0)]
    assert devices.slots(_train(workers=2)) == [devices.Slot(None, half)] * 2
    # Where TensorFlow sees GPUs (stood in for here), every one is used by default, and an unseen id is an error.
    monkeypatch.setattr(devices, "visible_gpus", lambda: ("0", "1", "2"))
    assert [s.device for s in devices.slots(_train())] == ["0", "1", "2"]
    assert [s.device for s in devices.slots(_train(workers=4))] == ["0", "1", "2"]  # workers: CPU only
    with pytest.raises(CompkitError, match="train.devices: GPU 5 is not one TensorFlow sees"):
        devices.slots(_train(devices=[1, 5]))


def _folds(root, backbone="cnn_small") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / f"runs/dacon-cv-2020/{backbone}").glob("fold*/fold.json"))]


@pytest.mark.slow
def test_folds_run_one_per_device_never_two_at_once(tmp_path, dacon_dir):
    """DEVICES=0,1 with 4 folds: real fold processes, each with CUDA_VISIBLE_DEVICES set to its id (on this CPU they
    see no GPU and train there); both ids are used, never by two folds at once, and the two ids' folds overlap."""
    argv = [*TINY, "--set", "folds.n_splits=4", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    assert main(["folds", *argv]) == 0
    assert main(["train", *argv, "--devices", "0,1"]) == 0
    folds = _folds(tmp_path)
    assert len(folds) == 4 and {f["compute"]["device"] for f in folds} == {"0", "1"}
    assert all(f["compute"]["gpus"] == 0 and f["compute"]["threads"] == devices.DETERMINISTIC_THREADS for f in folds)  # TINY: deterministic
    for a, b in combinations(folds, 2):
        overlap = a["started"] < b["finished"] and b["started"] < a["finished"]
        assert not (overlap and a["compute"]["device"] == b["compute"]["device"]), (a["fold"], b["fold"])
    assert any(a["started"] < b["finished"] and b["started"] < a["finished"] for a, b in combinations(folds, 2))


@pytest.mark.slow
def test_cpu_workers_train_folds_at_once_with_the_cores_split(tmp_path, dacon_dir):
    argv = [*TINY, "--set", "folds.n_splits=2", "--set", "train.workers=2", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    assert main(["folds", *argv]) == 0 and main(["train", *argv]) == 0
    a, b = _folds(tmp_path)
    assert a["compute"]["device"] is None and a["compute"]["threads"] == b["compute"]["threads"] == devices.DETERMINISTIC_THREADS  # TINY
    assert a["started"] < b["finished"] and b["started"] < a["finished"]


# Two logical CPU devices stand in for two GPUs; they must be set before TensorFlow initialises its devices.
MIRRORED = """
import json, sys
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from compkit import train
from compkit.config import Paths, load_config
repo, root, data = map(Path, sys.argv[1:4])
config = load_config("dacon-cv-2020", "smoke", sys.argv[4:], repo / "configs")
print(json.dumps(train.train_fold(config, Paths.for_competition("dacon-cv-2020", root, data), "cnn_small", 0)["compute"]))
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_devices(tmp_path, dacon_dir):
    """train.strategy = "mirrored": one fold fit over two replicas (global batch 16, 8 per replica); the saved
    model.keras, reloaded here on one device, predicts what oof.csv holds."""
    argv = [*TINY, "--set", "folds.n_splits=2", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    assert main(["folds", *argv]) == 0
    overrides = ["folds.max_rows=240", "folds.n_splits=2", "train.epochs=1", "train.width=0.25", 'train.backbones=["cnn_small"]',
                 "train.batch_size=16", "train.strategy='mirrored'"]
    run = subprocess.run([sys.executable, "-c", MIRRORED, str(REPO), str(tmp_path), str(dacon_dir), *overrides],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    compute = json.loads(run.stdout.strip().splitlines()[-1])
    assert compute["replicas"] == 2 and compute["precision"] == "float32"
    config = load_config("dacon-cv-2020", "smoke", overrides, REPO / "configs")
    paths = Paths.for_competition("dacon-cv-2020", tmp_path, dacon_dir)
    data, hyper = fitting.fold_data(config, paths, 0), config.hyper("cnn_small")
    out = Layout(config, paths).runs.dir("cnn_small", 0)
    oof = pd.read_csv(out / "oof.csv").filter(like="p_").to_numpy()
    again = load_model(out / "model.keras").predict(fitting.model_inputs(data.train, data.val, hyper), verbose=0)
    np.testing.assert_allclose(again, oof, atol=1e-5)


def test_env_names_versions_cpu_flags_and_a_driver_without_cuda(tmp_path):
    """`compkit env` with an nvidia-smi on PATH but no GPU for TensorFlow: one line says what to install; preset cpu."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "compkit", "env", "--competition", "dacon-cv-2020", "--config-dir", str(REPO / "configs")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert sum("TensorFlow sees no GPU" in line for line in lines) == 1
    assert any("make setup GPU=1" in line for line in lines)
    import keras
    import tensorflow as tf

    assert f"tensorflow {tf.__version__}" in run.stdout and f"keras {keras.__version__}" in run.stdout
    flags = devices.cpu_flags()
    if flags is not None:
        assert "avx512_bf16 " + ("yes" if flags["avx512_bf16"] else "no") in run.stdout
    # DACON's cpu preset: bfloat16 on two one-thread fold processes (configs/dacon-cv-2020.toml)
    assert "preset cpu by default, precision mixed_bfloat16 (train.precision = 'mixed_bfloat16'), 2 fold process(es)" in lines[-1]


@pytest.mark.slow
def test_gpu_preset_end_to_end_in_smoke_size_under_mixed_float16(tmp_path, dacon_dir):
    """`make all PRESET=gpu` with tiny rows and epochs, cnn_small and resnet_small at the preset's input sizes (every
    backbone at its minimum size under mixed_float16: test_precision.py). Float16 gradients crawl on a CPU (resnet_small:
    88 s a step of 32 at 56 px, 0.42 s in float32), which the run says in one line: 10 rows a fold keep it near a minute."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    sets = ["folds.n_splits=2", "folds.max_rows=20", "train.epochs=1", "train.batch_size=8", "train.precision=mixed_float16",
            "train.process_per_fold=false"]  # the folds in this process: fold processes are test_folds_run_one_per_device's
    run = subprocess.run(["make", "-f", str(REPO / "Makefile"), "all", f"PYTHON={sys.executable}", "COMPETITION=dacon-cv-2020",
                          "PRESET=gpu", f"DATA_DIR={dacon_dir}", "BACKBONES=cnn_small resnet_small", f"SET={' '.join(sets)}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    assert (run.stdout + run.stderr).count("train.precision = 'mixed_float16' without a GPU: TensorFlow has no fast") == 1
    for backbone, size in (("cnn_small", 28), ("resnet_small", 56)):
        folds = _folds(tmp_path, backbone)
        assert len(folds) == 2 and all(f["compute"]["precision"] == "mixed_float16" for f in folds)
        assert all(f["hyper"]["input_size"] == size for f in folds)
    assert list((tmp_path / "submissions/dacon-cv-2020").glob("*.csv"))


@pytest.mark.slow
def test_tune_runs_one_trial_per_device_at_once(tmp_path, dacon_dir):
    """`make tune DEVICES=0,1`: two trials of one study at once, one per (fake) GPU id, each in its own process."""
    import optuna

    argv = [*TINY, "--set", "folds.n_splits=2", "--set", "tune.pruner='none'", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    assert main(["folds", *argv]) == 0
    assert main(["tune", *argv, "--trials", "2", "--devices", "0,1"]) == 0
    storage = f"sqlite:///{tmp_path / 'runs/dacon-cv-2020/optuna.db'}"
    trials = optuna.load_study(study_name="dacon-cv-2020-cnn_small", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    a, b = (t.user_attrs["compute"] for t in trials)
    assert {a["device"], b["device"]} == {"0", "1"}
    assert a["started"] < b["finished"] and b["started"] < a["finished"]
