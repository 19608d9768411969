"""`make report` on a real smoke run of the DACON data, and the report's statistics on their own.

The pipeline runs once (2 folds, 1 epoch, both smoke backbones, in-process) and submits twice;
every number the page shows is recomputed here from the stage files with pandas/sklearn and
compared with the HTML tables as formatted (4 decimals).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

from compkit.cli import main
from compkit.metrics import score
from compkit.report import (bootstrap_interval, flip_probability, fold_spread, metric_flip_probability, metric_interval,
                            resampled_scores, true_class_correlation)
from conftest import one_line_error, read_oof

BACKBONES = ["cnn_small", "resnet_small"]
# One xdist worker runs this module: the module's smoke run (`run`) is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("report")

COMP = "dacon-cv-2020"


def _f4(value) -> str:
    return f"{value:.4f}"


class _TableParser(HTMLParser):
    """Every ``<table id=...>`` of a page as a list of rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None


def tables(page: str) -> dict[str, pd.DataFrame]:
    """The page's tables by id, every cell a string."""
    parser = _TableParser()
    parser.feed(page)
    return {key: pd.DataFrame(rows[1:], columns=rows[0]) for key, rows in parser.tables.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory, dacon_dir):
    """A smoke run of the four stages, a second submission, then the report.

    It trains 2 backbones x 2 folds (about 90 s on 2 cores), so every test that uses it is marked slow.
    """
    root = tmp_path_factory.mktemp("report")
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(root), "--config-dir", "configs",
            "--set", "folds.n_splits=2", "--set", "train.epochs=1", "--set", "train.process_per_fold=false"]
    assert main(["all", *argv]) == 0
    assert main(["submit", *argv, "--name", "again"]) == 0
    assert main(["report", *argv]) == 0
    folder = root / "runs" / COMP / "report"
    return root, argv, folder, (folder / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def truth(dacon_dir):
    return pd.read_csv(dacon_dir / "train.csv", usecols=["id", "digit", "letter"]).set_index("id")


def _blend_oof(root):
    folds = pd.read_csv(root / f"folds/{COMP}/folds.csv").set_index("id")["fold"]
    oof = pd.read_csv(root / f"runs/{COMP}/ensemble/oof.csv")
    return oof.assign(fold=folds.loc[oof["id"]].to_numpy()).sort_values("id").reset_index(drop=True)


def _ensemble(root) -> dict:
    return json.loads((root / f"runs/{COMP}/ensemble/ensemble.json").read_text())


def _proba(frame):
    return frame[[f"p_{c}" for c in range(10)]].to_numpy()


# ---------------------------------------------------------------------------------------------
# The page and its figures
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_figure_is_written_and_embedded(run):
    _, _, folder, page = run
    pngs = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert set(pngs) == {
        "leaderboard.png", "holdout_intervals.png", "blends.png", "correlation.png", "wrong.png", "accuracy_by_letter.png",
        *(f"confusion_{m}.png" for m in ["blend", *BACKBONES]), *(f"learning_curves_{b}.png" for b in BACKBONES),
    }
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == set(pngs.values())  # the page holds exactly the bytes of the PNG files
    assert "http://" not in page and "https://" not in page  # opens offline
    for name, data in pngs.items():
        pixels = imread(folder / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200, name
        assert pixels[..., :3].std() > 0.05, f"{name} looks blank"


@pytest.mark.slow
def test_leaderboard_table_equals_the_csv(run):
    root, _, _, page = run
    board = pd.read_csv(root / f"submissions/{COMP}/leaderboard.csv")
    shown = tables(page)["leaderboard"]
    assert len(board) == 2 and list(shown.columns) == list(board.columns)
    for column in board.columns:
        expected = [_f4(v) if isinstance(v, float) else str(v) for v in board[column]]
        assert shown[column].tolist() == expected, column


@pytest.mark.slow
def test_oof_table_equals_the_oof_files(run, truth):
    root, _, _, page = run
    shown = tables(page)["oof"].set_index("model")
    ensemble = _ensemble(root)
    frames = {f"blend ({ensemble['selected']})": _blend_oof(root), **{b: read_oof(root, b, 2) for b in BACKBONES}}
    assert shown.index.tolist() == list(frames)
    for model, frame in frames.items():
        proba, y = _proba(frame), truth.loc[frame["id"], "digit"].to_numpy()
        right = proba.argmax(1) == y
        per_fold = np.array([right[frame["fold"].to_numpy() == k].mean() for k in range(2)])
        row = shown.loc[model]
        assert row["OOF accuracy"] == _f4(accuracy_score(y, proba.argmax(1)))
        assert row["fold mean ± std"] == f"{_f4(per_fold.mean())} ± {_f4(per_fold.std())}"
        assert row["per fold"] == ", ".join(map(_f4, per_fold))
        assert row["OOF log loss"] == _f4(log_loss(y, proba / proba.sum(1, keepdims=True), labels=range(10)))
        assert row["rows"] == str(len(frame))


@pytest.mark.slow
def test_per_class_tables_equal_sklearn_on_the_oof_files(run, truth):
    root, _, _, page = run
    found = tables(page)
    for key, frame in {"blend": _blend_oof(root), **{b: read_oof(root, b, 2) for b in BACKBONES}}.items():
        shown = found[f"per-class-{key}"].set_index("class")
        y, pred = truth.loc[frame["id"], "digit"].to_numpy(), _proba(frame).argmax(1)
        precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
        for c in range(10):
            assert shown.loc[str(c)].tolist() == [_f4(precision[c]), _f4(recall[c]), _f4(f1[c]), str(support[c])]
        assert shown.loc["macro avg", "f1-score"] == _f4(f1.mean())


@pytest.mark.slow
def test_blend_table_equals_ensemble_json(run):
    root, _, _, page = run
    ensemble = _ensemble(root)
    shown = tables(page)["blends"].set_index("blend")
    best = max(BACKBONES, key=lambda b: ensemble["scores"][b]["accuracy"])
    assert sorted(shown.index) == ["caruana", "equal", "fitted", "hard"]
    for name, spec in ensemble["blends"].items():
        row = shown.loc[name]
        assert row["selected"] == ("yes" if name == ensemble["selected"] else "")
        weights = ["n/a"] * 2 if name == "hard" else [_f4(spec["weights"][b]) for b in BACKBONES]  # hard: one vote each
        assert [row[f"w {b}"] for b in BACKBONES] == weights
        assert row["accuracy"] == _f4(spec["accuracy"]) and row["log loss"] == _f4(spec["log_loss"])
        assert row["accuracy gain"] == _f4(spec["accuracy"] - ensemble["scores"][best]["accuracy"])
        assert row["log loss gain"] == _f4(ensemble["scores"][best]["log_loss"] - spec["log_loss"])


@pytest.mark.slow
def test_correlation_table_equals_the_oof_files(run, truth):
    root, _, _, page = run
    shown = tables(page)["correlation"].set_index("backbone")
    p_true = []
    for backbone in BACKBONES:
        frame = read_oof(root, backbone, 2)
        y = truth.loc[frame["id"], "digit"].to_numpy()
        p_true.append(_proba(frame)[np.arange(len(y)), y])
    r = np.corrcoef(p_true)[0, 1]
    assert shown.loc["cnn_small", "resnet_small"] == shown.loc["resnet_small", "cnn_small"] == _f4(r)
    assert shown.loc["cnn_small", "cnn_small"] == "1.0000"


@pytest.mark.slow
def test_accuracy_per_letter_equals_the_oof_files(run, truth):
    root, _, _, page = run
    shown = tables(page)["extra-letter"].set_index("value")
    frame = _blend_oof(root)
    right = pd.Series(_proba(frame).argmax(1) == truth.loc[frame["id"], "digit"].to_numpy(), index=frame["id"])
    letters = truth.loc[frame["id"], "letter"].to_numpy()
    expected = right.groupby(letters).agg(["size", "mean"])
    assert shown.index.tolist() == sorted(expected.index) and len(expected) == 26
    ensemble = _ensemble(root)
    column = f"blend ({ensemble['selected']})"
    for letter, (n, accuracy) in expected.iterrows():
        assert shown.loc[letter, "n"] == str(int(n)) and shown.loc[letter, column] == _f4(accuracy)


@pytest.mark.slow
def test_holdout_table_agrees_with_the_leaderboard_and_the_holdout_files(run, truth):
    root, _, _, page = run
    shown = tables(page)["holdout"].set_index("name")
    board = pd.read_csv(root / f"submissions/{COMP}/leaderboard.csv")
    for row in board.itertuples():
        assert shown.loc[row.name, "kind"] == "submission"
        assert shown.loc[row.name, ["public", "private", "cv"]].tolist() == [_f4(row.public), _f4(row.private), _f4(row.cv)]
    holdout = pd.read_csv(root / f"folds/{COMP}/holdout.csv")
    y = truth.loc[holdout["id"], "digit"].to_numpy()
    for backbone in BACKBONES:
        mean = np.mean([_proba(pd.read_csv(root / f"runs/{COMP}/{backbone}/fold{k}/holdout.csv")) for k in range(2)], axis=0)
        right = mean.argmax(1) == y
        for part in ("Public", "Private"):
            assert shown.loc[backbone, part.lower()] == _f4(right[(holdout["Usage"] == part).to_numpy()].mean())
    for name, row in shown.iterrows():
        for part in ("public", "private"):
            low, high = map(float, row[f"{part} 95% interval"].split(" to "))
            assert low <= float(row[part]) <= high, name
    flips = tables(page)["shakeup"]["P(flip)"].astype(float)
    assert len(flips) == len(shown) - 1 and flips.between(0, 1).all()
    assert "The public part of the holdout has 205 images" in page


@pytest.mark.slow
def test_wrong_table_lists_the_most_confident_mistakes(run, truth):
    root, _, _, page = run
    shown = tables(page)["wrong"]
    frame = _blend_oof(root)
    proba = _proba(frame)
    y = truth.loc[frame["id"], "digit"].to_numpy()
    wrong = proba.argmax(1) != y
    top = np.sort(proba.max(1)[wrong])[::-1][:24]
    assert len(shown) == min(24, wrong.sum())
    assert shown["confidence"].tolist() == [_f4(v) for v in top]
    for row in shown.itertuples(index=False):
        assert int(row.true) == truth.loc[int(row.id), "digit"] != int(row.predicted)
        assert row.letter == truth.loc[int(row.id), "letter"]


@pytest.mark.slow
def test_rerun_prints_a_line_per_figure_and_drops_stale_figures(run, capfd):
    root, argv, folder, _ = run
    (folder / "old_backbone.png").write_bytes(b"stale")
    capfd.readouterr()
    assert main(["report", *argv]) == 0
    out = capfd.readouterr().out
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert "old_backbone.png" not in pngs
    assert sorted(re.findall(r"^\[report\] (\S+\.png):", out, flags=re.M)) == pngs
    assert out.strip().splitlines()[-1].startswith(f"✓ report: {len(pngs)} figures")


@pytest.mark.slow
def test_without_submissions_the_page_says_so(run, tmp_path):
    root, argv, _, _ = run
    for folder in ("folds", "runs"):
        shutil.copytree(root / folder, tmp_path / folder)
    argv = [a if a != str(root) else str(tmp_path) for a in argv]
    assert main(["report", *argv]) == 0
    page = (tmp_path / f"runs/{COMP}/report/index.html").read_text(encoding="utf-8")
    assert "No submissions yet" in page
    found = tables(page)
    assert "leaderboard" not in found
    assert found["holdout"]["kind"].tolist() == ["ensemble", *["backbone"] * len(BACKBONES)]


@pytest.mark.slow
def test_a_submission_without_holdout_rows_is_named_and_left_out_of_the_bootstrap(run, tmp_path):
    root, argv, _, _ = run
    for folder in ("folds", "runs"):
        shutil.copytree(root / folder, tmp_path / folder)
    board = pd.read_csv(root / f"submissions/{COMP}/leaderboard.csv").iloc[:1].assign(name="gone", file="gone.csv")
    (tmp_path / f"submissions/{COMP}").mkdir(parents=True)
    board.to_csv(tmp_path / f"submissions/{COMP}/leaderboard.csv", index=False)
    assert main(["report", *[a if a != str(root) else str(tmp_path) for a in argv]]) == 0
    page = (tmp_path / f"runs/{COMP}/report/index.html").read_text(encoding="utf-8")
    assert "predicts the test file, whose labels are unknown): gone." in page
    found = tables(page)
    assert found["leaderboard"]["name"].tolist() == ["gone"]
    assert found["holdout"]["kind"].tolist() == ["ensemble", *["backbone"] * len(BACKBONES)]


def test_without_an_ensemble_the_report_is_a_one_line_error(tmp_path, dacon_dir, capsys):
    argv = ["report", "--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    err = one_line_error(capsys, main(argv))
    assert "ensemble.json: not found" in err
    assert not (tmp_path / f"runs/{COMP}/report").exists()


# ---------------------------------------------------------------------------------------------
# The statistics on their own
# ---------------------------------------------------------------------------------------------


def _correct(n: int, accuracy: float, rng) -> np.ndarray:
    """(n,) bool with exactly round(accuracy * n) True, at random places."""
    correct = np.zeros(n, dtype=bool)
    correct[: round(accuracy * n)] = True
    return rng.permutation(correct)


def test_bootstrap_interval_holds_the_point_and_narrows_as_the_holdout_grows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 200, 800, 3200):
        correct = _correct(n, 0.8, rng)
        point, low, high = bootstrap_interval(correct, seed=1)
        assert point == pytest.approx(0.8) and low < point < high
        widths.append(high - low)
        # about the normal approximation's 2 * 1.96 * sqrt(p (1 - p) / n)
        assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.16 / n), rel=0.15)
    assert widths == sorted(widths, reverse=True)
    assert widths[0] / widths[-1] == pytest.approx(8, rel=0.15)  # 64x the rows: 1/8 the width


