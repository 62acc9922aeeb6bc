import pytest

from loco_fpga.config import Config, ConfigError, NetworkConfig, RuleConfig, TrainConfig, load_config, parse_arch, save_config


def test_defaults_are_valid_and_documented_values():
    cfg = Config()
    assert cfg.network.arch == (64, 100, 100, 10)
    assert cfg.rule.name == "loco" and cfg.rule.clusters == 8
    assert cfg.train.dataset == "digits"


@pytest.mark.parametrize("kind, field, value, fragment", [
    (RuleConfig, "name", "sgd", "rule.name = 'sgd'"),
    (RuleConfig, "lr", -0.1, "rule.lr = -0.1: must be > 0"),
    (RuleConfig, "lr", 0.0, "rule.lr = 0.0: must be > 0"),
    (RuleConfig, "lr", float("nan"), "rule.lr = nan: must be finite"),
    (RuleConfig, "sigma", 0, "rule.sigma = 0: must be > 0"),
    (RuleConfig, "clusters", 0, "rule.clusters = 0: must be >= 1"),
    (RuleConfig, "clusters", 2.5, "rule.clusters = 2.5: must be an integer"),
    (RuleConfig, "ridge", -1e-3, "rule.ridge = -0.001: must be >= 0"),
    (RuleConfig, "refresh", 0, "rule.refresh = 0: must be >= 1"),
    (RuleConfig, "noise", "uniform", "rule.noise = 'uniform': must be one of"),
    (RuleConfig, "noise_placement", "mid", "rule.noise_placement = 'mid'"),
    (RuleConfig, "mask", "yes", "rule.mask = 'yes': must be true or false"),
    (RuleConfig, "lr_schedule", "linear", "rule.lr_schedule = 'linear'"),
    (NetworkConfig, "init_gain", -1.0, "network.init_gain = -1.0: must be > 0"),
    (NetworkConfig, "arch", "64", "needs at least an input and an output width"),
    (NetworkConfig, "arch", "64-0-10", "every width must be a positive integer"),
    (TrainConfig, "epochs", 0, "train.epochs = 0: must be >= 1"),
    (TrainConfig, "seed", -1, "train.seed = -1: must be >= 0"),
    (TrainConfig, "dataset", "cifar", "train.dataset = 'cifar'"),
])
def test_invalid_values_name_field_and_value(kind, field, value, fragment):
    with pytest.raises(ConfigError) as info:
        kind(**{field: value})
    assert fragment in str(info.value)


def test_bool_is_not_a_number():
    with pytest.raises(ConfigError, match="rule.lr = True: must be a number"):
        RuleConfig(lr=True)


def test_parse_arch():
    assert parse_arch("64-100-100-10") == (64, 100, 100, 10)
    assert parse_arch([8, 4]) == (8, 4)
    with pytest.raises(ConfigError, match="64-a-10"):
        parse_arch("64-a-10")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip(tmp_path, suffix):
    cfg = Config().replace(network={"arch": (16, 8, 4)}, rule={"name": "np", "lr": 0.005, "mask": True},
                           train={"epochs": 3, "seed": 7, "data_path": "x.npz"})
    path = tmp_path / f"c{suffix}"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_unknown_section_and_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown config section"):
        Config.from_dict({"nework": {}})
    with pytest.raises(ConfigError, match="rule.learning_rate"):
        Config.from_dict({"rule": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match=r"section \[rule\] must be a table"):
        Config.from_dict({"rule": 3})


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid json"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[rule]\nlr = 'fast'\n")
    with pytest.raises(ConfigError, match="rule.lr = 'fast': must be a number"):
        load_config(wrong)
