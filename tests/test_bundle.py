"""Code competitions: `compkit predict`, `make package` and the bundle's predict.py, run offline in a fresh process.

One small real run (Fashion-MNIST rows in a Kaggle layout with a test set and a probability sample; cnn_small, 2 folds,
1 epoch, 2 TTA views, the stacked blend selected) is trained once, submitted and packaged; the bundle is then run from
copies of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from compkit import blends, package, rehearse
from compkit.cli import main
from conftest import FAKE_KEY, REPO, built_once, one_line_error, with_root
from test_competitions import FMNIST_CLASSES, HIDDEN_LABELS, _image_folder

NAME = "fmnist-code"
ORDER = [FMNIST_CLASSES[i] for i in (3, 0, 9, 1, 5, 2, 8, 4, 7, 6)]  # the sample's own column order
RUN = ["--preset", "smoke", "--backbones", "cnn_small", "--set", "folds.n_splits=2", "--set", "train.epochs=1",
       "--set", "train.process_per_fold=false", "--set", "train.tta=2", "--set", "ensemble.stacking=true",
       "--set", "ensemble.select='stacked'", "--set", "bundle.owner='someone'"]


def _competition(root, fmnist, n_train=800, n_test=200):
    """A Kaggle-layout competition of real Fashion-MNIST rows in ``root``: data/ (train.csv, test.csv, a probability
    sample with the ids reversed and the classes shuffled, solution.csv) and configs/."""
    (x, y), _ = fmnist
    data, configs = root / "data", root / "configs"
    (configs / "presets").mkdir(parents=True)
    data.mkdir()
    pixels, classes = [f"pixel{i}" for i in range(784)], np.asarray(FMNIST_CLASSES, dtype=object)
    train_ids, test_ids = np.arange(1, n_train + 1), np.arange(n_train + 1, n_train + n_test + 1)
    train = pd.DataFrame(x[:n_train].reshape(n_train, -1), columns=pixels)
    train.insert(0, "id", train_ids)
    train.insert(1, "label", classes[y[:n_train]])
    train.to_csv(data / "train.csv", index=False)
    test = pd.DataFrame(x[n_train:n_train + n_test].reshape(n_test, -1), columns=pixels)
    test.insert(0, "id", test_ids)
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test_ids[::-1], **{c: 0.1 for c in ORDER}}).to_csv(data / "sample_submission.csv", index=False)
    truth = classes[y[n_train:n_train + n_test]]
    solution = pd.DataFrame({"id": test_ids, **{c: (truth == c).astype(int) for c in ORDER}})
    solution.assign(Usage=np.where(np.arange(n_test) % 3 == 0, "Public", "Private")).to_csv(data / "solution.csv", index=False)
    (configs / f"{NAME}.toml").write_text(HIDDEN_LABELS.format(name=NAME, metric="log_loss"))
    (configs / "presets/smoke.toml").write_text((REPO / "configs/presets/smoke.toml").read_text())


def _argv(root):
    """The CLI options of the run in ``root``."""
    return ["--competition", NAME, "--config-dir", str(root / "configs"), "--data-dir", str(root / "data"), "--root", str(root), *RUN]


@pytest.fixture(scope="session")
def packaged(tmp_path_factory, fmnist):
    """The run's root after `make folds train ensemble submit package`, and its CLI options."""

    def build(root):
        _competition(root, fmnist)
        for stage in ("folds", "train", "ensemble", "submit", "package"):
            assert main([stage, *_argv(root)]) == 0

    root = built_once(tmp_path_factory, "code", build)
    return root, _argv(root)


