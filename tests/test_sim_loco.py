"""cocotb bench of LOCO training in hardware (``Network(update="loco")``) against ``FixedRule.step_q``: random
configurations (the network bench's random up5k variations — depth 1–4 weight layers, widths, LANES, T, IF/LIF,
encoder, Q formats — with rule ``loco``, random K, N_ref, λ, η_c, update rounding, mask and an optional random
prototype load), several per simulation build (:class:`~loco_fpga.sim.benches.loco.Batch`), random data,
random idle cycles on ``x`` and back-pressure on ``counts``/``o``; per training step the forward results, every
layer's k* and v⊥, every weight, and every layer's count, prototypes, r_k and H compared bit for bit."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness
from loco_fpga.sim.benches.loco import Batch

from test_sim_network import random_config as network_config

#: the update rounding of case k is ROUNDINGS[k % 4] (stochastic, the hardware default, in half the cases)
ROUNDINGS = ("stochastic", "half-up", "stochastic", "trunc")


def random_config(rng: random.Random, case: int) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): a network-bench configuration with rule loco and random cluster
    parameters; redrawn until the config validates."""
    while True:
        changes, lanes = network_config(rng)
        changes["rule"] = {**changes["rule"], "name": "loco", "mask": rng.random() < 0.5,
                           "clusters": rng.randint(1, 8), "refresh": rng.choice([1, 1, 2, 3]),
                           "ridge": rng.choice([1e-4, 2.0 ** -6, 2.0 ** -3]),
                           "proto_lr": 2.0 ** -rng.randint(1, 6)}
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


def make_case(case: int, steps: int) -> dict:
    rng = random.Random(9600 + case)
    changes, lanes = random_config(rng, case)
    return {"config": full_replace(changes), "lanes": lanes, "seed": rng.randrange(1 << 30), "steps": steps,
            "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5]),
            "preload": rng.random() < 0.4}


def _run(cases, simulator: str, steps: int, name: str):
    harness.require_simulator(simulator)
    specs = [make_case(c, steps) for c in cases]

    def top():
        return Batch([Network.from_config(Config().replace(**s["config"]), lanes=s["lanes"], update="loco")
                      for s in specs])

    hw = [{"config": s["config"], "lanes": s["lanes"]} for s in specs]
    built = harness.build(top, name=name, params={"parts": hw}, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.loco", params={"cases": specs})


#: Verilator builds are the cost: a cluster block is ~5,000 lines of Verilog and its C++ build ~40 s – 4 min
#: depending on the load of the shared 2-core machine. The default run therefore trains the 3 cases below (picked
#: from the random draws 0 … 39: depth 4 with K = 1, and two one-layer networks with K = 6 and 3; 6 cluster blocks)
#: in one Verilator build and 2 more on Icarus (builds in seconds, simulates slowly); together they cover both
#: roundings, masks and encoders, depth 1 and 4, K 1 … 6, N_ref 1 … 3 and a prototype load. `-m slow` runs 6 more
#: in one build and then all 40 draws, 5 per build.
DEFAULT_VERILATOR = (0, 19, 32)
DEFAULT_ICARUS = (5, 17)
SLOW_SIX = (0, 8, 18, 19, 30, 32)


def test_loco_training_bench_verilator():
    _run(DEFAULT_VERILATOR, "verilator", 20, "network-loco")


def test_loco_training_bench_icarus():
    _run(DEFAULT_ICARUS, "icarus", 10, "network-loco")


@pytest.mark.slow
def test_loco_training_bench_six_configs_slow():
    _run(SLOW_SIX, "verilator", 20, "network-loco")


@pytest.mark.slow
@pytest.mark.parametrize("cases", [(13, 33), (2, 11, 23)])
def test_loco_training_bench_extra_icarus_slow(cases):
    """5 more draws (K 1 … 8, three with a prototype load) × 20 steps on Icarus (~4 min per batch)."""
    _run(cases, "icarus", 20, "network-loco")


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(8))
def test_loco_training_bench_random_configs_slow(batch):
    """All 40 random configurations, 20 steps each, 5 per Verilator build; `pytest -m slow`."""
    _run(range(5 * batch, 5 * batch + 5), "verilator", 20, "network-loco")


def test_random_configs_cover_the_space():
    """The default cases (Verilator and Icarus) include all three update roundings, both mask settings, both
    encoders, depths 1 and 4, K = 1 and K ≥ 6, N_ref 1 and > 1, and preloaded prototypes."""
    drawn = [make_case(c, 20) for c in DEFAULT_VERILATOR + DEFAULT_ICARUS]
    cfg = [d["config"] for d in drawn]
    assert {c["fixed"]["update_rounding"] for c in cfg} == {"stochastic", "half-up", "trunc"}
    assert {c["rule"]["mask"] for c in cfg} == {True, False}
    assert {c["spiking"]["encoder"] for c in cfg} == {"deterministic", "bernoulli"}
    depths = {len(c["network"]["arch"]) - 1 for c in cfg}
    assert 1 in depths and 4 in depths
    ks = {c["rule"]["clusters"] for c in cfg}
    assert 1 in ks and max(ks) >= 6
    assert {c["rule"]["refresh"] > 1 for c in cfg} == {True, False}
    assert {d["preload"] for d in drawn} == {True, False}
