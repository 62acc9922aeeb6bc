"""DFA in gateware: the output error and the fixed random feedback of ``FixedRule.step_q`` with ``rule.name = "dfa"``
(golden_model/fixed.py), bit for bit.

* :class:`OutputError` — per output k, as the clean outputs y_k stream past (index order):
  e_k = narrow((y_k − t_k) · lr_reg → fmts.g, half-up), the product read with out_frac + lr_frac + sigma_shift − 1
  fraction bits (``FixedRule.output_error``; t_k = 2^wf·[k = label]).
* :class:`FeedbackUnit` — one per hidden layer l: δ_i = narrow((Σ_k b_ik e_k) · fb → fmts.g, half-up) ·
  1[0 < c_i < T] for i = 0 … n_l − 1 in order, b_ik = ±1 the bits of the row-major n_l × n_L feedback matrix
  (``rules_feedback.feedback_matrix``): entry r·n_L + k is bit (r·n_L + k) mod 32 of word ⌊(r·n_L + k)/32⌋ of
  PRNG lane (DFA, DFA_LANE + l), bit 1 → +1. The matrix is never stored: the lane restarts from its seed
  state (a register the host loads once) every sample and is consumed one bit per cycle.
"""

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import narrow, shape
from .prng import Xorshift32

__all__ = ["OutputError", "FeedbackUnit"]


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class OutputError(wiring.Component):
    """e_k of the delta readout from the clean outputs.

    Ports: ``i`` (In stream {y: out format}; one per output, index order; always ready), ``label`` (In), ``lr``
    (In lr format; stable while the sample's outputs pass), ``o`` (Out stream {e: g format}; a register, valid
    never waits on ready; n_L transfers per sample). ``i`` is ready while the output register is free or taken.
    :attr:`latency` = 1.
    """

    def __init__(self, *, formats: Formats, n_out: int):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        _check_int("n_out", n_out, 1, 1 << 16)
        self._formats, self._n_out = formats, n_out
        super().__init__({"i": In(stream.Signature(data.StructLayout({"y": shape(formats.out)}))),
                          "label": In(range(n_out)), "lr": In(shape(formats.lr)),
                          "o": Out(stream.Signature(data.StructLayout({"e": shape(formats.g)})))})

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        fm = self._formats
        k = Signal(range(self._n_out))
        valid = Signal()
        e = Signal(shape(fm.g))
        one = 1 << fm.weight.frac
        err = Signal(signed(fm.out.bits + 1))
        m.d.comb += err.eq(self.i.payload.y - Mux(k == self.label, one, 0))
        value = narrow(err * self.lr, fm.out.frac + fm.lr.frac + fm.sigma_shift - 1, fm.g, "half-up")
        free = ~valid | self.o.ready
        m.d.comb += [self.i.ready.eq(free), self.o.valid.eq(valid), self.o.payload.e.eq(e)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [valid.eq(1), e.eq(value), k.eq(Mux(k == self._n_out - 1, 0, k + 1))]
        return m


class FeedbackUnit(wiring.Component):
    """δ of one hidden layer from the output error (see the module docstring).

    Parameters (keyword-only): ``formats``, ``n_rows`` (n_l), ``n_err`` (n_L), ``fb`` (the scale 1/√n_L in
    ``formats.fb`` LSBs).

    Ports:
        err (In stream {e: g format}): e_0 … e_{n_L − 1} of the sample (always ready until all are in).
        active (In n_rows), known (In 0 … n_rows): bit i = 1[0 < c_i < T] of the sample, final once ``known`` > i
            (the hidden layer's counts arrive one by one, and back-pressure on them can hold them past the errors):
            row i's δ waits for it.
        o (Out stream {e: g format}): δ_0 … δ_{n_l − 1}.
        seed, seed_en (In): the lane's start state (the host writes ``seed_state(feedback_seed, DFA, l)``).
    Timing: after the last ``err`` transfer, row i's δ transfers (i + 1)·(n_L + 1) cycles later with ``o``
    always ready and its mask bit known by then (:meth:`done_cycles`).
    """

    def __init__(self, *, formats: Formats, n_rows: int, n_err: int, fb: int):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        _check_int("n_rows", n_rows, 1, 1 << 16)
        _check_int("n_err", n_err, 1, 1 << 16)
        _check_int("fb", fb, 0, formats.fb.max)
        self._formats, self._n, self._n_err, self._fb = formats, n_rows, n_err, fb
        layout = data.StructLayout({"e": shape(formats.g)})
        super().__init__({"err": In(stream.Signature(layout)), "active": In(n_rows), "known": In(range(n_rows + 1)),
                          "o": Out(stream.Signature(layout)), "seed": In(32), "seed_en": In(1)})

    n_rows = property(lambda self: self._n)

    def done_cycles(self) -> int:
        """Cycles from the last ``err`` transfer to the last ``o`` transfer (``o`` always ready)."""
        return self._n * (self._n_err + 1)

    def elaborate(self, platform):
        m = Module()
        fm, n, n_err = self._formats, self._n, self._n_err
        m.submodules.lane = lane = Xorshift32()
        start = Signal(32)
        with m.If(self.seed_en):
            m.d.sync += start.eq(self.seed)
        errs = [Signal(shape(fm.g), name=f"e{k}") for k in range(n_err)]
        got = Signal(range(n_err + 1))
        row = Signal(range(n))
        k = Signal(range(n_err))
        bit = Signal(5)
        acc = Signal(signed(fm.g.bits + max(1, n_err.bit_length()) + 1))
        delta = Signal(shape(fm.g))
        m.d.comb += [lane.seed.eq(start)]
        sign = lane.word.bit_select(bit, 1)
        e_k = Array(errs)[k]
        with m.FSM() as fsm:
            with m.State("COLLECT"):
                with m.If(self.err.valid):
                    m.d.sync += [Array(errs)[got].eq(self.err.payload.e), got.eq(got + 1)]
                    with m.If(got == n_err - 1):
                        m.d.sync += [got.eq(0), row.eq(0), k.eq(0), bit.eq(0), acc.eq(0)]
                        m.next = "SUM"
            with m.State("SUM"):                       # one bit (and one e_k) per cycle
                total = acc + Mux(sign, e_k, -e_k)
                m.d.sync += bit.eq(bit + 1)
                with m.If(k == n_err - 1):
                    m.d.sync += [k.eq(0), acc.eq(0),
                                 delta.eq(narrow(total * self._fb, fm.g.frac + fm.fb.frac, fm.g, "half-up"))]
                    m.next = "EMIT"
                with m.Else():
                    m.d.sync += [k.eq(k + 1), acc.eq(total)]
            with m.State("EMIT"):
                with m.If(self.o.valid & self.o.ready):
                    with m.If(row == n - 1):
                        m.next = "COLLECT"
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                        m.next = "SUM"
        # outside the FSM: continuous assignments (Icarus evaluates an ``always @*`` block only once one of its
        # inputs changes, so a ready/valid set inside a state would never be seen at time 0; docs/hdl_learning.md)
        # row i's δ, masked by its bit once that is known
        m.d.comb += [self.err.ready.eq(fsm.ongoing("COLLECT")),
                     self.o.valid.eq(fsm.ongoing("EMIT") & (self.known > row)),
                     self.o.payload.e.eq(Mux(self.active.bit_select(row, 1), delta, 0)), lane.en.eq(fsm.ongoing("SUM") & (bit == 31)),
                     lane.load.eq(fsm.ongoing("COLLECT") & self.err.valid & (got == n_err - 1))]
        return m
