"""Nothing lost at the edges, round two (issue 29): concurrent writers, a damaged cache, zip bombs, shapes that
cannot fit, unreachable clusters, and errors that were tracebacks. Real DACON rows and images throughout."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compkit.cli import main
from compkit.data import load_train
from conftest import REPO, tree_digest

NAME = "dacon-cv-2020"


def env() -> dict[str, str]:
    """The environment of a ``python -m compkit`` child: this checkout's sources, W&B off."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}


@pytest.fixture
def copy(tiny_run, tmp_path, monkeypatch):
    """A copy of the TINY run (folds, train, ensemble done) and the CLI options pointing at it."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root, argv = tiny_run
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    argv = [*argv[: argv.index("--root")], "--root", str(tmp_path / "run"), *argv[argv.index("--root") + 2:]]
    return tmp_path / "run", argv


# -- concurrent submits ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_submits_of_one_name_give_a_file_and_a_row_each(copy):
    """Six `compkit submit --name same` at once: six files, six rows, each row naming its own file."""
    root, argv = copy
    n = 6
    procs = [subprocess.Popen([sys.executable, "-m", "compkit", "submit", *argv, "--name", "same"], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    folder = root / "submissions" / NAME
    files = sorted(p.name for p in folder.glob("*_same*.csv"))
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(files) == n and sorted(board["file"]) == files
    assert not list(folder.glob(".*")), "no lock or temporary file stays"


def fails(stage: str, root: Path, argv: list[str], capsys, *extra: str) -> str:
    """Run ``stage``; assert exit 2, one stderr line, and no change under folds/, runs/, submissions/. Returns the line."""
    before = tree_digest(root)
    code = main([stage, *argv, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("compkit: error: "), err
    assert tree_digest(root) == before
    return err


def small_argv(root: Path, data: Path) -> list[str]:
    return ["--competition", NAME, "--preset", "smoke", "--data-dir", str(data), "--root", str(root),
            "--config-dir", str(REPO / "configs"), "--backbones", "cnn_small"]


@pytest.fixture
def data(tmp_path, dacon_dir) -> Path:
    """A data folder holding train.csv: the first 300 real DACON rows."""
    folder = tmp_path / "data"
    folder.mkdir()
    pd.read_csv(dacon_dir / "train.csv", nrows=300).to_csv(folder / "train.csv", index=False)
    shutil.copy(dacon_dir / "submission.csv", folder / "submission.csv")
    return folder


# -- the pixel cache is verified on open ---------------------------------------------------------------------

def _zeroed(npy: Path) -> None:
    pixels = np.load(npy, mmap_mode="r+")
    pixels[:] = 0
    pixels.flush()


DAMAGES = {
    "zeroed in place": _zeroed,
    "rewritten as float32": lambda npy: np.save(npy, np.load(npy).astype(np.float32)),
    "rewritten in Fortran order": lambda npy: np.save(npy, np.asfortranarray(np.load(npy))),
    "its record a JSON list": lambda npy: npy.with_suffix(".json").write_text("[1, 2]"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_cache_is_rebuilt_with_one_line(tmp_path, dacon, data, capsys, damage):
    """The real rows' cache damaged behind its record: the next read says why in one line and rebuilds it."""
    comp = dacon().competition
    expected = load_train(data, comp).images
    load_train(data, comp, tmp_path / "cache")
    (npy,) = (tmp_path / "cache").glob("train-*.npy")
    DAMAGES[damage](npy)
    capsys.readouterr()
    again = load_train(data, comp, tmp_path / "cache")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"cache: {npy}:" in out and "decoding the images again" in out, out
    np.testing.assert_array_equal(again.images, expected)
    assert again.images.dtype == np.uint8 and again.images.flags.c_contiguous
    assert load_train(data, comp, tmp_path / "cache") is not None and capsys.readouterr().out == ""  # trusted now


@pytest.mark.parametrize("where", ["cache folder is a file", "cache file is a folder"])
def test_a_cache_path_of_the_wrong_kind_is_one_line(tmp_path, data, capsys, where):
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    cache_dir = root / "runs" / NAME / "cache"
    (npy,) = cache_dir.glob("train-*.npy")
    if where == "cache folder is a file":
        shutil.rmtree(cache_dir)
        cache_dir.write_text("not a folder\n")
        assert f"{cache_dir}: a file where compkit's pixel cache folder goes" in fails("train", root, argv, capsys)
    else:
        npy.unlink()
        npy.mkdir()
        assert f"{npy}: a folder where compkit's pixel cache file goes; delete it" in fails("train", root, argv, capsys)


