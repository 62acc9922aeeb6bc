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

**One engine for several layers** (:class:`SharedUpdateEngine`, NP only): the same pipeline sweeps layer 0's
memory, then layer 1's, …, without a gap; each word carries its layer through the stages (the v⊥ store, the
number of draws and the padding columns of its layer; the write port's layer). Fewer logic cells, Σ_l n_l·C_l
sweep cycles instead of one engine per layer's max_l.
"""

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import saturate, shape
from .layer import COLLISION_FREE
from .prng import xorshift32_next

__all__ = ["UpdateEngine", "SharedUpdateEngine", "NpSource", "PairSource", "ROUNDINGS"]

ROUNDINGS = ("half-up", "trunc", "stochastic")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


def _check_formats(formats, rounding):
    """The bits the update narrowing drops, after checking ``formats`` and ``rounding``."""
    if not isinstance(formats, Formats):
        raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding = {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
    drop = formats.g.frac + formats.vperp.frac - formats.weight.frac
    if rounding == "stochastic" and drop > 32:
        raise ValueError(f"formats.g.frac = {formats.g.frac}: stochastic rounding drops {drop} bits; at most "
                         "32 (one PRNG word)")
    return drop


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
        if not isinstance(errors, bool):
            raise ValueError(f"errors = {errors!r}: must be True or False")
        if not isinstance(held_g, bool):
            raise ValueError(f"held_g = {held_g!r}: must be True or False")
        if held_g and errors:
            raise ValueError("held_g = True: the engine takes per-row errors (errors = True), not g")
        self._held_g = held_g
        drop = _check_formats(formats, rounding)
        self._n_in, self._n_out, self._lanes, self._formats = n_in, n_out, lanes, formats
        self._rounding, self._drop, self._errors = rounding, drop, errors
        self._chunks = -(-(n_in + 1) // lanes)
        self._shapes, self._shared = ((n_in, n_out, lanes),), False
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
        lanes, shared = self._lanes, self._shared
        # per layer (one in the per-layer engine): n_in, n_out, lanes L_l, chunks C_l, valid columns in a row's
        # last chunk; global row r of the engine = layer 0's rows, then layer 1's, …
        geo = []
        for n_in, n_rows, l_lanes in self._shapes:
            l_chunks = -(-(n_in + 1) // l_lanes)
            geo.append((n_in, n_rows, l_lanes, l_chunks, n_in + 1 - (l_chunks - 1) * l_lanes))
        n_layers, n_out = len(geo), self._n_out       # n_out: rows of every layer together
        chunks = max(c for _, _, _, c, _ in geo)
        ends = [sum(g_[1] for g_ in geo[:l + 1]) for l in range(n_layers)]     # global row after layer l's last
        drop, draws = self._drop, self.draws
        vperps = list(self.vperp) if shared else [self.vperp]

        # -- v⊥ store: lane k of chunk c holds v⊥[c·lanes + k]; shared: one store per layer (their streams can
        # overlap in time, and a memory has one write port), read at the common chunk address -----------------
        v_rd, v_wr = [], []
        one_store = shared and self._one_store
        chunk_bits = (chunks - 1).bit_length()
        if one_store:         # lane k of every layer in one memory, at (layer, chunk): no address adder; as below
            for k in range(lanes):
                vm = memory.Memory(shape=shape(fm.vperp), depth=n_layers << chunk_bits, init=[],
                                   attrs=COLLISION_FREE)
                m.submodules[f"vperp_{k}"] = vm
                v_rd.append(vm.read_port(domain="sync"))
                v_wr.append(vm.write_port())
            v_ports, v_rd = v_rd, [v_rd[:l_lanes] for _, _, l_lanes, _, _ in geo]   # layer l's: the first L_l
        for l, (_, _, l_lanes, l_chunks, _) in enumerate(geo if not one_store else []):
            v_rd.append([])
            v_wr.append([])
            for k in range(l_lanes):
                # collision-free: written in COLLECT, read data used in SWEEP only
                vm = memory.Memory(shape=shape(fm.vperp), depth=l_chunks, init=[], attrs=COLLISION_FREE)
                m.submodules[f"vperp{l}_{k}" if shared else f"vperp{k}"] = vm
                v_rd[l].append(vm.read_port(domain="sync"))
                v_wr[l].append(vm.write_port())
        if draws:
            # collision-free: row r's state is read at stage 0 of its first chunk and written back at stage 2
            # of its last; the write two cycles after (r, 0) is row r − 1's or r − 2's; seeds load between samples
            m.submodules.lanes = lm = memory.Memory(shape=unsigned(32), depth=n_out, init=[], attrs=COLLISION_FREE)
            l_rd, l_wr = lm.read_port(domain="sync"), lm.write_port()

        # per layer: v⊥ values received, the lane and chunk the next one goes to, all N_l in
        received = [Signal(range(n_in + 2), name="received" if not shared else f"received{l}")
                    for l, (n_in, *_) in enumerate(geo)]
        in_lane = [Signal(range(l_lanes), name="in_lane" if not shared else f"in_lane{l}")
                   for l, (_, _, l_lanes, _, _) in enumerate(geo)]
        in_chunk = [Signal(range(l_chunks), name="in_chunk" if not shared else f"in_chunk{l}")
                    for l, (_, _, _, l_chunks, _) in enumerate(geo)]
        have_g = Signal()                 # g taken (errors: all n_out e_i stored)
        g = self.g.payload.g if self._held_g else Signal(shape(fm.g))
        errors = self._errors
        if errors:
            m.submodules.errors = em = memory.Memory(shape=shape(fm.g), depth=n_out, init=[])
            e_rd, e_wr = em.read_port(domain="sync"), em.write_port()
            e_count = Signal(range(n_out + 1))
        complete = [Signal(name="complete" if not shared else f"complete{l}") for l in range(n_layers)]
        take = [Signal(name="take" if not shared else f"take{l}") for l in range(n_layers)]   # a v⊥ transfer
        m.d.comb += [complete[l].eq(received[l] == n_in + 1) for l, (n_in, *_) in enumerate(geo)]

        row = Signal(range(n_out))
        chunk = Signal(range(chunks))
        layer = Signal(range(n_layers))   # shared: the layer being read (stage 0)

        # -- pipeline tags ---------------------------------------------------------------------------------
        # first/last: the row's first/last chunk; final: the sweep's last word. Stages 3 and 4 only count and
        # end the sweep, so they carry valid and final (shared: also the layer and end, its last word)
        per_layer = {"layer": range(n_layers), "end": 1} if shared else {}
        tag = data.StructLayout({"valid": 1, "row": range(n_out), "first": 1, "last": 1, "final": 1, **per_layer})
        end_tag = data.StructLayout({"valid": 1, "final": 1, **per_layer})
        # t_k: the word whose stage-k registers are being loaded this cycle (t1: its data arrives)
        t1, t2, t3, t4 = Signal(tag), Signal(tag), Signal(end_tag), Signal(end_tag)
        m.d.sync += [t1.valid.eq(0), t2.eq(t1), t3.valid.eq(t2.valid), t3.final.eq(t2.final), t4.eq(t3)]
        if shared:
            m.d.sync += [t3.layer.eq(t2.layer), t3.end.eq(t2.end)]
        # word addresses row·C + chunk, in order: a read counter (stage 0) and a write counter (stage 4), so no
        # address multiplier (a constant product Yosys would map to a DSP)
        addr = Signal(range(self.weight_depth))
        wr_addr = Signal(range(self.weight_depth))
        m.d.comb += self.rd_addr.eq(addr)
        if shared:
            m.d.comb += self.rd_layer.eq(layer)
        if one_store:
            for port in v_ports:
                m.d.comb += [port.addr.eq(Cat(chunk[:chunk_bits], layer)), port.en.eq(1)]
        else:
            for l in range(n_layers):
                for port in v_rd[l]:
                    m.d.comb += [port.addr.eq(chunk), port.en.eq(1)]

        def by_layer(sel, values):
            """values[l] for the layer ``sel`` (one value when every layer's is the same: no multiplexer)."""
            if all(v is values[0] for v in values) or all(isinstance(v, int) and v == values[0] for v in values):
                return values[0]
            return Array(values)[sel]

        # stage 1: words arrive; the row's PRNG lane is drawn for each valid column of the chunk, and the row's
        # operand −e_i is chosen (registered: the product of stage 2 uses it)
        wq1 = Signal(self._word_layout)
        vq1 = Signal(data.ArrayLayout(shape(fm.vperp), lanes))
        m.d.sync += wq1.eq(self.rd_data)
        if shared:                        # the layer's lanes; a narrower layer's lanes above its L_l read 0
            with m.Switch(t1.layer):
                for l in range(n_layers):
                    with m.Case(l):
                        m.d.sync += vq1.eq(Cat(*(port.data for port in v_rd[l])))
        else:
            m.d.sync += vq1.eq(Cat(*(v_rd[0][k].data for k in range(lanes))))
        # the rounding's complement ~r = 2^d − 1 − r (stage 2): lanes 0 … lanes − 2 registered; the last lane's
        # are the top bits of the state register, which holds the lane's state inverted (free: the LUTs before
        # it, after it and at the memory's write port absorb the inversions). Its word is the chunk's last draw,
        # except in a row's last chunk when that lane is padding (or, shared, in every chunk of a layer with
        # fewer lanes): then any r gives the exact W
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
            # the chunk's last draw: its valid columns are the layer's lanes, or its tail in a row's last chunk
            if shared:
                last_word = by_layer(t1.layer, [Mux(t1.last, words[tail - 1], words[l_lanes - 1]) if tail != l_lanes
                                                else words[l_lanes - 1] for _, _, l_lanes, _, tail in geo])
            else:
                last_word = Mux(t1.last, words[geo[0][4] - 1], words[lanes - 1])
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
            # padding columns of a last chunk: 0 (shared: the layers whose tail ends below lane k < L_l)
            padded = [l for l, (_, _, l_lanes, _, tail) in enumerate(geo) if tail <= k < l_lanes]
            if not shared:
                v_k = Mux(t2.last, 0, vq1[k]) if k >= geo[0][4] else vq1[k]
            elif padded:
                pad = t2.last if len(padded) == n_layers else t2.last & Cat(*(t2.layer == l for l in padded)).any()
                v_k = Mux(pad, 0, vq1[k])
            else:
                v_k = vq1[k]
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
        if shared:                        # the next layer's words start at its address 0
            m.d.comb += self.wr_layer.eq(t4.layer)
            with m.If(t4.valid & t4.end):
                m.d.sync += wr_addr.eq(0)

        # -- control -------------------------------------------------------------------------------------------
        # the last chunk of a row (shared: of the layer's rows) and the last row of a layer
        if shared and len({c for _, _, _, c, _ in geo}) > 1:
            last_chunk = by_layer(layer, [Const(c - 1, chunk.shape()) for _, _, _, c, _ in geo]) == chunk
        else:
            last_chunk = chunk == chunks - 1
        layer_end = (by_layer(layer, [Const(e - 1, row.shape()) for e in ends]) == row) if shared else None
        with m.FSM() as fsm:
            with m.State("COLLECT"):
                got_v = []
                for l, (n_in, _, l_lanes, _, _) in enumerate(geo):
                    with m.If(take[l]):
                        m.d.sync += received[l].eq(received[l] + 1)
                        with m.If(in_lane[l] == l_lanes - 1):
                            m.d.sync += [in_lane[l].eq(0), in_chunk[l].eq(in_chunk[l] + 1)]
                        with m.Else():
                            m.d.sync += in_lane[l].eq(in_lane[l] + 1)
                    got_v.append(complete[l] | (take[l] & (received[l] == n_in)))
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
                with m.If((Cat(*got_v).all() if shared else got_v[0]) & (have_g | g_in)):
                    m.d.sync += [row.eq(0), chunk.eq(0), addr.eq(0), wr_addr.eq(0)]
                    if shared:
                        m.d.sync += layer.eq(0)
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.sync += [t1.valid.eq(1), t1.row.eq(row), t1.first.eq(chunk == 0), t1.last.eq(last_chunk),
                             t1.final.eq(last_chunk & (row == n_out - 1)), addr.eq(addr + 1)]
                if shared:
                    m.d.sync += [t1.layer.eq(layer), t1.end.eq(last_chunk & layer_end)]
                with m.If(last_chunk):
                    m.d.sync += chunk.eq(0)
                    with m.If(row == n_out - 1):
                        m.d.sync += addr.eq(0)              # stays in range while the pipeline drains
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                        if shared:                          # the next layer: its weights from address 0
                            with m.If(layer_end):
                                m.d.sync += [addr.eq(0), layer.eq(layer + 1)]
                with m.Else():
                    m.d.sync += chunk.eq(chunk + 1)
            with m.State("DRAIN"):
                with m.If(t4.valid & t4.final):
                    m.d.sync += [have_g.eq(0)]
                    for l in range(n_layers):
                        m.d.sync += [received[l].eq(0), in_lane[l].eq(0), in_chunk[l].eq(0)]
                    if errors:
                        m.d.sync += e_count.eq(0)
                    m.next = "COLLECT"
        for l, (_, _, l_lanes, _, _) in enumerate(geo):
            # one store: a stream waits while a lower layer's offers a value (one write port)
            lower = Cat(*(vperps[j].valid & ~complete[j] for j in range(l))).any() if one_store and l else 0
            m.d.comb += [vperps[l].ready.eq(fsm.ongoing("COLLECT") & ~complete[l] & ~lower),
                         take[l].eq(vperps[l].valid & vperps[l].ready)]
            if one_store:
                with m.If(take[l]):
                    for k in range(l_lanes):
                        m.d.comb += [v_wr[k].addr.eq(Cat(in_chunk[l], Const(0, chunk_bits - len(in_chunk[l])),
                                                         Const(l, range(n_layers)))),
                                     v_wr[k].data.eq(vperps[l].payload.v),
                                     v_wr[k].en.eq(in_lane[l] == k)]
            else:
                for k in range(l_lanes):
                    m.d.comb += [v_wr[l][k].addr.eq(in_chunk[l]), v_wr[l][k].data.eq(vperps[l].payload.v),
                                 v_wr[l][k].en.eq(take[l] & (in_lane[l] == k))]
        m.d.comb += [
            (self.e if errors else self.g).ready.eq(fsm.ongoing("COLLECT") & ~have_g),
            self.busy.eq(fsm.ongoing("SWEEP") | fsm.ongoing("DRAIN")),
            self.idle.eq(fsm.ongoing("COLLECT") & (Cat(*(r == 0 for r in received)).all() if shared
                                                   else received[0] == 0)
                         & ~have_g & ((e_count == 0) if errors else 1)),
        ]
        return m


class SharedUpdateEngine(UpdateEngine):
    """One NP update engine for several layers (``Network(shared_update=True)``): the rank-1 update of layer 0's
    weight memory, then layer 1's, …, in one sweep through the same pipeline as :class:`UpdateEngine` (its
    stages, arithmetic and memory map per layer). It trades cycles for area: the sweep takes Σ_l n_l·C_l
    cycles instead of the per-layer engines' max_l, and there is one datapath (PRNG draw, multiplier,
    rounding adder, saturation, counters) instead of one per layer.

    Parameters (keyword-only): ``shapes`` (per layer (n_in, n_out, lanes), layer order), ``formats``,
    ``rounding`` (as :class:`UpdateEngine`), ``one_store`` (default False: one v⊥ store per layer; True: one for
    every layer, chunk c of layer l at word l·2^⌈log2 C⌉ + c — a block RAM less on the UP5K — which takes one stream
    per cycle, the lowest layer first: for streams that never overlap, as one cluster block's for all its layers).
    The rule is NP's (and LOCO's, with v⊥ for v): ±g rows from the noise signs, g held by the network
    (``held_g``), no per-row errors.

    Global rows: layer 0's n_out rows, then layer 1's, … (:attr:`n_out` in all); they number the rounding lanes
    (``seed_index``), ``signs`` and ``active``. :attr:`n_in` is None (the layers' are in :attr:`shapes`). The
    layers need not have the same lanes: the datapath is
    :attr:`lanes` = max_l L_l wide, a narrower layer's extra lanes are padding.

    Ports:
        vperp (In, array of L streams {v: vperp format}): layer l's N_l = n_in_l + 1 values per update, index
            order (one store per layer: the layers' streams may overlap in time; with ``one_store`` a stream
            waits while a lower layer's stream offers a value).
        g (In stream {g}): one value per update, held until the sweep is over.
        signs, active (In Σ n_out): the layers' sign and mask bits side by side, layer 0 in the low bits.
        rd_layer (Out), rd_addr (Out): the layer and word being read; rd_data (In, :attr:`lanes` weights): the
            word addressed in the previous cycle (a narrower layer's in the low lanes).
        wr_en, wr_layer, wr_addr, wr_data (Out): the write into layer ``wr_layer``'s memory.
        busy, idle, seed, seed_en, seed_index: as :class:`UpdateEngine` (``seed_index`` a global row).

    Timing: the sweep starts when every layer's v⊥ and g are in and runs without a gap from one layer to the
    next (the layers are different memories, so layer l + 1's first reads do not race layer l's last writes):
    :attr:`latency` = Σ_l n_l·C_l + :attr:`stages`.
    """

    def __init__(self, *, shapes, formats: Formats, rounding: str, one_store: bool = False):
        if (not isinstance(shapes, (tuple, list)) or not shapes
                or not all(isinstance(s, (tuple, list)) and len(s) == 3 for s in shapes)):
            raise ValueError(f"shapes = {shapes!r}: expected a non-empty sequence of (n_in, n_out, lanes)")
        for n_in, n_out, lanes in shapes:
            _check_int("n_in", n_in, 1, 1 << 16)
            _check_int("n_out", n_out, 1, 1 << 16)
            _check_int("lanes", lanes, 1, n_in + 1)
        drop = _check_formats(formats, rounding)
        if not isinstance(one_store, bool):
            raise ValueError(f"one_store = {one_store!r}: must be True or False")
        self._shapes, self._shared, self._one_store = tuple(tuple(s) for s in shapes), True, one_store
        self._layer_chunks = tuple(-(-(n_in + 1) // lanes) for n_in, _, lanes in self._shapes)
        self._n_in, self._n_out = None, sum(n_out for _, n_out, _ in self._shapes)
        self._lanes = max(s[2] for s in self._shapes)
        self._formats, self._rounding, self._drop = formats, rounding, drop
        self._errors, self._held_g = False, True
        self._chunks = max(self._layer_chunks)
        self._word_layout = data.ArrayLayout(shape(formats.weight), self._lanes)
        n_layers = len(self._shapes)
        members = {
            "vperp": In(stream.Signature(data.StructLayout({"v": shape(formats.vperp)}))).array(n_layers),
            "g": In(stream.Signature(data.StructLayout({"g": shape(formats.g)}))),
            "signs": In(self._n_out),
            "active": In(self._n_out),
            "rd_layer": Out(range(n_layers)),
            "rd_addr": Out(range(self.weight_depth)),
            "rd_data": In(self._word_layout),
            "wr_en": Out(1),
            "wr_layer": Out(range(n_layers)),
            "wr_addr": Out(range(self.weight_depth)),
            "wr_data": Out(self._word_layout),
            "busy": Out(1),
            "idle": Out(1),
        }
        if self.draws:
            members.update(seed=In(32), seed_en=In(1), seed_index=In(range(self._n_out)))
        wiring.Component.__init__(self, members)

    #: per layer (n_in, n_out, lanes), layer order
    shapes = property(lambda self: self._shapes)
    #: one v⊥ store for every layer (the streams take turns), see the parameter
    one_store = property(lambda self: self._one_store)
    #: per layer C_l = ⌈(n_in_l + 1)/L_l⌉ (:attr:`chunks` is their maximum)
    layer_chunks = property(lambda self: self._layer_chunks)
    #: the deepest layer's words (the address ports' range)
    weight_depth = property(lambda self: max(s[1] * c for s, c in zip(self._shapes, self._layer_chunks)))

    @property
    def sweep_cycles(self) -> int:
        """Cycles of one sweep of every layer: Σ_l n_l·C_l (one word per cycle, no gap between layers)."""
        return sum(s[1] * c for s, c in zip(self._shapes, self._layer_chunks))


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
