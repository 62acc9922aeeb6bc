"""cocotb bench of NP training in hardware (``Network(update="np")``) against ``FixedRule.step_q``: random
configurations (the network bench's random up5k variations with rule ``np``, random update rounding and
mask), one build each, random data, random idle cycles on ``x`` and back-pressure on ``counts``/``o``; per
training step the forward results and then every weight of every layer compared bit for bit."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness

from test_sim_network import random_config as network_config


#: the update rounding of case k is ROUNDINGS[k % 4] (stochastic, the hardware default, in half the cases)
ROUNDINGS = ("stochastic", "half-up", "stochastic", "trunc")


def random_config(rng: random.Random, case: int) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): a network-bench configuration with rule np, a random mask and the
    case's update rounding; redrawn until the config validates."""
    while True:
        changes, lanes = network_config(rng)
        changes["rule"] = {**changes["rule"], "name": "np", "mask": rng.random() < 0.5}
        changes["fixed"] = {**changes["fixed"], "update_rounding": ROUNDINGS[case % len(ROUNDINGS)]}
        try:
            preset("up5k").replace(**changes)
        except ConfigError:
            continue
        return changes, lanes


def full_replace(changes: dict) -> dict:
    full = preset("up5k").replace(**changes)
    return {section: {f: getattr(getattr(full, section), f) for f in getattr(full, section).__dataclass_fields__}
            for section in ("network", "rule", "train", "spiking", "fixed")}


def _run(case: int, simulator: str, steps: int):
    harness.require_simulator(simulator)
    rng = random.Random(9100 + case)
    changes, lanes = random_config(rng, case)
    spec = full_replace(changes)
    cfg = Config().replace(**spec)
    built = harness.build(lambda: Network.from_config(cfg, lanes=lanes, update="np"), name="network-np",
                          params={"config": spec, "lanes": lanes}, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.update",
                params={"config": spec, "lanes": lanes, "seed": rng.randrange(1 << 30), "steps": steps,
                        "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5])})


# Default run: 2 random configurations × 10 training steps on Verilator and 4 more on Icarus (a cold Verilator
# build of a training network takes 5–25 min on the shared 2-core machine; Icarus builds in seconds and runs
# these small networks in about a minute each).
@pytest.mark.parametrize("case", range(2))
def test_np_training_bench_verilator(case):
    _run(case, "verilator", 10)


@pytest.mark.parametrize("case", range(2, 6))
def test_np_training_bench_icarus(case):
    _run(case, "icarus", 10)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(100, 112))
def test_np_training_bench_random_configs_slow(case):
    """More random configurations, 30 steps each, alternating simulators; `pytest -m slow`."""
    _run(case, "verilator" if case % 2 else "icarus", 30)


def test_random_configs_cover_the_space():
    """The default cases include both update roundings kinds (stochastic and a deterministic one), both mask
    settings, both encoders and a hidden layer."""
    drawn = [random_config(random.Random(9100 + case), case) for case in range(6)]
    assert {c["fixed"]["update_rounding"] == "stochastic" for c, _ in drawn} == {True, False}
    assert {c["rule"]["mask"] for c, _ in drawn} == {True, False}
    assert {c["spiking"]["encoder"] for c, _ in drawn} == {"deterministic", "bernoulli"}
    assert any(len(c["network"]["arch"]) > 2 for c, _ in drawn)
