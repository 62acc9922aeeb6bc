# amaranth: UnusedElaboratable=no
"""The host link in the Amaranth simulator: CRC against the catalogue, the frame receiver against the
Python parser (events, payload buffer, timeout, oversize, BUSY), and the whole LinkTestTop against
``ReferenceLink`` byte for byte on a scripted session. (Thousands of frames: tests/test_sim_link.py.)"""

import random
import struct

import pytest
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator

from loco_fpga.boards import protocol as proto
from loco_fpga.hdl.link import CRC, CounterBank, FrameReceiver, Link, LinkTestDevice, LinkTestTop, Status
from loco_fpga.sim.virtual import TOP_PARAMS, mask_run_cycles, reference_top

C = proto.Command


def test_crc_is_the_catalogue_crc16_ccitt_false():
    assert proto.crc16(b"123456789") == 0x29B1                       # reveng check value
    assert CRC.compute(b"123456789") == 0x29B1
    assert catalog.CRC16_CCITT_FALSE(8).compute(b"123456789") == 0x29B1
    rng = random.Random(1)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        assert proto.crc16(data) == CRC.compute(data)
    frame = proto.encode_frame(C.PING)
    assert proto.crc16(frame[2:]) == 0          # residue 0 over TYPE..CRC (high byte first)


LINK_MAX_INC = [2 if name == "length_errors" else 1 for name in proto.STATS_FIELDS]


@pytest.mark.parametrize("n, density, max_inc", [(11, 0.3, None), (3, 0.9, None), (11, 1.0, LINK_MAX_INC)])
def test_counter_bank_snapshots_and_clears_like_plain_counters(n, density, max_inc):
    """The block-RAM counters against plain Python counters: random increments (0 … ``max_inc`` per counter per
    cycle, every cycle at the highest density — more than the link ever makes; with the link's ``max_inc`` at
    density 1 every counter takes its largest increment every cycle, which fills the pending counts to their bound
    — one bit less fails), a snapshot at random points (also in the cycle a counter is written back), read back
    once it is written while the increments go on; a clear after some snapshots. Starts from a reset: every counter
    0."""
    rng = random.Random(n * 100 + int(density * 10))
    dut = CounterBank(n=n, max_inc=max_inc)

    def draw():
        if density == 1.0:
            return list(dut.max_inc)
        return [rng.randint(1, dut.max_inc[k]) if rng.random() < density else 0 for k in range(n)]
    true = [0] * n
    checks = []

    async def bench(ctx):
        snap = [0] * n
        for round_ in range(40):
            for _ in range(rng.randrange(1, 3 * n)):             # increments only
                incs = draw()
                for k in range(n):
                    ctx.set(dut.inc[k], incs[k])
                await ctx.tick()
                true[:] = [t + i for t, i in zip(true, incs)]
            ctx.set(dut.snap, 1)                              # snapshot: the values before this cycle's increments
            snap = list(true)
            while True:
                incs = draw()
                for k in range(n):
                    ctx.set(dut.inc[k], incs[k])
                await ctx.tick()
                ctx.set(dut.snap, 0)
                true[:] = [t + i for t, i in zip(true, incs)]
                if not ctx.get(dut.busy):
                    break
            ctx.set(dut.rd_en, 1)                              # the increments go on while the snapshot is read
            got = []
            for k in range(n):
                ctx.set(dut.rd_index, k)
                incs = draw()
                for j in range(n):
                    ctx.set(dut.inc[j], incs[j])
                await ctx.tick()
                true[:] = [t + i for t, i in zip(true, incs)]
                got.append(ctx.get(dut.rd_data))
            ctx.set(dut.rd_en, 0)
            checks.append((round_, got, [v % (1 << 32) for v in snap]))
            if round_ % 3 == 2:                                 # clear: counted since the snapshot
                ctx.set(dut.clear, 1)
                true[:] = [t - s for t, s in zip(true, snap)]
                while True:
                    incs = draw()
                    for k in range(n):
                        ctx.set(dut.inc[k], incs[k])
                    await ctx.tick()
                    ctx.set(dut.clear, 0)
                    true[:] = [t + i for t, i in zip(true, incs)]
                    if not ctx.get(dut.busy):
                        break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checks) == 40
    for round_, got, want in checks:
        assert got == want, f"round {round_}"
    # the counts outgrew the pending counters (so the words were written back and read with carries)
    assert any(v != 0 for v in checks[-1][2]) and max(max(w) for _, _, w in checks) > 1 << dut.pending_bits


