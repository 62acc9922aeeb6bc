# amaranth: UnusedElaboratable=no
"""The loss unit in the Amaranth simulator against ``FixedRule.loss_unit`` on random outputs (including
both saturation limits of Δy, dl and g), with random idle cycles on ``i`` and back-pressure on ``o``."""

import random

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from loco_fpga.config import Config, preset
from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule
from loco_fpga.hdl.loss import DSP_BITS, LossUnit, partial_products
from loco_fpga.qformat import formats


def _config(rng, base):
    """``base`` preset with random output/loss widths (valid for check_config)."""
    cfg = preset(base)
    n_out = rng.choice([1, 2, 3, 10, 17])
    wf = rng.randint(4, 14)
    fixed = {"weight_bits": wf + rng.randint(2, 6), "weight_frac": wf, "out_bits": wf + rng.randint(2, 10),
             "dl_bits": rng.randint(8, 32), "lr_bits": rng.randint(4, 20), "g_bits": rng.randint(8, 30)}
    fixed["acc_bits"] = fixed["membrane_bits"] = max(fixed["weight_bits"] + 8, fixed["out_bits"])
    fixed["dl_frac"] = rng.randint(0, fixed["dl_bits"] - 1)
    fixed["lr_frac"] = rng.randint(0, fixed["lr_bits"])
    fixed["g_frac"] = rng.randint(0, fixed["g_bits"] - 1)
    arch = (cfg.network.arch[0], 8, n_out)
    return cfg.replace(network={"arch": arch}, fixed=fixed, rule={"sigma": 2.0 ** -min(5, wf)})


def _samples(rng, fm, n_out, count):
    lo, hi = fm.out.min, fm.out.max
    small = 1 << (fm.weight.frac + 1)
    out = []
    for n in range(count):
        kind = n % 3
        if kind == 0:        # realistic: outputs near [−2, 2], small perturbations
            y = [rng.randint(-small, small) for _ in range(n_out)]
            yn = [v + rng.randint(-small // 8, small // 8) for v in y]
        elif kind == 1:      # anywhere in the format, including the limits
            y = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(n_out)]
            yn = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(n_out)]
        else:                # ỹ = y: Δy = 0, ΔL = 0
            y = [rng.randint(lo, hi) for _ in range(n_out)]
            yn = list(y)
        yn = [min(max(v, lo), hi) for v in yn]
        out.append((y, yn, rng.randrange(n_out), rng.randint(0, fm.lr.max)))
    return out


def _run(dut, samples, rng, idle, stall):
    got = []

    async def driver(ctx):
        for n, (y, yn, label, lr) in enumerate(samples):
            ctx.set(dut.label, label)
            ctx.set(dut.lr, lr)
            for k in range(len(y)):
                while rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"y": y[k], "y_noisy": yn[k], "last": int(k == len(y) - 1)})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            while sum(r["last"] for r in got) <= n:      # label and lr stay until the sample's g is taken
                await ctx.tick()

    async def monitor(ctx):
        total = sum(len(s[0]) for s in samples)
        while len(got) < total:
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got.append({f: int(getattr(payload, f)) for f in ("dy", "dl_sum", "dl", "g", "last")})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return got


@pytest.mark.parametrize("case", range(6))
def test_loss_unit_equals_the_model(case):
    rng = random.Random(700 + case)
    cfg = _config(rng, ("up5k", "ecp5")[case % 2])
    fm = formats(cfg)
    n_out = cfg.network.arch[-1]
    rule = FixedRule(FixedNetwork(cfg, np.random.default_rng(0)), cfg)
    samples = _samples(rng, fm, n_out, 12)
    dut = LossUnit(formats=fm, n_out=n_out)
    got = _run(dut, samples, rng, idle=0.3 if case % 3 else 0.0, stall=0.3 if case % 3 else 0.0)
    assert len(got) == len(samples) * n_out
    for n, (y, yn, label, lr) in enumerate(samples):
        dy, dl, g = rule.loss_unit(np.array(y, dtype=np.int64), np.array(yn, dtype=np.int64), label, lr)
        dy_sum = int(np.sum(dy * (dy + 2 * (np.array(y) - (np.arange(n_out) == label) * (1 << fm.out.frac)))))
        rows = got[n * n_out:(n + 1) * n_out]
        assert [r["dy"] for r in rows] == dy.tolist(), f"sample {n}: Δy"
        assert [r["last"] for r in rows] == [0] * (n_out - 1) + [1], f"sample {n}: last"
        assert (rows[-1]["dl_sum"], rows[-1]["dl"], rows[-1]["g"]) == (dy_sum, int(dl), int(g)), \
            f"sample {n}: (ΔL_sum, dl, g)"


