"""Bench: one layer engine (hdl/layer.py) against the golden model's ``FixedNetwork.run``.

Driver: random weights written through ``w_*``; per sample the layer's NOISE-lane PRNG words on ``noise`` and
T random clean/noisy spike vectors on ``i`` (random idle cycles on both). Monitor: ``o`` (hidden layers) and
``r`` with random back-pressure. Model: the layer as a one-layer ``FixedNetwork`` (clean pass = batch row 0,
noisy pass = row 1, noise signs from ``FixedRule.draw_noise`` of the full config). Checker: in order, every
per-step spike vector, every spike count / output, bit for bit; logs the first differing quantity, sample,
step and neuron.
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
from loco_fpga.hdl.layer import LayerEngine

from . import bench_params
from .streams import StreamSink, StreamSource


def layer_config(config: Config, layer: int) -> Config:
    """``config`` with the network cut to layer ``layer`` (plus a 2-wide output layer when it is hidden)."""
    arch = config.network.arch
    output = layer == len(arch) - 2
    sub = arch[layer:layer + 2] if output else (arch[layer], arch[layer + 1], 2)
    return config.replace(network={"arch": sub})


def run_layer_model(cfg: Config, weights, clean, noisy, signs, output: bool, fmts=None):
    """``FixedNetwork.run`` of one layer: the clean pass as batch row 0, the noisy one as row 1.

    ``cfg``'s network has this layer first (a hidden layer when it is not the last); ``fmts`` overrides the
    config's formats (tests drive formats narrower than ``check_config`` allows). Returns (per-step spikes
    (T, 2, n_out) or None, counts or y (2, n_out)); per-step spikes are the differences of the model's
    counts after t + 1 and t steps (the model returns counts only)."""
    net = FixedNetwork(cfg, np.random.default_rng(0))
    net.weights[0] = np.asarray(weights, dtype=np.int64)
    if fmts is not None:
        net.fmts = fmts
    sigma_q = FixedRule(net, cfg).sigma_q
    spikes = np.stack([clean, noisy], axis=1).astype(np.int64)                  # (T, 2, n_in)
    noise = [np.stack([np.zeros(len(signs), dtype=np.int64), np.where(signs == 1, sigma_q, -sigma_q)])]
    noise += [np.zeros((2, w.shape[0]), dtype=np.int64) for w in net.weights[1:]]
    counts, y = net.run(spikes, noise)
    if output:
        return None, y
    steps, prefix = net.steps, [np.zeros((2, len(signs)), dtype=np.int64)]
    for t in range(1, steps + 1):
        net.steps = t
        prefix.append(net.run(spikes[:t], noise)[0][0])
    net.steps = steps
    assert np.array_equal(prefix[-1], counts[0])
    return np.diff(np.stack(prefix), axis=0), counts[0]


def model_layer(config: Config, layer: int, weights, clean, noisy, signs):
    """:func:`run_layer_model` of layer ``layer`` of ``config``'s network."""
    output = layer == len(config.network.arch) - 2
    return run_layer_model(layer_config(config, layer), weights, clean, noisy, signs, output)