def test_counter_bank_reset_zeroes_every_counter():
    """A reset in the middle of counting: afterwards every counter counts from 0 (the memory still holds the old
    words; the first sweep after the reset must overwrite them, the first visited word too)."""
    from amaranth import Module, Signal
    from amaranth.hdl import ResetInserter

    n = 5
    dut = CounterBank(n=n)
    rst = Signal()
    m = Module()
    m.submodules.bank = ResetInserter(rst)(dut)
    got = []

    async def bench(ctx):
        for at in range(n + 2):                    # every phase of the sweep at the reset
            for k in range(n):
                ctx.set(dut.inc[k], 2)
            await ctx.tick().repeat(3 * n + at)
            for k in range(n):
                ctx.set(dut.inc[k], 0)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            for k in range(n):                     # one increment each right after the reset
                ctx.set(dut.inc[k], 1)
            await ctx.tick()
            for k in range(n):
                ctx.set(dut.inc[k], 0)
            await ctx.tick().repeat(2 * n)
            ctx.set(dut.snap, 1)
            await ctx.tick()
            ctx.set(dut.snap, 0)
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.rd_en, 1)
            row = []
            for k in range(n):
                ctx.set(dut.rd_index, k)
                await ctx.tick()
                row.append(ctx.get(dut.rd_data))
            ctx.set(dut.rd_en, 0)
            got.append(row)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [[1] * n] * (n + 2)


def test_counter_bank_parameter_errors():
    with pytest.raises(ValueError, match=r"n = 1: must be an integer 2\.\.64"):
        CounterBank(n=1)
    with pytest.raises(ValueError, match=r"max_inc = \[1, 3\]: expected 2 values, each 1 or 2"):
        CounterBank(n=2, max_inc=[1, 3])
    with pytest.raises(ValueError, match=r"max_inc = \[1\]: expected 2 values"):
        CounterBank(n=2, max_inc=[1])
    bank = CounterBank(n=11, max_inc=LINK_MAX_INC)
    assert [bank.counter_pending_bits(k) for k in range(11)] == [6 if m == 2 else 5 for m in LINK_MAX_INC]