def test_bootstrap_interval_matches_resampling_the_rows():
    rng = np.random.default_rng(2)
    correct = _correct(300, 0.7, rng)
    resampled = correct[rng.integers(0, 300, size=(20_000, 300))].mean(axis=1)
    _, low, high = bootstrap_interval(correct, level=0.9, seed=3)
    assert (low, high) == pytest.approx(tuple(np.quantile(resampled, [0.05, 0.95])), abs=0.01)
    assert bootstrap_interval(correct, seed=3) == bootstrap_interval(correct, seed=3)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_flip_probability_is_half_for_equally_good_random_submissions():
    rng = np.random.default_rng(4)
    a, b = _correct(1000, 0.7, rng), _correct(1000, 0.7, rng)
    p = flip_probability(a, b, n_public=205, n_private=205, seed=5)
    assert 0 <= p <= 1 and p == pytest.approx(0.5, abs=0.03)
    assert flip_probability(a, a, 205, 205) == 0.5  # the same rows right: a coin toss


def test_flip_probability_falls_with_a_real_gap_and_a_larger_public_part():
    rng = np.random.default_rng(6)
    good, bad = _correct(1000, 0.9, rng), _correct(1000, 0.5, rng)
    assert flip_probability(good, bad, 205, 205, seed=7) < 0.01
    near = _correct(1000, 0.72, rng)
    other = _correct(1000, 0.70, rng)
    by_size = [flip_probability(near, other, n, 20_000, seed=8) for n in (20, 200, 2000, 20_000)]
    assert all(0 <= p <= 1 for p in by_size)
    assert by_size == sorted(by_size, reverse=True) and by_size[0] > 0.35 and by_size[-1] < 0.05
    with pytest.raises(ValueError):
        flip_probability(good, bad[:10], 10, 10)


