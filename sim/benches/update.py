"""Bench: full NP training steps in hardware (hdl/network.py with ``update="np"``) against the golden model.

Driver: random weights through ``w_*``, every PRNG lane's ``seed_state`` through ``seed_*`` (noise, encoder,
rounding lanes, in the network's ``seed_map`` order), then for each step the sample's n_0 rates on ``x`` with
random idle cycles. Monitor: ``counts[l]`` and ``o`` with random back-pressure; when ``busy`` falls the step's
update is complete and the bench reads every weight back through ``rd_*``. Model: ``FixedRule.step_q`` of the
golden model with ``rule.name = "np"`` on the same weights. Checker: per step, the forward results (hidden
counts, y, ỹ, Δy, ΔL_sum, dl, g — :func:`.network.compare`) and then **every weight of every layer**, bit for
bit; the failure names the first differing quantity, step, layer, row and column.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from loco_fpga.config import Config
from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import narrow

from . import bench_params
from .network import compare, decode_results, random_stimulus, reset_and_load, x_payloads
from .streams import StreamSink, StreamSource

__all__ = ["train_model", "train_trace", "load_prototypes", "read_weights", "compare_weights"]


def load_prototypes(rule: FixedRule, protos) -> None:
    """What a prototype load through ``pw_*`` does, on the model: per layer (C: K × N integers, count) set
    ``protos``/``count``, r_k = ``_recip_norm`` of every active prototype, then ``refresh()``."""
    for cl, (c, count) in zip(rule.clusters, protos):
        cl.protos[:] = np.asarray(c, dtype=np.int64)
        cl.count = int(count)
        for k in range(cl.count):
            cl.recips[k] = cl._recip_norm(cl.protos[k])
        if cl.count:
            cl.refresh()
        cl._since_refresh = 0


def train_model(config, weights, samples):
    """Per step: (the forward results in :func:`.network.golden`'s structure, the weights after the step), from
    ``FixedRule.step_q`` starting at ``weights`` (:func:`train_trace` without the cluster state)."""
    return [(t["fwd"], t["weights"]) for t in train_trace(config, weights, samples)]


def train_trace(config, weights, samples, protos=None):
    """Per step a dict: ``fwd`` (the forward results in :func:`.network.golden`'s structure), ``weights`` after
    the step, and for LOCO per layer ``clusters[l]`` = {k_star, v_perp, count, protos, recips, h (K × K,
    zero-padded)} after the step, from ``FixedRule.step_q`` starting at ``weights`` (and, for LOCO, at the
    prototypes ``protos`` loaded as :func:`load_prototypes` does). Δy and ΔL_sum are recomputed from
    ``rule.last`` with ``loss_unit``'s formula (step_q returns neither) and checked against the model's dl."""
    net = FixedNetwork(config, np.random.default_rng(0))
    net.weights = [np.asarray(w, dtype=np.int64).copy() for w in weights]
    rule = FixedRule(net, config)
    if protos is not None:
        load_prototypes(rule, protos)
    fm, wf = net.fmts, config.fixed.weight_frac
    out = []
    for x_q, label, lr_q in samples:
        rule.step_q(np.asarray(x_q, dtype=np.int64), label, lr_q)
        last = rule.last
        y, y_noisy = last["y"], last["y_noisy"]
        dy = fm.out.saturate(y_noisy - y)
        target = np.zeros_like(y)
        target[label] = 1 << wf
        dl_sum = int(np.sum(dy * (dy + 2 * (y - target))))
        if narrow(dl_sum, 2 * wf, fm.dl) != last["dl"]:
            raise AssertionError(f"bench ΔL_sum {dl_sum} does not narrow to the model's dl {last['dl']}")
        fwd = {"counts": [(c.copy(), k.copy()) for c, k in zip(last["counts_clean"], last["counts_noisy"])],
               "y": y, "y_noisy": y_noisy, "dy": dy, "dl_sum": dl_sum, "dl": int(last["dl"]), "g": int(last["g"])}
        step = {"fwd": fwd, "weights": [w.copy() for w in net.weights], "clusters": []}
        for l, cl in enumerate(rule.clusters or []):
            h = np.zeros((cl.capacity, cl.capacity), dtype=np.int64)
            h[:cl.count, :cl.count] = cl.h
            step["clusters"].append({"k_star": last["k_star"][l], "v_perp": last["v_perp"][l].copy(),
                                     "count": cl.count, "protos": cl.protos.copy(), "recips": cl.recips.copy(),
                                     "h": h, "since": cl._since_refresh})
        out.append(step)
    return out


async def read_weights(dut, dut_model):
    """Every weight of every layer through ``rd_layer``/``rd_addr``/``rd_data`` (data one cycle later)."""
    weights = []
    for l, engine in enumerate(dut_model.engines):
        rows = np.zeros((engine.n_out, engine.chunks * engine.lanes), dtype=np.int64)
        for addr in range(engine.weight_depth):
            dut.rd_layer.value, dut.rd_addr.value = l, addr
            await RisingEdge(dut.clk)                  # the read port takes the address
            await ReadOnly()
            word = dut_model.word_layout.from_bits(dut.rd_data.value.to_unsigned())
            i, c = divmod(addr, engine.chunks)
            rows[i, c * engine.lanes:(c + 1) * engine.lanes] = [int(word[k]) for k in range(engine.lanes)]
            await FallingEdge(dut.clk)
        weights.append(rows[:, :engine.n_in + 1])
    return weights


def compare_weights(got, want, step):
    """(compared, mismatch strings) for every weight."""
    compared, errors = 0, []
    for l, (g, w) in enumerate(zip(got, want)):
        for i, j in np.ndindex(w.shape):
            compared += 1
            if int(g[i, j]) != int(w[i, j]):
                errors.append(f"weight differs after step {step}, layer {l}, row {i}, column {j}: "
                              f"HDL {int(g[i, j])}, model {int(w[i, j])}")
    return compared, errors


@cocotb.test()
async def np_training_equals_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    config = Config().replace(**params["config"])
    model = Network.from_config(config, lanes=params["lanes"], update="np")
    n_steps = params["steps"]
    weights, samples = random_stimulus(config, n_steps, np.random.default_rng(params["seed"]))
    want = train_model(config, weights, samples)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rd_layer.value = 0
    dut.rd_addr.value = 0
    x_src = StreamSource(dut, "x", dut.clk, idle=params["idle"], rng=rng)
    o_sink = StreamSink(dut, "o", dut.clk, stall=params["stall"], rng=rng)
    c_sinks = [StreamSink(dut, f"counts__{l}", dut.clk, stall=params["stall"], rng=rng)
               for l in range(model.n_layers - 1)]
    await reset_and_load(dut, config, model, weights)

    compared, errors = 0, []
    for n, sample in enumerate(samples):
        send = cocotb.start_soon(x_src.send(x_payloads(model, [sample])))
        c_tasks = [cocotb.start_soon(s.collect((n + 1) * model.arch[l + 1])) for l, s in enumerate(c_sinks)]
        o_raw = await o_sink.collect((n + 1) * model.arch[-1])
        counts_raw = [await task for task in c_tasks]
        await send
        while True:                                     # the step is complete when busy falls
            await ReadOnly()
            if not dut.busy.value:
                break
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        got = decode_results(model, [c[n * model.arch[l + 1]:] for l, c in enumerate(counts_raw)],
                             o_raw[n * model.arch[-1]:], 1)
        fwd, w_after = want[n]
        c, e = compare(got, [fwd], model.n_layers)
        compared += c
        errors += [f"step {n}: {text}" for text in e]
        c, e = compare_weights(await read_weights(dut, model), w_after, n)
        compared += c
        errors += e
        if errors:
            break
    for text in errors[:5]:
        dut._log.error(text)
    dut._log.info(f"NP training {model.arch}, lanes {model.lanes}, T {model.steps}, {config.spiking.encoder}, "
                  f"rounding {config.fixed.update_rounding}, mask {config.rule.mask}: compared {compared} integers "
                  f"over {n_steps} steps, {len(errors)} mismatches")
    assert compared > 0
    assert not errors, f"{len(errors)} of {compared} integers differ; first: {errors[0]}"
