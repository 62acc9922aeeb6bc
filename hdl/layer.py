"""Layer engine — one layer of ``FixedNetwork.run`` (golden_model/fixed.py, step 3), both passes at once.

For each time step t and each neuron i (in index order), with the layer's input spike vectors s (clean) and
s̃ (noisy) of step t and the bias input fixed at 1:

* A = Σ_j W_ij s_j + b_i and Ã = Σ_j W_ij s̃_j + b_i from the **same** weight reads (two accumulators);
  the sums are exact (the accumulator is wide enough for n_in + 1 weights);
* I = sat_acc(A), Ĩ = sat_acc(Ã ± σ_q) with σ_q = 2^(wf − sigma_shift) and the sign from the noise bits
  (1 → +σ): neuron i takes bit i mod 32 of noise word ⌊i/32⌋ (PRNG lane (NOISE, l), golden_model/prng.py);
* hidden: V ← sat_membrane(V − (V >> k)·[LIF] + I); s = V ≥ θ; V ← V − θ·s; count += s (each pass);
* output: Y += I (exact, acc_bits + log2 T bits), and after T steps y = sat_out((Y + T/2) >> log2 T) (the state
  memory holds Y + T/2: the rounding increment is Y's start value).

Membranes and counts start at 0 every sample (the first step ignores the stored state instead of clearing
the memory). Weights live in a memory of n_out·C words of ``lanes`` weights (C = ⌈(n_in + 1)/lanes⌉ chunks
per row; word i·C + c holds W[i, c·lanes … c·lanes + lanes − 1], the bias is column n_in, padding columns
are ignored). One word is read per cycle, so a time step takes n_out·C cycles of accumulation plus a fixed
overhead (:attr:`cycles_per_step`).

**Pipeline** (:attr:`stages`; one weight word enters per cycle, neurons follow each other without bubbles). In the
cycle a word is addressed, its chunk's input bits are selected and registered; the next cycle both accumulators add
the word as the memory delivers it. With :attr:`fold` (whenever sat_acc cannot saturate: every |A ± σ| fits the acc
format, as in every preset) a neuron's first chunk starts them from its stored state — V − leak and Ṽ − leak, or Y
and Ỹ, the word addressed with the neuron's first chunk — so the state's adders *are* the accumulators: then 2.
hidden: sat_membrane(· ± σ) registered; output: Y and Ỹ ± σ written; 3. hidden: compare θ, soft reset, count,
written, the spike bits shift in. Without ``fold`` the sums start from 0 (Ã from ±σ) and 2. the state word arrives
and V − leak + sat_acc(A) (or Y + sat_acc(A)) is registered, 3. saturated (output: written), 4. hidden: θ, written.
A neuron's state is read and written once per step and the step's last write happens before the next step's first
read (the engine drains its pipeline before EMIT), so no forwarding is needed. The results are read ahead and
registered (narrowed) before they are offered on ``r``.
"""

import functools
import math

import numpy as np

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import at_least, narrow, saturate, shape

__all__ = ["NEURONS", "LayerEngine", "default_memory", "COLLISION_FREE", "row_sum_bound"]

#: neuron models, spelled as in ``[spiking] neuron``
NEURONS = ("if", "lif")
_MAX_WIDTH = 1 << 16
_MAX_STEPS = 4096


#: attribute of a memory whose read data is never used in a cycle that writes the read address (proved where
#: it is set). An Amaranth read port returns the old word on such a collision; block RAMs without that mode get
#: a bypass register and multiplexer per data bit to emulate it (on iCE40, ~700 logic cells for the accelerator).
#: ``loco-fpga build`` lets Yosys drop the emulation for memories with this attribute (``COLLISION_X_MASK``):
#: the simulation's old word and the hardware's undefined one then differ only in data nobody uses.
COLLISION_FREE = {"loco_collision_free": 1}

#: attribute of a memory that goes into block RAM (Yosys' ``ram_style``): ECP5 would otherwise put a small memory
#: into LUT RAM, each DPR16X4 cell taking 6 logic-cell positions; iCE40 has no LUT RAM (no change there)
BLOCK_RAM = {"ram_style": "block"}


def default_memory(*, shape, depth: int, name: str):
    """The memory hook's default: an ``amaranth.lib.memory.Memory`` (inferred as block RAM).

    A hook is any callable with this signature returning an object with ``read_port(domain="sync")``
    (one cycle read latency) and ``write_port()``, as ``lib.memory.Memory`` has; a board can return a
    wrapper around its EBR/SPRAM primitives instead. ``name`` is ``"weights"`` or ``"state"``.
    """
    return memory.Memory(shape=shape, depth=depth, init=[])


