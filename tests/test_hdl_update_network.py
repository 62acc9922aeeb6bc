# amaranth: UnusedElaboratable=no
"""NP training in hardware (``Network(update="np")``) in the Amaranth simulator: after every training step
(forward passes + loss + update) every weight read back through ``rd_*`` equals ``FixedRule.step_q``'s, and
the forward results equal the model's — with one update engine per layer and with one shared by all layers
(``shared_update``); the cycle schedule with the update; parameter errors."""

import random

import numpy as np
import pytest
from amaranth import Cat
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.hdl.network import Network
from loco_fpga.hdl.update import SharedUpdateEngine
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.network import compare, decode_results, load_in_amaranth_sim, random_stimulus
from loco_fpga.sim.benches.update import compare_weights, train_model


def np_config(*, arch, steps, encoder, neuron, seed, rounding="stochastic", mask=False):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"name": "np", "sigma": 2.0 ** -3, "mask": mask},
                                  fixed={"update_rounding": rounding})


def run_training(net, config, weights, samples, *, idle, stall, rng):
    """Load, then one step at a time: the sample's rates, its outputs (random back-pressure), wait for ``busy``
    to fall, read every weight back. Returns per step (counts_raw, o_raw, weights read back)."""
    results = []
    hidden = range(net.n_layers - 1)
    watched = [net.o.valid, net.o.ready, net.o.payload, net.busy]
    for l in hidden:
        watched += [net.counts[l].valid, net.counts[l].ready, net.counts[l].payload]

    async def bench(ctx):
        await load_in_amaranth_sim(ctx, net, config, weights)
        for x, label, lr in samples:
            counts_raw, o_raw = [[] for _ in hidden], []
            pending = [int(v) for v in x]
            while True:
                sending = bool(pending) and rng.random() >= idle
                ctx.set(net.x.valid, int(sending))
                if pending:
                    ctx.set(net.x.payload, {"x": pending[0], "label": label, "lr": lr})
                ctx.set(net.o.ready, int(rng.random() >= stall))
                for l in hidden:
                    ctx.set(net.counts[l].ready, int(rng.random() >= stall))
                _, _, x_valid, x_ready, *vals = await ctx.tick().sample(net.x.valid, net.x.ready, *watched)
                if x_valid and x_ready:
                    pending.pop(0)
                if vals[0] and vals[1]:
                    o_raw.append(vals[2].as_bits())
                for l in hidden:
                    v, r, payload = vals[4 + 3 * l:7 + 3 * l]
                    if v and r:
                        counts_raw[l].append(payload.as_bits())
                if not pending and not vals[3] and len(o_raw) == net.arch[-1]:
                    break
            ctx.set(net.x.valid, 0)
            image = []
            for l, e in enumerate(net.engines):
                rows = np.zeros((e.n_out, e.chunks * e.lanes), dtype=np.int64)
                for addr in range(e.weight_depth):
                    ctx.set(net.rd_layer, l)
                    ctx.set(net.rd_addr, addr)
                    await ctx.tick()
                    word = ctx.get(net.rd_data)
                    i, c = divmod(addr, e.chunks)
                    rows[i, c * e.lanes:(c + 1) * e.lanes] = [int(word[k]) for k in range(e.lanes)]
                image.append(rows[:, :e.n_in + 1])
            results.append((counts_raw, o_raw, image))

    sim = Simulator(net)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


CASES = [  # arch, lanes, T, encoder, neuron, rounding, mask, idle/stall
    ((5, 6, 3), 2, 4, "bernoulli", "if", "stochastic", False, 0.3),
    ((3, 2), 4, 8, "deterministic", "if", "half-up", False, 0.0),
    ((4, 5, 4, 3), 1, 4, "deterministic", "lif", "stochastic", True, 0.2),
    # layers of different lanes (3 and 4) and chunk counts: the shared engine's padding lanes and layer switch
    ((2, 6, 3), 4, 4, "deterministic", "if", "stochastic", True, 0.2),
]
#: (case, shared_update, sparse_input): every case with one engine per layer; the multi-layer ones also with a
#: shared engine; two with a sparse layer 0 (the iCEBreaker's build has both)
TRAINING = ([(c, False, False) for c in range(len(CASES))] + [(0, True, False), (2, True, False), (3, True, False)]
            + [(0, True, True), (2, False, True)])


@pytest.mark.parametrize("case,shared,sparse", TRAINING)
def test_np_training_equals_the_model(case, shared, sparse):
    arch, lanes, steps, encoder, neuron, rounding, mask, noise = CASES[case]
    config = np_config(arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=300 + case,
                       rounding=rounding, mask=mask)
    net = Network.from_config(config, lanes=lanes, update="np", shared_update=shared, sparse_input=sparse)
    weights, samples = random_stimulus(config, 5, np.random.default_rng(11 + case))
    want = train_model(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=noise, stall=noise, rng=random.Random(case))
    for n, ((counts_raw, o_raw, image), (fwd, w_after)) in enumerate(zip(got, want)):
        res = decode_results(net, counts_raw, o_raw, 1)
        _, errors = compare(res, [fwd], net.n_layers)
        assert not errors, f"step {n}: {errors[0]}"
        _, errors = compare_weights(image, w_after, n)
        assert not errors, errors[0]


