"""The artefact layer (compkit.artifacts): readers verify what they read against the record that made it,
multi-file outputs are committed as a whole, submit writes nothing until every check passed, ids keep
their text, and stages depend on the layer, not on each other. Real DACON rows and the TINY run."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compkit.artifacts import Layout
from compkit.cli import main
from compkit.config import Paths
from compkit.data import DataError
from compkit.folds import load_folds
from compkit.io import as_ids
from compkit.errors import CompkitError
from compkit.lineage import config_digest, folds_digest, resolved_config
from compkit.train import check_done_folds
from conftest import REPO, TINY, dacon_config, one_line_error, tree_digest

COMP = "dacon-cv-2020"
SRC = REPO / "src" / "compkit"


_config = partial(dacon_config, 'train.backbones=["cnn_small"]', "folds.n_splits=3", "train.epochs=1")


# ---------------------------------------------------------------------------------------------
# Module layout: no import cycle; the later stages do not import train
# ---------------------------------------------------------------------------------------------


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _module(path) -> str:
    """``compkit.<a>.<b>`` for ``src/compkit/a/b.py``; a package is its ``__init__.py``."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(("compkit", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _imports() -> dict[str, set[str]]:
    """compkit module -> the compkit modules it imports at run time (at any level, lazy imports included)."""
    paths = list(SRC.rglob("*.py"))
    modules, graph = {_module(p) for p in paths}, {}
    for path in paths:
        found = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compkit"):
                found |= {node.module} if node.module != "compkit" else {f"compkit.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("compkit.")}
        graph[_module(path)] = {m for m in found if m in modules and m != _module(path)}
    return graph


@pytest.mark.parametrize("stage", ["ensemble", "report", "tune", "pseudo", "submit"])
def test_later_stages_do_not_import_train(stage):
    graph = _imports()
    mine = [m for m in graph if m == f"compkit.{stage}" or m.startswith(f"compkit.{stage}.")]  # a package: all its modules
    assert mine and not any("compkit.train" in graph[m] for m in mine)


# ---------------------------------------------------------------------------------------------
# Lineage: every config key that changes a fold's model counts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ['train.loss="focal"', 'train.class_weight="balanced"', "train.seed=7", "train.seeds=2",
                                      "train.deterministic=true", 'competition.extra_columns=[]'])
def test_lineage_counts_every_key_that_changes_a_model(override):
    base, changed = _config(), _config(override)
    assert config_digest(base, base.hyper("cnn_small")) != config_digest(changed, changed.hyper("cnn_small"))


@pytest.mark.parametrize("override", ["tune.trials=3", "ensemble.stacking=true", "tracking.project='x'", "pseudo.threshold=0.5",
                                      "train.process_per_fold=false", 'competition.metric="macro_f1"'])
def test_lineage_ignores_keys_that_do_not(override):
    base, changed = _config(), _config(override)
    assert config_digest(base, base.hyper("cnn_small")) == config_digest(changed, changed.hyper("cnn_small"))


