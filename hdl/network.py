# amaranth: UnusedElaboratable=no
# (the sub-components are built in __init__ to validate the parameters and publish their sizes; a Network
# that is only inspected — cycle counts, layouts, benches — never elaborates them)
"""Network datapath — steps 1–4 of ``FixedRule.step_q`` (golden_model/fixed.py) for one sample in gateware.

Per sample (x, label, lr_reg) the datapath

1. draws the noise words of every layer (one xorshift32 lane per layer: PRNG stream NOISE, lane l;
   ⌈n_l/32⌉ words per sample, in draw order — golden_model/prng.py);
2. encodes x into T spike vectors (one :class:`~.encoder.SpikeEncoder` per input; Bernoulli lanes are
   PRNG stream ENCODER, lane i, one draw per step); both passes use the same spikes;
3. runs the T steps of both passes through the L :class:`~.layer.LayerEngine` s, one engine per layer;
4. feeds the output layer's y, ỹ to the :class:`~.loss.LossUnit` (Δy, ΔL_sum, dl, g).

All PRNG lanes are independent, so the order in which the lanes are drawn does not matter; only the order
within a lane does, and each lane has exactly one consumer.

**Pipelining.** The engines are chained by their spike streams (``o`` of layer l → ``i`` of layer l + 1), so
layer l + 1 works on step t − 1 while layer l works on step t; the handshakes couple the stages (a layer
emits its step's spikes only when the next layer is ready to take them). Samples are *not* overlapped: a
new sample is accepted once every result of the previous one has been delivered. :attr:`cycles_per_sample`
gives the exact cycle count of that schedule (streams never stalling).
"""

import dataclasses

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .encoder import ENCODERS, SpikeEncoder
from .fixed import shape
from .layer import NEURONS, LayerEngine, default_memory
from .loss import LossUnit
from .prng import Xorshift32

__all__ = ["Network", "Schedule"]

