"""cocotb bench of LLS training in hardware (``Network(update="lls")``) against ``FixedRule.step_q`` with rule lls:
random configurations (the network bench's random up5k variations — depth 2–4 weight layers, widths, LANES, T,
IF/LIF, encoder, Q formats — with rule lls, random τ and update rounding), several per build
(``sim/benches/loco.py``, which runs LLS like DFA), random data, random idle cycles on ``x`` and back-pressure on
``counts``/``o``; per training step the clean hidden counts, y and every weight compared bit for bit."""

import random

import pytest

from test_sim_dfa import _run as run_batch
from test_sim_loco import bench_case, draw_rule


def make_case(case: int, steps: int) -> dict:
    rng = random.Random(9900 + case)
    changes, lanes = draw_rule(rng, case, lambda r: {"name": "lls", "lls_temperature": r.choice([1.0, 0.5, 0.25])},
                               accept=lambda c: len(c["network"]["arch"]) >= 3)
    return bench_case(rng, changes, lanes, steps, preload=False)


def _run(cases, simulator: str, steps: int):
    run_batch(cases, simulator, steps, make=make_case, rule="lls")


def test_lls_training_bench_verilator():
    """5 random configurations × 10 steps in one Verilator build."""
    _run(range(5), "verilator", 10)


def test_lls_training_bench_icarus():
    _run(range(5, 7), "icarus", 10)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(2))
def test_lls_training_bench_random_configs_slow(batch):
    """16 more random configurations (draws 7 … 22), 20 steps, 8 per build; `pytest -m slow`."""
    _run(range(7 + 8 * batch, 15 + 8 * batch), "verilator", 20)