def test_a_stale_fold_names_each_changed_key_with_its_old_and_new_value(tmp_path, dacon_dir):
    """fold.json records the resolved config (train_fold's own fields, written by the real writer); a config change
    then names the key and both values, and a secret in the config never reaches fold.json."""
    argv = ["--competition", COMP, "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path), "--config-dir", str(REPO / "configs")]
    assert main(["folds", *argv, "--set", "folds.n_splits=3"]) == 0
    paths, old = Paths.for_competition(COMP, tmp_path, dacon_dir), _config('competition.extra_columns=["x://u:s3cret@h"]', 'train.loss="crossentropy"')
    hyper = old.hyper("cnn_small")
    record = {"backbone": "cnn_small", "fold": 0, "config": resolved_config(old, hyper),
              "lineage": {"config": config_digest(old, hyper), "folds": folds_digest(paths)}}
    Layout(old, paths).runs.write("cnn_small", 0, pd.DataFrame({"epoch": [1]}), {}, record)
    assert "s3cret" not in Layout(old, paths).runs.record("cnn_small", 0).read_text()
    check_done_folds(old, paths)  # current: no error
    with pytest.raises(CompkitError) as err:
        check_done_folds(_config('competition.extra_columns=["x://u:s3cret@h"]', 'train.loss="focal"', "train.seed=7"), paths)
    assert "the config (competition, folds or hyperparameters) changed since it was made " \
           "(train.loss: crossentropy -> focal, train.seed: 42 -> 7);" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Ids keep their text
# ---------------------------------------------------------------------------------------------


def test_ids_that_are_plain_integers_become_ints_others_keep_their_text():
    assert as_ids(["3", "10", "-2"]).tolist() == [3, 10, -2] and as_ids(["3", "10"]).dtype == np.int64
    assert as_ids(["001801", "1802"]).tolist() == ["001801", "1802"]
    assert as_ids(["a.png", "b.png"]).tolist() == ["a.png", "b.png"]


@pytest.mark.slow
def test_zero_padded_ids_stay_text_through_folds_runs_and_submission(tmp_path, dacon_dir, capsys):
    """400 real DACON rows whose ids are rewritten zero-padded (``001801``): every artefact keeps the text."""
    rows = pd.read_csv(dacon_dir / "train.csv", nrows=400)
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "train.csv", "w") as f:  # ids written as text: 000001 .. 000400
        rows.assign(id=[f"{i:06d}" for i in rows["id"]]).to_csv(f, index=False)
    pd.DataFrame({"id": ["999999"], "digit": [0]}).to_csv(data / "submission.csv", index=False)
    argv = [*TINY, "--set", "folds.n_splits=2", "--set", "train.process_per_fold=false", "--data-dir", str(data), "--root", str(tmp_path / "root"),
            "--config-dir", str(REPO / "configs")]
    for stage in ("folds", "train", "ensemble", "submit"):
        assert main([stage, *argv]) == 0, capsys.readouterr().err
    root = tmp_path / "root"
    padded = {f"{i:06d}" for i in rows["id"]}
    text = {"dtype": str, "keep_default_na": False}
    folds, holdout = (pd.read_csv(root / f"folds/{COMP}/{n}", **text) for n in ("folds.csv", "holdout.csv"))
    assert set(folds["id"]) | set(holdout["id"]) == padded
    oof = pd.concat(pd.read_csv(root / f"runs/{COMP}/cnn_small/fold{k}/oof.csv", **text) for k in range(2))
    assert set(oof["id"]) == set(folds["id"])
    assert set(pd.read_csv(root / f"runs/{COMP}/ensemble/holdout.csv", **text)["id"]) == set(holdout["id"])
    (submission,) = (root / f"submissions/{COMP}").glob("*_blend-*.csv")
    ids = pd.read_csv(submission, **text)["id"]
    assert sorted(ids) == sorted(holdout["id"]) and ids.str.fullmatch(r"\d{6}").all()


# ---------------------------------------------------------------------------------------------
# The fold files: a pair committed with its record
# ---------------------------------------------------------------------------------------------


def _kill_at_replace(monkeypatch, n: int, once: bool = False) -> None:
    """Make the (n+1)-th os.replace of this process raise, as a kill between two writes would: with ``once``
    only that one (Ctrl-C: clean-up code still runs), else every later one too (kill -9: nothing more moves)."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n + 1 or (len(calls) > n and not once):
            raise KeyboardInterrupt(f"killed before moving {src} to {dst}")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_folds_and_holdout_from_two_runs_are_refused(tmp_path, dacon_dir, monkeypatch, dacon):
    """`make folds` again with another seed, killed after holdout.csv: the leaking pair is refused on read."""
    argv = ["--competition", COMP, "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path), "--config-dir", str(REPO / "configs")]
    assert main(["folds", *argv]) == 0
    paths = Paths.for_competition(COMP, tmp_path, dacon_dir)
    _kill_at_replace(monkeypatch, 1)
    assert main(["folds", *argv, "--set", "folds.seed=7"]) == 130  # the CLI's Ctrl-C exit
    monkeypatch.undo()
    folds, holdout = pd.read_csv(paths.folds / "folds.csv"), pd.read_csv(paths.folds / "holdout.csv")
    assert folds["id"].isin(holdout["id"]).any()  # what was left on disk leaks
    with pytest.raises(DataError) as err:
        load_folds(dacon(), paths)
    message = str(err.value)
    assert message.startswith(f"{paths.folds / 'holdout.csv'}: differs from its digest in folds.json")
    assert message.endswith("run `make folds COMPETITION=dacon-cv-2020` again") and "\n" not in message


def test_an_empty_folds_record_is_one_line(tmp_path, dacon_dir, capsys):
    argv = ["--competition", COMP, "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path), "--config-dir", str(REPO / "configs")]
    assert main(["folds", *argv]) == 0
    (tmp_path / f"folds/{COMP}/folds.json").write_text("")
    assert "folds.json: empty, a damaged artefact (cut short?); run `make folds COMPETITION=dacon-cv-2020` again" in \
        one_line_error(capsys, main(["train", *argv]))


# ---------------------------------------------------------------------------------------------
# The TINY run's fold files, ensemble set and submissions
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def copy(copy, monkeypatch):
    """conftest's copy of the TINY run, with W&B off."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return copy


