"""The platform loop: zip import on real files, the one-line errors of download/upload/lb-sync without
credentials or network, and the merge of a Kaggle submission listing (built from the kaggle package's own
response objects) into leaderboard.csv."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from compkit import platform
from compkit.cli import main
from compkit.config import Paths, load_config
from compkit.data import load_test, load_train
from compkit.errors import CompkitError
from compkit.io import write_csv
from compkit.platform import PlatformError
from conftest import FAKE_KEY, REPO, one_line_error

CONFIGS = ["--config-dir", str(REPO / "configs")]


def _zip(path: Path, files: dict[str, Path | bytes]) -> Path:
    """A zip at ``path`` holding each member name's file (a path) or bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source in files.items():
            if isinstance(source, bytes):
                zf.writestr(name, source)
            else:
                zf.write(source, name)
    return path


def _dacon_zip(tmp_path: Path, dacon_dir: Path, prefix: str = "", **extra) -> Path:
    files = {f"{prefix}train.csv": dacon_dir / "train.csv", f"{prefix}submission.csv": dacon_dir / "submission.csv", **extra}
    return _zip(tmp_path / "dacon.zip", files)


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# FROM_ZIP
# ---------------------------------------------------------------------------------------------


def test_from_zip_unpacks_checks_and_gives_the_same_folds(tmp_path, dacon_dir):
    archive = _dacon_zip(tmp_path, dacon_dir)
    imported, shared = tmp_path / "imported", tmp_path / "shared"
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", *CONFIGS]
    assert main(["data", *argv, "--root", str(imported), "--from-zip", str(archive)]) == 0
    data = imported / "data" / "dacon-cv-2020"
    assert (data / "train.csv").read_bytes() == (dacon_dir / "train.csv").read_bytes()
    assert _left_over(data.parent) == ["dacon-cv-2020"]  # no staging folder left behind

    assert main(["folds", *argv, "--root", str(imported)]) == 0
    assert main(["folds", *argv, "--root", str(shared), "--data-dir", str(dacon_dir)]) == 0
    for name in ("folds.csv", "holdout.csv"):
        assert (imported / "folds/dacon-cv-2020" / name).read_bytes() == (shared / "folds/dacon-cv-2020" / name).read_bytes()


def test_from_zip_strips_a_nested_top_folder_of_a_kaggle_image_layout(tmp_path, fmnist_small):
    """A Kaggle-style image-folder competition written from real Fashion-MNIST images, zipped under ``clothes/``."""
    from test_competitions import _image_folder

    (x, y), _ = fmnist_small
    source, configs = _image_folder(tmp_path / "src", x, y, n_train=200, n_test=30)
    members = {f"clothes/{p.relative_to(source).as_posix()}": p for p in sorted(source.rglob("*")) if p.is_file()}
    archive = _zip(tmp_path / "clothes.zip", members)
    config = load_config("clothes", None, [], configs)
    paths = Paths.for_competition("clothes", tmp_path / "root")
    platform.import_zip(config, paths, archive)
    assert (paths.data / "labels.csv").is_file() and not (paths.data / "clothes").exists()
    train, test = load_train(paths.data, config.competition), load_test(paths.data, config.competition)
    assert train.images.shape == (200, 28, 28, 1) and len(test.ids) == 30
    assert (train.images[1, :, :, 0] == x[1]).all()  # a 28x28 gray PNG round-trips exactly


