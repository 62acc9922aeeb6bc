"""Benches of a byte-stream top on its byte streams: ``LinkTestTop`` (hdl/link.py) or, with the bench parameter
``target = "accelerator"``, the accelerator top (hdl/top.py; reference ``accelerator_reference``, see
:class:`AcceleratorTarget`).

``robustness`` — thousands of random and mutated frames (bit flips, truncations, lies and changes in LEN,
unknown types, oversize, garbage between frames, byte gaps up to and across the timeout, frames arriving
while a command executes or its reply is being sent). Every case is fed to the Python reference
(``ReferenceLink`` over ``TestDeviceModel``) too, and the reply bytes must be equal (STATS ``run_cycles``
masked). After every rejected frame of a state-changing command (WRITE_REG, LOAD_*, TRAIN, RESET_STATE)
what it could have changed (registers, all weights or all prototypes), and every ``snapshot_every`` cases
all of them, are read back and must equal the reference's (which a rejected frame never changes — asserted on the reference as well). A case
whose replies do not arrive within ``hang_cycles`` is a hang and ends the bench.

``serve`` — the virtual board: bytes from a TCP client (the host driver) to ``rx`` and from ``tx`` back.

The per-cycle loop awaits one falling edge per cycle: inputs written there are seen by the next rising
edge, and ``tx`` (valid never depends on ready or on ``rx``) is sampled there for the same edge.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from loco_fpga.boards import protocol as proto
from loco_fpga.sim.virtual import mask_run_cycles, reference_top

from . import bench_params

C = proto.Command
R = proto.Register


class ByteDriver:
    """Moves whole byte strings through ``ByteFeederTop`` (sim/virtual.py): Python runs once per string,
    the simulator runs the cycles in between on its own."""

    PERIOD_NS = 10

    def __init__(self, dut, *, stall: float, feed_bytes: int, capture_bytes: int, max_gap: int):
        self.dut = dut
        self.feed_bytes, self.capture_bytes, self.max_gap = feed_bytes, capture_bytes, max_gap
        self.gap_bits = max_gap.bit_length()
        self.seq = 0
        self.read = 0                       # bytes of the capture ring already taken
        self.pending = bytearray()          # taken from the ring by collect(), not yet by take()
        dut.feed_seq.value = 0
        dut.feed_len.value = 0
        dut.stall.value = min(7, round(stall * 8))

    async def wait(self, cycles: int) -> None:
        await Timer(max(1, cycles) * self.PERIOD_NS, unit="ns")

    async def send(self, data: bytes, gaps=None) -> None:
        """Send ``data`` (``gaps[k]`` idle cycles after byte k); returns when the last byte went in. Data longer
        than ``feed_bytes`` go in several feeds, cut after a byte whose gap is short (≤ 16 cycles): the few
        cycles between two feeds then only lengthen a short gap, never one near the receiver's timeout."""
        gaps = list(gaps or [0] * len(data))
        while len(data) > self.feed_bytes:
            cut = next((i for i in range(self.feed_bytes, 0, -1) if gaps[i - 1] <= 16), self.feed_bytes)
            await self.send(data[:cut], gaps[:cut])
            data, gaps = data[cut:], gaps[cut:]
        if not data:
            return
        if max(gaps) > self.max_gap:
            raise ValueError(f"gap {max(gaps)} > max_gap = {self.max_gap}")
        packed = 0
        for k, g in enumerate(gaps):
            packed |= g << (k * self.gap_bits)
        self.dut.feed_data.value = int.from_bytes(data, "little")
        self.dut.feed_gaps.value = packed
        self.dut.feed_len.value = len(data)
        self.seq = (self.seq + 1) & 0xFF
        self.dut.feed_seq.value = self.seq
        await self.wait(len(data) + sum(gaps) + 2)
        while not self.dut.feed_done.value:
            await self.wait(4)

    async def idle(self, n: int) -> None:
        await self.wait(n)

    def available(self) -> int:
        return (int(self.dut.captured.value) - self.read) & 0xFFFFFFFF

    async def collect(self, count: int, limit: int) -> bool:
        """Wait until ``count`` reply bytes are available; False after ``limit`` cycles (a hang). The ring is
        drained on the way (waits of at most half its size), so a reply longer than the ring cannot overrun it."""
        spent = 0
        while len(self.pending) + self.available() < count:
            if spent >= limit:
                return False
            self.pending += self._take()
            step = max(8, min(2 * (count - len(self.pending)), self.capture_bytes // 2))
            await self.wait(step)
            spent += step
        return True

    def take(self) -> bytes:
        out = bytes(self.pending) + self._take()
        self.pending.clear()
        return out

    def _take(self) -> bytes:
        n = self.available()
        if n == 0:
            return b""
        if n > self.capture_bytes:
            raise AssertionError(f"capture ring overflow: {n} bytes unread > {self.capture_bytes}")
        ring = int(self.dut.capture.value).to_bytes(self.capture_bytes, "little")
        out = bytes(ring[(self.read + i) % self.capture_bytes] for i in range(n))
        self.read = (self.read + n) & 0xFFFFFFFF
        return out

    @property
    def cycles(self) -> int:
        return int(self.dut.cycles.value)


# -- case generation ---------------------------------------------------------------------------------

def _words(rng, n):
    return b"".join(rng.randrange(1 << 16).to_bytes(2, "little") for _ in range(n))


def command_frame(rng: random.Random, info: proto.DeviceInfo, n_weights: int = 32, n_protos: int = 16) -> bytes:
    """A random command; about 70 % have valid arguments, the rest are out of range in some field."""
    valid = rng.random() < 0.7
    maxw = (info.max_payload - 3) // info.word_bytes
    config = [R.LR, R.SEED, R.MODE, R.LATENCY]
    kind = rng.choices(list(C) + ["reset_device"], weights=[3, 6, 8, 10, 8, 6, 6, 8, 8, 4, 2, 0.3])[0]
    f = proto.encode_frame
    if kind == C.PING or kind == C.STATS:
        return f(kind)
    if kind == C.READ_REG:
        return f(kind, bytes([rng.choice(config + [R.ID, R.STATUS]) if valid else rng.randrange(256)]))
    if kind == C.WRITE_REG:
        addr = rng.choice(config) if valid else rng.choice([R.ID, R.STATUS, rng.randrange(256)] + config)
        width = {R.LR: 16, R.SEED: 32, R.MODE: 2, R.LATENCY: 5}.get(addr, 32)   # LATENCY: keep runs short
        value = rng.randrange(1 << width) if valid else rng.randrange(1 << 32)
        if addr == R.LATENCY:
            value &= 0x1F
        return f(kind, bytes([addr]) + struct.pack("<I", value))
    if kind in (C.LOAD_WEIGHTS, C.LOAD_PROTOTYPES, C.READ_WEIGHTS, C.READ_PROTOTYPES):
        size = n_weights if kind in (C.LOAD_WEIGHTS, C.READ_WEIGHTS) else n_protos
        if valid:
            layer, n = 0, rng.randint(1, min(size, maxw))
            addr = rng.randrange(size - n + 1)
        else:
            layer = rng.choice([0, 1, 0x80, rng.randrange(256)])
            n = rng.randint(1, maxw)
            addr = rng.choice([rng.randrange(size + 8), rng.randrange(1 << 16)])
        if kind in (C.LOAD_WEIGHTS, C.LOAD_PROTOTYPES):
            return f(kind, bytes([layer]) + struct.pack("<H", addr) + _words(rng, n))
        count = n if valid else rng.choice([n, 0, maxw + 1, rng.randrange(1 << 16)])
        return f(kind, bytes([layer]) + struct.pack("<HH", addr, count))
    if kind == C.INFER:
        return f(kind, bytes(rng.randrange(256) for _ in range(info.sample_bytes)))
    if kind == C.TRAIN:
        label = rng.randrange(info.n_classes) if valid else rng.randrange(256)
        return f(kind, bytes([label]) + bytes(rng.randrange(256) for _ in range(info.sample_bytes)))
    if kind == C.RESET_STATE:
        return f(kind, bytes([rng.choice([proto.RESET_COUNTERS, 0]) if valid else rng.randrange(256) | 4]))
    return f(C.RESET_STATE, bytes([rng.choice([proto.RESET_DEVICE, proto.RESET_DEVICE | proto.RESET_COUNTERS])]))


def _garbage(rng, n):
    return bytes(rng.choice([0xA5, 0x5A, rng.randrange(256)]) for _ in range(n))


def mutate(rng: random.Random, frame: bytes, info: proto.DeviceInfo) -> tuple[str, bytes]:
    """(mutation name, bytes) — a frame changed the ways a noisy, buggy or unlucky link changes it."""
    b = bytearray(frame)
    kind = rng.choices(["none", "flip", "truncate", "len_lie", "len_resize", "garbage_before", "garbage_after",
                        "insert", "delete", "unknown_type", "oversize", "garbage_only", "double_sync"],
                       weights=[30, 12, 10, 6, 6, 6, 4, 4, 4, 4, 4, 6, 4])[0]
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[:rng.randrange(1, len(b))]
    elif kind == "len_lie":
        b[3:5] = struct.pack("<H", rng.choice([rng.randrange(info.max_payload + 1), rng.randrange(1 << 16)]))
    elif kind == "len_resize":
        body = b[5:-2]
        body = body[:rng.randrange(len(body) + 1)] if rng.random() < 0.5 or not body else \
            body + _garbage(rng, rng.randint(1, 4))
        b = bytearray(proto.encode_frame(b[2], bytes(body[:info.max_payload])))
    elif kind == "garbage_before":
        b = _garbage(rng, rng.randint(1, 12)) + b
    elif kind == "garbage_after":
        b = b + _garbage(rng, rng.randint(1, 6))
    elif kind == "insert":
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes([rng.randrange(256)])
    elif kind == "delete":
        del b[rng.randrange(len(b))]
    elif kind == "unknown_type":
        t = rng.choice([0x00, 0x7F, rng.randrange(0x0C, 0x100)])
        b = bytearray(proto.encode_frame(t, bytes(b[5:-2])))
    elif kind == "oversize":
        b[3:5] = struct.pack("<H", rng.randint(info.max_payload + 1, 0xFFFF))
    elif kind == "garbage_only":
        b = bytearray(_garbage(rng, rng.randint(1, 24)))
    elif kind == "double_sync":
        b = bytearray(b"\xA5" * rng.randint(1, 3)) + b
    return kind, bytes(b)


# -- the bench ----------------------------------------------------------------------------------------

async def _reset(dut, clock_impl: str = "py"):
    # clock_impl "gpi": the clock toggles in C++ (no Python per edge); safe here because the bench writes
    # inputs only at falling edges (every wait is a whole number of periods from one)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl=clock_impl).start())
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    # From here on the bench acts only at falling edges (every wait is a whole number of periods): its writes
    # never share a time step with a rising edge (Icarus would race them against the clocked processes).
    await FallingEdge(dut.clk)


#: what a command can change, i.e. what is read back after one is rejected
TOUCHES = {C.WRITE_REG: ("regs",), C.LOAD_WEIGHTS: ("weights",), C.LOAD_PROTOTYPES: ("protos",),
           C.TRAIN: ("weights",), C.RESET_STATE: ("regs", "weights", "protos")}


def snapshot_frames(parts=("regs", "weights", "protos")) -> list[bytes]:
    """Read-back frames: the config registers, all weights, all prototypes (or some of them)."""
    f = proto.encode_frame
    out = []
    if "regs" in parts:
        out += [f(C.READ_REG, bytes([r])) for r in (R.LR, R.SEED, R.MODE, R.LATENCY)]
    if "weights" in parts:
        out.append(f(C.READ_WEIGHTS, bytes([0]) + struct.pack("<HH", 0, 32)))
    if "protos" in parts:
        out.append(f(C.READ_PROTOTYPES, bytes([0]) + struct.pack("<HH", 0, 16)))
    return out


class LinkTestTarget:
    """What the robustness bench needs to know about ``LinkTestTop``: its reference, frames, read-backs and how
    to make INFER/TRAIN long (the LATENCY register)."""

    touches = TOUCHES
    hang_cycles = 4000

    def __init__(self, params):
        self.ref = reference_top({k: params[k] for k in ("timeout", "max_payload", "n_in", "n_out", "n_protos",
                                                         "event_depth")})

    def setup_frames(self):
        return []

    def command_frame(self, rng, info):
        return command_frame(rng, info)

    def snapshot_frames(self, parts):
        return snapshot_frames(parts)

    def touched_frames(self, frame):
        """Read-backs of what the command of ``frame`` (rejected) could have changed."""
        return snapshot_frames(self.touches[frame[2]]) if frame[2] in self.touches else []

    def long_frames(self, rng, latency):
        """(frames before, frames after) a busy case: INFER/TRAIN take ``latency`` extra cycles in between."""
        return ([proto.encode_frame(C.WRITE_REG, bytes([R.LATENCY]) + struct.pack("<I", latency))],
                [proto.encode_frame(C.WRITE_REG, bytes([R.LATENCY]) + bytes(4))])

    def read_frame(self):
        return proto.encode_frame(C.READ_WEIGHTS, bytes([0]) + struct.pack("<HH", 0, 32))


class AcceleratorTarget:
    """The accelerator top (hdl/top.py) for the robustness bench: ``accelerator_reference`` of the bench's config
    and lanes; every PRNG lane seeded and the golden initial weights loaded first (so TRAIN replies mean
    something); read-backs of LR/SEED_LANE/SEED and of every weight word. INFER/TRAIN are long by themselves."""

    A = proto.AcceleratorRegister
    touches = {C.WRITE_REG: ("regs",), C.LOAD_WEIGHTS: ("weights",), C.TRAIN: ("weights",),
               C.RESET_STATE: ("regs", "weights")}

    def __init__(self, params):
        import numpy as np  # noqa: PLC0415

        from loco_fpga.config import Config  # noqa: PLC0415
        from loco_fpga.golden_model.fixed import FixedNetwork  # noqa: PLC0415
        from loco_fpga.sim.virtual import accelerator_reference  # noqa: PLC0415

        self.config = Config.from_dict(params["config"])
        self.lanes = params["lanes"]
        self.ref = accelerator_reference(self.config, lanes=self.lanes)
        self.model = self.ref.device
        self.hang_cycles = params.get("hang_cycles", 200_000)
        self.sizes = [w.shape[0] * p * c for w, (p, c) in zip(self.model.net.weights, self.model.geometry)]
        self.init = FixedNetwork(self.config, np.random.default_rng(params["seed"])).weights

    def _words(self, rng, n):
        return b"".join(rng.randrange(1 << 16).to_bytes(2, "little") for _ in range(n))

    def _chunks(self, cmd, layer, words=None):
        info = self.ref.info
        n = self.sizes[layer]
        if words is None:
            per = (info.max_payload - 1) // info.word_bytes
            return [proto.encode_frame(cmd, bytes([layer]) + struct.pack("<HH", at, min(per, n - at)))
                    for at in range(0, n, per)]
        per = (info.max_payload - 3) // info.word_bytes
        return [proto.encode_frame(cmd, bytes([layer]) + struct.pack("<H", at)
                                   + b"".join(w.to_bytes(2, "little") for w in words[at:at + per]))
                for at in range(0, n, per)]

    def setup_frames(self):
        from loco_fpga.golden_model import prng  # noqa: PLC0415

        A, f = self.A, proto.encode_frame
        out = []
        for lane, (stream, index) in enumerate(self.model.seed_map):
            out += [f(C.WRITE_REG, bytes([A.SEED_LANE]) + struct.pack("<I", lane)),
                    f(C.WRITE_REG, bytes([A.SEED]) + struct.pack("<I", prng.seed_state(self.config.train.seed,
                                                                                         stream, index)))]
        for l, w in enumerate(self.init):
            out += self._chunks(C.LOAD_WEIGHTS, l, proto.pack_weights(w.tolist(), self.lanes, self.model.wbits))
        return out + [f(C.WRITE_REG, bytes([A.LR]) + struct.pack("<I", 20000))]

    def command_frame(self, rng, info):
        """A random command; about 70 % with valid arguments."""
        A, f = self.A, proto.encode_frame
        valid = rng.random() < 0.7
        maxw = (info.max_payload - 3) // info.word_bytes
        n_lanes = len(self.model.seed_map)
        kind = rng.choices(list(C) + ["reset_device"], weights=[3, 6, 8, 10, 8, 3, 3, 5, 5, 4, 2, 0.3])[0]
        sample = lambda: bytes(rng.randrange(256) if rng.random() < 0.9 else 0xFF  # noqa: E731
                               for _ in range(info.sample_bytes))
        if kind in (C.PING, C.STATS):
            return f(kind)
        if kind == C.READ_REG:
            return f(kind, bytes([rng.choice(list(A)) if valid else rng.randrange(256)]))
        if kind == C.WRITE_REG:
            if valid:
                addr = rng.choice([A.LR, A.SEED_LANE, A.SEED])
                value = {A.LR: rng.randrange(1 << 16), A.SEED_LANE: rng.randrange(n_lanes),
                         A.SEED: rng.randrange(1, 1 << 32)}[addr]
            else:
                addr = rng.choice(list(A) + [rng.randrange(256)])
                value = rng.choice([0, rng.randrange(1 << 32), 1 << 16, n_lanes])
            return f(kind, bytes([addr]) + struct.pack("<I", value))
        if kind in (C.LOAD_WEIGHTS, C.LOAD_PROTOTYPES, C.READ_WEIGHTS, C.READ_PROTOTYPES):
            if valid:
                layer = rng.randrange(len(self.sizes))
                size = self.sizes[layer]
                n = rng.randint(1, min(size, maxw))
                addr = rng.randrange(size - n + 1)
            else:
                layer = rng.choice([len(self.sizes), 0x80, rng.randrange(256), rng.randrange(len(self.sizes))])
                n = rng.randint(1, maxw)
                addr = rng.choice([rng.randrange(max(self.sizes) + 8), rng.randrange(1 << 16)])
            if kind in (C.LOAD_WEIGHTS, C.LOAD_PROTOTYPES):
                return f(kind, bytes([layer]) + struct.pack("<H", addr) + self._words(rng, n))
            count = n if valid else rng.choice([n, 0, maxw + 1, rng.randrange(1 << 16)])
            return f(kind, bytes([layer]) + struct.pack("<HH", addr, count))
        if kind == C.INFER:
            return f(kind, sample())
        if kind == C.TRAIN:
            label = rng.randrange(info.n_classes) if valid else rng.randrange(256)
            return f(kind, bytes([label]) + sample())
        if kind == C.RESET_STATE:
            return f(kind, bytes([rng.choice([proto.RESET_COUNTERS, 0]) if valid else rng.randrange(256) | 4]))
        return f(C.RESET_STATE, bytes([rng.choice([proto.RESET_DEVICE, proto.RESET_DEVICE | proto.RESET_COUNTERS])]))

    def snapshot_frames(self, parts):
        A, f = self.A, proto.encode_frame
        out = []
        if "regs" in parts:
            out += [f(C.READ_REG, bytes([r])) for r in (A.LR, A.SEED_LANE, A.SEED)]
        if "weights" in parts:
            for layer in range(len(self.sizes)):
                out += self._chunks(C.READ_WEIGHTS, layer)
        return out

    def touched_frames(self, frame):
        """Read-backs of what the command of ``frame`` (rejected) could have changed: the registers (WRITE_REG),
        the words a LOAD_WEIGHTS names (clipped to its layer; one chunk of layer 0 when it names none), every
        weight (TRAIN, RESET_STATE)."""
        cmd = frame[2]
        if cmd == C.LOAD_WEIGHTS and len(frame) >= 10:
            layer, addr = frame[5], frame[6] | (frame[7] << 8)
            n = (len(frame) - 10) // 2
            info = self.ref.info
            if layer < len(self.sizes) and addr < self.sizes[layer] and n:
                last = min(addr + n, self.sizes[layer])
                per = (info.max_payload - 1) // info.word_bytes
                return [proto.encode_frame(C.READ_WEIGHTS, bytes([layer]) + struct.pack("<HH", at, min(per, last - at)))
                        for at in range(addr, last, per)]
            return [self.read_frame()]
        return self.snapshot_frames(self.touches[cmd]) if cmd in self.touches else []

    def long_frames(self, rng, latency):
        return [], []

    def read_frame(self):
        return self._chunks(C.READ_WEIGHTS, 0)[0]


TARGETS = {"link_test_top": LinkTestTarget, "accelerator": AcceleratorTarget}


@cocotb.test()
async def robustness(dut):
    params = bench_params()
    rng = random.Random(params["seed"])
    timeout = params["timeout"]
    target = TARGETS[params.get("target", "link_test_top")](params)
    hang = params.get("hang_cycles", target.hang_cycles)
    await _reset(dut, params.get("clock_impl", "py"))
    drv = ByteDriver(dut, stall=params.get("stall", 0.125), feed_bytes=params["feed_bytes"],
                     capture_bytes=params["capture_bytes"], max_gap=params["max_gap"])
    ref = target.ref
    info = ref.info
    stats = {"cases": 0, "frames_sent": 0, "mismatches": 0, "rejected": 0, "accepted": 0, "snapshots": 0,
             "busy_cases": 0, "busy_replies": 0, "timeouts_fired": 0, "mutations": {}}
    start = time.monotonic()

    def log_mismatch(what, chunk, want, got):
        stats["mismatches"] += 1
        if stats["mismatches"] <= 8:
            dut._log.error(f"{what}: sent {chunk.hex()}\n  want {want.hex()}\n  got  {got.hex()}")

    async def exchange(chunk: bytes, gaps=None, what="case", split_timeout=None) -> bytes:
        """Send ``chunk``; model it; compare replies. ``split_timeout`` = index where the sender pauses for
        exactly ``timeout`` idle cycles (the receiver must time out there, not one cycle later)."""
        if split_timeout is not None:
            gaps = [0] * len(chunk)
            gaps[split_timeout - 1] = timeout
            await drv.send(chunk, gaps)
            want = ref.feed(chunk[:split_timeout]) + ref.idle() + ref.feed(chunk[split_timeout:])
        else:
            await drv.send(chunk, gaps)
            want = ref.feed(chunk)
        if ref.parser.state != "HUNT":         # the frame stopped mid-way (or ended on a sync byte)
            await drv.idle(timeout + 2)
            want += ref.idle()
            stats["timeouts_fired"] += 1
        if not await drv.collect(len(want), hang):
            got = drv.take()
            log_mismatch(f"HANG ({what})", chunk, want, got)
            raise AssertionError(f"device hung: {len(got)} of {len(want)} reply bytes after {hang} cycles")
        got = drv.take()
        if mask_run_cycles(got) != want:
            log_mismatch(what, chunk, want, got)
        return want

    async def snapshot(parts=("regs", "weights", "protos")):
        stats["snapshots"] += 1
        for frame in target.snapshot_frames(parts):
            await exchange(frame, what=f"read-back {parts}")

    async def busy_case():
        """A frame or garbage arriving while INFER/TRAIN runs (LATENCY cycles) or READ_WEIGHTS replies."""
        stats["busy_cases"] += 1
        latency = rng.randint(150, 300)
        before, after = target.long_frames(rng, latency)
        for frame in before:
            await exchange(frame)
        long_cmd = rng.choice(["infer", "train", "read"])
        if long_cmd == "read":
            first, delay = target.read_frame(), 0
        else:
            first = proto.encode_frame(C.INFER, bytes(rng.randrange(256) for _ in range(info.sample_bytes))) \
                if long_cmd == "infer" else \
                proto.encode_frame(C.TRAIN, bytes([rng.randrange(info.n_classes)])
                                   + bytes(rng.randrange(256) for _ in range(info.sample_bytes)))
            delay = rng.randint(0, 60)
        inject = target.command_frame(rng, info)
        if long_cmd != "read" and rng.random() < 0.5:
            _, inject = mutate(rng, inject, info)
        # what the injected bytes produce: every good frame → BUSY (nothing executed); errors as parsed
        parser = proto.FrameParser(max_payload=info.max_payload)
        events = parser.feed_all(inject)
        truncated = parser.in_frame
        if truncated:
            events.append(parser.idle())
        want_extra = []
        for ev in events:
            if isinstance(ev, proto.Frame):
                want_extra.append(proto.encode_frame(ev.type | proto.REPLY_FLAG, bytes([proto.Status.BUSY])))
                ref.counters["busy_rejects"] += 1
                stats["busy_replies"] += 1
            else:
                want_extra.append(proto.encode_frame(ev.type | proto.REPLY_FLAG, bytes([ev.status])))
                ref.counters[{proto.Status.CRC: "crc_errors", proto.Status.TIMEOUT: "timeouts",
                              proto.Status.OVERSIZE: "length_errors"}[ev.status]] += 1
        await drv.send(first)
        want_first = ref.feed(first)
        await drv.idle(delay)
        await drv.send(inject)
        await drv.idle(timeout + 2)
        want = [want_first] + want_extra
        total = sum(len(w) for w in want)
        if not await drv.collect(total, hang + latency):
            raise AssertionError(f"device hung in a busy case: {drv.available()} of {total} reply bytes")
        got_frames = proto.FrameParser().feed_all(mask_run_cycles(drv.take()))
        got_set = sorted(fr.encode() if isinstance(fr, proto.Frame) else repr(fr).encode() for fr in got_frames)
        if got_set != sorted(want):
            log_mismatch(f"busy case ({long_cmd}, +{delay})", first + inject, b"|".join(sorted(want)),
                         b"|".join(got_set))
        for frame in after:
            await exchange(frame)
        await snapshot()

    if params.get("profile"):                 # debugging aid: where the bench's wall time goes
        import cProfile  # noqa: PLC0415
        profiler = cProfile.Profile()
        profiler.enable()
    for frame in target.setup_frames():        # e.g. the accelerator's PRNG seeds and initial weights
        reply = proto.FrameParser().feed_all(await exchange(frame, what="setup"))
        assert reply and reply[0].payload[:1] == b"\x00", f"setup frame {frame.hex()} was rejected"
    n_cases = params["cases"]
    busy_every = params.get("busy_every", 50)
    snapshot_every = params.get("snapshot_every", 100)
    while stats["cases"] < n_cases:
        stats["cases"] += 1
        if stats["cases"] % busy_every == 0:
            await busy_case()
            continue
        frame = target.command_frame(rng, info)
        kind, chunk = mutate(rng, frame, info)
        stats["mutations"][kind] = stats["mutations"].get(kind, 0) + 1
        gaps = None
        split = None
        r = rng.random()
        if r < 0.15:   # slow sender: gaps below the timeout, including the longest allowed one
            gaps = [rng.choice([0, 0, 1, 3, timeout - 1]) for _ in chunk]
        elif r < 0.20 and len(chunk) > 3:     # a pause of exactly `timeout` idle cycles: must time out
            split = rng.randrange(3, len(chunk))
        before = ref.device.state()
        want = await exchange(chunk, gaps, what=kind, split_timeout=split)
        replies = proto.FrameParser().feed_all(want)
        stats["frames_sent"] += 1
        accepted = any(isinstance(fr, proto.Frame) and fr.payload[:1] == b"\x00" for fr in replies)
        stats["accepted" if accepted else "rejected"] += 1
        if not accepted:
            assert ref.device.state() == before, f"the reference changed state on a rejected case {chunk.hex()}"
            touched = target.touched_frames(frame)   # read back what the rejected command could have changed
            if touched:
                stats["snapshots"] += 1
                for fr in touched:
                    await exchange(fr, what="read-back")
        if stats["cases"] % snapshot_every == 0:
            await snapshot()
        if params.get("debug_stats"):
            prev = stats["mismatches"]
            await exchange(proto.encode_frame(C.STATS), what=f"STATS after {kind} {chunk.hex()} gaps={gaps} split={split}")
            if stats["mismatches"] > prev:
                break
    await snapshot()
    await drv.idle(timeout * 4)
    leftover = drv.take()
    elapsed = time.monotonic() - start
    if params.get("profile"):
        profiler.disable()
        profiler.dump_stats(params["profile"])
    dut._log.info(f"robustness: {stats['cases']} cases ({stats['frames_sent']} mutated/random frames: "
                  f"{stats['accepted']} accepted, {stats['rejected']} rejected; {stats['busy_cases']} busy cases "
                  f"with {stats['busy_replies']} BUSY replies; {stats['snapshots']} read-backs; "
                  f"{stats['timeouts_fired']} receiver timeouts), {drv.cycles} cycles in {elapsed:.1f} s "
                  f"({drv.cycles / max(elapsed, 1e-9):.0f} cycles/s); mutations {stats['mutations']}; "
                  f"{stats['mismatches']} mismatches")
    if "stats_file" in params:
        import json  # noqa: PLC0415
        with open(params["stats_file"], "w") as fh:
            json.dump({**stats, "cycles": drv.cycles, "seconds": elapsed}, fh)
    assert not leftover, f"{len(leftover)} unexpected reply bytes at the end: {leftover.hex()}"
    assert not dut.rx_refused.value, "the top refused a byte on rx (a UART would have lost it)"
    assert stats["mismatches"] == 0, f"{stats['mismatches']} cases differ from the reference"


@cocotb.test()
async def serve(dut):
    """The virtual board: serve the top's byte stream to one TCP client on 127.0.0.1.

    The port is written to ``params["port_file"]`` once listening. Bytes from the client go to ``rx`` in
    chunks of at most ``feed_bytes``; reply bytes go back as soon as they are captured. While the client
    is quiet the simulation advances ``quiet_cycles`` per ``quiet_seconds`` of wall time (so a truncated
    frame times out, as on a board); while bytes move or the top is busy it runs as fast as it can. The
    test ends when the client closes the connection.
    """
    params = bench_params()
    await _reset(dut, params.get("clock_impl", "gpi"))
    drv = ByteDriver(dut, stall=params.get("stall", 0.0), feed_bytes=params["feed_bytes"],
                     capture_bytes=params["capture_bytes"], max_gap=params["max_gap"])
    quiet_cycles = params.get("quiet_cycles", 128)
    quiet_seconds = params.get("quiet_seconds", 0.01)
    busy_cycles = params.get("busy_cycles", 128)   # < capture_bytes: a reply cannot overrun the ring
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(params.get("accept_timeout", 120))
    with open(params["port_file"] + ".tmp", "w") as fh:
        fh.write(str(server.getsockname()[1]))
    os.replace(params["port_file"] + ".tmp", params["port_file"])
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setblocking(False)
    active, received, sent = False, 0, 0
    while True:
        readable, _, _ = select.select([conn], [], [], 0.0 if active else quiet_seconds)
        data = b""
        if readable:
            try:
                data = conn.recv(65536)
            except (BlockingIOError, ConnectionResetError):
                data = b""
            if not data:
                break                                   # client closed
            received += len(data)
            conn.setblocking(True)
            for at in range(0, len(data), drv.feed_bytes):
                await drv.send(data[at:at + drv.feed_bytes])
                out = drv.take()
                if out:
                    conn.sendall(out)
                    sent += len(out)
            conn.setblocking(False)
        # while the top computes (busy, nothing to send) Python looks in every ``busy_cycles`` cycles
        busy = bool(dut.busy.value)
        await drv.idle(busy_cycles if busy and not data else 16 if (data or active) else quiet_cycles)
        out = drv.take()
        if out:
            conn.setblocking(True)
            conn.sendall(out)
            conn.setblocking(False)
            sent += len(out)
        active = bool(data) or bool(out) or bool(dut.busy.value)
    conn.close()
    server.close()
    dut._log.info(f"virtual board: {received} bytes in, {sent} bytes out, {drv.cycles} cycles")
