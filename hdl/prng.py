"""xorshift32 PRNG lane — the gateware twin of ``golden_model/prng.py`` (bit for bit).

One lane holds a 32-bit state s. A *draw* returns ``xorshift32(s)`` (shifts 13, 17, 5) and makes it the
new state, exactly as :meth:`XorShift32Bank.next` does. The host computes lane seeds
(:func:`golden_model.prng.seed_state`, which needs multipliers the fabric does not) and writes them in
through the ``seed``/``load`` port.
"""


from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Xorshift32", "xorshift32_next"]

_MASK32 = 0xFFFF_FFFF


def xorshift32_next(state):
    """The combinational xorshift32 step on a 32-bit Amaranth value (three shift/XOR stages)."""
    s = state ^ (state << 13)[:32]
    s = s ^ (s >> 17)
    return (s ^ (s << 5)[:32])[:32]


class Xorshift32(wiring.Component):
    """One xorshift32 lane.

    Ports:
        seed (In 32), load (In 1): when ``load`` is high the state becomes ``seed`` at the next edge
            (``load`` wins over ``en``). A zero seed is a fixed point of xorshift; the host never writes
            one (``seed_state`` never returns 0).
        en (In 1): draw — the state advances to ``word`` at the next edge.
        word (Out 32): the value the next draw returns, ``xorshift32(state)``; valid in the cycle ``en``
            is high (:attr:`latency` = 0 cycles from ``en`` to the drawn word).
        state (Out 32): the current state (the last word drawn, or the seed), for read-back.

    The state after reset is ``reset_seed`` (non-zero), so an unseeded lane is never stuck at 0; benches
    and the controller always load a seed before drawing.
    """

    seed: In(32)
    load: In(1)
    en: In(1)
    word: Out(32)
    state: Out(32)

    def __init__(self, *, reset_seed: int = 0x6D2B79F5):
        if not isinstance(reset_seed, int) or not 0 < reset_seed <= _MASK32:
            raise ValueError(f"reset_seed = {reset_seed!r}: must be an integer in [1, 2^32 − 1] "
                             "(0 is a fixed point of xorshift32)")
        self._reset_seed = reset_seed
        super().__init__()

    @property
    def reset_seed(self) -> int:
        return self._reset_seed

    @property
    def latency(self) -> int:
        """Cycles from a draw (``en``) to its word on ``word``: 0, the word is combinational."""
        return 0

    def elaborate(self, platform):
        m = Module()
        state = Signal(unsigned(32), init=self._reset_seed)
        m.d.comb += [self.word.eq(xorshift32_next(state)), self.state.eq(state)]
        with m.If(self.load):
            m.d.sync += state.eq(self.seed)
        with m.Elif(self.en):
            m.d.sync += state.eq(self.word)
        return m
