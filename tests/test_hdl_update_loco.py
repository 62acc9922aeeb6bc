# amaranth: UnusedElaboratable=no
"""LOCO training in hardware (``Network(update="loco")``) in the Amaranth simulator: after every training step
(forward passes + loss + cluster blocks + update) the forward results, every layer's k* and v⊥ (the ``vperp_tap``
ports), every weight (``rd_*``) and every layer's count, prototypes, r_k and H (``pr_*``) equal
``FixedRule.step_q``'s; a prototype load through ``pw_*``; the cycle schedule with the cluster blocks; errors."""

import copy
import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model import prng
from loco_fpga.hdl.clusters import PeekKind
from loco_fpga.hdl.micro_clusters import MicroClusterBlock
from loco_fpga.hdl.network import Network
from loco_fpga.hdl.readout import OutputWeights
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.network import load_in_amaranth_sim, random_stimulus
from loco_fpga.sim.benches.loco import check_step, random_protos
from loco_fpga.sim.benches.update import train_trace


def loco_config(*, arch, steps, encoder="deterministic", neuron="if", seed=0, rounding="stochastic", mask=False,
                clusters=3, refresh=1, ridge=2.0 ** -6):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"name": "loco", "sigma": 2.0 ** -3, "mask": mask, "clusters": clusters,
                                        "refresh": refresh, "ridge": ridge},
                                  fixed={"update_rounding": rounding})


def run_training(net, config, weights, samples, *, idle, stall, rng, protos=None):
    """Load weights, seeds (and prototypes), then one step at a time: rates in, outputs out (random
    back-pressure), v⊥ taps collected, wait for ``busy`` to fall, read back every weight and the whole
    prototype space. Returns per step {counts_raw, o_raw, taps, weights, clusters, start}."""
    results = []
    hidden = range(net.n_layers - 1)
    watched = [net.o.valid, net.o.ready, net.o.payload, net.busy]
    for l in hidden:
        watched += [net.counts[l].valid, net.counts[l].ready, net.counts[l].payload]
    taps = [t for tap in net.vperp_tap for t in (tap.valid, tap.payload)] if net.update == "loco" else []

    async def bench(ctx):
        await load_in_amaranth_sim(ctx, net, config, weights)
        for lane, (stream, index) in enumerate(net.seed_map):     # DFA lanes: rule.feedback_seed
            if stream == prng.DFA:
                ctx.set(net.seed_en, 1)
                ctx.set(net.seed_lane, lane)
                ctx.set(net.seed, prng.seed_state(config.rule.feedback_seed, stream, index))
                await ctx.tick()
        ctx.set(net.seed_en, 0)
        if protos is not None:
            await load_protos(ctx, net, protos)
        for x, label, lr in samples:
            counts_raw, o_raw, tapped = [[] for _ in hidden], [], [[] for _ in net.cluster_blocks]
            pending = [int(v) for v in x]
            while True:
                sending = bool(pending) and rng.random() >= idle
                ctx.set(net.x.valid, int(sending))
                if pending:
                    ctx.set(net.x.payload, {"x": pending[0], "label": label, "lr": lr})
                ctx.set(net.o.ready, int(rng.random() >= stall))
                for l in hidden:
                    ctx.set(net.counts[l].ready, int(rng.random() >= stall))
                _, _, x_valid, x_ready, *vals = await ctx.tick().sample(net.x.valid, net.x.ready, *watched, *taps)
                if x_valid and x_ready:
                    pending.pop(0)
                if vals[0] and vals[1]:
                    o_raw.append(vals[2].as_bits())
                for l in hidden:
                    v, r, payload = vals[4 + 3 * l:7 + 3 * l]
                    if v and r:
                        counts_raw[l].append(payload.as_bits())
                tap_vals = vals[4 + 3 * len(hidden):]
                for l in range(len(tapped)):
                    valid, tap = tap_vals[2 * l:2 * l + 2]
                    if valid:
                        tapped[l].append((int(tap.v), int(tap.k_star), int(tap.last)))
                if not pending and not vals[3] and len(o_raw) == net.arch[-1]:
                    break
            ctx.set(net.x.valid, 0)
            results.append({"counts_raw": counts_raw, "o_raw": o_raw, "taps": tapped,
                            "weights": await read_weights(ctx, net), "clusters": await read_protos(ctx, net)})

    sim = Simulator(net)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


async def read_weights(ctx, net):
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
    return image


