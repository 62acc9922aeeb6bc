# amaranth: UnusedElaboratable=no
# (a board top builds its core, UART and inner design in __init__ to check the clock and baud eagerly; a top that
# is only inspected — PLL settings, sizes — never elaborates them)
"""Board tops: a byte-stream design (the accelerator top, or ``LinkTestTop``) on a real board's pins.

One job: put an *inner* component with byte streams (``rx``: In stream of 8, ``tx``: Out stream of 8, and
optionally ``busy``/``error`` outputs) behind an 8N1 UART on a board, with the board's clock (through a PLL
to the requested frequency), a reset and LEDs. Three boards, through amaranth-boards (SPEC §5 "Board tops"):

=============== ================== ======== ================================ ====================================
board           part               clock in UART pins                        reset
=============== ================== ======== ================================ ====================================
icebreaker      iCE40UP5K-SG48     12 MHz   FTDI channel B (rx 6, tx 9)      user button (pin 10) + power-on
ulx3s-85f       LFE5U-85F-6BG381   25 MHz   FT231X (rx M1, tx L4)            F1 button (R1) + power-on
orangecrab-85f  LFE5U-85F-8MG285   48 MHz   Feather header 0 = rx (N17),     user button: short press resets;
                                            1 = tx (M18): a 3.3 V USB-UART   held 1 s reboots to the DFU
                                            adapter (the USB port is DFU     bootloader (PROGRAMN)
                                            only)
=============== ================== ======== ================================ ====================================

* **Clock**: :func:`ice40_pll` (``SB_PLL40_PAD`` on the oscillator pin, SIMPLE feedback) or :func:`ecp5_pll`
  (``EHXPLLL``, CLKOP feedback) find the divider settings whose output is nearest the requested clock; the
  achieved frequency (:attr:`BoardTop.clk_hz`) is what the UART divisor and the timing constraint use.
  Requesting the oscillator's own frequency bypasses the PLL.
* **Reset**: the ``sync`` domain is held in reset (through a ``ResetSynchronizer``) until the PLL locks and a
  power-on counter of 2^:data:`POR_BITS` cycles has run out (iCE40 block RAMs read as zero for ~3 µs after
  configuration), and while the reset button is pressed.
* **LEDs** (:class:`BoardCore`): ``heartbeat`` (the design is clocked and out of reset: ~1 Hz blink), ``busy``
  (the inner top's ``busy``), ``activity`` (a byte was received or sent) and ``error`` (UART framing error or
  overflow, or the inner top's ``error``), each event stretched so that it is visible (``busy``/``activity``
  ≥ 1/16 s, ``error`` ≥ 1/2 s). Which LED shows what is in :data:`BOARDS` (``leds``) and docs/boards.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from amaranth import ClockDomain, ClockSignal, Instance, Module, Signal
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from loco_fpga.hdl.link import BlockFIFO
from loco_fpga.hdl.uart import UART

__all__ = ["BOARDS", "Board", "BoardCore", "BoardTop", "PllSettings", "ice40_pll", "ecp5_pll", "POR_BITS",
           "default_inner", "board_inner", "inner_description", "Echo", "LED_LAYOUT"]

#: the states the LEDs show (1 = on)
LED_LAYOUT = data.StructLayout({"heartbeat": 1, "busy": 1, "activity": 1, "error": 1})
#: bytes buffered between the inner top's ``tx`` and the UART transmitter: one register (it takes a byte every
#: other cycle; the transmitter takes one per 10 bit times). Deeper, the FIFO's storage would be a block RAM
#: (:class:`BlockFIFO`), and the UP5K has none to spare.
TX_FIFO_DEPTH = 1
#: power-on reset: 2^POR_BITS cycles after PLL lock (≥ 15 µs at every supported clock, ~1.4 ms at 48 MHz)
POR_BITS = 16


# -- PLL settings ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PllSettings:
    """Divider settings of one PLL and the output frequency they give (``f_out_hz``)."""
    primitive: str
    f_in_hz: int
    f_out_hz: float
    params: dict
    f_vco_hz: float
    f_pfd_hz: float


def _check_freq(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} = {value!r}: must be a positive frequency in Hz")


def ice40_pll(f_in_hz: int, f_out_hz: float) -> PllSettings:
    """``SB_PLL40_*`` settings (SIMPLE feedback) nearest ``f_out_hz``.

    iCE40 sysCLOCK PLL (Lattice TN1251): f_pfd = f_in/(DIVR+1) ∈ [10, 133] MHz, f_vco = f_pfd·(DIVF+1) ∈
    [533, 1066] MHz, f_out = f_vco/2^DIVQ ∈ [16, 275] MHz; DIVR 0…15, DIVF 0…127, DIVQ 1…6; FILTER_RANGE from
    f_pfd (icepll's table). Raises ValueError when no setting is within 1 % of the request.
    """
    _check_freq("f_in_hz", f_in_hz)
    _check_freq("f_out_hz", f_out_hz)
    best = None
    for divr in range(16):
        f_pfd = f_in_hz / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = f_vco / (1 << divq)
                if not 16e6 <= f_out <= 275e6:
                    continue
                err = abs(f_out - f_out_hz)
                if best is None or err < best[0] - 1e-3:
                    best = (err, divr, divf, divq, f_pfd, f_vco, f_out)
    if best is None or best[0] > 0.01 * f_out_hz:
        raise ValueError(f"f_out_hz = {f_out_hz!r}: the iCE40 PLL cannot make it from {f_in_hz / 1e6:g} MHz "
                         f"(outputs 16–275 MHz; within 1 %)")
    _, divr, divf, divq, f_pfd, f_vco, f_out = best
    filter_range = next(i + 1 for i, limit in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, math.inf))
                        if f_pfd < limit)
    return PllSettings("SB_PLL40_PAD", int(f_in_hz), f_out,
                       {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range}, f_vco, f_pfd)


def ecp5_pll(f_in_hz: int, f_out_hz: float) -> PllSettings:
    """``EHXPLLL`` settings (feedback from CLKOP) nearest ``f_out_hz``.

    ECP5 sysCLOCK PLL (Lattice TN1263, ecppll's limits): f_pfd = f_in/CLKI_DIV ∈ [3.125, 400] MHz, f_out =
    f_pfd·CLKFB_DIV, f_vco = f_out·CLKOP_DIV ∈ [400, 800] MHz, f_out ∈ [3.125, 400] MHz; CLKI_DIV 1…128,
    CLKFB_DIV 1…80, CLKOP_DIV 1…128. Raises ValueError when no setting is within 1 % of the request.
    """
    _check_freq("f_in_hz", f_in_hz)
    _check_freq("f_out_hz", f_out_hz)
    best = None
    for clki in range(1, 129):
        f_pfd = f_in_hz / clki
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f_out = f_pfd * clkfb
            if not 3.125e6 <= f_out <= 400e6:
                continue
            err = abs(f_out - f_out_hz)
            if best is not None and err >= best[0] - 1e-3:
                continue
            op = math.ceil(400e6 / f_out)          # the smallest divider that puts the VCO in range
            if op > 128 or f_out * op > 800e6:
                continue
            best = (err, clki, clkfb, op, f_pfd, f_out * op, f_out)
    if best is None or best[0] > 0.01 * f_out_hz:
        raise ValueError(f"f_out_hz = {f_out_hz!r}: the ECP5 PLL cannot make it from {f_in_hz / 1e6:g} MHz "
                         f"(outputs 3.125–400 MHz; within 1 %)")
    _, clki, clkfb, op, f_pfd, f_vco, f_out = best
    return PllSettings("EHXPLLL", int(f_in_hz), f_out,
                       {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": op, "CLKOP_CPHASE": op - 1,
                        "CLKOP_FPHASE": 0}, f_vco, f_pfd)


# -- the board-independent part: UART, inner top, LEDs --------------------------------------------------------

def _stretch(m, name, event, tick, ticks):
    """High from ``event`` until ``ticks`` − 1 … ``ticks`` strobes of ``tick`` later (a small counter, so the
    LED logic never sets the clock: a wide down-counter's carry chain limited the UP5K top to 21 MHz)."""
    count = Signal(range(ticks + 1), name=f"{name}_count")
    with m.If(event):
        m.d.sync += count.eq(ticks)
    with m.Elif(tick & (count != 0)):
        m.d.sync += count.eq(count - 1)
    return count != 0


class BoardCore(wiring.Component):
    """UART + inner top + LED logic: everything of a board top except clock, reset and pins (simulatable).

    Parameters (keyword-only): ``inner`` (a ``wiring.Component`` with ``rx`` In stream of 8 and ``tx`` Out
    stream of 8; ``busy``/``error`` Out 1 are shown when present), ``clk_hz`` (the ``sync`` clock, integer
    Hz), ``baud``.

    Ports: ``rx_pin`` (In 1, idle high), ``tx_pin`` (Out 1, idle high), ``leds`` (Out {heartbeat, busy,
    activity, error}: 1 = LED on).
    """

    def __init__(self, *, inner: wiring.Component, clk_hz: int, baud: int):
        members = getattr(getattr(inner, "signature", None), "members", None)
        if (not isinstance(inner, wiring.Component) or "rx" not in members or "tx" not in members):
            self._MustUse__silence = True
            raise TypeError(f"inner = {inner!r}: expected a wiring.Component with rx and tx byte streams")
        try:
            self._uart = UART(clk_freq=clk_hz, baud=baud)       # validates clk_hz and baud
        except ValueError:
            self._MustUse__silence = True
            raise
        self._inner, self._clk_hz, self._baud = inner, clk_hz, baud
        super().__init__({
            "rx_pin": In(1, init=1),
            "tx_pin": Out(1, init=1),
            "leds": Out(LED_LAYOUT),
        })

    inner = property(lambda self: self._inner)
    clk_hz = property(lambda self: self._clk_hz)
    baud = property(lambda self: self._baud)
    #: heartbeat half-period in cycles (a power of two near half a second); the LED timers count in
    #: :attr:`tick_cycles` = heartbeat_cycles / 64 (≈ 8 ms)
    heartbeat_cycles = property(lambda self: 1 << max(7, round(math.log2(self._clk_hz / 2))))
    tick_cycles = property(lambda self: self.heartbeat_cycles >> 6)
    #: ticks a ``busy``/``activity`` event stays visible (≈ 1/16 s) and an ``error`` event (≈ 1/2 s)
    SHORT_TICKS, LONG_TICKS = 8, 64

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = self._uart
        m.submodules.inner = inner = self._inner
        wiring.connect(m, uart.rx, inner.rx)
        # A FIFO between the inner top's reply stream and the transmitter: the reply byte is registered, so the
        # inner top's byte multiplexer and the transmitter's shift-register load are not one timing path.
        m.submodules.tx_fifo = tx_fifo = BlockFIFO(width=8, depth=TX_FIFO_DEPTH)
        m.d.comb += [tx_fifo.w_data.eq(inner.tx.payload), tx_fifo.w_en.eq(inner.tx.valid),
                     inner.tx.ready.eq(tx_fifo.w_rdy),
                     uart.tx.payload.eq(tx_fifo.r_data), uart.tx.valid.eq(tx_fifo.r_rdy),
                     tx_fifo.r_en.eq(uart.tx.ready)]
        m.d.comb += [uart.rx_pin.eq(self.rx_pin), self.tx_pin.eq(uart.tx_pin)]

        members = inner.signature.members
        busy = inner.busy if "busy" in members else 0
        error = uart.errors.framing | uart.errors.overflow
        if "error" in members:
            error = error | inner.error
        heartbeat = Signal(range(2 * self.heartbeat_cycles))
        tick = Signal()
        m.d.sync += [heartbeat.eq(heartbeat + 1),
                     tick.eq(heartbeat[:len(heartbeat) - 7] == (1 << (len(heartbeat) - 7)) - 1)]
        activity = (uart.rx.valid & uart.rx.ready) | (uart.tx.valid & uart.tx.ready)
        m.d.comb += [
            self.leds.heartbeat.eq(heartbeat[-1]),
            self.leds.busy.eq(_stretch(m, "busy", busy, tick, self.SHORT_TICKS)),
            self.leds.activity.eq(_stretch(m, "activity", activity, tick, self.SHORT_TICKS)),
            self.leds.error.eq(_stretch(m, "error", error, tick, self.LONG_TICKS)),
        ]
        return m


# -- the boards -----------------------------------------------------------------------------------------------

#: the rule the boards train on chip by default: NP. LOCO is in the gateware (``Network(update="loco")``) but its
#: per-layer cluster blocks do not fit the UP5K and one of them routed at 19.5 MHz on the ECP5-85F
#: (docs/hdl_learning.md), far below the 60 MHz the ECP5 boards run at; ``--config`` with ``rule.name = "loco"``
#: builds it (at a ``--freq`` it meets).
BOARD_RULE = "np"
#: the network the ECP5 boards build by default. The deep ``ecp5`` preset (10 hidden layers, delta readout — in
#: gateware since ``Network(output_delta=True)``) has not been built on a board yet: an earlier attempt's 11 layer
#: engines took more than an hour to place and route; the ECP5 boards build the ``up5k`` network until then
#: (docs/boards.md).
ECP5_BOARD_PRESET = "up5k"
#: the ECP5 boards' default clock, the issue's 60 MHz floor: the accelerator routes at 75.7 MHz on the LFE5U-85F-6
#: (ULX3S, seed 1, 91f5c49; 62.0 MHz before the UP5K fit work) and at 75.6 MHz on the -8 OrangeCrab part
#: (docs/boards.md). Before the loss unit was pipelined (commit c616fcc) it routed at 34.5 MHz.
ECP5_BOARD_MHZ = 60.0


@dataclasses.dataclass(frozen=True)
class Board:
    """A supported board: its amaranth-boards platform, part, clock and defaults.

    ``leds`` maps each state of :class:`BoardCore` to ``(resource, number)`` (an LED, or for the OrangeCrab
    the colour of its RGB LED). ``default_preset``: the config preset built by default (loco_fpga.config.PRESETS),
    at ``default_lanes`` synapse lanes per layer engine. ``shared_update``: one update engine for all layers
    (``Network(shared_update=True)``) whenever the rule allows it (NP without the delta readout) — fewer logic
    cells, Σ_l n_l·C_l instead of max_l update cycles per sample; the other boards keep one engine per layer.
    ``sparse_input``: layer 0 reads only the weights of the input chunks that spiked (``Network(sparse_input=True)``)
    — fewer cycles per sample on sparse inputs, the same results. ``default_seed``: nextpnr's placement seed when a
    build names none.
    """
    name: str
    part: str                   # boards.synth.PARTS key
    family: str
    platform_factory: Callable
    clock: str
    clock_hz: int
    default_mhz: float
    default_preset: str
    reset: tuple                # (resource, number) of the reset button
    leds: dict
    uart: str
    programmer: str
    bitstream: str
    default_lanes: int = 1
    default_rule: str = BOARD_RULE
    shared_update: bool = False
    sparse_input: bool = False
    default_seed: int = 1

    def platform(self):
        """A fresh amaranth-boards platform (with the OrangeCrab's header UART added)."""
        return self.platform_factory()

    def shares_update(self, config) -> bool:
        """Whether this board's build of ``config`` has one update engine for all layers: :attr:`shared_update`
        and the rule built (the config's, or NP when the gateware does not train it) is NP or LOCO without the
        delta readout, the rules the shared engine runs."""
        from loco_fpga.hdl.top import SUPPORTED_RULES   # noqa: PLC0415
        rule = config.rule.name if config.rule.name in SUPPORTED_RULES else "np"     # board_top's choice
        return self.shared_update and rule in ("np", "loco") and config.rule.output_update != "delta"


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    platform = ICEBreakerPlatform()
    platform.add_resources(platform.break_off_pmod)
    return platform


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def _orangecrab_85f():
    from amaranth.build import Attrs
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
    from amaranth_boards.resources import UARTResource
    platform = OrangeCrabR0_2_85FPlatform()
    # The USB port is wired to the FPGA as USB D+/D− (DFU bootloader), not to a UART bridge: the UART uses the
    # Feather header's RX/TX positions (silkscreen "0" and "1"), for a 3.3 V USB-UART adapter.
    platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33",
                                                                                        PULLMODE="UP"))])
    return platform



BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker", part="up5k-sg48", family="ice40", platform_factory=_icebreaker,
        clock="clk12", clock_hz=12_000_000, default_mhz=24.0, default_preset="up5k", reset=("button", 0),
        leds={"heartbeat": ("led_g", 0), "error": ("led_r", 0), "busy": ("led_g", 1), "activity": ("led_g", 2)},
        uart="FTDI FT2232H channel B (second USB serial port): FPGA rx pin 6, tx pin 9",
        programmer="iceprog build/icebreaker/top.bin", bitstream="top.bin",
        # the UP5K's 5,280 logic cells: one update engine for both layers (+330 cycles per up5k sample, 0.9 %);
        # its LANES 1 layer 0 is the bottleneck: it reads only the weights of the inputs that spiked. At 97 % of the
        # logic cells the routed Fmax moves with the placement seed by about ±0.5 MHz around the 24 MHz clock: seed
        # 2 meets it (session 13 at 7957f3c: seed 1 23.93, seed 2 24.20, seed 3 23.35 MHz; docs/boards.md)
        shared_update=True, sparse_input=True, default_seed=2),
    "ulx3s-85f": Board(
        name="ulx3s-85f", part="lfe5u-85f-bg381", family="ecp5", platform_factory=_ulx3s_85f,
        clock="clk25", clock_hz=25_000_000, default_mhz=ECP5_BOARD_MHZ, default_preset=ECP5_BOARD_PRESET,
        reset=("button_fire", 0),
        leds={"heartbeat": ("led", 0), "busy": ("led", 1), "activity": ("led", 2), "error": ("led", 3)},
        uart="FT231X USB serial (US1 port): FPGA rx M1, tx L4",
        programmer="openFPGALoader -b ulx3s build/ulx3s-85f/top.bit",
        bitstream="top.bit"),
    "orangecrab-85f": Board(
        name="orangecrab-85f", part="lfe5u-85f-mg285", family="ecp5", platform_factory=_orangecrab_85f,
        clock="clk", clock_hz=48_000_000, default_mhz=ECP5_BOARD_MHZ, default_preset=ECP5_BOARD_PRESET,
        reset=("button", 0),
        leds={"heartbeat": ("rgb_led", "g"), "busy": ("rgb_led", "b"), "activity": ("rgb_led", "b"),
              "error": ("rgb_led", "r")},
        uart="Feather header: pin 0 (N17) = FPGA rx, pin 1 (M18) = FPGA tx; 3.3 V USB-UART adapter",
        programmer="dfu-util -D build/orangecrab-85f/top.bit",
        bitstream="top.bit"),
}