RUNS = f"runs/{COMP}"


@pytest.mark.slow
def test_a_shortened_oof_file_is_refused(copy, capsys):
    """oof.csv cut at a line boundary (99 of its rows): ensemble refuses it instead of fitting on fewer rows."""
    root, argv = copy
    path = root / RUNS / "cnn_small/fold1/oof.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:100]))
    before = tree_digest(root)
    err = one_line_error(capsys, main(["ensemble", *argv]))
    assert f"{path}: differs from its digest in fold.json (changed or cut short after training)" in err
    assert f"delete {path.parent} and rerun `make train COMPETITION=dacon-cv-2020`" in err
    assert tree_digest(root) == before


@pytest.mark.slow
def test_oof_ids_are_checked_against_the_fold_lineage(copy):
    """A fold record whose files digest was rewritten to match a shortened oof.csv: the ids still give it away."""
    root, argv = copy
    path, record = root / RUNS / "cnn_small/fold0/oof.csv", root / RUNS / "cnn_small/fold0/fold.json"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:100]))
    fold = json.loads(record.read_text())
    fold["files"]["oof.csv"] = hashlib.sha256(path.read_bytes()).hexdigest()
    record.write_text(json.dumps(fold))
    layout = Layout(_config("train.deterministic=true"), Paths.for_competition(COMP, root, Path(argv[argv.index("--data-dir") + 1])))
    with pytest.raises(Exception) as err:
        layout.runs.load_oof("cnn_small")
    assert str(err.value).startswith(f"{path}: its 99 ids are not the {fold['lineage']['n_val']} ids fold 0 validated on")


@pytest.mark.slow
@pytest.mark.parametrize("content", ["", '{"backbone": "cnn_small", "fold'])
def test_an_empty_or_cut_fold_record_is_one_line(copy, capsys, content):
    root, argv = copy
    (root / RUNS / "cnn_small/fold2/fold.json").write_text(content)
    before = tree_digest(root)
    err = one_line_error(capsys, main(["ensemble", *argv]))
    assert "fold2/fold.json: " in err and "a damaged artefact (cut short?); delete" in err and tree_digest(root) == before


def _blend_holdout(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / RUNS / "ensemble/holdout.csv")


@pytest.mark.slow
@pytest.mark.parametrize(("kill_at", "once"), [(0, False), (1, False), (1, True), (2, False)])
def test_ensemble_killed_between_writes_leaves_the_old_set_or_an_error(copy, capsys, monkeypatch, kill_at, once):
    """`make ensemble` (another blend) killed at each file move: submit then uses the old set, verified, or
    refuses with one line and writes nothing; never the new files under the old blend's name."""
    root, argv = copy
    old = tree_digest(root)
    old_record = json.loads((root / RUNS / "ensemble/ensemble.json").read_text())
    _kill_at_replace(monkeypatch, kill_at, once)
    killed = main(["ensemble", *argv, "--set", "ensemble.select='hard'"]) == 130  # the CLI's Ctrl-C exit
    capsys.readouterr()  # its "interrupted" line
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    after = tree_digest(root)
    code = main(["submit", *argv])
    if code != 0:  # killed between the two renames: no set, an error, and nothing written
        assert (kill_at, once) == (1, False)
        err = one_line_error(capsys, code)
        assert "ensemble" in err and "make ensemble COMPETITION=dacon-cv-2020" in err and tree_digest(root) == after
        return
    record = json.loads((root / RUNS / "ensemble/ensemble.json").read_text())
    if killed and record == old_record:  # the old set, intact
        assert {k: v for k, v in after.items() if k.startswith(f"{RUNS}/ensemble/")} == \
            {k: v for k, v in old.items() if k.startswith(f"{RUNS}/ensemble/")}
    else:  # the new set, whole
        assert record["selected"] == "hard"
        assert after[f"{RUNS}/ensemble/holdout.csv"] == hashlib.sha256((root / RUNS / "ensemble/holdout.csv").read_bytes()).hexdigest()
    board = pd.read_csv(root / f"submissions/{COMP}/leaderboard.csv")
    assert board["blend"].iloc[-1] == record["selected"] and board["cv"].iloc[-1] == pytest.approx(record["cv"], abs=1e-6)


