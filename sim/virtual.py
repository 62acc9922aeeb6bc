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

from loco_fpga.boards import protocol as proto

__all__ = ["TestDeviceModel", "reference_top", "ModelTransport", "VerilatorBoard", "TOP_PARAMS"]

#: LinkTestTop generics used by the virtual board and the benches (JSON-able, they name the build)
TOP_PARAMS = {"timeout": 64, "max_payload": 64, "n_in": 8, "n_out": 4, "n_protos": 16, "event_depth": 4}

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
