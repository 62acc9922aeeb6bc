"""Bench: the xorshift32 lane against golden_model.prng, over several seeds and random draw enables."""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from loco_fpga.golden_model import prng

from . import bench_params


@cocotb.test()
async def words_equal_the_golden_model(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    dut.load.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    compared = errors = 0
    for lane in range(params["lanes"]):
        # Driver: load the lane's host-computed seed, then draw with a random duty cycle.
        bank = prng.XorShift32Bank(params["seed"], prng.ENCODER, [lane])
        expected = bank.draw(params["words"])[0]                       # model
        dut.seed.value = prng.seed_state(params["seed"], prng.ENCODER, lane)       # what the host writes
        dut.load.value = 1
        await RisingEdge(dut.clk)
        dut.load.value = 0
        got = []
        while len(got) < params["words"]:                             # monitor
            draw = rng.random() < params["duty"]
            dut.en.value = int(draw)
            await ReadOnly()
            if draw:
                got.append(dut.word.value.to_unsigned())
            await RisingEdge(dut.clk)
        dut.en.value = 0
        for index, (g, e) in enumerate(zip(got, expected.tolist())):  # in-order checker
            compared += 1
            if g != e:
                errors += 1
                if errors <= 5:
                    dut._log.error(f"lane {lane} word {index}: HDL {g:#010x} != model {e:#010x}")
    dut._log.info(f"compared {compared} words over {params['lanes']} lanes, {errors} mismatches")
    assert compared == params["lanes"] * params["words"]
    assert errors == 0, f"{errors} of {compared} words differ from golden_model.prng"