@pytest.mark.slow
def test_an_edited_ensemble_file_is_refused_by_submit(copy, capsys):
    root, argv = copy
    path = root / RUNS / "ensemble/holdout.csv"
    path.write_text(path.read_text().replace("0.", "0.0", 1))
    before = tree_digest(root)
    err = one_line_error(capsys, main(["submit", *argv]))
    assert f"{path}: differs from its digest in ensemble.json" in err and tree_digest(root) == before


@pytest.mark.slow
def test_submit_after_new_folds_without_reensembling_is_refused(copy, capsys):
    """`make folds` again with another seed, then `make submit`: one line, no orphan submission."""
    root, argv = copy
    assert main(["folds", *argv, "--set", "folds.seed=7"]) == 0
    before = tree_digest(root)
    err = one_line_error(capsys, main(["submit", *argv]))
    assert "ensemble/ensemble.json: made from other fold files than" in err and "`make ensemble COMPETITION=dacon-cv-2020`" in err
    assert tree_digest(root) == before and not (root / "submissions").exists()


@pytest.mark.slow
def test_submit_with_a_bad_solution_file_leaves_no_orphan(copy, capsys, tmp_path):
    """A solution.csv for other ids: scoring fails before the submission is written."""
    root, argv = copy
    data = tmp_path / "data"
    data.mkdir()
    dacon = Path(argv[argv.index("--data-dir") + 1])
    for name in ("train.csv", "submission.csv"):
        (data / name).symlink_to(dacon / name)
    pd.DataFrame({"id": [5000, 5001], "digit": [1, 2], "Usage": ["Public", "Private"]}).to_csv(data / "solution.csv", index=False)
    argv = [*argv[: argv.index("--data-dir")], "--data-dir", str(data), *argv[argv.index("--data-dir") + 2 :]]
    before = tree_digest(root)
    err = one_line_error(capsys, main(["submit", *argv]))
    assert "solution.csv: 2 ids are not in the submission" in err
    assert tree_digest(root) == before and not (root / "submissions").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "fragment"), [
    (lambda board: board.assign(cv=board["cv"].astype(object).where(board.index != 1, "abc")), "row 2, column 'cv': 'abc' is not a number"),
    (lambda board: board.drop(columns=["private"]), "missing column(s) ['private']"),
])
def test_submit_with_a_damaged_leaderboard_leaves_no_orphan(copy, capsys, damage, fragment):
    root, argv = copy
    assert main(["submit", *argv]) == 0 and main(["submit", *argv]) == 0
    path = root / f"submissions/{COMP}/leaderboard.csv"
    damage(pd.read_csv(path)).to_csv(path, index=False)
    capsys.readouterr()
    before = tree_digest(root)
    err = one_line_error(capsys, main(["submit", *argv]))
    assert f"{path}: {fragment}; correct it or move it away" in err and tree_digest(root) == before


@pytest.mark.slow
@pytest.mark.parametrize("override", ['train.loss="focal"', 'train.class_weight="balanced"', "train.seed=7"])
def test_train_after_a_loss_class_weight_or_seed_change_refuses_the_old_folds(copy, capsys, override):
    root, argv = copy
    before = tree_digest(root)
    err = one_line_error(capsys, main(["train", *argv, "--set", override]))
    assert "cnn_small/fold0/fold.json: the config (competition, folds or hyperparameters) changed since it was made" in err
    assert tree_digest(root) == before


@pytest.mark.slow
def test_submit_killed_between_its_two_writes_leaves_no_orphan(copy, monkeypatch):
    """Interrupted after the submission file, before the leaderboard row: the file goes, the leaderboard stays."""
    root, argv = copy
    assert main(["submit", *argv]) == 0
    before = tree_digest(root)
    _kill_at_replace(monkeypatch, 1)
    assert main(["submit", *argv]) == 130  # the CLI's Ctrl-C exit
    monkeypatch.undo()
    assert tree_digest(root) == before
