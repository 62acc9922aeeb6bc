"""Sequential integer arithmetic of the fixed-point contract: the restoring divider and square root.

``loco_fpga.qformat`` specifies every division of the model as the sign–magnitude *restoring divider*
(:func:`~loco_fpga.qformat.div_trunc`: the magnitude ⌊|a| / b⌋, sign applied afterwards) and every square root
as the *restoring square root* (:func:`~loco_fpga.qformat.isqrt` = ⌊√a⌋). These are the unsigned cores; the
callers (``hdl/solver.py``, ``hdl/clusters.py``) apply the signs.

Both are one-bit-per-cycle iterative units (no multiplier, one subtractor) with a ``lib.stream`` operand
port ``i`` and result port ``o``. ``o.valid`` never waits on ``o.ready``; a new operand is accepted only
while the unit is idle and its previous result has been taken.
"""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Divider", "Isqrt"]

_MAX_WIDTH = 256


def _check_width(name, value, lo=1, hi=_MAX_WIDTH):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class Divider(wiring.Component):
    """Unsigned restoring divider: ``quotient = ⌊dividend / divisor⌋``, ``remainder = dividend mod divisor``.

    Parameters (keyword-only): ``dividend_width``, ``divisor_width`` (operand widths), ``quotient_width``
    (Q, default ``dividend_width``). With Q < ``dividend_width`` only the low Q quotient bits are developed
    (Q cycles instead of ``dividend_width``) and ``overflow`` says that the true quotient is ≥ 2^Q — which is
    all a caller that saturates the quotient to fewer than Q bits needs (``(dividend >> Q) ≥ divisor``
    exactly when the quotient is ≥ 2^Q).

    Ports:
        i (In stream of :attr:`operand_layout` = {dividend, divisor}).
        o (Out stream of :attr:`result_layout` = {quotient: Q, remainder: divisor_width, overflow: 1}).
            ``overflow`` = quotient ≥ 2^Q, or divisor = 0; then ``quotient`` = 2^Q − 1 and ``remainder``
            = 0 (the clamped values, not the true ones).

    Timing: :attr:`latency` = Q + 1 cycles from the edge that accepts the operands to the edge after which
    ``o.valid`` is high; a new operand can be accepted one cycle after the result is taken, so back-to-back
    divisions take :attr:`interval` = Q + 3 cycles each with an always-ready sink.
    """

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int | None = None):
        _check_width("dividend_width", dividend_width)
        _check_width("divisor_width", divisor_width)
        if quotient_width is None:
            quotient_width = dividend_width
        _check_width("quotient_width", quotient_width, 1, dividend_width)
        self._wn, self._wd, self._wq = dividend_width, divisor_width, quotient_width
        self._operand_layout = data.StructLayout({"dividend": unsigned(dividend_width),
                                                  "divisor": unsigned(divisor_width)})
        self._result_layout = data.StructLayout({"quotient": unsigned(quotient_width),
                                                 "remainder": unsigned(divisor_width), "overflow": 1})
        super().__init__({"i": In(stream.Signature(self._operand_layout)),
                          "o": Out(stream.Signature(self._result_layout))})

    dividend_width = property(lambda self: self._wn)
    divisor_width = property(lambda self: self._wd)
    quotient_width = property(lambda self: self._wq)
    operand_layout = property(lambda self: self._operand_layout)
    result_layout = property(lambda self: self._result_layout)

    @property
    def latency(self) -> int:
        """Edges from accepting the operands to ``o.valid`` (one per quotient bit, plus the load)."""
        return self._wq + 1

    @property
    def interval(self) -> int:
        """Cycles per division, back to back, sink always ready."""
        return self._wq + 3

    def elaborate(self, platform):
        m = Module()
        wq, wd = self._wq, self._wd
        divisor = Signal(wd)
        rem = Signal(wd + 1)             # < divisor before each step, so 2·rem + 1 < 2^(wd + 1)
        quo = Signal(wq)                 # dividend's low bits shift out at the top, quotient bits in at the bottom
        count = Signal(range(wq + 1))
        overflow = Signal()

        trial = Signal(wd + 2)
        m.d.comb += trial.eq(Cat(quo[wq - 1], rem))           # rem·2 + next dividend bit
        fits = trial >= divisor

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid & ~self.o.valid):
                    top = self.i.payload.dividend >> wq
                    m.d.sync += [divisor.eq(self.i.payload.divisor), rem.eq(top),
                                 quo.eq(self.i.payload.dividend[:wq]), count.eq(wq),
                                 overflow.eq(top >= self.i.payload.divisor)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += [rem.eq(Mux(fits, trial - divisor, trial)), quo.eq(Cat(fits, quo[:wq - 1])),
                             count.eq(count - 1)]
                with m.If(count == 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [self.o.valid.eq(1),
                             self.o.payload.quotient.eq(Mux(overflow, (1 << wq) - 1, quo)),
                             self.o.payload.remainder.eq(Mux(overflow, 0, rem)),
                             self.o.payload.overflow.eq(overflow)]
                m.next = "IDLE"
        # outside the FSM: a function of registers only, so an event-driven simulator (Icarus) evaluates it
        # from time 0 instead of waiting for the state to change
        m.d.comb += self.i.ready.eq(fsm.ongoing("IDLE") & ~self.o.valid)
        return m


class Isqrt(wiring.Component):
    """Unsigned restoring (digit-by-digit) square root: ``root = ⌊√radicand⌋``, ``remainder = radicand − root²``.

    Parameters (keyword-only): ``width`` (of the radicand). The root has R = ⌈width / 2⌉ bits.

    Ports:
        i (In stream of {radicand: width}).
        o (Out stream of {root: R, remainder: R + 1}).

    Timing: :attr:`latency` = R + 1 edges from accepting the radicand to ``o.valid`` (one per root bit, plus
    the load); :attr:`interval` = R + 3 cycles per root back to back.
    """

    def __init__(self, *, width: int):
        _check_width("width", width)
        self._width = width
        self._root_width = (width + 1) // 2
        self._operand_layout = data.StructLayout({"radicand": unsigned(width)})
        self._result_layout = data.StructLayout({"root": unsigned(self._root_width),
                                                 "remainder": unsigned(self._root_width + 1)})
        super().__init__({"i": In(stream.Signature(self._operand_layout)),
                          "o": Out(stream.Signature(self._result_layout))})

    width = property(lambda self: self._width)
    root_width = property(lambda self: self._root_width)
    operand_layout = property(lambda self: self._operand_layout)
    result_layout = property(lambda self: self._result_layout)

    @property
    def latency(self) -> int:
        return self._root_width + 1

    @property
    def interval(self) -> int:
        return self._root_width + 3

    def elaborate(self, platform):
        m = Module()
        r = self._root_width
        bits = Signal(2 * r)             # radicand, two bits shifted out at the top per step
        rem = Signal(r + 2)              # ≤ 2·root, so it fits R + 2 bits (before the next two bits)
        root = Signal(r)
        count = Signal(range(r + 1))

        trial_rem = Signal(r + 4)
        trial_sub = Signal(r + 2)
        m.d.comb += [trial_rem.eq(Cat(bits[2 * r - 2:], rem)),      # rem·4 + next two bits
                     trial_sub.eq(Cat(1, 0, root))]                 # root·4 + 1
        fits = trial_rem >= trial_sub

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid & ~self.o.valid):
                    m.d.sync += [bits.eq(self.i.payload.radicand), rem.eq(0), root.eq(0), count.eq(r)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += [rem.eq(Mux(fits, trial_rem - trial_sub, trial_rem)),
                             root.eq(Cat(fits, root[:r - 1])), bits.eq(bits << 2), count.eq(count - 1)]
                with m.If(count == 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.root.eq(root),
                             self.o.payload.remainder.eq(rem)]
                m.next = "IDLE"
        # outside the FSM: a function of registers only, so an event-driven simulator (Icarus) evaluates it
        # from time 0 instead of waiting for the state to change
        m.d.comb += self.i.ready.eq(fsm.ongoing("IDLE") & ~self.o.valid)
        return m
