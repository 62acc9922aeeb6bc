"""Update engine — step 6 of ``FixedRule.step_q`` (golden_model/fixed.py): the rank-1 read-modify-write of one
layer's weight memory, bit for bit.

For every row i (in order) and column j (in order, j = 0 … N − 1, N = n_in + 1, the bias last)::

    e_i  = +g if ξ_i's sign bit is 1, −g if it is 0; 0 when the row is masked off (active_i = 0)
    W_ij ← sat_weight(W_ij − round(e_i · v⊥_j))

``round`` drops d = g_frac + vperp_frac − weight_frac bits with the configured mode (the model's ``shift_round``,
⌊(x + r)/2^d⌋): ``stochastic`` adds r_ij = (word >> (32 − d)), the words being drawn from PRNG lane
(ROUNDING, l·2^16 + i), N per row in column order (golden_model/prng.py); ``half-up`` adds r = 2^(d−1),
``trunc`` r = 0, and neither draws. The engine gets the same integers with one adder and no negation of a
product: −e_i (∓g or 0) is the multiplier's operand, chosen once per row, and
W − ⌊(p + r)/2^d⌋ = ⌊(W·2^d + (2^d − 1 − r) − p)/2^d⌋ (stage 2 in ``elaborate``).

**Inputs.** ``vperp`` is a ``lib.stream`` of N values in ``fmts.vperp``, index order — for NP the network makes
it from the previous layer's noisy counts (:class:`NpSource`), for LOCO the per-cluster units and the solver
will produce it. ``g`` is a stream of one value per sample (the loss unit's broadcast scalar). ``signs`` and
``active`` are the layer engine's noise sign bits and mask bits of the sample (stable while the engine waits
for the next sample). The engine stores v⊥ as it arrives (``vperp`` is always ready until N values are in),
takes g, and sweeps the weight memory once both are complete.

**Schedule — no update races a forward read.** The engine owns the layer engine's weight read port and writes
the weight memory only in its SWEEP/DRAIN states (``busy``); the network starts the next sample only when every
update engine is ``idle`` again, and a layer engine reads weights only in RUN, i.e. while a sample is in the
layers. g exists only after the output layer's last result, when every engine has finished all its steps.

**Sweep pipeline** (:attr:`stages` = 4; one word of ``lanes`` weights per cycle, word i·C + c in address order,
the layer engine's memory map): 0. address word (i, c) of the weights and chunk c of v⊥; 1. the words arrive and
are registered, the row's PRNG lane is drawn once per valid column (its state comes from a memory of n_out
states at the row's first chunk and goes back one cycle after its last), the row's operand −e_i is registered;
2. −e_i · v⊥_j per lane and one adder for the rounding and the subtraction (registered); 3. saturate
(registered); 4. write. Each word is read once and written once, four cycles later, so no read sees a stale
word. :attr:`latency` = cycles from the g transfer (v⊥ already complete) to the
cycle of the last write = n_out·C + 4.
"""

import math

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import saturate, shape
from .layer import COLLISION_FREE
from .prng import xorshift32_next

__all__ = ["UpdateEngine", "NpSource", "PairSource", "ROUNDINGS"]

