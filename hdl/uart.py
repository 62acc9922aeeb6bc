"""8N1 UART for the board tops: byte streams on the inside, two pins on the outside.

The bit time is ``divisor = round(clk_freq / baud)`` clock cycles (validated: at least 4 cycles per bit,
and the rounded rate within 2 % of the requested one, since a receiver at the far end samples mid-bit and
tolerates roughly ±4 % over a 10-bit frame in total).

* Transmitter: start bit (0), 8 data bits LSB first, stop bit (1); ``tx.ready`` only between frames.
* Receiver: the pin goes through a two-flop synchroniser; a falling edge starts a frame, the start bit is
  checked half a bit later (a glitch shorter than that is ignored), then each data bit and the stop bit are
  sampled one bit time apart (mid-bit). A low stop bit is a framing error (the byte is dropped). A UART
  cannot be back-pressured: a byte that completes while ``rx.ready`` is low is dropped and flagged as an
  overflow (the host link's receiver is always ready, so on the boards this never happens).
"""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UART", "UARTTransmitter", "UARTReceiver"]


def _divisor(clk_freq, baud):
    for name, value in (("clk_freq", clk_freq), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} = {value!r}: must be a positive integer (Hz / bit/s)")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"baud = {baud}: needs at least 4 clock cycles per bit at clk_freq = {clk_freq} "
                         f"(got {clk_freq / baud:.2f})")
    actual = clk_freq / divisor
    if abs(actual - baud) / baud > 0.02:
        raise ValueError(f"baud = {baud}: the nearest rate at clk_freq = {clk_freq} is {actual:.0f} "
                         f"({100 * (actual - baud) / baud:+.1f} %, more than 2 % off)")
    return divisor


class UARTTransmitter(wiring.Component):
    """``tx`` (In stream of 8) → ``pin`` (Out 1, idle high). Parameter: ``divisor`` (cycles per bit, ≥ 4)."""

    def __init__(self, *, divisor: int):
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"divisor = {divisor!r}: must be an integer >= 4 (clock cycles per bit)")
        self._divisor = divisor
        super().__init__({"tx": In(stream.Signature(8)), "pin": Out(1, init=1)})

    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10)                 # stop, data[7:0], start — shifted out LSB first
        bits = Signal(range(11))
        timer = Signal(range(self._divisor))
        m.d.comb += self.tx.ready.eq(bits == 0)
        with m.If(bits == 0):
            with m.If(self.tx.valid):
                m.d.sync += [shift.eq((1 << 9) | (self.tx.payload << 1)), bits.eq(10), timer.eq(0)]
        with m.Else():
            m.d.sync += self.pin.eq(shift[0])
            with m.If(timer == self._divisor - 1):
                m.d.sync += [timer.eq(0), shift.eq(shift >> 1), bits.eq(bits - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer + 1)
        with m.If(bits == 0):
            m.d.sync += self.pin.eq(1)
        return m


class UARTReceiver(wiring.Component):
    """``pin`` (In 1) → ``rx`` (Out stream of 8) and ``errors`` (framing, overflow: one-cycle strobes).

    Parameter: ``divisor`` (cycles per bit, ≥ 4). Latency: a byte is valid on ``rx`` from the middle of its
    stop bit plus the synchroniser's 2 cycles (:attr:`latency` cycles after the start edge at the pin).
    """

    def __init__(self, *, divisor: int):
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"divisor = {divisor!r}: must be an integer >= 4 (clock cycles per bit)")
        self._divisor = divisor
        super().__init__({"pin": In(1, init=1), "rx": Out(stream.Signature(8)),
                          "errors": Out(data.StructLayout({"framing": 1, "overflow": 1}))})

    divisor = property(lambda self: self._divisor)

    @property
    def latency(self) -> int:
        """Cycles from the start bit's falling edge at the pin to ``rx.valid``."""
        return 2 + self._divisor // 2 + 9 * self._divisor + 1

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.pin, pin, init=1)
        timer = Signal(range(d))
        bits = Signal(range(9))
        shift = Signal(8)
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += self.rx.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):                   # half a bit later: still low?
                with m.If(timer == 0):
                    with m.If(~pin):
                        m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq((pin << 7) | (shift >> 1)), bits.eq(bits + 1), timer.eq(d - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(~pin):
                        m.d.comb += self.errors.framing.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(self.rx.valid & ~self.rx.ready):
                            m.d.comb += self.errors.overflow.eq(1)
                        with m.Else():
                            m.d.sync += [self.rx.payload.eq(shift), self.rx.valid.eq(1)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):                   # wait for the line to go idle before hunting again
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UART(wiring.Component):
    """Transmitter + receiver at ``baud`` from a ``clk_freq`` clock (keyword-only, validated).

    Ports: ``tx`` (In stream of 8, bytes to send), ``rx`` (Out stream of 8, bytes received),
    ``tx_pin`` (Out 1, idle high), ``rx_pin`` (In 1), ``errors`` (framing, overflow strobes).
    """

    def __init__(self, *, clk_freq: int, baud: int):
        self._divisor = _divisor(clk_freq, baud)
        self._clk_freq, self._baud = clk_freq, baud
        super().__init__({"tx": In(stream.Signature(8)), "rx": Out(stream.Signature(8)),
                          "tx_pin": Out(1, init=1), "rx_pin": In(1, init=1),
                          "errors": Out(data.StructLayout({"framing": 1, "overflow": 1}))})

    clk_freq = property(lambda self: self._clk_freq)
    baud = property(lambda self: self._baud)
    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.transmitter = tx = UARTTransmitter(divisor=self._divisor)
        m.submodules.receiver = rx = UARTReceiver(divisor=self._divisor)
        wiring.connect(m, wiring.flipped(self.tx), tx.tx)
        wiring.connect(m, rx.rx, wiring.flipped(self.rx))
        m.d.comb += [self.tx_pin.eq(tx.pin), rx.pin.eq(self.rx_pin), self.errors.eq(rx.errors)]
        return m
