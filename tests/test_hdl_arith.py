# amaranth: UnusedElaboratable=no
"""The restoring divider and square root (hdl/arith.py) in the Amaranth simulator against Python ``//``,
``qformat.div_trunc`` and ``qformat.isqrt``: edge operands (0, 1, max, divisor 1, divisor max, quotient
overflow) and random ones, random idle cycles on ``i`` and back-pressure on ``o``; published latency."""

import random

import pytest
from amaranth.sim import Simulator

from loco_fpga.hdl.arith import Divider, Isqrt
from loco_fpga.qformat import div_trunc, isqrt


def _stream(dut, operands, rng, idle, stall):
    """Drive ``operands`` (payload dicts) into ``dut.i``; collect as many results from ``dut.o``."""
    got = []

    async def driver(ctx):
        for op in operands:
            while rng.random() < idle:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, op)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        while len(got) < len(operands):
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got.append({name: int(getattr(payload, name)) for name in dut.result_layout.members})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return got


def _div_operands(rng, wn, wd, count):
    nmax, dmax = (1 << wn) - 1, (1 << wd) - 1
    edges = [(a, b) for a in (0, 1, 2, nmax, nmax - 1, nmax >> 1) for b in (1, 2, 3, dmax, max(1, dmax >> 1))]
    edges += [(a, a) for a in (1, min(nmax, dmax))] + [(min(nmax, dmax) - 1, min(nmax, dmax))]
    edges = [(a, b) for a, b in edges if 0 <= a <= nmax and 1 <= b <= dmax]   # representable operands only
    rand = [(rng.randint(0, nmax), rng.randint(1, dmax)) for _ in range(count)]
    rand += [(rng.randint(0, nmax) >> rng.randint(0, wn), rng.randint(1, dmax) >> rng.randint(0, wd - 1) or 1)
             for _ in range(count)]
    return [{"dividend": a, "divisor": b} for a, b in edges + rand]


@pytest.mark.parametrize("wn, wd, wq, idle, stall", [
    (8, 8, None, 0.0, 0.0), (16, 5, None, 0.3, 0.3), (44, 29, 29, 0.2, 0.4), (59, 30, 30, 0.0, 0.5),
    (39, 32, None, 0.3, 0.0), (1, 1, None, 0.5, 0.5), (29, 16, 1, 0.1, 0.1)])
def test_divider_equals_floor_division(wn, wd, wq, idle, stall):
    rng = random.Random(wn * 1000 + wd)
    dut = Divider(dividend_width=wn, divisor_width=wd, quotient_width=wq)
    q_bits = dut.quotient_width
    ops = _div_operands(rng, wn, wd, 60)
    got = _stream(dut, ops, rng, idle, stall)
    assert len(got) == len(ops)
    for op, res in zip(ops, got):
        a, b = op["dividend"], op["divisor"]
        q = a // b
        assert res["overflow"] == int(q >= 1 << q_bits), f"{a} // {b}: overflow"
        if q < 1 << q_bits:
            assert (res["quotient"], res["remainder"]) == (q, a % b), f"{a} // {b}"
            assert res["quotient"] == abs(int(div_trunc(a, b))) == int(div_trunc(-a, b)) * -1
        else:
            assert (res["quotient"], res["remainder"]) == ((1 << q_bits) - 1, 0), f"{a} // {b} clamps"


def test_divider_by_zero_flags_overflow():
    dut = Divider(dividend_width=6, divisor_width=4)
    got = _stream(dut, [{"dividend": a, "divisor": 0} for a in (0, 1, 63)], random.Random(0), 0, 0)
    assert [(r["quotient"], r["overflow"]) for r in got] == [(63, 1)] * 3


@pytest.mark.parametrize("width, idle, stall", [(1, 0.0, 0.0), (2, 0.3, 0.3), (7, 0.0, 0.5), (32, 0.2, 0.2),
                                                (47, 0.3, 0.0), (56, 0.0, 0.0)])
def test_isqrt_equals_floor_square_root(width, idle, stall):
    rng = random.Random(width)
    top = (1 << width) - 1
    values = [0, 1, 2, 3, 4, top, top - 1, top >> 1]
    values += [r * r for r in (1, 2, isqrt(top))] + [r * r - 1 for r in (2, 3, isqrt(top))]
    values += [rng.randint(0, top) for _ in range(80)] + [rng.randint(0, top) >> rng.randint(0, width)
                                                          for _ in range(40)]
    values = [v for v in values if 0 <= v <= top]
    dut = Isqrt(width=width)
    got = _stream(dut, [{"radicand": v} for v in values], rng, idle, stall)
    assert [(r["root"], r["remainder"]) for r in got] == [(isqrt(v), v - isqrt(v) ** 2) for v in values]


@pytest.mark.parametrize("make", [lambda: Divider(dividend_width=20, divisor_width=7),
                                  lambda: Divider(dividend_width=44, divisor_width=29, quotient_width=29),
                                  lambda: Isqrt(width=33)])
def test_latency_and_interval_are_published(make):
    dut = make()
    op = {"dividend": 12345, "divisor": 17} if isinstance(dut, Divider) else {"radicand": 99999}
    edges, accepted = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, op)
        cycle = 0
        while len(edges) < 3:
            _, _, i_ready, o_valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            cycle += 1
            if i_ready:
                accepted.append(cycle)
            if o_valid:
                edges.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # tick number k samples the values before edge k: accepted at edge a, valid seen before edge a + latency + 1
    assert edges[0] - accepted[0] == dut.latency + 1
    assert [b - a for a, b in zip(accepted, accepted[1:])] == [dut.interval] * (len(accepted) - 1)
    assert [b - a for a, b in zip(edges, edges[1:])] == [dut.interval] * 2


def test_parameter_errors_quote_the_value():
    with pytest.raises(ValueError, match=r"dividend_width = 0: must be an integer in \[1, 256\]"):
        Divider(dividend_width=0, divisor_width=3)
    with pytest.raises(ValueError, match=r"divisor_width = 2.5: must be an integer"):
        Divider(dividend_width=4, divisor_width=2.5)
    with pytest.raises(ValueError, match=r"quotient_width = 9: must be an integer in \[1, 8\]"):
        Divider(dividend_width=8, divisor_width=3, quotient_width=9)
    with pytest.raises(ValueError, match=r"width = True: must be an integer"):
        Isqrt(width=True)
