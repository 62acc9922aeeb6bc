"""The host-link byte protocol (docs/protocol.md), pure Python: frames, CRC, command payloads, a
streaming parser that resynchronises after garbage, and :class:`ReferenceLink`, the device side of the
protocol as a plain Python object (the model the gateware in ``hdl/link.py`` is checked against, byte for
byte, and the back end of the model-only virtual board).

Frame (both directions)::

    0xA5 0x5A | TYPE | LEN (2 bytes, little-endian) | PAYLOAD (LEN bytes) | CRC (2 bytes, high byte first)

CRC = CRC-16/CCITT-FALSE (reveng catalogue: width 16, poly 0x1021, init 0xFFFF, no reflection, xorout 0;
check value 0x29B1 for b"123456789") over TYPE, LEN and PAYLOAD. Sent high byte first, so a receiver that
runs the CRC over TYPE…CRC ends with the residue 0 (what ``amaranth.lib.crc.Processor.match_detected``
tests). Commands have TYPE 0x01…0x7E; a reply has TYPE = command | 0x80 (0xFF when the frame was cut
off before its TYPE byte) and its payload starts with a status byte (:class:`Status`).

Multi-byte fields are little-endian (the CRC is the one exception).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SYNC", "HEADER_BYTES", "TRAILER_BYTES", "OVERHEAD", "REPLY_FLAG", "NO_TYPE", "PROTOCOL_VERSION", "MAGIC",
    "Command", "Status", "Register", "STATS_FIELDS", "Frame", "crc16", "encode_frame", "FrameParser",
    "ParseError", "DeviceInfo", "ReferenceLink", "RESET_COUNTERS", "RESET_DEVICE",
    "weights_space", "prototypes_space", "PROTOTYPE_SPACE_FLAG", "layer_geometry", "pack_weights",
    "unpack_weights", "AcceleratorRegister", "RULE_CODES", "ACCELERATOR_RESETS",
]

SYNC = b"\xA5\x5A"
HEADER_BYTES = 5            # sync (2) + type (1) + length (2)
TRAILER_BYTES = 2           # CRC
OVERHEAD = HEADER_BYTES + TRAILER_BYTES
REPLY_FLAG = 0x80
NO_TYPE = 0xFF              # reply type when the offending frame ended before its TYPE byte
PROTOCOL_VERSION = 1
MAGIC = b"LOCO"
PROTOTYPE_SPACE_FLAG = 0x80  # device-port memory space: bit 7 = prototypes, bits 6..0 = layer

RESET_COUNTERS = 0x01       # RESET_STATE flag: clear the STATS counters
RESET_DEVICE = 0x02         # RESET_STATE flag: registers to reset values, weights and prototypes to 0


class Command(enum.IntEnum):
    """Command TYPE bytes (0x01…0x7E). Payload layouts: docs/protocol.md, command table."""

    PING = 0x01
    READ_REG = 0x02
    WRITE_REG = 0x03
    LOAD_WEIGHTS = 0x04
    READ_WEIGHTS = 0x05
    LOAD_PROTOTYPES = 0x06
    READ_PROTOTYPES = 0x07
    INFER = 0x08
    TRAIN = 0x09
    STATS = 0x0A
    RESET_STATE = 0x0B


class Status(enum.IntEnum):
    """First payload byte of every reply. Anything but OK means the frame changed no state."""

    OK = 0
    CRC = 1               # CRC mismatch
    TIMEOUT = 2           # frame stopped mid-way (no byte for `timeout` cycles)
    OVERSIZE = 3          # LEN > max_payload
    BAD_LENGTH = 4        # LEN wrong for the command
    UNKNOWN_COMMAND = 5
    BUSY = 6              # frame arrived while the previous command was still executing
    BAD_ADDRESS = 7       # register / memory layer / word address does not exist or is read-only
    BAD_VALUE = 8         # register value, label, count or flags out of range


#: the STATS reply: these 32-bit counters, in this order (wrap at 2^32)
STATS_FIELDS = ("frames_ok", "crc_errors", "timeouts", "length_errors", "unknown_commands",
                "busy_rejects", "arg_errors", "replies_dropped", "samples_inferred", "samples_trained",
                "run_cycles")


class Register(enum.IntEnum):
    """Register addresses of the link test top (docs/protocol.md, register map). The accelerator top
    keeps 0x00/0x01 and defines its own config registers from 0x10."""

    ID = 0x00
    STATUS = 0x01
    LR = 0x10
    SEED = 0x11
    MODE = 0x12
    LATENCY = 0x13


def weights_space(layer: int) -> int:
    return layer & 0x7F


def prototypes_space(layer: int) -> int:
    return PROTOTYPE_SPACE_FLAG | (layer & 0x7F)


# -- CRC-16/CCITT-FALSE ------------------------------------------------------------------------------

def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes | Iterable[int], crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check: ``crc16(b"123456789") == 0x29B1``)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


# -- frames --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes = b""

    @property
    def is_reply(self) -> bool:
        return bool(self.type & REPLY_FLAG)

    @property
    def status(self) -> Status | int:
        """Status byte of a reply (raises on an empty payload)."""
        if not self.payload:
            raise ValueError(f"frame type {self.type:#04x} has no status byte")
        try:
            return Status(self.payload[0])
        except ValueError:
            return self.payload[0]

    @property
    def data(self) -> bytes:
        """Reply data after the status byte."""
        return self.payload[1:]

    def encode(self) -> bytes:
        return encode_frame(self.type, self.payload)


def encode_frame(type_: int, payload: bytes = b"") -> bytes:
    """One frame: sync, type, length, payload, CRC."""
    if not 0 <= type_ <= 0xFF:
        raise ValueError(f"type = {type_!r}: must be a byte")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes: LEN is 16 bits")
    body = bytes([type_]) + struct.pack("<H", len(payload)) + bytes(payload)
    return SYNC + body + struct.pack(">H", crc16(body))


class ParseError(Exception):
    """A frame the parser rejected; ``status`` says why, ``type`` is the TYPE byte (or NO_TYPE)."""

    def __init__(self, status: Status, type_: int):
        super().__init__(f"{status.name} (type {type_:#04x})")
        self.status, self.type = status, type_


class FrameParser:
    """Streaming frame parser with the receiver's exact semantics (hdl/link.py ``FrameReceiver``).

    ``feed(byte)`` returns None, a :class:`Frame` (CRC good) or a :class:`ParseError`; ``idle()`` is the
    receiver's timeout (no byte for ``timeout`` cycles) and returns a TIMEOUT error when a frame was cut off
    after its sync bytes. Resynchronisation: outside a frame every byte that is not the sync pair is
    skipped; after an error the parser hunts from the *next* byte (no backtracking into the bad frame).
    """

    def __init__(self, *, max_payload: int = 0xFFFF):
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or not 1 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload = {max_payload!r}: must be an integer in 1..65535")
        self.max_payload = max_payload
        self._reset()

    def _reset(self) -> None:
        self._state = "HUNT"
        self._type = NO_TYPE
        self._buf = bytearray()
        self._length = 0

    @property
    def state(self) -> str:
        """HUNT, SYNC1, TYPE, LEN0, LEN1, PAYLOAD, CRC0 or CRC1 (the receiver FSM's state names)."""
        return self._state

    @property
    def in_frame(self) -> bool:
        """True after a sync pair until the frame ends (the timeout applies)."""
        return self._state not in ("HUNT", "SYNC1")

    def feed(self, byte: int) -> Frame | ParseError | None:
        s = self._state
        if s == "HUNT":
            if byte == SYNC[0]:
                self._state = "SYNC1"
            return None
        if s == "SYNC1":
            if byte == SYNC[1]:
                self._state = "TYPE"
            elif byte != SYNC[0]:
                self._state = "HUNT"
            return None
        self._buf.append(byte)
        if s == "TYPE":
            self._type = byte
            self._state = "LEN0"
        elif s == "LEN0":
            self._state = "LEN1"
        elif s == "LEN1":
            self._length = self._buf[1] | (self._buf[2] << 8)
            if self._length > self.max_payload:
                error = ParseError(Status.OVERSIZE, self._type)
                self._reset()
                return error
            self._state = "PAYLOAD" if self._length else "CRC0"
        elif s == "PAYLOAD":
            if len(self._buf) == 3 + self._length:
                self._state = "CRC0"
        elif s == "CRC0":
            self._state = "CRC1"
        elif s == "CRC1":
            body, type_ = bytes(self._buf), self._type
            self._reset()
            if crc16(body) != 0:
                return ParseError(Status.CRC, type_)
            return Frame(type_, body[3:-2])
        return None

    def idle(self) -> ParseError | None:
        """The receiver timed out (no byte for its timeout): drop a partial frame."""
        was_in_frame, type_ = self.in_frame, self._type
        self._reset()
        return ParseError(Status.TIMEOUT, type_) if was_in_frame else None

    def feed_all(self, data: bytes) -> list[Frame | ParseError]:
        out = []
        for byte in data:
            event = self.feed(byte)
            if event is not None:
                out.append(event)
        return out


# -- device side ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceInfo:
    """The PING reply: what the host needs to talk to this device."""

    version: int
    word_bytes: int
    max_payload: int
    sample_bytes: int
    infer_bytes: int
    train_bytes: int
    n_classes: int

    FORMAT = "<4sBBHHHHB"

    def encode(self) -> bytes:
        return struct.pack(self.FORMAT, MAGIC, self.version, self.word_bytes, self.max_payload,
                           self.sample_bytes, self.infer_bytes, self.train_bytes, self.n_classes)

    @classmethod
    def decode(cls, data: bytes) -> DeviceInfo:
        if len(data) != struct.calcsize(cls.FORMAT):
            raise ValueError(f"PING reply of {len(data)} bytes, expected {struct.calcsize(cls.FORMAT)}")
        magic, *fields = struct.unpack(cls.FORMAT, data)
        if magic != MAGIC:
            raise ValueError(f"PING magic {magic!r}, expected {MAGIC!r}")
        return cls(*fields)


class ReferenceLink:
    """The device side of the protocol in Python: parser, dispatcher, counters, over a ``device`` model.

    ``device`` implements the device port of hdl/link.py as methods, each returning a :class:`Status`
    (OK, BAD_ADDRESS or BAD_VALUE) and changing nothing unless it returns OK::

        read_reg(addr) -> (status, value);  write_reg(addr, value) -> status
        probe(space, addr) -> status;  read_mem(space, addr) -> (status, word);  write_mem(space, addr, word)
        reset();  run(op, label, sample: bytes) -> result bytes (len = infer_bytes / train_bytes)

    It executes every command instantly, so it never answers BUSY, and ``run_cycles`` stays 0 (the
    gateware counts real cycles; comparisons mask that counter).
    """

    def __init__(self, device, info: DeviceInfo):
        self.device, self.info = device, info
        self.parser = FrameParser(max_payload=info.max_payload)
        self.counters = dict.fromkeys(STATS_FIELDS, 0)

    # bytes in, reply bytes out
    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            event = self.parser.feed(byte)
            if event is not None:
                out += self._handle(event)
        return bytes(out)

    def idle(self) -> bytes:
        event = self.parser.idle()
        return self._handle(event) if event is not None else b""

    def _count(self, name: str) -> None:
        self.counters[name] = (self.counters[name] + 1) & 0xFFFFFFFF

    def _handle(self, event) -> bytes:
        if isinstance(event, ParseError):
            self._count({Status.CRC: "crc_errors", Status.TIMEOUT: "timeouts",
                         Status.OVERSIZE: "length_errors"}[event.status])
            return _reply(event.type, event.status)
        status, data = self._execute(event)
        if status == Status.OK:
            self._count("frames_ok")
        elif status == Status.BAD_LENGTH:
            self._count("length_errors")
        elif status == Status.UNKNOWN_COMMAND:
            self._count("unknown_commands")
        else:
            self._count("arg_errors")
        return _reply(event.type, status, data)

    def _execute(self, frame: Frame) -> tuple[Status, bytes]:
        info, dev, p = self.info, self.device, frame.payload
        wb = info.word_bytes
        try:
            cmd = Command(frame.type)
        except ValueError:
            return Status.UNKNOWN_COMMAND, b""
        expected = {Command.PING: 0, Command.READ_REG: 1, Command.WRITE_REG: 5, Command.READ_WEIGHTS: 5,
                    Command.READ_PROTOTYPES: 5, Command.INFER: info.sample_bytes,
                    Command.TRAIN: 1 + info.sample_bytes, Command.STATS: 0, Command.RESET_STATE: 1}
        if cmd in (Command.LOAD_WEIGHTS, Command.LOAD_PROTOTYPES):
            if len(p) < 3 + wb or (len(p) - 3) % wb:
                return Status.BAD_LENGTH, b""
        elif len(p) != expected[cmd]:
            return Status.BAD_LENGTH, b""
        if cmd == Command.PING:
            return Status.OK, info.encode()
        if cmd == Command.READ_REG:
            status, value = dev.read_reg(p[0])
            return (status, struct.pack("<I", value) if status == Status.OK else b"")
        if cmd == Command.WRITE_REG:
            return dev.write_reg(p[0], struct.unpack_from("<I", p, 1)[0]), b""
        if cmd in (Command.LOAD_WEIGHTS, Command.LOAD_PROTOTYPES, Command.READ_WEIGHTS,
                   Command.READ_PROTOTYPES):
            layer, addr = p[0], p[1] | (p[2] << 8)
            if layer & PROTOTYPE_SPACE_FLAG:
                return Status.BAD_ADDRESS, b""
            space = prototypes_space(layer) if cmd in (Command.LOAD_PROTOTYPES, Command.READ_PROTOTYPES) \
                else weights_space(layer)
            if cmd in (Command.LOAD_WEIGHTS, Command.LOAD_PROTOTYPES):
                words = [int.from_bytes(p[3 + i:3 + i + wb], "little") for i in range(0, len(p) - 3, wb)]
                count = len(words)
            else:
                count = p[3] | (p[4] << 8)
                if count == 0 or 1 + count * wb > info.max_payload:
                    return Status.BAD_VALUE, b""
            last = addr + count - 1
            if last > 0xFFFF:
                return Status.BAD_ADDRESS, b""
            status = dev.probe(space, last)
            if status != Status.OK:
                return status, b""
            if cmd in (Command.LOAD_WEIGHTS, Command.LOAD_PROTOTYPES):
                for i, word in enumerate(words):
                    status = dev.write_mem(space, addr + i, word)
                    assert status == Status.OK, "device accepted the probe but refused a write"
                return Status.OK, b""
            out = bytearray()
            for i in range(count):
                status, word = dev.read_mem(space, addr + i)
                assert status == Status.OK, "device accepted the probe but refused a read"
                out += word.to_bytes(wb, "little")
            return Status.OK, bytes(out)
        if cmd == Command.INFER:
            self._count("samples_inferred")
            return Status.OK, dev.run("infer", 0, bytes(p))
        if cmd == Command.TRAIN:
            if p[0] >= info.n_classes:
                return Status.BAD_VALUE, b""
            self._count("samples_trained")
            return Status.OK, dev.run("train", p[0], bytes(p[1:]))
        if cmd == Command.STATS:
            return Status.OK, b"".join(struct.pack("<I", self.counters[f]) for f in STATS_FIELDS)
        if cmd == Command.RESET_STATE:
            flags = p[0]
            if flags & ~(RESET_COUNTERS | RESET_DEVICE):
                return Status.BAD_VALUE, b""
            if flags & RESET_DEVICE:
                dev.reset()
            if flags & RESET_COUNTERS:
                self.counters = dict.fromkeys(STATS_FIELDS, 0)
            return Status.OK, b""
        raise AssertionError(cmd)   # pragma: no cover (every Command is handled above)


def _reply(type_: int, status: Status, data: bytes = b"") -> bytes:
    return encode_frame(type_ | REPLY_FLAG, bytes([int(status)]) + data)


# -- the accelerator top's weight memory map (docs/protocol.md, "Accelerator top") --------------------

def layer_geometry(n_in: int, lanes: int) -> tuple[int, int]:
    """(P, C) of a layer with ``n_in`` inputs on an accelerator with ``lanes`` lanes: P = min(lanes, n_in + 1)
    weights per engine word, C = ⌈(n_in + 1)/P⌉ words per row. The layer's memory space has n_out·C·P words;
    column j of row i is word i·C·P + j (j ≥ n_in + 1: padding)."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes = {lanes!r}: must be a positive integer")
    p = min(lanes, n_in + 1)
    return p, -(-(n_in + 1) // p)


def pack_weights(w, lanes: int, bits: int) -> list[int]:
    """The wire words of an integer weight matrix ``w`` (n_out × (n_in + 1), bias last): two's complement in
    ``bits`` bits, rows padded with zeros to C·P columns (:func:`layer_geometry`)."""
    n_out, n = len(w), len(w[0])
    p, c = layer_geometry(n - 1, lanes)
    mask = (1 << bits) - 1
    out = []
    for row in w:
        out += [int(v) & mask for v in row] + [0] * (c * p - n)
    return out


def unpack_weights(words, n_out: int, n_in: int, lanes: int, bits: int) -> list[list[int]]:
    """Inverse of :func:`pack_weights` (padding dropped): signed integers, n_out rows of n_in + 1."""
    p, c = layer_geometry(n_in, lanes)
    if len(words) != n_out * c * p:
        raise ValueError(f"{len(words)} words: a {n_out}×{n_in + 1} layer at lanes {lanes} has {n_out * c * p}")
    sign = 1 << (bits - 1)
    return [[((words[i * c * p + j] & ((1 << bits) - 1)) ^ sign) - sign for j in range(n_in + 1)]
            for i in range(n_out)]


class AcceleratorRegister(enum.IntEnum):
    """Register addresses of the accelerator top (hdl/top.py; docs/protocol.md, "Accelerator top")."""

    ID = 0x00          # RO  "LOCO"
    STATUS = 0x01      # RO  bit 0: the network is busy (reads 0 over the link: commands run one at a time)
    LR = 0x10          # RW  lr register η/(n_L σ) (fmts.lr), used by every TRAIN; reset 0
    SEED_LANE = 0x11   # RW  the PRNG lane a SEED write loads (< SEED_LANES); reset 0
    SEED = 0x12        # RW  write: load lane SEED_LANE with this state (≠ 0); read: the last value written; reset 0
    SEED_LANES = 0x13  # RO  number of PRNG lanes (hdl Network.seed_map order)
    RULE = 0x14        # RO  the on-chip update rule (RULE_CODES: 1 np, 2 loco, 3 dfa, 4 lls)
    LANES = 0x15       # RO  synapse lanes (the LANES generic)
    LAYERS = 0x16      # RO  number of layers L
    CLUSTER_UNITS = 0x17  # RO  LOCO: parallel units of every cluster block (1 … K); 0 without cluster blocks


#: values of the accelerator's RULE register
RULE_CODES = {"np": 1, "loco": 2, "dfa": 3, "lls": 4}
#: the accelerator's read-write registers and their reset values
ACCELERATOR_RESETS = {AcceleratorRegister.LR: 0, AcceleratorRegister.SEED_LANE: 0, AcceleratorRegister.SEED: 0}
