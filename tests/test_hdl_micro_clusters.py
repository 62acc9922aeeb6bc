# amaranth: UnusedElaboratable=no
"""The microcoded cluster block (hdl/micro_clusters.py: the LOCO program on the sequencer gateware behind
``ClusterBlock``'s ports) in the Amaranth simulator against ``FixedClusters``: samples of two banks of different
widths in a random order with random idle cycles on ``i`` and back-pressure on ``o``; per sample k*, v⊥ and
``last`` on ``o`` and, read through ``peek`` between samples, the bank's count, every r_k, every prototype word
and H, integer for integer; a host load (prototypes, then the count) followed by training."""

import copy
import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.boards.spram import spram_memory
from loco_fpga.golden_model.fixed import FixedClusters, FixedRule
from loco_fpga.hdl.clusters import PeekKind
from loco_fpga.hdl.micro_clusters import MicroClusterBlock
from loco_fpga.sim.benches.clusters import make_samples

from test_hdl_clusters import case_config
from test_loco_program import model_step


async def transfer(ctx, port, payload) -> int:
    """Offer ``payload`` on the stream ``port`` until it is taken; returns the ticks it took (valid stays high)."""
    ctx.set(port.valid, 1)
    ctx.set(port.payload, payload)
    ticks = 0
    while True:
        ready = ctx.get(port.ready)
        await ctx.tick()
        ticks += 1
        if ready:
            return ticks