async def read_protos(ctx, net):
    """Every layer's read space through ``pr_*``: {protos (K × N), count, recips (K), h (K × K)}."""
    out = []
    for l, b in enumerate(net.cluster_blocks):
        words = []
        for addr in range(net.proto_read_depth(l)):
            ctx.set(net.pr_layer, l)
            ctx.set(net.pr_at, net.at_layout.const(net.proto_at(l, addr)))
            await ctx.tick()
            words.append(int(ctx.get(net.pr_data)))
        K, dim = b.clusters, net.engines[l].n_in + 1
        count = words[K * dim]
        h = np.array(words[K * dim + 1 + K:], dtype=np.int64).reshape(K, K)
        mask = np.zeros((K, K), dtype=bool)
        mask[:count, :count] = True
        out.append({"protos": np.array(words[:K * dim], dtype=np.int64).reshape(K, dim), "count": count,
                    "recips": np.array(words[K * dim + 1:K * dim + 1 + K], dtype=np.int64),
                    "h": np.where(mask, h, 0)})
    return out


async def load_protos(ctx, net, protos):
    """Every prototype word through ``pw_*``, then the count (which starts the r_k and H recompute), per layer;
    then wait until ``busy`` is low."""
    for l, (c, count) in enumerate(protos):
        K, dim = c.shape
        for k in range(K):
            for j in range(dim):
                ctx.set(net.pw_en, 1)
                ctx.set(net.pw_layer, l)
                ctx.set(net.pw_at, net.at_layout.const(net.proto_at(l, k * dim + j)))
                ctx.set(net.pw_data, int(c[k, j]))
                await ctx.tick()
        ctx.set(net.pw_at, net.at_layout.const(net.proto_at(l, K * dim)))
        ctx.set(net.pw_data, count)
        await ctx.tick()
        ctx.set(net.pw_en, 0)
        await ctx.tick()
        while ctx.get(net.busy):
            await ctx.tick()