def _run_bundle(bundle, tmp_path, *args):
    """The bundle's predict.py in a fresh process from a copy of ``bundle``: HOME elsewhere, no PYTHONPATH, cwd the copy."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HOME")} | {"HOME": str(home)}
    return subprocess.run([sys.executable, "predict.py", *args], cwd=bundle, env=env, capture_output=True, text=True, timeout=300)


def _copy(root, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(root / "bundle" / NAME, copy)
    return copy


@pytest.mark.slow
def test_the_bundle_predicts_make_submits_submission_in_a_fresh_process(packaged, tmp_path):
    root, _ = packaged
    bundle = _copy(root, tmp_path)
    names = sorted(p.name for p in bundle.iterdir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert names == sorted([*manifest["files"], "manifest.json", "kernel-metadata.json", "dataset-metadata.json"])
    assert sorted(manifest["files"]) == sorted(["config.json", "ensemble.json", "predict.py", manifest["wheel"],
                                                "model-cnn_small-fold0.keras", "model-cnn_small-fold1.keras"])  # nothing else of runs/

    done = _run_bundle(bundle, tmp_path, "--data-dir", str(root / "data"), "--out", str(tmp_path / "submission.csv"))
    assert done.returncode == 0, done.stderr
    where = done.stdout.split("predict.py: compkit from ", 1)[1].split("\n", 1)[0]
    assert "compkit-wheel-" in where and str(REPO) not in where  # the wheel's compkit ran, not the checkout's
    assert "images/s" in done.stdout

    (made,) = [p for p in (root / "submissions" / NAME).glob("*.csv") if p.name != "leaderboard.csv"]
    expected, got = pd.read_csv(made), pd.read_csv(tmp_path / "submission.csv")
    assert list(got.columns) == ["id", *ORDER] and got["id"].tolist() == expected["id"].tolist()
    np.testing.assert_allclose(got[ORDER].to_numpy(), expected[ORDER].to_numpy(), atol=1e-6)
    labels = got[ORDER].to_numpy().argmax(1)
    assert labels.tolist() == expected[ORDER].to_numpy().argmax(1).tolist()
    assert len(set(labels)) >= 3  # the models tell images apart: different TTA views would change these probabilities


@pytest.mark.slow
def test_compkit_predict_writes_the_bundles_submission_and_refuses_a_missing_data_dir(packaged, tmp_path, capsys):
    root, argv = packaged
    out = tmp_path / "predicted.csv"
    assert main(["predict", *argv, "--out", str(out)]) == 0
    (made,) = [p for p in (root / "submissions" / NAME).glob("*.csv") if p.name != "leaderboard.csv"]
    np.testing.assert_allclose(pd.read_csv(out)[ORDER].to_numpy(), pd.read_csv(made)[ORDER].to_numpy(), atol=1e-6)
    capsys.readouterr()

    at = argv.index("--data-dir")
    missing = [*argv[:at], "--data-dir", str(tmp_path / "nowhere"), *argv[at + 2:]]
    err = one_line_error(capsys, main(["predict", *missing, "--out", str(tmp_path / "none.csv")]))
    assert f"{tmp_path / 'nowhere'}: no such folder; pass --data-dir the folder holding test.csv and sample_submission.csv" in err
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.slow
def test_a_changed_byte_is_refused_before_anything_loads(packaged, tmp_path):
    root, _ = packaged
    bundle = _copy(root, tmp_path)
    model = bundle / "model-cnn_small-fold1.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    done = _run_bundle(bundle, tmp_path, "--data-dir", str(root / "data"), "--out", str(tmp_path / "submission.csv"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr == (f"predict.py: error: {model}: differs from its sha256 in manifest.json (changed, or cut short in "
                           "transfer); rebuild the bundle with `make package` and copy or upload it again\n")
    assert "compkit from" not in done.stdout and not (tmp_path / "submission.csv").exists()


@pytest.mark.slow
def test_rehearse_projects_the_hidden_size_offline_and_fails_past_the_limit(packaged, capsys):
    """50 resampled rows through a copy of the bundle without network; the time is projected to the hidden size."""
    _, argv = packaged
    small = [*argv, "--set", "bundle.rehearse_rows=50"]
    code = main(["rehearse", *small, "--set", "competition.hidden_test_rows=10000000"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("compkit: error: "), err
    assert "rehearse: cnn_small fold 0: 50 images x 2 views in" in out and "rehearse: cnn_small fold 1: 50 images" in out
    projected, measured = map(float, re.search(r"projected (\d+)s on 10000000 hidden test rows \((\d+)s on 50 rows", err).groups())
    assert projected == pytest.approx(max(measured, 1) * 200000, rel=0.5)  # the run's seconds x hidden / rows, each rounded
    assert f"{rehearse.offline_prefix()[1]}) exceeds competition.time_limit 32400s; predict with fewer models" in err
    err = one_line_error(capsys, main(["rehearse", *small, "--set", "competition.time_limit=1"]))
    assert "predict.py ran past competition.time_limit (1s) and was stopped" in err


class FakeKaggle:
    """The network end of the kaggle package (what ``KaggleApi.build_kaggle_client()`` returns): every request the
    package built is kept in ``sent`` as (method, request), and the method's answer is Kaggle's response object."""

    def __init__(self, answers: dict):
        self.answers, self.sent = answers, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):  # kaggle.kernels.kernels_api_client.save_kernel(request): each hop is this object
        if name in self.answers:
            return lambda request: self.sent.append((name, request)) or self.answers[name]
        return self


def _code_competition(packaged, tmp_path):
    """A copy of the packaged run as a Kaggle code competition, and its CLI options."""
    root, argv = packaged
    shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("wandb"))
    return tmp_path / "run", [*with_root(argv, tmp_path / "run"), "--set", "competition.platform='kaggle'",
                              "--set", "competition.code_competition=true"]


def test_upload_bundle_push_kernel_and_upload_offline_are_one_line_and_change_nothing(packaged, tmp_path, fake_credentials, capsys):
    """The real kaggle package without network; then a placeholder owner, refused before any credential is read."""
    root, argv = _code_competition(packaged, tmp_path)
    board, bundle = root / "submissions" / NAME / "leaderboard.csv", root / "bundle" / NAME
    before = {p: p.read_bytes() for p in [board, *bundle.iterdir()]}
    for stage, what in (("upload-bundle", "look up the bundle's dataset"), ("push-kernel", "push the kernel")):
        err = one_line_error(capsys, main([stage, *argv]), absent=(FAKE_KEY,))
        assert f"kaggle: cannot reach Kaggle to {what}" in err, err
    err = one_line_error(capsys, main(["upload", *argv]))
    assert f"{root / 'runs' / NAME / 'platform/kernel.json'}: not found (no kernel pushed); run `make upload-bundle push-kernel" in err
    assert {p: p.read_bytes() for p in [board, *bundle.iterdir()]} == before and not (root / "runs" / NAME / "platform").exists()

    metadata = json.loads((bundle / "kernel-metadata.json").read_text())
    (bundle / "kernel-metadata.json").write_text(json.dumps({**metadata, "id": f"{package.NO_OWNER}/x"}))
    err = one_line_error(capsys, main(["push-kernel", *argv]))
    assert f"its id has no Kaggle owner ({package.NO_OWNER}); set bundle.owner" in err


def test_push_kernel_records_its_version_and_upload_submits_that_version(packaged, tmp_path, fake_credentials, monkeypatch, capsys):
    """``kernels_push`` and ``competition_submit_code`` of the real kaggle package, only their send replaced: the
    version Kaggle answers is what `make upload` submits, and a bundle rebuilt since the push is refused."""
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.competitions.types.competition_api_service import ApiCreateCodeSubmissionResponse
    from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelResponse

    root, argv = _code_competition(packaged, tmp_path)
    saved, submitted = ApiSaveKernelResponse(), ApiCreateCodeSubmissionResponse()
    saved.version_number, saved.url, submitted.ref = 7, "https://www.kaggle.com/code/someone/fmnist-code-compkit-predict", 4242
    fake = FakeKaggle({"save_kernel": saved, "create_code_submission": submitted})
    monkeypatch.setattr(KaggleApi, "build_kaggle_client", lambda self: fake)
    assert main(["push-kernel", *argv]) == 0
    manifest = root / "bundle" / NAME / "manifest.json"
    record = json.loads((root / "runs" / NAME / "platform/kernel.json").read_text())
    assert record["kernel"] == "someone/fmnist-code-compkit-predict" and record["version"] == 7
    assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()

    assert main(["upload", *argv]) == 0
    (_, push), (method, request) = fake.sent
    assert push.enable_internet is False and method == "create_code_submission"
    assert (request.competition_name, request.kernel_slug, request.kernel_version, request.file_name) == (
        NAME, "fmnist-code-compkit-predict", 7, "submission.csv")
    board = root / "submissions" / NAME / "leaderboard.csv"
    assert pd.read_csv(board)["platform_ref"].iloc[-1] == 4242

    before = board.read_bytes()
    manifest.write_text(manifest.read_text() + " ")
    err = one_line_error(capsys, main(["upload", *argv]))
    assert f"{manifest}: not the bundle kernel someone/fmnist-code-compkit-predict version 7 was pushed with" in err
    assert board.read_bytes() == before and len(fake.sent) == 2


def test_rehearse_resamples_an_image_folder_test_set_as_links_named_by_row(tmp_path, fmnist):
    """12 rows drawn from a folder of 5 real PNG images (some 56-px RGB): each a link to a source image, named
    1.png..12.png, in the new sample submission's order, decoding to its source's pixels."""
    from compkit.config import load_config
    from compkit.data import load_test

    (x, y), _ = fmnist
    data, configs = _image_folder(tmp_path, x, y, n_train=4, n_test=5)
    comp = load_config("clothes", None, [], configs).competition
    rehearse.resample(comp, data, 12, 0, tmp_path / "out")
    names = [f"{n}.png" for n in range(1, 13)]
    assert sorted(p.name for p in (tmp_path / "out/test").iterdir()) == sorted(names)
    assert pd.read_csv(tmp_path / "out/sample_submission.csv")["file"].tolist() == names
    source, drawn = load_test(data, comp), load_test(tmp_path / "out", comp)
    by_bytes = {(data / "test" / name).read_bytes(): k for k, name in enumerate(source.ids)}
    for k, name in enumerate(drawn.ids):
        origin = by_bytes[(tmp_path / "out/test" / name).read_bytes()]  # a KeyError: not one of the source images
        np.testing.assert_array_equal(drawn.images[k], source.images[origin])
    assert rehearse.local_test_size(comp, data) == 5


def test_predict_package_and_rehearse_without_their_inputs_are_one_line_errors(tmp_path, dacon_dir, capsys):
    argv = ["--competition", "dacon-cv-2020", "--preset", "smoke", "--data-dir", str(dacon_dir), "--root", str(tmp_path)]
    ensemble = tmp_path / "runs/dacon-cv-2020/ensemble/ensemble.json"
    for stage in ("predict", "package"):
        err = one_line_error(capsys, main([stage, *argv, "--out", str(tmp_path / "submission.csv")]))
        assert err == f"compkit: error: {ensemble}: not found; run `make ensemble COMPETITION=dacon-cv-2020` first\n"
    err = one_line_error(capsys, main(["rehearse", *argv]))
    assert err == f"compkit: error: {tmp_path / 'bundle/dacon-cv-2020/manifest.json'}: not found; run `make package COMPETITION=dacon-cv-2020` first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no submission, no bundle/


def test_kernel_metadata_round_trips_through_the_kaggle_packages_reader(tmp_path, dacon, monkeypatch):
    """KaggleApi.kernels_push reads and validates the file and builds its request offline; only the send is caught."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    config = dacon("smoke", "bundle.owner='someone'", "bundle.enable_gpu=true")
    package.write_kaggle_metadata(tmp_path, config)
    (tmp_path / "predict.py").write_text("print('hi')\n")
    sent = []

    class Client:  # the network end of kernels_push: `with self.build_kaggle_client() as kaggle: kaggle.kernels...save_kernel(request)`
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        @property
        def kernels(self):
            return self

        @property
        def kernels_api_client(self):
            return self

        def save_kernel(self, request):
            sent.append(request)
            return "saved"

    api = KaggleApi()
    monkeypatch.setattr(api, "build_kaggle_client", Client)
    assert api.kernels_push(str(tmp_path)) == "saved"
    (request,) = sent
    assert request.slug == "someone/dacon-cv-2020-compkit-predict" and request.new_title == "dacon-cv-2020 compkit predict"
    assert (request.language, request.kernel_type, request.text) == ("python", "script", "print('hi')\n")
    assert request.enable_internet is False and request.enable_gpu is True and request.is_private is True
    assert request.dataset_data_sources == ["someone/dacon-cv-2020-compkit-bundle"]
    assert request.competition_data_sources == ["dacon-cv-2020"]
    assert json.loads((tmp_path / "kernel-metadata.json").read_text())["enable_internet"] is False  # written, not defaulted
    api.validate_dataset_string(json.loads((tmp_path / "dataset-metadata.json").read_text())["id"])


