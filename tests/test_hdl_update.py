# amaranth: UnusedElaboratable=no
"""The update engine (hdl/update.py) in the Amaranth simulator on a real weight memory: the weights after
several rank-1 updates equal ``FixedRule.step_q`` step 6 (same formula, same PRNG lanes), for each rounding
mode, several LANES (incl. padding columns), masks and saturation; v⊥/g arriving in either order with idle
cycles; the published latency; ``NpSource``; parameter errors."""

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model import prng
from loco_fpga.hdl.update import NpSource, PairSource, UpdateEngine
from loco_fpga.qformat import formats, shift_round


def model_update(fm, w, g, vperp, signs, active, rounding, drop, bank):
    """Step 6 of ``FixedRule.step_q`` for one layer: W ← sat(W − round(e vᵀ))."""
    e = np.where(signs == 1, g, -g)
    e = np.where(active == 1, e, 0)
    prod = e[:, None] * vperp[None, :]
    rand = None
    if rounding == "stochastic" and drop > 0:
        rand = bank.draw(w.shape[1]) >> (32 - drop)
    return fm.weight.saturate(w - shift_round(prod, drop, rounding, rand))


class Harness(wiring.Component):
    """The engine wired to a weight memory initialised with ``image`` (the layer engine's memory map)."""

    def __init__(self, engine, image):
        self.engine, self.image = engine, image
        super().__init__({name: member for name, member in engine.signature.members.items()
                          if name not in ("rd_addr", "rd_data", "wr_addr", "wr_data")})

    def elaborate(self, platform):
        m = Module()
        e = self.engine
        m.submodules.engine = e
        m.submodules.mem = self.mem = mem = memory.Memory(shape=e.word_layout, depth=e.weight_depth,
                                                           init=self.image)
        rd, wr = mem.read_port(), mem.write_port()
        m.d.comb += [rd.addr.eq(e.rd_addr), e.rd_data.eq(rd.data), wr.en.eq(e.wr_en), wr.addr.eq(e.wr_addr),
                     wr.data.eq(e.wr_data)]
        for name, member in self.signature.members.items():
            port, inner = getattr(self, name), getattr(e, name)
            if not member.is_port:
                wiring.connect(m, wiring.flipped(port), inner)
            elif member.flow == wiring.In:
                m.d.comb += inner.eq(port)
            else:
                m.d.comb += port.eq(inner)
        return m


def pack(engine, w):
    padded = np.zeros((engine.n_out, engine.chunks * engine.lanes), dtype=np.int64)
    padded[:, :engine.n_in + 1] = w
    return [padded[i, c * engine.lanes:(c + 1) * engine.lanes].tolist()
            for i in range(engine.n_out) for c in range(engine.chunks)]