def _receiver_run(dut, stream, timeout):
    """Feed ``stream`` (list of byte | None for an idle cycle); return events with their payloads."""
    events = []

    async def bench(ctx):
        ctx.set(dut.event.ready, 0)
        for item in stream + [None] * (timeout + 4):
            ctx.set(dut.rx.valid, item is not None)
            ctx.set(dut.rx.payload, item or 0)
            await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            if ctx.get(dut.event.valid):
                ev = ctx.get(dut.event.payload)
                payload = b""
                if ev.status == Status.OK:       # read the buffer, then release it
                    ctx.set(dut.event.ready, 1)
                    await ctx.tick()
                    ctx.set(dut.event.ready, 0)
                    out = []
                    for a in range(ev.length):
                        ctx.set(dut.rd_addr, a)
                        await ctx.tick()
                        out.append(ctx.get(dut.rd_data))
                    payload = bytes(out)
                    ctx.set(dut.release, 1)
                    await ctx.tick()
                    ctx.set(dut.release, 0)
                else:
                    ctx.set(dut.event.ready, 1)
                    await ctx.tick()
                    ctx.set(dut.event.ready, 0)
                events.append((ev.status, ev.type, payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return events


def test_receiver_events_equal_the_python_parser():
    timeout, max_payload = 16, 20
    rng = random.Random(7)
    stream, expected = [], []
    parser = proto.FrameParser(max_payload=max_payload)
    for n in range(60):
        kind = n % 6
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, max_payload + 1)))
        frame = bytearray(proto.encode_frame(rng.randrange(256), payload))
        if kind == 1:
            frame[rng.randrange(2, len(frame))] ^= 1 << rng.randrange(8)        # CRC (or length) error
        elif kind == 2:
            frame = frame[:rng.randrange(1, len(frame))]                          # truncated
        elif kind == 3:
            frame[3:5] = struct.pack("<H", max_payload + 1 + rng.randrange(100))  # oversize
        elif kind == 4:
            frame = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 12))) + frame   # garbage
        items = []
        for b in frame:
            items.append(b)
            items += [None] * rng.choice([0, 0, 1, timeout - 1])              # gaps below the timeout
        items += [None] * (timeout + 30)                                     # let the frame end
        stream += items
        for b in frame:
            ev = parser.feed(b)
            if ev is not None:
                expected.append(ev)
        ev = parser.idle()
        if ev is not None:
            expected.append(ev)
    dut = FrameReceiver(max_payload=max_payload, timeout=timeout)
    got = _receiver_run(dut, stream, timeout)
    want = [(Status.OK, e.type, e.payload) if isinstance(e, proto.Frame) else (Status(e.status.value), e.type, b"")
            for e in expected]
    assert len(got) == len(want)
    assert got == want
    assert {s for s, _, _ in got} >= {Status.OK, Status.CRC, Status.TIMEOUT, Status.OVERSIZE}


@pytest.mark.parametrize("timeout", [2, 5, 16])
def test_receiver_timeout_boundary(timeout):
    """timeout − 1 idle cycles between two bytes continue the frame; timeout idle cycles end it."""
    frame = list(proto.encode_frame(C.READ_REG, b"\x10"))
    for split in (2, 3, 6, len(frame) - 1):
        for gap, expect in ((timeout - 1, Status.OK), (timeout, Status.TIMEOUT)):
            dut = FrameReceiver(max_payload=8, timeout=timeout)
            stream = frame[:split] + [None] * gap + frame[split:]
            got = _receiver_run(dut, stream, timeout)
            assert got[0][0] == expect, (timeout, split, gap, got)
            if expect == Status.TIMEOUT:
                assert got[0][1] == (C.READ_REG if split > 2 else proto.NO_TYPE)


def test_receiver_answers_busy_while_the_buffer_is_owned():
    dut = FrameReceiver(max_payload=8, timeout=8)
    first, second = proto.encode_frame(C.PING), proto.encode_frame(C.STATS)
    events = []

    async def bench(ctx):
        ctx.set(dut.event.ready, 1)
        for b in first:
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, b)
            await ctx.tick()
        ctx.set(dut.rx.valid, 0)
        for _ in range(3):
            if ctx.get(dut.event.valid):
                events.append(ctx.get(dut.event.payload.status))
            await ctx.tick()
        assert ctx.get(dut.owned)                  # not released: the next good frame is BUSY
        for b in second:
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, b)
            await ctx.tick()
        ctx.set(dut.rx.valid, 0)
        for _ in range(3):
            if ctx.get(dut.event.valid):
                events.append(ctx.get(dut.event.payload.status))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert events == [Status.OK, Status.BUSY]


# -- the whole top against the reference, byte for byte ------------------------------------------------

def _top_session(dut, script, timeout, rng):
    """``script``: list of byte strings; each is sent (with random short gaps) and the top is left idle
    until it has been quiet for timeout + 40 cycles. Returns the reply bytes per script item."""
    replies = []

    async def bench(ctx):
        for chunk in script:
            out = bytearray()
            for b in chunk:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                ctx.set(dut.tx.ready, int(rng.random() > 0.3))
                _, _, valid, ready, data = await ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload)
                if valid and ready:
                    out.append(data)
                ctx.set(dut.rx.valid, 0)
                for _ in range(rng.choice([0, 0, 0, 2])):
                    _, _, valid, ready, data = await ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload)
                    if valid and ready:
                        out.append(data)
            quiet = 0
            while quiet < timeout + 40:
                ctx.set(dut.tx.ready, int(rng.random() > 0.3))
                _, _, valid, ready, data = await ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload)
                if valid and ready:
                    out.append(data)
                quiet = 0 if (valid or ctx.get(dut.busy)) else quiet + 1
            replies.append(bytes(out))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return replies


