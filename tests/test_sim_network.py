"""cocotb bench of the network datapath (hdl/network.py) against the golden model: random configurations
(the up5k preset with random depth 1–4, widths, LANES, T, IF/LIF, encoder, Q formats, θ, σ, seed), one build
each, random data, random idle cycles on ``x`` and back-pressure on ``counts``/``o``; every sample's hidden
counts, y, ỹ, Δy, ΔL_sum, dl and g compared bit for bit."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness


def random_config(rng: random.Random, *, depth: int | None = None, max_width: int = 10,
                  wide: float = 0.2) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): the up5k preset varied at random, always a valid config (draws
    that check_config rejects are drawn again). ``depth`` weight layers (None: random 1 … 4); layer widths
    1 … ``max_width`` (outputs 1 … min(8, max_width)) except, with probability ``wide`` in a network with a
    hidden layer, one 33–36-wide hidden layer. The defaults give the draws this file always made."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 4):
        raise ValueError(f"depth = {depth!r}: must be None or an integer in [1, 4]")
    if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < 1:
        raise ValueError(f"max_width = {max_width!r}: must be an integer ≥ 1")
    if not 0.0 <= wide <= 1.0:
        raise ValueError(f"wide = {wide!r}: must be a probability in [0, 1]")
    while True:
        try:
            return _random_config(rng, depth, max_width, wide)
        except ConfigError:
            continue


def _random_config(rng: random.Random, depth: int | None, max_width: int, wide: float) -> tuple[dict, int]:
    if depth is None:
        depth = rng.randint(1, 4)                                # weight layers
    arch = tuple(rng.randint(1, max_width) for _ in range(depth)) + (rng.randint(1, min(8, max_width)),)
    if depth > 1 and rng.random() < wide:                        # a wide hidden layer: two noise words
        arch = arch[:1] + (rng.randint(33, 36),) + arch[2:]
    wf = rng.randint(4, 12)
    wb = wf + rng.randint(2, 5)
    fan_bits = max(arch[:-1]).bit_length()
    acc = wb + fan_bits + 1 + rng.randint(0, 4)
    mb = rng.choice([wb, acc, acc + 6])
    threshold = rng.choice([0.25, 0.5, 1.0, 1.5])
    while round(threshold * 2 ** wf) >= 1 << (mb - 2):
        threshold /= 2
    changes = {
        "network": {"arch": arch},
        "train": {"seed": rng.randrange(1 << 20)},
        "spiking": {"enabled": True, "steps": 1 << rng.randint(0, 4), "neuron": rng.choice(["if", "lif"]),
                    "leak_shift": rng.randint(1, 6), "threshold": threshold,
                    "encoder": rng.choice(["deterministic", "bernoulli"])},
        "rule": {"sigma": 2.0 ** -rng.randint(0, min(wf, 8))},
        "fixed": {"enabled": True, "weight_bits": wb, "weight_frac": wf, "acc_bits": acc, "membrane_bits": mb,
                  "out_bits": rng.randint(wb, acc + 3), "input_frac": rng.randint(2, 10)},
    }
    preset("up5k").replace(**changes)                            # validates (ConfigError names the field)
    lanes = rng.randint(1, max(arch[:-1]) + 1)
    if max(arch[1:-1], default=0) > 32:                          # keep the wide layer's cycle count small
        lanes = max(lanes, arch[0] // 2 + 1, 8)
    return changes, lanes


def full_replace(changes: dict) -> dict:
    """Every field of the varied preset, as Config().replace arguments (the bench rebuilds the config)."""
    full = preset("up5k").replace(**changes)
    return {section: {f: getattr(getattr(full, section), f) for f in getattr(full, section).__dataclass_fields__}
            for section in ("network", "rule", "train", "spiking", "fixed")}


def _run(case: int, simulator: str, samples: int):
    harness.require_simulator(simulator)
    rng = random.Random(7000 + case)
    changes, lanes = random_config(rng)
    spec = full_replace(changes)
    cfg = Config().replace(**spec)
    built = harness.build(lambda: Network.from_config(cfg, lanes=lanes), name="network",
                          params={"config": spec, "lanes": lanes}, simulator=simulator, top_ports_only=True)
    harness.run(built, "loco_fpga.sim.benches.network",
                params={"seed": rng.randrange(1 << 30), "samples": samples,
                        "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5])})


# Default run: 6 random configurations × 20 samples on Verilator (the default simulator) and 4 more on Icarus
# where it is installed (≈ 1 min warm with -n 2; each cold Verilator build adds ≈ 20 s on the loaded machine).
@pytest.mark.parametrize("case", range(6))
def test_network_bench_verilator(case):
    _run(case, "verilator", 20)


@pytest.mark.parametrize("case", range(6, 10))
def test_network_bench_icarus(case):
    _run(case, "icarus", 20)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(100, 124))
def test_network_bench_random_configs_slow(case):
    """More random configurations, 60 samples each, alternating simulators; `pytest -m slow`."""
    _run(case, "verilator" if case % 2 else "icarus", 60)


def test_random_configs_cover_the_space():
    """The default cases span depths 1–4, both encoders, IF and LIF, and T = 1 … 16 (so the bench cannot
    silently test a corner only)."""
    drawn = [random_config(random.Random(7000 + case)) for case in range(10)]
    depths = {len(c["network"]["arch"]) - 1 for c, _ in drawn}
    assert depths == {1, 2, 3, 4}, depths
    assert {c["spiking"]["encoder"] for c, _ in drawn} == {"deterministic", "bernoulli"}
    assert {c["spiking"]["neuron"] for c, _ in drawn} == {"if", "lif"}
    assert {1, 16} <= {c["spiking"]["steps"] for c, _ in drawn}
