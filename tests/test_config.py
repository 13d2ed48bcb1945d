import pytest

from lengthgen.config import ConfigError, config_hash, load_config, resolve


def test_defaults_filled_and_overrides_typed():
    cfg = resolve({}, ["train.steps=30", "intervention.name=state_passing", "seed=3", "train.lr=1e-3"])
    assert cfg["train"]["steps"] == 30 and cfg["seed"] == 3
    assert cfg["intervention"]["name"] == "state_passing"
    assert cfg["train"]["lr"] == pytest.approx(1e-3)
    assert cfg["train"]["betas"] == [0.9, 0.95]
    assert cfg["train"]["warmup_frac"] == pytest.approx(0.1)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        resolve({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="modle"):
        resolve({}, ["modle.arch=gla"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="intervention.name"):
        resolve({}, ["intervention.name=dropout"])
    with pytest.raises(ConfigError, match="train.tokens"):
        resolve({"train": {"tokens": "twenty"}})


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key=value"):
        resolve({}, ["train.steps"])


def test_hash_ignores_study_and_tracks_run_keys(tmp_path):
    a = resolve({"study": {}})
    b = resolve({})
    assert config_hash(a) == config_hash(b)
    assert config_hash(resolve({}, ["seed=1"])) != config_hash(b)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