def _script(rng, info):
    f = proto.encode_frame
    w = lambda words: b"".join(x.to_bytes(2, "little") for x in words)   # noqa: E731
    sample = bytes(rng.randrange(256) for _ in range(info.sample_bytes))
    return [
        f(C.PING),
        f(C.READ_REG, bytes([proto.Register.ID])),
        f(C.WRITE_REG, bytes([proto.Register.LR]) + struct.pack("<I", 3)),
        f(C.WRITE_REG, bytes([proto.Register.MODE]) + struct.pack("<I", 7)),          # BAD_VALUE
        f(C.WRITE_REG, bytes([proto.Register.ID]) + struct.pack("<I", 7)),            # read-only
        f(C.READ_REG, bytes([0x33])),                                                   # no such register
        f(C.LOAD_WEIGHTS, bytes([0, 0, 0]) + w(rng.randrange(65536) for _ in range(16))),
        f(C.LOAD_WEIGHTS, bytes([0, 16, 0]) + w(rng.randrange(65536) for _ in range(16))),
        f(C.LOAD_WEIGHTS, bytes([0, 30, 0]) + w([1, 2, 3])),                           # past the end
        f(C.LOAD_WEIGHTS, bytes([1, 0, 0]) + w([1])),                                  # no layer 1
        f(C.LOAD_WEIGHTS, bytes([0, 0, 0, 1])),                                        # half a word
        f(C.LOAD_PROTOTYPES, bytes([0, 2, 0]) + w([0xBEEF, 0x1234])),
        f(C.READ_PROTOTYPES, bytes([0, 0, 0, 4, 0])),
        f(C.READ_WEIGHTS, bytes([0, 0, 0, 36, 0])),                                    # 73 bytes > 72
        f(C.READ_WEIGHTS, bytes([0, 0, 0, 0, 0])),                                     # count 0
        f(C.READ_WEIGHTS, bytes([0, 1, 0, 20, 0])),
        f(C.READ_WEIGHTS, bytes([0, 0xFF, 0xFF, 2, 0])),                               # wraps 16 bits
        f(C.INFER, sample),
        f(C.TRAIN, bytes([2]) + sample),
        f(C.TRAIN, bytes([4]) + sample),                                               # label ≥ n_classes
        f(C.INFER, sample[:-1]),                                                       # BAD_LENGTH
        f(C.READ_WEIGHTS, bytes([0, 16, 0, 8, 0])),
        f(0x55), f(0x81, b"xyz"),                                                      # unknown
        f(C.STATS),
        f(C.RESET_STATE, bytes([4])),
        f(C.RESET_STATE, bytes([proto.RESET_DEVICE])),
        f(C.READ_WEIGHTS, bytes([0, 0, 0, 4, 0])),
        f(C.READ_REG, bytes([proto.Register.LR])),
        proto.encode_frame(C.PING)[:-1],                                               # CRC byte missing
        bytes([0xA5, 0xA5, 0x5A, 0x01, 0xFF, 0x00]),                                   # oversize
        b"\x00\x5A\xA5" + proto.encode_frame(C.PING),                                  # garbage + frame
        bytes([0xA5]),                                                                 # lone sync byte
        f(C.STATS),
        f(C.RESET_STATE, bytes([proto.RESET_COUNTERS])),
        f(C.STATS),
        # an error right behind a STATS / RESET_STATE frame is detected before the command executes:
        # it must count after the snapshot / clear, as in the reference
        f(C.STATS) + bytes([0xA5, 0x5A, 0x01, 0xFF, 0x00]),
        f(C.RESET_STATE, bytes([proto.RESET_COUNTERS])) + bytes([0xA5, 0x5A, 0x01, 0xFF, 0x00]),
        f(C.RESET_STATE, bytes([3])) + bytes([0xA5, 0x5A, 0x01, 0xFF, 0x00]),
        f(C.STATS),
    ]


