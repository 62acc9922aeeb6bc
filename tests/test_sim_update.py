"""cocotb bench of NP training in hardware (``Network(update="np")``) against ``FixedRule.step_q``: random
configurations (the network bench's random up5k variations with rule ``np``, random update rounding and
mask), random data, random idle cycles on ``x`` and back-pressure on ``counts``/``o``; per training step the
forward results and then every weight of every layer compared bit for bit. The default Verilator run trains
several configurations side by side in one build (``sim/benches/loco.py``, whose :class:`Batch` bench also runs
NP with the same checks as ``sim/benches/update.py``); the Icarus and slow runs use one build per configuration
(``sim/benches/update.py``)."""

import random

import pytest

from loco_fpga.config import Config
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness
from loco_fpga.sim.benches.loco import Batch

from test_sim_loco import bench_case, draw_rule


def random_config(rng: random.Random, case: int) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): a network-bench configuration with rule np, a random mask and the
    case's update rounding; redrawn until the config validates."""
    return draw_rule(rng, case, lambda r: {"name": "np", "mask": r.random() < 0.5})


def make_case(case: int, steps: int) -> dict:
    """Draw ``case`` as a bench case (the configuration, lanes, data seed, idle and stall rates)."""
    rng = random.Random(9100 + case)
    changes, lanes = random_config(rng, case)
    return bench_case(rng, changes, lanes, steps, preload=False)


def _run(case: int, simulator: str, steps: int):
    harness.require_simulator(simulator)
    spec = make_case(case, steps)
    cfg = Config().replace(**spec["config"])
    built = harness.build(lambda: Network.from_config(cfg, lanes=spec["lanes"], update="np"), name="network-np",
                          params={"config": spec["config"], "lanes": spec["lanes"]}, simulator=simulator,
                          top_ports_only=True)
    harness.run(built, "loco_fpga.sim.benches.update",
                params={k: spec[k] for k in ("config", "lanes", "seed", "steps", "idle", "stall")})


def _run_batch(cases, simulator: str, steps: int, shared_update: bool = False):
    """``cases`` side by side in one build (``sim/benches/loco.py`` with rule np); ``shared_update``: each with
    one update engine for all its layers."""
    harness.require_simulator(simulator)
    specs = [make_case(c, steps) for c in cases]
    if shared_update:       # (the key only when set: the per-layer builds keep their cache entries)
        for s in specs:
            s["shared_update"] = True

    def top():
        return Batch([Network.from_config(Config().replace(**s["config"]), lanes=s["lanes"], update="np",
                                          shared_update=shared_update) for s in specs])

    hw = [{"config": s["config"], "lanes": s["lanes"], **({"shared_update": True} if shared_update else {})}
          for s in specs]
    built = harness.build(top, name="network-np-shared-batch" if shared_update else "network-np-batch",
                          params={"parts": hw}, simulator=simulator, top_ports_only=True)
    harness.run(built, "loco_fpga.sim.benches.loco", params={"cases": specs})


#: Default run: 6 draws × 10 training steps in one Verilator build (top ports only; draw 5, a 34-wide layer at
#: 28 lanes, whose update engine makes the build several times larger, is left to Icarus) and draws 2 … 5 on
#: Icarus, one build each.
DEFAULT_VERILATOR = (0, 1, 2, 3, 4, 6)


def test_np_training_bench_verilator():
    _run_batch(DEFAULT_VERILATOR, "verilator", 10)


#: The shared update engine (``Network(shared_update=True)``, the iCEBreaker's), one Verilator build (≈ 30 s fresh):
#: 3-7-8-10-3 at 6 lanes (stochastic, mask, T 16; layer 0 uses 4 lanes, the others 6) and 6-3-7 at 7 (half-up,
#: Bernoulli; layer 1 uses 4) — layers of different lanes and chunk counts, 4 layers and 2.
SHARED_VERILATOR = (8, 9)


def test_np_training_bench_shared_verilator():
    _run_batch(SHARED_VERILATOR, "verilator", 10, shared_update=True)


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
    drawn = [random_config(random.Random(9100 + case), case) for case in DEFAULT_VERILATOR]
    assert {c["fixed"]["update_rounding"] == "stochastic" for c, _ in drawn} == {True, False}
    assert {c["rule"]["mask"] for c, _ in drawn} == {True, False}
    assert {c["spiking"]["encoder"] for c, _ in drawn} == {"deterministic", "bernoulli"}
    assert any(len(c["network"]["arch"]) > 2 for c, _ in drawn)
