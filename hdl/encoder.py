"""Spike encoder of one input lane — the gateware twin of ``FixedNetwork.encode`` (golden_model/fixed.py).

For a rate x (``fmts.input``: unsigned, ``if`` fraction bits, x ∈ [0, 2^if]) it emits T spikes:

* ``deterministic`` (sigma-delta): acc ← 2^(if−1) at the start of each sample; each step
  acc ← acc + x, spike = acc ≥ 2^if, acc ← acc − 2^if·spike. (acc < 2^if between steps, so acc + x fits
  if + 1 bits.)
* ``bernoulli``: each step draws one word of the lane's xorshift32 (PRNG stream ENCODER, lane i);
  spike = (word >> (32 − if)) < x. The lane's state carries over from sample to sample, as the model's
  ``XorShift32Bank`` does; the host loads ``seed_state(seed, ENCODER, i)`` through ``seed``/``load``.

The noisy pass replays the clean pass's spikes (SPEC §3), so the encoder runs once per sample and the layer
engine feeds each spike to both passes' accumulators.
"""

import math

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import QFormat

from .fixed import shape
from .prng import Xorshift32

__all__ = ["ENCODERS", "SpikeEncoder"]

#: encoder kinds, spelled as in ``[spiking] encoder`` of the config
ENCODERS = ("deterministic", "bernoulli")
_MAX_STEPS = 4096   # the config's limit for spiking.steps


class SpikeEncoder(wiring.Component):
    """One input lane: a stream of rates in, T spikes per rate out.

    Ports:
        i (In stream of :attr:`sample_layout` = {x: shape(input_format)}): one rate per sample.
        o (Out stream of :attr:`spike_layout` = {spike: 1, step: t, last: t == T − 1}): T transfers per
            sample, in step order. Valid never waits on ready; the payload holds while stalled.
        seed (In 32), load (In 1) — ``bernoulli`` only: load the lane's PRNG state; only between samples
            (while ``o.valid`` is low), as the host does before training.

    Timing: :attr:`latency` = 1 cycle from the accepting ``i`` transfer to the first spike on ``o``; a
    new rate is accepted together with the last spike of the previous one, so back-to-back samples take
    exactly T cycles each when ``o`` is always ready.
    """

    def __init__(self, *, input_format: QFormat, steps: int, encoder: str):
        if not isinstance(input_format, QFormat):
            raise TypeError(f"input_format = {input_format!r}: expected a loco_fpga.qformat.QFormat")
        if input_format.signed or input_format.bits != input_format.frac + 1:
            raise ValueError(f"input_format = {input_format.label()}: the input rate format is unsigned "
                             "with one integer bit (u<if+1>.<if>)")
        if not 1 <= input_format.frac <= 32:
            raise ValueError(f"input_format = {input_format.label()}: needs 1..32 fraction bits "
                             "(the Bernoulli comparison uses the top bits of one 32-bit word)")
        if not isinstance(steps, int) or not 1 <= steps <= _MAX_STEPS:
            raise ValueError(f"steps = {steps!r}: must be an integer in [1, {_MAX_STEPS}]")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder = {encoder!r}: expected one of {', '.join(ENCODERS)}")
        self._input_format, self._steps, self._encoder = input_format, steps, encoder
        self._sample_layout = data.StructLayout({"x": shape(input_format)})
        self._spike_layout = self.spike_layout_for(steps)
        members = {"i": In(stream.Signature(self._sample_layout)),
                   "o": Out(stream.Signature(self._spike_layout))}
        if encoder == "bernoulli":
            members.update(seed=In(32), load=In(1))
        super().__init__(members)

    @staticmethod
    def spike_layout_for(steps: int) -> data.StructLayout:
        """Payload of ``o``: the spike, its time step and whether it is the sample's last step."""
        return data.StructLayout({"spike": 1, "step": unsigned(max(1, math.ceil(math.log2(steps)))),
                                  "last": 1})

    input_format = property(lambda self: self._input_format)
    steps = property(lambda self: self._steps)
    encoder = property(lambda self: self._encoder)
    sample_layout = property(lambda self: self._sample_layout)
    spike_layout = property(lambda self: self._spike_layout)

    @property
    def latency(self) -> int:
        """Cycles from accepting a rate on ``i`` to its first spike being valid on ``o``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        frac = self._input_format.frac
        one = 1 << frac                       # the rate 1.0 in input LSBs

        busy = Signal()
        x = Signal(shape(self._input_format))
        step = Signal(range(self._steps))
        last = Signal()
        spike = Signal()
        transfer = Signal()
        m.d.comb += [
            last.eq(step == self._steps - 1),
            transfer.eq(self.o.valid & self.o.ready),
            self.o.valid.eq(busy),
            self.o.payload.spike.eq(spike),
            self.o.payload.step.eq(step),
            self.o.payload.last.eq(last),
            self.i.ready.eq(~busy | (self.o.ready & last)),
        ]

        if self._encoder == "deterministic":
            acc = Signal(unsigned(frac + 1))
            total = Signal(unsigned(frac + 1))
            m.d.comb += [total.eq(acc + x), spike.eq(total >= one)]
            with m.If(transfer):
                m.d.sync += acc.eq(total - Mux(spike, one, 0))
        else:
            m.submodules.prng = prng = Xorshift32()
            m.d.comb += [
                prng.seed.eq(self.seed),
                prng.load.eq(self.load),
                prng.en.eq(transfer),         # one draw per emitted step (latency 0: word is this step's)
                spike.eq(prng.word[32 - frac:] < x),
            ]

        with m.If(transfer):
            m.d.sync += step.eq(Mux(last, 0, step + 1))
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(self.i.valid & self.i.ready):  # after the block above: a new sample wins
            m.d.sync += [busy.eq(1), x.eq(self.i.payload.x), step.eq(0)]
            if self._encoder == "deterministic":
                m.d.sync += acc.eq(one >> 1)
        return m
