"""Loss unit — the gateware twin of ``FixedRule.loss_unit`` (golden_model/fixed.py, step 4).

Per sample it takes the output layer's two passes, one output k per transfer (k = 0 … n_L − 1 in index
order), and computes, with the formats of ``loco_fpga.qformat``:

* Δy_k = sat_out(ỹ_k − y_k);
* ΔL_sum = Σ_k Δy_k (Δy_k + 2 (y_k − t_k)), t_k = 2^wf·[k = label] — exact (2·wf fraction bits; the
  accumulator holds the largest |ΔL_sum|, n_L·(2^(ob−1) + 2^wf)² (:meth:`LossUnit._term_bound`), so the order of
  summation cannot matter);
* dl = narrow(ΔL_sum → fmts.dl, half-up), g = narrow(dl · lr_reg → fmts.g, half-up).

It is sequential (one output per cycle; the ΔL_sum term is a three-stage pipeline, then one cycle each for dl,
dl·lr and g, so that the 60 MHz ECP5 clock closes): the loss unit runs once per sample,
next to T·n_out·⌈(n_in+1)/LANES⌉ cycles of the layer engines, so it is never the bottleneck.

**Multipliers.** The two products — the term Δy·(Δy + 2(y − t)) and dl·lr — are never computed in the same
cycle (dl·lr only in the PRODUCT state, after the last term), so they are one product a · b on one set of signed
16 × 16 multipliers (:attr:`LossUnit.slots`; an iCE40 ``SB_MAC16`` or an ECP5 ``MULT18X18D`` each): a = Δy or
lr (a register, loaded with lr in the DL state), b = Δy + 2(y − t) or dl. Both operands are cut into 15-bit
unsigned chunks and a top chunk that carries its sign (up to 16 bits: each fits a signed 16-bit input), one slot
per chunk pair, and one adder tree sums the slots at the width of the larger result (partial sums may wrap; the
final one fits), so the results are exact. As g drops at least 2 fraction bits, the slots compute
⌊dl·lr / 2⌋ = (dl >> 1)·lr + dl[0]·⌊lr / 2⌋ (the second term is one 15-bit logic input of the tree), which rounds
to the same g (:meth:`LossUnit._operand_shapes`): for the ``up5k`` formats (Δy and a 24, Δy + 2(y − t) 26,
dl >> 1 31 bits) both products are the same 2 × 2 chunk pairs on 4 slots, where Yosys inferred 6 ``SB_MAC16``
for the two products separately (the UP5K has 8 in all; the update engines need 4). The only multiplexer is b's.

**Rounding.** dl and g round half up, (x + 2^(s−1)) >> s, without an adder of their own: the accumulator starts
each sample at dl's increment (``dl_sum`` on ``o`` subtracts it; nothing in the accelerator reads ``dl_sum``), and
g's is one bit of an adder-tree input that is zero in the PRODUCT state.
"""

from amaranth import Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import narrow, shape

__all__ = ["LossUnit", "DSP_BITS", "LOGIC_BITS", "partial_products"]

#: multiplier slot operands: signed, this many bits (iCE40 SB_MAC16 16 × 16 mode; fits an ECP5 MULT18X18D)
DSP_BITS = 16
_CHUNK_BITS = DSP_BITS - 1          # an unsigned low chunk must fit a signed DSP_BITS-bit input
#: :func:`partial_products`' default: a top chunk of at most this many bits is multiplied in logic (selected
#: shifts of the other chunk), not in a slot (the loss unit puts every chunk pair into a slot)
LOGIC_BITS = 2


def _chunks(value, value_shape):
    """``value`` = Σ chunk << shift: [(chunk, shift, bits)], 15-bit unsigned chunks, the top one with the sign
    (up to :data:`DSP_BITS` bits when signed)."""
    value_shape = Shape.cast(value_shape)
    bits = value.as_unsigned()
    out = []
    lo = 0
    for n in _chunk_bits(value_shape.width, value_shape.signed):
        hi = lo + n
        part = bits[lo:hi]
        out.append((part.as_signed() if hi == value_shape.width and value_shape.signed else part, lo, n))
        lo = hi
    return out


def _logic_product(small, big):
    """``small`` · ``big`` for a chunk ``small`` of at most :data:`LOGIC_BITS` bits: selected shifts of ``big``
    (the top bit of a signed ``small`` weighs −2^(n−1))."""
    n = len(small)
    negative_top = small.shape().signed
    total = 0
    for k in range(n):
        shifted = big << k
        total = total + Mux(small[k], -shifted if (negative_top and k == n - 1) else shifted, 0)
    return total


