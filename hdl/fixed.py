"""Q-format gateware helpers: the HDL twin of ``loco_fpga.qformat`` (SPEC §4), driven by the same objects.

A :class:`~loco_fpga.qformat.QFormat` gives the shape (:func:`shape`); narrowing a wider value drops
fraction bits with one of the model's rounding modes and then saturates, never wraps:

* ``half-up``    — ``(x + 2^(s−1)) >> s`` (add-and-shift, ties towards +∞),
* ``trunc``      — ``x >> s`` (arithmetic shift, floor),
* ``stochastic`` — ``(x + r) >> s`` with ``r`` the top ``s`` bits of a PRNG word (an input).

All helpers are combinational. Additions are done at full width (Amaranth widens ``+`` by one bit), so the
rounding increment can never overflow before saturation.
"""

from amaranth import Cat, Const, Module, Mux, Shape, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import ROUNDING_MODES, QFormat, narrow_mode

__all__ = ["shape", "shift_round", "saturate", "at_least", "times", "narrow", "narrow_mode", "Narrow"]


def shape(fmt: QFormat) -> Shape:
    """The Amaranth shape of a Q format: ``signed(bits)`` or ``unsigned(bits)``."""
    if not isinstance(fmt, QFormat):
        raise TypeError(f"fmt = {fmt!r}: expected a loco_fpga.qformat.QFormat")
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def shift_round(value, shift: int, mode: str, rand=None):
    """Drop ``shift`` fraction bits of ``value`` with rounding ``mode`` (``shift`` ≤ 0: exact left shift).

    ``rand`` (stochastic only) is an unsigned value of exactly ``shift`` bits.
    """
    if not isinstance(shift, int):
        raise TypeError(f"shift = {shift!r}: expected an int")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"mode = {mode!r}: expected one of {', '.join(ROUNDING_MODES)}")
    if shift <= 0:
        return value << -shift
    if mode == "half-up":
        return (value + (1 << (shift - 1))) >> shift
    if mode == "trunc":
        return value >> shift
    if rand is None:
        raise ValueError("stochastic rounding needs PRNG bits: pass rand")
    rand_shape = Shape.cast(rand.shape())
    if rand_shape.signed or rand_shape.width != shift:
        raise ValueError(f"rand has shape {rand_shape!r}: stochastic rounding of {shift} bits needs "
                         f"unsigned({shift})")
    return (value + rand) >> shift


def saturate(value, fmt: QFormat):
    """Clamp ``value`` to ``[fmt.min, fmt.max]`` and return it in :func:`shape` ``(fmt)``.

    The formats span their whole shape, so a value is in range when the bits it has above the format's are copies
    of the format's sign bit (signed) or zero (unsigned): bit tests, not two comparisons — on iCE40 a comparison
    is a carry chain whose cells hold nothing else."""
    value = Value.cast(value)
    width, is_signed, bits = len(value), value.shape().signed, fmt.bits
    top = Const(fmt.max, shape(fmt)), Const(fmt.min, shape(fmt))
    if is_signed and fmt.signed and width > bits:
        high = value[bits - 1:]
        clamped = Mux(high.all() | ~high.any(), value[:bits], Mux(value[-1], top[1], top[0]))
    elif not is_signed and fmt.signed and width > bits - 1:
        clamped = Mux(value[bits - 1:].any(), top[0], value[:bits])
    elif is_signed and not fmt.signed:
        over = value[bits:width - 1].any() if width - 1 > bits else Const(0)
        clamped = Mux(value[-1], 0, Mux(over, top[0], value[:bits]))
    elif not is_signed and not fmt.signed and width > bits:
        clamped = Mux(value[bits:].any(), top[0], value[:bits])
    else:                                   # the value's shape fits the format: extend it
        clamped = Cat(value, (value[-1] if is_signed else Const(0)).replicate(bits - width))
    bits_ = Value.cast(clamped)[:bits]
    return bits_.as_signed() if fmt.signed else bits_.as_unsigned()


