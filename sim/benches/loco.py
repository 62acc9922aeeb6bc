"""Bench: full LOCO (or DFA, or NP) training steps in hardware (hdl/network.py with ``update="loco"``/``"dfa"``/
``"np"``) against the golden model, several random configurations in one simulation build.

NP (``rule.name = "np"``): the LOCO checks without the cluster state — per step the forward results and every
weight (what ``sim/benches/update.py`` checks for one network per build).

DFA (``rule.name = "dfa"``): the same driver and model, the feedback lanes seeded from ``rule.feedback_seed``;
the checker compares the clean hidden counts, y and every weight (the noisy column, Δy, dl and g are not part
of DFA; there are no cluster blocks).

The DUT is a :class:`Batch` of independent ``Network(update="loco")`` instances (ports ``b<i>__…``); each one is
driven by its own coroutine, all at the same time. Per network — driver: random weights through ``w_*``, every
PRNG lane's ``seed_state`` through ``seed_*``, optionally random prototypes through ``pw_*`` (words, then the
count); then per step the sample's n_0 rates on ``x`` with random idle cycles. Monitor: ``counts[l]`` and ``o``
with random back-pressure, every layer's v⊥ and k* on ``vperp_tap[l]``; when ``busy`` falls the step (update,
prototype update, refresh) is complete and the bench reads back every weight (``rd_*``) and every layer's
prototype space (``pr_*``: prototypes, count, r_k, H). Model: ``FixedRule.step_q`` with ``rule.name = "loco"``
on the same weights (and loaded prototypes). Checker, per step in order: hidden counts, y, ỹ, Δy, ΔL_sum, dl,
g, then per layer k* and every v⊥ entry, every weight, the count, every prototype word, every r_k and every
H entry of the active clusters, bit for bit; the failure names the first differing quantity, step, layer and
index.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from loco_fpga.config import Config
from loco_fpga.golden_model import prng
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import formats

from . import bench_params
from .network import compare, decode_results, random_stimulus, weight_writes, x_payloads
from .streams import StreamSink, StreamSource
from .update import compare_weights, read_weights, train_trace

__all__ = ["Batch", "Ports", "random_protos", "check_step"]


class Batch(wiring.Component):
    """Independent components side by side in one build: part i's ports are member ``b<i>`` (Verilog names
    ``b<i>__<port>``); they share the clock and reset."""

    def __init__(self, parts):
        self._parts = list(parts)
        super().__init__({f"b{i}": Out(p.signature) for i, p in enumerate(self._parts)})

    parts = property(lambda self: list(self._parts))

    def elaborate(self, platform):
        m = Module()
        for i, part in enumerate(self._parts):
            m.submodules[f"b{i}"] = part
            outer = dict((path, value) for path, _, value in part.signature.flatten(getattr(self, f"b{i}")))
            for path, member, value in part.signature.flatten(part):     # (connect() cannot flip port arrays)
                if member.flow == wiring.In:
                    m.d.comb += value.eq(outer[path])
                else:
                    m.d.comb += outer[path].eq(value)
        return m


class Ports:
    """One part of a :class:`Batch` DUT seen as if it were the top: ``ports.x__valid`` is ``dut.b<i>__x__valid``;
    ``clk``, ``rst`` and ``_log`` are the top's."""

    def __init__(self, dut, index: int):
        self._dut, self._prefix = dut, f"b{index}__"

    def __getattr__(self, name):
        if name in ("clk", "rst", "_log"):
            return getattr(self._dut, name)
        return getattr(self._dut, self._prefix + name)


def random_protos(config, rng: np.random.Generator, counts):
    """Per layer (C: K × N prototype words in the proto format, count): random non-negative rows of about unit
    norm (so the loaded state looks like a trained one)."""
    fm = formats(config)
    out = []
    for n_in, count in zip(config.network.arch[:-1], counts):
        c = rng.integers(0, 1 << fm.proto.frac, size=(config.rule.clusters, n_in + 1)) // max(1, int(np.sqrt(n_in + 1)))
        out.append((c.astype(np.int64), int(count)))
    return out


def check_dfa_step(model, n, got, want):
    """DFA and LLS: (integers compared, the first difference of step n or None): clean hidden counts, y, weights."""
    res = decode_results(model, got["counts_raw"], got["o_raw"], 1)[0]
    compared = 0
    for l in range(model.n_layers - 1):
        for i, (h, e) in enumerate(zip(res["counts"][l][0], want["fwd"]["counts"][l][0])):
            compared += 1
            if int(h) != int(e):
                return compared, f"clean count differs at step {n}, layer {l}, neuron {i}: HDL {int(h)}, model {int(e)}"
    for k, (h, e) in enumerate(zip(res["y"], want["fwd"]["y"])):
        compared += 1
        if int(h) != int(e):
            return compared, f"y differs at step {n}, output {k}: HDL {int(h)}, model {int(e)}"
    c, errors = compare_weights(got["weights"], want["weights"], n)
    return compared + c, (errors[0] if errors else None)