def test_link_test_top_equals_reference_link_byte_for_byte():
    rng = random.Random(3)
    dut = LinkTestTop(**TOP_PARAMS)
    ref = reference_top()
    script = _script(rng, dut.info)
    got = _top_session(dut, script, TOP_PARAMS["timeout"], rng)
    for n, (chunk, reply) in enumerate(zip(script, got)):
        want = ref.feed(chunk) + ref.idle()
        assert mask_run_cycles(reply) == want, f"script item {n}: {chunk.hex()}"
    statuses = [proto.FrameParser().feed_all(r) for r in got]
    assert any(s and s[0].payload[0] == proto.Status.BAD_VALUE for s in statuses)


def test_constructor_errors_quote_the_bad_value():
    with pytest.raises(ValueError, match=r"max_payload = 0"):
        FrameReceiver(max_payload=0, timeout=10)
    with pytest.raises(ValueError, match=r"timeout = 1"):
        FrameReceiver(max_payload=8, timeout=1)
    with pytest.raises(ValueError, match=r"word_bytes = 3"):
        Link(max_payload=64, timeout=10, word_bytes=3, sample_bytes=8, infer_bytes=9, train_bytes=1, n_classes=4)
    with pytest.raises(ValueError, match=r"sample_bytes = 64"):
        Link(max_payload=64, timeout=10, sample_bytes=64, infer_bytes=9, train_bytes=1, n_classes=4)
    with pytest.raises(ValueError, match=r"n_classes = 0"):
        Link(max_payload=64, timeout=10, sample_bytes=8, infer_bytes=9, train_bytes=1, n_classes=0)
    with pytest.raises(ValueError, match=r"n_out = 1"):
        LinkTestDevice(n_out=1)


# -- UART (hdl/uart.py) ----------------------------------------------------------------------------------

def _uart_bench(tx_divisor, rx_divisor, payload, rng, *, idle=0.3):
    """Transmitter → pin → receiver; returns (received bytes, framing strobes, overflow strobes)."""
    from amaranth import Module

    from loco_fpga.hdl.uart import UARTReceiver, UARTTransmitter

    tx, rx = UARTTransmitter(divisor=tx_divisor), UARTReceiver(divisor=rx_divisor)
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.pin.eq(tx.pin)
    got, errors = [], {"framing": 0, "overflow": 0}

    async def source(ctx):
        for byte in payload:
            while rng.random() < idle:
                await ctx.tick().repeat(rng.randrange(1, 3 * tx_divisor))
            ctx.set(tx.tx.valid, 1)
            ctx.set(tx.tx.payload, byte)
            await ctx.tick().until(tx.tx.ready)
            ctx.set(tx.tx.valid, 0)

    async def sink(ctx):
        ctx.set(rx.rx.ready, 1)
        while len(got) < len(payload):
            _, _, valid, data, framing, overflow = await ctx.tick().sample(
                rx.rx.valid, rx.rx.payload, rx.errors.framing, rx.errors.overflow)
            if valid:
                got.append(data)
            errors["framing"] += framing
            errors["overflow"] += overflow

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * (len(payload) * 14 * max(tx_divisor, rx_divisor) + 100))
    return bytes(got), errors


@pytest.mark.parametrize("divisor", [4, 12, 13])
def test_uart_loopback(divisor):
    rng = random.Random(divisor)
    payload = bytes([0x00, 0xFF, 0x55, 0xAA, 0xA5, 0x5A]) + bytes(rng.randrange(256) for _ in range(60))
    got, errors = _uart_bench(divisor, divisor, payload, rng)
    assert got == payload and errors == {"framing": 0, "overflow": 0}


@pytest.mark.parametrize("tx_divisor", [33, 35])
def test_uart_tolerates_3_percent_rate_error(tx_divisor):
    rng = random.Random(tx_divisor)
    payload = bytes(rng.randrange(256) for _ in range(40))
    got, errors = _uart_bench(tx_divisor, 34, payload, rng, idle=0.0)      # back to back: worst case
    assert got == payload and errors["framing"] == 0