@pytest.mark.parametrize("data", ["bram", "spram"])
def test_micro_block_equals_fixed_clusters(data):
    """``spram``: the data memory is the UP5K's SPRAM (its behavioural model: every word garbage after the
    reset, garbage read data after a write cycle); the block's boot run writes it first — ``idle`` rises
    ``boot_cycles`` after the reset."""
    cfg, fm = case_config(3)                         # T = 4, K = 2, vperp s10.6
    dims = [4, 3]
    K = cfg.rule.clusters
    hook = spram_memory(reserve=2) if data == "spram" else None
    dut = MicroClusterBlock.from_config(cfg, dims, memory=hook)
    assert (dut.boot_cycles > 0) == (data == "spram")
    boot = []
    rng = random.Random(0)
    samples = [make_samples(rng, d, cfg.spiking.steps, 6) for d in dims]
    order = [0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0]
    gold = [FixedClusters(d, cfg, fm) for d in dims]
    rng_np = np.random.default_rng(1)
    load_protos = rng_np.integers(fm.proto.min, fm.proto.max + 1, size=(K, dims[1]))
    outputs, snapshots = [], []

    async def peek(ctx, what, bank, index=0, col=0):
        ctx.set(dut.peek, {"what": what, "index": index, "col": col, "bank": bank})
        await ctx.tick()
        return ctx.get(dut.peek_data)

    async def snapshot(ctx, b):
        count = await peek(ctx, PeekKind.COUNT, b)
        return {"count": count,
                "recips": [await peek(ctx, PeekKind.RECIP, b, k) for k in range(K)],
                "protos": [[await peek(ctx, PeekKind.PROTO, b, k, c) for c in range(dims[b])] for k in range(K)],
                "h": [[await peek(ctx, PeekKind.H, b, r, c) for c in range(count)] for r in range(count)]}

    async def driver(ctx):
        cycles = 0
        while not ctx.get(dut.idle):
            await ctx.tick()
            cycles += 1
        boot.append(cycles)
        for n, b in enumerate(order):
            if n == 6:                                # a host load of bank 1: prototypes, then the count
                for k in range(K):
                    for c in range(dims[1]):
                        ctx.set(dut.load_en, 1)
                        ctx.set(dut.load, {"count": 0, "index": k, "col": c, "value": int(load_protos[k, c]),
                                           "bank": 1})
                        await ctx.tick()
                ctx.set(dut.load, {"count": 1, "index": 0, "col": 0, "value": 1, "bank": 1})
                await ctx.tick()
                ctx.set(dut.load_en, 0)
                await ctx.tick()
                assert not ctx.get(dut.idle)
                while not ctx.get(dut.idle):
                    await ctx.tick()
                snapshots.append(("load", await snapshot(ctx, 1)))
            u, v = samples[b][sum(1 for x in order[:n] if x == b)]
            for jj in range(dims[b]):
                while rng.random() < 0.3:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"u": int(u[jj]), "v": int(v[jj]), "last": int(jj == dims[b] - 1),
                                        "bank": b})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            want = sum(dims[x] for x in order[:n + 1])
            while len(outputs) < want or not ctx.get(dut.idle):
                await ctx.tick()
            snapshots.append((n, await snapshot(ctx, b)))

    async def monitor(ctx):
        total = sum(dims[b] for b in order)
        while len(outputs) < total:
            ctx.set(dut.o.ready, int(rng.random() >= 0.3))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                outputs.append((int(payload.v), int(payload.k_star), int(payload.last), int(payload.bank)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()

    assert boot == [dut.boot_cycles]
    if hook is not None:
        assert hook.used == 2                         # the data memory is in SPRAM (two blocks: 32-bit words)
    # the model, in the same order
    at, snaps = 0, iter(snapshots)
    paths = {"new": 0, "full": 0, "equal": 0}
    for n, b in enumerate(order):
        if n == 6:                                    # the load of bank 1
            cl = gold[1]
            cl.protos, cl.count = load_protos.copy(), 1
            cl.recips[0] = cl._recip_norm(cl.protos[0])
            cl.refresh()
            tag, got = next(snaps)
            assert tag == "load" and got["count"] == 1 and got["protos"] == cl.protos.tolist()
            assert got["recips"][0] == cl.recips[0] and got["h"] == cl.h.tolist(), "after the load"
        cl = gold[b]
        u, v = samples[b][sum(1 for x in order[:n] if x == b)]
        _, k, _, v_perp = model_step(cl, u, v, paths)
        rows = outputs[at:at + dims[b]]
        at += dims[b]
        where = f"sample {n} (bank {b})"
        assert [r[0] for r in rows] == v_perp.tolist(), f"v⊥, {where}"
        assert {r[1] for r in rows} == {k}, f"k*, {where}"
        assert [r[2] for r in rows] == [0] * (dims[b] - 1) + [1], f"last, {where}"
        assert {r[3] for r in rows} == {b}, f"bank, {where}"
        tag, got = next(snaps)
        assert tag == n
        assert got["count"] == cl.count, f"count, {where}"
        assert got["recips"] == cl.recips.tolist(), f"r_k, {where}"
        assert got["protos"] == cl.protos.tolist(), f"prototypes, {where}"
        assert got["h"] == cl.h.tolist(), f"H, {where}"
    assert min(paths.values()) > 0, paths


def test_micro_block_published_cycles():
    """With ``i`` always valid and ``o`` always ready, per sample (the model's count, new and refreshed): the
    cycles from the last ``i`` to the last ``o`` transfer = ``output_cycles``, from the last ``o`` transfer to
    ``idle`` = ``tail_cycles``, from a first ``i`` transfer to the next sample's = ``sample_cycles``; from the
    count's load to ``idle`` = ``load_cycles``."""
    cfg, fm = case_config(2)                         # K = 3, N_ref = 2
    dims = [3]
    dut = MicroClusterBlock.from_config(cfg, dims)
    cl = FixedClusters(dims[0], cfg, fm)
    samples = make_samples(random.Random(2), dims[0], cfg.spiking.steps, 8)
    events, got = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        ctx.set(dut.load, {"count": 1, "index": 0, "col": 0, "value": 0})   # a load of count 0 first
        ctx.set(dut.load_en, 1)
        await ctx.tick()
        ctx.set(dut.load_en, 0)
        n = 1
        while not ctx.get(dut.idle):
            await ctx.tick()
            n += 1
        got.append(("load", n))
        for u, v in samples:
            first = last_in = last_out = None
            for j in range(dims[0]):
                cycle += await transfer(ctx, dut.i, {"u": int(u[j]), "v": int(v[j]), "last": int(j == dims[0] - 1)})
                first = cycle if first is None else first
                last_in = cycle
            ctx.set(dut.i.valid, 0)
            while True:
                valid, payload = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
                await ctx.tick()
                cycle += 1
                if valid and payload.last:
                    last_out = cycle
                    break
            while not ctx.get(dut.idle):
                await ctx.tick()
                cycle += 1
            got.append((first, last_in, last_out, cycle))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[0] == ("load", dut.load_cycles(0))
    cl.count = 0
    starts = [g[0] for g in got[1:]]
    for n, ((first, last_in, last_out, idle_at), (u, v)) in enumerate(zip(got[1:], samples)):
        _, _, new, _ = model_step(cl, u, v)
        refreshed = cl._since_refresh == 0
        events.append((cl.count, new, refreshed))
        assert last_in - first == dims[0] - 1
        assert last_out - last_in == dut.output_cycles(cl.count, new)
        assert idle_at - last_out == dut.tail_cycles(cl.count, refreshed)
        if n + 1 < len(starts):
            assert starts[n + 1] - first == dut.sample_cycles(cl.count, new, refreshed)
    assert {e[1] for e in events} == {True, False} and {e[2] for e in events} == {True, False}


def test_micro_block_parameter_errors_quote_the_value():
    cfg, fm = case_config(0)
    good = dict(formats=fm, dims=[5], clusters=4, refresh=1, ridge=2, norm_guard=8, recip_extra=16)
    for name, bad, message in (("dims", [1], r"dims = \[1\]"), ("dims", [], r"dims = \[\]"),
                               ("clusters", 0, r"clusters = 0"), ("refresh", 0, r"refresh = 0"),
                               ("ridge", -1, r"ridge = -1"), ("digit", 7, r"digit = 7"),
                               ("formats", "s16.14", r"formats = 's16.14'")):
        with pytest.raises((ValueError, TypeError), match=message):
            MicroClusterBlock(**(good | {name: bad}))
    odd = copy.copy(fm)
    odd.uhat = dataclasses.replace(fm.uhat, bits=fm.uhat.bits + 1)
    with pytest.raises(ValueError, match="formats.uhat = "):
        MicroClusterBlock(**(good | {"formats": odd}))
    block = MicroClusterBlock(**good)
    assert block.dim == 5 and block.units == 1 and block.banks == 1 and block.peek_latency == 1
    assert MicroClusterBlock(**(good | {"dims": [5, 3]})).dim is None       # banks of different widths


@pytest.mark.parametrize("case", [0, 2])
def test_micro_block_loss_equals_the_model(case):
    """``loss_outputs``: the block's ``loss`` run (the outputs of both passes in, dl, g and the prediction out on
    ``loss_o``)
    against ``FixedRule.loss_unit``, between samples of its cluster work (k*, v⊥ still the model's), with random
    idle cycles on ``loss_i``, back-pressure on ``loss_o`` and outputs at and beyond the saturation bounds; with
    ``loss_i`` always valid, the cycles from its last transfer's cycle to the first with ``loss_o`` valid =
    ``loss_cycles``."""
    cfg, fm = case_config(case)
    dims, n_out = [4], 5
    dut = MicroClusterBlock.from_config(cfg, dims, loss_outputs=n_out)
    rule = FixedRule.__new__(FixedRule)
    rule.fmts, rule.config = fm, cfg
    cl = FixedClusters(dims[0], cfg, fm)
    rng = random.Random(case)
    samples = make_samples(rng, dims[0], cfg.spiking.steps, 6)
    lo, hi = fm.out.min, fm.out.max
    losses = []
    for n in range(12):
        kind = n % 3
        y = [rng.choice([lo, hi, 0]) if kind == 2 else rng.randint(lo, hi) for _ in range(n_out)]
        yn = [rng.choice([lo, hi]) if kind == 2 else
              max(lo, min(hi, y[k] + rng.randint(-(1 << fm.weight.frac), 1 << fm.weight.frac))) if kind
              else rng.randint(lo, hi) for k in range(n_out)]
        label, lr = rng.randrange(n_out), rng.choice([0, fm.lr.max, rng.randint(0, fm.lr.max)])
        _, dl, g = rule.loss_unit(np.array(y, dtype=np.int64), np.array(yn, dtype=np.int64), label, lr)
        losses.append((y, yn, label, lr, int(dl), int(g), int(np.argmax(y)), n >= 6))   # the last 6: no idle, timed
    got = []

    async def bench(ctx):
        cycle = 0
        for n, (y, yn, label, lr, _, _, _, timed) in enumerate(losses):
            if n < len(samples):                     # a sample's cluster work first
                u, v = samples[n]
                for j in range(dims[0]):
                    ctx.set(dut.i.valid, 1)
                    ctx.set(dut.i.payload, {"u": int(u[j]), "v": int(v[j]), "last": int(j == dims[0] - 1)})
                    await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
                ctx.set(dut.o.ready, 1)
                vp = []
                while True:
                    valid, payload = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
                    await ctx.tick()
                    if valid:
                        vp.append((payload.k_star, payload.v))
                        if payload.last:
                            break
                await ctx.tick().until(dut.idle)
                got.append(("sample", vp))
            ctx.set(dut.loss_label, label)
            ctx.set(dut.loss_lr, lr)
            for k in range(n_out):
                while not timed and rng.random() < 0.3:
                    ctx.set(dut.loss_i.valid, 0)
                    await ctx.tick()
                cycle += await transfer(ctx, dut.loss_i, {"y": y[k], "y_noisy": yn[k]})
            last_in = cycle - 1                      # the cycle of the last transfer
            ctx.set(dut.loss_i.valid, 0)
            first_valid = None
            while True:
                ctx.set(dut.loss_o.ready, timed or rng.random() < 0.5)
                valid, ready = ctx.get(dut.loss_o.valid), ctx.get(dut.loss_o.ready)
                payload = ctx.get(dut.loss_o.payload)
                if valid and first_valid is None:
                    first_valid = cycle
                await ctx.tick()
                cycle += 1
                if valid and ready:
                    break
            assert not ctx.get(dut.loss_o.valid)
            got.append(("loss", payload.dl, payload.g, payload.pred, first_valid - last_in))
            ctx.set(dut.loss_o.ready, 0)
            await ctx.tick().until(dut.idle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expect = []
    for n, (y, yn, label, lr, dl, g, pred, timed) in enumerate(losses):
        if n < len(samples):
            u, v = samples[n]
            _, k, _, v_perp = model_step(cl, u, v)
            expect.append(("sample", [(k, int(x)) for x in v_perp]))
        expect.append(("loss", dl, g, pred))
    assert [e[:4] if e[0] == "loss" else e for e in got] == expect
    assert {e[4] for e in got[len(samples) * 2:] if e[0] == "loss"} == {dut.loss_cycles()}
