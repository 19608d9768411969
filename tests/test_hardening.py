"""Hostile inputs (issue 12): each ends in one line naming the file, line or column and the fix, with exit
status 2, and changes no file under folds/, runs/, submissions/ (sha256 of every file before and after).

The data are modified copies of real DACON rows: the first 300 rows of train.csv, and rows 301-600 as a
test set where a case needs one. Line numbers are the file's lines as an editor shows them (header: line 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compkit.cli import main
from conftest import REPO, one_line_error, tree_digest

NAME = "dacon-cv-2020"


@pytest.fixture(scope="module")
def rows(dacon_dir) -> pd.DataFrame:
    """The first 600 real DACON train rows (ids 1-600)."""
    return pd.read_csv(dacon_dir / "train.csv", nrows=600)


@pytest.fixture
def data(tmp_path, rows) -> Path:
    """A data folder holding train.csv: the first 300 real rows."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows.head(300).to_csv(folder / "train.csv", index=False)
    return folder


def argv(root: Path, data: Path, config_dir: Path = REPO / "configs") -> list[str]:
    return ["--competition", NAME, "--preset", "smoke", "--data-dir", str(data), "--root", str(root), "--config-dir", str(config_dir),
            "--backbones", "cnn_small"]


@pytest.fixture
def root(tmp_path, data) -> Path:
    """A project root after a good `make folds`, with a file in runs/ and submissions/ that must survive."""
    root = tmp_path / "root"
    assert main(["folds", *argv(root, data)]) == 0
    for part in ("runs", "submissions"):
        (root / part / NAME).mkdir(parents=True, exist_ok=True)  # runs/<c>/cache: make folds's
        (root / part / NAME / "kept.txt").write_text(f"{part} of an earlier run\n")
    return root


def fails(stage: str, root: Path, data: Path, capsys, *extra: str, config_dir: Path = REPO / "configs") -> str:
    """Run ``stage``; assert exit 2, one stderr line, and no change under folds/, runs/, submissions/. Returns the line."""
    before = tree_digest(root)
    err = one_line_error(capsys, main([stage, *argv(root, data, config_dir), *extra]))
    assert tree_digest(root) == before
    return err


# -- safe names --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "why"), [
    ("../../x", "not a plain file name"),
    ("/tmp/compkit-abs", "not a plain file name"),
    ("", "it is empty"),
    ("a" * 101, "101 characters; use at most 100"),
])
def test_an_unsafe_competition_name_is_a_config_error(tmp_path, root, data, capsys, name, why):
    err = fails("folds", root, data, capsys, "--set", f'competition.name="{name}"')
    assert "competition.name: " in err and why in err and "fix it in the config or with --set" in err
    assert not (tmp_path / "x").exists() and not Path("/tmp/compkit-abs").exists()


@pytest.mark.parametrize(("name", "why"), [
    ("../evil", "not a plain file name"),
    ("a/b", "not a plain file name"),
    (".hidden", "not a plain file name"),
    ("x" * 300, "300 characters; use at most 100"),
])
def test_an_unsafe_submission_name_is_refused(root, data, capsys, name, why):
    err = fails("submit", root, data, capsys, "--name", name)
    assert "--name " in err and why in err


