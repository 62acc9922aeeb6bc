# amaranth: UnusedElaboratable=no
"""The time-multiplexed encoder bank (hdl/encoder.py ``EncoderBank``) in the Amaranth simulator: the spike
vectors of back-to-back samples equal ``FixedNetwork.encode`` (deterministic and Bernoulli, several bank
widths), with random idle cycles on ``x`` and back-pressure on ``o``; the published timing; parameter errors."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import Config
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork
from loco_fpga.hdl.encoder import EncoderBank
from loco_fpga.qformat import QFormat


def _fmt(frac):
    return QFormat("input", False, frac + 1, frac)


def _model(encoder, frac, steps, seed, samples):
    """Per sample the (T, n) spikes of ``FixedNetwork.encode`` with one Bernoulli lane per input."""
    n = len(samples[0])
    cfg = Config().replace(network={"arch": (n, 4, 2)}, spiking={"enabled": True, "steps": steps, "encoder": encoder},
                           fixed={"enabled": True, "input_frac": frac})
    net = FixedNetwork(cfg, np.random.default_rng(0))
    bank = prng.XorShift32Bank(seed, prng.ENCODER, np.arange(n))
    return [net.encode(np.asarray(x, dtype=np.int64), bank) for x in samples]


def run_bank(dut, samples, seed, *, idle, stall, rng):
    """Seeds (Bernoulli), then every rate of every sample on ``x``; returns the spike vectors of ``o`` and the
    cycles of every ``x`` and ``o`` transfer."""
    got, x_cycles, o_cycles = [], [], []
    cycle = 0
    total = len(samples) * dut.steps

    async def drive(ctx):
        if dut.encoder == "bernoulli":
            for i in range(dut.n_inputs):
                ctx.set(dut.seed_en, 1)
                ctx.set(dut.seed_index, i)
                ctx.set(dut.seed, prng.seed_state(seed, prng.ENCODER, i))
                await ctx.tick()
            ctx.set(dut.seed_en, 0)
        for x in samples:
            for v in x:
                while rng.random() < idle:
                    ctx.set(dut.x.valid, 0)
                    await ctx.tick()
                ctx.set(dut.x.valid, 1)
                ctx.set(dut.x.payload.x, int(v))
                await ctx.tick().until(dut.x.ready)
                x_cycles.append(cycle)
        ctx.set(dut.x.valid, 0)

    async def sink(ctx):
        while len(got) < total:
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, valid, ready, spikes = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload.spikes)
            if valid and ready:
                got.append([(int(spikes) >> i) & 1 for i in range(dut.n_inputs)])
                o_cycles.append(cycle)

    async def clock(ctx):
        nonlocal cycle
        async for _ in ctx.tick():
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(sink)
    sim.add_process(clock)
    sim.run()
    return got, x_cycles, o_cycles


CASES = [  # encoder, frac, T, n, lanes, idle/stall
    ("deterministic", 8, 16, 7, 1, 0.3),
    ("deterministic", 3, 4, 9, 4, 0.5),
    ("deterministic", 12, 1, 5, 5, 0.2),
    ("bernoulli", 8, 8, 6, 1, 0.3),
    ("bernoulli", 5, 2, 10, 3, 0.0),
    ("bernoulli", 16, 4, 3, 3, 0.4),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_bank_equals_the_model(case):
    encoder, frac, steps, n, lanes, noise = CASES[case]
    rng = np.random.default_rng(case)
    one = 1 << frac
    samples = [np.full(n, 0), np.full(n, one)] + [rng.integers(0, one + 1, size=n) for _ in range(6)]
    dut = EncoderBank(n_inputs=n, input_format=_fmt(frac), steps=steps, encoder=encoder, lanes=lanes)
    got, _, _ = run_bank(dut, samples, 321 + case, idle=noise, stall=noise, rng=random.Random(case))
    want = [row.tolist() for spikes in _model(encoder, frac, steps, 321 + case, samples) for row in spikes]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"sample {k // steps}, step {k % steps}: HDL {g}, model {w}"


@pytest.mark.parametrize("n,lanes,steps", [(7, 1, 4), (9, 4, 4), (5, 5, 2)])
def test_timing_is_published(n, lanes, steps):
    """``o`` always ready: step 0 is valid ``latency`` cycles after the last rate; each step ``step_cycles``."""
    dut = EncoderBank(n_inputs=n, input_format=_fmt(8), steps=steps, encoder="deterministic", lanes=lanes)
    samples = [np.arange(n) * 10, np.arange(n) * 3]
    _, x_cycles, o_cycles = run_bank(dut, samples, 0, idle=0.0, stall=0.0, rng=random.Random(0))
    assert dut.words == -(-n // lanes) and dut.step_cycles == dut.words + 1
    # the transfer of step 0 happens in the first cycle it is valid (o always ready)
    assert o_cycles[0] - x_cycles[n - 1] == dut.latency
    assert np.diff(o_cycles[:steps]).tolist() == [dut.step_cycles] * (steps - 1)
    # the next sample's first rate is taken in the cycle after the hand-off of the last step
    assert x_cycles[n] == o_cycles[steps - 1]


def test_parameter_errors_quote_the_value():
    fmt = _fmt(8)
    with pytest.raises(ValueError, match=r"n_inputs = 0: must be an integer in \[1, 65536\]"):
        EncoderBank(n_inputs=0, input_format=fmt, steps=4, encoder="deterministic")
    with pytest.raises(ValueError, match=r"lanes = 5: must be an integer in \[1, 4\]"):
        EncoderBank(n_inputs=4, input_format=fmt, steps=4, encoder="deterministic", lanes=5)
    with pytest.raises(ValueError, match=r"encoder = 'poisson'"):
        EncoderBank(n_inputs=4, input_format=fmt, steps=4, encoder="poisson")
    with pytest.raises(ValueError, match=r"steps = 0"):
        EncoderBank(n_inputs=4, input_format=fmt, steps=0, encoder="bernoulli")
    with pytest.raises(TypeError, match=r"input_format = 8"):
        EncoderBank(n_inputs=4, input_format=8, steps=4, encoder="bernoulli")
    with pytest.raises(ValueError, match=r"spike_memory = True: True or False, True with one lane only \(lanes = 2\)"):
        EncoderBank(n_inputs=4, input_format=fmt, steps=4, encoder="bernoulli", lanes=2, spike_memory=True)


def test_ports_and_properties():
    det = EncoderBank(n_inputs=64, input_format=_fmt(8), steps=16, encoder="deterministic", lanes=2)
    ber = EncoderBank(n_inputs=64, input_format=_fmt(8), steps=16, encoder="bernoulli")
    assert set(det.signature.members) == {"x", "o"}
    assert set(ber.signature.members) == {"x", "o", "seed", "seed_en", "seed_index"}
    assert det.sample_layout.size == 9 and det.spikes_layout.size == 64
    assert (det.words, det.lanes, det.step_cycles, det.latency) == (32, 2, 33, 34)
    assert (ber.words, ber.step_cycles) == (64, 65)
