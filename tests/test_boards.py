# amaranth: UnusedElaboratable=no
"""Board tops (boards/tops.py) without the synthesis tools: PLL settings against the datasheet formulas, the
board-independent core (UART + inner top + LEDs) in the Amaranth simulator, each board's pins and clock in
the files ``platform.build`` writes, and parameter errors. The builds themselves: tests/test_build.py."""

import pytest
from amaranth.sim import Simulator

from loco_fpga.boards import protocol as proto
from loco_fpga.boards import tops
from loco_fpga.boards.tops import Echo
from loco_fpga.config import preset
from loco_fpga.hdl.link import LinkTestTop

# -- PLL settings: every result must satisfy the vendor's formula and ranges (written out here, TN1251/TN1263)


@pytest.mark.parametrize("mhz", [16, 20, 24, 25, 30, 36, 48, 50, 60, 72, 100])
def test_ice40_pll_settings_satisfy_the_datasheet(mhz):
    s = tops.ice40_pll(12_000_000, mhz * 1e6)
    p = s.params
    assert 0 <= p["DIVR"] <= 15 and 0 <= p["DIVF"] <= 127 and 1 <= p["DIVQ"] <= 6
    f_pfd = 12e6 / (p["DIVR"] + 1)
    f_vco = f_pfd * (p["DIVF"] + 1)
    assert 10e6 <= f_pfd <= 133e6 and 533e6 <= f_vco <= 1066e6
    assert s.f_out_hz == pytest.approx(f_vco / 2 ** p["DIVQ"])
    assert abs(s.f_out_hz - mhz * 1e6) <= 0.01 * mhz * 1e6
    assert p["FILTER_RANGE"] == 1            # every f_pfd from a 12 MHz reference is below 17 MHz


def test_ice40_pll_hits_whole_multiples_of_the_12_mhz_reference_exactly():
    for mhz in (24, 36, 48, 60):
        assert tops.ice40_pll(12_000_000, mhz * 1e6).f_out_hz == mhz * 1e6


@pytest.mark.parametrize("f_in, mhz", [(25_000_000, 30), (25_000_000, 50), (25_000_000, 60), (25_000_000, 75),
                                       (48_000_000, 24), (48_000_000, 60), (48_000_000, 72), (48_000_000, 100)])
def test_ecp5_pll_settings_satisfy_the_datasheet(f_in, mhz):
    s = tops.ecp5_pll(f_in, mhz * 1e6)
    p = s.params
    assert 1 <= p["CLKI_DIV"] <= 128 and 1 <= p["CLKFB_DIV"] <= 80 and 1 <= p["CLKOP_DIV"] <= 128
    f_out = f_in * p["CLKFB_DIV"] / p["CLKI_DIV"]
    assert s.f_out_hz == pytest.approx(f_out)
    assert 400e6 <= f_out * p["CLKOP_DIV"] <= 800e6 and f_in / p["CLKI_DIV"] >= 3.125e6
    assert p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1 and p["CLKOP_FPHASE"] == 0
    assert abs(s.f_out_hz - mhz * 1e6) <= 0.01 * mhz * 1e6


def test_pll_errors_quote_the_value():
    with pytest.raises(ValueError, match=r"f_out_hz = 8000000.0: the iCE40 PLL"):
        tops.ice40_pll(12_000_000, 8e6)                  # below the 16 MHz output minimum
    with pytest.raises(ValueError, match=r"f_out_hz = 24000000.0: the ECP5 PLL"):
        tops.ecp5_pll(25_000_000, 24e6)                  # 25·FB/CLKI never within 1 % with f_pfd ≥ 3.125 MHz
    with pytest.raises(ValueError, match=r"f_in_hz = -1"):
        tops.ice40_pll(-1, 24e6)


def test_board_top_parameter_errors():
    inner = Echo()
    with pytest.raises(ValueError, match=r"board = 'de10'"):
        tops.BoardTop(board="de10", inner=inner)
    with pytest.raises(ValueError, match=r"freq_mhz = 0"):
        tops.BoardTop(board="icebreaker", inner=inner, freq_mhz=0)
    with pytest.raises(ValueError, match=r"freq_mhz = 24: the ulx3s-85f PLL cannot make it"):
        tops.BoardTop(board="ulx3s-85f", inner=inner, freq_mhz=24)
    with pytest.raises(ValueError, match=r"baud = 20000000"):
        tops.BoardTop(board="icebreaker", inner=inner, baud=20_000_000)
    with pytest.raises(TypeError, match=r"inner = .*rx and tx byte streams"):
        tops.BoardCore(inner=object(), clk_hz=12_000_000, baud=115200)