def test_from_zip_unpacks_inner_zips_of_a_kaggle_download(tmp_path, fmnist_small):
    """digit-recognizer's layout from real Fashion-MNIST rows, train.csv inside train.csv.zip as Kaggle ships some files."""
    (x, y), _ = fmnist_small
    pixels = [f"pixel{i}" for i in range(784)]
    train = pd.DataFrame(x[:600].reshape(600, -1), columns=pixels)  # 10% holdout, a quarter public: 15 rows >= 10 classes
    train.insert(0, "label", y[:600])
    train.to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(x[600:650].reshape(50, -1), columns=pixels).to_csv(tmp_path / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, 51), "Label": 0}).to_csv(tmp_path / "sample_submission.csv", index=False)
    inner = _zip(tmp_path / "train.csv.zip", {"train.csv": tmp_path / "train.csv"})
    archive = _zip(tmp_path / "digit-recognizer.zip", {"train.csv.zip": inner, "test.csv": tmp_path / "test.csv",
                                                       "sample_submission.csv": tmp_path / "sample_submission.csv"})
    root = tmp_path / "root"
    assert main(["data", "--competition", "digit-recognizer", *CONFIGS, "--root", str(root), "--from-zip", str(archive)]) == 0
    data = root / "data" / "digit-recognizer"
    assert sorted(p.name for p in data.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert (data / "train.csv").read_bytes() == (tmp_path / "train.csv").read_bytes()


@pytest.fixture(scope="module")
def fmnist_small():
    from compkit.datasets import DEBIAN_FASHION_MNIST, fashion_mnist

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    return fashion_mnist()


def test_from_zip_missing_file_is_one_line_and_changes_nothing(tmp_path, dacon_dir, capsys):
    archive = _zip(tmp_path / "dacon.zip", {"train.csv": dacon_dir / "train.csv"})  # no submission.csv
    argv = ["data", "--competition", "dacon-cv-2020", *CONFIGS, "--root", str(tmp_path / "root"), "--from-zip", str(archive)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dacon.zip: has no submission.csv (found ['train.csv'])" in err
    assert not (tmp_path / "root").exists()  # not even data/


def test_from_zip_refuses_a_path_escaping_the_folder(tmp_path, dacon_dir):
    archive = _dacon_zip(tmp_path, dacon_dir, **{"../escaped.txt": b"outside"})
    paths = Paths.for_competition("dacon-cv-2020", tmp_path / "root")
    with pytest.raises(PlatformError, match=r"member '\.\./escaped\.txt' escapes the folder; refusing to unpack"):
        platform.import_zip(load_config("dacon-cv-2020", None, [], REPO / "configs"), paths, archive)
    assert not (tmp_path / "root").exists() and not (tmp_path / "escaped.txt").exists()


def test_from_zip_failing_the_check_leaves_nothing(tmp_path, dacon_dir):
    bad = tmp_path / "submission.csv"
    bad.write_text("id,label\n2049,0\n")  # the sample's columns are id, digit
    archive = _zip(tmp_path / "dacon.zip", {"dacon/train.csv": dacon_dir / "train.csv", "dacon/submission.csv": bad})
    paths = Paths.for_competition("dacon-cv-2020", tmp_path / "root")
    with pytest.raises(CompkitError, match=r"submission.csv: columns \['id', 'label'\] differ from competition.submission_columns"):
        platform.import_zip(load_config("dacon-cv-2020", None, [], REPO / "configs"), paths, archive)
    assert not (tmp_path / "root").exists()


def test_from_zip_never_overwrites_data(tmp_path, dacon_dir):
    paths = Paths.for_competition("dacon-cv-2020", tmp_path / "root")
    paths.data.mkdir(parents=True)
    (paths.data / "train.csv").write_text("mine")
    with pytest.raises(PlatformError, match=r"already holds files; delete the folder or pass DATA_DIR"):
        platform.import_zip(load_config("dacon-cv-2020", None, [], REPO / "configs"), paths, _dacon_zip(tmp_path, dacon_dir))
    assert _left_over(paths.data) == ["train.csv"] and (paths.data / "train.csv").read_text() == "mine"
    assert _left_over(paths.data.parent) == ["dacon-cv-2020"]


# ---------------------------------------------------------------------------------------------
# Without credentials or network: one line, nothing local changed
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def board_root(tmp_path, dacon_dir):
    """A digit-recognizer root with one real submission file and its leaderboard row (with the file's sha256, as
    `make submit` writes it), and the competition's sample submission in data/digit-recognizer (--data-dir)."""
    folder, data = tmp_path / "submissions" / "digit-recognizer", tmp_path / "data" / "digit-recognizer"
    folder.mkdir(parents=True)
    data.mkdir(parents=True)
    sample = pd.read_csv(dacon_dir / "submission.csv").rename(columns={"id": "ImageId", "digit": "Label"})
    sample.to_csv(folder / "20260101T000000Z_blend-best.csv", index=False)
    sample.to_csv(data / "sample_submission.csv", index=False)
    pd.DataFrame([{"time": "2026-01-01T00:00:00+00:00", "name": "blend-best", "file": "20260101T000000Z_blend-best.csv",
                   "backbones": "cnn_small", "blend": "best", "cv": 0.91, "public": 0.9, "private": 0.89,
                   "sha256": hashlib.sha256((folder / "20260101T000000Z_blend-best.csv").read_bytes()).hexdigest()}]
                 ).to_csv(folder / "leaderboard.csv", index=False)
    return tmp_path


def _run(stage: str, root: Path, capsys, *extra: str) -> str:
    return one_line_error(capsys, main([stage, "--competition", "digit-recognizer", *CONFIGS, "--root", str(root), "--data-dir",
                                        str(root / "data" / "digit-recognizer"), *extra]), absent=(FAKE_KEY,))


@pytest.mark.parametrize("stage", ["upload", "lb-sync"])
def test_without_credentials_one_line_and_leaderboard_unchanged(stage, board_root, no_credentials, capsys):
    board = board_root / "submissions/digit-recognizer/leaderboard.csv"
    before = board.read_bytes()
    err = _run(stage, board_root, capsys)
    assert "kaggle: no credentials" in err and ".kaggle/kaggle.json" in err and "KAGGLE_USERNAME and KAGGLE_KEY" in err
    assert board.read_bytes() == before
    assert not (board_root / "home").exists()  # the kaggle package was not even imported


@pytest.mark.parametrize("stage", ["upload", "lb-sync"])
def test_without_network_one_line_and_leaderboard_unchanged(stage, board_root, fake_credentials, capsys):
    board = board_root / "submissions/digit-recognizer/leaderboard.csv"
    before = board.read_bytes()
    err = _run(stage, board_root, capsys)
    assert "kaggle: cannot reach Kaggle to" in err and "check the network" in err
    assert board.read_bytes() == before and not (board_root / "runs").exists()


def test_download_without_network_changes_nothing(tmp_path, fake_credentials, capsys):
    err = _run("data", tmp_path, capsys, "--data-dir", str(tmp_path / "data" / "dr"))
    assert "cannot reach Kaggle to download the files" in err
    assert _left_over(tmp_path / "data") == []


def test_download_without_credentials_names_them(tmp_path, no_credentials, capsys):
    err = _run("data", tmp_path, capsys)
    assert "kaggle: no credentials" in err and "or pass FROM_ZIP=<the competition's zip>" in err
    assert not (tmp_path / "data").exists()


def test_dacon_data_points_to_from_zip(tmp_path, capsys):
    assert main(["data", "--competition", "dacon-cv-2020", *CONFIGS, "--root", str(tmp_path)]) == 2
    assert "cannot download a 'dacon' competition; download its zip from https://dacon.io" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_upload_refuses_a_dacon_competition(tmp_path, capsys):
    assert main(["upload", "--competition", "dacon-cv-2020", *CONFIGS, "--root", str(tmp_path)]) == 2
    assert "competition.platform is 'dacon': compkit talks only to Kaggle's API" in capsys.readouterr().err


def test_upload_of_an_unknown_file_names_the_choices(board_root, fake_credentials, capsys):
    err = _run("upload", board_root, capsys, "--file", "nope.csv")
    assert "no row for nope.csv; pass FILE= one of ['20260101T000000Z_blend-best.csv']" in err


# ---------------------------------------------------------------------------------------------
# lb-sync's merge, on the kaggle package's own response objects
# ---------------------------------------------------------------------------------------------


def _submission(ref: int, file_name: str, date: datetime, status: str, public: str | None, private: str | None):
    """An ``ApiSubmission`` as ``KaggleApi.competition_submissions`` returns it (kagglesdk's model class)."""
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission
    from kagglesdk.competitions.types.submission_status import SubmissionStatus

    s = ApiSubmission()
    s.ref, s.file_name, s.date, s.status = ref, file_name, date, SubmissionStatus[status]
    s.description = "blend-best | blend best | cnn_small | CV 0.91000"
    s.total_bytes, s.submitted_by, s.team_name = 1234, "compkit-test", "compkit-test"
    if public is not None:
        s.public_score = public
    if private is not None:
        s.private_score = private
    return s


def _board() -> pd.DataFrame:
    rows = [("2026-01-01T10:00:00+00:00", "a", "20260101T100000Z_a.csv", 0.91, 0.90),
            ("2026-01-02T10:00:00+00:00", "b", "20260102T100000Z_b.csv", 0.93, 0.92),
            ("2026-01-03T10:00:00+00:00", "c", "20260103T100000Z_c.csv", 0.92, 0.93),
            ("2026-01-04T10:00:00+00:00", "d", "20260104T100000Z_d.csv", 0.95, 0.94)]
    return pd.DataFrame([{"time": t, "name": n, "file": f, "backbones": "cnn_small", "blend": "best", "cv": cv,
                          "public": pub, "private": pub - 0.01} for t, n, f, cv, pub in rows])


def _listing() -> list:
    day = lambda d, h: datetime(2026, 1, d, h, 5)  # noqa: E731 (naive UTC, as the API's DateTimeSerializer reads it)
    return [
        _submission(104, "20260104T100000Z_d.csv", day(4, 10), "PENDING", None, None),
        _submission(103, "20260103T100000Z_c.csv", day(3, 10), "COMPLETE", "0.92500", "0.93100"),
        _submission(102, "20260102T100000Z_b.csv", day(2, 10), "COMPLETE", "0.93750", None),
        _submission(101, "20260101T100000Z_a.csv", day(1, 10), "ERROR", None, None),
        _submission(100, "20260101T100000Z_a.csv", day(1, 11), "COMPLETE", "0.90250", None),
        _submission(99, "20260102T100000Z_b.csv", day(1, 9), "COMPLETE", "0.10000", None),  # same name, a day before b's row
        _submission(98, "by-hand.csv", day(1, 8), "COMPLETE", "0.50000", None),
    ]


def test_listing_is_saved_as_the_api_returns_it(tmp_path):
    path = tmp_path / "submissions.json"
    platform.save_listing(_listing(), path)
    saved = json.loads(path.read_text())
    first = saved["submissions"][1]
    assert {"ref", "date", "fileName", "publicScore", "privateScore", "status", "description"} <= set(first)
    assert first["publicScore"] == "0.92500" and first["status"] == "COMPLETE" and first["date"] == "2026-01-03T10:05:00.000Z"
    loaded = platform.load_listing(path)
    assert [s.ref for s in loaded] == [s.ref for s in _listing()] and loaded[1].date == datetime(2026, 1, 3, 10, 5)


def test_merge_matches_by_file_and_time_and_is_idempotent(tmp_path):
    path = tmp_path / "submissions.json"
    platform.save_listing(_listing(), path)
    merged, matched = platform.merge_platform_scores(_board(), platform.load_listing(path))
    assert matched == 4
    by_name = merged.set_index("name")
    assert by_name.at["a", "platform_ref"] == 100 and by_name.at["a", "platform_public"] == pytest.approx(0.9025)  # complete beats error
    assert by_name.at["b", "platform_ref"] == 102 and by_name.at["b", "platform_public"] == pytest.approx(0.9375)  # not 99: made before b
    assert pd.isna(by_name.at["b", "platform_private"])  # private is empty before the deadline
    assert by_name.at["c", "platform_private"] == pytest.approx(0.931)
    assert by_name.at["d", "platform_status"] == "PENDING" and pd.isna(by_name.at["d", "platform_public"])
    assert list(merged.columns[:8]) == list(_board().columns)  # the local columns come first, untouched
    pd.testing.assert_frame_equal(merged[_board().columns], _board())

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    write_csv(merged, first)
    write_csv(platform.merge_platform_scores(pd.read_csv(first), platform.load_listing(path))[0], second)
    assert first.read_bytes() == second.read_bytes()


def test_merge_keeps_the_recorded_upload(tmp_path):
    board = _board()
    board["platform_ref"] = [101, None, None, None]  # `make upload` recorded submission 101 for a
    merged, _ = platform.merge_platform_scores(board, _listing())
    assert merged.at[0, "platform_ref"] == 101 and merged.at[0, "platform_status"] == "ERROR"


def test_merge_finds_a_code_submission_by_its_recorded_ref():
    """A code competition's platform file is the kernel's output (submission.csv), never the row's file name: the ref
    `make upload` recorded is what matches."""
    board = _board()
    board["platform_ref"] = [None, None, 98, None]
    merged, matched = platform.merge_platform_scores(board, _listing())
    assert merged.at[2, "platform_ref"] == 98 and merged.at[2, "platform_public"] == 0.5 and matched == 4


def test_upload_record_then_sync(tmp_path):
    """What `make upload` writes after Kaggle accepted submission 101, then what `make lb-sync` adds to it."""
    path = tmp_path / "leaderboard.csv"
    write_csv(platform.record_upload(_board(), 0, 101, datetime(2026, 1, 1, 10, 4).astimezone()), path)
    uploaded = pd.read_csv(path)
    assert uploaded.at[0, "platform_ref"] == 101 and uploaded["platform_ref"].isna().sum() == 3
    assert pd.Timestamp(uploaded.at[0, "uploaded"]).tzinfo is not None and "101.0" not in path.read_text()
    merged, _ = platform.merge_platform_scores(uploaded, _listing())
    assert merged.at[0, "platform_status"] == "ERROR" and merged.at[0, "uploaded"] == uploaded.at[0, "uploaded"]


def test_report_section_shows_rank_correlations(tmp_path):
    from compkit.report import platform as platform_report
    from compkit.report.page import _Page

    merged, _ = platform.merge_platform_scores(_board(), _listing())
    table = platform_report.rank_correlations(merged)
    assert table.set_index("score").at["public", "spearman"] == pytest.approx(0.8)  # cv ranks a c b d, public a b c d
    assert table.set_index("score").at["platform_public", "rows"] == 3
    page = _Page(tmp_path)
    platform_report.report_section(page, merged, "accuracy")
    html = "\n".join(page.parts)
    assert "CV vs the platform" in html and 'id="platform-correlation"' in html and (tmp_path / "platform.png").is_file()
    empty = _Page(tmp_path / "none")
    platform_report.report_section(empty, _board(), "accuracy")  # no platform scores yet: no section
    assert empty.parts == []


def test_upload_message_names_the_submission():
    row = _board().iloc[1]
    assert platform.upload_message(row) == "b | blend best | cnn_small | CV 0.93000"


@pytest.mark.slow
def test_report_draws_cv_against_the_synced_platform_scores(tiny_run, tmp_path):
    """Three real submissions, a listing of them as Kaggle would return it merged in, then `make report`."""
    root, argv = tiny_run
    argv = [a if a != str(root) else str(tmp_path) for a in argv]
    shutil.copytree(root / "folds", tmp_path / "folds")
    shutil.copytree(root / "runs", tmp_path / "runs")
    for name in ("first", "second", "third"):
        assert main(["submit", *argv, "--name", name]) == 0
    board_path = tmp_path / "submissions/dacon-cv-2020/leaderboard.csv"
    board = pd.read_csv(board_path)
    listing = [_submission(200 + i, row.file, pd.Timestamp(row.time).tz_convert(None).to_pydatetime() + timedelta(minutes=1),
                           "COMPLETE", f"{0.9 + i / 100:.5f}", None) for i, row in enumerate(board.itertuples())]
    merged, matched = platform.merge_platform_scores(board, listing)
    assert matched == 3
    write_csv(merged, board_path)
    assert main(["report", *argv]) == 0
    page = (tmp_path / "runs/dacon-cv-2020/report/index.html").read_text(encoding="utf-8")
    assert "CV vs the platform" in page and 'id="platform-correlation"' in page and "platform_public" in page
    assert (tmp_path / "runs/dacon-cv-2020/report/platform.png").is_file()
