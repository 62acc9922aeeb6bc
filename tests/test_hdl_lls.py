# amaranth: UnusedElaboratable=no
"""The LLS error unit (hdl/lls.py) in the Amaranth simulator against ``FixedLocalError.error``
(golden_model/fixed_lls.py): random layers (width, classes, T, τ, learning rate, label), count vectors with
silent layers, saturated neurons and sparse activity, several samples back to back through one unit, random idle
cycles on ``i`` and back-pressure on ``o``; every e_j compared as an integer; the published cycle count."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed_lls import FixedLocalError
from loco_fpga.hdl.lls import LocalErrorUnit
from loco_fpga.qformat import formats


def _setup(width, classes, steps, tau):
    cfg = preset("up5k").replace(network={"arch": (8, width, classes)}, spiking={"steps": steps},
                                 rule={"name": "lls", "lls_temperature": 2.0 ** -tau})
    fm = formats(cfg)
    return cfg, fm


def _counts(rng: random.Random, width: int, steps: int, kind: str) -> list[int]:
    if kind == "silent":
        return [0] * width
    if kind == "saturated":
        return [rng.choice([0, steps]) for _ in range(width)]
    density = {"sparse": 0.15, "dense": 1.0}[kind]
    return [rng.randint(0, steps) if rng.random() < density else 0 for _ in range(width)]


def _run(dut, samples, rng, idle, stall):
    """samples: list of (counts, label, lr_q); returns the e vectors and the cycles from the last count in to the
    last e out of each sample."""
    n = dut.width
    got, marks = [], {}

    async def driver(ctx):
        for s, (counts, label, lr_q) in enumerate(samples):
            await ctx.tick().until(dut.idle)
            ctx.set(dut.label, label)
            ctx.set(dut.lr, lr_q)
            for j, c in enumerate(counts):
                while rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.count, c)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            # wait for the sample's outputs before the next label/lr (they must stay stable)
            while len(got) < (s + 1) * n:
                await ctx.tick()

    async def monitor(ctx):
        cycle = 0
        last_in = {}
        while len(got) < len(samples) * n:
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, i_valid, i_ready, valid, ready, e = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload.e)
            cycle += 1
            if i_valid and i_ready:
                last_in[len(got) // n] = cycle
            if valid and ready:
                got.append(int(e))
                if len(got) % n == 0:
                    s = len(got) // n - 1
                    marks[s] = cycle - last_in[s]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return [got[s * n:(s + 1) * n] for s in range(len(samples))], [marks[s] for s in range(len(samples))]


CASES = [  # width, classes, T, tau_shift, idle, stall
    (5, 3, 8, 1, 0.0, 0.0), (12, 10, 16, 1, 0.3, 0.3), (32, 10, 16, 1, 0.0, 0.0), (7, 2, 32, 0, 0.2, 0.5),
    (20, 6, 64, 2, 0.5, 0.2), (3, 11, 8, 1, 0.0, 0.4), (1, 4, 16, 1, 0.1, 0.1)]


@pytest.mark.parametrize("width, classes, steps, tau, idle, stall", CASES)
def test_lls_unit_equals_the_golden_model(width, classes, steps, tau, idle, stall):
    rng = random.Random(width * 131 + classes * 7 + steps)
    cfg, fm = _setup(width, classes, steps, tau)
    dut = LocalErrorUnit(formats=fm, width=width, n_classes=classes, norm_guard=cfg.fixed.norm_guard,
                         tau_shift=tau)
    golden = FixedLocalError(width, classes, steps, fm, cfg.fixed.norm_guard, tau)
    kinds = ["dense", "sparse", "silent", "saturated", "dense", "sparse", "dense"]
    samples = [(_counts(rng, width, steps, kind), rng.randrange(classes),
                fm.lr.from_float(rng.choice([0.005, 0.02, 0.1, 0.5]) / (classes * cfg.rule.sigma)))
               for kind in kinds]
    got, cycles = _run(dut, samples, rng, idle, stall)
    for (counts, label, lr_q), e in zip(samples, got):
        assert e == [int(v) for v in golden.error(np.array(counts), label, lr_q)]
    if stall == 0.0:
        for c in cycles:
            assert c == dut.cycles()


def test_lls_unit_rejects_bad_parameters():
    cfg, fm = _setup(8, 4, 16, 1)
    for name, value in [("width", 0), ("n_classes", 65), ("norm_guard", -1), ("tau_shift", 17)]:
        args = {"formats": fm, "width": 8, "n_classes": 4, "norm_guard": 8, "tau_shift": 1, name: value}
        with pytest.raises(ValueError, match=f"{name} = {value}"):
            LocalErrorUnit(**args)
    with pytest.raises(TypeError, match="formats"):
        LocalErrorUnit(formats=None, width=8, n_classes=4, norm_guard=8, tau_shift=1)
