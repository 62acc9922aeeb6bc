"""cocotb bench of the xorshift32 lane (hdl/prng.py) against golden_model.prng, on each simulator."""

import pytest

from loco_fpga.hdl.prng import Xorshift32
from loco_fpga.sim import harness

LANES, WORDS = 4, 2048


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_prng_bench_equals_golden_model(simulator):
    harness.require_simulator(simulator)
    built = harness.build(Xorshift32, name="xorshift32", params={}, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.prng",
                params={"seed": 12345, "lanes": LANES, "words": WORDS, "duty": 0.7})