def test_board_top_uses_the_oscillator_when_asked_for_its_frequency():
    top = tops.BoardTop(board="icebreaker", inner=Echo(), freq_mhz=12)
    assert top.pll is None and top.clk_hz == 12e6
    top = tops.BoardTop(board="orangecrab-85f", inner=Echo(), freq_mhz=60)
    assert top.pll.primitive == "EHXPLLL" and top.clk_hz == 60e6


# -- the board core in simulation: UART pins ↔ inner top, LEDs ----------------------------------------------

CLK_HZ, BAUD = 4096, 1024          # 4 cycles per bit; heartbeat half-period 2048 cycles, tick 32 cycles


def _run_core(frames_bits, cycles):
    """Drive ``rx_pin`` with a bit sequence (one UART bit = 4 cycles) and record tx_pin and the LEDs."""
    core = tops.BoardCore(inner=LinkTestTop(), clk_hz=CLK_HZ, baud=BAUD)
    trace = {"tx": [], "heartbeat": [], "busy": [], "activity": [], "error": []}

    async def bench(ctx):
        bits = iter(frames_bits)
        for cycle in range(cycles):
            if cycle % 4 == 0:
                ctx.set(core.rx_pin, next(bits, 1))
            await ctx.tick()
            trace["tx"].append(ctx.get(core.tx_pin))
            for name in ("heartbeat", "busy", "activity", "error"):
                trace[name].append(ctx.get(getattr(core.leds, name)))

    sim = Simulator(core)
    sim.add_clock(1 / CLK_HZ)
    sim.add_testbench(bench)
    sim.run()
    return core, trace


def _uart_bits(data, stop=1):
    out = [1] * 8
    for byte in data:
        out += [0] + [(byte >> k) & 1 for k in range(8)] + [stop]
    return out + [1] * 8


def _uart_decode(samples, divisor=4):
    """Bytes from a sampled 8N1 line (one sample per cycle)."""
    out, k = [], 0
    while k < len(samples):
        if samples[k] == 0:
            mid = k + divisor // 2
            bits = [samples[mid + divisor * (n + 1)] for n in range(8)]
            out.append(sum(b << n for n, b in enumerate(bits)))
            k = mid + 9 * divisor
        else:
            k += 1
    return bytes(out)


def test_core_answers_a_ping_through_the_uart_pins_and_shows_activity():
    frame = proto.encode_frame(proto.Command.PING)
    core, trace = _run_core(_uart_bits(frame), 4 * 10 * (len(frame) + 40) + 200)
    replies = proto.FrameParser().feed_all(_uart_decode(trace["tx"]))
    assert len(replies) == 1 and replies[0].type == proto.Command.PING | proto.REPLY_FLAG
    assert replies[0].status == proto.Status.OK
    assert any(trace["activity"]) and not any(trace["error"])


def test_core_error_led_holds_a_framing_error_for_long_ticks():
    core, trace = _run_core(_uart_bits([0x55], stop=0) + [1] * 16, 9000)
    on = [n for n, v in enumerate(trace["error"]) if v]
    assert on, "a low stop bit must light the error LED"
    span = on[-1] - on[0] + 1
    tick = core.tick_cycles
    assert (core.LONG_TICKS - 1) * tick <= span <= core.LONG_TICKS * tick + 1
    assert len(on) == span                             # one continuous interval


def test_core_heartbeat_toggles_every_heartbeat_cycles():
    core, trace = _run_core([], 3 * 2048 + 10)
    assert core.heartbeat_cycles == 2048 and core.tick_cycles == 32
    edges = [n for n in range(1, len(trace["heartbeat"])) if trace["heartbeat"][n] != trace["heartbeat"][n - 1]]
    assert len(edges) >= 2 and all(b - a == core.heartbeat_cycles for a, b in zip(edges, edges[1:]))


# -- each board's platform files (no tools: platform.build(do_build=False) only renders them) -----------------

def _plan(board, freq_mhz=None):
    b = tops.BOARDS[board]
    top = tops.BoardTop(board=b, inner=LinkTestTop(), freq_mhz=freq_mhz)
    return top, b.platform().build(top, name="top", do_build=False)


