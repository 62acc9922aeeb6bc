"""Virtual boards: the link test top without hardware, behind the host driver's transport interface.

* :class:`TestDeviceModel` — the Python twin of ``hdl.link.LinkTestDevice`` (registers, weight and
  prototype memories, the trivial INFER/TRAIN); with :class:`~loco_fpga.boards.protocol.ReferenceLink`
  it is the whole ``LinkTestTop`` in Python.
* :class:`ModelTransport` — a transport (``write``/``read``) backed by that model: instant, for host-driver
  unit tests (it can corrupt bytes on purpose to exercise the driver's retries).
* :class:`VerilatorBoard` — ``LinkTestTop`` built with Verilator (through ``loco_fpga.sim.harness``) and
  run in a cocotb process that serves the byte stream on a local TCP socket; :meth:`VerilatorBoard.transport`
  returns a :class:`~loco_fpga.boards.host.SocketTransport` the host driver uses like a serial port.
  Simulated time advances only while the simulator has bytes to move or work to do, plus a fixed number of
  idle cycles whenever the socket has been quiet for a moment (so truncated frames still time out).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.boards import protocol as proto

__all__ = ["TestDeviceModel", "reference_top", "mask_run_cycles", "ModelTransport", "ByteFeederTop",
           "VerilatorBoard", "TOP_PARAMS", "FEEDER_PARAMS"]

#: LinkTestTop generics used by the virtual board and the benches (JSON-able, they name the build)
TOP_PARAMS = {"timeout": 64, "max_payload": 72, "n_in": 8, "n_out": 4, "n_protos": 16, "event_depth": 4}

#: ByteFeederTop generics of the benches and the virtual board
FEEDER_PARAMS = {"feed_bytes": 128, "capture_bytes": 256, "max_gap": 127}

S = proto.Status
R = proto.Register


class TestDeviceModel:
    """``LinkTestDevice`` in Python (same registers, memories and arithmetic; see hdl/link.py)."""

    __test__ = False   # not a pytest class

    RESETS = {R.LR: 1, R.SEED: 1, R.MODE: 0, R.LATENCY: 0}
    WIDTHS = {R.LR: 16, R.SEED: 32, R.MODE: 2, R.LATENCY: 16}

    def __init__(self, *, n_in=8, n_out=4, n_protos=16, word_bits=16, **_ignored):
        self.n_in, self.n_out, self.n_protos, self.word_bits = n_in, n_out, n_protos, word_bits
        self.reset()

    def reset(self):
        self.regs = dict(self.RESETS)
        self.weights = [0] * (self.n_in * self.n_out)
        self.prototypes = [0] * self.n_protos

    @property
    def infer_bytes(self):
        return 2 * self.n_out + 1

    def info(self, max_payload: int) -> proto.DeviceInfo:
        return proto.DeviceInfo(proto.PROTOCOL_VERSION, 2, max_payload, self.n_in, self.infer_bytes, 1,
                                self.n_out)

    def state(self):
        """Everything a rejected frame must leave unchanged."""
        return dict(self.regs), list(self.weights), list(self.prototypes)

    def read_reg(self, addr):
        if addr == R.ID:
            return S.OK, int.from_bytes(proto.MAGIC, "big")
        if addr == R.STATUS:
            return S.OK, 0
        if addr in self.regs:
            return S.OK, self.regs[addr]
        return S.BAD_ADDRESS, 0

    def write_reg(self, addr, value):
        if addr not in self.regs:
            return S.BAD_ADDRESS
        if value >> self.WIDTHS[addr]:
            return S.BAD_VALUE
        self.regs[addr] = value
        return S.OK

    def _mem(self, space):
        if space == proto.weights_space(0):
            return self.weights
        if space == proto.prototypes_space(0):
            return self.prototypes
        return None

    def probe(self, space, addr):
        mem = self._mem(space)
        return S.OK if mem is not None and addr < len(mem) else S.BAD_ADDRESS

    def write_mem(self, space, addr, word):
        if self.probe(space, addr) != S.OK:
            return S.BAD_ADDRESS
        if word >> self.word_bits:
            return S.BAD_VALUE
        self._mem(space)[addr] = word
        return S.OK

    def read_mem(self, space, addr):
        if self.probe(space, addr) != S.OK:
            return S.BAD_ADDRESS, 0
        return S.OK, self._mem(space)[addr]

    def outputs(self, sample: bytes) -> list[int]:
        n = self.n_in
        return [sum(s * self.weights[k * n + i] for i, s in enumerate(sample)) & 0xFFFF for k in range(self.n_out)]

    def run(self, op, label, sample):
        outs = self.outputs(sample)
        pred = max(range(self.n_out), key=lambda k: (outs[k], -k))    # first maximum
        if op == "infer":
            return b"".join(o.to_bytes(2, "little") for o in outs) + bytes([pred])
        if label < self.n_out:
            mask = (1 << self.word_bits) - 1
            for i, s in enumerate(sample):
                a = label * self.n_in + i
                self.weights[a] = (self.weights[a] + s * self.regs[R.LR]) & mask
        return bytes([pred])


def reference_top(params: dict | None = None) -> proto.ReferenceLink:
    """``LinkTestTop(**params)`` in Python: a ReferenceLink over a TestDeviceModel."""
    p = {**TOP_PARAMS, **(params or {})}
    device = TestDeviceModel(**p)
    return proto.ReferenceLink(device, device.info(p["max_payload"]))


def mask_run_cycles(reply_bytes: bytes) -> bytes:
    """``reply_bytes`` re-encoded with the ``run_cycles`` counter of OK STATS replies set to 0 (the reference
    executes in zero cycles). Bytes that do not parse as frames are kept as they are (so they still differ)."""
    parser = proto.FrameParser()
    out = bytearray()
    pending = bytearray()
    for byte in reply_bytes:
        pending.append(byte)
        ev = parser.feed(byte)
        if isinstance(ev, proto.Frame):
            payload = ev.payload
            if ev.type == proto.Command.STATS | proto.REPLY_FLAG and payload[:1] == b"\x00":
                payload = payload[:-4] + bytes(4)
            out += pending[:len(pending) - proto.OVERHEAD - len(payload)]   # bytes before the frame
            out += proto.encode_frame(ev.type, payload)
            pending.clear()
        elif ev is not None:
            out += pending
            pending.clear()
    return bytes(out + pending)


class ModelTransport:
    """A host-driver transport backed by :func:`reference_top` (no simulator; replies are instant).

    ``corrupt`` is the probability that a byte written by the host is flipped on the way (so the device
    answers CRC, or sees garbage), ``corrupt_replies`` the same for bytes coming back.
    """

    def __init__(self, params: dict | None = None, *, corrupt: float = 0.0, corrupt_replies: float = 0.0,
                 seed: int = 0):
        self.link = reference_top(params)
        self.corrupt, self.corrupt_replies = corrupt, corrupt_replies
        self.rng = random.Random(seed)
        self._pending = deque()
        self.written = 0

    def _mangle(self, data: bytes, p: float) -> bytes:
        if p <= 0:
            return data
        return bytes(b ^ (1 << self.rng.randrange(8)) if self.rng.random() < p else b for b in data)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        out = self.link.feed(self._mangle(bytes(data), self.corrupt))
        self._pending.extend(self._mangle(out, self.corrupt_replies))

    def read(self, size: int, timeout: float) -> bytes:
        if not self._pending:
            # the host waits; on the device side the receiver's timeout expires
            self._pending.extend(self._mangle(self.link.idle(), self.corrupt_replies))
        out = bytes(self._pending.popleft() for _ in range(min(size, len(self._pending))))
        return out

    def reset_input(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        pass


class ByteFeederTop(wiring.Component):
    """A simulation wrapper that moves whole byte strings in and out of a ``top`` with ``rx``/``tx`` byte
    streams, so a cocotb bench touches Python once per frame, not once per cycle.

    * Feed: the bench writes ``feed_data`` (byte k at bits 8k..8k+7), ``feed_gaps`` (idle cycles after byte
      k, ``max_gap`` at most), ``feed_len``, then changes ``feed_seq``; the wrapper sends the bytes on
      ``top.rx`` (one per cycle plus the gaps) and raises ``feed_done`` when finished. The inputs must stay
      stable until then.
    * Capture: every ``top.tx`` transfer is written to the ring ``capture`` (``capture_bytes`` bytes) at
      ``captured mod capture_bytes``; ``captured`` counts all transfers (32 bits). The bench keeps its own
      read pointer (so nothing is lost between reads).
    * ``stall`` (0..7): ``top.tx.ready`` is low in ``stall`` of 8 cycles on average (16-bit LFSR).
    * ``cycles`` counts clock cycles since reset; ``busy`` is ``top.busy``; ``rx_refused`` is a sticky flag:
      ``top.rx.ready`` was low while a byte was offered (a UART would have lost it).
    """

    def __init__(self, top: wiring.Component, *, feed_bytes: int, capture_bytes: int, max_gap: int):
        self._top = top
        self._feed_bytes, self._capture_bytes, self._max_gap = feed_bytes, capture_bytes, max_gap
        gap_bits = max_gap.bit_length()
        self._gap_bits = gap_bits
        super().__init__({
            "feed_data": In(8 * feed_bytes), "feed_gaps": In(gap_bits * feed_bytes),
            "feed_len": In(range(feed_bytes + 1)), "feed_seq": In(8), "feed_done": Out(1),
            "capture": Out(8 * capture_bytes), "captured": Out(32), "stall": In(3),
            "cycles": Out(32), "busy": Out(1), "rx_refused": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self._top
        seq = Signal(8)
        idx = Signal(range(self._feed_bytes + 1))
        gap = Signal(self._gap_bits)
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += [lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5])), self.cycles.eq(self.cycles + 1)]
        m.d.comb += [top.tx.ready.eq(lfsr[:3] >= self.stall), self.busy.eq(top.busy)]
        with m.If(top.tx.valid & top.tx.ready):
            m.d.sync += [self.capture.word_select(self.captured[:(self._capture_bytes - 1).bit_length()], 8)
                         .eq(top.tx.payload), self.captured.eq(self.captured + 1)]
        with m.FSM():
            with m.State("DONE"):
                m.d.comb += self.feed_done.eq(self.feed_seq == seq)
                with m.If(self.feed_seq != seq):
                    m.d.sync += [seq.eq(self.feed_seq), idx.eq(0)]
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(idx == self.feed_len):
                    m.next = "DONE"
                with m.Else():
                    m.d.comb += [top.rx.valid.eq(1), top.rx.payload.eq(self.feed_data.word_select(idx, 8))]
                    with m.If(~top.rx.ready):
                        m.d.sync += self.rx_refused.eq(1)
                    m.d.sync += [idx.eq(idx + 1), gap.eq(self.feed_gaps.word_select(idx, self._gap_bits))]
                    with m.If(self.feed_gaps.word_select(idx, self._gap_bits) != 0):
                        m.next = "GAP"
            with m.State("GAP"):
                m.d.sync += gap.eq(gap - 1)
                with m.If(gap == 1):
                    m.next = "SEND"
        return m


class VerilatorBoard:
    """``LinkTestTop`` in Verilator behind a TCP socket, opened by the host driver like a serial port.

        with VerilatorBoard() as board:
            host = Host(board.transport())
            host.ping()

    The simulator runs in a cocotb process (bench ``loco_fpga.sim.benches.link.serve``) started from a
    background thread; :meth:`close` closes the socket, which ends the bench, and re-raises a bench failure.
    """

    def __init__(self, params: dict | None = None, *, simulator: str = "verilator", start_timeout: float = 600.0):
        self.params = {**TOP_PARAMS, **(params or {})}
        self.simulator, self.start_timeout = simulator, start_timeout
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._transports: list = []
        self.port: int | None = None

    def build(self):
        from loco_fpga.hdl.link import LinkTestTop  # noqa: PLC0415
        from loco_fpga.sim import harness  # noqa: PLC0415

        top_params = dict(self.params)
        return harness.build(lambda: ByteFeederTop(LinkTestTop(**top_params), **FEEDER_PARAMS),
                             name="link_test_top_feeder", params={**top_params, **FEEDER_PARAMS},
                             simulator=self.simulator)

    def start(self) -> VerilatorBoard:
        import tempfile  # noqa: PLC0415
        from pathlib import Path  # noqa: PLC0415

        from loco_fpga.sim import harness  # noqa: PLC0415

        built = self.build()
        port_file = Path(tempfile.mkdtemp(prefix="loco-virtual-")) / "port"

        def run():
            try:
                harness.run(built, "loco_fpga.sim.benches.link", testcase="serve",
                            params={"port_file": str(port_file)})
            except BaseException as exc:   # noqa: BLE001  (re-raised in close())
                self._error = exc

        self._thread = threading.Thread(target=run, name="verilator-board", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists():
            if not self._thread.is_alive():
                raise RuntimeError(f"the virtual board did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the virtual board did not listen within {self.start_timeout} s")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def transport(self):
        from loco_fpga.boards.host import SocketTransport  # noqa: PLC0415

        if self.port is None:
            self.start()
        t = SocketTransport("127.0.0.1", self.port)
        self._transports.append(t)
        return t

    def close(self, timeout: float = 60.0) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the virtual board's simulator did not stop")
            self._thread = None
        if self._error is not None:
            raise RuntimeError(f"the virtual board's bench failed: {self._error}") from self._error

    def __enter__(self) -> VerilatorBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