def _stimulus(params, config, fm, n_in, n_out, rng):
    nrng = np.random.default_rng(params["seed"])
    scale = rng.choice([fm.weight.max, 1 << fm.weight.frac, max(1, (1 << fm.weight.frac) // 4)])
    weights = np.clip(nrng.integers(-scale, scale + 1, size=(n_out, n_in + 1)), fm.weight.min, fm.weight.max)
    steps = config.spiking.steps
    inputs = []
    for _ in range(params["samples"]):
        d = nrng.random()
        clean = (nrng.random((steps, n_in)) < d).astype(np.int64)
        flip = nrng.random((steps, n_in)) < nrng.random() * 0.3          # the noisy pass differs a little
        inputs.append((clean, clean ^ flip))
    return weights, inputs


@cocotb.test()
async def layer_equals_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    config = Config().replace(**params["config"])
    layer = params["layer"]
    engine = LayerEngine.from_config(config, layer, lanes=params["lanes"])   # layouts and sizes only
    fm, n_in, n_out, steps = engine.formats, engine.n_in, engine.n_out, engine.steps
    samples = params["samples"]
    weights, inputs = _stimulus(params, config, fm, n_in, n_out, rng)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    # drivers and monitors first: every stream's valid/ready is driven (0) before reset ends
    noise_src = StreamSource(dut, "noise", dut.clk, idle=params["idle"], rng=rng)
    spike_src = StreamSource(dut, "i", dut.clk, idle=params["idle"], rng=rng)
    r_sink = StreamSink(dut, "r", dut.clk, stall=params["stall"], rng=rng)
    o_sink = None if engine.output else StreamSink(dut, "o", dut.clk, stall=params["stall"], rng=rng)
    dut.rst.value = 1
    dut.w_en.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    # driver: weights (word i·C + c = row i, columns c·lanes …; padding zero), then the two streams
    padded = np.zeros((n_out, engine.chunks * engine.lanes), dtype=np.int64)
    padded[:, :n_in + 1] = weights
    for addr in range(engine.weight_depth):
        i, c = divmod(addr, engine.chunks)
        row = padded[i, c * engine.lanes:(c + 1) * engine.lanes].tolist()
        dut.w_en.value = 1
        dut.w_addr.value = addr
        dut.w_data.value = engine.word_layout.const(row).as_bits()
        await RisingEdge(dut.clk)
    dut.w_en.value = 0

    bank = prng.XorShift32Bank(config.train.seed, prng.NOISE, layer)
    rule = FixedRule(FixedNetwork(config, np.random.default_rng(0)), config)
    words, signs = [], []
    for _ in range(samples):
        words += bank.draw(engine.noise_words)[0].tolist()
        signs.append(rule.draw_noise()[layer])
    vectors = []
    for clean, noisy in inputs:
        for t in range(steps):
            vectors.append(engine.spikes_in_layout.const({
                "clean": int("".join(map(str, clean[t][::-1])), 2),
                "noisy": int("".join(map(str, noisy[t][::-1])), 2)}).as_bits())
    cocotb.start_soon(noise_src.send(words))
    cocotb.start_soon(spike_src.send(vectors))
    # monitors
    r_task = cocotb.start_soon(r_sink.collect(samples * n_out))
    if o_sink is not None:
        o_raw = await o_sink.collect(samples * steps)
    r_raw = await r_task

    # model + in-order checker
    errors = compared = 0
    first = None
    names = ("y", "y_noisy") if engine.output else ("count", "count_noisy")

    def check(quantity, sample, where, have, want):
        nonlocal errors, compared, first
        compared += 1
        if have != want:
            errors += 1
            if first is None:
                first = f"{quantity} differs first at sample {sample}, {where}: HDL {have}, model {want}"
            if errors <= 5:
                dut._log.error(f"sample {sample} {where}: {quantity} HDL {have} != model {want}")

    for n in range(samples):
        per_step, result = model_layer(config, layer, weights, *inputs[n], signs[n])
        for i in range(n_out):
            got = engine.result_layout.from_bits(r_raw[n * n_out + i])
            for k, name in enumerate(names):
                check(name, n, f"neuron {i}", int(getattr(got, name)), int(result[k, i]))
            check("last", n, f"neuron {i}", int(got.last), int(i == n_out - 1))
        if per_step is not None:
            for t in range(steps):
                got = engine.spikes_out_layout.from_bits(o_raw[n * steps + t])
                for k, name in enumerate(("clean", "noisy")):
                    vec = int(getattr(got, name))
                    for i in range(n_out):
                        check(f"{name} spike", n, f"step {t} neuron {i}", (vec >> i) & 1, int(per_step[t, k, i]))
    kind = "output" if engine.output else f"hidden {config.spiking.neuron}"
    dut._log.info(f"layer {layer} ({kind}, {n_in}→{n_out}, lanes {engine.lanes}, T {steps}, weight "
                  f"{fm.weight.label()}, acc {fm.acc.label()}, membrane {fm.membrane.label()}): compared "
                  f"{compared} quantities over {samples} samples, {errors} mismatches")
    assert compared > 0
    assert errors == 0, f"{errors} of {compared} quantities differ; {first}"