def test_icebreaker_pins_and_pll():
    top, plan = _plan("icebreaker")
    pcf = plan.files["top.pcf"]
    for line in ("set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9", "set_io clk12_0__io 35",
                 "set_io button_0__io 10"):
        assert line in pcf
    assert "SB_PLL40_PAD" in plan.files["top.il"] and top.clk_hz == 24e6


@pytest.mark.parametrize("board, pins", [("ulx3s-85f", ("M1", "L4", "G2", "R1")),
                                         ("orangecrab-85f", ("N17", "M18", "A9", "J17"))])
def test_ecp5_board_pins_and_pll(board, pins):
    top, plan = _plan(board)
    lpf = plan.files["top.lpf"]
    rx, tx, clk, button = pins
    assert f'LOCATE COMP "uart_0__rx__io" SITE "{rx}"' in lpf
    assert f'LOCATE COMP "uart_0__tx__io" SITE "{tx}"' in lpf
    assert f'SITE "{clk}"' in lpf and f'SITE "{button}"' in lpf
    assert "EHXPLLL" in plan.files["top.il"] and top.clk_hz == tops.ECP5_BOARD_MHZ * 1e6


def test_board_inner_builds_the_accelerator_of_the_board_preset():
    inner, config = tops.board_inner("icebreaker")
    assert config.network.arch == preset("up5k").network.arch
    assert {"rx", "tx"} <= set(inner.signature.members)


def test_only_the_icebreaker_shares_one_update_engine():
    """The UP5K build has one update engine for both layers (area; NP and LOCO); the ECP5 boards keep one per
    layer; on the iCEBreaker too a rule the shared engine does not run (the delta readout) gets per-layer
    engines."""
    assert [name for name, b in tops.BOARDS.items() if b.shared_update] == ["icebreaker"]
    assert [name for name, b in tops.BOARDS.items() if b.sparse_input] == ["icebreaker"]
    inner, _ = tops.board_inner("icebreaker")
    assert inner.network.shared_update and len(inner.network.updaters) == 1 and inner.network.sparse_input
    assert not inner.network.hold_spikes                  # the NP build keeps its overlapping steps
    inner, _ = tops.board_inner("ulx3s-85f")
    assert not inner.network.shared_update and len(inner.network.updaters) == 2 and not inner.network.sparse_input
    delta = preset("up5k").replace(rule={"name": "np", "output_update": "delta"})
    inner, config = tops.board_inner("icebreaker", delta)
    assert config.rule.output_update == "delta" and not inner.network.shared_update
    inner, config = tops.board_inner("icebreaker", preset("up5k"), cluster_impl="micro")     # LOCO
    assert config.rule.name == "loco" and inner.network.shared_update and len(inner.network.updaters) == 1


def test_icebreaker_loco_micro_build_puts_the_block_data_into_spram():
    """The iCEBreaker's LOCO build with one micro block for both layers: layer 0's weights take two SPRAM blocks,
    the block's data memory the other two (it boots: its ``init`` writes it after a reset), layer 1's weights go
    to block RAM — four SB_SPRAM256KA cells in the elaborated design. Layer 0 reads every input (not sparse) there,
    the engines work on their producers' spike vectors (``hold_spikes``) and the block computes the loss
    (``micro_loss``) and the output layer (``readout``: one block serves both layers). With one block per layer
    (``cluster_share`` 1) there is no readout."""
    from amaranth.back import rtlil
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    board = tops.BOARDS["icebreaker"]
    inner, config = tops.board_inner(board, preset("up5k"), cluster_impl="micro", cluster_share=2)
    assert config.rule.name == "loco" and inner.network.shared_update and not inner.network.sparse_input
    assert inner.network.hold_spikes and inner.network.micro_loss and inner.network.readout
    assert not tops.board_inner(board, preset("up5k"), cluster_impl="micro")[0].network.readout
    (block,) = set(inner.network.cluster_blocks)
    assert block.loss_outputs == config.network.arch[-1]
    assert block.boot_cycles == block.sequencer.cycles(block.program.init_counts()) + 2 > 4000
    text = rtlil.convert(inner, platform=ICEBreakerPlatform())
    assert text.count("cell \\SB_SPRAM256KA") == 4
    memories = {line.split()[-1]: line for line in text.splitlines() if line.strip().startswith("memory ")}
    assert f"size {len(block.program.code)}" in memories["\\rom"]       # the code: block RAM, initialised
    assert "\\data" not in memories, memories                            # the data: SPRAM, no RTLIL memory
    assert "size 330" in memories["\\weights"]                           # layer 1's weights (layer 0's: SPRAM)