@pytest.mark.parametrize("arch,lanes,steps,encoder,mask,shared", [
    ((5, 6, 3), 2, 4, "bernoulli", False, False),
    ((3, 2), 4, 8, "deterministic", False, False),
    ((4, 40, 3), 5, 2, "deterministic", True, False),
    ((4, 40, 3), 5, 2, "deterministic", True, True),
    ((3, 7, 5, 4), 2, 2, "bernoulli", False, True),
])
def test_schedule_with_the_update(arch, lanes, steps, encoder, mask, shared):
    """Back-to-back training samples, outputs always ready: every first/last ``x`` transfer and every ``last``
    transfer on ``o`` happens in the cycle ``schedule()`` gives — so the update's published latency (which
    delays the next sample's start) is exact too; with a shared engine the update, Σ_l n_l·C_l + 4 cycles after
    the last of g and every v⊥, is what sets the period."""
    from test_hdl_network import run_network

    config = np_config(arch=arch, steps=steps, encoder=encoder, neuron="if", seed=7, mask=mask)
    net = Network.from_config(config, lanes=lanes, update="np", shared_update=shared)
    n = 5
    weights, samples = random_stimulus(config, n, np.random.default_rng(2))
    writes = []
    _, _, x_cycles, o_last = run_network(net, config, weights, samples, idle=0.0, stall=0.0, rng=random.Random(0),
                                         strobe=Cat(*(u.wr_en for u in net.updaters)).any(), strobe_cycles=writes)
    sched = net.schedule(n)
    base, n0 = x_cycles[0], arch[0]
    assert [c - base for c in x_cycles[::n0]] == list(sched.first_x)
    assert [c - base for c in x_cycles[n0 - 1::n0]] == list(sched.last_x)
    assert [c - base for c in o_last] == list(sched.loss_done)
    # every weight write of sample k comes after its g (o's last transfer) and before sample k + 1's (the run
    # ends with the last sample's outputs, before its update)
    last_write = [max(c for c in writes if o_last[k] < c < o_last[k + 1]) for k in range(n - 1)]
    assert [c - base for c in last_write] == list(sched.update_done[:n - 1])
    assert np.diff(o_last).tolist()[-1] == net.cycles_per_sample


def test_update_parameters():
    cfg = np_config(arch=(4, 3, 2), steps=4, encoder="deterministic", neuron="if", seed=0)
    fm = formats(cfg)
    with pytest.raises(ValueError, match=r"update = 'fa': expected one of None, 'np'"):
        Network(arch=(4, 2), lanes=1, formats=fm, update="fa")
    with pytest.raises(ValueError, match=r"mask = 1: must be True or False"):
        Network(arch=(4, 2), lanes=1, formats=fm, update="np", mask=1)
    net = Network.from_config(cfg, lanes=2, update="np")
    assert [u.latency for u in net.updaters] == [3 * 3 + 4, 2 * 2 + 4]
    assert {"busy", "rd_layer", "rd_addr", "rd_data"} <= set(net.signature.members)
    assert net.seed_map[:2] == ((0, 0), (0, 1)) and len(net.seed_map) == 2 + 3 + 2     # noise, rounding lanes
    plain = Network.from_config(cfg, lanes=2)
    assert "busy" not in plain.signature.members and plain.updaters == []


def test_shared_update_parameters():
    """``shared_update``: NP or LOCO without the delta readout only (the errors quote the value); one
    :class:`SharedUpdateEngine` over every layer, Σ_l n_l·C_l + 4 cycles from g, the same seed lanes as the
    per-layer engines (the host seeds by ``seed_map`` either way), and the ``up5k`` preset's cycles per sample."""
    cfg = np_config(arch=(4, 3, 2), steps=4, encoder="deterministic", neuron="if", seed=0)
    fm = formats(cfg)
    with pytest.raises(ValueError, match=r"shared_update = 1: must be True or False"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="np", shared_update=1)
    with pytest.raises(ValueError, match=r"shared_update = True: .* not 'dfa'"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="dfa", shared_update=True)
    with pytest.raises(ValueError, match=r"shared_update = True: .* not loco with output_delta"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="loco", output_delta=True, shared_update=True)
    with pytest.raises(ValueError, match=r"shared_update = True: .* not None"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, shared_update=True)
    with pytest.raises(ValueError, match=r"shared_update = True: .* not np with output_delta"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="np", output_delta=True, shared_update=True)
    with pytest.raises(ValueError, match=r"shapes = \(\): expected a non-empty sequence"):
        SharedUpdateEngine(shapes=(), formats=fm, rounding="trunc")
    with pytest.raises(ValueError, match=r"lanes = 6: must be an integer in \[1, 5\]"):
        SharedUpdateEngine(shapes=[(8, 2, 3), (4, 2, 6)], formats=fm, rounding="trunc")
    with pytest.raises(ValueError, match=r"rounding = 'nearest': expected one of"):
        SharedUpdateEngine(shapes=[(4, 2, 1)], formats=fm, rounding="nearest")
    with pytest.raises(ValueError, match=r"one_store = 1: must be True or False"):
        SharedUpdateEngine(shapes=[(4, 2, 1)], formats=fm, rounding="trunc", one_store=1)
    per_layer = Network.from_config(cfg, lanes=2, update="np")
    shared = Network.from_config(cfg, lanes=2, update="np", shared_update=True)
    (u,) = shared.updaters
    assert isinstance(u, SharedUpdateEngine) and shared.shared_update and not per_layer.shared_update
    assert not u.one_store              # NP's v⊥ streams may overlap: one store per layer
    assert (u.shapes, u.layer_chunks, u.n_out, u.lanes, u.weight_depth) == (((4, 3, 2), (3, 2, 2)), (3, 2), 5, 2, 9)
    assert (u.sweep_cycles, u.latency) == (3 * 3 + 2 * 2, 3 * 3 + 2 * 2 + 4)
    assert shared.seed_map == per_layer.seed_map and len(shared.seed_map) == 2 + 3 + 2
    up5k = preset("up5k").replace(rule={"name": "np"})
    cycles = [Network.from_config(up5k, lanes=1, update="np", shared_update=s).cycles_per_sample for s in (False, True)]
    assert cycles == [35806, 35806 + 10 * 33]       # + layer 1's sweep: it no longer runs beside layer 0's


