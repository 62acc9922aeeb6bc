# amaranth: UnusedElaboratable=no
"""The network datapath in the Amaranth simulator against the golden model (``FixedRule``/``FixedNetwork``):
hidden counts, y, ỹ, Δy, ΔL_sum, dl and g of every sample, with idle cycles on ``x`` and back-pressure on the
outputs; the published cycle count; parameter errors."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.network import (compare, decode_results, golden, load_in_amaranth_sim,
                                           random_stimulus)


def small_config(*, arch, steps, encoder, neuron, seed):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"sigma": 2.0 ** -3})


def run_network(net, config, weights, samples, *, idle, stall, rng, strobe=None, strobe_cycles=None):
    """Load weights and seeds, stream ``samples`` through (n_0 rate transfers each); returns (counts_raw per
    hidden layer, o_raw, cycles of every x transfer, cycles of every ``last`` transfer on ``o``). With
    ``strobe`` (a 1-bit value of the design) every cycle it is high is appended to ``strobe_cycles``."""
    n_samples = len(samples)
    counts_raw = [[] for _ in range(net.n_layers - 1)]
    o_raw, x_cycles, o_last_cycles = [], [], []
    cycle = 0

    async def drive(ctx):
        nonlocal cycle
        await load_in_amaranth_sim(ctx, net, config, weights)
        for x, label, lr in samples:
            for v in x:
                while rng.random() < idle:
                    ctx.set(net.x.valid, 0)
                    await ctx.tick()
                ctx.set(net.x.valid, 1)
                ctx.set(net.x.payload, {"x": int(v), "label": label, "lr": lr})
                await ctx.tick().until(net.x.ready)
                x_cycles.append(cycle)
        ctx.set(net.x.valid, 0)

    async def clock(ctx):
        nonlocal cycle
        async for _ in ctx.tick():
            cycle += 1

    def sink(port, count, out):
        async def monitor(ctx):
            while len(out) < count:
                ctx.set(port.ready, int(rng.random() >= stall))
                _, _, valid, ready, payload = await ctx.tick().sample(port.valid, port.ready, port.payload)
                if valid and ready:
                    out.append(payload.as_bits())
                    if port is net.o and payload.last:
                        o_last_cycles.append(cycle)
        return monitor

    sim = Simulator(net)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(clock)
    sim.add_testbench(sink(net.o, n_samples * net.arch[-1], o_raw))
    if strobe is not None:
        async def watch(ctx):
            async for _, _, high in ctx.tick().sample(strobe):
                if high:
                    strobe_cycles.append(cycle)
        sim.add_testbench(watch, background=True)
    for l in range(net.n_layers - 1):
        sim.add_testbench(sink(net.counts[l], n_samples * net.arch[l + 1], counts_raw[l]))
    sim.run()
    return counts_raw, o_raw, x_cycles, o_last_cycles


CASES = [  # arch, lanes, T, encoder, neuron, idle/stall, hold_spikes
    ((5, 6, 4, 3), 2, 4, "bernoulli", "if", 0.3, False),
    ((3, 2), 4, 8, "deterministic", "if", 0.2, False),
    ((4, 35, 3), 3, 2, "bernoulli", "lif", 0.0, False),     # 35 hidden neurons: two noise words
    ((5, 6, 4, 3), 2, 4, "deterministic", "lif", 0.3, True),  # the engines work on their producers' spikes
    ((5, 6, 4, 3), 1, 4, "bernoulli", "if", 0.3, True),       # … layer 0 from the bank's spike memory (one lane)
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_network_equals_the_model(case):
    arch, lanes, steps, encoder, neuron, idle, hold = CASES[case]
    config = small_config(arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=100 + case)
    net = Network.from_config(config, lanes=lanes, hold_spikes=hold)
    assert net.engines[0].input_memory == net.bank.spike_memory == (hold and lanes == 1)
    weights, samples = random_stimulus(config, 4, np.random.default_rng(7 + case))
    counts_raw, o_raw, _, _ = run_network(net, config, weights, samples, idle=idle, stall=idle,
                                       rng=random.Random(case))
    got = decode_results(net, counts_raw, o_raw, len(samples))
    want = golden(config, weights, samples)
    compared, errors = compare(got, want, net.n_layers)
    assert compared > 0
    assert not errors, errors[0]


def test_bench_model_matches_step_q():
    """The bench's decomposition of ``FixedRule.step_q`` steps 1–4 (:func:`golden`) gives step_q's own counts,
    y, ỹ, dl and g (weights restored after each step, as the datapath does not update them)."""
    config = small_config(arch=(5, 6, 4, 3), steps=4, encoder="bernoulli", neuron="lif", seed=5)
    weights, samples = random_stimulus(config, 5, np.random.default_rng(3))
    want = golden(config, weights, samples)
    net = FixedNetwork(config, np.random.default_rng(0))
    rule = FixedRule(net, config)
    for n, (x, label, lr) in enumerate(samples):
        net.weights = [w.copy() for w in weights]
        rule.step_q(np.asarray(x), label, lr)
        last = rule.last
        for l in range(len(weights) - 1):
            assert np.array_equal(last["counts_clean"][l], want[n]["counts"][l][0])
            assert np.array_equal(last["counts_noisy"][l], want[n]["counts"][l][1])
        assert np.array_equal(last["y"], want[n]["y"]) and np.array_equal(last["y_noisy"], want[n]["y_noisy"])
        assert (int(last["dl"]), int(last["g"])) == (want[n]["dl"], want[n]["g"])


@pytest.mark.parametrize("arch,lanes,steps,encoder,encoder_lanes,update", [
    ((5, 6, 4, 3), 2, 4, "bernoulli", None, None), ((3, 2), 4, 8, "deterministic", None, None),
    ((4, 40, 2), 5, 2, "deterministic", None, None), ((2, 3, 9), 1, 1, "bernoulli", None, None),
    # a one-lane encoder bank slower than layer 0: the layer waits for the bank, the bank for the layer's accept
    ((9, 1, 1), 16, 4, "bernoulli", 1, None), ((9, 2, 3), 16, 4, "deterministic", 1, "np"),
    # sparse_input: layer 0 reads only the weights of the input chunks that spiked (data-dependent steps)
    ((9, 4, 3), 1, 4, "deterministic", None, "sparse"), ((7, 5, 3), 2, 8, "deterministic", None, "sparse-np"),
    ((8, 3), 3, 4, "deterministic", None, "sparse"),
    # hold_spikes: every engine works on its producer's spikes, which waits (no overlap of the layers' steps)
    ((5, 6, 4, 3), 2, 4, "bernoulli", None, "hold"), ((9, 2, 3), 16, 4, "deterministic", 1, "hold-np"),
    ((7, 5, 3), 2, 8, "deterministic", None, "hold-sparse-np"), ((6, 3, 2), 1, 4, "bernoulli", None, "hold-np")])
def test_cycles_per_sample(arch, lanes, steps, encoder, encoder_lanes, update):
    """With an always-valid source and always-ready sinks, every first and last ``x`` transfer and every
    ``last`` transfer on ``o`` happens exactly in the cycle :meth:`Network.schedule` gives, and the steady
    state is ``cycles_per_sample`` cycles per sample."""
    config = small_config(arch=arch, steps=steps, encoder=encoder, neuron="if", seed=1)
    flags = (update or "").split("-")
    sparse, hold = "sparse" in flags, "hold" in flags
    update = "np" if "np" in flags else None
    if update:
        config = config.replace(rule={"name": update})
    net = Network.from_config(config, lanes=lanes, encoder_lanes=encoder_lanes, update=update, sparse_input=sparse,
                              hold_spikes=hold)
    assert all(e.hold_input == hold for e in net.engines)
    if encoder_lanes:   # the case it is here for
        assert net.bank.step_cycles > net.engines[0].cycles_per_step
    n = 6
    weights, samples = random_stimulus(config, n, np.random.default_rng(1))
    _, _, x_cycles, o_last = run_network(net, config, weights, samples, idle=0.0, stall=0.0, rng=random.Random(0))
    active = None
    if sparse:      # the encoder's spikes of every sample (deterministic: no PRNG state)
        model = FixedNetwork(config, np.random.default_rng(0))
        active = [net.input_activity(model.encode(np.asarray(x), None)) for x, _, _ in samples]
        assert len({a for act in active for a in act}) > 1       # steps of different lengths
    sched = net.schedule(n, active=active)
    base = x_cycles[0]
    n0 = arch[0]
    assert [c - base for c in x_cycles[::n0]] == list(sched.first_x)
    assert [c - base for c in x_cycles[n0 - 1::n0]] == list(sched.last_x)
    assert [c - base for c in o_last] == list(sched.loss_done)
    if not sparse:
        assert np.diff(o_last).tolist()[-1] == net.cycles_per_sample == sched.period
    else:           # samples of different lengths, none longer than with every chunk active (the worst case)
        assert max(np.diff(o_last)) <= net.cycles_per_sample and min(np.diff(o_last)) < net.cycles_per_sample
    assert sched.first_latency == o_last[0] - base


def test_parameter_errors():
    fm = formats(preset("up5k"))
    with pytest.raises(ValueError, match=r"arch = \(4,\)"):
        Network(arch=(4,), lanes=1, formats=fm)
    with pytest.raises(ValueError, match=r"arch = \(4, 0\)"):
        Network(arch=(4, 0), lanes=1, formats=fm)
    with pytest.raises(ValueError, match=r"lanes = 0"):
        Network(arch=(4, 2), lanes=0, formats=fm)
    with pytest.raises(TypeError, match=r"formats = 'q'"):
        Network(arch=(4, 2), lanes=1, formats="q")
    with pytest.raises(ValueError, match=r"encoder = 'poisson'"):
        Network(arch=(4, 2), lanes=1, formats=fm, encoder="poisson")
    with pytest.raises(ValueError, match=r"neuron = 'adex'"):
        Network(arch=(4, 2), lanes=1, formats=fm, neuron="adex")
    with pytest.raises(ValueError, match=r"threshold = 0"):        # from the hidden engine
        Network(arch=(4, 3, 2), lanes=1, formats=fm, threshold=0)
    with pytest.raises(ValueError, match=r"hold_spikes = 1: must be True or False"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, hold_spikes=1)


def test_properties_and_ports():
    net = Network.from_config(preset("up5k"), lanes=8)
    assert net.arch == (64, 32, 10) and net.n_layers == 2 and net.steps == 16 and net.lanes == 8
    assert [e.lanes for e in net.engines] == [8, 8]
    assert net.seed_lanes == 2                                        # deterministic encoder: noise lanes only
    assert net.word_layout.length == 8
    one = Network.from_config(small_config(arch=(3, 2), steps=2, encoder="bernoulli", neuron="if", seed=0),
                              lanes=9)
    assert [e.lanes for e in one.engines] == [4] and one.seed_lanes == 1 + 3
    assert "counts" not in one.signature.members
