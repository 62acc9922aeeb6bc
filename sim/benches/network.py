"""Bench: the network datapath (hdl/network.py) against the golden model, sample by sample.

Driver: random weights through ``w_*``, every PRNG lane's ``seed_state`` through ``seed_*``, then random
samples (x, label, lr) on ``x`` with random idle cycles. Monitor: ``counts[l]`` and ``o`` with random
back-pressure. Model (:func:`golden`): ``FixedRule.draw_noise``, ``FixedNetwork.encode`` (on the rule's encoder
bank), ``FixedNetwork.run`` of both passes and ``FixedRule.loss_unit``, in the order ``FixedRule.step_q`` uses.
Checker (:func:`compare`): in order, every hidden count, y, ỹ, Δy, ΔL_sum, dl and g, bit for bit; the failure
names the first differing quantity, sample, layer and neuron.

The helpers above the cocotb test are plain functions, shared with the Amaranth-simulator test.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from loco_fpga.config import Config
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import formats, narrow

from . import bench_params
from .streams import StreamSink, StreamSource

__all__ = ["golden", "weight_writes", "seed_writes", "load_in_amaranth_sim", "random_stimulus", "compare",
           "decode_results", "x_payloads"]


def golden(config, weights, samples):
    """Per sample a dict of the model's results for ``samples`` [(x_q, label, lr_q)] with fixed ``weights``
    (the datapath does not update them): counts (clean, noisy) per hidden layer, y, ỹ, Δy, ΔL_sum, dl, g.

    ``FixedRule.step_q`` steps 1–4, from the model's public pieces (step_q itself also updates the weights
    and returns neither Δy nor ΔL_sum). ΔL_sum is not returned by any model function: it is computed here
    from ``loss_unit``'s documented formula and cross-checked against the model's dl (narrowing it must give
    the model's dl).
    """
    net = FixedNetwork(config, np.random.default_rng(0))
    net.weights = [np.asarray(w, dtype=np.int64).copy() for w in weights]
    rule = FixedRule(net, config)
    fm, wf = net.fmts, config.fixed.weight_frac
    out = []
    for x_q, label, lr_q in samples:
        signs = rule.draw_noise()                                           # step 1
        spikes = net.encode(np.asarray(x_q, dtype=np.int64), rule.encoder_bank)   # step 2
        pair = np.broadcast_to(spikes[:, None, :], (net.steps, 2, spikes.shape[1]))
        noise = [np.stack([np.zeros_like(s), np.where(s == 1, rule.sigma_q, -rule.sigma_q)]) for s in signs]
        counts, y_pair = net.run(pair, noise)                                # step 3
        y, y_noisy = y_pair[0], y_pair[1]
        dy, dl, g = rule.loss_unit(y, y_noisy, label, lr_q)                  # step 4
        target = np.zeros_like(y)
        target[label] = 1 << wf
        dl_sum = int(np.sum(dy * (dy + 2 * (y - target))))
        if narrow(dl_sum, 2 * wf, fm.dl) != dl:
            raise AssertionError(f"bench ΔL_sum {dl_sum} does not narrow to the model's dl {dl}")
        out.append({"counts": [(c[0].copy(), c[1].copy()) for c in counts], "y": y, "y_noisy": y_noisy,
                    "dy": dy, "dl_sum": dl_sum, "dl": int(dl), "g": int(g)})
    return out


def weight_writes(dut_model, weights):
    """[(layer, address, lane values)] writing integer ``weights`` (n_out × (n_in + 1) per layer) in the
    engines' memory map: word i·C + c of layer l holds W_l[i, c·lanes_l …]; padding lanes are 0."""
    writes = []
    for l, (engine, w) in enumerate(zip(dut_model.engines, weights)):
        padded = np.zeros((engine.n_out, engine.chunks * engine.lanes), dtype=np.int64)
        padded[:, :engine.n_in + 1] = w
        width = dut_model.word_layout.length
        for addr in range(engine.weight_depth):
            i, c = divmod(addr, engine.chunks)
            row = padded[i, c * engine.lanes:(c + 1) * engine.lanes].tolist()
            writes.append((l, addr, row + [0] * (width - len(row))))
    return writes


def seed_writes(config, dut_model):
    """[(seed lane, state)] for every lane of the network's ``seed_map`` ((stream, index) per lane: (NOISE, l),
    (ENCODER, i) for Bernoulli, (ROUNDING, l·2^16 + i) for a stochastic update; golden_model/prng.py)."""
    return [(lane, prng.seed_state(config.train.seed, stream, index))
            for lane, (stream, index) in enumerate(dut_model.seed_map)]


async def load_in_amaranth_sim(ctx, net, config, weights):
    """:func:`reset_and_load`'s writes for the Amaranth simulator (``ctx`` of a testbench, ``net`` the Network
    itself): every weight word, then every PRNG lane's seed state, one per cycle."""
    for layer, addr, row in weight_writes(net, weights):
        ctx.set(net.w_en, 1)
        ctx.set(net.w_layer, layer)
        ctx.set(net.w_addr, addr)
        ctx.set(net.w_data, row)
        await ctx.tick()
    ctx.set(net.w_en, 0)
    for lane, state in seed_writes(config, net):
        ctx.set(net.seed_en, 1)
        ctx.set(net.seed_lane, lane)
        ctx.set(net.seed, state)
        await ctx.tick()
    ctx.set(net.seed_en, 0)


async def reset_and_load(dut, config, model, weights):
    """Reset, write every weight word, then every PRNG lane's seed state (one per cycle)."""
    dut.rst.value = 1
    dut.w_en.value = 0
    dut.seed_en.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    for layer, addr, row in weight_writes(model, weights):
        dut.w_en.value, dut.w_layer.value, dut.w_addr.value = 1, layer, addr
        dut.w_data.value = model.word_layout.const(row).as_bits()
        await RisingEdge(dut.clk)
    dut.w_en.value = 0
    for lane, state in seed_writes(config, model):
        dut.seed_en.value, dut.seed_lane.value, dut.seed.value = 1, lane, state
        await RisingEdge(dut.clk)
    dut.seed_en.value = 0


def random_stimulus(config, n_samples: int, rng: np.random.Generator):
    """(weights, samples): random integer weights at a random scale per layer (so that some neurons spike
    often, some never, and sums saturate sometimes) and random (x_q, label, lr_q) samples."""
    fm = formats(config)
    arch = config.network.arch
    one = 1 << fm.weight.frac
    weights = []
    for n_in, n_out in zip(arch[:-1], arch[1:]):
        scale = int(rng.choice([fm.weight.max, one, max(1, one // 4), max(1, 2 * one // max(1, n_in))]))
        w = rng.integers(-scale, scale + 1, size=(n_out, n_in + 1))
        weights.append(np.clip(w, fm.weight.min, fm.weight.max))
    one_in = 1 << fm.input.frac                 # rates are in [0, 1] (the encoders' contract)
    samples = []
    for _ in range(n_samples):
        kind = rng.random()
        if kind < 0.1:
            x = np.full(arch[0], int(rng.choice([0, one_in])))
        else:
            x = rng.integers(0, one_in + 1, size=arch[0])
        lr = int(rng.choice([fm.lr.max, fm.lr.from_float(0.02 / (arch[-1] * config.rule.sigma)),
                             int(rng.integers(0, fm.lr.max + 1))]))
        samples.append((x, int(rng.integers(arch[-1])), lr))
    return weights, samples


def x_payloads(dut_model, samples):
    """The ``x`` transfers of ``samples`` [(x_q, label, lr_q)] as raw payloads: n_0 per sample, input order,
    each carrying the sample's label and lr (the network takes them from the sample's last transfer)."""
    return [dut_model.sample_layout.const({"x": int(v), "label": label, "lr": lr}).as_bits()
            for x, label, lr in samples for v in x]


def decode_results(dut_model, counts_raw, o_raw, n_samples):
    """The datapath's transfers decoded into the :func:`golden` structure (raw ints → layouts)."""
    arch = dut_model.arch
    got = []
    for n in range(n_samples):
        res = {"counts": [], "last": []}
        for l in range(dut_model.n_layers - 1):
            width = arch[l + 1]
            words = [dut_model.counts_layout.from_bits(v) for v in counts_raw[l][n * width:(n + 1) * width]]
            res["counts"].append((np.array([int(w.count) for w in words]),
                                  np.array([int(w.count_noisy) for w in words])))
            res["last"] += [("counts_last", l, i, int(w.last), int(i == width - 1)) for i, w in enumerate(words)]
        words = [dut_model.output_layout.from_bits(v) for v in o_raw[n * arch[-1]:(n + 1) * arch[-1]]]
        for name in ("y", "y_noisy", "dy"):
            res[name] = np.array([int(getattr(w, name)) for w in words])
        for name in ("dl_sum", "dl", "g"):
            res[name] = int(getattr(words[-1], name))
        if getattr(dut_model, "micro_loss", False):      # the micro block's loss produces dl and g, not ΔL_sum
            res["dl_sum"] = None
        res["last"] += [("o_last", dut_model.n_layers - 1, k, int(w.last), int(k == arch[-1] - 1))
                        for k, w in enumerate(words)]
        got.append(res)
    return got


def compare(got, want, n_layers):
    """(number of compared integers, list of mismatch strings) in order: per sample, hidden counts by
    layer and neuron, then y, ỹ, Δy by output, then ΔL_sum, dl, g, then the ``last`` flags."""
    compared, errors = 0, []

    def check(quantity, sample, layer, neuron, have, expect):
        nonlocal compared
        compared += 1
        if int(have) != int(expect):
            where = f"layer {layer}" + ("" if neuron is None else f", neuron {neuron}")
            errors.append(f"{quantity} differs at sample {sample}, {where}: HDL {int(have)}, model {int(expect)}")

    for n, (g_, w_) in enumerate(zip(got, want)):
        for l in range(n_layers - 1):
            for k, name in enumerate(("clean count", "noisy count")):
                for i, (h, e) in enumerate(zip(g_["counts"][l][k], w_["counts"][l][k])):
                    check(name, n, l, i, h, e)
        for name in ("y", "y_noisy", "dy"):
            for i, (h, e) in enumerate(zip(g_[name], w_[name])):
                check(name, n, n_layers - 1, i, h, e)
        for name in ("dl_sum", "dl", "g"):
            if g_[name] is not None:
                check(name, n, n_layers - 1, None, g_[name], w_[name])
        for quantity, layer, i, h, e in g_["last"]:
            check(quantity, n, layer, i, h, e)
    return compared, errors


@cocotb.test()
async def network_equals_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    config = Config().replace(**params["config"])
    model = Network.from_config(config, lanes=params["lanes"])        # layouts and sizes only
    n_samples = params["samples"]
    weights, samples = random_stimulus(config, n_samples, np.random.default_rng(params["seed"]))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    x_src = StreamSource(dut, "x", dut.clk, idle=params["idle"], rng=rng)
    o_sink = StreamSink(dut, "o", dut.clk, stall=params["stall"], rng=rng)
    c_sinks = [StreamSink(dut, f"counts__{l}", dut.clk, stall=params["stall"], rng=rng)
               for l in range(model.n_layers - 1)]
    await reset_and_load(dut, config, model, weights)

    payloads = x_payloads(model, samples)
    cocotb.start_soon(x_src.send(payloads))
    c_tasks = [cocotb.start_soon(s.collect(n_samples * model.arch[l + 1])) for l, s in enumerate(c_sinks)]
    o_raw = await o_sink.collect(n_samples * model.arch[-1])
    counts_raw = [await task for task in c_tasks]

    got = decode_results(model, counts_raw, o_raw, n_samples)
    compared, errors = compare(got, golden(config, weights, samples), model.n_layers)
    for text in errors[:5]:
        dut._log.error(text)
    spk = config.spiking
    dut._log.info(f"network {model.arch}, lanes {model.lanes}, T {model.steps}, {spk.neuron}, {spk.encoder}, "
                  f"weight {model.formats.weight.label()}: compared {compared} integers over {n_samples} "
                  f"samples, {len(errors)} mismatches")
    assert compared > 0
    assert not errors, f"{len(errors)} of {compared} integers differ; first: {errors[0]}"
