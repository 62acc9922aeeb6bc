"""The float spiking model (SPEC §3): agreement with the rate model, encoder replay, neurons, training."""

import numpy as np
import pytest

from loco_fpga.config import Config, NetworkConfig, RuleConfig, SpikingConfig
from loco_fpga.golden_model.datasets import load_digits
from loco_fpga.golden_model.spiking import SpikingNetwork, encode, make_spiking_rule, simulate


def _one_hidden_layer(seed=0):
    rng = np.random.default_rng(seed)
    net = SpikingNetwork(NetworkConfig(arch=(64, 40, 10)), SpikingConfig(enabled=True), rng)
    return net


def test_spike_rate_error_shrinks_like_one_over_t():
    x = load_digits().x_test[:100]
    net = _one_hidden_layer()
    z = x @ net.weights[0][:, :-1].T + net.weights[0][:, -1]
    target = np.clip(z, 0.0, 1.0)
    steps = [8, 32, 128, 512]
    errors = []
    for t in steps:
        spikes = encode(x, t, "deterministic", None)
        rates, _ = simulate(net.weights, spikes, SpikingConfig(steps=t))
        errors.append(float(np.mean(np.abs(rates[0] - target))))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -1.3 < slope < -0.8, (errors, slope)
    # and the absolute error is a few spikes' worth: T · error stays bounded
    assert max(e * t for e, t in zip(errors, steps)) < 3.0, errors


def test_deterministic_encoder_counts_round_t_x():
    x = np.array([0.0, 0.25, 0.3, 0.5, 0.74, 1.0])
    counts = encode(x, 16, "deterministic", None).sum(axis=0)
    np.testing.assert_array_equal(counts, np.floor(16 * x + 0.5))


def test_bernoulli_encoder_rate_and_replay_in_both_passes():
    cfg = Config(network=NetworkConfig(arch=(64, 30, 10)),
                 spiking=SpikingConfig(enabled=True, encoder="bernoulli", steps=32))
    rng = np.random.default_rng(1)
    net = SpikingNetwork(cfg.network, cfg.spiking, rng)
    rule = make_spiking_rule(net, cfg.rule, np.random.default_rng(2))
    x = load_digits().x_train[0]
    # Zero perturbation: identical encoder draws make the two passes identical, bit for bit.
    inputs, y, y_noisy, _ = rule.two_passes(x, np.zeros(40))
    np.testing.assert_array_equal(inputs[1][:, 0], inputs[1][:, 1])
    np.testing.assert_array_equal(y, y_noisy)
    # Different draws between samples (the stream advances), and the rate is unbiased.
    spikes = encode(np.full(2000, 0.3), 64, "bernoulli", np.random.default_rng(3))
    assert abs(spikes.mean() - 0.3) < 0.005


def test_perturbation_is_a_constant_current():
    cfg = SpikingConfig(steps=16)
    w = [np.zeros((3, 2)), np.zeros((2, 4))]
    spikes = np.zeros((16, 1, 1))
    noise = [np.array([[0.25, 0.5, -0.5]]), np.array([[0.125, -0.125]])]
    rates, y = simulate(w, spikes, cfg, noise)
    np.testing.assert_array_equal(rates[0], [[0.25, 0.5, 0.0]])   # IF integrates the constant current
    np.testing.assert_array_equal(y, [[0.125, -0.125]])           # output = time-averaged current


def test_lif_leak_and_threshold():
    w = [np.array([[0.0, 0.05]]), np.zeros((1, 2))]
    spikes = np.zeros((64, 1, 1))
    if_rates, _ = simulate(w, spikes, SpikingConfig(steps=64, neuron="if"))
    lif_rates, _ = simulate(w, spikes, SpikingConfig(steps=64, neuron="lif", leak_shift=4))
    assert if_rates[0][0, 0] == pytest.approx(3 / 64)       # 0.05·64 = 3.2 → 3 spikes
    assert lif_rates[0][0, 0] == 0.0                        # β V + 0.05 saturates at 0.8 < θ
    high, _ = simulate(w, spikes, SpikingConfig(steps=64, threshold=0.5))
    assert high[0][0, 0] == pytest.approx(6 / 64)


def test_spiking_config_is_validated_and_round_trips():
    from loco_fpga.config import ConfigError
    with pytest.raises(ConfigError, match="spiking.encoder = 'poisson'"):
        SpikingConfig(encoder="poisson")
    with pytest.raises(ConfigError, match="spiking.steps = 0"):
        SpikingConfig(steps=0)
    cfg = Config(spiking=SpikingConfig(enabled=True, steps=32, neuron="lif"))
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_spiking_rule_rejects_post_noise():
    from loco_fpga.config import ConfigError
    net = _one_hidden_layer()
    with pytest.raises(ConfigError, match="noise_placement"):
        make_spiking_rule(net, RuleConfig(noise_placement="post"), np.random.default_rng(0))


@pytest.mark.slow
def test_spiking_loco_learns_digits():
    from loco_fpga.golden_model import train
    cfg = Config().replace(spiking={"enabled": True, "steps": 16}, train={"epochs": 40})
    result = train(cfg)
    assert result.final_test_acc >= 0.90