def test_a_root_that_is_a_file_is_refused(tmp_path, data, capsys):
    root = tmp_path / "root.txt"
    root.write_text("not a folder\n")
    code = main(["folds", *argv(root, data)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"compkit: error: --root {root}: is a file, not a folder; pass the project folder (default: .)\n"
    assert root.read_text() == "not a folder\n"


def _clean_root(root: Path) -> None:
    for rel in ("src/compkit/keep.py", f"runs/{NAME}/cnn_small/fold0/fold.json", f"folds/{NAME}/folds.csv",
                "runs/other/kept.txt", "folds/other/folds.csv", f"submissions/{NAME}/leaderboard.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


@pytest.mark.parametrize("competition", ["", ".", "..", "../src", "/", "a/../b", "x'; rm -rf src; '"])
def test_clean_refuses_an_empty_or_unsafe_competition(tmp_path, capsys, competition):
    root = tmp_path / "root"
    _clean_root(root)
    everything = (*[p.name for p in root.iterdir()],)
    before = tree_digest(root, everything)
    assert main(["clean", "--competition", competition, "--root", str(root)]) == 2
    assert "COMPETITION " in capsys.readouterr().err
    make = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean", f"COMPETITION={competition}", f"VENV={REPO / '.venv'}"],
                          cwd=root, capture_output=True, text=True)
    assert make.returncode == 2 and "is not a competition name" in make.stderr and "nothing deleted" in make.stderr
    assert tree_digest(root, everything) == before


def test_clean_deletes_only_the_competitions_runs_and_folds(tmp_path):
    root = tmp_path / "root"
    _clean_root(root)
    make = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean", f"COMPETITION={NAME}", f"VENV={REPO / '.venv'}"],
                          cwd=root, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == ["folds/other/folds.csv", "runs/other/kept.txt", "src/compkit/keep.py", f"submissions/{NAME}/leaderboard.csv"]


# -- config files --------------------------------------------------------------------------------------------

def test_a_non_utf8_toml_is_one_line(tmp_path, root, data, capsys):
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    toml = configs / f"{NAME}.toml"
    toml.write_bytes(b"# DACON\n" + "# données\n".encode("latin-1") + toml.read_bytes())
    err = fails("folds", root, data, capsys, config_dir=configs)
    assert f"{toml}: line 2: not UTF-8 text (invalid continuation byte); save it as UTF-8" in err


def test_duplicate_classes_are_a_config_error(root, data, capsys):
    err = fails("folds", root, data, capsys, "--set", "competition.classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3]")
    assert "competition.classes: class 3 (item 11) is listed twice; list each class once" in err


# -- the competition's files ---------------------------------------------------------------------------------

def _cell(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(("breakage", "fragment"), [
    (lambda t: _cell(t, 4, "300", 12.5), "train.csv: line 6, column '300': pixel 12.5 is not an integer in 0-255"),
    (lambda t: _cell(t, 4, "id", "a5"), "train.csv: line 6: id 'a5' is text where line 2's '1' is a number; use ids of one kind"),
    # A blank label makes pandas read the column as float: the error must still name line 11, not line 2's 5.0.
    (lambda t: _cell(t, 9, "digit", np.nan), "train.csv: line 11, column 'digit': label nan is not one of the classes"),
    (lambda t: _cell(t, 9, "digit", 3.5), "train.csv: line 11, column 'digit': label 3.5 is not one of the classes"),
    (lambda t: t.drop(t.index[t["digit"] == 7][4:]), "cannot split off the public part"),  # 4 rows of digit 7
    (lambda t: t.drop(t.index[t["digit"] == 7][5:]), "cannot split off the public part"),  # 5 rows of digit 7
])
def test_a_bad_train_file_names_its_line(root, data, rows, capsys, breakage, fragment):
    breakage(rows.head(300)).to_csv(data / "train.csv", index=False)
    err = fails("folds", root, data, capsys)
    assert fragment in err
    if "cannot split" in fragment:
        assert "rarest stratum '7':" in err and "raise folds.holdout_fraction" in err
    else:
        assert str(data / "train.csv") in err


@pytest.mark.parametrize(("override", "fragment"), [
    ("folds.holdout_fraction=0.001", "cannot split off the holdout (0.001 of 300 rows): The test_size = 1 should be greater"),
    ("folds.public_share=0.01", "cannot split off the public part (0.01 of 60 holdout rows): With n_samples=60"),
    ("folds.max_rows=5", "cannot split off a sample of 5 rows"),
])
def test_a_split_too_small_is_one_line(root, data, capsys, override, fragment):
    assert fragment in fails("folds", root, data, capsys, "--set", override)


@pytest.fixture
def with_test(data, rows) -> Path:
    """Adds test.csv (real rows 301-600 without their digit), its sample submission and a solution file."""
    test = rows.iloc[300:600].reset_index(drop=True)
    test.drop(columns=["digit"]).to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "digit": 0}).to_csv(data / "submission.csv", index=False)
    usage = np.where(np.arange(len(test)) % 2 == 0, "Public", "Private")
    pd.DataFrame({"id": test["id"], "digit": test["digit"], "Usage": usage}).to_csv(data / "solution.csv", index=False)
    return data


@pytest.mark.parametrize(("file", "breakage", "fragment"), [
    ("submission.csv", lambda f: _cell(f, 7, "id", 303), "submission.csv: line 9: duplicate id 303 (also on line 4); ids must be unique"),
    ("solution.csv", lambda f: _cell(f, 7, "id", 303), "solution.csv: line 9: duplicate id 303 (also on line 4); ids must be unique"),
    ("solution.csv", lambda f: f.assign(Usage="Public"), "solution.csv: no Private row in column 'Usage', so the private score is undefined"),
])
def test_a_bad_sample_or_solution_is_refused_by_folds(tmp_path, rows, with_test, capsys, file, breakage, fragment):
    root = tmp_path / "root"
    assert main(["folds", *argv(root, with_test)]) == 0  # the good files pass
    capsys.readouterr()
    breakage(pd.read_csv(with_test / file)).to_csv(with_test / file, index=False)
    assert fragment in fails("folds", root, with_test, capsys)


def _png(width: int, height: int) -> bytes:
    """A PNG header announcing ``width`` x ``height`` 1-bit pixels, with no image data (Pillow checks the size first)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.fixture
def image_folder(tmp_path, rows) -> tuple[Path, list[str]]:
    """The first 300 real rows as an image-folder competition: train/<id>.png (8-bit) and labels.csv."""
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "train").mkdir(parents=True)
    head = rows.head(300)
    pixels = head[[str(i) for i in range(784)]].to_numpy(dtype=np.uint8).reshape(-1, 28, 28)
    for i, image in zip(head["id"], pixels):
        Image.fromarray(image).save(folder / "train" / f"{i}.png")
    pd.DataFrame({"file": [f"{i}.png" for i in head["id"]], "digit": head["digit"], "letter": head["letter"]}).to_csv(
        folder / "labels.csv", index=False)
    return folder, ["--set", 'competition.layout="image_folder"', "--set", 'competition.train_file="labels.csv"',
                    "--set", 'competition.id_column="file"']


def test_a_decompression_bomb_is_one_line(tmp_path, image_folder, capsys):
    folder, options = image_folder
    root = tmp_path / "root"
    assert main(["folds", *argv(root, folder), *options]) == 0
    capsys.readouterr()
    (folder / "train" / "5.png").write_bytes(_png(20000, 20000))
    err = fails("folds", root, folder, capsys, *options)
    assert f"{folder / 'train' / '5.png'}: too large to decode safely (Image size (400000000 pixels) exceeds limit" in err
    assert "downscale or remove it" in err


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path, image_folder, dacon):
    from PIL import Image

    from compkit.photos import read_image_files

    folder, _ = image_folder
    comp = dacon("smoke", 'competition.layout="image_folder"').competition
    names = sorted(p.name for p in (folder / "train").iterdir())[:20]
    eight = read_image_files(folder / "train", names, comp)
    wide = tmp_path / "wide"
    wide.mkdir()
    for name, image in zip(names, eight):
        Image.fromarray(image[..., 0].astype(np.uint16) * 257).save(wide / name)  # 255 -> 65535
    assert Image.open(wide / names[0]).mode == "I;16"
    assert np.array_equal(read_image_files(wide, names, comp), eight)


# -- compkit's own artefacts ---------------------------------------------------------------------------------

def _cut(text: str) -> str:
    return text[: len(text) // 2].rsplit(",", 1)[0] + ","  # cut mid-row: the last row's fold is blank


@pytest.mark.parametrize(("file", "breakage", "fragment"), [
    ("folds.csv", lambda t: _fold(t, 2, "7"), "folds.csv: line 4, column 'fold': 7 is not a fold number 0..4 (folds.n_splits = 5)"),
    ("folds.csv", lambda t: _fold(t, 2, ""), "folds.csv: line 4, column 'fold': nan is not a fold number 0..4"),
    ("folds.csv", lambda t: _fold(t, 2, "-1"), "folds.csv: line 4, column 'fold': -1 is not a fold number 0..4"),
    ("folds.csv", lambda t: _fold(t, 2, "1.5"), "folds.csv: line 4, column 'fold': 1.5 is not a fold number 0..4"),
    ("folds.csv", _cut, "column 'fold': nan is not a fold number 0..4"),
    ("folds.csv", lambda t: "", "folds.csv: the file is empty (a damaged artefact); remake them: `make clean COMPETITION=dacon-cv-2020`"),
    ("folds.csv", lambda t: t.splitlines()[0] + "\n", "folds.csv: header only, no rows (a damaged artefact)"),
    ("holdout.csv", lambda t: _fold(t, 0, "public"), "holdout.csv: line 2, column 'Usage': 'public' is not Public or Private"),
    ("holdout.csv", lambda t: "id;Usage\n1;Public\n", "holdout.csv: columns ['id;Usage'] are not ['id', 'Usage']"),
])
def test_a_damaged_fold_file_is_one_line(root, data, capsys, file, breakage, fragment):
    """Its folds.json re-recorded too (a hand-made pair): the values themselves are checked."""
    path = root / "folds" / NAME / file
    path.write_text(breakage(path.read_text()))
    record_path = root / "folds" / NAME / "folds.json"
    record = json.loads(record_path.read_text())
    record["files"][file] = hashlib.sha256(path.read_bytes()).hexdigest()
    record_path.write_text(json.dumps(record))
    err = fails("train", root, data, capsys)
    assert fragment in err and str(path) in err


def test_a_fold_file_changed_behind_its_record_is_one_line(root, data, capsys):
    path = root / "folds" / NAME / "folds.csv"
    path.write_text(_fold(path.read_text(), 2, "1"))
    err = fails("train", root, data, capsys)
    assert f"{path}: differs from its digest in folds.json" in err


def _fold(text: str, row: int, value: str) -> str:
    """``folds.csv`` (or ``holdout.csv``) text with the second cell of 0-based data row ``row`` set to ``value``."""
    lines = text.splitlines()
    lines[row + 1] = lines[row + 1].split(",")[0] + "," + value
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("content", "fragment"), [
    ("", "fold.json: empty, a damaged artefact (cut short?); delete"),
    ('{"lineage": {"config": "ab', "fold.json: not valid JSON (Unterminated string starting at: line 1 column 24 (char 23)), a damaged"),
    ("[1, 2]", "fold.json: holds a JSON list, not an object"),
])
def test_a_damaged_fold_json_is_one_line(root, data, capsys, content, fragment):
    path = root / "runs" / NAME / "cnn_small" / "fold0" / "fold.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    err = fails("train", root, data, capsys)
    assert fragment in err and str(path) in err


@pytest.mark.parametrize(("breakage", "fragment"), [
    (lambda t: "", "holdout.csv: the file is empty (a damaged artefact); delete it and rerun its stage"),
    (_cut, "column 'p_"),  # a row cut mid-way: its last probabilities are blank
    (lambda t: _fold(t, 3, "x,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1"), "holdout.csv: line 5, column 'p_0': 'x' is not a probability"),
])
def test_a_damaged_probability_file_is_one_line(tmp_path, dacon, breakage, fragment):
    """The probability reader under every stage (written here by compkit's own writer, then damaged): one line.

    Stages reach it only after the file matched its record's digest (test_artifacts.py covers a file changed
    behind its record), so this calls the reader itself.
    """
    from compkit.errors import CompkitError
    from compkit.io import proba_frame, read_proba, write_csv

    classes = [f"p_{c}" for c in dacon().competition.classes]
    path = tmp_path / "holdout.csv"
    write_csv(proba_frame("id", np.arange(10), np.full((10, 10), 0.1), classes), path)
    path.write_text(breakage(path.read_text()))
    with pytest.raises(CompkitError) as err:
        read_proba(path, "id", classes)
    message = str(err.value)
    assert fragment in message and str(path) in message and "delete it and rerun its stage" in message and "\n" not in message


# -- Ctrl-C --------------------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    """Pids of ``pid``'s child processes (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _signal_masks(pid: int) -> dict[str, str]:
    """SigBlk / SigIgn / SigCgt of ``pid`` (hex masks from /proc/<pid>/status)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in ("SigBlk", "SigIgn", "SigCgt")}


def _catches_sigint(pids: list[int]) -> bool:
    """True when one of ``pids`` has a SIGINT handler of its own (bit 1 of SigCgt): a fold process past its start-up."""
    for pid in pids:
        try:
            fold = "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except OSError:
            continue
        if fold and int(_signal_masks(pid).get("SigCgt", "0"), 16) & 2:
            return True
    return False


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(root, data):
    """SIGINT to the process group (what a terminal's Ctrl-C sends) while the first fold trains."""
    import signal
    import time

    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "compkit", "train", *argv(root, data), "--set", "train.epochs=50", "--set", "train.patience=50"]
    # A terminal's foreground job has Ctrl-C at its default; an ignored SIGINT is inherited (a pytest-xdist worker
    # that ran ray.init ignores it), and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not _catches_sigint(_children(proc.pid)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # until the fold's own process has started and set its Ctrl-C handler
    time.sleep(2)
    masks = {pid: _signal_masks(pid) for pid in [proc.pid, *_children(proc.pid)]}
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, (masks, err[-2000:])
    # TensorFlow's C++ log lines (absl format: I0000 00:00:...) of a fold process still importing when Ctrl-C came may
    # reach the shared stderr after the parent's last word; compkit's own lines end with its one line
    ours = [line for line in err.splitlines() if line and not re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d", line)]
    assert ours[-1] == "compkit: interrupted; rerun the same command to resume" and "Traceback" not in err
    assert not (root / "runs" / NAME / "cnn_small" / "fold0" / "fold.json").exists()


# -- secrets -------------------------------------------------------------------------------------------------

SECRET = "Hunter2-s3cret"


@pytest.mark.parametrize(("text", "masked"), [
    (f"postgresql://optuna:{SECRET}@db.example:5432/studies", "postgresql://optuna:***@db.example:5432/studies"),
    (f"postgresql+psycopg://u:{SECRET}@h@127.0.0.1/x?sslmode=require", "postgresql+psycopg://u:***@127.0.0.1/x?sslmode=require"),
    (f"storage 'mysql://root:{SECRET}@h/db' failed", "storage 'mysql://root:***@h/db' failed"),
    (f"postgresql://h/db?user=u&password={SECRET}&x=1", "postgresql://h/db?user=u&password=***&x=1"),
    ("sqlite:////tmp/runs/optuna.db", "sqlite:////tmp/runs/optuna.db"),
    ("postgresql://postgres@127.0.0.1:5432/compkit", "postgresql://postgres@127.0.0.1:5432/compkit"),
])
def test_mask_hides_url_passwords(text, masked):
    from sqlalchemy.engine import make_url

    from compkit.redact import mask

    assert mask(text) == masked
    if text.startswith("postgresql://optuna"):  # the same as SQLAlchemy's own rendering
        assert mask(text) == make_url(text).render_as_string(hide_password=True)


def test_a_storage_password_reaches_no_wandb_file(tmp_path, dacon, dacon_dir, monkeypatch):
    """A real offline W&B run of a config with a password in tune.storage, started from a command line holding it."""
    from compkit.config import Paths
    from compkit.tracking import read_run, tracked

    url = f"postgresql://optuna:{SECRET}@127.0.0.1:5432/studies"
    config = dacon("smoke", f'tune.storage="{url}"')
    argv_with_secret = ["compkit", "tune", "--set", f"tune.storage='{url}'"]
    monkeypatch.setattr(sys, "argv", argv_with_secret)
    with tracked(config, Paths.for_competition(NAME, tmp_path, dacon_dir), "tune", "trial0", {"storage": url}) as tracker:
        assert tracker.active
        tracker.summarize({"value": 0.5})
    assert sys.argv == argv_with_secret  # masked only while W&B read it
    import wandb

    wandb.teardown()  # finish() may return before W&B's service has written the run file: wait for it
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["config"]["tune"]["storage"] == run["config"]["storage"] == "postgresql://optuna:***@127.0.0.1:5432/studies"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 3 and not [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert any(b"tune.storage='postgresql://optuna:***@" in p.read_bytes() for p in files)  # the masked command line


def test_a_storage_error_is_one_masked_line(root, data, capsys, monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", f"postgresql://optuna:{SECRET}@127.0.0.1:1/studies")  # nothing listens on port 1
    err = fails("tune-status", root, data, capsys)
    assert "tune storage postgresql://optuna:***@127.0.0.1:1/studies: cannot open it (OperationalError" in err and SECRET not in err


def test_tune_and_tune_status_print_no_password(root, data, capsys, monkeypatch):
    """`make tune` (its study already finished) and `make tune-status` on a real PostgreSQL URL with a password."""
    import optuna
    from optuna.distributions import FloatDistribution

    server = os.environ.get("COMPKIT_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server: set COMPKIT_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: source .ci/postgres.sh")
    scheme, rest = server.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user.split(':')[0]}:{SECRET}@{host}"  # a trust-auth server accepts any password
    try:
        optuna.delete_study(study_name=f"{NAME}-cnn_small", storage=url)
    except KeyError:
        pass
    study = optuna.create_study(study_name=f"{NAME}-cnn_small", storage=url, direction="maximize")
    for value in (0.4, 0.6):
        study.add_trial(optuna.trial.create_trial(params={"dropout": value / 2}, distributions={"dropout": FloatDistribution(0, 0.5)}, value=value))
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    capsys.readouterr()
    assert main(["tune", *argv(root, data), "--trials", "2"]) == 0
    assert main(["tune-status", *argv(root, data)]) == 0
    out = "".join(capsys.readouterr())
    masked = f"{scheme}://{user.split(':')[0]}:***@{host}"
    assert SECRET not in out and out.count(masked) == 2, out  # the tune summary and the status table's title
