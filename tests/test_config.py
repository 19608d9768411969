import pytest

from compkit.config import ConfigError, load_config, parse_override


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu"])
def test_every_preset_resolves_on_dacon(dacon, preset):
    config = dacon(preset)
    assert config.competition.image_shape == [28, 28, 1]
    assert len(config.competition.pixel_columns) == 784
    assert config.train.backbones


def test_preset_and_overrides_win_in_order(dacon):
    assert dacon("smoke").train.epochs == 3
    config = dacon("smoke", "train.epochs=7", "backbones.cnn_small.input_size=56")
    assert config.train.epochs == 7
    assert config.hyper("cnn_small").input_size == 56
    assert config.hyper("resnet_small").input_size is None
    assert config.hyper("cnn_small").augment.rotation == 10.0  # from the competition file


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.epoch=3", "unknown key 'train.epoch'"),
        ("train.epochs='many'", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("folds.n_splits=1", "folds.n_splits"),
        ("folds.holdout_fraction=1.0", "folds.holdout_fraction"),
        ("folds.holdout_fraction=0", "folds.holdout_fraction"),
        ("train.optimizer='adagrad'", "train.optimizer"),
        ("train.backbones=['vgg99']", "unknown backbone 'vgg99'"),
        ("train.backbones=['xception']", "backbone 'xception' needs input_size >= 71"),
        ("train.depth=0", "train.depth"),
        ("train.depth=[1, 2]", "train.depth: give a count >= 1 for every block, or three counts"),
        ("distill.backbone='vgg99'", "unknown backbone 'vgg99'"),
        ("distill.temperature=0", "distill.temperature"),
    ],
)
def test_bad_values_name_the_key(dacon, override, fragment):
    with pytest.raises(ConfigError, match="dacon-cv-2020.toml") as err:
        dacon("smoke", override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_files_list_the_choices(config_dir):
    with pytest.raises(ConfigError, match=r"preset not found; choose one of \['cpu', 'gpu', 'smoke'\]"):
        load_config("dacon-cv-2020", "laptop", [], config_dir)
    with pytest.raises(ConfigError, match="competition config not found"):
        load_config("no-such-competition", None, [], config_dir)


def test_parse_override_reads_toml_values():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("train.optimizer=adam") == (["train", "optimizer"], "adam")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("train.epochs")


def test_depth_stacks_blocks_of_the_small_cnns_and_is_refused_for_keras_applications(dacon):
    """``depth``: conv layers per block of cnn_small, residual blocks per stage of resnet_small (wide-ResNet's d axis),
    one count for all or one a block."""
    from compkit.backbones import build_backbone

    def convs(name, depth):
        model = build_backbone(name, (28, 28, 1), 0.25, depth=depth)
        return sum(type(layer).__name__ == "Conv2D" for layer in model.layers)

    assert [convs("cnn_small", d) for d in (1, 2, 3)] == [3, 6, 9]
    assert [convs("resnet_small", d) for d in (1, 2, 3)] == [1 + 3 * 2 + 2, 1 + 6 * 2 + 2, 1 + 9 * 2 + 2]  # + 2 shortcuts
    model = build_backbone("cnn_small", (28, 28, 1), 0.25, depth=[1, 2, 3])  # a count per block: 8, 16, 32 filters
    assert [layer.kernel.shape[-1] for layer in model.layers if type(layer).__name__ == "Conv2D"] == [8, 16, 16, 32, 32, 32]
    assert convs("resnet_small", [1, 1, 2]) == 1 + 4 * 2 + 2
    assert [convs("airbench", d) for d in (1, 2)] == [3, 6]
    model = build_backbone("airbench", (28, 28, 1), 0.25)  # 16, 64, 64 filters; each block's first conv pooled at once
    assert [(layer.output.shape[1], layer.kernel.shape[-1]) for layer in model.layers if type(layer).__name__ == "Conv2D"] \
        == [(28, 16), (14, 16), (14, 64), (7, 64), (7, 64), (3, 64)]
    with pytest.raises(ConfigError) as err:
        dacon("smoke", "train.backbones=['resnet50']", "backbones.resnet50.input_size=32", "backbones.resnet50.depth=3")
    assert "backbones.resnet50.depth = 3: keras.applications backbones have their own depth" in str(err.value)
    with pytest.raises(ConfigError, match=r"backbones.resnet50: whiten and dirac initialise compkit's own CNNs only"):
        dacon("smoke", "train.backbones=['resnet50']", "backbones.resnet50.input_size=32", "backbones.resnet50.whiten=2")