BUILDER = """
import fcntl, sys, time
f = open(sys.argv[1], "wb")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_leftover_build_files_of_dead_writers_go_a_live_writers_stay(tmp_path, dacon, data):
    """A killed build's .npy under a pid now alive (reused) and a killed record write go; a live writer's file stays."""
    folder = tmp_path / "cache"
    folder.mkdir()
    reused = folder / f".build-{os.getppid()}-train-0123456789abcdef.npy"  # a live pid, but nobody holds the file
    record = folder / ".build-999999-train-0123456789abcdef.json"
    for path in (reused, record):
        path.write_bytes(b"left by a killed build")
        os.utime(path, (time.time() - 3600,) * 2)
    live = folder / f".build-{os.getpid()}-test-fedcba9876543210.npy"
    writer = subprocess.Popen([sys.executable, "-c", BUILDER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        os.utime(live, (time.time() - 3600,) * 2)
        load_train(data, dacon().competition, folder)
        assert not reused.exists() and not record.exists() and live.exists()
        assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".npy", ".npy"]
    finally:
        writer.kill()
        writer.wait()


def test_check_writes_nothing_even_with_another_image_shape(tmp_path, data, capsys):
    """A finished run's cache stays when `check` reads the data with another image_shape (docs: check writes nothing)."""
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    before = tree_digest(root)
    assert main(["check", *argv, "--set", "competition.image_shape=[14, 56, 1]"]) == 0
    assert tree_digest(root) == before
    (npy,) = (root / "runs" / NAME / "cache").glob("train-*.npy")
    _zeroed(npy)
    damaged = tree_digest(root)
    assert main(["check", *argv]) == 0  # a damaged cache is reported, not rebuilt, by check
    assert tree_digest(root) == damaged


# -- zip import ---------------------------------------------------------------------------------------------

