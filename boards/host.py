"""Host driver: the typed Python API of a board (real, over a serial port, or virtual, over a socket).

    host = Host(SerialTransport("/dev/ttyUSB1", 115200))         # or VerilatorBoard(...).transport()
    info = host.ping()
    host.write_reg(Register.LR, 3)
    host.load_weights(0, words)
    result = host.infer(sample)          # InferResult(outputs, prediction, raw)
    host.train(sample, label)
    host.stats()                         # {"frames_ok": …, "crc_errors": …, …}

Every call sends one frame per chunk and waits for its reply (``timeout`` seconds), with up to
``retries`` resends. TRAIN is resent only when the device provably did not execute it: it answered our
TYPE with CRC, TIMEOUT, OVERSIZE or BUSY — a rejected frame changes no state (docs/protocol.md). When the
reply is lost or corrupted (or only an error reply for a garbled TYPE comes back) a command may or may not
have run: idempotent commands (everything but TRAIN) are resent, TRAIN raises :class:`LinkUncertain` (the
caller decides, e.g. reads the weights back) — the driver never leaves the board in an unknown state
silently.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

from . import protocol as proto

__all__ = ["Transport", "SerialTransport", "SocketTransport", "Host", "LinkError", "LinkTimeout",
           "LinkUncertain", "DeviceError", "InferResult", "TrainResult"]

C = proto.Command
S = proto.Status
#: device statuses that mean "the frame was not executed; sending it again is safe"
_NOT_EXECUTED = {S.CRC, S.TIMEOUT, S.OVERSIZE, S.BUSY}


class LinkError(Exception):
    """The link failed (no usable reply after all retries, or a malformed reply)."""


class LinkTimeout(LinkError):
    """No reply to a command within the timeout, after every retry."""


class LinkUncertain(LinkError):
    """A state-changing command whose reply was lost: it may or may not have executed."""


class DeviceError(LinkError):
    """The device rejected the command (and changed nothing); ``status`` says why."""

    def __init__(self, command: proto.Command, status: int):
        name = S(status).name if status in {s.value for s in S} else f"status {status}"
        super().__init__(f"{command.name} rejected by the device: {name}")
        self.command, self.status = command, status


class Transport(Protocol):
    """A byte pipe to the device."""

    def write(self, data: bytes) -> None: ...

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; at least one unless ``timeout`` seconds pass (then b"")."""

    def reset_input(self) -> None:
        """Drop bytes received but not yet read."""

    def close(self) -> None: ...


class SerialTransport:
    """A serial port through pyserial (``serial.Serial(port, baud, timeout=...)``), 8N1."""

    def __init__(self, port: str, baud: int = 115200, *, timeout: float = 0.1):
        try:
            import serial  # noqa: PLC0415  (only real boards need pyserial)
        except ImportError as exc:
            raise LinkError("pyserial is not installed (pip install pyserial): needed for real boards") from exc
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud = {baud!r}: must be a positive integer")
        self._port = serial.Serial(port, baud, timeout=timeout)

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, size: int, timeout: float) -> bytes:
        self._port.timeout = timeout
        first = self._port.read(1)
        if not first:
            return b""
        waiting = min(size - 1, self._port.in_waiting)
        return first + (self._port.read(waiting) if waiting > 0 else b"")

    def reset_input(self) -> None:
        self._port.reset_input_buffer()

    def close(self) -> None:
        self._port.close()


