"""cocotb bench of the layer engine (hdl/layer.py) against the golden model: random configurations (a
preset with random widths, layer, LANES, T, IF/LIF, Q formats and σ), one build each, random data, random
idle cycles on ``noise``/``i`` and back-pressure on ``o``/``r``."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.layer import LayerEngine
from loco_fpga.sim import harness


def random_config(rng: random.Random) -> tuple[dict, int, int]:
    """(Config.replace arguments, layer index, lanes): a preset varied at random, always a valid config
    (draws that check_config rejects are drawn again)."""
    while True:
        try:
            return _random_config(rng)
        except ConfigError:
            continue


def _random_config(rng: random.Random) -> tuple[dict, int, int]:
    base = rng.choice(["up5k", "ecp5"])
    cfg = preset(base)
    depth = rng.randint(1, 3)
    arch = tuple(rng.randint(1, 14) for _ in range(depth)) + (rng.randint(1, 10),)
    if rng.random() < 0.2:                       # a wide layer: two noise words per sample
        arch = arch[:-1] + (rng.randint(33, 40),) + arch[-1:]
    wf = rng.randint(4, 13)
    wb = wf + rng.randint(2, 5)
    fan_bits = (max(arch[:-1]) + 1 - 1).bit_length()
    acc = wb + fan_bits + 1 + rng.randint(0, 4)
    mb = rng.choice([wb, acc, acc + 6])
    threshold = rng.choice([0.25, 0.5, 1.0, 1.5])
    while round(threshold * 2 ** wf) >= 1 << (mb - 2):
        threshold /= 2
    changes = {
        "network": {"arch": arch},
        "train": {"seed": rng.randrange(1 << 20)},
        "spiking": {"enabled": True, "steps": 1 << rng.randint(0, 4), "neuron": rng.choice(["if", "lif"]),
                    "leak_shift": rng.randint(1, 6), "threshold": threshold},
        "rule": {"sigma": 2.0 ** -rng.randint(0, min(wf, 8))},
        "fixed": {"enabled": True, "weight_bits": wb, "weight_frac": wf, "acc_bits": acc,
                  "membrane_bits": mb, "out_bits": rng.randint(wb, acc + 3)},
    }
    cfg.replace(**changes)          # validates (raises ConfigError naming the field)
    hidden = len(arch) > 2 and rng.random() < 0.6
    layer = rng.randrange(len(arch) - 2) if hidden else len(arch) - 2
    if arch[layer + 1] > 32:                     # keep wide layers' cycle counts small with many lanes
        lanes = rng.randint(max(1, arch[layer] // 2), arch[layer] + 1)
    else:
        lanes = rng.randint(1, arch[layer] + 1)
    return {"base": base, **changes}, layer, lanes


def _config(spec: dict) -> Config:
    return preset(spec["base"]).replace(**{k: v for k, v in spec.items() if k != "base"})


def _run(case: int, simulator: str, samples: int):
    harness.require_simulator(simulator)
    rng = random.Random(4000 + case)
    spec, layer, lanes = random_config(rng)
    generics = {"spec": spec, "layer": layer, "lanes": lanes}
    cfg = _config(spec)
    built = harness.build(lambda: LayerEngine.from_config(cfg, layer, lanes=lanes), name="layer",
                          params=generics, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.layer",
                params={"config": spec_to_replace(spec), "seed": rng.randrange(1 << 30), "samples": samples,
                        "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5])})


def spec_to_replace(spec: dict) -> dict:
    """The full Config.replace arguments of a spec (the bench rebuilds the config from them)."""
    full = _config(spec)
    return {section: {f: getattr(getattr(full, section), f)
                      for f in getattr(full, section).__dataclass_fields__}
            for section in ("network", "rule", "train", "spiking", "fixed")}


# Default run: 20 random configurations × 20 samples on Verilator (the default simulator, ≈ 9 s builds)
# and 8 of them again on Icarus (≈ 2 s builds) where it is installed.
@pytest.mark.parametrize("case", range(20))
def test_layer_bench_verilator(case):
    _run(case, "verilator", 20)


@pytest.mark.parametrize("case", range(8))
def test_layer_bench_icarus(case):
    _run(case, "icarus", 20)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(200, 230))
def test_layer_bench_random_configs_slow(case):
    """More random configurations, 60 samples each, on Icarus; `pytest -m slow`."""
    _run(case, "icarus", 60)
