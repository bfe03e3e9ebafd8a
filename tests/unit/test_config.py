"""Config: YAML → frozen dataclasses, unknown keys, type checks, --set overrides, run info."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medtransfer.config import (
    Config,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    replace,
    write_run_info,
)
from medtransfer.errors import ConfigError, UserError


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_yaml_into_config(tmp_path):
    path = write(
        tmp_path,
        """
task: binary
seed: 7
data:
  path: /data/pneumoniamnist.npz
  image_size: 28
  classes: [CXR, Hand]
  split_fractions: [0.6, 0.2, 0.2]
model:
  backbone: resnet50
  dropout: 0
train:
  epochs: 3
  lr: 3.0e-4
  n_train: 100
  grad_clip: null
""",
    )
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.task == "binary" and cfg.seed == 7
    assert cfg.data.path == "/data/pneumoniamnist.npz"
    assert cfg.data.image_size == 28
    assert cfg.data.classes == ["CXR", "Hand"]
    assert cfg.data.split_fractions == [0.6, 0.2, 0.2]
    assert cfg.model.backbone == "resnet50"
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)  # an int is accepted for a float
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.n_train == 100 and cfg.train.grad_clip is None
    # untouched sections and keys keep their defaults
    assert cfg.transfer == Config().transfer
    assert cfg.train.batch_size == TrainConfig().batch_size


def test_empty_file_and_no_file_give_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(None) == Config()


def test_exponent_without_dot_is_a_number(tmp_path):
    """Plain YAML 1.1 reads ``1e-4`` as a string; a learning rate written that way must still load."""
    cfg = load_config(write(tmp_path, "train:\n  lr: 1e-4\n  weight_decay: 5E-5\n"))
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.weight_decay == pytest.approx(5e-5)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("trian:\n  epochs: 3\n", r"unknown config key 'trian'; did you mean 'train'\?"),
        ("train:\n  epoch: 3\n", r"unknown config key 'train.epoch'; did you mean 'epochs'\?"),
        ("data:\n  imagesize: 32\n", r"unknown config key 'data.imagesize'; did you mean 'image_size'\?"),
        ("zzzzzz: 1\n", r"unknown config key 'zzzzzz'; known keys: \["),
    ],
)
def test_unknown_keys_rejected_with_did_you_mean(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train:\n  epochs: ten\n", r"train.epochs: expected an integer, got 'ten'"),
        ("train:\n  epochs: '10'\n", r"train.epochs: expected an integer, got '10'"),
        ("train:\n  epochs: true\n", r"train.epochs: expected an integer, got True"),
        ("train:\n  epochs: 2.5\n", r"train.epochs: expected an integer, got 2.5"),
        ("seed: false\n", r"seed: expected an integer, got False"),
        ("train:\n  n_train: lots\n", r"train.n_train: expected an integer, got 'lots'"),
        ("train:\n  lr: fast\n", r"train.lr: expected a number, got 'fast'"),
        ("train:\n  lr: true\n", r"train.lr: expected a number, got True"),
        ("train:\n  augment: 1\n", r"train.augment: expected true/false, got 1"),
        (
            "data:\n  split_fractions: [0.7, 0.1, x]\n",
            r"data.split_fractions\[2\]: expected a number, got 'x'",
        ),
        ("data:\n  split_fractions: 0.7\n", r"data.split_fractions: expected a list, got 0.7"),
        ("train: 3\n", r"train: expected a mapping, got 3"),
    ],
)
def test_wrong_types_rejected(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_bad_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize(
    ("item", "keys", "value"),
    [
        ("train.epochs=5", ["train", "epochs"], 5),
        ("train.lr=0.01", ["train", "lr"], 0.01),
        ("train.lr=1e-4", ["train", "lr"], 1e-4),
        ("data.classes=[CXR, Hand]", ["data", "classes"], ["CXR", "Hand"]),
        ("data.split_fractions=[0.8,0.1,0.1]", ["data", "split_fractions"], [0.8, 0.1, 0.1]),
        ("train.n_train=null", ["train", "n_train"], None),
        ("train.n_train=~", ["train", "n_train"], None),
        ("model.backbone=resnet18", ["model", "backbone"], "resnet18"),
        ("data.path=/a/b c.npz", ["data", "path"], "/a/b c.npz"),
        ("train.augment=false", ["train", "augment"], False),
        ("model.source=", ["model", "source"], ""),
        ("data.path=a=b", ["data", "path"], "a=b"),  # only the first '=' separates key and value
        ("data.path=[unclosed", ["data", "path"], "[unclosed"),  # unparsable YAML stays a string
    ],
)
def test_parse_override_values_as_yaml(item, keys, value):
    got_keys, got = parse_override(item)
    assert got_keys == keys
    assert got == value and type(got) is type(value)


def test_overrides_applied_and_validated(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n")
    cfg = load_config(
        path,
        [
            "train.epochs=5",
            "train.lr=1e-4",
            "data.classes=[CXR]",
            "train.n_train=null",
            "seed=3",
            "model.backbone=18",
        ],
    )
    assert cfg.train.epochs == 5
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.classes == ["CXR"]
    assert cfg.train.n_train is None
    assert cfg.seed == 3
    assert cfg.model.backbone == "18"  # a number given for a string field becomes that string
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'epochs'\?"):
        load_config(path, ["train.epoch=5"])
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 'many'"):
        load_config(path, ["train.epochs=many"])


def test_apply_overrides_does_not_mutate_input():
    data = {"train": {"epochs": 3}}
    out = apply_overrides(data, ["train.epochs=4", "model.backbone=x"])
    assert data == {"train": {"epochs": 3}}
    assert out == {"train": {"epochs": 4}, "model": {"backbone": "x"}}


def test_override_into_a_non_section_errors(tmp_path):
    path = write(tmp_path, "seed: 3\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"override 'train.epochs.x=1': 'epochs' is not a section"):
        load_config(path, ["train.epochs.x=1"])
    with pytest.raises(ConfigError, match=r"'seed' is not a section"):
        load_config(path, ["seed.x=1"])
    # without a YAML value in the way the mistake still fails, at validation
    with pytest.raises(ConfigError, match=r"seed: expected an integer"):
        load_config(None, ["seed.x=1"])


@pytest.mark.parametrize("item", ["train.epochs", "=3", " =3"])
def test_malformed_override(item):
    with pytest.raises(ConfigError, match="override"):
        parse_override(item)


def test_replace_with_dotted_keys():
    cfg = Config()
    new = replace(cfg, **{"train.epochs": 2, "train.lr": 1e-5, "data.classes": ["CXR"], "seed": 4})
    assert (new.train.epochs, new.train.lr, new.data.classes, new.seed) == (2, 1e-5, ["CXR"], 4)
    assert cfg == Config()  # the original is untouched


def test_config_is_frozen():
    cfg = from_dict(Config, {"train": {"epochs": 3}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 4


def test_write_run_info_round_trips(tmp_path):
    cfg = load_config(
        None,
        [
            "seed=11",
            "task=multilabel",
            "train.lr=1e-5",
            "data.classes=[CXR, Hand]",
            "train.grad_clip=null",
            "data.path=/x/y.npz",
            "transfer.strategy=gradual_unfreeze",
            "transfer.unfreeze_schedule=[1, 3]",
        ],
    )
    out = tmp_path / "run"
    write_run_info(out, cfg, seed=11, extra={"note": "test"})
    # no temporary files left behind
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run_info.json"]
    assert load_config(out / "config.yaml") == cfg
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 11
    assert info["note"] == "test"
    assert isinstance(info["argv"], list)
    versions = info["versions"]
    for pkg in ("python", "medtransfer", "numpy", "torch", "pandas"):
        assert isinstance(versions[pkg], str) and versions[pkg]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=0", "train.epochs"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-0.001", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.warmup_pct=1.5", "train.warmup_pct"),
        ("train.div_factor=0.5", "train.div_factor"),
        ("train.select_by=acc", "train.select_by"),
        ("train.device=gpu", "train.device"),
        ("train.gamma=0", "train.gamma"),
        ("data.image_size=0", "data.image_size"),
        ("data.resize=crop", "data.resize"),
        ("data.split_fractions=[0.5,0.5,0.5]", "data.split_fractions"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.groups=[]", "model.groups"),
        ("transfer.lr_mult=0", "transfer.lr_mult"),
        ("transfer.strategy=romero;transfer.unfreeze_at=[0.5,0.1]", "transfer.unfreeze_at"),
        ("transfer.strategy=fastai;transfer.lr_div=0.5", "transfer.lr_div"),
        ("transfer.strategy=gradual_unfreeze;transfer.unfreeze_every=0", "transfer.unfreeze_every"),
        ("transfer.strategy=decoder_finetune;transfer.unfreeze_encoder_at=-1", "transfer.unfreeze_encoder_at"),
        ("eval.tta=-1", "eval.tta"),
        ("seg.overlap=1.0", "seg.overlap"),
        ("seg.ct_window=[100,-100]", "seg.ct_window"),
        ("seed=-1", "seed"),
    ],
)
def test_every_value_is_range_checked_at_load(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, override.split(";"))  # a strategy's own key needs its strategy first
    message = str(info.value)
    assert message.startswith(f"{key} must be ") and f"--set {key}=" in message and "\n" not in message


@pytest.mark.parametrize(
    ("override", "key"),
    [("study.n=[]", "study.n"), ("study.n=[0]", "study.n"), ("study.seeds=[]", "study.seeds"),
     ("study.workers=0", "study.workers"),
     ("study.executors.ray.cpus_per_trial=0", "study.executors.ray.cpus_per_trial")],
)  # fmt: skip
def test_study_values_are_range_checked_at_load(override: str, key: str) -> None:
    from medtransfer.studies.config import StudyConfig

    with pytest.raises(ConfigError, match=f"^{key} must be "):
        load_config(None, [override], cls=StudyConfig)


def test_data_dedupe_is_true_or_false():
    from medtransfer.config import DataConfig

    assert load_config(None, []).data.dedupe is True
    assert load_config(None, ["data.dedupe=false"]).data.dedupe is False
    with pytest.raises(ConfigError, match="data.dedupe: expected true/false, got 2"):
        load_config(None, ["data.dedupe=2"])
    with pytest.raises(ConfigError, match=r"^data.dedupe must be true or false, got 'yes'"):
        DataConfig(dedupe="yes")  # built in code, without the loader's type check
