# amaranth: UnusedElaboratable=no
"""The layer engine in the Amaranth simulator against ``FixedNetwork.run`` (golden_model/fixed.py) on
random weights, spikes and noise words: per-step spike vectors, spike counts and outputs of both passes,
with random idle cycles on the input streams and back-pressure on the output streams."""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.lib import memory
from amaranth.sim import Simulator

from loco_fpga.config import Config, preset
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule
from loco_fpga.hdl.layer import LayerEngine
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.layer import run_layer_model


# -- the golden model of one layer ------------------------------------------------------------------
model_layer = run_layer_model  # the bench's model of one layer, shared


def noise_words_and_signs(cfg, layer, samples):
    """PRNG words of lane (NOISE, layer) per sample, and the model's sign bits for them (draw_noise)."""
    bank = prng.XorShift32Bank(cfg.train.seed, prng.NOISE, layer)
    rule = FixedRule(FixedNetwork(cfg, np.random.default_rng(0)), cfg)
    n_out = cfg.network.arch[layer + 1]
    words, signs = [], []
    for _ in range(samples):
        words.append(bank.draw(-(-n_out // 32))[0].tolist())
        signs.append(rule.draw_noise()[layer])
    return words, signs


def pack_words(engine, weights):
    """Weight-memory image: word i·C + c holds row i's columns c·lanes … (zero padding)."""
    n_out, cols = weights.shape
    padded = np.zeros((n_out, engine.chunks * engine.lanes), dtype=np.int64)
    padded[:, :cols] = weights
    return [padded[i, c * engine.lanes:(c + 1) * engine.lanes].tolist()
            for i in range(n_out) for c in range(engine.chunks)]


def random_case(rng, *, output, n_in, n_out, steps, neuron, density):
    cfg = preset(rng.choice(["up5k", "ecp5"]))
    wf = rng.randint(6, 12)
    wb = wf + rng.randint(2, 5)
    fan_bits = max(0, (n_in).bit_length())
    acc = wb + fan_bits + 1 + rng.randint(0, 3)
    mb = rng.choice([max(wb, acc - 4), acc, acc + 4])
    threshold = rng.choice([0.25, 0.5, 1.0, 2.0])
    while round(threshold * 2 ** wf) >= 1 << (mb - 2):
        threshold /= 2
    arch = (n_in, n_out) if output else (n_in, n_out, 3)
    cfg = cfg.replace(network={"arch": arch}, train={"seed": rng.randrange(1 << 16)},
                      spiking={"steps": steps, "neuron": neuron, "leak_shift": rng.randint(1, 6),
                               "threshold": threshold},
                      rule={"sigma": 2.0 ** -rng.randint(0, wf)},
                      fixed={"weight_bits": wb, "weight_frac": wf, "acc_bits": acc, "membrane_bits": mb,
                             "out_bits": rng.randint(wb, acc + 2)})
    fm = formats(cfg)
    scale = rng.choice([fm.weight.max, 1 << wf, (1 << wf) // 4])    # full range: membranes saturate
    return cfg, fm, scale, density


def run_engine(engine, word_image, noise_words, inputs, rng, idle, stall):
    """Drive ``engine``: weights, then per sample noise words and T spike vectors; collect o and r."""
    n_samples = len(noise_words)
    got_o, got_r = [], []

    async def load_and_drive(ctx):
        for addr, word in enumerate(word_image):
            ctx.set(engine.w_en, 1)
            ctx.set(engine.w_addr, addr)
            ctx.set(engine.w_data, word)
            await ctx.tick()
        ctx.set(engine.w_en, 0)
        for n in range(n_samples):
            for word in noise_words[n]:
                while rng.random() < idle:
                    ctx.set(engine.noise.valid, 0)
                    await ctx.tick()
                ctx.set(engine.noise.valid, 1)
                ctx.set(engine.noise.payload, {"word": word})
                await ctx.tick().until(engine.noise.ready)
            ctx.set(engine.noise.valid, 0)
            clean, noisy = inputs[n]
            for t in range(len(clean)):
                while rng.random() < idle:
                    ctx.set(engine.i.valid, 0)
                    await ctx.tick()
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, {"clean": int("".join(map(str, clean[t][::-1])), 2),
                                           "noisy": int("".join(map(str, noisy[t][::-1])), 2)})
                await ctx.tick().until(engine.i.ready)
            ctx.set(engine.i.valid, 0)

    def sink(port, count, out, fields):
        async def monitor(ctx):
            while len(out) < count:
                ctx.set(port.ready, int(rng.random() >= stall))
                _, _, valid, ready, payload = await ctx.tick().sample(port.valid, port.ready, port.payload)
                if valid and ready:
                    out.append(tuple(int(getattr(payload, f)) for f in fields))
        return monitor

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(load_and_drive)
    steps = len(inputs[0][0])
    if not engine.output:
        sim.add_testbench(sink(engine.o, n_samples * steps, got_o, ("clean", "noisy")))
        sim.add_testbench(sink(engine.r, n_samples * engine.n_out, got_r, ("count", "count_noisy", "last")))
    else:
        sim.add_testbench(sink(engine.r, n_samples * engine.n_out, got_r, ("y", "y_noisy", "last")))
    sim.run()
    return got_o, got_r


def bits(value, n):
    return [(value >> i) & 1 for i in range(n)]


CASES = [  # (output, n_in, n_out, lanes, T, neuron, idle/stall)
    (False, 5, 3, 1, 4, "if", 0.0),
    (False, 7, 4, 3, 8, "lif", 0.3),
    (False, 12, 33, 13, 2, "if", 0.2),      # lanes = n_in + 1; two noise words
    (False, 3, 1, 2, 1, "lif", 0.4),        # T = 1, one neuron
    (True, 6, 3, 4, 8, "if", 0.3),
    (True, 1, 2, 1, 4, "if", 0.0),          # T = 4, single input
    (True, 9, 5, 5, 1, "if", 0.2),          # T = 1: no rounding shift
]


@pytest.mark.parametrize("form", ["dense", "sparse", "hold", "unfolded"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_layer_engine_equals_the_model(case, form):
    """Random weights, noise and input spikes (densities 0 … 1 per sample), random back-pressure; ``sparse``: the
    engine reads only the weights of the chunks that spiked — the same integers; ``hold``: it works on the held
    input (``hold_input``; the driver keeps the payload until the transfer) — the same integers too. The cases'
    acc formats never saturate, so the engines accumulate onto the stored state (``fold``); ``unfolded``: the
    engine that adds the state after the sums (as where sat_acc can saturate) — the same integers."""
    sparse = form == "sparse"
    output, n_in, n_out, lanes, steps, neuron, idle = CASES[case]
    rng = random.Random(31 + case)
    nrng = np.random.default_rng(31 + case)
    cfg, fm, scale, _ = random_case(rng, output=output, n_in=n_in, n_out=n_out, steps=steps, neuron=neuron,
                                    density=0.5)
    engine = LayerEngine.from_config(cfg, 0, lanes=lanes, sparse=sparse, hold_input=form == "hold",
                                     fold=False if form == "unfolded" else None)
    assert engine.output == output and engine.n_in == n_in and engine.n_out == n_out
    assert engine.fold == (form != "unfolded")
    assert engine.stages == (2 if output else 3) + (form == "unfolded")
    samples = 4
    weights = np.clip(nrng.integers(-scale, scale + 1, size=(n_out, n_in + 1)), fm.weight.min, fm.weight.max)
    words, signs = noise_words_and_signs(cfg, 0, samples)
    inputs = [((nrng.random((steps, n_in)) < d).astype(int), (nrng.random((steps, n_in)) < d).astype(int))
              for d in nrng.random(samples)]
    got_o, got_r = run_engine(engine, pack_words(engine, weights), words, inputs, rng, idle, idle)
    for n in range(samples):
        per_step, result = model_layer(cfg, weights, *inputs[n], signs[n], output)
        rows = got_r[n * n_out:(n + 1) * n_out]
        assert [r[2] for r in rows] == [0] * (n_out - 1) + [1]
        for k, name in enumerate(("clean", "noisy")):
            have = [r[k] for r in rows]
            assert have == result[k].tolist(), f"sample {n}: {'y' if output else 'count'} {name}"
            if not output:
                for t in range(steps):
                    assert bits(got_o[n * steps + t][k], n_out) == per_step[t, k].tolist(), \
                        f"sample {n} step {t}: {name} spikes"


def test_current_saturation_is_exact():
    """An acc format narrower than check_config allows (10 bits for 13 weights of 8 bits) with full-range
    weights: I and Ĩ saturate, and the engine must clamp exactly as the model's ``fm.acc.saturate`` (an
    output layer, where y shows the current directly)."""
    n_in, n_out, steps = 12, 4, 4
    cfg = preset("up5k").replace(network={"arch": (n_in, n_out)}, spiking={"steps": steps},
                                 fixed={"weight_bits": 8, "weight_frac": 6, "acc_bits": 13,
                                        "membrane_bits": 14, "out_bits": 13}, rule={"sigma": 2.0 ** -3})
    fm = formats(cfg)
    fm.acc = dataclasses.replace(fm.acc, bits=10)
    engine = LayerEngine(n_in=n_in, n_out=n_out, lanes=5, formats=fm, output=True)
    assert not engine.fold           # the state is added after the saturation
    with pytest.raises(ValueError, match="fold = True"):
        LayerEngine(n_in=n_in, n_out=n_out, lanes=5, formats=fm, output=True, fold=True)
    weights = np.array([[fm.weight.max] * (n_in + 1), [fm.weight.min] * (n_in + 1),
                        [fm.weight.max, fm.weight.min] * 6 + [3], [fm.weight.min // 2] * (n_in + 1)])
    words, signs = noise_words_and_signs(cfg, 0, 2)
    full = np.ones((steps, n_in), dtype=int)
    inputs = [(full, full), (full, np.zeros_like(full))]
    _, got_r = run_engine(engine, pack_words(engine, weights), words, inputs, random.Random(0), 0, 0)
    for n in range(2):
        _, y = model_layer(cfg, weights, *inputs[n], signs[n], True, fmts=fm)
        have = [[r[0] for r in got_r[n * n_out:(n + 1) * n_out]], [r[1] for r in got_r[n * n_out:(n + 1) * n_out]]]
        assert have == y.tolist(), f"sample {n}"
        # the check bites: with exact (unsaturated) currents y would differ
        assert model_layer(cfg, weights, *inputs[n], signs[n], True, fmts=formats(cfg))[1].tolist() != have


@pytest.mark.parametrize("fold", [None, False])
@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_membrane_saturation_is_exact(neuron, fold):
    """Membrane as narrow as the weights (s8.4) and full-range currents: V clamps at both limits (accumulated onto
    the stored state, ``fold``, and added after the sums)."""
    n_in, n_out, steps = 12, 4, 8
    cfg = preset("up5k").replace(network={"arch": (n_in, n_out, 2)},
                                 spiking={"steps": steps, "neuron": neuron, "leak_shift": 2, "threshold": 2.0},
                                 fixed={"weight_bits": 8, "weight_frac": 4, "acc_bits": 13,
                                        "membrane_bits": 8, "out_bits": 13}, rule={"sigma": 2.0 ** -2})
    fm = formats(cfg)
    engine = LayerEngine.from_config(cfg, 0, lanes=3, fold=fold)
    assert engine.fold == (fold is None)
    nrng = np.random.default_rng(5)
    weights = np.array([[fm.weight.max] * (n_in + 1), [fm.weight.min] * (n_in + 1),
                        nrng.integers(fm.weight.min, fm.weight.max + 1, n_in + 1),
                        [fm.weight.min] * n_in + [fm.weight.max]])
    words, signs = noise_words_and_signs(cfg, 0, 3)
    inputs = [((nrng.random((steps, n_in)) < d).astype(int), (nrng.random((steps, n_in)) < d).astype(int))
              for d in (0.9, 0.5, 0.1)]
    got_o, got_r = run_engine(engine, pack_words(engine, weights), words, inputs, random.Random(3), 0.2, 0.2)
    for n in range(3):
        per_step, counts = model_layer(cfg, weights, *inputs[n], signs[n], False)
        assert [[r[0] for r in got_r[n * n_out:(n + 1) * n_out]],
                [r[1] for r in got_r[n * n_out:(n + 1) * n_out]]] == counts.tolist(), f"sample {n}"
        for t in range(steps):
            assert [bits(got_o[n * steps + t][k], n_out) for k in (0, 1)] == per_step[t].tolist(), \
                f"sample {n} step {t}"


@pytest.mark.parametrize("output,lanes", [(False, 1), (False, 3), (False, 8), (True, 2)])
def test_cycles_per_step_is_published_and_held(output, lanes):
    cfg = preset("up5k").replace(network={"arch": (7, 5) if output else (7, 5, 2)}, spiking={"steps": 4})
    engine = LayerEngine.from_config(cfg, 0, lanes=lanes)
    assert engine.accumulate_cycles == 5 * -(-8 // lanes)
    accepts, emits = [], []

    async def bench(ctx):
        ctx.set(engine.noise.valid, 1)
        ctx.set(engine.i.valid, 1)
        ctx.set(engine.r.ready, 1)
        if not output:
            ctx.set(engine.o.ready, 1)
        for cycle in range(engine.cycles_per_sample + 3):
            _, _, i_ok, o_ok, r_last = await ctx.tick().sample(
                engine.i.ready, engine.o.valid if not output else engine.i.ready,
                engine.r.valid & engine.r.payload.last)
            if i_ok:
                accepts.append(cycle)
            if not output and o_ok:
                emits.append(cycle)
            if r_last:
                accepts.append(("last result", cycle))

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    steps = [c for c in accepts if isinstance(c, int)]
    assert np.diff(steps[:4]).tolist() == [engine.cycles_per_step] * 3
    if not output:
        assert [e - a for a, e in zip(steps[:4], emits)] == [engine.latency] * 4
    # one noise word, T steps, 2 cycles per result: the last result is on cycle cycles_per_sample − 1
    assert ("last result", engine.cycles_per_sample - 1) in accepts


@pytest.mark.parametrize("output,n_in,lanes", [(False, 9, 1), (False, 9, 3), (True, 6, 2), (False, 4, 5)])
def test_sparse_steps_take_the_published_cycles(output, n_in, lanes):
    """A sparse engine's steps with chosen input patterns (none, some, every chunk active; noisy-only spikes count
    too): each step takes ``step_cycles(active)`` and its spikes come ``step_latency(active)`` after the accept."""
    cfg = preset("up5k").replace(network={"arch": (n_in, 5) if output else (n_in, 5, 2)}, spiking={"steps": 4})
    engine = LayerEngine.from_config(cfg, 0, lanes=lanes, sparse=True)
    n_chunks = engine.chunks
    patterns = [([0] * n_in, [0] * n_in), ([1] * n_in, [0] * n_in), ([0] * n_in, [1] + [0] * (n_in - 1)),
                ([1, 0] * (n_in // 2) + [0] * (n_in % 2), [0] * n_in)]
    active = [engine.active_chunks(c, n) for c, n in patterns]
    assert active[0] == 0 and active[1] == n_chunks - 1 and active[2] == (1 if n_chunks > 1 else 0)
    accepts, emits = [], []

    async def bench(ctx):
        ctx.set(engine.noise.valid, 1)
        ctx.set(engine.r.ready, 1)
        if not output:
            ctx.set(engine.o.ready, 1)
        k = 0
        for cycle in range(4 * engine.cycles_per_step + 50):
            clean, noisy = patterns[min(k, 3)]
            ctx.set(engine.i.valid, k < 4)
            ctx.set(engine.i.payload.clean, int("".join(map(str, reversed(clean))), 2))
            ctx.set(engine.i.payload.noisy, int("".join(map(str, reversed(noisy))), 2))
            _, _, i_ok, o_ok = await ctx.tick().sample(engine.i.ready & engine.i.valid,
                                                       engine.o.valid if not output else engine.i.ready)
            if i_ok:
                accepts.append(cycle)
                k += 1
            if not output and o_ok:
                emits.append(cycle)

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert np.diff(accepts[:4]).tolist() == [engine.step_cycles(a) for a in active[:3]]
    if not output:
        assert [e - a for a, e in zip(accepts[:4], emits)] == [engine.step_latency(a) for a in active]
    assert engine.step_cycles() == engine.cycles_per_step
    assert engine.step_cycles(0) == engine.cycles_per_step - (n_chunks - 1) * 5    # 5 neurons, no listed chunk


def test_memory_hook_is_used():
    made = []

    def hook(*, shape, depth, name):
        made.append((name, depth))
        return memory.Memory(shape=shape, depth=depth, init=[])

    cfg = preset("up5k")
    engine = LayerEngine.from_config(cfg, 0, lanes=4, memory=hook)
    sim = Simulator(engine)     # elaborates
    del sim
    assert sorted(made) == [("state", 32), ("weights", 32 * 17)]


def test_parameter_errors_quote_the_value():
    fm = formats(Config())
    ok = {"n_in": 4, "n_out": 3, "lanes": 2, "formats": fm, "threshold": 4096}
    for key, value, message in [
        ("n_in", 0, r"n_in = 0: must be an integer in \[1, 65536\]"),
        ("n_out", 2.5, r"n_out = 2.5: must be an integer in \[1, 65536\]"),
        ("lanes", 6, r"lanes = 6: must be an integer in \[1, 5\]"),
        ("lanes", 0, r"lanes = 0: must be an integer in \[1, 5\]"),
        ("threshold", 0, r"threshold = 0: must be an integer in \[1, 8388607\]"),
        ("neuron", "alif", r"neuron = 'alif': expected one of if, lif"),
        ("leak_shift", 3, r"leak_shift = 3: must be 0 for neuron = 'if'"),
        ("output", 1, r"output = 1: must be True or False"),
        ("held_noise", 1, r"held_noise = 1: must be True or False"),
        ("hold_input", "yes", r"hold_input = 'yes': must be True or False"),
        ("input_memory", 1, r"input_memory = 1: must be True or False"),
        ("input_memory", True, r"input_memory = True: the inputs are read one a cycle"),   # lanes 2, no hold_input
    ]:
        with pytest.raises(ValueError, match=message):
            LayerEngine(**{**ok, key: value})
    with pytest.raises(ValueError, match=r"input_memory = True: the inputs are read one a cycle"):
        LayerEngine(**{**ok, "lanes": 1}, input_memory=True)                          # no hold_input
    assert LayerEngine(**{**ok, "lanes": 1}, input_memory=True, hold_input=True).input_memory
    with pytest.raises(ValueError, match=r"leak_shift = 0: must be an integer in \[1, 24\]"):
        LayerEngine(**ok, neuron="lif", leak_shift=0)
    with pytest.raises(TypeError, match=r"formats = None: expected a loco_fpga.qformat.Formats"):
        LayerEngine(**{**ok, "formats": None})
    with pytest.raises(TypeError, match=r"memory = 5: expected a callable"):
        LayerEngine(**ok, memory=5)
    with pytest.raises(ValueError, match=r"held_noise = True: n_out = 33 needs 2 noise words"):
        LayerEngine(**{**ok, "n_out": 33}, held_noise=True)
    with pytest.raises(ValueError, match=r"layer = 2: must be an integer in \[0, 1\]"):
        LayerEngine.from_config(preset("up5k"), 2, lanes=1)