def check_step(model, n, got, want):
    """(integers compared, the first difference of step n or None): forward results, per layer k* and v⊥,
    weights, count, prototypes, r_k and H (active block)."""
    if model.update in ("dfa", "lls"):     # unperturbed rules: the clean column, y and the weights
        return check_dfa_step(model, n, got, want)
    res = decode_results(model, got["counts_raw"], got["o_raw"], 1)
    compared, errors = compare(res, [want["fwd"]], model.n_layers)
    if errors:
        return compared, f"step {n}: {errors[0]}"
    for l, (tap, cl) in enumerate(zip(got["taps"], want["clusters"])):
        if len(tap) != len(cl["v_perp"]):
            return compared, f"step {n}, layer {l}: {len(tap)} v⊥ transfers, model {len(cl['v_perp'])}"
        for j, ((v, k, last), vm) in enumerate(zip(tap, cl["v_perp"])):
            compared += 3
            if k != cl["k_star"]:
                return compared, f"k* differs at step {n}, layer {l}, index {j}: HDL {k}, model {cl['k_star']}"
            if v != int(vm):
                return compared, f"v⊥ differs at step {n}, layer {l}, index {j}: HDL {v}, model {int(vm)}"
            if last != int(j == len(tap) - 1):
                return compared, f"v⊥ last flag differs at step {n}, layer {l}, index {j}"
    c, errors = compare_weights(got["weights"], want["weights"], n)
    compared += c
    if errors:
        return compared, errors[0]
    for l, (g, w) in enumerate(zip(got["clusters"], want["clusters"])):
        compared += 1
        if g["count"] != w["count"]:
            return compared, f"count differs after step {n}, layer {l}: HDL {g['count']}, model {w['count']}"
        for name in ("protos", "recips", "h"):
            compared += w[name].size
            diff = np.argwhere(g[name] != w[name])
            if len(diff):
                idx = tuple(int(i) for i in diff[0])
                return compared, (f"{name} differs after step {n}, layer {l}, index {idx}: HDL {int(g[name][idx])}, "
                                  f"model {int(w[name][idx])}")
    return compared, None


class EdgeSink(StreamSink):
    """:class:`~.streams.StreamSink` that sleeps until ``valid`` rises instead of polling every cycle (the
    ready draws while valid is low change nothing)."""

    async def collect(self, count: int) -> list[int]:
        while len(self.received) < count:
            self.ready.value = 0 if self.rng.random() < self.stall else 1
            await ReadOnly()
            if not self.valid.value:
                await RisingEdge(self.valid)
                continue
            if self.ready.value:
                self.received.append(self.payload.value.to_unsigned())
            await RisingEdge(self.clk)
        self.ready.value = 0
        return self.received


async def _tick_read(dut):
    await RisingEdge(dut.clk)
    await ReadOnly()


async def read_protos(dut, model):
    """Every layer's prototype space through ``pr_*`` (data one cycle after the address)."""
    out = []
    for l, b in enumerate(model.cluster_blocks):
        words = []
        for addr in range(model.proto_read_depth(l)):
            dut.pr_layer.value = l
            dut.pr_at.value = model.at_layout.const(model.proto_at(l, addr)).as_bits()
            await _tick_read(dut)
            words.append(dut.pr_data.value.to_signed())
            await FallingEdge(dut.clk)
        K, dim = b.clusters, model.engines[l].n_in + 1
        count = words[K * dim]
        h = np.array(words[K * dim + 1 + K:], dtype=np.int64).reshape(K, K)
        active = np.zeros((K, K), dtype=bool)
        active[:count, :count] = True
        out.append({"protos": np.array(words[:K * dim], dtype=np.int64).reshape(K, dim), "count": count,
                    "recips": np.array(words[K * dim + 1:K * dim + 1 + K], dtype=np.int64),
                    "h": np.where(active, h, 0)})
    return out


async def _wait_idle(dut):
    await ReadOnly()
    if dut.busy.value:
        await FallingEdge(dut.busy)
    await FallingEdge(dut.clk)


async def load(dut, config, model, weights, protos):
    """Every weight word, every PRNG lane's seed state, then (optionally) every prototype word and the count of
    every layer, one write per cycle (after the common reset)."""
    await FallingEdge(dut.clk)
    for layer, addr, row in weight_writes(model, weights):
        dut.w_en.value, dut.w_layer.value, dut.w_addr.value = 1, layer, addr
        dut.w_data.value = model.word_layout.const(row).as_bits()
        await FallingEdge(dut.clk)
    dut.w_en.value = 0
    for lane, (stream, index) in enumerate(model.seed_map):
        seed = config.rule.feedback_seed if stream == prng.DFA else config.train.seed
        dut.seed_en.value, dut.seed_lane.value, dut.seed.value = 1, lane, prng.seed_state(seed, stream, index)
        await FallingEdge(dut.clk)
    dut.seed_en.value = 0
    if protos is None:
        return
    width = model.signature.members["pw_data"].shape.width
    for l, (c, count) in enumerate(protos):
        K, dim = c.shape
        for addr, value in enumerate(list(c.reshape(-1)) + [count]):
            dut.pw_en.value, dut.pw_layer.value = 1, l
            dut.pw_at.value = model.at_layout.const(model.proto_at(l, addr)).as_bits()
            dut.pw_data.value = int(value) & ((1 << width) - 1)
            await FallingEdge(dut.clk)
        dut.pw_en.value = 0
        await FallingEdge(dut.clk)
        await _wait_idle(dut)