def test_uart_rejects_a_low_stop_bit_and_ignores_glitches():
    from loco_fpga.hdl.uart import UARTReceiver

    d = 8
    rx = UARTReceiver(divisor=d)
    got, framing = [], []

    async def drive(ctx):
        async def bits(levels):
            for level in levels:
                ctx.set(rx.pin, level)
                await ctx.tick().repeat(d)
        ctx.set(rx.pin, 1)
        await ctx.tick().repeat(20)
        ctx.set(rx.pin, 0)                                   # a 2-cycle glitch: not a start bit
        await ctx.tick().repeat(2)
        ctx.set(rx.pin, 1)
        await ctx.tick().repeat(3 * d)
        await bits([0] + [1, 0, 1, 0, 1, 0, 1, 0] + [0])     # stop bit low: framing error
        await bits([1, 1])
        await bits([0] + [(0x3C >> i) & 1 for i in range(8)] + [1, 1])   # a good 0x3C

    async def watch(ctx):
        ctx.set(rx.rx.ready, 1)
        async for _, _, valid, data, fr in ctx.tick().sample(rx.rx.valid, rx.rx.payload, rx.errors.framing):
            if valid:
                got.append(data)
            if fr:
                framing.append(1)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == [0x3C] and framing == [1]


def test_uart_parameters_are_validated():
    from loco_fpga.hdl.uart import UART, UARTReceiver

    assert UART(clk_freq=12_000_000, baud=115_200).divisor == 104
    with pytest.raises(ValueError, match=r"baud = 4000000: needs at least 4 clock cycles per bit"):
        UART(clk_freq=12_000_000, baud=4_000_000)
    with pytest.raises(ValueError, match=r"baud = 2500000: the nearest rate .* more than 2 % off"):
        UART(clk_freq=12_000_000, baud=2_500_000)
    with pytest.raises(ValueError, match=r"clk_freq = 0"):
        UART(clk_freq=0, baud=9600)
    with pytest.raises(ValueError, match=r"divisor = 3"):
        UARTReceiver(divisor=3)


