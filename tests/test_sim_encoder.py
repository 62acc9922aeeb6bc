"""cocotb bench of the spike encoder (hdl/encoder.py) against the golden model, on each simulator."""

import random

import pytest

from loco_fpga.hdl.encoder import SpikeEncoder
from loco_fpga.qformat import QFormat
from loco_fpga.sim import harness

# Hardware generics per build (one build directory each): input width and T differ between the two kinds.
GENERICS = {"deterministic": {"input_frac": 8, "steps": 16}, "bernoulli": {"input_frac": 6, "steps": 32}}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("encoder", ["deterministic", "bernoulli"])
def test_encoder_bench_equals_golden_model(encoder, simulator):
    harness.require_simulator(simulator)
    generics = {"encoder": encoder, **GENERICS[encoder]}
    frac = generics["input_frac"]

    def dut():
        return SpikeEncoder(input_format=QFormat("input", False, frac + 1, frac), steps=generics["steps"],
                            encoder=encoder)

    built = harness.build(dut, name=f"encoder-{encoder}", params=generics, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.encoder",
                params={"seed": 2024, "lane": 3, "samples": 60, "idle": 0.3, "stall": 0.3})


@pytest.mark.slow
@pytest.mark.parametrize("config", range(6))
def test_encoder_bench_random_generics(config):
    """Random encoder kind, input width and T (one build each), more samples; `pytest -m slow`."""
    harness.require_simulator("verilator")
    rng = random.Random(1000 + config)
    encoder = ("deterministic", "bernoulli")[config % 2]
    frac, steps = rng.randint(1, 16), 1 << rng.randint(0, 7)
    generics = {"encoder": encoder, "input_frac": frac, "steps": steps}

    def dut():
        return SpikeEncoder(input_format=QFormat("input", False, frac + 1, frac), steps=steps, encoder=encoder)

    built = harness.build(dut, name=f"encoder-{encoder}", params=generics)
    harness.run(built, "loco_fpga.sim.benches.encoder",
                params={"seed": rng.randrange(1 << 32), "lane": rng.randrange(784), "samples": 200,
                        "idle": rng.random() * 0.6, "stall": rng.random() * 0.6})