CASES = [  # n_in, n_out, lanes, rounding, g_frac, vperp_frac, order, idle
    (5, 3, 1, "stochastic", 22, 10, "v_first", 0.0),
    (6, 4, 3, "stochastic", 22, 10, "g_first", 0.3),
    (7, 2, 8, "half-up", 20, 10, "v_first", 0.5),
    (4, 5, 2, "trunc", 18, 8, "g_first", 0.2),
    (3, 3, 4, "stochastic", 8, 4, "v_first", 0.0),     # d = 0: exact, no draws
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_updates_equal_the_model(case):
    n_in, n_out, lanes, rounding, g_frac, vf, order, idle = CASES[case]
    rng = np.random.default_rng(case)
    cfg = preset("up5k").replace(network={"arch": (n_in, n_out, 2)}, train={"seed": 50 + case},
                                 fixed={"update_rounding": rounding, "g_frac": g_frac, "vperp_frac": vf,
                                        "g_bits": g_frac + 2, "vperp_bits": vf + 6})
    fm = formats(cfg)
    engine = UpdateEngine(n_in=n_in, n_out=n_out, lanes=lanes, formats=fm, rounding=rounding)
    w = rng.integers(fm.weight.min, fm.weight.max + 1, size=(n_out, n_in + 1))
    w[0, :2] = [fm.weight.max, fm.weight.min]                  # saturation both ways
    dut = Harness(engine, pack(engine, w))
    bank = prng.XorShift32Bank(cfg.train.seed, prng.ROUNDING, 0 * prng.LANE_STRIDE + np.arange(n_out))
    updates = []
    for n in range(4):
        g = int(rng.choice([fm.g.max, fm.g.min, int(rng.integers(fm.g.min, fm.g.max + 1)), 0]))
        v = rng.integers(fm.vperp.min, fm.vperp.max + 1, size=n_in + 1)
        if n == 1:
            v[:] = fm.vperp.max
        signs = rng.integers(0, 2, size=n_out)
        active = rng.integers(0, 2, size=n_out) if n % 2 else np.ones(n_out, dtype=np.int64)
        updates.append((g, v, signs, active))
    expected = []
    for g, v, signs, active in updates:
        w = model_update(fm, w, g, v, signs, active, rounding, engine.drop, bank)
        expected.append(w.copy())
    got, latencies = [], []
    pyrng = random.Random(case)

    async def bench(ctx):
        if engine.draws:
            for i in range(n_out):
                ctx.set(dut.seed_en, 1)
                ctx.set(dut.seed_index, i)
                ctx.set(dut.seed, prng.seed_state(cfg.train.seed, prng.ROUNDING, i))
                await ctx.tick()
            ctx.set(dut.seed_en, 0)
        for g, v, signs, active in updates:
            ctx.set(dut.signs, int("".join(str(b) for b in signs[::-1]), 2))
            ctx.set(dut.active, int("".join(str(b) for b in active[::-1]), 2))

            async def send_g():
                while pyrng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.g.valid, 1)
                ctx.set(dut.g.payload.g, g)
                await ctx.tick().until(dut.g.ready)
                ctx.set(dut.g.valid, 0)

            async def send_v():
                for value in v:
                    while pyrng.random() < idle:
                        ctx.set(dut.vperp.valid, 0)
                        await ctx.tick()
                    ctx.set(dut.vperp.valid, 1)
                    ctx.set(dut.vperp.payload.v, int(value))
                    await ctx.tick().until(dut.vperp.ready)
                ctx.set(dut.vperp.valid, 0)

            if order == "v_first":
                await send_v()
                await send_g()
            else:
                await send_g()
                await send_v()
            cycles = 0
            last_write = None
            while True:
                _, _, wr, busy, idle_now = await ctx.tick().sample(dut.wr_en, dut.busy, dut.idle)
                cycles += 1
                if wr:
                    last_write = cycles
                if idle_now and not busy and last_write is not None:
                    break
            latencies.append(last_write)
            got.append([[int(x) for x in ctx.get(dut.mem.data[a])] for a in range(engine.weight_depth)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for n, (image, want) in enumerate(zip(got, expected)):
        flat = np.array(image).reshape(n_out, -1)[:, :n_in + 1]
        assert flat.tolist() == want.tolist(), f"update {n}: {flat.tolist()} {want.tolist()}"
    # the last value (v or g) arrives in the cycle before the count starts; its last write is latency later
    assert latencies == [engine.latency] * len(updates)


def test_the_engines_arithmetic_identities():
    """The integer identities the engine's datapath rests on (hdl/update.py, stages 1–2), over the UP5K
    default's ranges and their edges: W − ⌊(p + r)/2^d⌋ = ⌊(W·2^d + (2^d − 1 − r) − p)/2^d⌋ with the
    complement's bits below W's, and −x = ~(x − 1)."""
    rng = np.random.default_rng(7)
    d = 20
    w = np.concatenate([rng.integers(-1 << 15, 1 << 15, 100_000), [-(1 << 15), (1 << 15) - 1, 0, -1]])
    p = np.concatenate([rng.integers(-(1 << 39), 1 << 39, 100_000), [-(1 << 39), (1 << 39) - 1, 1 << 38, 0]])
    r = np.concatenate([rng.integers(0, 1 << d, 100_000), [0, (1 << d) - 1, 1 << (d - 1), 0]])
    cat = (w << d) | ((1 << d) - 1 - r)                 # Cat(~r, W): W's bits above the complement's
    assert np.array_equal(w - ((p + r) >> d), (cat - p) >> d)
    x = np.concatenate([rng.integers(-1 << 23, 1 << 23, 1000), [-(1 << 23), (1 << 23) - 1, 0]])
    assert np.array_equal(-x, ~(x - 1))


def test_np_source_appends_the_bias():
    cfg = preset("up5k").replace(spiking={"steps": 8})
    fm = formats(cfg)
    dut = NpSource(formats=fm)
    counts = [0, 3, 8, 1]
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for k, c in enumerate(counts):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"count": c, "last": int(k == len(counts) - 1)})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(4)

    async def monitor(ctx):
        async for _, _, valid, ready, v in ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload.v):
            if valid and ready:
                got.append(int(v))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(monitor)
    sim.run_until(1e-6 * 20)
    shift = fm.vperp.frac - fm.log2_steps
    assert got == [c << shift for c in counts] + [8 << shift]


def test_properties_and_errors():
    fm = formats(preset("up5k"))
    e = UpdateEngine(n_in=64, n_out=32, lanes=1, formats=fm, rounding="stochastic")
    assert (e.chunks, e.weight_depth, e.drop, e.draws, e.stages) == (65, 2080, 20, True, 4)
    assert (e.sweep_cycles, e.latency) == (2080, 2084)
    assert "seed" in e.signature.members
    assert "seed" not in UpdateEngine(n_in=4, n_out=2, lanes=5, formats=fm, rounding="half-up").signature.members
    with pytest.raises(ValueError, match=r"rounding = 'nearest': expected one of half-up, trunc, stochastic"):
        UpdateEngine(n_in=4, n_out=2, lanes=1, formats=fm, rounding="nearest")
    with pytest.raises(ValueError, match=r"lanes = 6: must be an integer in \[1, 5\]"):
        UpdateEngine(n_in=4, n_out=2, lanes=6, formats=fm, rounding="trunc")
    with pytest.raises(TypeError, match=r"formats = None"):
        UpdateEngine(n_in=4, n_out=2, lanes=1, formats=None, rounding="trunc")
    with pytest.raises(TypeError, match=r"formats = 3"):
        NpSource(formats=3)
    with pytest.raises(ValueError, match=r"errors = 1: must be True or False"):
        UpdateEngine(n_in=4, n_out=2, lanes=1, formats=fm, rounding="trunc", errors=1)
    with pytest.raises(ValueError, match=r"held_g = 0: must be True or False"):
        UpdateEngine(n_in=4, n_out=2, lanes=1, formats=fm, rounding="trunc", held_g=0)
    with pytest.raises(ValueError, match=r"held_g = True: the engine takes per-row errors"):
        UpdateEngine(n_in=4, n_out=2, lanes=1, formats=fm, rounding="trunc", errors=True, held_g=True)
    per_row = UpdateEngine(n_in=4, n_out=2, lanes=1, formats=fm, rounding="trunc", errors=True)
    assert "e" in per_row.signature.members and "g" not in per_row.signature.members
    assert "signs" not in per_row.signature.members and per_row.errors
    with pytest.raises(TypeError, match=r"formats = 3"):
        PairSource(formats=3)
