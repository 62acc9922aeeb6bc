"""boards/protocol.py: CRC, frames, the streaming parser (resynchronisation, oversize, timeout) and the
Python device side (ReferenceLink over TestDeviceModel) — pure Python, no simulator."""

import random
import struct

import pytest
from amaranth.lib.crc import catalog

from loco_fpga.boards import protocol as proto
from loco_fpga.sim.benches.link import command_frame, mutate
from loco_fpga.sim.virtual import reference_top

C, S = proto.Command, proto.Status


def test_crc16_is_ccitt_false_with_its_check_value():
    assert proto.crc16(b"123456789") == 0x29B1
    assert proto.crc16(b"") == 0xFFFF
    ref = catalog.CRC16_CCITT_FALSE(8)
    rng = random.Random(0)
    for n in range(64):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert proto.crc16(data) == ref.compute(data)


def test_frame_layout():
    frame = proto.encode_frame(C.WRITE_REG, b"\x10\x01\x02\x03\x04")
    assert frame[:2] == b"\xA5\x5A" and frame[2] == 0x03 and frame[3:5] == b"\x05\x00"
    assert frame[5:10] == b"\x10\x01\x02\x03\x04"
    assert struct.unpack(">H", frame[10:])[0] == proto.crc16(frame[2:10])
    assert proto.crc16(frame[2:]) == 0
    with pytest.raises(ValueError, match="type = 256"):
        proto.encode_frame(256)


def test_parser_resynchronises_after_garbage_without_backtracking():
    good = proto.encode_frame(C.PING)
    parser = proto.FrameParser(max_payload=16)
    # garbage with sync-looking bytes, then a good frame: exactly one frame comes out
    events = parser.feed_all(b"\x00\x5A\xA5\x11\xA5" + good)
    assert [type(e) for e in events] == [proto.Frame] and events[0].type == C.PING
    # a bad frame swallows bytes up to its own end; the hunt restarts at the next byte
    bad = bytearray(proto.encode_frame(C.STATS))
    bad[-1] ^= 1
    events = parser.feed_all(bytes(bad) + good)
    assert [e.status if isinstance(e, proto.ParseError) else "frame" for e in events] == [S.CRC, "frame"]
    # oversize is reported when LEN is complete; the payload bytes are then garbage
    events = parser.feed_all(proto.encode_frame(C.LOAD_WEIGHTS, bytes(17)) + good)
    assert [e.status if isinstance(e, proto.ParseError) else "frame" for e in events] == [S.OVERSIZE, "frame"]


def test_parser_timeout_only_inside_a_frame():
    parser = proto.FrameParser()
    parser.feed_all(b"\xA5")
    assert parser.idle() is None                       # a lone sync byte is garbage
    parser.feed_all(b"\xA5\x5A")
    err = parser.idle()
    assert err.status == S.TIMEOUT and err.type == proto.NO_TYPE
    parser.feed_all(b"\xA5\x5A\x02\x01")
    assert parser.idle().type == C.READ_REG
    assert parser.idle() is None


def test_device_info_round_trip():
    info = proto.DeviceInfo(1, 2, 72, 8, 9, 1, 4)
    assert proto.DeviceInfo.decode(info.encode()) == info
    with pytest.raises(ValueError, match="magic"):
        proto.DeviceInfo.decode(b"XXXX" + info.encode()[4:])


def test_reference_answers_every_frame_and_rejections_change_nothing():
    """10,000 random/mutated cases on the pure-Python device: one reply per frame event, and device state
    unchanged whenever no reply says OK."""
    ref = reference_top()
    rng = random.Random(9)
    replies = rejected = 0
    for _ in range(10_000):
        _kind, chunk = mutate(rng, command_frame(rng, ref.info), ref.info)
        before = ref.device.state()
        out = ref.feed(chunk) + ref.idle()
        frames = proto.FrameParser().feed_all(out)
        assert all(isinstance(f, proto.Frame) and f.is_reply for f in frames)
        replies += len(frames)
        if not any(f.payload[0] == S.OK for f in frames):
            rejected += 1
            assert ref.device.state() == before, chunk.hex()
    assert replies > 9000 and rejected > 3000