def _check_board(board):
    if isinstance(board, Board):
        return board
    if board not in BOARDS:
        raise ValueError(f"board = {board!r}: expected one of {', '.join(BOARDS)}")
    return BOARDS[board]


# -- the inner top --------------------------------------------------------------------------------------------

def board_inner(board, config=None, *, lanes: int | None = None, cluster_units: int | None = None,
                cluster_share: int = 1, cluster_impl: str = "parallel"):
    """(inner design, the config it was built from) for a board build.

    ``config``: default the board's preset (:attr:`Board.default_preset`) with its rule (:attr:`Board.default_rule`,
    :data:`BOARD_RULE`); ``lanes``: default :attr:`Board.default_lanes`; ``cluster_units``: LOCO's units per
    cluster block (default K); ``cluster_share``: LOCO's layers per cluster block (default 1); ``cluster_impl``:
    LOCO's cluster blocks, ``parallel`` (default) or ``micro``. The inner design is the accelerator top's ``board_top(config, lanes=…)`` (``loco_fpga.hdl.top``; it trains the config's rule when the gateware
    implements it, else ``np``; the returned config is the one it actually built), or, in a checkout without
    ``hdl/top.py``, :class:`~loco_fpga.hdl.link.LinkTestTop` (the protocol with a test device). With
    :attr:`Board.shared_update` the network has one update engine for all layers when the rule built is NP or LOCO
    without the delta readout (the rules the shared engine runs). On the iCE40 the weights go into SPRAM (layer order,
    while blocks last); with LOCO on micro blocks two SPRAM blocks are kept for the first block's data memory
    (``boards/spram.py``) and layer 0 is not sparse (:attr:`Board.sparse_input` applies to the other builds).
    """
    board = _check_board(board)
    lanes = board.default_lanes if lanes is None else lanes
    if config is None:
        from loco_fpga.config import preset       # noqa: PLC0415
        config = preset(board.default_preset).replace(rule={"name": board.default_rule})
    try:
        from loco_fpga.hdl import top as accelerator      # noqa: PLC0415
    except ImportError:
        from loco_fpga.hdl.link import LinkTestTop        # noqa: PLC0415
        return LinkTestTop(), config
    shared = board.shares_update(config)
    if board.family == "ice40":       # the UP5K's 30 block RAMs are too few: the weights go into its SPRAM
        from loco_fpga.boards.spram import spram_memory   # noqa: PLC0415
        # LOCO on micro blocks: two SPRAM blocks hold a block's data memory (layer 0's weights keep two, the rest of
        # the weights go to block RAM), and layer 0 reads every input: a sample's cluster runs (≈ 374,000 cycles for
        # the up5k preset's two banks) dwarf its passes (≈ 37,000 dense, 14,500 sparse on the digits), so skipping
        # silent inputs would gain ≈ 6 % at most there, for 68 logic cells and a block RAM. For the same reason its
        # engines work on their producers' spike vectors (hold_spikes): 6,761 more cycles a sample (1.5 %), 94
        # fewer logic cells. And its micro block computes the loss (micro_loss): no loss unit, 3,965 more cycles a sample
        # (0.9 %), 511 fewer logic cells. With one block for every layer (cluster_share = L) it also computes the
        # output layer (readout): no output layer engine, ≈ 400 fewer logic cells (docs/hdl_learning.md)
        micro = cluster_impl == "micro" and config.rule.name == "loco"
        arch = config.network.arch
        readout = micro and len(arch) > 2 and cluster_share == len(arch) - 1 and arch[-1] <= 32
        inner = accelerator.board_top(config, lanes=lanes, memory=spram_memory(reserve=2 if micro else 0),
                                      cluster_units=cluster_units,
                                      cluster_share=cluster_share, cluster_impl=cluster_impl, shared_update=shared,
                                      sparse_input=board.sparse_input and not micro, hold_spikes=micro,
                                      micro_loss=micro, readout=readout)
    else:
        inner = accelerator.board_top(config, lanes=lanes, cluster_units=cluster_units, cluster_share=cluster_share,
                                      cluster_impl=cluster_impl, shared_update=shared,
                                      sparse_input=board.sparse_input)
    return inner, getattr(inner, "config", config)