def test_reset_in_the_middle_of_train_leaves_a_consistent_state():
    """Reset at a random cycle of a TRAIN (while the weight row is being updated): afterwards the link
    answers, registers and counters have their reset values, and every weight word holds either its old
    or its new value (word writes are atomic; the host reloads or reads back weights after a reset)."""
    from amaranth import Module, Signal
    from amaranth.hdl import ResetInserter

    rng = random.Random(8)
    top = LinkTestTop(**TOP_PARAMS)
    rst = Signal()
    m = Module()
    m.submodules.top = ResetInserter(rst)(top)
    ref = reference_top()
    weights = [rng.randrange(1 << 16) for _ in range(32)]
    sample = bytes(rng.randrange(1, 256) for _ in range(8))
    label = 1
    load = [proto.encode_frame(C.WRITE_REG, bytes([proto.Register.LR]) + struct.pack("<I", 7)),
            proto.encode_frame(C.LOAD_WEIGHTS, bytes([0, 0, 0]) + b"".join(w.to_bytes(2, "little") for w in weights))]
    for frame in load:
        ref.feed(frame)
    ref.feed(proto.encode_frame(C.TRAIN, bytes([label]) + sample))
    new = ref.device.weights
    outcomes = []

    async def send(ctx, data):
        out = bytearray()
        for b in data:
            ctx.set(top.rx.valid, 1)
            ctx.set(top.rx.payload, b)
            await ctx.tick()
            ctx.set(top.rx.valid, 0)
        quiet = 0
        while quiet < 80:
            _, _, valid, data_ = await ctx.tick().sample(top.tx.valid, top.tx.payload)
            if valid:
                out.append(data_)
            quiet = 0 if valid or ctx.get(top.busy) else quiet + 1
        return [f for f in proto.FrameParser().feed_all(bytes(out))]

    async def bench(ctx):
        ctx.set(top.tx.ready, 1)
        for delay in range(1, 150, 5):
            for frame in load:
                assert (await send(ctx, frame))[0].payload[0] == S_OK
            for b in proto.encode_frame(C.TRAIN, bytes([label]) + sample):
                ctx.set(top.rx.valid, 1)
                ctx.set(top.rx.payload, b)
                await ctx.tick()
            ctx.set(top.rx.valid, 0)
            await ctx.tick().repeat(delay)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            await ctx.tick().repeat(3)
            ping = await send(ctx, proto.encode_frame(C.PING))
            lr = await send(ctx, proto.encode_frame(C.READ_REG, bytes([proto.Register.LR])))
            stats = await send(ctx, proto.encode_frame(C.STATS))
            back = await send(ctx, proto.encode_frame(C.READ_WEIGHTS, bytes([0, 0, 0, 32, 0])))
            assert [len(x) for x in (ping, lr, stats, back)] == [1, 1, 1, 1]
            assert ping[0].data[:4] == proto.MAGIC
            assert struct.unpack("<I", lr[0].data)[0] == 1                         # reset value
            assert struct.unpack("<11I", stats[0].data)[:2] == (2, 0)             # PING, READ_REG since reset
            got = [int.from_bytes(back[0].data[2 * i:2 * i + 2], "little") for i in range(32)]
            assert all(g in (w, n) for g, w, n in zip(got, weights, new)), delay
            outcomes.append(sum(g != w for g, w in zip(got, weights)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert outcomes[0] == 0 and any(0 < o < 8 for o in outcomes)   # before the update, and part-way through


S_OK = proto.Status.OK


def test_link_behind_uarts_like_a_board():
    """The board path: host UART → pin → UART → LinkTestTop → UART → pin → host UART, in the Amaranth
    simulator at 4 cycles per bit (the link's timeout must cover a byte time: 64 > 10 bits · 4)."""
    from amaranth import Module
    from amaranth.lib import wiring

    from loco_fpga.hdl.uart import UART, UARTReceiver, UARTTransmitter

    divisor = 4
    top = LinkTestTop(**TOP_PARAMS)
    board = UART(clk_freq=4 * 1_000_000, baud=1_000_000)
    host_tx, host_rx = UARTTransmitter(divisor=divisor), UARTReceiver(divisor=divisor)
    m = Module()
    m.submodules.top, m.submodules.board = top, board
    m.submodules.host_tx, m.submodules.host_rx = host_tx, host_rx
    wiring.connect(m, board.rx, top.rx)
    wiring.connect(m, top.tx, board.tx)
    m.d.comb += [board.rx_pin.eq(host_tx.pin), host_rx.pin.eq(board.tx_pin)]
    ref = reference_top()
    frames = [proto.encode_frame(C.PING),
              proto.encode_frame(C.LOAD_WEIGHTS, bytes([0, 0, 0]) + bytes(range(16))),
              proto.encode_frame(C.INFER, bytes(range(1, 9))),
              b"\x13\xA5" + proto.encode_frame(C.STATS)[:-1],          # garbage, then a truncated frame
              proto.encode_frame(C.STATS)]
    want = b"".join(ref.feed(f) + (ref.idle() if ref.parser.in_frame else b"") for f in frames)
    got = bytearray()

    async def host(ctx):
        for frame in frames:
            for b in frame:
                ctx.set(host_tx.tx.valid, 1)
                ctx.set(host_tx.tx.payload, b)
                await ctx.tick().until(host_tx.tx.ready)
            ctx.set(host_tx.tx.valid, 0)
            await ctx.tick().repeat(2500)                # replies drain; truncated frames time out

    async def listen(ctx):
        ctx.set(host_rx.rx.ready, 1)
        async for _, _, valid, data in ctx.tick().sample(host_rx.rx.valid, host_rx.rx.payload):
            if valid:
                got.append(data)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(listen, background=True)
    sim.run()
    assert mask_run_cycles(bytes(got)) == want