def times(value, const: int):
    """``value · const`` for a constant ≥ 0 as shifts and adds (a ``*`` by a constant can take a DSP slice)."""
    if isinstance(const, bool) or not isinstance(const, int) or const < 0:
        raise ValueError(f"const = {const!r}: expected an integer ≥ 0")
    value = Value.cast(value)
    terms = [value << i for i in range(const.bit_length()) if const >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


def at_least(value, const: int):
    """``value >= const`` for a constant: the same 1-bit result as Amaranth's ``>=``, built from bit tests.

    On iCE40 Yosys turns every ``<``/``>=`` into a carry chain whose cells hold nothing else, even against a
    constant; this is plain logic instead. Signed values are compared in offset binary (sign bit inverted,
    ``const`` + 2^(w−1)). For an unsigned w-bit v and 0 < c < 2^w: v ≥ c ⇔ v > c − 1 ⇔ at some bit i where
    c − 1 has a 0, v has a 1 and the bits above i are equal — one term per zero bit of c − 1."""
    if isinstance(const, bool) or not isinstance(const, int):
        raise TypeError(f"const = {const!r}: expected an int")
    value = Value.cast(value)
    width = len(value)
    if value.shape().signed:
        value, const = Cat(value[:width - 1], ~value[width - 1]), const + (1 << (width - 1))
    if const <= 0:
        return Const(1, 1)
    if const >= 1 << width:
        return Const(0, 1)
    below = const - 1                         # v ≥ const ⇔ v > below
    terms = [value[i] & (value[i + 1:] == below >> (i + 1) if i + 1 < width else Const(1, 1))
             for i in range(width) if not (below >> i) & 1]
    if not terms:                             # below = 2^w − 1 is impossible here (const < 2^w)
        return Const(0, 1)
    result = terms[0]
    for term in terms[1:]:
        result = result | term
    return result


def narrow(value, src_frac: int, fmt: QFormat, mode: str | None = None, rand=None):
    """Re-scale ``value`` (``src_frac`` fraction bits) to ``fmt``: round, then saturate (``qformat.narrow``)."""
    return saturate(shift_round(value, src_frac - fmt.frac, narrow_mode(fmt, mode), rand), fmt)


class Narrow(wiring.Component):
    """Combinational narrowing of a ``src_shape`` value with ``src_frac`` fraction bits into ``fmt``.

    Ports: ``i`` (In ``src_shape``), ``o`` (Out ``shape(fmt)``), and for ``stochastic`` rounding
    ``rand`` (In ``unsigned(src_frac − fmt.frac)``: the top bits of a PRNG word). :attr:`latency` = 0.
    """

    def __init__(self, *, src_shape, src_frac: int, fmt: QFormat, mode: str | None = None):
        try:
            src_shape = Shape.cast(src_shape)
        except TypeError as error:
            raise TypeError(f"src_shape = {src_shape!r}: not a shape") from error
        if not isinstance(src_frac, int) or src_frac < 0:
            raise ValueError(f"src_frac = {src_frac!r}: must be a non-negative int")
        self._fmt = fmt
        out_shape = shape(fmt)
        self._mode = narrow_mode(fmt, mode)
        self._src_shape, self._src_frac = src_shape, src_frac
        self._shift = src_frac - fmt.frac
        members = {"i": In(src_shape), "o": Out(out_shape)}
        if self._mode == "stochastic":
            if not 1 <= self._shift <= 32:
                raise ValueError(f"src_frac = {src_frac}: stochastic rounding into {fmt.label()} drops "
                                 f"{self._shift} bits; it needs 1..32 (one PRNG word)")
            members["rand"] = In(unsigned(self._shift))
        super().__init__(members)

    fmt = property(lambda self: self._fmt)
    mode = property(lambda self: self._mode)
    src_shape = property(lambda self: self._src_shape)
    src_frac = property(lambda self: self._src_frac)
    #: fraction bits dropped (negative: the value is shifted left, exactly)
    shift = property(lambda self: self._shift)

    @property
    def latency(self) -> int:
        return 0

    def elaborate(self, platform):
        m = Module()
        rand = self.rand if self._mode == "stochastic" else None
        m.d.comb += self.o.eq(narrow(self.i, self._src_frac, self._fmt, self._mode, rand))
        return m
