# amaranth: UnusedElaboratable=no
"""The spike encoder in the Amaranth simulator: parameter checks, and spikes equal to the golden model
for several widths and T with the output always ready (the cocotb bench adds idle cycles/back-pressure)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import Config
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork
from loco_fpga.hdl.encoder import SpikeEncoder
from loco_fpga.qformat import QFormat


def _fmt(frac):
    return QFormat("input", False, frac + 1, frac)


def _model_spikes(encoder, frac, steps, seed, lane, rates):
    cfg = Config().replace(network={"arch": (4, 4, 2)},
                           spiking={"enabled": True, "steps": steps, "encoder": encoder},
                           fixed={"enabled": True, "input_frac": frac})
    net = FixedNetwork(cfg, np.random.default_rng(0))
    bank = prng.XorShift32Bank(seed, prng.ENCODER, [lane])
    return [net.encode(np.array([x], dtype=np.int64), bank)[:, 0].tolist() for x in rates]


@pytest.mark.parametrize("encoder,frac,steps", [("deterministic", 1, 4), ("deterministic", 12, 64),
                                                ("bernoulli", 3, 8), ("bernoulli", 16, 16)])
def test_back_to_back_samples_equal_the_model(encoder, frac, steps):
    seed, lane = 99, 5
    rng = np.random.default_rng(frac * steps)
    one = 1 << frac
    rates = [0, one, one - 1, 1] + rng.integers(0, one + 1, size=12).tolist()
    expected = _model_spikes(encoder, frac, steps, seed, lane, rates)
    dut = SpikeEncoder(input_format=_fmt(frac), steps=steps, encoder=encoder)
    got, accept_cycles = [], []

    async def bench(ctx):
        if encoder == "bernoulli":
            ctx.set(dut.seed, prng.seed_state(seed, prng.ENCODER, lane))
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
        ctx.set(dut.o.ready, 1)
        cycle = 0
        pending = list(rates)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.x, pending[0])
        while len(got) < len(rates) * steps:
            accepted = pending and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload.spike))
            await ctx.tick()
            cycle += 1
            if accepted:
                accept_cycles.append(cycle)
                pending.pop(0)
                ctx.set(dut.i.valid, bool(pending))
                if pending:
                    ctx.set(dut.i.payload.x, pending[0])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [s for sample in expected for s in sample]
    # Full throughput: after the first rate (latency 1), one rate is accepted every T cycles.
    assert np.diff(accept_cycles).tolist() == [steps] * (len(rates) - 1)
    assert dut.latency == 1


def test_parameter_errors_quote_the_value():
    with pytest.raises(ValueError, match=r"encoder = 'poisson': expected one of deterministic, bernoulli"):
        SpikeEncoder(input_format=_fmt(8), steps=16, encoder="poisson")
    with pytest.raises(ValueError, match=r"steps = 0: must be an integer in \[1, 4096\]"):
        SpikeEncoder(input_format=_fmt(8), steps=0, encoder="deterministic")
    with pytest.raises(ValueError, match=r"input_format = s9.8: the input rate format is unsigned"):
        SpikeEncoder(input_format=QFormat("x", True, 9, 8), steps=16, encoder="deterministic")
    with pytest.raises(ValueError, match=r"input_format = u1.0: needs 1..32 fraction bits"):
        SpikeEncoder(input_format=_fmt(0), steps=16, encoder="bernoulli")
    with pytest.raises(TypeError, match=r"input_format = 8: expected a loco_fpga.qformat.QFormat"):
        SpikeEncoder(input_format=8, steps=16, encoder="bernoulli")


def test_ports_depend_on_the_encoder():
    det = SpikeEncoder(input_format=_fmt(8), steps=16, encoder="deterministic")
    ber = SpikeEncoder(input_format=_fmt(8), steps=16, encoder="bernoulli")
    assert set(det.signature.members) == {"i", "o"}
    assert set(ber.signature.members) == {"i", "o", "seed", "load"}
    assert det.spike_layout.size == 1 + 4 + 1 and det.sample_layout.size == 9