CASES = [  # arch, lanes, T, encoder, neuron, rounding, mask, K, N_ref, idle/stall, preload
    ((5, 6, 3), 2, 4, "bernoulli", "if", "stochastic", False, 3, 1, 0.3, False),
    ((3, 2), 4, 8, "deterministic", "if", "half-up", False, 2, 2, 0.0, False),
    ((4, 5, 4, 3), 1, 4, "deterministic", "lif", "stochastic", True, 4, 1, 0.2, True),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_loco_training_equals_the_model(case):
    arch, lanes, steps, encoder, neuron, rounding, mask, K, n_ref, noise, preload = CASES[case]
    config = loco_config(arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=500 + case,
                         rounding=rounding, mask=mask, clusters=K, refresh=n_ref)
    net = Network.from_config(config, lanes=lanes, update="loco")
    weights, samples = random_stimulus(config, 7, np.random.default_rng(21 + case))
    np_rng = np.random.default_rng(40 + case)
    protos = random_protos(config, np_rng, [K - 1, K] + [K] * len(arch)) if preload else None
    want = train_trace(config, weights, samples, protos)
    got = run_training(net, config, weights, samples, idle=noise, stall=noise, rng=random.Random(case),
                       protos=protos)
    for n, (g, w) in enumerate(zip(got, want)):
        _, problem = check_step(net, n, g, w)
        assert problem is None, problem
    assert any(w["clusters"][0]["count"] >= 2 for w in want)       # the projection ran


@pytest.mark.parametrize("share, delta", [(2, False), (3, True)])
def test_shared_cluster_blocks_train_like_the_model(share, delta):
    """``cluster_share``: layers of equal input width share a cluster block (one bank each) — arch 4-4-4-4-3: with
    S = 2 blocks {0, 1}, {2, 3}; with S = 3 {0, 1, 2}, {3} (and the delta readout, whose output layer's v is the
    last hidden layer's clean counts). Every step's k*, v⊥, weights and every layer's prototypes, count, r_k and H
    equal the model's, with random idle input and back-pressure."""
    arch = (4, 4, 4, 4, 3)
    config = loco_config(arch=arch, steps=4, seed=513, mask=True, clusters=3, refresh=2)
    if delta:
        config = config.replace(rule={"output_update": "delta"})
    net = Network.from_config(config, lanes=2, update="loco", cluster_share=share)
    assert net.cluster_groups == {2: ((0, 1), (2, 3)), 3: ((0, 1, 2), (3,))}[share]
    assert [b.banks for b in net.cluster_blocks] == {2: [2, 2, 2, 2], 3: [3, 3, 3, 1]}[share]
    train_and_check(net, config, 7, 63, share)


def train_and_check(net, config, steps, seed, drive_seed):
    """``steps`` training steps on random stimulus (random idle input and back-pressure): every step equals the
    model (``check_step``), and every layer projected (count ≥ 2 at some step)."""
    weights, samples = random_stimulus(config, steps, np.random.default_rng(seed))
    want = train_trace(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=0.2, stall=0.2, rng=random.Random(drive_seed))
    for n, (g, w) in enumerate(zip(got, want)):
        _, problem = check_step(net, n, g, w)
        assert problem is None, problem
    assert all(max(w["clusters"][l]["count"] for w in want) >= 2 for l in range(net.n_layers))   # projections ran


def test_cluster_share_groups_only_equal_widths():
    """A block serves consecutive layers of one input width only: 4-4-6-6-6-3 with S = 2 gives {0, 1}, {2, 3}, {4}
    (layer 1 has 4 inputs, layer 2 has 6); S = L puts all layers of one width in one block."""
    config = loco_config(arch=(4, 4, 6, 6, 6, 3), steps=4)
    assert Network.from_config(config, lanes=1, update="loco", cluster_share=2).cluster_groups == ((0, 1), (2, 3), (4,))
    assert Network.from_config(config, lanes=1, update="loco", cluster_share=5).cluster_groups == ((0, 1), (2, 3, 4))
    with pytest.raises(ValueError, match=r"cluster_share = 6: must be an integer in \[1, 5\]"):
        Network.from_config(config, lanes=1, update="loco", cluster_share=6)
    with pytest.raises(ValueError, match="cluster_share = 2: cluster blocks exist with update 'loco' only"):
        Network.from_config(config.replace(rule={"name": "np"}), lanes=1, update="np", cluster_share=2)


def test_update_parameters_loco():
    cfg = loco_config(arch=(4, 3, 2), steps=4)
    with pytest.raises(ValueError, match=r"rule.name = 'loco': the network was asked for update = 'np'"):
        Network.from_config(cfg, lanes=1, update="np")
    with pytest.raises(ValueError, match=r"clusters = 0: must be an integer in \[1, 64\]"):
        Network(arch=(4, 2), lanes=1, formats=formats(cfg), update="loco", clusters=0)
    net = Network.from_config(cfg, lanes=2, update="loco")
    assert [b.dim for b in net.cluster_blocks] == [5, 4]
    assert net.proto_write_depth(0) == 3 * 5 + 1 and net.proto_read_depth(1) == 3 * 4 + 1 + 3 + 9
    assert {"pw_en", "pw_layer", "pw_at", "pw_data", "pr_layer", "pr_at", "pr_data", "vperp_tap"} \
        <= set(net.signature.members)


def test_proto_at_walks_the_host_map_in_order():
    """``proto_at`` over a layer's whole read space: c_0[0 … N−1], …, c_{K−1}[…], the count, r_0 … r_{K−1}, then H
    row by row — the order the host's linear addresses have (docs/protocol.md)."""
    net = Network.from_config(loco_config(arch=(4, 3, 2), steps=4), lanes=2, update="loco")
    for l, (K, N) in enumerate([(3, 5), (3, 4)]):
        got = [net.proto_at(l, a) for a in range(net.proto_read_depth(l))]
        want = ([{"what": PeekKind.PROTO, "index": k, "col": j} for k in range(K) for j in range(N)]
                + [{"what": PeekKind.COUNT, "index": 0, "col": 0}]
                + [{"what": PeekKind.RECIP, "index": k, "col": 0} for k in range(K)]
                + [{"what": PeekKind.H, "index": i, "col": j} for i in range(K) for j in range(K)])
        assert got == want
    for bad in (-1, net.proto_read_depth(1), 1.0):
        with pytest.raises(ValueError, match="prototype space has 25 words"):
            net.proto_at(1, bad)


def cluster_events(want, initial_counts):
    """``Network.schedule``'s ``clusters`` argument from the model's trace: per step, per layer (count after the
    selection, new cluster, refreshed after the update)."""
    events, before = [], list(initial_counts)
    for step in want:
        ev = []
        for l, cl in enumerate(step["clusters"]):
            ev.append((cl["count"], cl["count"] > before[l], cl["since"] == 0))
            before[l] = cl["count"]
        events.append(tuple(ev))
    return events


@pytest.mark.parametrize("arch,lanes,steps,K,n_ref,preload,share", [((5, 6, 3), 2, 4, 3, 1, False, 1),
                                                                     ((3, 2), 4, 8, 2, 3, False, 1),
                                                                     ((4, 7, 3), 3, 2, 4, 2, True, 1),
                                                                     ((4, 4, 4, 3), 2, 4, 3, 2, False, 3),
                                                                     ((5, 5, 5, 5, 3), 1, 4, 3, 1, True, 2)])
def test_schedule_with_the_cluster_blocks(arch, lanes, steps, K, n_ref, preload, share):
    """Back-to-back LOCO training samples, outputs always ready: every first/last ``x`` transfer and every ``last``
    transfer on ``o`` happens in the cycle ``schedule(clusters=…)`` gives (the cluster blocks' cycles from the
    model's per-step cluster events), so their published output and tail cycles, which delay the update and the
    next sample's start, are exact — also with blocks shared by 2 and 3 layers (``cluster_share``), whose further
    layers wait for the block."""
    config = loco_config(arch=arch, steps=steps, seed=9, clusters=K, refresh=n_ref)
    net = Network.from_config(config, lanes=lanes, update="loco", cluster_share=share)
    n = 7
    weights, samples = random_stimulus(config, n, np.random.default_rng(3))
    protos = random_protos(config, np.random.default_rng(4), [K] * (len(arch) - 1)) if preload else None
    events = check_schedule(net, config, weights, samples, protos, [K if preload else 0] * (len(arch) - 1))
    if preload:
        assert events == list(net.steady_clusters(n))
    assert any(ev[0] == K and not ev[1] and ev[2] for step in events for ev in step)


@pytest.mark.parametrize("arch,K,n_ref,preload,share", [((3, 4, 2), 2, 2, False, 2),
                                                         pytest.param((3, 3, 2), 2, 2, False, 2, marks=pytest.mark.slow),
                                                         pytest.param((3, 2), 2, 1, True, 1, marks=pytest.mark.slow)])
def test_schedule_with_micro_cluster_blocks(arch, K, n_ref, preload, share):
    """As :func:`test_schedule_with_the_cluster_blocks` with ``cluster_impl = "micro"``: every first/last ``x``,
    every ``last`` on ``o`` and every layer's last v⊥ in the cycle ``schedule`` gives from the blocks' published
    cycles (the program's per-path instruction counts) — one block for two layers of different widths (and of one
    width), and one block with preloaded prototypes."""
    config = loco_config(arch=arch, steps=4, seed=19, clusters=K, refresh=n_ref)
    net = Network.from_config(config, lanes=2, update="loco", cluster_share=share, cluster_impl="micro")
    n = 5
    weights, samples = random_stimulus(config, n, np.random.default_rng(5))
    protos = random_protos(config, np.random.default_rng(6), [K] * (len(arch) - 1)) if preload else None
    check_schedule(net, config, weights, samples, protos, [K if preload else 0] * (len(arch) - 1))


def check_schedule(net, config, weights, samples, protos, initial_counts):
    """Back-to-back samples (:func:`run_back_to_back`) against ``net.schedule`` with the model's cluster events:
    every first/last ``x``, every ``last`` on ``o`` and every layer's last v⊥. Returns the events."""
    n, n0 = len(samples), net.arch[0]
    events = cluster_events(train_trace(config, weights, samples, protos), initial_counts)
    x_cycles, o_last, tap_last = run_back_to_back(net, config, weights, samples, protos)
    sched = net.schedule(n, events)
    base = x_cycles[0]
    assert [c - base for c in x_cycles[::n0]] == list(sched.first_x)
    assert [c - base for c in x_cycles[n0 - 1::n0]] == list(sched.last_x)
    assert [c - base for c in o_last] == list(sched.loss_done)
    assert [tuple(c - base for c in t) for t in tap_last] == list(sched.vperp_done)
    return events


def run_back_to_back(net, config, weights, samples, protos):
    """Load (weights, seeds, prototypes), then every sample's rates with ``x`` always valid and ``o``/``counts``
    always ready; returns (cycles of every ``x`` transfer, cycles of every ``last`` transfer on ``o``)."""
    x_cycles, o_last, tap_last = [], [], []
    cycle = 0

    async def drive(ctx):
        await load_in_amaranth_sim(ctx, net, config, weights)
        if protos is not None:
            await load_protos(ctx, net, protos)
        for l in range(net.n_layers - 1):
            ctx.set(net.counts[l].ready, 1)
        ctx.set(net.o.ready, 1)
        for x, label, lr in samples:
            for v in x:
                ctx.set(net.x.valid, 1)
                ctx.set(net.x.payload, {"x": int(v), "label": label, "lr": lr})
                await ctx.tick().until(net.x.ready)
                x_cycles.append(cycle)
        ctx.set(net.x.valid, 0)
        while len(o_last) < len(samples) or (net.cluster_blocks and len(tap_last) < len(samples)):
            await ctx.tick()

    async def clock(ctx):
        nonlocal cycle
        async for _ in ctx.tick():
            cycle += 1

    async def watch(ctx):
        seen = []
        tap_ports = list(net.vperp_tap) if net.cluster_blocks else []
        async for _, _, valid, ready, last, *taps in ctx.tick().sample(net.o.valid, net.o.ready, net.o.payload.last,
                                                                       *(t.valid for t in tap_ports),
                                                                       *(t.payload for t in tap_ports)):
            if valid and ready and last:
                o_last.append(cycle)
            for l in range(len(tap_ports)):
                if taps[l] and taps[len(tap_ports) + l].last:
                    seen.append((l, cycle))
                    if len(seen) == net.n_layers:
                        tap_last.append(tuple(c for _, c in sorted(seen)))
                        seen = []

    sim = Simulator(net)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(clock)
    sim.add_testbench(watch, background=True)
    sim.run()
    return x_cycles, o_last, tap_last


def test_more_clusters_than_inputs():
    """K = 5 clusters on layers with N = 3 and 4 inputs (random draw 35 of tests/test_sim_loco.py): the block's
    index counter, shared by the input passes (N values) and the w = M·cv loop (count values), once had N + 1
    values only, so the loop never ended when count > N — this hung the Icarus bench; 20 steps bit-exact."""
    from loco_fpga.config import Config
    from test_sim_loco import make_case

    case = make_case(35, 20)
    config = Config().replace(**case["config"])
    net = Network.from_config(config, lanes=case["lanes"], update="loco")
    assert config.rule.clusters > min(b.dim for b in net.cluster_blocks) + 1
    weights, samples = random_stimulus(config, 20, np.random.default_rng(case["seed"]))
    want = train_trace(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=0.0, stall=0.0, rng=random.Random(0))
    for n, (g, w) in enumerate(zip(got, want)):
        _, problem = check_step(net, n, g, w)
        assert problem is None, problem
    assert max(w["clusters"][1]["count"] for w in want) > net.cluster_blocks[1].dim


@pytest.mark.parametrize("arch,share", [pytest.param((3, 3, 2), 1, marks=pytest.mark.slow),
                                        pytest.param((3, 3, 2), 2, marks=pytest.mark.slow), ((3, 4, 2), 2)])
def test_micro_cluster_blocks_train_like_the_model(arch, share):
    """``cluster_impl = "micro"``: the cluster work on ``MicroClusterBlock``s — 3-3-2 with one block per layer or one
    for both layers (two banks), and 3-4-2 with one block for both layers of different widths (4 and 5 entries:
    a micro block's banks may differ, so ``cluster_share`` groups them). Every step's k*, v⊥, weights and every
    layer's prototypes, count, r_k and H equal the model's, with random idle input and back-pressure."""
    config = loco_config(arch=arch, steps=4, seed=77, mask=True, clusters=2, refresh=2)
    net = Network.from_config(config, lanes=2, update="loco", cluster_share=share, cluster_impl="micro")
    assert net.cluster_impl == "micro" and all(isinstance(b, MicroClusterBlock) for b in net.cluster_blocks)
    assert net.cluster_groups == {1: ((0,), (1,)), 2: ((0, 1),)}[share]
    assert net.cluster_blocks[0].dims == tuple(n + 1 for n in arch[:share])
    train_and_check(net, config, 6, 64, share)


@pytest.mark.parametrize("impl,arch,share", [("parallel", (4, 3, 2), 1), ("parallel", (3, 3, 2), 2),
                                              pytest.param("micro", (4, 3, 2), 2, marks=pytest.mark.slow),
                                              ("micro_loss", (4, 3, 2), 2), ("readout", (4, 3, 2), 2),
                                              pytest.param("micro_loss", (3, 3, 2), 1, marks=pytest.mark.slow)])
def test_loco_with_one_update_engine_trains_like_the_model(impl, arch, share):
    """``shared_update`` with LOCO (the UP5K build's form): one update engine sweeps both layers once every v⊥ (from
    the cluster blocks) and g are in — every step equals the model, and the schedule (first/last ``x``, ``o``,
    every layer's last v⊥) is exact. With one cluster block for both layers (``share`` 2) the engine keeps one v⊥
    store for both (``one_store``: their streams come one after the other). ``micro_loss``: micro blocks, the first
    of which also runs the loss (dl, g), after its last bank's update; ``readout``: that block also computes the output
    layer from the hidden layer's counts and the output weights (``OutputWeights``, read through the sequencer's
    window), the UP5K LOCO build's form — the same y, ỹ on ``o``, the same steps and an exact schedule."""
    config = loco_config(arch=arch, steps=4, seed=31, mask=True, clusters=2, refresh=2)
    micro_loss = impl in ("micro_loss", "readout")
    kw = dict(lanes=2, update="loco", shared_update=True, cluster_impl="micro" if micro_loss else impl,
              cluster_share=share, micro_loss=micro_loss, readout=impl == "readout")
    net = Network.from_config(config, **kw)
    assert net.readout == (impl == "readout") == isinstance(net.engines[-1], OutputWeights)
    assert net.shared_update and len(net.updaters) == 1
    assert net.updaters[0].one_store == (len(net.cluster_groups) == 1) == (share == 2)
    train_and_check(net, config, 6, 65, 1)
    weights, samples = random_stimulus(config, 4, np.random.default_rng(7))
    check_schedule(Network.from_config(config, **kw), config, weights, samples, None, [0, 0])


def test_micro_cluster_impl_errors():
    config = loco_config(arch=(3, 3, 2), steps=4)
    with pytest.raises(ValueError, match="cluster_impl = 'fast': expected one of 'parallel', 'micro'"):
        Network.from_config(config, lanes=1, update="loco", cluster_impl="fast")
    with pytest.raises(ValueError, match="cluster_units = 1: the micro cluster block has no parallel units"):
        Network.from_config(config, lanes=1, update="loco", cluster_impl="micro", cluster_units=1)
    with pytest.raises(ValueError, match="cluster_impl = 'micro': cluster blocks exist with update 'loco' only"):
        Network.from_config(config.replace(rule={"name": "np"}), lanes=1, update="np", cluster_impl="micro")


def test_readout_errors():
    config = loco_config(arch=(3, 3, 2), steps=4)
    kw = dict(lanes=1, update="loco", cluster_impl="micro", micro_loss=True)
    with pytest.raises(ValueError, match="readout = True: the output layer runs on the micro block"):
        Network.from_config(config, readout=True, **kw)                       # one block per layer
    with pytest.raises(ValueError, match="readout = True: the output layer runs on the micro block"):
        Network.from_config(config, readout=True, cluster_share=2, **{**kw, "micro_loss": False})
    with pytest.raises(ValueError, match="readout = 1: must be True or False"):
        Network.from_config(config, readout=1, cluster_share=2, **kw)
    fm = formats(config)            # (a config's acc format always holds a layer's sums: formats made by hand)
    narrow_acc = copy.copy(fm)
    narrow_acc.acc = dataclasses.replace(fm.acc, bits=18)
    with pytest.raises(ValueError, match="readout = True: the output layer's per-step sums reach 131584, beyond acc"):
        MicroClusterBlock(formats=narrow_acc, dims=[4, 4], clusters=2, refresh=1, ridge=0, norm_guard=8,
                          recip_extra=16, loss_outputs=2, readout=True)
    net = Network.from_config(config, readout=True, cluster_share=2, **kw)
    assert net.readout and net.cluster_blocks[0].readout and net.engines[-1].weight_depth == 2 * 4


def test_micro_loss_errors():
    config = loco_config(arch=(3, 3, 2), steps=4)
    with pytest.raises(ValueError, match="micro_loss = True: the loss runs on a micro cluster block"):
        Network.from_config(config, lanes=1, update="loco", micro_loss=True)
    with pytest.raises(ValueError, match="micro_loss = 1: must be True or False"):
        Network.from_config(config, lanes=1, update="loco", cluster_impl="micro", micro_loss=1)
    net = Network.from_config(config, lanes=1, update="loco", cluster_impl="micro", micro_loss=True)
    assert net.micro_loss and [b.loss_outputs for b in net.cluster_blocks] == [2, 0]