def _sweep(engine, weights, vperps, g, signs, active):
    """Run one update of a lone SharedUpdateEngine: both layers' v⊥ streams offered from the first cycle (they
    overlap), g with them; the weight memories answer ``rd_*`` one cycle later and take ``wr_*``. Returns the
    weights after the sweep and the cycles at which each v⊥ value was taken."""
    weights = [w.copy() for w in weights]
    taken = []

    async def bench(ctx):
        ctx.set(engine.signs, signs)
        ctx.set(engine.active, active)
        pos = [0] * len(vperps)
        ctx.set(engine.g.valid, 1)
        ctx.set(engine.g.payload.g, g)
        started, cycle = False, 0
        while not started or ctx.get(engine.busy):
            for l, v in enumerate(vperps):
                ctx.set(engine.vperp[l].valid, pos[l] < len(v))
                ctx.set(engine.vperp[l].payload.v, v[min(pos[l], len(v) - 1)])
            layer, addr = ctx.get(engine.rd_layer), ctx.get(engine.rd_addr)
            wr = (ctx.get(engine.wr_en), ctx.get(engine.wr_layer), ctx.get(engine.wr_addr),
                  [ctx.get(engine.wr_data[k]) for k in range(engine.lanes)])
            moved = [ctx.get(engine.vperp[l].valid) and ctx.get(engine.vperp[l].ready) for l in range(len(vperps))]
            started |= bool(ctx.get(engine.busy))
            await ctx.tick()
            cycle += 1
            for l, go in enumerate(moved):
                if go:
                    taken.append((l, pos[l], cycle))
                    pos[l] += 1
            if wr[0]:
                weights[wr[1]][wr[2]] = wr[3]
            word = weights[layer][addr] if addr < len(weights[layer]) else [0] * engine.lanes
            for k in range(engine.lanes):
                ctx.set(engine.rd_data[k], word[k] if k < len(word) else 0)
            assert cycle < 2000, "the sweep did not end"

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return weights, taken


def test_one_store_takes_overlapping_streams_in_turn():
    """``SharedUpdateEngine(one_store=True)`` with both layers' v⊥ streams offered at once: layer 1 waits until
    layer 0's last value is taken (one write port), and the sweep writes exactly what the one-store-per-layer
    engine writes."""
    cfg = np_config(arch=(4, 3, 2), steps=4, encoder="deterministic", neuron="if", seed=0, rounding="half-up")
    fm = formats(cfg)
    rng = np.random.default_rng(5)
    shapes = [(4, 3, 2), (3, 2, 2)]
    lanes = 2
    weights = [[[int(x) for x in rng.integers(-3000, 3000, lanes)] for _ in range(n_out * -(-(n_in + 1) // lanes))]
               for n_in, n_out, _ in shapes]
    vperps = [[int(x) for x in rng.integers(-2000, 2000, n_in + 1)] for n_in, _, _ in shapes]
    g, signs, active = 1234, int(rng.integers(0, 32)), 0b11111
    got = {}
    for one in (False, True):
        got[one] = _sweep(SharedUpdateEngine(shapes=shapes, formats=fm, rounding="half-up", one_store=one),
                          weights, vperps, g, signs, active)
    assert got[True][0] == got[False][0] != weights          # the same writes, and the sweep changed something
    order = [(l, i) for l, i, _ in sorted(got[True][1], key=lambda t: t[2])]
    assert order == [(0, i) for i in range(5)] + [(1, i) for i in range(4)]   # layer 1 after layer 0, in turn
    assert max(c for l, _, c in got[False][1] if l == 1) < 5                  # per-layer stores: side by side
