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

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import QFormat

from .fixed import at_least, shape
from .layer import BLOCK_RAM, COLLISION_FREE
from .prng import Xorshift32, xorshift32_next

__all__ = ["ENCODERS", "SpikeEncoder", "EncoderBank"]

#: encoder kinds, spelled as in ``[spiking] encoder`` of the config
ENCODERS = ("deterministic", "bernoulli")
_MAX_STEPS = 4096   # the config's limit for spiking.steps


def _check_encoder(input_format, steps, encoder):
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
        _check_encoder(input_format, steps, encoder)
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
            m.d.comb += [total.eq(acc + x), spike.eq(at_least(total, one))]
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


class EncoderBank(wiring.Component):
    """All n inputs of a network through one time-multiplexed encoder, ``lanes`` inputs per cycle.

    The rule per input is :class:`SpikeEncoder`'s (``FixedNetwork.encode``). Instead of n encoders with their
    own step counters and an n-wide rate port, the bank keeps per input i its rate x_i and its encoder state
    (deterministic: the sigma-delta accumulator; Bernoulli: the xorshift32 state of lane (ENCODER, i)) in
    memories of ⌈n/lanes⌉ words (input i is lane i mod lanes of word ⌊i/lanes⌋), with one step counter.

    Ports:
        x (In stream of {x: input format}): the rates of one sample, one per transfer, input order (n
            transfers per sample). Accepted while the bank is in its FILL state: from the moment it has read
            the rates for the previous sample's last step until n rates have arrived.
        o (Out stream of {spikes: n}): T transfers per sample, one spike vector per step (bit i = input i).
            The payload is the bank's shift register itself (no second n-bit register): step t + 1 is
            computed from the cycle step t is taken (the layer engine keeps its own copy).
        seed (In 32), seed_en (In 1), seed_index (In range(n)) — Bernoulli only: load lane i's PRNG state;
            only while the bank is filling (between samples).

    Timing: the reads of a step's ⌈n/lanes⌉ words start in the cycle its predecessor is taken on ``o``
    (step 0: in the cycle after the sample's last rate is accepted, or when the previous sample's last step is
    taken if that is later), and the step is valid :attr:`words` + 1 cycles after its first read. So with
    ``o`` always ready, step 0 is valid from cycle f + :attr:`words` + 2 (the last rate accepted in cycle f)
    and each later step :attr:`step_cycles` = ⌈n/lanes⌉ + 1 cycles after the one before. The cycle after the
    last step's reads end (its hand-off), the bank is back in FILL (after the count phase, with ``counts``).

    ``spike_memory`` (``lanes`` = 1): each step's spikes also go into a block RAM of n bits, bit i at address i,
    written as they are made (in the cycles of the step's reads); ``sp_addr`` (In) / ``sp_data`` (Out 1, a cycle
    after the address) read it. A consumer that reads only while it holds the step's transfer back (a layer engine
    with ``hold_input``: the next step is made only after the transfer) can read it instead of the payload, which
    then needs no logic: its n flip-flops (a shift register, on iCE40 a logic cell each) and the consumer's
    n-way selection go.
    """

    def __init__(self, *, n_inputs: int, input_format: QFormat, steps: int, encoder: str, lanes: int = 1,
                 counts: bool = False, spike_memory: bool = False):
        _check_encoder(input_format, steps, encoder)
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or not 1 <= n_inputs <= 1 << 16:
            raise ValueError(f"n_inputs = {n_inputs!r}: must be an integer in [1, 65536]")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= n_inputs:
            raise ValueError(f"lanes = {lanes!r}: must be an integer in [1, {n_inputs}]")
        if not isinstance(counts, bool):
            raise ValueError(f"counts = {counts!r}: must be True or False")
        if not isinstance(spike_memory, bool) or (spike_memory and lanes != 1):
            raise ValueError(f"spike_memory = {spike_memory!r}: True or False, True with one lane only "
                             f"(lanes = {lanes})")
        self._n, self._lanes, self._counts, self._spike_memory = n_inputs, lanes, counts, spike_memory
        self._input_format, self._steps, self._encoder = input_format, steps, encoder
        self._words = -(-n_inputs // lanes)
        self._sample_layout = data.StructLayout({"x": shape(input_format)})
        self._spikes_layout = data.StructLayout({"spikes": unsigned(n_inputs)})
        self._count_shape = unsigned(steps.bit_length())          # 0 … T
        self._counts_layout = data.StructLayout({"count": self._count_shape, "last": 1})
        members = {"x": In(stream.Signature(self._sample_layout)),
                   "o": Out(stream.Signature(self._spikes_layout))}
        if counts:
            members["counts"] = Out(stream.Signature(self._counts_layout))
        if encoder == "bernoulli":
            members.update(seed=In(32), seed_en=In(1), seed_index=In(range(n_inputs)))
        if spike_memory:
            members.update(sp_addr=In(range(n_inputs)), sp_data=Out(1))
        super().__init__(members)

    n_inputs = property(lambda self: self._n)
    lanes = property(lambda self: self._lanes)
    input_format = property(lambda self: self._input_format)
    steps = property(lambda self: self._steps)
    encoder = property(lambda self: self._encoder)
    sample_layout = property(lambda self: self._sample_layout)
    spikes_layout = property(lambda self: self._spikes_layout)
    #: memory words per field: ⌈n/lanes⌉
    words = property(lambda self: self._words)
    counts_layout = property(lambda self: self._counts_layout)
    #: whether the bank counts each input's spikes and streams the counts out after a sample's last step
    has_counts = property(lambda self: self._counts)
    #: whether the step's spikes are also readable from a memory (``sp_addr``/``sp_data``)
    spike_memory = property(lambda self: self._spike_memory)

    @property
    def count_cycles(self) -> int:
        """Cycles of the count phase (``counts`` always ready): per word, one read cycle and one per input."""
        return self._words + self._n if self._counts else 0

    @property
    def step_cycles(self) -> int:
        """Cycles per step when ``o`` never stalls: ⌈n/lanes⌉ reads + the hand-off."""
        return self._words + 1

    @property
    def latency(self) -> int:
        """Cycles from the last rate's transfer on ``x`` to step 0 being valid on ``o`` (``o`` free)."""
        return self._words + 2

    def elaborate(self, platform):
        m = Module()
        frac = self._input_format.frac
        one = 1 << frac
        n, lanes, words = self._n, self._lanes, self._words
        bern = self._encoder == "bernoulli"
        enc_shape = unsigned(32) if bern else unsigned(frac + 1)
        state_shape = (data.StructLayout({"s": enc_shape, "count": self._count_shape}) if self._counts
                       else enc_shape)

        x_rd, x_wr, s_rd, s_wr = [], [], [], []
        # Collision-free, both: the rates are written only in FILL, the states at ``d_word`` while ``d_valid`` (the
        # word read the cycle before, never the one read now: ``word`` has moved on, or with one word the next
        # READ comes a cycle later) and by a seed load (between samples); read data is used only while
        # ``d_valid`` (not in FILL) and in CEMIT (no write then)
        for k in range(lanes):
            xm = memory.Memory(shape=shape(self._input_format), depth=words, init=[], attrs=COLLISION_FREE)
            sm = memory.Memory(shape=state_shape, depth=words, init=[], attrs=COLLISION_FREE)
            m.submodules[f"x{k}"], m.submodules[f"state{k}"] = xm, sm
            x_rd.append(xm.read_port(domain="sync"))
            x_wr.append(xm.write_port())
            s_rd.append(sm.read_port(domain="sync"))
            s_wr.append(sm.write_port())

        index = Signal(range(n))                 # FILL: the next rate's input index
        fill_word = Signal(range(words))
        fill_lane = Signal(range(lanes))
        word = Signal(range(words))              # READ: the word addressed this cycle
        d_valid = Signal()                       # a word read last cycle arrives now
        d_word = Signal(range(words))
        step = Signal(range(self._steps))
        vec = Signal(words * lanes)
        o_valid = Signal()
        o_free = Signal()
        m.d.comb += o_free.eq(~o_valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)

        # the data stage: every lane of the word read last cycle
        spikes = []
        for k in range(lanes):
            x, old_word = x_rd[k].data, s_rd[k].data
            old = old_word.s if self._counts else old_word
            spike = Signal(name=f"spike{k}")
            new_word = Signal(state_shape, name=f"new{k}")
            new = new_word.s if self._counts else new_word
            if self._counts:
                m.d.comb += new_word.count.eq(Mux(step == 0, 0, old_word.count) + spike)
            if bern:
                word_k = xorshift32_next(old)
                m.d.comb += [spike.eq(word_k[32 - frac:] < x), new.eq(word_k)]
            else:
                total = Signal(unsigned(frac + 1), name=f"total{k}")
                m.d.comb += [total.eq(Mux(step == 0, one >> 1, old) + x), spike.eq(at_least(total, one)),
                             new.eq(total - Mux(spike, one, 0))]
            spikes.append(spike)
            m.d.comb += [x_rd[k].addr.eq(word), s_rd[k].addr.eq(word), x_rd[k].en.eq(1), s_rd[k].en.eq(1),
                         s_wr[k].addr.eq(d_word), s_wr[k].data.eq(new_word), s_wr[k].en.eq(d_valid),
                         x_wr[k].addr.eq(fill_word), x_wr[k].data.eq(self.x.payload.x),
                         x_wr[k].en.eq(self.x.valid & self.x.ready & (fill_lane == k))]
            if bern:
                with m.If(self.seed_en):
                    m.d.comb += [s_wr[k].addr.eq(self.seed_index // lanes), s_wr[k].en.eq(self.seed_index % lanes == k)]
                    m.d.comb += (s_wr[k].data.s if self._counts else s_wr[k].data).eq(self.seed)
        shifted = Signal(words * lanes)
        m.d.comb += shifted.eq(Cat(vec[lanes:], *spikes)) if words > 1 else shifted.eq(Cat(*spikes))
        m.d.sync += [d_valid.eq(0), d_word.eq(word)]
        with m.If(d_valid):
            m.d.sync += vec.eq(shifted)
        if self._spike_memory:
            # collision-free: written only while a step is made, which (with a consumer that holds the transfer
            # back) is never while the consumer reads
            spm = memory.Memory(shape=1, depth=n, init=[], attrs=BLOCK_RAM | COLLISION_FREE)
            m.submodules.spikes = spm
            sp_rd, sp_wr = spm.read_port(domain="sync"), spm.write_port()
            m.d.comb += [sp_wr.addr.eq(d_word), sp_wr.data.eq(spikes[0]), sp_wr.en.eq(d_valid),
                         sp_rd.addr.eq(self.sp_addr), sp_rd.en.eq(1), self.sp_data.eq(sp_rd.data)]

        after_last = "CREAD" if self._counts else "FILL"
        c_lane = Signal(range(lanes))
        c_index = Signal(range(n))

        def read_word(fsm_word):
            """READ's action in this cycle: address word ``fsm_word`` (its data arrives next cycle)."""
            m.d.sync += [d_valid.eq(1), word.eq(fsm_word + 1)]
            with m.If(fsm_word == words - 1):
                m.d.sync += word.eq(0)
                m.next = "DONE"
            with m.Else():
                m.next = "READ"

        with m.FSM() as fsm:
            with m.State("FILL"):
                with m.If(self.x.valid):
                    m.d.sync += index.eq(index + 1)
                    with m.If(fill_lane == lanes - 1):
                        m.d.sync += [fill_lane.eq(0), fill_word.eq(fill_word + 1)]
                    with m.Else():
                        m.d.sync += fill_lane.eq(fill_lane + 1)
                    with m.If(index == n - 1):
                        m.d.sync += [index.eq(0), fill_lane.eq(0), fill_word.eq(0), step.eq(0), word.eq(0)]
                        m.next = "WAIT"
            with m.State("WAIT"):                  # ``o`` offers ``vec``: the next step shifts it only once taken
                with m.If(o_free):
                    read_word(0)
            with m.State("READ"):
                read_word(word)
            with m.State("DONE"):                  # the last word arrives: ``vec`` holds the step from next cycle
                m.d.sync += [o_valid.eq(1), step.eq(step + 1)]
                with m.If(step == self._steps - 1):
                    m.d.sync += step.eq(0)
                    m.next = after_last
                with m.Else():
                    m.next = "WAIT"
            if self._counts:
                # the count phase: word ``word`` is read (CREAD), then its inputs are offered one per
                # transfer (CEMIT; the read port keeps the address, so the data stays)
                with m.State("CREAD"):
                    m.next = "CEMIT"
                with m.State("CEMIT"):
                    with m.If(self.counts.ready):
                        m.d.sync += [c_lane.eq(c_lane + 1), c_index.eq(c_index + 1)]
                        with m.If(c_index == n - 1):
                            m.d.sync += [c_lane.eq(0), c_index.eq(0), word.eq(0)]
                            m.next = "FILL"
                        with m.Elif(c_lane == lanes - 1):
                            m.d.sync += [c_lane.eq(0), word.eq(word + 1)]
                            m.next = "CREAD"
        m.d.comb += [self.x.ready.eq(fsm.ongoing("FILL")), self.o.valid.eq(o_valid),
                     self.o.payload.spikes.eq(vec[:n])]
        if self._counts:
            lanes_data = Cat(*(s_rd[k].data.count for k in range(lanes)))
            m.d.comb += [self.counts.valid.eq(fsm.ongoing("CEMIT")),
                         self.counts.payload.count.eq(lanes_data.word_select(c_lane, self._count_shape.width)),
                         self.counts.payload.last.eq(c_index == n - 1)]
        return m