def test_true_class_correlation_and_fold_spread():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, size=500)
    p = rng.dirichlet(np.ones(3), size=(2, 500))
    probas = np.stack([p[0], p[0], p[1]])
    corr = true_class_correlation(probas, labels)
    assert corr.shape == (3, 3) and np.allclose(np.diag(corr), 1) and corr[0, 1] == pytest.approx(1)
    assert corr[0, 2] == pytest.approx(np.corrcoef(p[0][np.arange(500), labels], p[1][np.arange(500), labels])[0, 1])
    assert true_class_correlation(probas[:1], labels).shape == (1, 1)
    mean, std, per_fold = fold_spread(np.array([1, 1, 0, 1, 0, 0], dtype=bool), np.array([0, 0, 0, 1, 1, 1]))
    assert per_fold.tolist() == pytest.approx([2 / 3, 1 / 3]) and mean == pytest.approx(0.5) and std == pytest.approx(1 / 6)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "log_loss"])
def test_resampled_scores_equal_the_metric_on_the_materialised_resamples(metric):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, size=60)
    proba = rng.dirichlet(np.ones(5), size=60)
    proba[np.arange(60), labels] += rng.random(60)  # better than chance, rows renormalised inside
    counts = rng.multinomial(40, np.full(60, 1 / 60), size=6)
    got = resampled_scores(metric, labels, proba, counts)
    for row, value in zip(counts, got):
        rows = np.repeat(np.arange(60), row)
        assert value == pytest.approx(score(metric, labels[rows], proba[rows]), abs=1e-9)


def test_log_loss_interval_and_flips_follow_the_direction():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, size=400)
    good = np.full((400, 4), 0.1)
    good[np.arange(400), labels] = np.where(np.arange(400) % 2 == 0, 0.7, 0.4)  # rows of two losses
    good /= good.sum(axis=1, keepdims=True)
    bad = np.full((400, 4), 0.25)
    point, low, high = metric_interval("log_loss", labels, good, n_boot=2000)
    assert low < point < high and point == pytest.approx(log_loss(labels, good))
    assert metric_flip_probability("log_loss", labels, good, bad, 200, 200, n_boot=2000) == 0.0  # better on every resample
    assert metric_flip_probability("macro_f1", labels, good, good, 200, 200, n_boot=500) == 0.5  # identical: ties