ROUNDINGS = ("half-up", "trunc", "stochastic")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class UpdateEngine(wiring.Component):
    """Rank-1 update W ← sat(W − round(e vᵀ)) of one layer's weight memory (see the module docstring).

    Parameters (keyword-only): ``n_in``, ``n_out``, ``lanes`` (the layer engine's; its memory map), ``formats``
    (:class:`~loco_fpga.qformat.Formats`: weight, g, vperp), ``rounding`` (``"half-up"``, ``"trunc"`` or
    ``"stochastic"``; ``config.fixed.update_rounding``), ``held_g`` (True: the ``g`` payload stays as it was at
    its transfer until the sweep is over — the network's does, it is the loss unit's output register — so the
    engine uses it there instead of keeping a copy; not with ``errors``).

    Ports:
        vperp (In stream {v: vperp format}): N = n_in + 1 values per update, index order.
        g (In stream {g: g format}): one value per update.
        signs (In n_out): bit i = ξ_i's sign (1 → e_i = +g); active (In n_out): bit i = 0 masks row i.
        rd_addr (Out), rd_data (In, ``lanes`` weights): the weight memory's read port (data one cycle after
            the address); wr_en, wr_addr, wr_data (Out): its write port. Valid while ``busy``.
        busy (Out 1): SWEEP/DRAIN — the engine owns the weight memory.
        idle (Out 1): nothing of the next update has arrived yet (no v⊥ value, no g) and no sweep runs.
        seed, seed_en, seed_index (In; ``stochastic`` only): load row i's rounding lane state (while idle).
    """

    def __init__(self, *, n_in: int, n_out: int, lanes: int, formats: Formats, rounding: str, errors: bool = False,
                 held_g: bool = False):
        _check_int("n_in", n_in, 1, 1 << 16)
        _check_int("n_out", n_out, 1, 1 << 16)
        _check_int("lanes", lanes, 1, n_in + 1)
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if not isinstance(errors, bool):
            raise ValueError(f"errors = {errors!r}: must be True or False")
        if not isinstance(held_g, bool):
            raise ValueError(f"held_g = {held_g!r}: must be True or False")
        if held_g and errors:
            raise ValueError("held_g = True: the engine takes per-row errors (errors = True), not g")
        self._held_g = held_g
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding = {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
        drop = formats.g.frac + formats.vperp.frac - formats.weight.frac
        if rounding == "stochastic" and drop > 32:
            raise ValueError(f"formats.g.frac = {formats.g.frac}: stochastic rounding drops {drop} bits; at most "
                             "32 (one PRNG word)")
        self._n_in, self._n_out, self._lanes, self._formats = n_in, n_out, lanes, formats
        self._rounding, self._drop, self._errors = rounding, drop, errors
        self._chunks = -(-(n_in + 1) // lanes)
        self._word_layout = data.ArrayLayout(shape(formats.weight), lanes)
        members = {
            "vperp": In(stream.Signature(data.StructLayout({"v": shape(formats.vperp)}))),
            **({"e": In(stream.Signature(data.StructLayout({"e": shape(formats.g)})))} if errors else
               {"g": In(stream.Signature(data.StructLayout({"g": shape(formats.g)}))), "signs": In(n_out)}),
            "active": In(n_out),
            "rd_addr": Out(range(self.weight_depth)),
            "rd_data": In(self._word_layout),
            "wr_en": Out(1),
            "wr_addr": Out(range(self.weight_depth)),
            "wr_data": Out(self._word_layout),
            "busy": Out(1),
            "idle": Out(1),
        }
        if self.draws:
            members.update(seed=In(32), seed_en=In(1), seed_index=In(range(n_out)))
        super().__init__(members)

    n_in = property(lambda self: self._n_in)
    n_out = property(lambda self: self._n_out)
    lanes = property(lambda self: self._lanes)
    formats = property(lambda self: self._formats)
    rounding = property(lambda self: self._rounding)
    #: per-row errors (DFA): e_i from the ``e`` stream instead of ±g by the noise signs
    errors = property(lambda self: self._errors)
    held_g = property(lambda self: self._held_g)
    #: fraction bits the update narrowing drops: g_frac + vperp_frac − weight_frac
    drop = property(lambda self: self._drop)
    chunks = property(lambda self: self._chunks)
    weight_depth = property(lambda self: self._n_out * self._chunks)
    word_layout = property(lambda self: self._word_layout)

    @property
    def draws(self) -> bool:
        """Whether the rounding draws PRNG words (stochastic with at least one dropped bit)."""
        return self._rounding == "stochastic" and self._drop > 0

    @property
    def stages(self) -> int:
        """Pipeline stages from a word's address to its write (read, multiply + round + subtract, saturate, write)."""
        return 4

    @property
    def sweep_cycles(self) -> int:
        """Cycles of one sweep: one word per cycle, n_out·C (the weight port's bound)."""
        return self._n_out * self._chunks

    @property
    def latency(self) -> int:
        """Cycles from the ``g`` transfer (v⊥ complete) to the cycle of the last weight write: n_out·C + 4.
        When v⊥ completes after g, the same count runs from the last ``vperp`` transfer."""
        return self.sweep_cycles + self.stages

    def elaborate(self, platform):
        m = Module()
        fm = self._formats
        n_in, n_out, lanes, chunks = self._n_in, self._n_out, self._lanes, self._chunks
        n_cols = n_in + 1
        drop, draws = self._drop, self.draws
        tail = n_cols - (chunks - 1) * lanes          # valid columns in a row's last chunk

        # -- v⊥ store: lane k of chunk c holds v⊥[c·lanes + k] ------------------------------------------------
        v_rd, v_wr = [], []
        for k in range(lanes):
            # collision-free: written in COLLECT, read data used in SWEEP only
            vm = memory.Memory(shape=shape(fm.vperp), depth=chunks, init=[], attrs=COLLISION_FREE)
            m.submodules[f"vperp{k}"] = vm
            v_rd.append(vm.read_port(domain="sync"))
            v_wr.append(vm.write_port())
        if draws:
            # collision-free: row r's state is read at stage 0 of its first chunk and written back at stage 2
            # of its last; the write two cycles after (r, 0) is row r − 1's or r − 2's; seeds load between samples
            m.submodules.lanes = lm = memory.Memory(shape=unsigned(32), depth=n_out, init=[], attrs=COLLISION_FREE)
            l_rd, l_wr = lm.read_port(domain="sync"), lm.write_port()

        received = Signal(range(n_cols + 1))
        in_lane = Signal(range(lanes))
        in_chunk = Signal(range(chunks))
        have_g = Signal()                 # g taken (errors: all n_out e_i stored)
        g = self.g.payload.g if self._held_g else Signal(shape(fm.g))
        errors = self._errors
        if errors:
            m.submodules.errors = em = memory.Memory(shape=shape(fm.g), depth=n_out, init=[])
            e_rd, e_wr = em.read_port(domain="sync"), em.write_port()
            e_count = Signal(range(n_out + 1))
        complete = Signal()
        m.d.comb += complete.eq(received == n_cols)

        row = Signal(range(n_out))
        chunk = Signal(range(chunks))

        # -- pipeline tags ---------------------------------------------------------------------------------
        # first/last: the row's first/last chunk; final: the sweep's last word. Stages 3 and 4 only count and
        # end the sweep, so they carry valid and final
        tag = data.StructLayout({"valid": 1, "row": range(n_out), "first": 1, "last": 1, "final": 1})
        end_tag = data.StructLayout({"valid": 1, "final": 1})
        # t_k: the word whose stage-k registers are being loaded this cycle (t1: its data arrives)
        t1, t2, t3, t4 = Signal(tag), Signal(tag), Signal(end_tag), Signal(end_tag)
        m.d.sync += [t1.valid.eq(0), t2.eq(t1), t3.valid.eq(t2.valid), t3.final.eq(t2.final), t4.eq(t3)]
        # word addresses row·C + chunk, in order: a read counter (stage 0) and a write counter (stage 4), so no
        # address multiplier (a constant product Yosys would map to a DSP)
        addr = Signal(range(self.weight_depth))
        wr_addr = Signal(range(self.weight_depth))
        m.d.comb += self.rd_addr.eq(addr)
        for k in range(lanes):
            m.d.comb += [v_rd[k].addr.eq(chunk), v_rd[k].en.eq(1)]

        # stage 1: words arrive; the row's PRNG lane is drawn for each valid column of the chunk, and the row's
        # operand −e_i is chosen (registered: the product of stage 2 uses it)
        wq1 = Signal(self._word_layout)
        vq1 = Signal(data.ArrayLayout(shape(fm.vperp), lanes))
        m.d.sync += [wq1.eq(self.rd_data), vq1.eq(Cat(*(v_rd[k].data for k in range(lanes))))]
        # the rounding's complement ~r = 2^d − 1 − r (stage 2): lanes 0 … lanes − 2 registered; the last lane's
        # are the top bits of the state register, which holds the lane's state inverted (free: the LUTs before
        # it, after it and at the memory's write port absorb the inversions). Its word is the chunk's last draw,
        # except in a row's last chunk when that lane is padding: then any r gives the exact W
        rand_shape = unsigned(max(drop, 1))
        nrands1 = [Signal(rand_shape, name=f"nrands1_{k}") for k in range(lanes - 1)]
        if draws:
            state_n = Signal(32)            # ~state
            m.d.comb += [l_rd.addr.eq(row), l_rd.en.eq(1)]
            cur = Signal(32)
            m.d.comb += cur.eq(Mux(t1.first, l_rd.data, ~state_n))
            words, w = [], cur
            for k in range(lanes):      # one Signal per draw: the chained expression would grow as 2^(3·lanes)
                word_k = Signal(32, name=f"draw{k}")
                m.d.comb += word_k.eq(xorshift32_next(w))
                words.append(word_k)
                w = word_k
            last_word = Mux(t1.last, words[tail - 1], words[lanes - 1])
            with m.If(t1.valid):
                m.d.sync += [state_n.eq(~last_word)]
                m.d.sync += [nrands1[k].eq(~words[k][32 - drop:]) for k in range(lanes - 1)]
            nrands1.append(state_n[32 - drop:])
            # written back from the state register a cycle later (stage 2): the draw logic then drives only
            # that register, and a LUT driving one flip-flop packs with it on iCE40
            m.d.comb += [l_wr.addr.eq(t2.row), l_wr.data.eq(~state_n), l_wr.en.eq(t2.valid & t2.last)]
            with m.If(self.seed_en):
                m.d.comb += [l_wr.addr.eq(self.seed_index), l_wr.data.eq(self.seed), l_wr.en.eq(1)]
        # −e_i = −g if ξ_i's sign bit is 1, +g if it is 0, 0 when masked off: the sign and the mask live in the
        # multiplier's operand, one value per row, so the products need no negation (−g of the most negative g
        # needs one bit more than g). −x as ~(x − 1): Yosys' iCE40 carry chain takes no inverted operand, so 0 − x
        # costs an inverter LUT per bit, x − 1 none (the inversion goes into the multiplexer's LUT)
        neg_e = Signal(signed(fm.g.bits + 1))
        on = self.active.bit_select(t1.row, 1)
        if errors:                        # e_i: read at the row address in stage 0, negated in stage 1
            m.d.comb += [e_rd.addr.eq(row), e_rd.en.eq(1)]
            m.d.sync += neg_e.eq(Mux(on, ~(e_rd.data - 1), 0))
        else:
            plus = self.signs.bit_select(t1.row, 1)
            m.d.sync += neg_e.eq(Mux(on, Mux(plus, ~(g - 1), g), 0))

        # stage 2: W_ij − round(e_i v⊥_j) before saturation (registered). With p = e_i v⊥_j and D = 2^d, the
        # rounding is ⌊(p + r)/D⌋ and W − ⌊(p + r)/D⌋ = ⌊(W·D + (D − 1 − r) − p)/D⌋ (−⌊x/D⌋ = ⌊(−x + D − 1)/D⌋):
        # W·D + (D − 1 − r) is W's bits above ~r's, so the product −e_i·v⊥_j and one adder do the rounding and
        # the subtraction; only the bits from d up are kept. The word and the random bits are used as they
        # arrive, so neither is carried further. |e_i| ≤ 2^(g_bits − 1) and |v⊥_j| ≤ 2^(vperp_bits − 1) (signed)
        # or < 2^vperp_bits (unsigned): the product fits g_bits + vperp_bits signed bits either way.
        prod_shape = signed(fm.g.bits + fm.vperp.bits)
        diff_shape = signed(max(prod_shape.width + max(-drop, 0), fm.weight.bits + max(drop, 0)) + 1 - max(drop, 0))
        diffs = Signal(data.ArrayLayout(diff_shape, lanes))
        for k in range(lanes):
            v_k = Mux(t2.last, 0, vq1[k]) if k >= tail else vq1[k]     # padding columns of a last chunk: 0
            prod = Signal(prod_shape, name=f"prod{k}")
            m.d.comb += prod.eq(neg_e * v_k)
            if drop > 0:                  # half-up: r = 2^(d−1); trunc: r = 0
                r_fixed = (1 << (drop - 1)) if self._rounding == "half-up" else 0
                nrand = nrands1[k] if draws else Const((1 << drop) - 1 - r_fixed, drop)
                m.d.sync += diffs[k].eq((Cat(nrand, wq1[k]).as_signed() + prod) >> drop)
            else:                         # d ≤ 0: exact
                m.d.sync += diffs[k].eq(wq1[k] + (prod << -drop))

        # stage 3: saturate (registered)
        new3 = Signal(self._word_layout)
        m.d.sync += [new3[k].eq(saturate(diffs[k], fm.weight)) for k in range(lanes)]

        # stage 4: write (padding lanes of a last chunk are written back unchanged)
        m.d.comb += [self.wr_en.eq(t4.valid), self.wr_addr.eq(wr_addr), self.wr_data.eq(new3)]
        with m.If(t4.valid):
            m.d.sync += wr_addr.eq(wr_addr + 1)

        # -- control -------------------------------------------------------------------------------------------
        with m.FSM() as fsm:
            with m.State("COLLECT"):
                with m.If(self.vperp.valid & ~complete):
                    m.d.sync += received.eq(received + 1)
                    with m.If(in_lane == lanes - 1):
                        m.d.sync += [in_lane.eq(0), in_chunk.eq(in_chunk + 1)]
                    with m.Else():
                        m.d.sync += in_lane.eq(in_lane + 1)
                if errors:
                    with m.If(self.e.valid & ~have_g):
                        m.d.comb += [e_wr.en.eq(1), e_wr.addr.eq(e_count), e_wr.data.eq(self.e.payload.e)]
                        m.d.sync += e_count.eq(e_count + 1)
                        with m.If(e_count == n_out - 1):
                            m.d.sync += have_g.eq(1)
                    g_in = self.e.valid & (e_count == n_out - 1)
                else:
                    with m.If(self.g.valid & ~have_g):
                        m.d.sync += have_g.eq(1)
                        if not self._held_g:
                            m.d.sync += g.eq(self.g.payload.g)
                    g_in = self.g.valid
                # both complete at the end of this cycle: sweep from the next one
                got_v = complete | (self.vperp.valid & (received == n_cols - 1))
                with m.If(got_v & (have_g | g_in)):
                    m.d.sync += [row.eq(0), chunk.eq(0), addr.eq(0), wr_addr.eq(0)]
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.sync += [t1.valid.eq(1), t1.row.eq(row), t1.first.eq(chunk == 0), t1.last.eq(chunk == chunks - 1),
                             t1.final.eq((chunk == chunks - 1) & (row == n_out - 1)), addr.eq(addr + 1)]
                with m.If(chunk == chunks - 1):
                    m.d.sync += chunk.eq(0)
                    with m.If(row == n_out - 1):
                        m.d.sync += addr.eq(0)              # stays in range while the pipeline drains
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                with m.Else():
                    m.d.sync += chunk.eq(chunk + 1)
            with m.State("DRAIN"):
                with m.If(t4.valid & t4.final):
                    m.d.sync += [received.eq(0), in_lane.eq(0), in_chunk.eq(0), have_g.eq(0)]
                    if errors:
                        m.d.sync += e_count.eq(0)
                    m.next = "COLLECT"
        for k in range(lanes):
            m.d.comb += [v_wr[k].addr.eq(in_chunk), v_wr[k].data.eq(self.vperp.payload.v),
                         v_wr[k].en.eq(self.vperp.valid & self.vperp.ready & (in_lane == k))]
        m.d.comb += [
            self.vperp.ready.eq(fsm.ongoing("COLLECT") & ~complete),
            (self.e if errors else self.g).ready.eq(fsm.ongoing("COLLECT") & ~have_g),
            self.busy.eq(fsm.ongoing("SWEEP") | fsm.ongoing("DRAIN")),
            self.idle.eq(fsm.ongoing("COLLECT") & (received == 0) & ~have_g & ((e_count == 0) if errors else 1)),
        ]
        return m


class NpSource(wiring.Component):
    """NP's v⊥ = v << (vperp_frac − log2 T) (saturated to ``fmts.vperp``, exact in practice) from a stream of
    spike counts, with the bias entry T appended after the count marked ``last``: N = n + 1 values per sample.

    Ports: ``i`` (In stream {count: rate format, last: 1}), ``o`` (Out stream {v: vperp format}; the output
    is a register, valid never waits on ready). ``i`` is ready whenever the output register is free or being
    taken, except in the one cycle the bias waits. :attr:`latency` = 1.
    """

    def __init__(self, *, formats: Formats):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        self._formats = formats
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"count": shape(formats.rate), "last": 1}))),
            "o": Out(stream.Signature(data.StructLayout({"v": shape(formats.vperp)}))),
        })

    formats = property(lambda self: self._formats)

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        fm = self._formats
        shift = fm.vperp.frac - fm.log2_steps

        def scaled(count):
            return saturate(count << shift if shift >= 0 else count >> -shift, fm.vperp)

        valid = Signal()
        bias_next = Signal()
        value = Signal(shape(fm.vperp))
        free = ~valid | self.o.ready
        m.d.comb += [self.i.ready.eq(free & ~bias_next), self.o.valid.eq(valid), self.o.payload.v.eq(value)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += valid.eq(0)
        with m.If(bias_next & free):
            m.d.sync += [valid.eq(1), value.eq(scaled(Const(1 << fm.log2_steps, fm.rate.bits + 1))),
                         bias_next.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [valid.eq(1), value.eq(scaled(self.i.payload.count)), bias_next.eq(self.i.payload.last)]
        return m


class PairSource(wiring.Component):
    """LOCO's cluster-block input: the pairs (u_j, v_j) of a layer's clean and noisy input spike counts (rate
    format), with the bias pair (T, T) appended after the pair marked ``last``: N = n + 1 pairs per sample, the
    bias one marked ``last`` (:class:`~.clusters.ClusterBlock`'s ``i``).

    Ports: ``i`` (In stream {u, v: rate format, last: 1}), ``o`` (Out stream {u, v: rate format, last: 1}; a
    register, valid never waits on ready). Like :class:`NpSource`: ``i`` is ready whenever the output register
    is free or being taken, except in the one cycle the bias waits. :attr:`latency` = 1.
    """

    def __init__(self, *, formats: Formats):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        self._formats = formats
        self._layout = data.StructLayout({"u": shape(formats.rate), "v": shape(formats.rate), "last": 1})
        super().__init__({"i": In(stream.Signature(self._layout)), "o": Out(stream.Signature(self._layout))})

    formats = property(lambda self: self._formats)
    layout = property(lambda self: self._layout)

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        steps = 1 << self._formats.log2_steps
        valid = Signal()
        bias_next = Signal()
        value = Signal(self._layout)
        free = ~valid | self.o.ready
        m.d.comb += [self.i.ready.eq(free & ~bias_next), self.o.valid.eq(valid), self.o.payload.eq(value)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += valid.eq(0)
        with m.If(bias_next & free):
            m.d.sync += [valid.eq(1), value.u.eq(steps), value.v.eq(steps), value.last.eq(1), bias_next.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [valid.eq(1), value.u.eq(self.i.payload.u), value.v.eq(self.i.payload.v), value.last.eq(0),
                         bias_next.eq(self.i.payload.last)]
        return m