@pytest.mark.parametrize("base", ["up5k", "ecp5"])
def test_loss_unit_equals_the_model_with_the_preset_formats(base):
    """The presets' own formats (the shapes the boards build), with learning rates up to lr.max."""
    cfg = preset(base)
    fm = formats(cfg)
    n_out = cfg.network.arch[-1]
    rule = FixedRule(FixedNetwork(cfg, np.random.default_rng(0)), cfg)
    rng = random.Random(base)
    samples = _samples(rng, fm, n_out, 24)
    samples[0] = ([fm.out.min] * n_out, [fm.out.max] * n_out, 0, fm.lr.max)
    samples[1] = ([fm.out.max] * n_out, [fm.out.min] * n_out, n_out - 1, fm.lr.max)
    got = _run(LossUnit(formats=fm, n_out=n_out), samples, rng, 0.2, 0.2)
    for n, (y, yn, label, lr) in enumerate(samples):
        _, dl, g = rule.loss_unit(np.array(y, dtype=np.int64), np.array(yn, dtype=np.int64), label, lr)
        last = got[(n + 1) * n_out - 1]
        assert (last["dl"], last["g"]) == (int(dl), int(g)), f"sample {n}"


def test_saturating_loss_hits_the_limits():
    """Outputs at opposite limits drive dl and g into saturation; the unit must clamp, not wrap."""
    cfg = preset("up5k").replace(fixed={"dl_bits": 12, "dl_frac": 2, "g_bits": 8, "g_frac": 2})
    fm = formats(cfg)
    n_out = cfg.network.arch[-1]
    rule = FixedRule(FixedNetwork(cfg, np.random.default_rng(0)), cfg)
    samples = [([fm.out.min] * n_out, [fm.out.max] * n_out, 3, fm.lr.max),
               ([fm.out.max] * n_out, [fm.out.min] * n_out, 0, fm.lr.max)]
    got = _run(LossUnit(formats=fm, n_out=n_out), samples, random.Random(1), 0.0, 0.0)
    for n, (y, yn, label, lr) in enumerate(samples):
        dy, dl, g = rule.loss_unit(np.array(y), np.array(yn), label, lr)
        assert int(dl) in (fm.dl.min, fm.dl.max) and int(g) in (fm.g.min, fm.g.max)
        last = got[(n + 1) * n_out - 1]
        assert (last["dl"], last["g"]) == (int(dl), int(g))


def test_latency_is_published_and_held():
    cfg = preset("up5k")
    fm = formats(cfg)
    dut = LossUnit(formats=fm, n_out=3)
    cycles = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.lr, 1234)
        for k in range(3):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"y": k, "y_noisy": 5 * k, "last": int(k == 2)})
            await ctx.tick()
            ctx.set(dut.i.valid, 0)
            cycle = 0
            while not ctx.get(dut.o.valid):
                await ctx.tick()
                cycle += 1
            cycles[k] = cycle + 1     # +1: the accepting edge
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert cycles == {0: dut.latency, 1: dut.latency, 2: dut.final_latency}


def test_parameter_errors_quote_the_value():
    fm = formats(Config())
    with pytest.raises(ValueError, match=r"n_out = 0: must be a positive integer"):
        LossUnit(formats=fm, n_out=0)
    with pytest.raises(ValueError, match=r"n_out = 2.0: must be a positive integer"):
        LossUnit(formats=fm, n_out=2.0)
    with pytest.raises(TypeError, match=r"formats = 3: expected a loco_fpga.qformat.Formats"):
        LossUnit(formats=3, n_out=2)


@pytest.mark.parametrize("a_shape, b_shape", [(signed(24), signed(27)), (signed(32), unsigned(16)),
                                              (signed(31), unsigned(17)), (signed(16), unsigned(16)),
                                              (signed(8), unsigned(4)), (signed(30), unsigned(20)),
                                              (signed(2), unsigned(1)), (unsigned(17), signed(9))])
def test_partial_products_sum_to_the_product(a_shape, b_shape):
    """The chunked product the loss unit's multiplier slots compute: Σ x·y << s over the slot pairs plus the small
    chunks' logic products equals a·b, at the extremes and at random values (signed 16-bit slot operands)."""
    a, b = Signal(a_shape), Signal(b_shape)
    pairs, logic = partial_products(a, a_shape, b, b_shape)
    assert all(len(x) <= DSP_BITS - (0 if x.shape().signed else 1) for x, _, _ in pairs)
    assert all(len(y) <= DSP_BITS - (0 if y.shape().signed else 1) for _, y, _ in pairs)
    total = sum((x * y << s for x, y, s in pairs), sum(v << s for v, s in logic))
    out = Signal(signed(a_shape.width + b_shape.width + 1))
    m = Module()
    m.d.comb += out.eq(total)
    rng = random.Random(a_shape.width * 64 + b_shape.width)

    def values(shape):
        lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
        return [lo, hi, 0, min(1, hi), -1 if shape.signed else min(2, hi)] + [rng.randint(lo, hi) for _ in range(40)]

    cases = [(x, y) for x in values(a_shape) for y in values(b_shape)[:8]] + list(zip(values(a_shape), values(b_shape)))
    got = []

    async def bench(ctx):
        for x, y in cases:
            ctx.set(a, x)
            ctx.set(b, y)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [x * y for x, y in cases]