def _signed_bits(lo: int, hi: int) -> int:
    """Width of the narrowest signed shape that holds every integer in [lo, hi]."""
    return max((~lo).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def _chunk_bits(width: int, is_signed: bool) -> list:
    top = DSP_BITS if is_signed else _CHUNK_BITS       # a signed top chunk may use the slot's sign bit
    out = []
    while width - sum(out) > top:
        out.append(_CHUNK_BITS)
    return out + [width - sum(out)]


def _pair_count(a_shape, b_shape, logic_bits: int = LOGIC_BITS) -> int:
    """Slot pairs of :func:`partial_products` for operands of these shapes."""
    a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
    return sum(min(x, y) > logic_bits for x in _chunk_bits(a_shape.width, a_shape.signed)
               for y in _chunk_bits(b_shape.width, b_shape.signed))


def partial_products(a, a_shape, b, b_shape, logic_bits: int = LOGIC_BITS):
    """a · b as ``(slot_pairs, logic)``: ``slot_pairs`` = [(x, y, shift)] of chunks for signed
    :data:`DSP_BITS`-bit multipliers, ``logic`` = [(value, shift)] computed without one (only a top chunk can
    have at most ``logic_bits`` bits: b's times the whole a, a's times b without its small top chunk);
    a · b = Σ x·y << shift + Σ value << shift."""
    xs, ys = _chunks(a, a_shape), _chunks(b, b_shape)
    small_x = xs[-1] if xs[-1][2] <= logic_bits else None
    small_y = ys[-1] if ys[-1][2] <= logic_bits else None
    big_x = xs[:-1] if small_x else xs
    big_y = ys[:-1] if small_y else ys
    pairs = [(x, y, sx + sy) for x, sx, _ in big_x for y, sy, _ in big_y]
    logic = []
    if small_y:                                    # b's small top chunk times all of a
        y, sy, _ = small_y
        logic.append((_logic_product(y, a), sy))
    if small_x:                                    # a's small top chunk times the rest of b
        x, sx, _ = small_x
        rest = b.as_unsigned()[:small_y[1]] if small_y else b
        logic.append((_logic_product(x, rest), sx))
    return pairs, logic


class LossUnit(wiring.Component):
    """Δy, ΔL_sum, dl and g of one sample.

    Parameters (keyword-only): ``formats`` (:class:`~loco_fpga.qformat.Formats` of the config), ``n_out``
    (n_L, the number of outputs).

    Ports:
        i (In stream of :attr:`input_layout` = {y: out, y_noisy: out, last: 1}): the outputs of the clean
            and the noisy pass, index order; ``last`` marks k = n_out − 1 (the unit also counts k itself and
            uses its own count for the target; ``last`` must agree with it).
        label (In range(n_out)), lr (In ``shape(fmts.lr)``): the sample's class and the learning-rate
            register; held stable from the sample's first transfer on ``i`` to its last transfer on ``o``.
        o (Out stream of :attr:`output_layout` = {dy: out, dl_sum, dl, g, last: 1}): one transfer per
            input transfer, in order, carrying Δy_k; the transfer with ``last`` set also carries ΔL_sum, dl
            and g (zero on the others). ``o.payload`` is a register: g (and dl) stay on it after that transfer
            until the unit takes the next sample's first input — the network's g broadcast and the
            accelerator's reply read them there.

    Timing: :attr:`latency` = 1 cycle from accepting output k < n_out − 1 to its Δy on ``o``;
    :attr:`final_latency` = 6 cycles from accepting the last output to the transfer carrying g.
    ``o.valid`` never waits on ``o.ready``.
    """

    def __init__(self, *, formats: Formats, n_out: int):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if isinstance(n_out, bool) or not isinstance(n_out, int) or n_out < 1:
            raise ValueError(f"n_out = {n_out!r}: must be a positive integer")
        if formats.out.frac != formats.weight.frac:
            raise ValueError(f"formats.out = {formats.out.label()}: the output format must have the weight "
                             f"format's {formats.weight.frac} fraction bits")
        self._formats, self._n_out = formats, n_out
        self._sum_shape = signed(_signed_bits(-n_out * self._term_bound(), n_out * self._term_bound()))
        out = shape(formats.out)
        self._input_layout = data.StructLayout({"y": out, "y_noisy": out, "last": 1})
        self._output_layout = data.StructLayout({"dy": out, "dl_sum": self._sum_shape,
                                                 "dl": shape(formats.dl), "g": shape(formats.g), "last": 1})
        super().__init__({"i": In(stream.Signature(self._input_layout)),
                          "label": In(range(n_out)), "lr": In(shape(formats.lr)),
                          "o": Out(stream.Signature(self._output_layout))})

    formats = property(lambda self: self._formats)
    n_out = property(lambda self: self._n_out)
    input_layout = property(lambda self: self._input_layout)
    output_layout = property(lambda self: self._output_layout)

    def _term_bound(self) -> int:
        """The largest |Δy (Δy + 2(y − t))| of one output (the term's and ΔL_sum's widths follow from it).

        With W = 2^(ob−1) (y, ỹ ∈ [−W, W)) and T = 2^wf (t ∈ {0, T}): unsaturated, the term is
        (ỹ − t)² − (y − t)² with |ỹ − t|, |y − t| ≤ W + T; saturated at W − 1 (so y ≤ −1, y − t ∈ [−W − T, −1])
        it lies in [−(W − 1)(W + 1 + 2T), (W − 1)²]; saturated at −W (so y ≥ 1, y − t ∈ [1 − T, W)) in
        [2W − W², W² + 2WT − 2W]. Every case is within (W + T)²."""
        return ((1 << (self._formats.out.bits - 1)) + (1 << self._formats.weight.frac)) ** 2

    def _op_sum_shape(self) -> Shape:
        """Δy + 2(y − t) ∈ [−W − 2(W + T), (W − 1) + 2(W − 1)] (W, T as in :meth:`_term_bound`)."""
        w, t = 1 << (self._formats.out.bits - 1), 1 << self._formats.weight.frac
        return signed(_signed_bits(-3 * w - 2 * t, 3 * w - 3))

    def _operand_shapes(self):
        """``(half, a_shape, b_shape)``: the slots multiply a · b, a = Δy and b = Δy + 2(y − t) for a term,
        a = lr and b = dl (or dl >> 1) for dl·lr.

        ``half``: when g drops at least 2 fraction bits, ⌊dl·lr / 2⌋ = (dl >> 1)·lr + dl[0]·⌊lr / 2⌋ rounds to
        the same g (⌊(P + 2^(s−1)) / 2^s⌋ = ⌊(⌊P / 2⌋ + 2^(s−2)) / 2^(s−1)⌋), and dl >> 1 is one bit narrower:
        for the ``up5k`` formats 31 bits, two chunks like Δy + 2(y − t) (26 bits), so both products are the
        same 2 × 2 chunk pairs (a: 24 bits, Δy or lr)."""
        fm = self._formats
        half = fm.dl.frac + fm.lr.frac - fm.g.frac >= 2 and fm.dl.bits > 1
        a_shape = signed(max(fm.out.bits, fm.lr.bits + 1))
        b_shape = signed(max(self._op_sum_shape().width, fm.dl.bits - half))
        return half, a_shape, b_shape

    @property
    def slots(self) -> int:
        """Signed :data:`DSP_BITS` × :data:`DSP_BITS` multipliers, shared by the term and dl·lr (one DSP each)."""
        _, a_shape, b_shape = self._operand_shapes()
        return _pair_count(a_shape, b_shape, 0)

    @property
    def latency(self) -> int:
        """Cycles from accepting a non-last output to its Δy being valid on ``o``."""
        return 1

    @property
    def final_latency(self) -> int:
        """Cycles from accepting the last output of a sample to the transfer carrying ΔL_sum, dl and g."""
        return 6

    def elaborate(self, platform):
        m = Module()
        fm = self._formats
        wf = fm.weight.frac
        n = self._n_out

        # Both narrowings round half up (the dl and g formats' rounding): (x + 2^(s−1)) >> s. The increment is
        # added where an adder already is — dl's is the accumulator's start value, g's a bit of the adder
        # tree's input in the PRODUCT state — so each narrowing is a shift and a saturation, no adder.
        dl_shift = 2 * wf - fm.dl.frac
        half, a_shape, b_shape = self._operand_shapes()
        p_frac = fm.dl.frac + fm.lr.frac - half             # the tree's dl·lr: ⌊dl·lr / 2^half⌋
        g_shift = p_frac - fm.g.frac
        dl_bias = 1 << (dl_shift - 1) if dl_shift > 0 else 0

        k = Signal(range(n))
        bound = n * self._term_bound()
        acc = Signal(signed(_signed_bits(dl_bias - bound, dl_bias + bound)), init=dl_bias)   # ΔL_sum + dl_bias
        dy = Signal(shape(fm.out))
        dy_last = Signal(shape(fm.out))

        # ΔL_sum's term Δy·(Δy + 2(y − t)) is a three-stage pipeline — operands, product, accumulate — so
        # that no path holds an adder, a wide multiplier and the accumulator at once (the 60 MHz ECP5 target).
        p = self.i.payload
        target = Signal(signed(wf + 2))
        take = Signal()
        op_valid, op_sum = Signal(), Signal(self._op_sum_shape())
        m.d.comb += [
            target.eq((k == self.label) << wf),
            dy.eq(narrow(p.y_noisy - p.y, wf, fm.out)),          # sat_out(ỹ − y); no bits dropped
        ]
        # The shared multiplier slots compute one product a · b, chunk pair by chunk pair: the term (a = Δy,
        # b = Δy + 2(y − t)) or, in the PRODUCT state, dl·lr (a = lr, b = dl or dl >> 1). a is a register loaded
        # with lr in the DL state — the multiplexer sits in front of a flip-flop, which then packs with it —
        # and b selects between two registers (dl is held in o.payload.dl: o is idle from the last take to G).
        in_product, fsm_dl = Signal(), Signal()
        op_a, op_b = Signal(a_shape), Signal(b_shape)
        dl = self.o.payload.dl
        m.d.comb += op_b.eq(Mux(in_product, dl[1:].as_signed() if half else dl, op_sum))
        pairs, _ = partial_products(op_a, a_shape, op_b, b_shape, logic_bits=0)
        addends = []                                # (value, shift)
        for slot, (x, y, shift) in enumerate(pairs):
            o = Signal(signed(2 * DSP_BITS), name=f"slot{slot}_p")
            m.d.comb += o.eq(x * y)
            addends.append([o, shift])
        if half:                                    # ⌊dl·lr / 2⌋'s dl[0]·⌊lr / 2⌋, in the PRODUCT state only
            addends.append([Mux(in_product & dl[0], self.lr >> 1, 0), 0])
        # g's rounding increment 2^(g_shift − 1): one bit of a slot's addend, below its shift (zero there), set in
        # the PRODUCT state — an OR, not an add
        g_bit = g_shift - 1 if g_shift > 0 else None
        carriers = [v for v in addends[:len(pairs)] if g_bit is not None and v[1] > g_bit]
        if carriers:
            carrier = min(carriers, key=lambda v: v[1])
            carrier[0] = (carrier[0] << carrier[1]) | (in_product << g_bit)
            carrier[1] = 0
        g_bias = 1 << g_bit if carriers else 0
        total = sum(value << shift for value, shift in addends)
        # term: the adder tree's registered sum — the term being accumulated, or dl·lr (+ g_bias) after the
        # PRODUCT state (one register for both: a LUT driving two flip-flops packs with neither on iCE40). The
        # tree's partial sums may wrap at this width: the value it ends with fits, and the sum is modular.
        lr_max = (1 << fm.lr.bits) - 1
        term = Signal(signed(max(_signed_bits(-self._term_bound(), self._term_bound()),
                                 _signed_bits(fm.dl.min * lr_max, fm.dl.max * lr_max + g_bias))))
        term_valid = Signal()
        m.d.sync += [
            op_valid.eq(take), op_a.eq(Mux(fsm_dl, self.lr, dy)), op_sum.eq(dy + 2 * (p.y - target)),
            term_valid.eq(op_valid), term.eq(total),
        ]
        with m.If(term_valid):
            m.d.sync += acc.eq(acc + term)

        out_free = ~self.o.valid | self.o.ready
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # From the last take to G, o is idle (the take needed it free and sets no valid): its dl field holds dl.
        with m.FSM() as fsm:
            with m.State("ACCUMULATE"):
                m.d.comb += take.eq(self.i.valid & out_free)
                with m.If(take):
                    with m.If(k == n - 1):
                        m.d.sync += [dy_last.eq(dy), k.eq(0)]
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += [k.eq(k + 1), self.o.valid.eq(1),
                                     self.o.payload.eq(0), self.o.payload.dy.eq(dy)]
            with m.State("DRAIN"):                   # the last term is in the product stage
                m.next = "SUM"
            with m.State("SUM"):                     # ... and is being accumulated
                m.next = "DL"
            with m.State("DL"):                      # dl_bias makes the truncation round half up
                m.d.sync += dl.eq(narrow(acc, 2 * wf, fm.dl, "trunc" if dl_bias else None))
                m.next = "PRODUCT"
            with m.State("PRODUCT"):                 # the slots multiply dl·lr, term takes it (not accumulated)
                m.next = "G"
            with m.State("G"):
                with m.If(out_free):
                    m.d.sync += [
                        self.o.valid.eq(1),
                        self.o.payload.dy.eq(dy_last),
                        self.o.payload.dl_sum.eq(acc - dl_bias),
                        self.o.payload.g.eq(narrow(term, p_frac, fm.g, "trunc" if g_bias else None)),
                        self.o.payload.last.eq(1),
                        acc.eq(dl_bias),
                    ]
                    m.next = "ACCUMULATE"
        m.d.comb += self.i.ready.eq(fsm.ongoing("ACCUMULATE") & out_free)   # outside the FSM: see layer.py
        m.d.comb += [in_product.eq(fsm.ongoing("PRODUCT")), fsm_dl.eq(fsm.ongoing("DL"))]
        return m