class SocketTransport:
    """A TCP byte stream (the virtual board serves one on 127.0.0.1)."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 30.0):
        self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read(self, size: int, timeout: float) -> bytes:
        self._sock.settimeout(max(timeout, 1e-4))
        try:
            data = self._sock.recv(size)
        except (socket.timeout, BlockingIOError):
            return b""
        if not data:
            raise LinkError("the virtual board closed the connection")
        return data

    def reset_input(self) -> None:
        self._sock.setblocking(False)
        try:
            while self._sock.recv(4096):
                pass
        except (BlockingIOError, socket.timeout):
            pass
        finally:
            self._sock.setblocking(True)

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class InferResult:
    outputs: list[int]      # n_classes output words (unsigned as sent; the device defines their format)
    prediction: int
    raw: bytes


@dataclass(frozen=True)
class TrainResult:
    prediction: int         # the prediction before the update
    raw: bytes


class Host:
    """The typed API over a :class:`Transport` (see the module docstring for the retry rules)."""

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 3, busy_wait: float = 0.01):
        if not timeout > 0:
            raise ValueError(f"timeout = {timeout!r}: must be > 0 seconds")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries = {retries!r}: must be an integer >= 0")
        self.transport, self.timeout, self.retries, self.busy_wait = transport, timeout, retries, busy_wait
        self._info: proto.DeviceInfo | None = None
        #: retries so far, by reason (diagnostics)
        self.retry_log: dict[str, int] = {}

    # -- one command ------------------------------------------------------------------------------
    def command(self, cmd: proto.Command, payload: bytes = b"", *, idempotent: bool = True) -> bytes:
        """Send ``cmd`` and return its reply data (after the status byte)."""
        frame = proto.encode_frame(cmd, payload)
        reason = "no attempt"
        for _attempt in range(self.retries + 1):
            self.transport.reset_input()
            self.transport.write(frame)
            outcome, value = self._await_reply(cmd)
            if outcome == "ok":
                return value
            if outcome == "rejected":
                raise DeviceError(cmd, value)
            if outcome in ("ambiguous", "garbled") and not idempotent:
                raise LinkUncertain(f"{cmd.name}: {value}; it may or may not have executed "
                                    f"(read the state back before going on)")
            reason = value
            self.retry_log[reason] = self.retry_log.get(reason, 0) + 1
            if "BUSY" in reason:
                time.sleep(self.busy_wait)
        if "no reply" in reason:
            raise LinkTimeout(f"{cmd.name}: {reason} after {self.retries + 1} attempts")
        raise LinkError(f"{cmd.name}: {reason} after {self.retries + 1} attempts")

    def _await_reply(self, cmd: proto.Command) -> tuple[str, object]:
        parser = proto.FrameParser()
        want = cmd | proto.REPLY_FLAG
        deadline = time.monotonic() + self.timeout
        corrupted = other_rejection = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            data = self.transport.read(4096, remaining)
            for ev in parser.feed_all(data):
                if isinstance(ev, proto.ParseError):
                    corrupted = True                 # a reply was damaged on its way to us
                    continue
                if not ev.payload:
                    corrupted = True
                    continue
                status = ev.payload[0]
                if ev.type == want:
                    if status == S.OK:
                        return "ok", ev.data
                    if status in _NOT_EXECUTED:
                        return "retry", f"device answered {S(status).name}"
                    return "rejected", status
                if status != S.OK:
                    other_rejection = True           # our frame arrived damaged (type or sync garbled)
        if corrupted:
            return "ambiguous", "reply corrupted"
        if other_rejection:   # most likely our frame, garbled; but a lost reply behind line noise looks alike
            return "garbled", "frame damaged on the way (device rejected a garbled frame)"
        return "ambiguous", "no reply"

    # -- the typed API ----------------------------------------------------------------------------
    def ping(self) -> proto.DeviceInfo:
        self._info = proto.DeviceInfo.decode(self.command(C.PING))
        return self._info

    @property
    def info(self) -> proto.DeviceInfo:
        return self._info if self._info is not None else self.ping()

    def read_reg(self, addr: int) -> int:
        data = self.command(C.READ_REG, bytes([_byte("addr", addr)]))
        return struct.unpack("<I", _exact(data, 4, "READ_REG"))[0]

    def write_reg(self, addr: int, value: int) -> None:
        if not 0 <= value < 1 << 32:
            raise ValueError(f"value = {value!r}: registers are 32 bits")
        _exact(self.command(C.WRITE_REG, bytes([_byte("addr", addr)]) + struct.pack("<I", value)), 0, "WRITE_REG")

    def _load(self, cmd, layer, words, start):
        info = self.info
        bits = 8 * info.word_bytes
        per = (info.max_payload - 3) // info.word_bytes
        encoded = []
        for w in words:
            w = int(w)
            if not -(1 << (bits - 1)) <= w < 1 << bits:
                raise ValueError(f"word {w}: does not fit {bits} bits")
            encoded.append((w & ((1 << bits) - 1)).to_bytes(info.word_bytes, "little"))
        for at in range(0, len(encoded), per):
            payload = bytes([_layer(layer)]) + struct.pack("<H", _addr(start + at)) + b"".join(encoded[at:at + per])
            _exact(self.command(cmd, payload), 0, cmd.name)

    def _read(self, cmd, layer, count, start, signed):
        info = self.info
        per = (info.max_payload - 1) // info.word_bytes
        out = []
        for at in range(0, count, per):
            n = min(per, count - at)
            data = self.command(cmd, bytes([_layer(layer)]) + struct.pack("<HH", _addr(start + at), n))
            _exact(data, n * info.word_bytes, cmd.name)
            out += [int.from_bytes(data[i:i + info.word_bytes], "little", signed=signed)
                    for i in range(0, len(data), info.word_bytes)]
        return out

    def load_weights(self, layer: int, words, start: int = 0) -> None:
        """Write ``words`` (ints; negative ones as two's complement) from word ``start`` of the layer."""
        self._load(C.LOAD_WEIGHTS, layer, list(words), start)

    def read_weights(self, layer: int, count: int, start: int = 0, *, signed: bool = False) -> list[int]:
        return self._read(C.READ_WEIGHTS, layer, count, start, signed)

    def load_prototypes(self, layer: int, words, start: int = 0) -> None:
        self._load(C.LOAD_PROTOTYPES, layer, list(words), start)

    def read_prototypes(self, layer: int, count: int, start: int = 0, *, signed: bool = False) -> list[int]:
        return self._read(C.READ_PROTOTYPES, layer, count, start, signed)

    def _sample(self, sample) -> bytes:
        data = bytes(sample)
        if len(data) != self.info.sample_bytes:
            raise ValueError(f"sample of {len(data)} bytes: the device takes {self.info.sample_bytes}")
        return data

    def infer(self, sample) -> InferResult:
        info = self.info
        data = _exact(self.command(C.INFER, self._sample(sample)), info.infer_bytes, "INFER")
        width = (info.infer_bytes - 1) // info.n_classes
        outputs = [int.from_bytes(data[k * width:(k + 1) * width], "little") for k in range(info.n_classes)]
        return InferResult(outputs, data[-1], data)

    def train(self, sample, label: int) -> TrainResult:
        if not 0 <= label < self.info.n_classes:
            raise ValueError(f"label = {label!r}: must be in 0..{self.info.n_classes - 1}")
        data = self.command(C.TRAIN, bytes([label]) + self._sample(sample), idempotent=False)
        data = _exact(data, self.info.train_bytes, "TRAIN")
        return TrainResult(data[0], data)

    def stats(self) -> dict[str, int]:
        data = _exact(self.command(C.STATS), 4 * len(proto.STATS_FIELDS), "STATS")
        return dict(zip(proto.STATS_FIELDS, struct.unpack(f"<{len(proto.STATS_FIELDS)}I", data)))

    def reset_state(self, *, counters: bool = True, device: bool = False) -> None:
        flags = (proto.RESET_COUNTERS if counters else 0) | (proto.RESET_DEVICE if device else 0)
        _exact(self.command(C.RESET_STATE, bytes([flags])), 0, "RESET_STATE")

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _exact(data: bytes, n: int, what: str) -> bytes:
    if len(data) != n:
        raise LinkError(f"{what}: reply of {len(data)} data bytes, expected {n}")
    return data


def _byte(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} = {value!r}: must be a byte (0..255)")
    return value


def _layer(layer):
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= 0x7F:
        raise ValueError(f"layer = {layer!r}: must be in 0..127")
    return layer


def _addr(addr):
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"word address {addr}: must be in 0..65535")
    return addr