def row_sum_bound(width: int, formats: Formats, perturb: bool = True) -> int:
    """The largest |A ± σ| of a row of ``width`` weights (σ = 2^(wf − sigma_shift) LSBs; 0 without ``perturb``):
    where it fits the acc format, no per-step sum saturates (the layer engine's ``fold``, the micro block's readout)."""
    sigma = (1 << (formats.weight.frac - formats.sigma_shift)) if perturb else 0
    return width * (1 << (formats.weight.bits - 1)) + sigma


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class LayerEngine(wiring.Component):
    """One layer, time-multiplexed over its neurons, with ``lanes`` synapses per cycle.

    Parameters (keyword-only): ``n_in``, ``n_out`` (layer widths), ``lanes`` (1 … n_in + 1), ``formats``
    (:class:`~loco_fpga.qformat.Formats` of the config: weight, acc, membrane, out, rate, log2 T, σ),
    ``threshold`` θ in membrane LSBs (hidden layers), ``neuron`` (``"if"``/``"lif"``), ``leak_shift`` k
    (LIF), ``output`` (True: the network's output layer — no spiking, y at the end), ``memory`` (hook, see
    :func:`default_memory`), ``perturb`` (False: the noisy column gets ξ = 0 — the delta readout's unperturbed
    output layer; the noise words are still taken), ``held_noise`` (True, n_out ≤ 32 only: the noise word is not
    copied — the engine uses ``noise_state``, the lane's state, which *is* the word drawn until the lane's next
    draw; the network draws once per sample and never before the update is done, so it is the same word; saves
    n_out flip-flops that cannot share a logic cell on iCE40), ``sparse`` (True: each step first lists its *active*
    chunks — chunks 0 … C − 2 with a clean or noisy input spike — and every neuron then reads only their weight
    words and the last chunk's (the bias's): the sums are the same, since a silent input adds 0, and a step takes
    n_out·(a + 1) weight reads for a active chunks instead of n_out·C, :meth:`step_cycles`), ``hold_input`` (True: the
    input spikes are not copied — the engine works on ``i.payload`` and takes the transfer only when it is done with
    them, so the producer holds them for the whole step and cannot work on its next step meanwhile; saves 2·(n_in + 1)
    flip-flops, on iCE40 logic cells of their own), ``fold`` (None: True exactly where sat_acc can never saturate —
    every |A ± σ| of a row fits the acc format —, then the accumulators start from the stored state and a step takes
    one stage less; False: the state is added after sat_acc, as it must be where sat_acc can saturate; True where it
    can: a ValueError), ``input_memory`` (with ``hold_input``, ``lanes`` = 1, not ``sparse``: input c is read from the
    producer's memory — ``in_addr`` (Out) at stage 0, ``in_bit`` (In) a cycle later, as
    ``EncoderBank(spike_memory=True)`` has it — instead of ``i.payload``, whose bits both passes then share; the
    bias is 1 here. No n_in-way selection; the same cycles).
    :meth:`from_config` derives all of them from a config and a layer index.

    Ports:
        noise (In stream {word: 32}): ⌈n_out/32⌉ PRNG words at the start of every sample (the layer's
            NOISE lane, in draw order).
        noise_state (In 32; ``held_noise`` only): the lane's state, used as the word from the draw on.
        i (In stream of :attr:`spikes_in_layout` = {clean: n_in, noisy: n_in}): T transfers per sample, one
            per step; bit j is input j. ``hold_input``: the step starts in the cycle ``i.valid`` is seen (where it
            would otherwise transfer), the payload must stay until the transfer, :meth:`step_latency` − 1 cycles
            later (in the cycle of the step's last state write).
        o (Out stream of :attr:`spikes_out_layout` = {clean: n_out, noisy: n_out}; hidden layers only): T
            transfers per sample, the layer's spikes of each step (bit i is neuron i).
        r (Out stream of :attr:`result_layout`): n_out transfers at the end of a sample, neuron order,
            ``last`` on the final one. Hidden: {count, count_noisy: rate format}; output: {y, y_noisy: out
            format} — the layout the loss unit takes.
        w_en, w_addr, w_data (In; w_data is ``lanes`` weights): weight writes, word address i·C + c; only
            between samples (while the engine waits for noise words).

    Timing: with the streams never stalling, one step takes exactly :attr:`cycles_per_step` cycles,
    of which n_out·C (:attr:`accumulate_cycles`) read weights; see :attr:`cycles_per_sample`.
    """

    def __init__(self, *, n_in: int, n_out: int, lanes: int, formats: Formats, threshold: int = 1,
                 neuron: str = "if", leak_shift: int = 0, output: bool = False, memory=default_memory,
                 update_port: bool = False, perturb: bool = True, held_noise: bool = False, sparse: bool = False,
                 hold_input: bool = False, fold: bool | None = None, input_memory: bool = False):
        _check_int("n_in", n_in, 1, _MAX_WIDTH)
        _check_int("n_out", n_out, 1, _MAX_WIDTH)
        _check_int("lanes", lanes, 1, n_in + 1)
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if neuron not in NEURONS:
            raise ValueError(f"neuron = {neuron!r}: expected one of {', '.join(NEURONS)}")
        if neuron == "lif":
            _check_int("leak_shift", leak_shift, 1, formats.membrane.bits)
        elif leak_shift != 0:
            raise ValueError(f"leak_shift = {leak_shift!r}: must be 0 for neuron = 'if'")
        if not isinstance(output, bool):
            raise ValueError(f"output = {output!r}: must be True or False")
        if not output:
            _check_int("threshold", threshold, 1, formats.membrane.max)
        if not 0 <= formats.log2_steps <= math.log2(_MAX_STEPS):
            raise ValueError(f"formats.log2_steps = {formats.log2_steps!r}: T must be 1 … {_MAX_STEPS}")
        wf = formats.weight.frac
        if not (formats.acc.frac == formats.membrane.frac == formats.out.frac == wf):
            raise ValueError(f"formats.acc = {formats.acc.label()}: acc, membrane and out must have the weight "
                             f"format's {wf} fraction bits")
        if not 0 <= formats.sigma_shift <= wf:
            raise ValueError(f"formats.sigma_shift = {formats.sigma_shift!r}: σ = 2^-s must be at least one "
                             f"weight LSB (0 ≤ s ≤ {wf})")
        if not callable(memory):
            raise TypeError(f"memory = {memory!r}: expected a callable (shape=, depth=, name=) -> Memory")
        if not isinstance(update_port, bool):
            raise ValueError(f"update_port = {update_port!r}: must be True or False")
        if not isinstance(perturb, bool):
            raise ValueError(f"perturb = {perturb!r}: must be True or False")
        self._perturb = perturb
        if not isinstance(held_noise, bool):
            raise ValueError(f"held_noise = {held_noise!r}: must be True or False")
        if held_noise and n_out > 32:
            raise ValueError(f"held_noise = True: n_out = {n_out} needs {-(-n_out // 32)} noise words; a held lane "
                             "state is one (n_out ≤ 32)")
        self._held_noise = held_noise
        if not isinstance(sparse, bool):
            raise ValueError(f"sparse = {sparse!r}: must be True or False")
        self._sparse = sparse
        if not isinstance(hold_input, bool):
            raise ValueError(f"hold_input = {hold_input!r}: must be True or False")
        self._hold_input = hold_input
        if not isinstance(input_memory, bool):
            raise ValueError(f"input_memory = {input_memory!r}: must be True or False")
        if input_memory and not (hold_input and lanes == 1 and not sparse):
            raise ValueError("input_memory = True: the inputs are read one a cycle from the producer's memory while "
                             "the engine holds the step (hold_input, lanes = 1, not sparse)")
        self._input_memory = input_memory
        self._update_port = update_port
        self._n_in, self._n_out, self._lanes = n_in, n_out, lanes
        self._formats, self._threshold = formats, threshold
        self._neuron, self._leak_shift, self._output = neuron, leak_shift if neuron == "lif" else 0, output
        self._memory = memory
        self._chunks = -(-(n_in + 1) // lanes)
        # σ_q in weight LSBs; perturb = False: ξ = 0 (the noise words are still drawn)
        self._sigma = (1 << (wf - formats.sigma_shift)) if perturb else 0
        #: the largest |A ± σ|: a row of C·lanes weights, the noisy sum with σ
        self._acc_bound = row_sum_bound(self._chunks * lanes, formats, perturb)
        exact = self._acc_bound <= formats.acc.max
        if fold is None:
            fold = exact
        elif not isinstance(fold, bool) or (fold and not exact):
            raise ValueError(f"fold = {fold!r}: must be None, False, or True where sat_acc never saturates (a row's "
                             f"|A ± σ| ≤ {self._acc_bound} > acc max {formats.acc.max} here)")
        self._fold = fold
        self._noise_words = -(-n_out // 32)
        self._spikes_in_layout = data.StructLayout({"clean": unsigned(n_in), "noisy": unsigned(n_in)})
        self._spikes_out_layout = data.StructLayout({"clean": unsigned(n_out), "noisy": unsigned(n_out)})
        if output:
            self._result_layout = data.StructLayout({"y": shape(formats.out), "y_noisy": shape(formats.out),
                                                     "last": 1})
        else:
            self._result_layout = data.StructLayout({"count": shape(formats.rate),
                                                     "count_noisy": shape(formats.rate), "last": 1})
        self._word_layout = data.ArrayLayout(shape(formats.weight), lanes)
        members = {
            "noise": In(stream.Signature(data.StructLayout({"word": unsigned(32)}))),
            "i": In(stream.Signature(self._spikes_in_layout)),
            "r": Out(stream.Signature(self._result_layout)),
            "w_en": In(1),
            "w_addr": In(range(self.weight_depth)),
            "w_data": In(self._word_layout),
        }
        if held_noise:
            members["noise_state"] = In(32)
        if input_memory:
            members.update(in_addr=Out(range(n_in)), in_bit=In(1))
        if not output:
            members["o"] = Out(stream.Signature(self._spikes_out_layout))
        if update_port:
            members.update(u_en=In(1), u_addr=In(range(self.weight_depth)), u_data=Out(self._word_layout),
                           signs=Out(n_out), active=Out(n_out))
        super().__init__(members)

    @classmethod
    def from_config(cls, config, layer: int, *, lanes: int, memory=default_memory,
                    update_port: bool = False, sparse: bool = False, hold_input: bool = False,
                    fold: bool | None = None) -> "LayerEngine":
        """The engine of layer ``layer`` (0-based, weights W_layer) of ``config``'s network."""
        from loco_fpga.qformat import formats  # noqa: PLC0415

        arch = config.network.arch
        _check_int("layer", layer, 0, len(arch) - 2)
        fm = formats(config)
        spk = config.spiking
        lif = spk.neuron == "lif"
        return cls(n_in=arch[layer], n_out=arch[layer + 1], lanes=lanes, formats=fm,
                   threshold=fm.membrane.from_float(spk.threshold), neuron=spk.neuron,
                   leak_shift=spk.leak_shift if lif else 0, output=layer == len(arch) - 2, memory=memory,
                   update_port=update_port, sparse=sparse, hold_input=hold_input, fold=fold)

    n_in = property(lambda self: self._n_in)
    n_out = property(lambda self: self._n_out)
    lanes = property(lambda self: self._lanes)
    formats = property(lambda self: self._formats)
    threshold = property(lambda self: self._threshold)
    neuron = property(lambda self: self._neuron)
    leak_shift = property(lambda self: self._leak_shift)
    output = property(lambda self: self._output)
    update_port = property(lambda self: self._update_port)
    steps = property(lambda self: 1 << self._formats.log2_steps)
    #: weight words per neuron row, ⌈(n_in + 1)/lanes⌉
    chunks = property(lambda self: self._chunks)
    weight_depth = property(lambda self: self._n_out * self._chunks)
    noise_words = property(lambda self: self._noise_words)
    held_noise = property(lambda self: self._held_noise)
    #: whether a step reads only the weight words of its active chunks (see :meth:`step_cycles`)
    sparse = property(lambda self: self._sparse)
    #: whether the accumulators start from the stored state (see ``fold``)
    fold = property(lambda self: self._fold)
    #: whether the engine works on ``i.payload`` instead of a copy (see ``hold_input``)
    hold_input = property(lambda self: self._hold_input)
    #: whether the engine reads its inputs from the producer's memory (``in_addr``/``in_bit``; ``input_memory``)
    input_memory = property(lambda self: self._input_memory)
    spikes_in_layout = property(lambda self: self._spikes_in_layout)
    spikes_out_layout = property(lambda self: self._spikes_out_layout)
    result_layout = property(lambda self: self._result_layout)
    word_layout = property(lambda self: self._word_layout)

    @property
    def accumulate_cycles(self) -> int:
        """Weight-read cycles per step: n_out·⌈(n_in + 1)/lanes⌉ (the SPEC §7 bound for this ``lanes``)."""
        return self._n_out * self._chunks

    @property
    def stages(self) -> int:
        """Pipeline stages from a weight-word address to the neuron's state write. :attr:`fold`: 1 (the word is read
        and added onto the stored state as it arrives) + 1 (σ; output: Y written here; hidden: V saturated) [+ 1
        (compare θ, soft reset, count, written here), hidden]. Else: 1 (read and added onto 0, or ±σ) + 1 (the state
        word arrives and is added) + 1 (hidden: saturated; output: written here) [+ 1 (θ, written), hidden]."""
        return (2 if self._output else 3) + (0 if self._fold else 1)

    @property
    def cycles_per_step(self) -> int:
        """Cycles from accepting step t's spikes to accepting step t + 1's, streams never stalling:
        1 (accept) + n_out·C (weight reads) + :attr:`stages` (the last neuron's pipeline drains)
        [+ 1 (emit spikes), hidden]. ``sparse``: :meth:`step_cycles` with every chunk active (the most)."""
        return self.step_cycles()

    def step_cycles(self, active: int | None = None) -> int:
        """:attr:`cycles_per_step` of a step with ``active`` of the chunks 0 … C − 2 active (``sparse``; default:
        all): 1 (accept) + C − 1 (the scan that lists them) + n_out·(active + 1) (weight reads) + 1 (the list
        read before each weight read) + :attr:`stages` [+ 1 (emit), hidden]. Without ``sparse``: the dense step,
        whatever ``active``."""
        return 1 + self._reads(active) + self.stages + (0 if self._output else 1)

    def step_latency(self, active: int | None = None) -> int:
        """:attr:`latency` of a step with ``active`` active chunks (``sparse``; default: all)."""
        return self._reads(active) + self.stages + 1

    def _reads(self, active):
        """Cycles from the accept to the last weight read's address, minus 1 (dense: n_out·C)."""
        if not self._sparse:
            return self.accumulate_cycles
        most = self._chunks - 1
        active = most if active is None else active
        _check_int("active", active, 0, most)
        return most + self._n_out * (active + 1) + 1

    @property
    def result_cycles(self) -> int:
        """Cycles of the result phase, ``r`` always ready: 1 (first state read) + 2 per result (the registered,
        narrowed state word, then the transfer, while the next word is read)."""
        return 1 + 2 * self._n_out

    @property
    def cycles_per_sample(self) -> int:
        """Cycles per sample, streams never stalling: noise words, T steps, the results."""
        return self._noise_words + self.steps * self.cycles_per_step + self.result_cycles

    @property
    def latency(self) -> int:
        """Cycles from accepting a step's spikes on ``i`` to its spikes being valid on ``o`` (hidden; ``sparse``:
        every chunk active, :meth:`step_latency`)."""
        return self.step_latency()

    def active_chunks(self, clean, noisy=None) -> int:
        """How many of the chunks 0 … C − 2 hold a spike of the 0/1 input vectors ``clean`` (and ``noisy``)."""
        spikes = np.asarray(clean, dtype=bool) | (np.asarray(noisy, dtype=bool) if noisy is not None else False)
        pad = np.zeros(self._chunks * self._lanes, dtype=bool)
        pad[:self._n_in] = spikes
        return int(pad.reshape(self._chunks, self._lanes)[:-1].any(axis=1).sum())

    def elaborate(self, platform):
        m = Module()
        fm = self._formats
        n_in, n_out, lanes, chunks = self._n_in, self._n_out, self._lanes, self._chunks
        wf = fm.weight.frac
        log2t = fm.log2_steps
        sigma = self._sigma
        # the sums are exact: a row of chunks·lanes weights, the noisy one starting from ±σ
        acc_bound = self._acc_bound
        acc_shape = signed(max(fm.weight.bits + max(1, math.ceil(math.log2(chunks * lanes))) + 1,
                               acc_bound.bit_length() + 1))
        if self._output:
            y_shape = signed(fm.acc.bits + log2t + 1)
            state_layout = data.StructLayout({"y": y_shape, "y_noisy": y_shape})
        else:
            state_layout = data.StructLayout({"v": shape(fm.membrane), "v_noisy": shape(fm.membrane),
                                              "count": shape(fm.rate), "count_noisy": shape(fm.rate)})

        m.submodules.weights = wmem = self._memory(shape=self._word_layout, depth=self.weight_depth,
                                                   name="weights")
        if isinstance(wmem, memory.Memory):
            # collision-free: the engine's own reads (RUN) happen while a sample is in the layers, the writes
            # (``w_en``) only between samples. Between samples the port reads for an update engine or the host
            # (``u_en``): an update sweep reads each word once and writes it back stages later, at a trailing
            # address (a read in the write's cycle is another word's, or past the sweep's end and unused), and a
            # host write's cycle reads nothing the host uses (its read-back is a later request)
            wmem.attrs.update(COLLISION_FREE)
        m.submodules.state = smem = self._memory(shape=state_layout, depth=n_out, name="state")
        if isinstance(smem, memory.Memory):
            # collision-free: the state word of neuron n is read (fold: addressed with its first chunk's word; else
            # with its last chunk's, a stage later) before its write (stages later); the write in such a cycle is an
            # earlier neuron's. In DRAIN the read address rests on the last neuron while it is written, but that
            # read's data is never used (no word is valid). The pipeline drains before the next step, and the result
            # phase (READ … RESULT) writes nothing
            smem.attrs.update(COLLISION_FREE)
        w_rd, w_wr = wmem.read_port(domain="sync"), wmem.write_port()
        s_rd, s_wr = smem.read_port(domain="sync"), smem.write_port()
        m.d.comb += [w_wr.en.eq(self.w_en), w_wr.addr.eq(self.w_addr), w_wr.data.eq(self.w_data)]

        # -- control state ------------------------------------------------------------------------------
        signs = self.noise_state if self._held_noise else Signal(32 * self._noise_words)
        word_no = Signal(range(self._noise_words + 1))
        pad = chunks * lanes
        clean_in = Signal(pad)                         # the step's inputs, bias bit set, padding zero
        noisy_in = Signal(pad)
        step = Signal(range(self.steps))
        first_step = Signal()
        neuron = Signal(range(n_out))
        chunk = Signal(range(chunks))
        spikes_c = Signal(n_out)
        spikes_n = Signal(n_out)

        # -- the pipeline: one weight word enters per RUN cycle; per-word tags travel with it ----------
        # stage 0: the word is addressed (RUN), its chunk's input bits selected and registered
        # stage 1: the word arrives and the accumulators add it (a neuron's first chunk: onto the stored state with
        #          ``fold``, else onto 0 or ±σ)
        # fold:  stage 2: hidden: V1 = sat_membrane(A + Ṽ… ± σ) registered; output: Y, Ỹ (+ σ) written
        #        stage 3 (hidden): s = V1 ≥ θ, V = V1 − θ·s, count += s written; the spike bits shift in
        # else:  stage 2: the state word arrives, V − leak + sat_acc(A) (output: Y + sat_acc(A)) registered
        #        stage 3: hidden: V1 saturated and registered; output: Y written; stage 4 (hidden): as fold's 3
        tag = data.StructLayout({"valid": 1, "neuron": range(n_out), "first": 1, "last": 1})
        t1 = Signal(tag)
        waddr = Signal(range(self.weight_depth))       # neuron·C + chunk, counted (no address multiplier)
        m.d.comb += [w_rd.addr.eq(waddr), w_rd.en.eq(1), s_rd.en.eq(1)]
        m.d.sync += t1.valid.eq(0)
        sparse = self._sparse
        if sparse:
            # stage 0 (sparse): RUN reads list entry e of the neuron (or, after the last entry, takes the bias's
            # chunk C − 1); the next cycle addresses its weight word, row base + chunk
            count = Signal(range(chunks))              # active chunks of the step (0 … C − 2)
            entry = Signal(range(chunks))
            row_base = Signal(range(self.weight_depth))
            t0 = Signal(data.StructLayout({"valid": 1, "neuron": range(n_out), "first": 1, "last": 1,
                                           "base": range(self.weight_depth)}))
            m.d.sync += t0.valid.eq(0)
            listed = Signal(range(chunks))
            if chunks > 1:
                # collision-free: written in SCAN only, read in RUN only; a block RAM (Yosys would use flip-flops)
                m.submodules.active = amem = memory.Memory(shape=range(chunks), depth=chunks - 1, init=[],
                                                           attrs=BLOCK_RAM | COLLISION_FREE)
                a_rd, a_wr = amem.read_port(domain="sync"), amem.write_port()
                m.d.comb += [a_rd.addr.eq(entry), a_rd.en.eq(1), a_wr.addr.eq(count), a_wr.data.eq(chunk),
                             listed.eq(Mux(t0.last, chunks - 1, a_rd.data))]
            else:
                m.d.comb += listed.eq(0)
            m.d.comb += w_rd.addr.eq(t0.base + listed)
            with m.If(t0.valid):
                m.d.sync += [t1.valid.eq(1), t1.neuron.eq(t0.neuron), t1.first.eq(t0.first), t1.last.eq(t0.last)]
            n_at, c_at = t0.neuron, listed   # the neuron and the chunk whose word is addressed (stage 0)
        else:
            n_at, c_at = neuron, chunk
        if self._update_port:     # an update engine (or a read-back) reads the weights between samples
            with m.If(self.u_en):
                m.d.comb += w_rd.addr.eq(self.u_addr)
            m.d.comb += [self.u_data.eq(w_rd.data), self.signs.eq(signs[:n_out])]

        fold = self._fold
        old = s_rd.data
        new = Signal(state_layout)
        y_bias = (1 << (log2t - 1)) if log2t else 0   # output: Y starts at T/2 (see below)
        theta, k = self._threshold, self._leak_shift
        if fold:
            # the accumulators start from the stored state (V − leak, or Y), addressed at stage 0: the state's adders
            # are the accumulators. Exact: sat_acc is the identity here (every A ± σ fits the acc format)
            if self._output:
                acc_shape = signed(y_shape.width + 1)
            else:
                acc_shape = signed((fm.membrane.max + 1 + acc_bound).bit_length() + 1)
            bases = []
            for v_old in ((old.y, old.y_noisy) if self._output else (old.v, old.v_noisy)):
                if self._output:
                    bases.append(Mux(first_step, y_bias, v_old))
                else:
                    v0 = Mux(first_step, 0, v_old)
                    bases.append(v0 - (v0 >> k) if k else v0)
        else:
            bases = (0, 0)
        acc_c = Signal(acc_shape)
        acc_n = Signal(acc_shape)
        # the chunk's input bits, selected at stage 0 (with the word's address) and registered: the selection (a
        # multiplexer over the n_in + 1 inputs) and the accumulators are not one path. The word itself is added as
        # the memory delivers it (a register of it would be flip-flops fed by no logic: on iCE40, cells of their own)
        sel_c, sel_n = Signal(lanes), Signal(lanes)
        if self._input_memory:
            # input c from the producer's memory, addressed at stage 0 (its bit arrives now, as a register's would);
            # the bias (c = n_in) is 1. Both passes get the same input spikes
            bias_at = Signal()
            m.d.sync += bias_at.eq(c_at == n_in)
            m.d.comb += [self.in_addr.eq(c_at), sel_c.eq(bias_at | self.in_bit), sel_n.eq(sel_c)]
        else:
            m.d.sync += [sel_c.eq(clean_in.word_select(c_at, lanes)), sel_n.eq(noisy_in.word_select(c_at, lanes))]
        word = w_rd.data
        part_c = functools.reduce(lambda a, b: a + b, [Mux(sel_c[k], word[k], 0) for k in range(lanes)])
        part_n = functools.reduce(lambda a, b: a + b, [Mux(sel_n[k], word[k], 0) for k in range(lanes)])
        # the sign of σ: the neuron's noise bit, registered at stage 0 (without ``fold`` the noisy sum starts from ±σ)
        plus1 = Signal()
        m.d.sync += plus1.eq(signs.bit_select(n_at, 1))
        with m.If(t1.valid):
            m.d.sync += [acc_c.eq(Mux(t1.first, bases[0], acc_c) + part_c),
                         acc_n.eq(Mux(t1.first, bases[1] if fold else Mux(plus1, sigma, -sigma), acc_n) + part_n)]

        # stage 2: the cycle after a neuron's last word was added (acc_c/acc_n hold its sums)
        v3 = Signal()
        n3 = Signal(range(n_out))
        plus3 = Signal()
        m.d.sync += [v3.eq(t1.valid & t1.last), n3.eq(t1.neuron), plus3.eq(plus1)]
        v4 = Signal()
        n4 = Signal(range(n_out))
        m.d.sync += [v4.eq(v3), n4.eq(n3)]
        if fold:
            # the noisy sums get their ±σ here
            sum_c, sum_n = acc_c, acc_n + Mux(plus3, sigma, -sigma)
        else:
            # I = sat_acc(A), Ĩ = sat_acc(Ã ± σ) go straight into the state's adders with the state word (it arrives
            # now), whose sums are registered. (Registers of I and of the state word would be flip-flops fed by no
            # logic: on iCE40, logic cells of their own.)
            cur_c, cur_n = saturate(acc_c, fm.acc), saturate(acc_n, fm.acc)
        if self._output:
            # y = sat_out((Y + T/2) >> log2 T): the half-up increment T/2 is where Y starts (exact: Y has a bit of
            # headroom), so the result needs a shift and a saturation, no rounding adder
            if fold:     # stage 2 writes Y
                m.d.comb += [new.y.eq(sum_c), new.y_noisy.eq(sum_n)]
                v_w, n_w = v3, n3
            else:        # stage 2 adds, stage 3 writes
                m.d.sync += [new.y.eq(Mux(first_step, y_bias, old.y) + cur_c),
                             new.y_noisy.eq(Mux(first_step, y_bias, old.y_noisy) + cur_n)]
                v_w, n_w = v4, n4
            m.d.comb += [s_wr.addr.eq(n_w), s_wr.data.eq(new), s_wr.en.eq(v_w)]
            if self._update_port:
                m.d.comb += self.active.eq((1 << n_out) - 1)   # no mask on the output layer
        else:
            # fold: stage 2 saturates V, stage 3 spikes and writes; else stage 2 adds, stage 3 saturates, stage 4 writes
            v5 = Signal()
            n5 = Signal(range(n_out))
            m.d.sync += [v5.eq(v4), n5.eq(n4)]
            v_w, n_w = (v4, n4) if fold else (v5, n5)
            spike_c, spike_n = Signal(), Signal()
            for i, (v_old, cnt_old, spike, v_new, cnt_new) in enumerate((
                    (old.v, old.count, spike_c, new.v, new.count),
                    (old.v_noisy, old.count_noisy, spike_n, new.v_noisy, new.count_noisy))):
                c0 = Signal(shape(fm.rate))
                c1 = Signal(shape(fm.rate))
                v1 = Signal(shape(fm.membrane))
                m.d.sync += [c0.eq(Mux(first_step, 0, cnt_old)), c1.eq(c0)]
                if fold:
                    m.d.sync += v1.eq(saturate((sum_c, sum_n)[i], fm.membrane))
                else:
                    v0 = Mux(first_step, 0, v_old)           # the stored membrane (0 at step 0)
                    leaked = v0 - (v0 >> k) if k else v0
                    total = Signal(signed(max(fm.membrane.bits, fm.acc.bits) + 1))   # stage 2 → 3: V − leak + I
                    m.d.sync += [total.eq(leaked + (cur_c, cur_n)[i]), v1.eq(saturate(total, fm.membrane))]
                m.d.comb += [
                    spike.eq(at_least(v1, theta)),
                    v_new.eq(v1 - Mux(spike, theta, 0)),
                    cnt_new.eq(c1 + spike),
                ]
            m.d.comb += [s_wr.addr.eq(n_w), s_wr.data.eq(new), s_wr.en.eq(v_w)]
            # the spike bits (and the mask) shift in from the top, one per write: the neurons are written in index
            # order, every one in every step, so bit i is neuron i's after the step's last write. (A bit set at
            # the neuron's index would need a decoder and an enable per bit: on iCE40, a LUT per bit more.)
            def shift_in(reg, bit):
                return reg.eq(Cat(reg[1:], bit) if n_out > 1 else bit)

            with m.If(v_w):
                m.d.sync += [shift_in(spikes_c, spike_c), shift_in(spikes_n, spike_n)]
            if self._update_port:
                # the update's mask 1[0 < c̃_i < T], from the noisy count after the last step
                active = Signal(n_out)
                m.d.comb += self.active.eq(active)
                with m.If(v_w & (step == self.steps - 1)):
                    m.d.sync += shift_in(active, (new.count_noisy != 0) & (new.count_noisy != self.steps))
        last_write = v_w & (n_w == n_out - 1)

        # -- results: state read (READ), registered and narrowed (LATCH), offered (RESULT) ---------------
        r_neuron = Signal(range(n_out))
        r_payload = Signal(self._result_layout)
        if self._output:
            result = {"y": narrow(old.y, wf + log2t, fm.out, "trunc"),             # Y + T/2 is stored
                      "y_noisy": narrow(old.y_noisy, wf + log2t, fm.out, "trunc")}
        else:
            result = {"count": old.count, "count_noisy": old.count_noisy}

        bias = Const(1 << n_in, pad)
        if self._hold_input:
            m.d.comb += [clean_in.eq(self.i.payload.clean | bias), noisy_in.eq(self.i.payload.noisy | bias)]
        # Port outputs are plain functions of registers (no assignments inside FSM states): an event-driven
        # simulator (Icarus) then evaluates them from time 0, before the state first changes.
        with m.FSM() as fsm:
            with m.State("NOISE"):
                with m.If(self.noise.valid):
                    m.d.sync += word_no.eq(word_no + 1)
                    if not self._held_noise:
                        m.d.sync += signs.word_select(word_no, 32).eq(self.noise.payload.word)
                    with m.If(word_no == self._noise_words - 1):
                        m.d.sync += [word_no.eq(0), step.eq(0), first_step.eq(1)]
                        m.next = "INPUT"
            with m.State("INPUT"):
                with m.If(self.i.valid):
                    m.d.sync += [neuron.eq(0), chunk.eq(0)]
                    if not self._hold_input:
                        m.d.sync += [clean_in.eq(self.i.payload.clean | bias), noisy_in.eq(self.i.payload.noisy | bias)]
                    if sparse:
                        m.d.sync += [count.eq(0), entry.eq(0), row_base.eq(0)]
                    m.next = "SCAN" if sparse and chunks > 1 else "RUN"
            if sparse and chunks > 1:
                with m.State("SCAN"):                     # chunk c = 0 … C − 2: listed when a lane spiked
                    with m.If((clean_in.word_select(chunk, lanes) | noisy_in.word_select(chunk, lanes)).any()):
                        m.d.comb += a_wr.en.eq(1)
                        m.d.sync += count.eq(count + 1)
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If(chunk == chunks - 2):
                        m.d.sync += chunk.eq(0)
                        m.next = "RUN"
            if not sparse:
                with m.State("RUN"):
                    m.d.sync += [t1.valid.eq(1), t1.neuron.eq(neuron),
                                 t1.first.eq(chunk == 0), t1.last.eq(chunk == chunks - 1), waddr.eq(waddr + 1)]
                    with m.If(chunk == chunks - 1):
                        m.d.sync += chunk.eq(0)
                        with m.If(neuron == n_out - 1):
                            m.d.sync += waddr.eq(0)             # word 0 again for the next step
                            m.next = "DRAIN"
                        with m.Else():
                            m.d.sync += neuron.eq(neuron + 1)
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)
            else:
                with m.State("RUN"):                      # per neuron: the listed chunks, then the bias's
                    m.d.sync += [t0.valid.eq(1), t0.neuron.eq(neuron), t0.first.eq(entry == 0),
                                 t0.last.eq(entry == count), t0.base.eq(row_base), entry.eq(entry + 1)]
                    with m.If(entry == count):
                        m.d.sync += [entry.eq(0), row_base.eq(row_base + chunks)]
                        with m.If(neuron == n_out - 1):
                            m.next = "DRAIN"
                        with m.Else():
                            m.d.sync += neuron.eq(neuron + 1)
            with m.State("DRAIN"):                        # the last neuron passes the pipeline stages
                with m.If(last_write):
                    if self._output:
                        m.d.sync += [step.eq(step + 1), first_step.eq(0)]
                        with m.If(step == self.steps - 1):
                            m.d.sync += r_neuron.eq(0)
                            m.next = "READ"
                        with m.Else():
                            m.next = "INPUT"
                    else:
                        m.next = "EMIT"
            if not self._output:
                with m.State("EMIT"):
                    with m.If(self.o.ready):
                        m.d.sync += [step.eq(step + 1), first_step.eq(0)]
                        with m.If(step == self.steps - 1):
                            m.d.sync += r_neuron.eq(0)
                            m.next = "READ"
                        with m.Else():
                            m.next = "INPUT"
            with m.State("READ"):
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [r_payload.eq(0), r_payload.last.eq(r_neuron == n_out - 1)]
                m.d.sync += [getattr(r_payload, name).eq(value) for name, value in result.items()]
                m.next = "RESULT"
            with m.State("RESULT"):
                with m.If(self.r.ready):
                    m.d.sync += r_neuron.eq(r_neuron + 1)
                    with m.If(r_neuron == n_out - 1):
                        m.d.sync += r_neuron.eq(0)
                        m.next = "NOISE"
                    with m.Else():
                        m.next = "LATCH"
        state_addr = Signal(range(n_out))
        with m.If(fsm.ongoing("RESULT")):
            m.d.comb += state_addr.eq(r_neuron + 1)       # the next result's state word, read ahead
        with m.Elif(fsm.ongoing("READ")):
            m.d.comb += state_addr.eq(r_neuron)
        with m.Else():
            # fold: stage 0 addresses the state word of stage 1; else stage 1 the one of stage 2
            m.d.comb += state_addr.eq(n_at if self._fold else t1.neuron)
        m.d.comb += [
            s_rd.addr.eq(state_addr),
            self.noise.ready.eq(fsm.ongoing("NOISE")),
            # hold_input: the transfer when the inputs are no longer needed (the last word passed the accumulators)
            self.i.ready.eq(fsm.ongoing("DRAIN") & last_write if self._hold_input else fsm.ongoing("INPUT")),
            self.r.valid.eq(fsm.ongoing("RESULT")),
            self.r.payload.eq(r_payload),
        ]
        if not self._output:
            m.d.comb += [self.o.valid.eq(fsm.ongoing("EMIT")), self.o.payload.clean.eq(spikes_c),
                         self.o.payload.noisy.eq(spikes_n)]
        return m
