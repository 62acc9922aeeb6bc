"""cocotb bench of DFA training in hardware (``Network(update="dfa")``) against ``FixedRule.step_q`` with rule dfa:
random configurations (the network bench's random up5k variations — depth 1–4 weight layers, widths, LANES, T,
IF/LIF, encoder, Q formats — with rule dfa, random feedback seed and update rounding), several per build
(``sim/benches/loco.py``, which also runs DFA), random data, random idle cycles on ``x`` and back-pressure on
``counts``/``o``; per training step the clean hidden counts, y and every weight compared bit for bit."""

import random

import pytest

from loco_fpga.config import Config
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness
from loco_fpga.sim.benches.loco import Batch

from test_sim_loco import bench_case, draw_rule


def make_case(case: int, steps: int) -> dict:
    rng = random.Random(9800 + case)
    changes, lanes = draw_rule(rng, case, lambda r: {"name": "dfa", "feedback_seed": r.randrange(1 << 20)})
    return bench_case(rng, changes, lanes, steps, preload=False)


def _run(cases, simulator: str, steps: int, *, make=None, rule: str = "dfa"):
    """Train the draws ``cases`` of ``make`` (default: this file's ``make_case``) with ``update = rule`` in one
    top-ports-only build of the batch bench (test_sim_lls.py reuses it for LLS)."""
    harness.require_simulator(simulator)
    specs = [(make or make_case)(c, steps) for c in cases]

    def top():
        return Batch([Network.from_config(Config().replace(**s["config"]), lanes=s["lanes"], update=rule)
                      for s in specs])

    hw = [{"config": s["config"], "lanes": s["lanes"]} for s in specs]
    built = harness.build(top, name=f"network-{rule}", params={"parts": hw}, simulator=simulator,
                          top_ports_only=True)
    harness.run(built, "loco_fpga.sim.benches.loco", params={"cases": specs})


#: default cases: draws among 0 … 15 with at least one hidden layer (the feedback units), 1–3 hidden layers and
#: LANES ≤ 10 (a 35-wide layer with 22–34 lanes makes the update engine's Verilog, and the build, large: the
#: six-configuration set below took 17.6 min to build on the loaded 2-core machine)
DEFAULT_VERILATOR = (5, 9, 11, 14, 15)
DEFAULT_ICARUS = (10, 12)
SLOW_WIDE = (3, 4, 5, 8, 9, 11)


def test_dfa_training_bench_verilator():
    """5 random configurations × 10 steps in one Verilator build."""
    _run(DEFAULT_VERILATOR, "verilator", 10)


@pytest.mark.slow
def test_dfa_training_bench_wide_slow():
    """6 configurations, three with a 34–35-wide hidden layer and 22–34 lanes, × 10 steps."""
    _run(SLOW_WIDE, "verilator", 10)


def test_dfa_training_bench_icarus():
    _run(DEFAULT_ICARUS, "icarus", 10)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(3))
def test_dfa_training_bench_random_configs_slow(batch):
    """24 more random configurations (draws 16 … 39), 30 steps, 8 per build; `pytest -m slow`."""
    _run(range(16 + 8 * batch, 24 + 8 * batch), "verilator", 30)


def test_default_cases_have_hidden_layers():
    assert all(len(make_case(c, 10)["config"]["network"]["arch"]) >= 3 for c in DEFAULT_VERILATOR + DEFAULT_ICARUS)