async def train_one(dut, case, log):
    """One network of the batch: load, train ``case["steps"]`` steps, check every step. Returns (compared,
    first difference or None)."""
    rng = random.Random(case["seed"])
    config = Config().replace(**case["config"])
    loco = config.rule.name == "loco"
    shared = case.get("shared_update", False)          # NP: one update engine for every layer
    model = Network.from_config(config, lanes=case["lanes"], update=config.rule.name, shared_update=shared)
    weights, samples = random_stimulus(config, case["steps"], np.random.default_rng(case["seed"]))
    protos = None
    if loco and case["preload"]:
        K = config.rule.clusters
        counts = [rng.randint(1, K) if rng.random() < 0.3 else K for _ in range(model.n_layers)]
        protos = random_protos(config, np.random.default_rng(case["seed"] + 1), counts)
    want = train_trace(config, weights, samples, protos)

    dut.rd_layer.value = dut.rd_addr.value = 0
    if loco:
        dut.pr_layer.value = dut.pw_en.value = 0
    x_src = StreamSource(dut, "x", dut.clk, idle=case["idle"], rng=rng)
    o_sink = EdgeSink(dut, "o", dut.clk, stall=case["stall"], rng=rng)
    c_sinks = [EdgeSink(dut, f"counts__{l}", dut.clk, stall=case["stall"], rng=rng)
               for l in range(model.n_layers - 1)]
    taps = [(getattr(dut, f"vperp_tap__{l}__valid"), getattr(dut, f"vperp_tap__{l}__payload"))
            for l in range(model.n_layers)] if loco else []
    tap_layout = model.signature.members["vperp_tap"].signature.members["payload"].shape if loco else None
    await load(dut, config, model, weights, protos)

    compared = 0
    for n, sample in enumerate(samples):
        tapped = [[] for _ in taps]

        async def watch(l, valid, payload):
            """Layer l's v⊥ transfers; woken by ``valid`` rising (no Python in the cycles between)."""
            while len(tapped[l]) < model.arch[l] + 1:
                await ReadOnly()
                if valid.value:
                    word = tap_layout.from_bits(payload.value.to_unsigned())
                    tapped[l].append((int(word.v), int(word.k_star), int(word.last)))
                    await RisingEdge(dut.clk)
                else:
                    await RisingEdge(valid)

        watchers = [cocotb.start_soon(watch(l, *tap)) for l, tap in enumerate(taps)]
        send = cocotb.start_soon(x_src.send(x_payloads(model, [sample])))
        c_tasks = [cocotb.start_soon(s.collect((n + 1) * model.arch[l + 1])) for l, s in enumerate(c_sinks)]
        o_raw = await o_sink.collect((n + 1) * model.arch[-1])
        counts_raw = [await task for task in c_tasks]
        await send
        await _wait_idle(dut)
        for w in watchers:
            if not w.done():
                w.cancel()
        await FallingEdge(dut.clk)
        got = {"counts_raw": [c[n * model.arch[l + 1]:] for l, c in enumerate(counts_raw)],
               "o_raw": o_raw[n * model.arch[-1]:], "taps": tapped,
               "weights": await read_weights(dut, model),
               "clusters": await read_protos(dut, model) if loco else []}
        c, problem = check_step(model, n, got, want[n])
        compared += c
        if problem:
            return compared, problem
    counts = [cl["count"] for cl in want[-1]["clusters"]]
    log.info(f"{config.rule.name.upper()} training {model.arch}, lanes {model.lanes}, T {model.steps}, K {config.rule.clusters}, N_ref "
             f"{config.rule.refresh}, {config.spiking.encoder}, rounding {config.fixed.update_rounding}, mask "
             f"{config.rule.mask}, preload {case['preload']}, shared update {shared}: {len(samples)} steps, "
             f"final counts {counts}, "
             f"{compared} integers equal")
    return compared, None


@cocotb.test()
async def loco_training_equals_the_golden_model(dut):
    params = bench_params()
    cases = params["cases"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    tasks = [cocotb.start_soon(train_one(Ports(dut, i), case, dut._log)) for i, case in enumerate(cases)]
    results = [await t for t in tasks]
    problems = [f"configuration {i}: {p}" for i, (_, p) in enumerate(results) if p]
    for text in problems:
        dut._log.error(text)
    total = sum(c for c, _ in results)
    dut._log.info(f"training batch: {len(cases)} configurations, {total} integers compared, "
                  f"{len(problems)} configurations with a difference")
    assert total > 0
    assert not problems, problems[0]
