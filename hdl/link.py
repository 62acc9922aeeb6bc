"""Host link: byte streams ↔ framed commands ↔ a device port (SPEC §5 "Host link"; docs/protocol.md).

* :class:`FrameReceiver` — parses the byte stream (sync, type, length, payload, CRC-16/CCITT-FALSE from
  :mod:`amaranth.lib.crc`), stores the payload of a good frame in its buffer and hands a frame *event*
  (type, length, status) to the dispatcher through a small FIFO. It accepts a byte on every cycle
  (``rx.ready`` is always 1: a UART cannot be back-pressured), drops a frame that stops mid-way after
  ``timeout`` idle cycles, rejects a LEN above ``max_payload`` as soon as LEN is complete, and resynchronises
  by hunting for the next sync pair (no backtracking into a bad frame).
* :class:`FrameTransmitter` — wraps a reply body (type, length, status, data) in sync bytes and CRC.
* :class:`Link` — both of the above plus the command dispatcher and the STATS counters; it talks to the
  device (the accelerator, or :class:`LinkTestDevice`) through :class:`DeviceSignature`.
* :class:`LinkTestDevice`, :class:`LinkTestTop` — a register file, a weight memory, a prototype memory
  and a trivial INFER/TRAIN, so the whole protocol is tested end to end before the accelerator exists.

The Python twin of the receiver and dispatcher is ``loco_fpga.boards.protocol.ReferenceLink``; the
robustness bench compares the two byte for byte.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from loco_fpga.boards import protocol as proto

from .fixed import at_least
from .layer import BLOCK_RAM, COLLISION_FREE

__all__ = ["BlockFIFO", "CounterBank", "Status", "DeviceOp", "DeviceError", "RunOp", "REQUEST_LAYOUT", "RESPONSE_LAYOUT", "RUN_LAYOUT",
           "BYTE_LAYOUT", "EVENT_LAYOUT", "DeviceSignature", "FrameReceiver", "FrameTransmitter", "Link",
           "LinkTestDevice", "LinkTestTop", "CRC"]

#: the frame CRC: CRC-16/CCITT-FALSE on bytes (the host's boards.protocol.crc16 is the same algorithm)
CRC = catalog.CRC16_CCITT_FALSE(data_width=8)


class Status(enum.Enum, shape=4):
    """Reply status codes (values from :class:`loco_fpga.boards.protocol.Status`)."""

    OK = proto.Status.OK.value
    CRC = proto.Status.CRC.value
    TIMEOUT = proto.Status.TIMEOUT.value
    OVERSIZE = proto.Status.OVERSIZE.value
    BAD_LENGTH = proto.Status.BAD_LENGTH.value
    UNKNOWN_COMMAND = proto.Status.UNKNOWN_COMMAND.value
    BUSY = proto.Status.BUSY.value
    BAD_ADDRESS = proto.Status.BAD_ADDRESS.value
    BAD_VALUE = proto.Status.BAD_VALUE.value


class DeviceOp(enum.Enum, shape=3):
    """Device-port request: register read/write, memory probe/read/write (``space`` = memory), reset."""

    READ_REG = 0
    WRITE_REG = 1
    PROBE = 2        # would a write to (space, addr) succeed? No side effect.
    READ_MEM = 3
    WRITE_MEM = 4
    RESET = 5        # registers to reset values, weights and prototypes to 0


class DeviceError(enum.Enum, shape=2):
    NONE = 0
    ADDRESS = 1      # no such register / memory / word, or register is read-only
    VALUE = 2        # value out of range for the register


class RunOp(enum.Enum, shape=1):
    INFER = 0
    TRAIN = 1


REQUEST_LAYOUT = data.StructLayout({"op": DeviceOp, "space": 8, "addr": 16, "data": 32})
RESPONSE_LAYOUT = data.StructLayout({"data": 32, "error": DeviceError})
RUN_LAYOUT = data.StructLayout({"op": RunOp, "label": 8})
BYTE_LAYOUT = data.StructLayout({"data": 8, "last": 1})
EVENT_LAYOUT = data.StructLayout({"type": 8, "length": 16, "status": Status})


class DeviceSignature(wiring.Signature):
    """The link's port to the device (directions as seen from the link; the device uses ``.flip()``).

    * ``req`` / ``resp``: one response per request, in order. A request with an error response must have
      changed nothing. Memories are contiguous from word 0: ``PROBE`` of the last word of a range decides
      the whole range (the link probes before it writes, so a rejected LOAD writes nothing).
      ``space`` = layer (bits 6..0) | 0x80 for prototypes.
    * ``run`` (start) → ``sample`` (exactly ``sample_bytes`` bytes, ``last`` on the final one) → ``result``
      (exactly ``infer_bytes`` / ``train_bytes`` bytes, ``last`` on the final one). The device must accept
      the whole sample without waiting for ``result`` to be taken; it is busy from ``run`` to the last
      ``result`` transfer (start/busy/done handshake).
    """

    def __init__(self):
        super().__init__({
            "req": Out(stream.Signature(REQUEST_LAYOUT)),
            "resp": In(stream.Signature(RESPONSE_LAYOUT)),
            "run": Out(stream.Signature(RUN_LAYOUT)),
            "sample": Out(stream.Signature(BYTE_LAYOUT)),
            "result": In(stream.Signature(BYTE_LAYOUT)),
        })


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} = {value!r}: must be an integer {bound}")
    return value


class BlockFIFO(fifo.SyncFIFOBuffered):
    """``amaranth.lib.fifo.SyncFIFOBuffered`` whose storage is block RAM, for a part whose logic cells are scarce
    (the iCE40 UP5K): Yosys would build a few-word memory from flip-flops, each loaded straight from ``w_data``
    and so a logic cell of its own.

    Collision-free (:data:`~.layer.COLLISION_FREE`): the storage is read at ``consume`` only while it holds a
    word and written at ``produce`` only while it is not full, and ``produce == consume`` with a word held means
    full, so no read whose data is used meets a write of its address. Same ports and timing as the parent.
    """

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth > 1:             # depth 1 is a register; depth 0 a wire
            m.submodules.storage.attrs.update(BLOCK_RAM | COLLISION_FREE)
        return m


class FrameReceiver(wiring.Component):
    """Byte stream → frame events + payload buffer.

    Parameters (keyword-only): ``max_payload`` (largest accepted LEN, 1..65535), ``timeout`` (idle cycles
    after which a frame that stopped mid-way is dropped with a TIMEOUT event, ≥ 2), ``event_depth``
    (frame events queued while the dispatcher is busy, ≥ 1; further events are dropped and flagged).

    Ports:
        rx (In stream of 8): the byte stream; ``rx.ready`` is always 1.
        event (Out stream of :data:`EVENT_LAYOUT`): one per frame: status OK (payload in the buffer, which
            is then *owned* until ``release``), CRC, TIMEOUT, OVERSIZE or BUSY (a good frame that began
            while the buffer was owned: nothing stored). Garbage outside frames produces no event.
            ``length`` is the frame's LEN for OK, 0 for the others.
        rd_addr (In), rd_data (Out 8): buffer read port, :attr:`read_latency` = 1 cycle.
        release (In 1): the dispatcher is done with the buffer.
        owned (Out 1): the buffer holds a frame not yet released (the device is BUSY for new frames).
        strobe (Out {ok, crc, timeout, oversize, busy, dropped}): one-cycle pulses for the STATS counters
            (``ok``: a good frame was queued, of type ``frame_type``).
    """

    def __init__(self, *, max_payload: int, timeout: int, event_depth: int = 4):
        self._max_payload = _check_int("max_payload", max_payload, 1, 0xFFFF)
        self._timeout = _check_int("timeout", timeout, 2)
        self._event_depth = _check_int("event_depth", event_depth, 1)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "event": Out(stream.Signature(EVENT_LAYOUT)),
            "rd_addr": In(range(max_payload)),
            "rd_data": Out(8),
            "release": In(1),
            "owned": Out(1),
            "strobe": Out(data.StructLayout({"ok": 1, "crc": 1, "timeout": 1, "oversize": 1, "busy": 1,
                                             "dropped": 1})),
            "frame_type": Out(8),
        })

    max_payload = property(lambda self: self._max_payload)
    timeout = property(lambda self: self._timeout)
    event_depth = property(lambda self: self._event_depth)
    read_latency = property(lambda self: 1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC.create()
        # collision-free: a frame's bytes are stored only while the buffer is not owned, and the dispatcher
        # reads it only while it owns it (from the OK event to ``release``)
        m.submodules.buffer = buf = memory.Memory(shape=8, depth=self._max_payload, init=[], attrs=COLLISION_FREE)
        # The queue holds type and status only (12 bits: one block RAM on iCE40, where the length made it two).
        # Only an OK event needs its length, and only one OK event is in flight at a time — the one whose frame
        # owns the buffer: no frame is stored (so none becomes OK) from its push until its release, which comes
        # after its pop — so its length waits in one register.
        queued = data.StructLayout({"type": 8, "status": Status})
        m.submodules.events = events = BlockFIFO(width=queued.size, depth=self._event_depth)
        owned_length = Signal(range(self._max_payload + 1))
        wr, rd = buf.write_port(), buf.read_port(domain="sync")
        head = data.View(queued, events.r_data)
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data),
                     self.event.valid.eq(events.r_rdy), self.event.payload.type.eq(head.type),
                     self.event.payload.length.eq(Mux(head.status == Status.OK, owned_length, 0)),
                     self.event.payload.status.eq(head.status),
                     events.r_en.eq(self.event.ready), self.rx.ready.eq(1)]

        byte = self.rx.payload
        got = self.rx.valid
        type_ = Signal(8, init=proto.NO_TYPE)
        length = Signal(max(8, self._max_payload.bit_length()))  # LEN's low byte, then LEN once it fits
        count = Signal(range(self._max_payload + 1))     # payload bytes received
        crc_hi = Signal(8)
        storing = Signal()
        idle = Signal(range(self._timeout + 1))
        owned = Signal()
        m.d.comb += [self.owned.eq(owned), self.frame_type.eq(type_)]
        with m.If(self.release):
            m.d.sync += owned.eq(0)

        # An event this cycle (at most one): pushed into the FIFO, or dropped when it is full.
        ev = Signal(queued)
        push = Signal()
        m.d.comb += [events.w_data.eq(ev), events.w_en.eq(push), self.strobe.dropped.eq(push & ~events.w_rdy)]

        length_now = Cat(length[:8], byte)     # the 16-bit LEN (LEN1)
        m.d.comb += [crc.data.eq(byte), wr.data.eq(byte), wr.addr.eq(count)]
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self._timeout):
            m.d.sync += idle.eq(idle + 1)
        timed_out = ~got & (idle == self._timeout - 1)

        def hunt(m):
            m.d.sync += type_.eq(proto.NO_TYPE)
            m.next = "HUNT"

        with m.FSM():
            with m.State("HUNT"):
                with m.If(got & (byte == proto.SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    with m.If(byte == proto.SYNC[1]):
                        m.d.comb += crc.start.eq(1)
                        m.next = "TYPE"
                    with m.Elif(byte != proto.SYNC[0]):
                        m.next = "HUNT"
                with m.Elif(timed_out):
                    m.next = "HUNT"                  # a lone 0xA5 before a pause is garbage, not a frame
            for state in ("TYPE", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1"):
                with m.State(state):
                    with m.If(got):
                        if state in ("TYPE", "LEN0", "LEN1", "PAYLOAD"):
                            m.d.comb += crc.valid.eq(1)
                        if state == "TYPE":
                            m.d.sync += [type_.eq(byte), count.eq(0), storing.eq(~owned | self.release)]
                            m.next = "LEN0"
                        elif state == "LEN0":
                            m.d.sync += length[:8].eq(byte)
                            m.next = "LEN1"
                        elif state == "LEN1":
                            m.d.sync += length.eq(length_now)
                            with m.If(at_least(length_now, self._max_payload + 1)):
                                m.d.comb += [push.eq(1), ev.type.eq(type_), ev.status.eq(Status.OVERSIZE),
                                             self.strobe.oversize.eq(1)]
                                hunt(m)
                            with m.Elif(length_now == 0):
                                m.next = "CRC0"
                            with m.Else():
                                m.next = "PAYLOAD"
                        elif state == "PAYLOAD":
                            m.d.comb += wr.en.eq(storing)
                            m.d.sync += count.eq(count + 1)
                            with m.If(count + 1 == length):
                                m.next = "CRC0"
                        elif state == "CRC0":
                            m.d.sync += crc_hi.eq(byte)
                            m.next = "CRC1"
                        else:   # CRC1: the CRC register holds the CRC of TYPE..PAYLOAD since ≥ 1 cycle
                            good = Cat(byte, crc_hi) == crc.crc
                            m.d.comb += [push.eq(1), ev.type.eq(type_)]
                            with m.If(~good):
                                m.d.comb += [ev.status.eq(Status.CRC), self.strobe.crc.eq(1)]
                            with m.Elif(storing):
                                m.d.comb += ev.status.eq(Status.OK)
                                with m.If(events.w_rdy):
                                    m.d.comb += self.strobe.ok.eq(1)
                                    m.d.sync += [owned.eq(1), owned_length.eq(length)]
                            with m.Else():
                                m.d.comb += [ev.status.eq(Status.BUSY), self.strobe.busy.eq(1)]
                            hunt(m)
                    with m.Elif(timed_out):
                        m.d.comb += [push.eq(1), ev.type.eq(type_), ev.status.eq(Status.TIMEOUT),
                                     self.strobe.timeout.eq(1)]
                        hunt(m)
        return m


class FrameTransmitter(wiring.Component):
    """Reply body → framed byte stream: ``0xA5 0x5A``, the body bytes, CRC high byte, CRC low byte.

    Ports: ``body`` (In stream of :data:`BYTE_LAYOUT`: TYPE, LEN, payload, ``last`` on the final byte),
    ``tx`` (Out stream of 8). Zero-cycle pass-through of the body; two sync and two CRC bytes added.
    """

    def __init__(self):
        super().__init__({"body": In(stream.Signature(BYTE_LAYOUT)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC.create()
        m.d.comb += crc.data.eq(self.body.payload.data)
        with m.FSM():
            with m.State("SYNC0"):
                m.d.comb += [self.tx.valid.eq(self.body.valid), self.tx.payload.eq(proto.SYNC[0]),
                             crc.start.eq(1)]
                with m.If(self.tx.valid & self.tx.ready):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(proto.SYNC[1])]
                with m.If(self.tx.ready):
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [self.tx.valid.eq(self.body.valid), self.tx.payload.eq(self.body.payload.data),
                             self.body.ready.eq(self.tx.ready), crc.valid.eq(self.body.valid & self.tx.ready)]
                with m.If(self.body.valid & self.tx.ready & self.body.payload.last):
                    m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc.crc[8:])]
                with m.If(self.tx.ready):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc.crc[:8])]
                with m.If(self.tx.ready):
                    m.next = "SYNC0"
        return m


class CounterBank(wiring.Component):
    """``n`` 32-bit event counters in block RAM, with a snapshot and a clear (the STATS counters).

    A counter's value is its memory word plus a small *pending* count of increments not yet written back. One
    sweep visits the words in a loop, one per cycle, in two stages: in the cycle a word is read, its pending count
    is taken into a register (and the counter's pending count restarts); in the next cycle that register is added
    to the word and written back. Every counter is written back every ``n`` cycles: one 32-bit adder for all
    counters instead of one each, and no counter multiplexer in front of it.

    Ports:
        inc (In, ``n`` × unsigned(2)): increments of each counter this cycle (0 … ``max_inc[k]``: 2 for every counter
            unless ``max_inc`` says less — a counter that never counts 2 at once needs a bit less for its pending
            count).
        snap (In 1; only while not ``busy`` — the link's STATS/RESET_STATE frames are many UART byte times apart):
            take a snapshot of every counter as it is before this cycle's increments.
        clear (In 1; only while not ``busy``): set every counter to what it counted since the last snapshot.
        busy (Out 1): a snapshot or a clear is still being written (at most ``n`` + 1 cycles after it began).
        rd_en (In 1), rd_index (In), rd_data (Out 32): while ``rd_en`` (and no clear runs), the snapshot of counter
            ``rd_index`` one cycle after the index.

    After a reset every counter is 0 (the first sweep writes the pending count over the memory word).
    """

    def __init__(self, *, n: int, max_inc=None):
        self._n = _check_int("n", n, 2, 64)
        self._max_inc = (2,) * n if max_inc is None else tuple(max_inc)
        if len(self._max_inc) != n or any(isinstance(v, bool) or v not in (1, 2) for v in self._max_inc):
            raise ValueError(f"max_inc = {max_inc!r}: expected {n} values, each 1 or 2")
        super().__init__({"inc": In(unsigned(2)).array(n), "snap": In(1), "clear": In(1), "busy": Out(1),
                          "rd_en": In(1), "rd_index": In(range(n)), "rd_data": Out(32)})

    n = property(lambda self: self._n)
    max_inc = property(lambda self: self._max_inc)

    def counter_pending_bits(self, k: int) -> int:
        """Bits of counter k's pending count: it restarts at a write-back, which a snapshot defers by one sweep, so
        it counts up to ``max_inc[k]`` increments per cycle for two sweeps + 1 cycle."""
        return (self._max_inc[k] * (2 * self._n + 1)).bit_length()

    #: bits of the widest pending count
    pending_bits = property(lambda self: max(self.counter_pending_bits(k) for k in range(self._n)))

    def elaborate(self, platform):
        m = Module()
        n, pb = self._n, self.pending_bits
        # Yosys would build a memory this small from flip-flops. Collision-free: the live words are read at
        # ``sweep`` and written at ``visit`` (always another word); the snapshots are written at ``visit`` while
        # they are read at ``sweep``, except during a STATS reply (``rd_en``), which holds the buffer, so no
        # STATS/RESET_STATE frame can be received (and snapshot) before it ends
        block = BLOCK_RAM | COLLISION_FREE
        m.submodules.live = live = memory.Memory(shape=32, depth=n, init=[], attrs=block)
        m.submodules.snaps = snaps = memory.Memory(shape=32, depth=n, init=[], attrs=block)
        l_rd, l_wr = live.read_port(domain="sync"), live.write_port()
        s_rd, s_wr = snaps.read_port(domain="sync"), snaps.write_port()

        sweep = Signal(range(n))                 # the word read this cycle: its pending count is taken
        visit = Signal(range(n), init=n - 1)     # the word read last cycle: its data is here, written back now
        m.d.sync += [sweep.eq(Mux(sweep == n - 1, 0, sweep + 1)), visit.eq(sweep)]
        pending = [Signal(self.counter_pending_bits(k), name=f"pending{k}") for k in range(n)]
        frozen = [Signal(self.counter_pending_bits(k), name=f"frozen{k}") for k in range(n)]   # pending at the
        # snapshot, not yet written
        due = Signal(n)                          # snapshot of counter k still to be written
        clr = Signal(n)                          # clear of counter k still to be written
        zero = Signal(n, init=(1 << n) - 1)      # after a reset: the memory word counts as 0
        m.d.comb += self.busy.eq(due.any() | clr.any())

        # stage 1 (``sweep``): what the write-back adds. Normally the pending count (which restarts); while the
        # counter's snapshot is due, the frozen count (the snapshot's value; the pending count goes on). A snapshot
        # in this cycle (never while one is due) makes the swept counter's write-back its snapshot: it is written
        # to both memories. (``snap`` stays out of this path: it comes from the frame receiver's decode)
        s_due = due.bit_select(sweep, 1)
        addend = Signal(pb)
        m.d.sync += addend.eq(Mux(s_due, Array(frozen)[sweep], Array(pending)[sweep]))
        # stage 2 (``visit``): value = word + addend [− snapshot when clearing]; the snapshot too while it is due
        base = Signal(32)
        value = Signal(32)
        v_due, v_clr = due.bit_select(visit, 1), clr.bit_select(visit, 1)
        m.d.comb += [base.eq(Mux(zero.bit_select(visit, 1), 0, l_rd.data)),
                     value.eq(base + addend - Mux(v_clr & ~v_due, s_rd.data, 0)),
                     l_rd.addr.eq(sweep), l_rd.en.eq(1), s_rd.addr.eq(Mux(self.rd_en, self.rd_index, sweep)),
                     s_rd.en.eq(1),
                     l_wr.addr.eq(visit), l_wr.data.eq(value), l_wr.en.eq(1),
                     s_wr.addr.eq(visit), s_wr.data.eq(value), s_wr.en.eq(v_due)]
        for k in range(n):
            with m.If(self.snap):                # the pending count moves to frozen (the swept one: into addend)
                m.d.sync += [frozen[k].eq(pending[k]), pending[k].eq(self.inc[k])]
            with m.Elif((sweep == k) & ~due[k]):  # taken into addend: it restarts
                m.d.sync += pending[k].eq(self.inc[k])
            with m.Else():
                m.d.sync += pending[k].eq(pending[k] + self.inc[k])
        with m.If(self.snap):
            m.d.sync += due.eq((1 << n) - 1)
        with m.Else():
            m.d.sync += due.eq(due & ~(1 << visit))
        with m.If(self.clear):
            m.d.sync += clr.eq((1 << n) - 1)
        with m.Elif(~v_due):
            m.d.sync += clr.eq(clr & ~(1 << visit))
        m.d.sync += zero.eq(zero & ~(1 << visit))
        m.d.comb += self.rd_data.eq(s_rd.data)
        return m


_COMMAND_LENGTH = {proto.Command.PING: 0, proto.Command.READ_REG: 1, proto.Command.WRITE_REG: 5,
                   proto.Command.READ_WEIGHTS: 5, proto.Command.READ_PROTOTYPES: 5, proto.Command.STATS: 0,
                   proto.Command.RESET_STATE: 1}


class Link(wiring.Component):
    """Receiver, dispatcher, STATS counters and transmitter: the whole host link of a top.

    Parameters (keyword-only):
        max_payload: largest command/reply LEN (≥ 16 and ≥ 1 + the largest result/sample frame).
        timeout: idle cycles that end a truncated frame (on a board: several byte times of the UART).
        word_bytes: bytes per weight/prototype word on the wire (1, 2 or 4).
        sample_bytes, infer_bytes, train_bytes: INFER payload, INFER and TRAIN result sizes (device-defined).
        n_classes: TRAIN labels must be < n_classes.
        event_depth: frame events queued while a command executes (see :class:`FrameReceiver`).

    Ports: ``rx`` (In stream of 8, always ready), ``tx`` (Out stream of 8), ``device``
    (:class:`DeviceSignature`), ``busy`` (Out 1: a command is executing).
    """

    def __init__(self, *, max_payload: int, timeout: int, word_bytes: int = 2, sample_bytes: int,
                 infer_bytes: int, train_bytes: int, n_classes: int, event_depth: int = 4):
        _check_int("max_payload", max_payload, 16, 0xFFFF)
        _check_int("timeout", timeout, 2)
        if word_bytes not in (1, 2, 4) or isinstance(word_bytes, bool):
            raise ValueError(f"word_bytes = {word_bytes!r}: must be 1, 2 or 4")
        _check_int("sample_bytes", sample_bytes, 1)
        _check_int("infer_bytes", infer_bytes, 1)
        _check_int("train_bytes", train_bytes, 1)
        _check_int("n_classes", n_classes, 1, 255)
        _check_int("event_depth", event_depth, 1)
        # TRAIN carries label + sample; INFER/TRAIN replies carry status + result
        for name, size in (("sample_bytes", sample_bytes + 1), ("infer_bytes", infer_bytes + 1),
                           ("train_bytes", train_bytes + 1)):
            if size > max_payload:
                raise ValueError(f"{name} = {size - 1}: payloads of {size} bytes exceed max_payload = {max_payload}")
        self._info = proto.DeviceInfo(proto.PROTOCOL_VERSION, word_bytes, max_payload, sample_bytes,
                                      infer_bytes, train_bytes, n_classes)
        self._timeout, self._event_depth = timeout, event_depth
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "device": Out(DeviceSignature()), "busy": Out(1)})

    info = property(lambda self: self._info)
    """:class:`~loco_fpga.boards.protocol.DeviceInfo` (what PING returns)."""
    timeout = property(lambda self: self._timeout)
    event_depth = property(lambda self: self._event_depth)

    def elaborate(self, platform):
        m = Module()
        info = self._info
        wb = info.word_bytes
        log2_wb = {1: 0, 2: 1, 4: 2}[wb]
        m.submodules.rx = rx = FrameReceiver(max_payload=info.max_payload, timeout=self._timeout,
                                             event_depth=self._event_depth)
        m.submodules.tx = tx = FrameTransmitter()
        wiring.connect(m, wiring.flipped(self.rx), rx.rx)
        wiring.connect(m, tx.tx, wiring.flipped(self.tx))
        dev = self.device
        C = proto.Command

        # -- counters ---------------------------------------------------------------------------------
        # STATS sends the counters as they were when its frame was *received*, and RESET_STATE clears them as
        # of that moment (the reference's semantics): an error detected between receiving and executing it
        # (e.g. garbage right behind it) still counts. The counters live in a CounterBank (block RAM): it takes
        # the snapshot when the frame is received; DECODE waits until it is written, STATS reads it, and
        # RESET_STATE's clear sets every counter to "what was counted since the snapshot".
        fields = proto.STATS_FIELDS
        # only the length errors can count 2 in a cycle (one from the receiver, one from a command's decode)
        m.submodules.counters = bank = CounterBank(n=len(fields),
                                                   max_inc=[2 if name == "length_errors" else 1 for name in fields])
        inc = {name: Signal(2, name=f"inc_{name}") for name in fields}
        clear = Signal()
        m.d.comb += [bank.inc[k].eq(inc[name]) for k, name in enumerate(fields)]
        m.d.comb += [bank.clear.eq(clear),
                     bank.snap.eq(rx.strobe.ok & ((rx.frame_type == C.STATS) | (rx.frame_type == C.RESET_STATE)))]
        m.d.comb += [inc["crc_errors"].eq(rx.strobe.crc), inc["timeouts"].eq(rx.strobe.timeout),
                     inc["busy_rejects"].eq(rx.strobe.busy), inc["replies_dropped"].eq(rx.strobe.dropped)]
        length_rx = rx.strobe.oversize
        length_done = Signal()                  # BAD_LENGTH of a command (FINISH)

        # -- latched frame and arguments ----------------------------------------------------------------
        ev = Signal(EVENT_LAYOUT)
        arg0 = Signal(8)                     # argument byte 0; bytes 1 … 4 go into ``word`` (free until REG_RESP)
        status = Signal(Status)
        # byte and word counters are as wide as max_payload needs (a reply's data is shorter than max_payload)
        dlen = Signal(range(info.max_payload + 1))   # reply data bytes after the status byte
        idx = Signal(range(info.max_payload + 1))    # body byte index / word counter
        sub = Signal(range(max(wb, 4) + 1))  # byte within a word
        ptr = Signal(range(info.max_payload + 1))
        word = Signal(32)
        count = Signal(range(info.max_payload + 1))  # words still to load/read (a larger count is BAD_VALUE)
        addr = Signal(16)
        space = Signal(8)
        is_frame = Signal()                  # the event owns the buffer (release at the end)
        m.d.comb += rx.rd_addr.eq(ptr)

        cmd = ev.type
        addr_arg = word[:16]
        count_arg = word[16:]
        value_arg = word
        is_load = (cmd == C.LOAD_WEIGHTS) | (cmd == C.LOAD_PROTOTYPES)
        is_read = (cmd == C.READ_WEIGHTS) | (cmd == C.READ_PROTOTYPES)
        is_proto = (cmd == C.LOAD_PROTOTYPES) | (cmd == C.READ_PROTOTYPES)
        # whether the frame's command is known and its length right: functions of the event alone, registered with
        # it (DECODE's chain of checks is the build's critical path otherwise)
        new_ev = rx.event.payload
        known, len_ok = Signal(), Signal()           # of ``ev``
        known_new, fixed_len_ok = Signal(), Signal()
        m.d.comb += known_new.eq(0)
        for c in C:
            with m.If(new_ev.type == c):
                m.d.comb += known_new.eq(1)
        for c, n in _COMMAND_LENGTH.items():
            with m.If(new_ev.type == c):
                m.d.comb += fixed_len_ok.eq(new_ev.length == n)
        with m.If(new_ev.type == C.INFER):
            m.d.comb += fixed_len_ok.eq(new_ev.length == info.sample_bytes)
        with m.If(new_ev.type == C.TRAIN):
            m.d.comb += fixed_len_ok.eq(new_ev.length == info.sample_bytes + 1)
        new_load = (new_ev.type == C.LOAD_WEIGHTS) | (new_ev.type == C.LOAD_PROTOTYPES)
        load_len_ok = at_least(new_ev.length, 3 + wb) & (((new_ev.length - 3) & (wb - 1)) == 0)
        load_words = (ev.length - 3) >> log2_wb

        ping_bytes = Array(Const(b, 8) for b in info.encode())
        run_bytes = Mux(cmd == C.TRAIN, info.train_bytes, info.infer_bytes)

        body = tx.body
        reply_len = Signal(16)
        m.d.comb += reply_len.eq(dlen + 1)
        header = Array([cmd | proto.REPLY_FLAG, reply_len[:8], reply_len[8:], status])

        def reply(m, st, n=0):
            m.d.sync += [status.eq(st), dlen.eq(n), idx.eq(0)]
            m.next = "HEADER"

        def byte_out(m, value, last):
            m.d.comb += [body.valid.eq(1), body.payload.data.eq(value), body.payload.last.eq(last)]

        m.d.comb += self.busy.eq(~rx.event.ready)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += rx.event.ready.eq(1)
                with m.If(rx.event.valid):
                    m.d.sync += [ev.eq(rx.event.payload), ptr.eq(0), idx.eq(0), sub.eq(0), word.eq(0),
                                 is_frame.eq(rx.event.payload.status == Status.OK), known.eq(known_new),
                                 len_ok.eq(Mux(new_load, load_len_ok, fixed_len_ok))]
                    with m.If(rx.event.payload.status == Status.OK):
                        m.next = "ARGS"
                    with m.Else():
                        m.d.sync += [status.eq(rx.event.payload.status), dlen.eq(0)]
                        m.next = "HEADER"
            with m.State("ARGS"):       # buffer byte 0 → arg0, 1..4 → word, as LOAD_BYTE does (read latency 1)
                m.d.sync += ptr.eq(ptr + 1)
                with m.If(ptr == 1):
                    m.d.sync += arg0.eq(rx.rd_data)
                with m.Elif(ptr != 0):
                    m.d.sync += [word.eq(word | (rx.rd_data << (sub << 3))), sub.eq(sub + 1)]
                with m.If(ptr == 5):
                    m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(bank.busy):               # this frame's counter snapshot is still being written
                    pass
                with m.Elif(~known):
                    reply(m, Status.UNKNOWN_COMMAND)
                with m.Elif(~len_ok):
                    reply(m, Status.BAD_LENGTH)
                with m.Elif(cmd == C.PING):
                    reply(m, Status.OK, len(info.encode()))
                with m.Elif(cmd == C.STATS):
                    reply(m, Status.OK, 4 * len(proto.STATS_FIELDS))
                with m.Elif((cmd == C.READ_REG) | (cmd == C.WRITE_REG)):
                    m.next = "REG_REQ"
                with m.Elif(is_load | is_read):
                    m.d.sync += [space.eq(Mux(is_proto, proto.PROTOTYPE_SPACE_FLAG | arg0[:7], arg0[:7])),
                                 count.eq(Mux(is_load, load_words, count_arg)), addr.eq(addr_arg)]
                    with m.If(arg0[7]):
                        reply(m, Status.BAD_ADDRESS)
                    # (count << log2 wb) + 1 > max_payload ⇔ count ≥ ⌈max_payload / wb⌉
                    with m.Elif(is_read & ((count_arg == 0) | at_least(count_arg, -(-info.max_payload >> log2_wb)))):
                        reply(m, Status.BAD_VALUE)
                    with m.Else():
                        m.next = "RANGE"
                with m.Elif(cmd == C.TRAIN):
                    with m.If(at_least(arg0, info.n_classes)):
                        reply(m, Status.BAD_VALUE)
                    with m.Else():
                        m.next = "RUN_START"
                with m.Elif(cmd == C.INFER):
                    m.next = "RUN_START"
                with m.Else():                            # RESET_STATE
                    with m.If((arg0 & (0xFF & ~(proto.RESET_COUNTERS | proto.RESET_DEVICE))).any()):
                        reply(m, Status.BAD_VALUE)
                    with m.Elif(arg0 & proto.RESET_DEVICE):
                        m.next = "RESET_REQ"
                    with m.Else():
                        m.d.comb += clear.eq(arg0[0])
                        reply(m, Status.OK)

            def device_error(m, error):
                reply(m, Mux(error == DeviceError.VALUE, Status.BAD_VALUE, Status.BAD_ADDRESS))

            with m.State("REG_REQ"):
                m.d.comb += [dev.req.valid.eq(1), dev.req.payload.addr.eq(arg0),
                             dev.req.payload.op.eq(Mux(cmd == C.WRITE_REG, DeviceOp.WRITE_REG, DeviceOp.READ_REG)),
                             dev.req.payload.data.eq(value_arg)]
                with m.If(dev.req.ready):
                    m.next = "REG_RESP"
            with m.State("REG_RESP"):
                m.d.comb += dev.resp.ready.eq(1)
                with m.If(dev.resp.valid):
                    m.d.sync += word.eq(dev.resp.payload.data)
                    with m.If(dev.resp.payload.error != DeviceError.NONE):
                        device_error(m, dev.resp.payload.error)
                    with m.Else():
                        reply(m, Status.OK, Mux(cmd == C.READ_REG, 4, 0))

            with m.State("RANGE"):                       # last = addr + count − 1 must fit 16 bits
                with m.If((addr + count - 1)[16]):
                    reply(m, Status.BAD_ADDRESS)
                with m.Else():
                    m.next = "PROBE_REQ"
            with m.State("PROBE_REQ"):
                m.d.comb += [dev.req.valid.eq(1), dev.req.payload.op.eq(DeviceOp.PROBE),
                             dev.req.payload.space.eq(space), dev.req.payload.addr.eq(addr + count - 1)]
                with m.If(dev.req.ready):
                    m.next = "PROBE_RESP"
            with m.State("PROBE_RESP"):
                m.d.comb += dev.resp.ready.eq(1)
                with m.If(dev.resp.valid):
                    with m.If(dev.resp.payload.error != DeviceError.NONE):
                        device_error(m, dev.resp.payload.error)
                    with m.Elif(is_load):
                        m.d.sync += [ptr.eq(3), sub.eq(0), word.eq(0)]
                        m.next = "LOAD_WAIT"
                    with m.Else():
                        reply(m, Status.OK, count[:16] << log2_wb)
            # LOAD: wb buffer bytes (little-endian) → word → WRITE_MEM, count times.
            with m.State("LOAD_WAIT"):                    # rd_data follows ptr one cycle later
                m.next = "LOAD_BYTE"
            with m.State("LOAD_BYTE"):
                m.d.sync += [word.eq(word | (rx.rd_data << (sub << 3))), ptr.eq(ptr + 1), sub.eq(sub + 1)]
                with m.If(sub == wb - 1):
                    m.next = "LOAD_REQ"
                with m.Else():
                    m.next = "LOAD_WAIT"
            with m.State("LOAD_REQ"):
                m.d.comb += [dev.req.valid.eq(1), dev.req.payload.op.eq(DeviceOp.WRITE_MEM),
                             dev.req.payload.space.eq(space), dev.req.payload.addr.eq(addr),
                             dev.req.payload.data.eq(word)]
                with m.If(dev.req.ready):
                    m.next = "LOAD_RESP"
            with m.State("LOAD_RESP"):
                m.d.comb += dev.resp.ready.eq(1)
                with m.If(dev.resp.valid):
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), sub.eq(0), word.eq(0)]
                    with m.If(dev.resp.payload.error != DeviceError.NONE):   # the device broke its PROBE promise
                        device_error(m, dev.resp.payload.error)
                    with m.Elif(count == 1):
                        reply(m, Status.OK)
                    with m.Else():
                        m.next = "LOAD_WAIT"

            with m.State("RESET_REQ"):
                m.d.comb += [dev.req.valid.eq(1), dev.req.payload.op.eq(DeviceOp.RESET)]
                with m.If(dev.req.ready):
                    m.next = "RESET_RESP"
            with m.State("RESET_RESP"):
                m.d.comb += dev.resp.ready.eq(1)
                with m.If(dev.resp.valid):
                    m.d.comb += clear.eq(arg0[0])
                    reply(m, Status.OK)

            with m.State("RUN_START"):
                m.d.comb += [dev.run.valid.eq(1), dev.run.payload.label.eq(arg0),
                             dev.run.payload.op.eq(Mux(cmd == C.TRAIN, RunOp.TRAIN, RunOp.INFER))]
                with m.If(dev.run.ready):
                    m.d.sync += ptr.eq(Mux(cmd == C.TRAIN, 1, 0))
                    reply(m, Status.OK, run_bytes)

            # -- reply header, then the command's data ------------------------------------------------
            with m.State("HEADER"):
                byte_out(m, header[idx[:2]], (idx == 3) & (dlen == 0))
                with m.If(body.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        with m.If(dlen == 0):
                            m.next = "FINISH"
                        with m.Elif(cmd == C.PING):
                            m.next = "DATA_PING"
                        with m.Elif(cmd == C.STATS):
                            m.next = "DATA_STATS"
                        with m.Elif(cmd == C.READ_REG):
                            m.d.sync += sub.eq(0)
                            m.next = "DATA_WORD"
                        with m.Elif(is_read):
                            m.next = "READ_REQ"
                        with m.Else():
                            m.next = "SAMPLE_WAIT"
            with m.State("DATA_PING"):
                byte_out(m, ping_bytes[idx], idx == dlen - 1)
                with m.If(body.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == dlen - 1):
                        m.next = "FINISH"
            with m.State("DATA_STATS"):              # counter idx / 4: its snapshot word arrives next cycle
                m.next = "STATS_BYTES"
            with m.State("STATS_BYTES"):
                byte_out(m, bank.rd_data.word_select(idx[:2], 8), idx == dlen - 1)
                with m.If(body.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == dlen - 1):
                        m.next = "FINISH"
                    with m.Elif(idx[:2] == 3):
                        m.next = "DATA_STATS"
            with m.State("READ_REQ"):
                m.d.comb += [dev.req.valid.eq(1), dev.req.payload.op.eq(DeviceOp.READ_MEM),
                             dev.req.payload.space.eq(space), dev.req.payload.addr.eq(addr)]
                with m.If(dev.req.ready):
                    m.next = "READ_RESP"
            with m.State("READ_RESP"):
                m.d.comb += dev.resp.ready.eq(1)
                with m.If(dev.resp.valid):     # an error here would break the PROBE promise: sent as read
                    m.d.sync += [word.eq(dev.resp.payload.data), sub.eq(0), addr.eq(addr + 1)]
                    m.next = "DATA_WORD"
            with m.State("DATA_WORD"):         # word → bytes (READ_REG: 4, memory words: wb)
                nbytes = Mux(cmd == C.READ_REG, 4, wb)
                last = idx == dlen - 1
                byte_out(m, word.word_select(sub[:2], 8), last)
                with m.If(body.ready):
                    m.d.sync += [idx.eq(idx + 1), sub.eq(sub + 1)]
                    with m.If(last):
                        m.next = "FINISH"
                    with m.Elif(sub == nbytes - 1):
                        m.next = "READ_REQ"
            with m.State("SAMPLE_WAIT"):
                m.next = "SAMPLE"
            with m.State("SAMPLE"):
                sample_idx = ptr - Mux(cmd == C.TRAIN, 1, 0)
                last = sample_idx == info.sample_bytes - 1
                m.d.comb += [dev.sample.valid.eq(1), dev.sample.payload.data.eq(rx.rd_data),
                             dev.sample.payload.last.eq(last)]
                with m.If(dev.sample.ready):
                    m.d.sync += ptr.eq(ptr + 1)
                    with m.If(last):
                        m.next = "RESULT"
                    with m.Else():
                        m.next = "SAMPLE_WAIT"
            with m.State("RESULT"):
                last = idx == dlen - 1
                m.d.comb += [body.valid.eq(dev.result.valid), body.payload.data.eq(dev.result.payload.data),
                             body.payload.last.eq(last), dev.result.ready.eq(body.ready)]
                with m.If(dev.result.valid & body.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(last):
                        m.d.comb += [inc["samples_trained"].eq(cmd == C.TRAIN),
                                     inc["samples_inferred"].eq(cmd == C.INFER)]
                        m.next = "FINISH"

            with m.State("FINISH"):                  # (after a clear: once every counter is written)
                with m.If(~bank.busy):
                    m.d.comb += rx.release.eq(is_frame)
                    with m.If(is_frame):
                        m.d.comb += [inc["frames_ok"].eq(status == Status.OK),
                                     inc["unknown_commands"].eq(status == Status.UNKNOWN_COMMAND),
                                     inc["arg_errors"].eq((status == Status.BAD_ADDRESS) | (status == Status.BAD_VALUE)),
                                     length_done.eq(status == Status.BAD_LENGTH)]
                    m.next = "IDLE"
        running = fsm.ongoing("SAMPLE_WAIT") | fsm.ongoing("SAMPLE") | fsm.ongoing("RESULT")
        m.d.comb += [inc["run_cycles"].eq(running), inc["length_errors"].eq(length_rx + length_done)]
        m.d.comb += [bank.rd_index.eq(idx[2:]), bank.rd_en.eq(fsm.ongoing("DATA_STATS") | fsm.ongoing("STATS_BYTES"))]
        return m


class LinkTestDevice(wiring.Component):
    """A stand-in device for the link: registers, a weight memory, a prototype memory, INFER and TRAIN.

    Registers (docs/protocol.md): ID (RO, ``0x4C4F434F``), STATUS (RO, 0), LR (16 bits, reset 1),
    SEED (32 bits, reset 1), MODE (2 bits, reset 0), LATENCY (16 bits, reset 0: extra busy cycles per run).
    Memories (words of ``word_bits``): weights of layer 0 (``n_out × n_in`` words, W[k·n_in + i]) and
    prototypes of layer 0 (``n_protos`` words). Sample = ``n_in`` unsigned bytes s_i.

    * INFER: out_k = Σ_i s_i·W[k·n_in+i] mod 2^16; result = out_0..out_{n−1} (2 bytes each, little-endian)
      and the prediction argmax_k out_k (first maximum): ``2·n_out + 1`` bytes.
    * TRAIN(label): prediction as INFER, then W[label·n_in+i] += s_i·LR mod 2^word_bits; result = prediction.
    The Python twin is ``loco_fpga.sim.virtual.TestDeviceModel``.
    """

    def __init__(self, *, n_in: int = 8, n_out: int = 4, n_protos: int = 16, word_bits: int = 16):
        self._n_in = _check_int("n_in", n_in, 1, 255)
        self._n_out = _check_int("n_out", n_out, 2, 255)
        self._n_protos = _check_int("n_protos", n_protos, 1, 0x10000)
        self._word_bits = _check_int("word_bits", word_bits, 16, 32)
        super().__init__({"host": In(DeviceSignature()), "busy": Out(1)})

    n_in = property(lambda self: self._n_in)
    n_out = property(lambda self: self._n_out)
    n_protos = property(lambda self: self._n_protos)
    word_bits = property(lambda self: self._word_bits)
    infer_bytes = property(lambda self: 2 * self._n_out + 1)
    train_bytes = property(lambda self: 1)

    def elaborate(self, platform):
        m = Module()
        n_in, n_out, wbits = self._n_in, self._n_out, self._word_bits
        n_w = n_in * n_out
        host = self.host
        R = proto.Register
        m.submodules.weights = wmem = memory.Memory(shape=wbits, depth=n_w, init=[])
        m.submodules.protos = pmem = memory.Memory(shape=wbits, depth=self._n_protos, init=[])
        w_rd, w_wr = wmem.read_port(domain="sync"), wmem.write_port()
        p_rd, p_wr = pmem.read_port(domain="sync"), pmem.write_port()

        resets = {R.LR: 1, R.SEED: 1, R.MODE: 0, R.LATENCY: 0}
        widths = {R.LR: 16, R.SEED: 32, R.MODE: 2, R.LATENCY: 16}
        regs = {r: Signal(widths[r], init=resets[r], name=r.name.lower()) for r in resets}

        req = host.req.payload
        resp = host.resp
        sample = Array(Signal(8, name=f"s{i}") for i in range(n_in))
        outs = Array(Signal(16, name=f"out{k}") for k in range(n_out))
        op = Signal(RunOp)
        label = Signal(8)
        i = Signal(range(n_in + 1))
        k = Signal(range(n_out + 1))
        acc = Signal(16)
        best = Signal(16)
        pred = Signal(range(n_out))
        wait = Signal(16)
        byte_i = Signal(range(2 * n_out + 1))
        clr = Signal(range(max(n_w, self._n_protos) + 1))

        w_space = req.space == proto.weights_space(0)
        p_space = req.space == proto.prototypes_space(0)
        in_range = Mux(w_space, req.addr < n_w, Mux(p_space, req.addr < self._n_protos, 0))

        wa = Signal(range(n_w + 1))          # weight address of the MAC / update loops
        rd_proto = Signal()
        prod = Signal(16)
        m.d.comb += prod.eq(sample[i] * w_rd.data)                    # mod 2^16
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [host.req.ready.eq(1), host.run.ready.eq(1)]
                with m.If(host.run.valid):
                    m.d.sync += [op.eq(host.run.payload.op), label.eq(host.run.payload.label), i.eq(0)]
                    m.next = "SAMPLE"
                with m.Elif(host.req.valid):
                    m.d.sync += [resp.payload.data.eq(0), resp.payload.error.eq(DeviceError.NONE)]
                    m.next = "RESPOND"
                    with m.Switch(req.op):
                        with m.Case(DeviceOp.READ_REG):
                            with m.Switch(req.addr):
                                with m.Case(R.ID):
                                    m.d.sync += resp.payload.data.eq(int.from_bytes(proto.MAGIC, "big"))
                                with m.Case(R.STATUS):
                                    m.d.sync += resp.payload.data.eq(0)
                                for r, sig in regs.items():
                                    with m.Case(r):
                                        m.d.sync += resp.payload.data.eq(sig)
                                with m.Default():
                                    m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                        with m.Case(DeviceOp.WRITE_REG):
                            with m.Switch(req.addr):
                                for r, sig in regs.items():
                                    with m.Case(r):
                                        with m.If((req.data >> widths[r]).any()):
                                            m.d.sync += resp.payload.error.eq(DeviceError.VALUE)
                                        with m.Else():
                                            m.d.sync += sig.eq(req.data)
                                with m.Default():   # ID, STATUS are read-only; the rest do not exist
                                    m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                        with m.Case(DeviceOp.PROBE):
                            m.d.sync += resp.payload.error.eq(Mux(in_range, DeviceError.NONE, DeviceError.ADDRESS))
                        with m.Case(DeviceOp.WRITE_MEM):
                            with m.If(~in_range):
                                m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                            with m.Elif((req.data >> wbits).any()):
                                m.d.sync += resp.payload.error.eq(DeviceError.VALUE)
                            with m.Else():
                                m.d.comb += [w_wr.addr.eq(req.addr), w_wr.data.eq(req.data), w_wr.en.eq(w_space),
                                             p_wr.addr.eq(req.addr), p_wr.data.eq(req.data), p_wr.en.eq(p_space)]
                        with m.Case(DeviceOp.READ_MEM):
                            m.d.comb += [w_rd.addr.eq(req.addr), p_rd.addr.eq(req.addr)]
                            with m.If(in_range):
                                m.d.sync += rd_proto.eq(p_space)
                                m.next = "READ_DATA"
                            with m.Else():
                                m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                        with m.Case(DeviceOp.RESET):
                            m.d.sync += [sig.eq(resets[r]) for r, sig in regs.items()]
                            m.d.sync += clr.eq(0)
                            m.next = "CLEAR"
                        with m.Default():
                            m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
            with m.State("READ_DATA"):
                m.d.sync += resp.payload.data.eq(Mux(rd_proto, p_rd.data, w_rd.data))
                m.next = "RESPOND"
            with m.State("CLEAR"):
                m.d.comb += [w_wr.addr.eq(clr), w_wr.data.eq(0), w_wr.en.eq(clr < n_w),
                             p_wr.addr.eq(clr), p_wr.data.eq(0), p_wr.en.eq(clr < self._n_protos)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == max(n_w, self._n_protos) - 1):
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += resp.valid.eq(1)
                with m.If(resp.ready):
                    m.next = "IDLE"

            with m.State("SAMPLE"):
                m.d.comb += host.sample.ready.eq(1)
                with m.If(host.sample.valid):
                    m.d.sync += [sample[i].eq(host.sample.payload.data), i.eq(i + 1)]
                    with m.If(i == n_in - 1):
                        m.d.sync += [i.eq(0), k.eq(0), wa.eq(0), acc.eq(0), best.eq(0), pred.eq(0)]
                        m.next = "MAC_ADDR"
            with m.State("MAC_ADDR"):                  # out_k = Σ_i s_i·W[k·n_in+i] mod 2^16
                m.d.comb += w_rd.addr.eq(wa)
                m.next = "MAC"
            with m.State("MAC"):
                total = (acc + prod)[:16]
                m.d.sync += [acc.eq(total), i.eq(i + 1), wa.eq(wa + 1)]
                m.next = "MAC_ADDR"
                with m.If(i == n_in - 1):
                    m.d.sync += [outs[k].eq(total), acc.eq(0), i.eq(0), k.eq(k + 1)]
                    with m.If((k == 0) | (total > best)):
                        m.d.sync += [best.eq(total), pred.eq(k)]
                    with m.If(k == n_out - 1):
                        m.d.sync += [wait.eq(regs[R.LATENCY]), i.eq(0), wa.eq(label * n_in)]
                        m.next = "DELAY"
            with m.State("DELAY"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += byte_i.eq(0)
                    with m.If((op == RunOp.TRAIN) & (label < n_out)):
                        m.next = "UPD_ADDR"
                    with m.Else():
                        m.next = "EMIT"
            with m.State("UPD_ADDR"):                  # W[label·n_in+i] += s_i·LR mod 2^word_bits
                m.d.comb += w_rd.addr.eq(wa)
                m.next = "UPD"
            with m.State("UPD"):
                m.d.comb += [w_wr.addr.eq(wa), w_wr.en.eq(1),
                             w_wr.data.eq(w_rd.data + sample[i] * regs[R.LR])]
                m.d.sync += [i.eq(i + 1), wa.eq(wa + 1)]
                with m.If(i == n_in - 1):
                    m.next = "EMIT"
                with m.Else():
                    m.next = "UPD_ADDR"
            with m.State("EMIT"):
                n_bytes = Mux(op == RunOp.TRAIN, 1, 2 * n_out + 1)
                last = byte_i == n_bytes - 1
                value = Mux(last, pred, outs[byte_i >> 1].word_select(byte_i[0], 8))
                m.d.comb += [host.result.valid.eq(1), host.result.payload.data.eq(value),
                             host.result.payload.last.eq(last)]
                with m.If(host.result.ready):
                    m.d.sync += byte_i.eq(byte_i + 1)
                    with m.If(last):
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class LinkTop(wiring.Component):
    """A :class:`Link` wired to a device (``link.device`` ↔ ``device.host``) behind ``rx``/``tx`` byte streams.

    The composition every top shares (:class:`LinkTestTop`, :class:`~.top.AcceleratorTop`): subclasses build
    ``self._link`` and ``self._device`` and call ``super().__init__(device_busy=…)``. ``busy`` = the link's busy,
    or'ed with the device's ``busy`` when ``device_busy``.
    """

    def __init__(self, *, device_busy: bool):
        self._device_busy = device_busy
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)), "busy": Out(1)})

    link = property(lambda self: self._link)
    device = property(lambda self: self._device)
    info = property(lambda self: self._link.info)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self._link
        m.submodules.device = device = self._device
        wiring.connect(m, link.device, device.host)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        m.d.comb += self.busy.eq(link.busy | device.busy if self._device_busy else link.busy)
        return m


class LinkTestTop(LinkTop):
    """:class:`Link` + :class:`LinkTestDevice`: the protocol end to end (``rx``/``tx`` byte streams).

    Parameters (keyword-only): ``timeout`` (idle cycles ending a truncated frame), ``max_payload``,
    ``n_in``, ``n_out``, ``n_protos``, ``event_depth``. Words are 2 bytes on the wire, 16 bits wide.
    """

    def __init__(self, *, timeout: int = 64, max_payload: int = 64, n_in: int = 8, n_out: int = 4,
                 n_protos: int = 16, event_depth: int = 4):
        self._device = LinkTestDevice(n_in=n_in, n_out=n_out, n_protos=n_protos, word_bits=16)
        self._link = Link(max_payload=max_payload, timeout=timeout, word_bytes=2, sample_bytes=n_in,
                          infer_bytes=self._device.infer_bytes, train_bytes=self._device.train_bytes,
                          n_classes=n_out, event_depth=event_depth)
        super().__init__(device_busy=False)