_MAX_LAYERS = 64


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Cycle numbers of one sample, relative to the cycle its ``x`` transfer happens in (cycle 0)."""

    #: per layer, per step t: the cycle the layer accepts step t's input spikes
    accept: tuple
    #: per hidden layer: the cycle its last count transfers on ``counts[l]``
    counts_done: tuple
    #: the cycle the ``last`` transfer (ΔL_sum, dl, g) happens on ``o``
    loss_done: int
    #: cycles from one ``x`` transfer to the next, back to back (= max(all done) + 1)
    period: int


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class Network(wiring.Component):
    """L chained layer engines with the input encoders, the noise PRNG lanes and the loss unit.

    Parameters (keyword-only): ``arch`` (n_0, n_1, …, n_L; at least one layer), ``lanes`` (synapse lanes per
    engine; layer l uses min(lanes, n_l + 1)), ``formats`` (:class:`~loco_fpga.qformat.Formats`),
    ``encoder`` (``"deterministic"``/``"bernoulli"``), ``threshold`` θ (membrane LSBs), ``neuron``
    (``"if"``/``"lif"``), ``leak_shift`` (LIF), ``memory`` (hook, :func:`.layer.default_memory`).
    :meth:`from_config` derives them from a config.

    Ports:
        x (In stream of :attr:`sample_layout` = {x: n_0 × input format, label: range(n_L), lr: lr format}):
            one transfer per sample; accepted only when the previous sample is completely delivered.
        counts (Out, array of L − 1 streams of the hidden engines' :attr:`LayerEngine.result_layout`
            {count, count_noisy: rate format, last}; absent when L = 1): counts[l] carries layer l + 1's
            clean and noisy spike counts, n_{l+1} transfers per sample in neuron order.
        o (Out stream of :attr:`output_layout` = {y, y_noisy, dy: out format, dl_sum, dl, g, last}): n_L
            transfers per sample, output k in order; the ``last`` one also carries ΔL_sum, dl and g (zero on
            the others), as :class:`~.loss.LossUnit` does.
        w_en, w_layer, w_addr, w_data (In; w_data = :attr:`word_layout`, max lanes weights): weight write
            into layer ``w_layer``'s engine at its word address (``LayerEngine`` memory map; a layer with
            fewer lanes uses the first ones). Only between samples.
        seed_en, seed_lane, seed (In): load a PRNG lane's state: lane l < L is (NOISE, l); lane L + i is
            (ENCODER, i) (Bernoulli only). Only between samples. The host writes
            ``golden_model.prng.seed_state(seed, stream, index)`` into every lane before the first sample.
    """

    def __init__(self, *, arch, lanes: int, formats: Formats, encoder: str = "deterministic",
                 threshold: int = 1, neuron: str = "if", leak_shift: int = 0, memory=default_memory):
        if (not isinstance(arch, (tuple, list)) or not 2 <= len(arch) <= _MAX_LAYERS + 1
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in arch)):
            raise ValueError(f"arch = {arch!r}: expected a sequence of 2 … {_MAX_LAYERS + 1} positive integers")
        _check_int("lanes", lanes, 1, 1 << 16)
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder = {encoder!r}: expected one of {', '.join(ENCODERS)}")
        if neuron not in NEURONS:
            raise ValueError(f"neuron = {neuron!r}: expected one of {', '.join(NEURONS)}")
        self._arch, self._lanes, self._formats = tuple(arch), lanes, formats
        self._encoder, self._threshold, self._neuron = encoder, threshold, neuron
        self._leak_shift, self._memory = leak_shift, memory
        n_layers = len(arch) - 1
        # The engines validate the per-layer parameters (their errors quote the value).
        self._engines = [LayerEngine(n_in=arch[l], n_out=arch[l + 1], lanes=min(lanes, arch[l] + 1),
                                     formats=formats, threshold=threshold, neuron=neuron, leak_shift=leak_shift,
                                     output=l == n_layers - 1, memory=memory) for l in range(n_layers)]
        self._encoders = [SpikeEncoder(input_format=formats.input, steps=1 << formats.log2_steps,
                                       encoder=encoder) for _ in range(arch[0])]
        self._loss = LossUnit(formats=formats, n_out=arch[-1])
        out = shape(formats.out)
        self._sample_layout = data.StructLayout({"x": data.ArrayLayout(shape(formats.input), arch[0]),
                                                 "label": range(arch[-1]), "lr": shape(formats.lr)})
        lo = self._loss.output_layout
        self._output_layout = data.StructLayout({"y": out, "y_noisy": out, "dy": out, "dl_sum": lo["dl_sum"].shape,
                                                 "dl": shape(formats.dl), "g": shape(formats.g), "last": 1})
        self._word_layout = data.ArrayLayout(shape(formats.weight), max(e.lanes for e in self._engines))
        self._seed_lanes = n_layers + (arch[0] if encoder == "bernoulli" else 0)
        members = {
            "x": In(stream.Signature(self._sample_layout)),
            "o": Out(stream.Signature(self._output_layout)),
            "w_en": In(1),
            "w_layer": In(range(n_layers)),
            "w_addr": In(range(max(e.weight_depth for e in self._engines))),
            "w_data": In(self._word_layout),
            "seed_en": In(1),
            "seed_lane": In(range(self._seed_lanes)),
            "seed": In(32),
        }
        if n_layers > 1:
            members["counts"] = Out(stream.Signature(self._engines[0].result_layout)).array(n_layers - 1)
        super().__init__(members)

    @classmethod
    def from_config(cls, config, *, lanes: int, memory=default_memory) -> "Network":
        """The datapath of ``config``'s network (widths, Q formats, T, encoder, neuron, θ, leak)."""
        from loco_fpga.qformat import formats  # noqa: PLC0415

        fm = formats(config)
        spk = config.spiking
        lif = spk.neuron == "lif"
        return cls(arch=tuple(config.network.arch), lanes=lanes, formats=fm, encoder=spk.encoder,
                   threshold=fm.membrane.from_float(spk.threshold), neuron=spk.neuron,
                   leak_shift=spk.leak_shift if lif else 0, memory=memory)

    arch = property(lambda self: self._arch)
    lanes = property(lambda self: self._lanes)
    formats = property(lambda self: self._formats)
    encoder = property(lambda self: self._encoder)
    n_layers = property(lambda self: len(self._arch) - 1)
    steps = property(lambda self: 1 << self._formats.log2_steps)
    #: the engines, layer order (read-only list copy): their ``lanes``, ``chunks``, ``weight_depth``
    engines = property(lambda self: list(self._engines))
    sample_layout = property(lambda self: self._sample_layout)
    output_layout = property(lambda self: self._output_layout)
    counts_layout = property(lambda self: self._engines[0].result_layout)
    word_layout = property(lambda self: self._word_layout)
    #: number of PRNG lanes behind ``seed_lane``: L noise lanes (+ n_0 encoder lanes, Bernoulli)
    seed_lanes = property(lambda self: self._seed_lanes)

    def schedule(self) -> Schedule:
        """The exact cycle schedule of one sample with every stream always valid/ready (a max-plus
        recurrence over the engines' FSMs: INPUT accept → n_out·C RUN → DRAIN → EMIT [hidden] → INPUT)."""
        engines, steps = self._engines, self.steps
        n_layers = len(engines)
        accept = [[0] * steps for _ in engines]
        ready = [1 + e.noise_words for e in engines]     # first INPUT cycle: after the noise words
        for t in range(steps):
            for l, e in enumerate(engines):
                # layer 0: the encoders have step t's spikes by then; layer l > 0: the EMIT of layer l − 1
                # transfers when both sides are there
                avail = ready[l] if l == 0 else accept[l - 1][t] + engines[l - 1].accumulate_cycles + 2
                accept[l][t] = max(ready[l], avail)
            for l, e in enumerate(engines):
                if e.output:
                    ready[l] = accept[l][t] + e.accumulate_cycles + 2
                else:
                    # EMIT transfers in the cycle layer l + 1 accepts
                    ready[l] = accept[l + 1][t] + 1
        counts_done = tuple(accept[l + 1][steps - 1] + 2 * engines[l].n_out for l in range(n_layers - 1))
        out = engines[-1]
        last_result = accept[-1][steps - 1] + out.accumulate_cycles + 3 + 2 * (out.n_out - 1)
        loss_done = last_result + self._loss.final_latency
        return Schedule(tuple(tuple(a) for a in accept), counts_done, loss_done,
                        max((loss_done,) + counts_done) + 1)

    @property
    def cycles_per_sample(self) -> int:
        """Cycles from one accepted sample to the next (both passes, all results delivered), streams never
        stalling: :meth:`schedule` ``().period``."""
        return self.schedule().period

    def elaborate(self, platform):
        m = Module()
        engines, n_layers = self._engines, len(self._engines)
        for l, e in enumerate(engines):
            m.submodules[f"layer{l}"] = e
        for i, enc in enumerate(self._encoders):
            m.submodules[f"encoder{i}"] = enc
        m.submodules.loss = loss = self._loss

        # -- sample sequencing: one sample in flight --------------------------------------------------
        busy = Signal()
        label = Signal.like(self.x.payload.label)
        lr = Signal.like(self.x.payload.lr)
        start = Signal()
        m.d.comb += [self.x.ready.eq(~busy), start.eq(self.x.valid & ~busy)]
        for i, enc in enumerate(self._encoders):
            # the encoders are idle whenever the network is (they finish before the loss unit does)
            m.d.comb += [enc.i.valid.eq(start), enc.i.payload.x.eq(self.x.payload.x[i])]
        with m.If(start):
            m.d.sync += [busy.eq(1), label.eq(self.x.payload.label), lr.eq(self.x.payload.lr)]

        # -- PRNG lanes: noise per layer, seeds through one port ----------------------------------------
        for l, e in enumerate(engines):
            m.submodules[f"noise{l}"] = lane = Xorshift32()
            left = Signal(range(e.noise_words + 1), init=0)     # words still to give this sample
            m.d.comb += [lane.seed.eq(self.seed), lane.load.eq(self.seed_en & (self.seed_lane == l)),
                         e.noise.valid.eq(left != 0), e.noise.payload.word.eq(lane.word),
                         lane.en.eq(e.noise.valid & e.noise.ready)]
            with m.If(e.noise.valid & e.noise.ready):
                m.d.sync += left.eq(left - 1)
            with m.If(start):
                m.d.sync += left.eq(e.noise_words)
        if self._encoder == "bernoulli":
            for i, enc in enumerate(self._encoders):
                m.d.comb += [enc.seed.eq(self.seed), enc.load.eq(self.seed_en & (self.seed_lane == n_layers + i))]

        # -- weights ----------------------------------------------------------------------------------
        for l, e in enumerate(engines):
            m.d.comb += [e.w_en.eq(self.w_en & (self.w_layer == l)), e.w_addr.eq(self.w_addr),
                         e.w_data.eq(Cat(*(self.w_data[k] for k in range(e.lanes))))]

        # -- spikes: encoders → layer 0 → … → layer L − 1 ------------------------------------------------
        all_valid = Signal()
        m.d.comb += all_valid.eq(Cat(*(enc.o.valid for enc in self._encoders)).all())
        spikes = Cat(*(enc.o.payload.spike for enc in self._encoders))
        first = engines[0]
        m.d.comb += [first.i.valid.eq(all_valid), first.i.payload.clean.eq(spikes),
                     first.i.payload.noisy.eq(spikes)]
        for enc in self._encoders:
            m.d.comb += enc.o.ready.eq(first.i.ready & all_valid)
        for l in range(n_layers - 1):
            wiring.connect(m, engines[l].o, engines[l + 1].i)

        # -- results ------------------------------------------------------------------------------------
        done = []
        for l in range(n_layers - 1):
            wiring.connect(m, engines[l].r, wiring.flipped(self.counts[l]))
            done.append(self.counts[l].valid & self.counts[l].ready & self.counts[l].payload.last)
        out = engines[-1]
        y, y_noisy = Signal.like(out.r.payload.y), Signal.like(out.r.payload.y_noisy)
        m.d.comb += [loss.i.payload.eq(out.r.payload), loss.i.valid.eq(out.r.valid), out.r.ready.eq(loss.i.ready),
                     loss.label.eq(label), loss.lr.eq(lr)]
        with m.If(loss.i.valid & loss.i.ready):     # Δy_k leaves the loss unit after its y_k entered it
            m.d.sync += [y.eq(out.r.payload.y), y_noisy.eq(out.r.payload.y_noisy)]
        lp = loss.o.payload
        m.d.comb += [self.o.valid.eq(loss.o.valid), loss.o.ready.eq(self.o.ready),
                     self.o.payload.y.eq(y), self.o.payload.y_noisy.eq(y_noisy), self.o.payload.dy.eq(lp.dy),
                     self.o.payload.dl_sum.eq(lp.dl_sum), self.o.payload.dl.eq(lp.dl), self.o.payload.g.eq(lp.g),
                     self.o.payload.last.eq(lp.last)]
        done.append(self.o.valid & self.o.ready & self.o.payload.last)

        # the sample is over when every result stream has delivered its last transfer
        seen = Signal(len(done))
        now = Cat(*done)
        with m.If(busy & ((seen | now) == (1 << len(done)) - 1)):
            m.d.sync += [busy.eq(0), seen.eq(0)]
        with m.Else():
            m.d.sync += seen.eq(seen | now)
        return m
