"""Bench: one layer's LOCO cluster block (hdl/clusters.py) against the golden model's ``FixedClusters``.

Driver: per sample, ``dim`` (u, v) pairs on ``i`` (spike counts with the bias entry T; recurring patterns,
small variations of them, silent inputs and fresh random vectors), with random idle cycles. Monitor: ``o``
with random back-pressure. Between samples (while ``i.ready`` is high) the debug port ``peek`` reads the
count, every r_k, every prototype word and H. Model: ``FixedClusters`` driven exactly as ``FixedRule.step_q``
drives it (normalise, select, project, update). Checker: in order, per sample k*, every v⊥ entry, ``last``,
the count, r_k, every prototype word and every H entry, bit for bit; the failure names the first differing
quantity, sample and index. The build's ``units`` (absent: the default form, one unit per cluster) names the
form; the ports are the same for every number of units.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from loco_fpga.config import Config
from loco_fpga.golden_model.fixed import FixedClusters
from loco_fpga.hdl.clusters import ClusterBlock, PeekKind
from loco_fpga.qformat import formats

from . import bench_params
from .streams import StreamSink, StreamSource


def make_samples(rng: random.Random, dim: int, steps: int, count: int):
    """(u, v) pairs of spike counts, last entry the bias T (see the module docstring)."""
    patterns = [[rng.randint(0, steps) if rng.random() < 0.5 else 0 for _ in range(dim - 1)] for _ in range(3)]
    out = []
    for _ in range(count):
        r = rng.random()
        if r < 0.3:
            u = list(rng.choice(patterns))
        elif r < 0.6:
            u = [min(steps, max(0, x + rng.randint(-1, 1))) for x in rng.choice(patterns)]
        elif r < 0.7:
            u = [0] * (dim - 1)
        else:
            d = rng.random()
            u = [rng.randint(0, steps) if rng.random() < d else 0 for _ in range(dim - 1)]
        v = [min(steps, max(0, x + (rng.randint(-2, 2) if rng.random() < 0.3 else 0))) for x in u]
        out.append((np.array(u + [steps], dtype=np.int64), np.array(v + [steps], dtype=np.int64)))
    return out


def model_trace(cl: FixedClusters, samples) -> list[dict]:
    """Per sample: k*, v⊥ and the state after the update (FixedRule.step_q's calls, in its order)."""
    trace = []
    for u, v in samples:
        u_hat = cl.normalise(u)
        k = cl.select(u_hat)
        v_perp = cl.project(v, k)
        cl.update(u_hat, k)
        trace.append({"k_star": k, "v_perp": v_perp.copy(), "count": cl.count, "recips": cl.recips.copy(),
                      "protos": cl.protos.copy(), "h": cl.h.copy()})
    return trace


async def _peek(dut, layout, what, index=0, col=0) -> int:
    dut.peek.value = layout.const({"what": what, "index": index, "col": col}).as_bits()
    await RisingEdge(dut.clk)               # selectors and memory addresses are registered here
    await ReadOnly()
    value = dut.peek_data.value.to_signed()
    await RisingEdge(dut.clk)
    return value


async def _wait_ready(dut):
    while True:
        await ReadOnly()
        if dut.i__ready.value:
            break
        await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)


@cocotb.test()
async def clusters_equal_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    config = Config().replace(**params["config"])
    fm = formats(config)
    block = ClusterBlock.from_config(config, 0, units=params.get("units"))   # layouts and sizes only
    dim, K, steps = block.dim, block.clusters, 1 << fm.log2_steps
    samples = make_samples(rng, dim, steps, params["samples"])
    want = model_trace(FixedClusters(dim, config, fm), samples)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    src = StreamSource(dut, "i", dut.clk, idle=params["idle"], rng=rng)
    sink = StreamSink(dut, "o", dut.clk, stall=params["stall"], rng=rng)
    dut.peek.value = 0
    dut.load_en.value = 0        # the host-load port is unused here (Icarus: an undriven input is X)
    dut.load.value = 0
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0

    errors = compared = 0
    first = None

    def check(quantity, sample, where, have, expect):
        nonlocal errors, compared, first
        compared += 1
        if have != expect:
            errors += 1
            if first is None:
                first = f"{quantity} differs first at sample {sample}, {where}: HDL {have}, model {expect}"
            if errors <= 5:
                dut._log.error(f"sample {sample} {where}: {quantity} HDL {have} != model {expect}")

    for n, (u, v) in enumerate(samples):
        words = [block.input_layout.const({"u": int(u[j]), "v": int(v[j]), "last": int(j == dim - 1)}).as_bits()
                 for j in range(dim)]
        collect = cocotb.start_soon(sink.collect((n + 1) * dim))
        await src.send(words)
        raw = await collect
        await _wait_ready(dut)                                  # update and refresh done, waiting for input
        w = want[n]
        for j, bits in enumerate(raw[n * dim:]):
            got = block.output_layout.from_bits(bits)
            check("k*", n, f"index {j}", int(got.k_star), w["k_star"])
            check("v⊥", n, f"index {j}", int(got.v), int(w["v_perp"][j]))
            check("last", n, f"index {j}", int(got.last), int(j == dim - 1))
        count = await _peek(dut, block.peek_layout, PeekKind.COUNT)
        check("count", n, "-", count, w["count"])
        for k in range(K):
            check("r_k", n, f"k {k}", await _peek(dut, block.peek_layout, PeekKind.RECIP, k), int(w["recips"][k]))
        for k in range(K):
            for j in range(dim):
                check("prototype", n, f"c_{k}[{j}]", await _peek(dut, block.peek_layout, PeekKind.PROTO, k, j),
                      int(w["protos"][k, j]))
        if count == w["count"]:
            for r in range(count):
                for c in range(count):
                    check("H", n, f"H[{r}, {c}]", await _peek(dut, block.peek_layout, PeekKind.H, r, c),
                          int(w["h"][r, c]))
        if errors:
            break                                               # later samples only repeat the first error

    new = sum(1 for a, b in zip([0] + [t["count"] for t in want], [t["count"] for t in want]) if b > a)
    dut._log.info(f"cluster block (dim {dim}, K {K}, units {block.units}, N_ref {block.refresh}, T {steps}, proto "
                  f"{fm.proto.label()}, h {fm.h.label()}, vperp {fm.vperp.label()}): {len(samples)} samples, "
                  f"{new} new clusters, final count {want[-1]['count']}; compared {compared} quantities, "
                  f"{errors} mismatches")
    assert compared > 0
    assert errors == 0, f"{errors} of {compared} quantities differ; {first}"