def _zip(path: Path, dacon_dir: Path, extra: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.csv", pd.read_csv(dacon_dir / "train.csv", nrows=300).to_csv(index=False))
        zf.write(dacon_dir / "submission.csv", "submission.csv")
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


def test_a_zip_bomb_member_is_refused_before_anything_is_written(tmp_path, dacon_dir, capsys):
    """A 2 MB zip whose extra member unpacks to 200 MB of zeros: one line naming it and limits.zip_ratio; no folder made."""
    archive = _zip(tmp_path / "bomb.zip", dacon_dir, {"test.csv": bytes(200 * 2**20)})
    target = tmp_path / "data" / NAME
    before = tree_digest(tmp_path, ("data",))
    code = main(["data", "--competition", NAME, "--preset", "smoke", "--config-dir", str(REPO / "configs"), "--root",
                 str(tmp_path), "--data-dir", str(target), "--from-zip", str(archive), "--set", "limits.zip_ratio=100"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "member 'test.csv' unpacks to 209,715,200 bytes" in err, err
    assert "limits.zip_ratio = 100" in err and not target.exists() and tree_digest(tmp_path, ("data",)) == before
    assert not list(tmp_path.glob("data/.tmp-*"))


def test_a_zip_is_limited_in_total_and_unpacks_only_the_named_files(tmp_path, dacon_dir, capsys):
    archive = _zip(tmp_path / "x.zip", dacon_dir, {"extra/notes.bin": os.urandom(300_000), "train.csv.bak": b"x" * 1000})
    target = tmp_path / "data" / NAME
    common = ["--competition", NAME, "--preset", "smoke", "--config-dir", str(REPO / "configs"), "--root", str(tmp_path),
              "--data-dir", str(target), "--from-zip", str(archive)]
    assert main(["data", *common, "--set", "limits.zip_unpacked_gb=0.0005"]) == 2  # train.csv + submission.csv: ~0.75 MB
    assert "more than limits.zip_unpacked_gb = 0.0005 GB" in capsys.readouterr().err and not target.exists()
    assert main(["data", *common]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["submission.csv", "train.csv"]


# -- resources and finite numbers, checked before work ----------------------------------------------------------

@pytest.mark.parametrize("override", ["train.learning_rate=inf", "train.weight_decay=nan", "backbones.cnn_small.learning_rate=inf",
                                      "folds.holdout_fraction=nan", "train.augment.rotation=inf"])
def test_a_number_that_is_not_finite_is_a_config_error(tmp_path, data, capsys, override):
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    err = fails("train", root, argv, capsys, "--set", override)
    assert override.split("=")[0] in err and "finite" in err, err


@pytest.fixture
def image_folder(tmp_path, dacon_dir) -> tuple[Path, list[str]]:
    """The first 300 real DACON rows as an image-folder competition: train/<id>.png and labels.csv."""
    from PIL import Image

    head = pd.read_csv(dacon_dir / "train.csv", nrows=300)
    folder = tmp_path / "images"
    (folder / "train").mkdir(parents=True)
    for i, image in zip(head["id"], head[[str(i) for i in range(784)]].to_numpy(dtype=np.uint8).reshape(-1, 28, 28)):
        Image.fromarray(image).save(folder / "train" / f"{i}.png")
    pd.DataFrame({"file": [f"{i}.png" for i in head["id"]], "digit": head["digit"], "letter": head["letter"]}).to_csv(
        folder / "labels.csv", index=False)
    shutil.copy(dacon_dir / "submission.csv", folder / "submission.csv")
    return folder, ["--set", 'competition.layout="image_folder"', "--set", 'competition.train_file="labels.csv"',
                    "--set", 'competition.id_column="file"']


@pytest.mark.parametrize("stage", ["folds", "check"])
def test_an_image_shape_that_cannot_fit_is_a_config_error_naming_the_bytes(tmp_path, image_folder, capsys, stage):
    """300 images of 100000 x 100000 x 3 (9 TB): refused before a decode, no .build file; the kernel killed it before."""
    folder, options = image_folder
    root = tmp_path / "root"
    argv = [*small_argv(root, folder), *options]
    assert main(["folds", *argv]) == 0
    err = fails(stage, root, argv, capsys, "--set", "competition.image_shape=[100000, 100000, 3]")
    assert "competition.image_shape = [100000, 100000, 3]: 300 images decode to 9,000,000,000,000 bytes, more than" in err
    assert ("limits.disk_fraction of the free disk" if stage == "folds" else "limits.memory_fraction") in err


# -- an unreachable Ray cluster ------------------------------------------------------------------------------

def test_an_unreachable_ray_cluster_is_one_line_within_the_timeout(tmp_path, data):
    """RAY_ADDRESS=127.0.0.1:1 used to print "Failed to connect to GCS" every ~35 s without end."""
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    before = tree_digest(root)
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "compkit", "train", *argv, "--executor", "ray", "--set", "ray.connect_timeout_s=5"],
                         env={**env(), "RAY_ADDRESS": "127.0.0.1:1"}, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - start < 60
    lines = [line for line in run.stderr.splitlines() if line.startswith("compkit:")]
    assert run.returncode == 2 and lines == [run.stderr.strip().splitlines()[-1]], run.stderr
    assert "cannot reach the head at RAY_ADDRESS=127.0.0.1:1 within ray.connect_timeout_s = 5 s" in lines[0]
    assert tree_digest(root) == before


# -- errors that were tracebacks --------------------------------------------------------------------------------

@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` unwritable for the block: immutable (``chattr +i``) as root, who ignores permissions, else mode 0555."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        os.chmod(folder, 0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def _compkit(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compkit", *argv], env=env(), capture_output=True, text=True, timeout=300, **kwargs)


def _one_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and run.stderr.startswith("compkit: error: "), run.stderr
    return run.stderr


@pytest.mark.parametrize(("stage", "part"), [("folds", "runs"), ("submit", "submissions")])
def test_a_read_only_output_folder_is_one_line_naming_it(copy, stage, part):
    root, argv = copy
    folder = root / part / NAME
    if stage == "folds":
        shutil.rmtree(folder / "cache")
    folder.mkdir(parents=True, exist_ok=True)
    before = tree_digest(root)
    with read_only(folder):
        err = _one_line(_compkit([stage, *argv]))
    assert f"{folder}/" in err and "make the folder writable (chmod u+w) or pass --root" in err, err
    assert tree_digest(root) == before


def test_a_file_size_limit_is_one_line_naming_the_file(tmp_path, data):
    """`ulimit -f` 100 KB: the 235 KB pixel cache of the real rows cannot be written ("File too large")."""
    import resource

    root = tmp_path / "root"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # noqa: E731
    err = _one_line(_compkit(["folds", *small_argv(root, data)], preexec_fn=limit))
    assert f"{root / 'runs' / NAME / 'cache'}/train-" in err and "file too large for this system's file-size limit" in err, err
    assert tree_digest(root) == {}


@pytest.mark.parametrize("channels", [2, 4])
def test_an_image_folder_with_alpha_channels_decodes(image_folder, dacon, channels):
    """Gray + alpha and RGBA (common for PNGs) used to fail with "cannot reshape array"."""
    folder, _ = image_folder
    comp = dacon("smoke", 'competition.layout="image_folder"', 'competition.train_file="labels.csv"', 'competition.id_column="file"',
                 f"competition.image_shape=[28, 28, {channels}]").competition
    images = load_train(folder, comp).images
    gray = load_train(folder, dacon("smoke", 'competition.layout="image_folder"', 'competition.train_file="labels.csv"',
                                    'competition.id_column="file"').competition).images
    assert images.shape == (300, 28, 28, channels)
    np.testing.assert_array_equal(images[..., 0], gray[..., 0])
    assert (images[..., -1] == 255).all()  # opaque


def test_a_storage_url_without_its_driver_is_one_line(tmp_path, data, capsys):
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    err = fails("tune", root, argv, capsys, "--set", "tune.storage='mysql://user:secret@127.0.0.1:1/db'")
    assert "its database driver is not installed (MySQLdb); pip install the package" in err and "secret" not in err, err


def test_a_keras_file_with_a_lambda_layer_is_one_line(tmp_path):
    import keras

    from compkit.backbones import build_backbone
    from compkit.errors import CompkitError

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(CompkitError, match=r"lambda.keras: Keras cannot load it safely \(.*\); give a model.keras written by compkit"):
        build_backbone("cnn_small", (28, 28, 1), 1.0, str(tmp_path / "lambda.keras"))


# -- messages that misled ---------------------------------------------------------------------------------------

def test_ensemble_while_another_process_trains_a_fold_says_wait(copy):
    root, argv = copy
    fold = root / "runs" / NAME / "cnn_small" / "fold1"
    (fold / "fold.json").unlink()
    holder = subprocess.Popen([sys.executable, "-c", BUILDER, str(fold / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree_digest(root)
        err = _one_line(_compkit(["ensemble", *argv]))
        assert f"{fold}: cnn_small fold 1 is being trained by another process" in err and "delete" not in err, err
        assert tree_digest(root) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("preset", ["../x", "/tmp/x"])
def test_a_preset_that_is_a_path_names_the_presets(tmp_path, data, capsys, preset):
    err = fails("folds", tmp_path / "root", [*small_argv(tmp_path / "root", data), "--preset", preset], capsys)
    assert f"--preset {preset!r}:" in err and "choose one of ['cpu', 'gpu', 'smoke']" in err, err


def test_a_make_data_zip_path_with_a_space(tmp_path, dacon_dir):
    archive = _zip(tmp_path / "a b.zip", dacon_dir, {})
    run = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "data", f"PYTHON={sys.executable}", f"COMPETITION={NAME}",
                          "PRESET=smoke", f"DATA_DIR={tmp_path / 'data'}", f"FROM_ZIP={archive}"], cwd=REPO, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data" / "train.csv").is_file()


def test_a_duplicate_zip_member_is_named_in_the_zip(tmp_path, dacon_dir, capsys):
    import warnings

    archive = _zip(tmp_path / "dup.zip", dacon_dir, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is told to write
        import zipfile

        with zipfile.ZipFile(archive, "a") as zf:
            zf.writestr("train.csv", "id,digit,letter\n")
    code = main(["data", "--competition", NAME, "--preset", "smoke", "--config-dir", str(REPO / "configs"), "--root", str(tmp_path),
                 "--data-dir", str(tmp_path / "data"), "--from-zip", str(archive)])
    err = capsys.readouterr().err
    assert code == 2 and f"{archive}: member 'train.csv' is in the zip 2 times" in err and ".tmp-" not in err, err


def test_a_check_error_inside_a_zip_names_the_zip_not_a_deleted_folder(tmp_path, dacon_dir, capsys):
    archive = tmp_path / "bad.zip"
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.csv", "id,digit,letter\n")
        zf.write(dacon_dir / "submission.csv", "submission.csv")
    code = main(["data", "--competition", NAME, "--preset", "smoke", "--config-dir", str(REPO / "configs"), "--root", str(tmp_path),
                 "--data-dir", str(tmp_path / "data"), "--from-zip", str(archive)])
    err = capsys.readouterr().err
    assert code == 2 and f"{archive} member train.csv:" in err and ".tmp-" not in err, err


def test_a_malformed_kaggle_json_is_named_not_called_refused(tmp_path, monkeypatch):
    from compkit.platform import PlatformError, credentials_source

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "kaggle.json").write_text('{"username": "me", "key": ')
    with pytest.raises(PlatformError, match=r"kaggle.json: not a Kaggle API token .*nothing was sent; download it again"):
        credentials_source()
    (tmp_path / "kaggle.json").write_text('{"username": "me", "key": "0123"}')
    assert credentials_source() == str(tmp_path / "kaggle.json")


def test_a_competition_config_error_does_not_print_the_whole_table(tmp_path, data, capsys):
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    toml = configs / f"{NAME}.toml"
    toml.write_text(toml.read_text().replace('target_column = "digit"', 'target_column = "digit"\ntask = "binary"'))
    argv = [*small_argv(tmp_path / "root", data)[:-4], "--config-dir", str(configs), "--backbones", "cnn_small"]
    err = fails("folds", tmp_path / "root", argv, capsys)  # a competition-level check: pydantic's input is the whole table
    assert "competition: task = 'binary' needs exactly 2 classes [negative, positive], got 10" in err and "{" not in err, err


# -- upload sends only what submit wrote --------------------------------------------------------------------------

def test_upload_refuses_a_submission_edited_after_submit(copy, tmp_path, monkeypatch):
    """Unedited, the file passes to the credentials check; with one label changed, upload names the file and the digest."""
    root, argv = copy
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    argv = [*argv, "--set", 'competition.platform="kaggle"']
    assert main(["submit", *argv]) == 0
    board = pd.read_csv(root / "submissions" / NAME / "leaderboard.csv")
    path = root / "submissions" / NAME / board["file"].iloc[-1]
    assert "kaggle: no credentials" in _one_line(_compkit(["upload", *argv]))  # the file passed its checks
    frame = pd.read_csv(path)
    frame.iloc[3, 1] = 9 if frame.iloc[3, 1] != 9 else 8
    frame.to_csv(path, index=False)
    before = tree_digest(root)
    err = _one_line(_compkit(["upload", *argv]))
    assert f"{path}: changed since `make submit` wrote it" in err, err
    assert tree_digest(root) == before


# -- fold files remade under a running train ---------------------------------------------------------------------

def test_train_refuses_fold_files_made_with_other_fold_settings(tmp_path, data, capsys):
    """`compkit folds --set folds.seed=7` while train starts: train (on folds.seed 42) stops in one line instead of
    training on the new folds and recording the old config in fold.json."""
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv, "--set", "folds.seed=7"]) == 0
    err = fails("train", root, argv, capsys)
    assert "folds.json: the fold files were made with other [folds] settings" in err, err
    assert main(["folds", *argv]) == 0
    assert "other [folds] settings" in fails("ensemble", root, argv, capsys, "--set", "folds.n_splits=3")


def test_a_killed_writers_temporary_file_goes_a_live_writers_stays(tmp_path, data):
    """`.tmp-*` beside folds.csv: a killed writer's (unheld, an hour old) is deleted by the next `make folds`; one a live
    process holds stays."""
    root = tmp_path / "root"
    argv = small_argv(root, data)
    assert main(["folds", *argv]) == 0
    folder = root / "folds" / NAME
    dead, live = folder / ".tmp-dead0001-folds.csv", folder / ".tmp-live0001-folds.csv"
    dead.write_text("id,fold\n")
    writer = subprocess.Popen([sys.executable, "-c", BUILDER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        for path in (dead, live):
            os.utime(path, (time.time() - 3600,) * 2)
        assert main(["folds", *argv]) == 0
        assert not dead.exists() and live.exists()
    finally:
        writer.kill()
        writer.wait()


# -- determinism across executors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_deterministic_runs_pin_the_same_threads_locally_and_on_ray(dacon, workers):
    """TensorFlow's CPU reductions depend on the intra-op thread count: a deterministic fold gets the same count from the
    local scheduler (workers=1 used to leave TensorFlow's default, every core) as from a Ray task."""
    from compkit.devices import DETERMINISTIC_THREADS, slots

    config = dacon("smoke", "train.deterministic=true", f"train.workers={workers}", "ray.cpus_per_task=4")
    assert {slot.threads for slot in slots(config.train)} == {DETERMINISTIC_THREADS}
    script = ("import sys, tensorflow as tf; from compkit.config import load_config; from compkit.executors.cluster import _enter; "
              f"c = load_config('{NAME}', 'smoke', ['train.deterministic=true', 'ray.cpus_per_task=4'], __import__('pathlib').Path(sys.argv[1])); "
              "_enter(c); print(tf.config.threading.get_intra_op_parallelism_threads())")
    run = subprocess.run([sys.executable, "-c", script, str(REPO / "configs")], env=env(), capture_output=True, text=True, timeout=300)
    assert run.stdout.strip().splitlines()[-1] == str(DETERMINISTIC_THREADS), run.stderr
