# amaranth: UnusedElaboratable=no
"""hdl/fixed against loco_fpga.qformat: every rounding mode, both saturation limits, random values."""

import random

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from loco_fpga.hdl.fixed import Narrow, at_least, narrow_mode, saturate, shape, shift_round
from loco_fpga.qformat import QFormat, narrow

# (source shape, source fraction bits, destination format): right shifts, no shift, a left shift,
# signed → unsigned and wide accumulators, like the model's acc → out and ΔL·lr → g narrowings.
CASES = [
    (signed(24), 12, QFormat("w", True, 12, 8)),
    (signed(40), 20, QFormat("g", True, 16, 12)),
    (signed(16), 6, QFormat("m", True, 10, 6)),      # no fraction dropped: saturation only
    (signed(20), 4, QFormat("l", True, 12, 6)),      # left shift by 2, exact, then saturate
    (signed(20), 10, QFormat("u", False, 8, 4)),     # signed source into an unsigned format
    (unsigned(18), 9, QFormat("r", False, 9, 5)),
    (signed(48), 31, QFormat("s", True, 8, 0)),      # drops 31 bits
]


def _values(src_shape, src_frac, fmt, rng, n=300):
    """Both saturation limits (and their neighbours), ties, the source extremes, and random values."""
    lo = -(1 << (src_shape.width - 1)) if src_shape.signed else 0
    hi = (1 << (src_shape.width - 1)) - 1 if src_shape.signed else (1 << src_shape.width) - 1
    s = src_frac - fmt.frac
    special = [lo, hi, 0, 1, -1, lo + 1, hi - 1]
    for edge in (fmt.min, fmt.max):
        base = edge << s if s >= 0 else edge >> -s
        special += [base + d for d in range(-3, 4)]
        if s > 0:
            special += [base + (1 << (s - 1)) + d for d in (-1, 0, 1)]      # half-up ties at the edge
            special += [base + (1 << s) + d for d in (-1, 0, 1)]
    for k in range(-4, 5):                                                  # ties around zero
        if s > 0:
            special.append(k * (1 << s) + (1 << (s - 1)))
    values = [v for v in special if lo <= v <= hi]
    values += [rng.randint(lo, hi) for _ in range(n)]
    # Values just outside the destination range, in the source's fraction bits.
    span = max(1, (fmt.max - fmt.min) << max(s, 0))
    values += [min(hi, max(lo, (fmt.min << max(s, 0)) + rng.randint(-span, span))) for _ in range(n // 3)]
    return values


def _simulate(dut, stimuli):
    """Drive (value, rand) pairs through a combinational Narrow; returns the outputs as ints."""
    got = []

    async def bench(ctx):
        for value, rand in stimuli:
            ctx.set(dut.i, value)
            if rand is not None:
                ctx.set(dut.rand, rand)
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return got


# Stochastic rounding exists only where bits are dropped (shift ≥ 1).
PARAMS = [(case, mode) for case, (_, src_frac, fmt) in enumerate(CASES)
          for mode in ("half-up", "trunc", "stochastic") if mode != "stochastic" or src_frac > fmt.frac]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_narrow_equals_qformat(case, mode):
    src_shape, src_frac, fmt = CASES[case]
    s = src_frac - fmt.frac
    rng = random.Random(case * 10 + len(mode))
    values = _values(src_shape, src_frac, fmt, rng)
    if mode == "stochastic":
        rands = [rng.choice([0, (1 << s) - 1, rng.randrange(1 << s)]) for _ in values]
        expected = [int(narrow(np.int64(v), src_frac, fmt, mode, np.int64(r))) for v, r in zip(values, rands)]
    else:
        rands = [None] * len(values)
        expected = [int(narrow(np.int64(v), src_frac, fmt, mode)) for v in values]
    dut = Narrow(src_shape=src_shape, src_frac=src_frac, fmt=fmt, mode=mode)
    got = _simulate(dut, list(zip(values, rands)))
    mismatches = [(v, r, g, e) for v, r, g, e in zip(values, rands, got, expected) if g != e]
    assert not mismatches, f"{len(mismatches)} of {len(values)} differ; first (in, rand, hdl, model): {mismatches[0]}"
    # The stimuli really reach both limits of the destination format.
    assert fmt.min in expected and fmt.max in expected


def test_default_mode_is_the_formats_rounding():
    assert narrow_mode(QFormat("a", True, 8, 4, "trunc")) == "trunc"
    assert narrow_mode(QFormat("a", True, 8, 4, "exact")) == "half-up"
    assert narrow_mode(QFormat("a", True, 8, 4, "trunc"), "stochastic") == "stochastic"


def test_shape_follows_the_format():
    assert shape(QFormat("a", True, 12, 8)) == signed(12)
    assert shape(QFormat("b", False, 9, 8)) == unsigned(9)
    with pytest.raises(TypeError, match=r"fmt = 12: expected a loco_fpga.qformat.QFormat"):
        shape(12)


def test_errors_quote_the_bad_value():
    fmt = QFormat("w", True, 12, 8)
    with pytest.raises(ValueError, match=r"mode = 'nearest': expected one of half-up, trunc, stochastic"):
        Narrow(src_shape=signed(20), src_frac=12, fmt=fmt, mode="nearest")
    with pytest.raises(ValueError, match=r"src_frac = -1: must be a non-negative int"):
        Narrow(src_shape=signed(20), src_frac=-1, fmt=fmt)
    with pytest.raises(TypeError, match=r"src_shape = 'wide': not a shape"):
        Narrow(src_shape="wide", src_frac=12, fmt=fmt)
    with pytest.raises(ValueError, match=r"src_frac = 8: stochastic rounding into s12.8 drops 0 bits"):
        Narrow(src_shape=signed(20), src_frac=8, fmt=fmt, mode="stochastic")
    with pytest.raises(ValueError, match=r"stochastic rounding needs PRNG bits: pass rand"):
        shift_round(Narrow(src_shape=signed(20), src_frac=12, fmt=fmt).i, 4, "stochastic")


def test_saturate_clamps_every_value_of_every_shape_to_its_format():
    """``saturate`` (bit tests, no comparisons) against the clamp to [fmt.min, fmt.max], exhaustively: signed and
    unsigned values of 1 … 9 bits into signed and unsigned formats of 1 … 10 bits, narrower and wider."""
    m = Module()
    cases = []
    for value_signed in (False, True):
        for width in (1, 2, 3, 6, 9):
            for fmt_signed in (False, True):
                for bits in (1, 2, 4, 6, 8, 10):
                    if fmt_signed and bits < 2:
                        continue
                    fmt = QFormat("t", fmt_signed, bits, 0)
                    x = Signal(signed(width) if value_signed else unsigned(width))
                    y = Signal(shape(fmt))
                    out = saturate(x, fmt)
                    assert out.shape() == shape(fmt)
                    m.d.comb += y.eq(out)
                    cases.append((x, y, fmt))
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for x, y, fmt in cases:
            lo, hi = (-(1 << (len(x) - 1)), 1 << (len(x) - 1)) if x.shape().signed else (0, 1 << len(x))
            for v in range(lo, hi):
                ctx.set(x, v)
                if ctx.get(y) != min(max(v, fmt.min), fmt.max):
                    bad.append((x.shape(), fmt.signed, fmt.bits, v, ctx.get(y)))

    sim.add_testbench(bench)
    sim.run()
    assert len(cases) == 110 and not bad, bad[:5]


def test_at_least_equals_the_comparison_for_every_value_and_constant():
    """``at_least`` (bit tests) against Python's ``>=``, exhaustively: signed and unsigned values of 1 … 7 bits,
    every constant from below the shape's minimum to above its maximum."""
    m = Module()
    cases = []
    for value_signed in (False, True):
        for width in (1, 2, 3, 5, 7):
            lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if value_signed else (0, 1 << width)
            x = Signal(signed(width) if value_signed else unsigned(width))
            for const in range(lo - 2, hi + 3):
                y = Signal()
                m.d.comb += y.eq(at_least(x, const))
                cases.append((x, y, const, range(lo, hi)))
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for x, y, const, values in cases:
            for v in values:
                ctx.set(x, v)
                if ctx.get(y) != int(v >= const):
                    bad.append((x.shape(), const, v, ctx.get(y)))

    sim.add_testbench(bench)
    sim.run()
    assert len(cases) == 2 * sum((1 << w) + 5 for w in (1, 2, 3, 5, 7)) and not bad, bad[:5]
    with pytest.raises(TypeError, match=r"const = 1.5: expected an int"):
        at_least(Signal(4), 1.5)
