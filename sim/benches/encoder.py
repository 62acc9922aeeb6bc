"""Bench: the spike encoder against the golden model's ``FixedNetwork.encode``, with random idle cycles
on the rate stream and random back-pressure on the spike stream."""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from loco_fpga.config import Config
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork
from loco_fpga.hdl.encoder import SpikeEncoder

from . import bench_params
from .streams import StreamSink, StreamSource


def _model(params):
    """The golden model configured like the DUT, and its encoder lane (stream ENCODER, lane ``lane``)."""
    cfg = Config().replace(network={"arch": (4, 4, 2)},
                           spiking={"enabled": True, "steps": params["steps"], "encoder": params["encoder"]},
                           fixed={"enabled": True, "input_frac": params["input_frac"]},
                           train={"seed": params["seed"]})
    net = FixedNetwork(cfg, np.random.default_rng(0))
    bank = prng.XorShift32Bank(params["seed"], prng.ENCODER, [params["lane"]])
    return net, bank


def _rates(params, rng):
    one = 1 << params["input_frac"]
    edges = [0, one, 1, one - 1, one // 2, one // 2 + 1]
    return (edges + [rng.randint(0, one) for _ in range(params["samples"])])[:params["samples"]]


@cocotb.test()
async def spikes_equal_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"] ^ 0x5EED)
    steps = params["steps"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    if params["encoder"] == "bernoulli":
        dut.load.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    if params["encoder"] == "bernoulli":                       # the host writes the lane's seed
        dut.seed.value = prng.seed_state(params["seed"], prng.ENCODER, params["lane"])
        dut.load.value = 1
        await RisingEdge(dut.clk)
        dut.load.value = 0

    rates = _rates(params, rng)
    source = StreamSource(dut, "i", dut.clk, idle=params["idle"], rng=rng)       # driver
    sink = StreamSink(dut, "o", dut.clk, stall=params["stall"], rng=rng)         # monitor
    cocotb.start_soon(source.send(rates))
    raw = await sink.collect(len(rates) * steps)

    net, bank = _model(params)                                                   # model
    layout = SpikeEncoder.spike_layout_for(steps)
    errors = compared = 0
    for n, x in enumerate(rates):                                                # in-order checker
        expected = net.encode(np.array([x], dtype=np.int64), bank)[:, 0]
        for t in range(steps):
            got = layout.from_bits(raw[n * steps + t])
            want = (int(expected[t]), t, int(t == steps - 1))
            have = (int(got.spike), int(got.step), int(got.last))
            compared += 1
            if have != want:
                errors += 1
                if errors <= 5:
                    dut._log.error(f"sample {n} (x = {x}) step {t}: HDL (spike, step, last) = {have}, "
                                   f"model {want}")
    dut._log.info(f"{params['encoder']}: compared {compared} spikes of {len(rates)} samples "
                  f"(T = {steps}, input_frac = {params['input_frac']}), {errors} mismatches")
    assert compared == len(rates) * steps
    assert errors == 0, f"{errors} of {compared} spikes differ from the golden model"