@pytest.mark.parametrize("k", [2, 10])
def test_the_stacked_meta_model_as_data_predicts_as_sklearns(k):
    """ensemble.json's coefficients give sklearn's predict_proba, with a class the meta-model never saw left at 0."""
    rng = np.random.default_rng(k)
    probas, labels = rng.dirichlet(np.ones(k), size=(3, 300)), rng.integers(0, k, 300)
    labels[labels == 1] = 0 if k > 2 else 1
    meta = json.loads(json.dumps(blends.fit_meta_model(probas, labels, 1.0)))  # through JSON, as the bundle reads it
    new = rng.dirichlet(np.ones(k), size=(3, 50))
    model = LogisticRegression(C=1.0, max_iter=1000).fit(blends.meta_features(probas), labels)
    expected = np.zeros((50, k))
    expected[:, model.classes_] = model.predict_proba(blends.meta_features(new))
    np.testing.assert_allclose(blends.meta_model_proba(meta, new), expected, atol=1e-12)


def test_the_ridge_meta_model_as_data_predicts_as_sklearns():
    """A regression's stacked blend: ensemble.json's coefficients give sklearn's Ridge.predict."""
    rng = np.random.default_rng(0)
    preds, values = rng.normal(size=(3, 200, 1)), rng.normal(size=200)
    meta = json.loads(json.dumps(blends.fit_ridge(preds, values, 0.5)))
    new = rng.normal(size=(3, 40, 1))
    expected = Ridge(alpha=2.0).fit(blends.meta_features(preds), values).predict(blends.meta_features(new))
    np.testing.assert_allclose(blends.ridge_predict(meta, new), expected[:, None], atol=1e-12)