def default_inner(config=None) -> wiring.Component:
    """The accelerator top of ``config`` (default: the ``up5k`` preset), see :func:`board_inner`."""
    return board_inner("icebreaker", config)[0]


class Echo(wiring.Component):
    """The smallest inner design — every received byte is sent back — for bringing up a board's UART (and the
    ECP5 build test of the default run)."""

    def __init__(self):
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        wiring.connect(m, wiring.flipped(self.rx), wiring.flipped(self.tx))
        return m


def inner_description(inner) -> str:
    return f"{type(inner).__module__}.{type(inner).__qualname__}"


# -- the top for platform.build -------------------------------------------------------------------------------

class BoardTop(wiring.Component):
    """Clock (PLL), reset, pins and :class:`BoardCore` on one of :data:`BOARDS` (``platform.build`` top).

    Parameters (keyword-only): ``board`` (a :data:`BOARDS` key or :class:`Board`), ``inner`` (see
    :class:`BoardCore`), ``freq_mhz`` (the ``sync`` clock to make; default the board's ``default_mhz``),
    ``baud`` (UART rate, default 115200). The PLL settings and the UART divisor are checked here, eagerly.
    No ports: everything goes to the board's pins.
    """

    def __init__(self, *, board, inner: wiring.Component, freq_mhz: float | None = None, baud: int = 115200):
        try:
            self._validate(board, inner, freq_mhz, baud)
        except (TypeError, ValueError):
            self._MustUse__silence = True         # a top that failed to construct is not an unused elaboratable
            raise
        super().__init__({})

    def _validate(self, board, inner, freq_mhz, baud):
        self._board = _check_board(board)
        if freq_mhz is None:
            freq_mhz = self._board.default_mhz
        if isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) or not 0 < freq_mhz <= 1000:
            raise ValueError(f"freq_mhz = {freq_mhz!r}: must be a clock in MHz, 0 < f ≤ 1000")
        self._freq_mhz = float(freq_mhz)
        f_in = self._board.clock_hz
        if abs(freq_mhz * 1e6 - f_in) < 1:
            self._pll = None
            self._clk_hz = float(f_in)
        else:
            make = ice40_pll if self._board.family == "ice40" else ecp5_pll
            try:
                self._pll = make(f_in, freq_mhz * 1e6)
            except ValueError:
                raise ValueError(f"freq_mhz = {freq_mhz!r}: the {self._board.name} PLL cannot make it from its "
                                 f"{f_in / 1e6:g} MHz clock (within 1 %)") from None
            self._clk_hz = self._pll.f_out_hz
        self._core = BoardCore(inner=inner, clk_hz=round(self._clk_hz), baud=baud)

    board = property(lambda self: self._board)
    pll = property(lambda self: self._pll)
    core = property(lambda self: self._core)
    #: the requested and the achieved ``sync`` clock
    freq_mhz = property(lambda self: self._freq_mhz)
    clk_hz = property(lambda self: self._clk_hz)

    def elaborate(self, platform):
        m = Module()
        board = self._board
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        clk, lock = Signal(name="clk_sync"), Signal(name="pll_lock")
        clk_port = platform.request(board.clock, 0, dir="-")
        if self._pll is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.d.comb += [clk.eq(clk_buf.i), lock.eq(1)]
        elif board.family == "ice40":
            p = self._pll.params
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"], i_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            p = self._pll.params
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{board.clock_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{self._clk_hz / 1e6:.6g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=p["CLKOP_FPHASE"], p_FEEDBK_PATH="CLKOP",
                i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, o_CLKOP=clk, i_CLKFB=clk, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=lock)
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
        platform.add_clock_constraint(clk, self._clk_hz)

        # Reset: until the PLL locks and the power-on counter runs out, and while the button is pressed.
        m.submodules.button = button = io.Buffer("i", platform.request(*board.reset, dir="-"))
        pressed = button.i
        por = Signal(POR_BITS + 1)                 # counts up (iCE40 flip-flops power up to 0)
        with m.If(~lock):
            m.d.por += por.eq(0)
        with m.Elif(~por[-1]):
            m.d.por += por.eq(por + 1)
        reset = ~por[-1] | pressed
        if board.name == "orangecrab-85f":
            # Held for a second: pull PROGRAMN low, which reloads the DFU bootloader (the usual OrangeCrab way
            # back to flashing without unplugging the board).
            held = Signal(max(1, round(math.log2(self._clk_hz))) + 1)     # top bit set after ≈ 1 s
            with m.If(~pressed):
                m.d.por += held.eq(0)
            with m.Elif(~held[-1]):
                m.d.por += held.eq(held + 1)
            m.submodules.program = program = io.Buffer("o", platform.request("program", 0, dir="-"))
            m.d.comb += program.o.eq(held[-1])
        m.submodules.reset_sync = ResetSynchronizer(reset, domain="sync")

        m.submodules.core = core = self._core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx_pin.eq(rx.i), tx.o.eq(core.tx_pin)]

        drives = {}
        for state, (resource, number) in board.leds.items():
            drives.setdefault((resource, number), []).append(getattr(core.leds, state))
        rgb = None
        for (resource, number), states in drives.items():
            if resource == "rgb_led":
                rgb = rgb or platform.request("rgb_led", 0, dir="-")
                port = getattr(rgb, number)
            else:
                port = platform.request(resource, number, dir="-")
            buf = io.Buffer("o", port)
            m.submodules[f"led_{resource}_{number}"] = buf
            value = states[0]
            for state in states[1:]:
                value = value | state
            m.d.comb += buf.o.eq(value)
        return m
