"""The host driver: typed API, errors, retries and "never silently unknown" — on the Python model of the
link test top (instant) and on the Verilator virtual board behind a TCP socket."""

import random
import time

import pytest

from loco_fpga.boards import protocol as proto
from loco_fpga.boards.host import DeviceError, Host, LinkTimeout, LinkUncertain, SerialTransport
from loco_fpga.sim import harness
from loco_fpga.sim.virtual import TOP_PARAMS, ModelTransport, TestDeviceModel, VerilatorBoard

R = proto.Register


def _exercise(host: Host, rng: random.Random, rounds: int = 3):
    """The whole API against a local TestDeviceModel that mirrors what the board must hold."""
    info = host.ping()
    assert (info.sample_bytes, info.n_classes, info.word_bytes) == (TOP_PARAMS["n_in"], TOP_PARAMS["n_out"], 2)
    model = TestDeviceModel(**TOP_PARAMS)
    assert host.read_reg(R.ID) == 0x4C4F434F
    for _ in range(rounds):
        lr = rng.randrange(1, 1 << 16)
        host.write_reg(R.LR, lr)
        model.regs[R.LR] = lr
        assert host.read_reg(R.LR) == lr
        weights = [rng.randrange(1 << 16) for _ in range(32)]
        host.load_weights(0, weights)               # 32 words: two LOAD frames (max_payload 72)
        model.weights = list(weights)
        assert host.read_weights(0, 32) == weights
        protos = [rng.randrange(-(1 << 15), 1 << 15) for _ in range(16)]
        host.load_prototypes(0, protos)
        assert host.read_prototypes(0, 16, signed=True) == protos
        for _ in range(4):
            sample = bytes(rng.randrange(256) for _ in range(info.sample_bytes))
            result = host.infer(sample)
            assert result.raw == model.run("infer", 0, sample)
            assert result.outputs == model.outputs(sample)
            label = rng.randrange(info.n_classes)
            assert host.train(sample, label).raw == model.run("train", label, sample)
        assert host.read_weights(0, 32) == model.weights
    with pytest.raises(DeviceError, match="BAD_ADDRESS"):
        host.write_reg(R.ID, 1)
    with pytest.raises(DeviceError, match="BAD_VALUE"):
        host.write_reg(R.MODE, 4)
    with pytest.raises(DeviceError, match="BAD_ADDRESS"):
        host.read_weights(0, 2, start=31)
    with pytest.raises(DeviceError, match="BAD_ADDRESS"):
        host.load_weights(1, [1])
    assert host.read_weights(0, 32) == model.weights          # the rejected commands changed nothing
    stats = host.stats()
    assert stats["samples_trained"] == stats["samples_inferred"] == 4 * rounds
    assert stats["arg_errors"] == 4
    host.reset_state(counters=True, device=True)
    assert host.read_weights(0, 32) == [0] * 32 and host.read_reg(R.LR) == 1
    assert host.stats()["frames_ok"] == 3         # RESET_STATE, READ_WEIGHTS, READ_REG since the clear


def test_host_api_on_the_model():
    _exercise(Host(ModelTransport(), timeout=0.05), random.Random(1))


def test_host_argument_errors_quote_the_value():
    host = Host(ModelTransport(), timeout=0.05)
    with pytest.raises(ValueError, match="label = 9"):
        host.train(bytes(8), 9)
    with pytest.raises(ValueError, match="sample of 3 bytes"):
        host.infer(b"abc")
    with pytest.raises(ValueError, match="word 70000"):
        host.load_weights(0, [70000])
    with pytest.raises(ValueError, match="layer = 128"):
        host.read_weights(128, 1)
    with pytest.raises(ValueError, match="timeout = 0"):
        Host(ModelTransport(), timeout=0)


def test_retries_on_corrupted_frames_reach_the_same_state():
    """0.5 % of the host's bytes are flipped on the way: the device answers CRC/TIMEOUT/… and the driver
    resends; every idempotent call succeeds and the final state is the intended one."""
    transport = ModelTransport(corrupt=0.005, seed=5)
    host = Host(transport, timeout=0.02, retries=8)
    rng = random.Random(2)
    weights = [rng.randrange(1 << 16) for _ in range(32)]
    for _ in range(20):
        host.load_weights(0, weights)
        assert host.read_weights(0, 32) == weights
        host.write_reg(R.SEED, 12345)
        assert host.read_reg(R.SEED) == 12345
    assert sum(host.retry_log.values()) > 0, "the corruption never hit: the test did not test retries"
    assert transport.link.device.weights == weights


def test_train_is_never_silently_repeated_or_lost():
    """With corrupted replies a TRAIN may have run without the host seeing the answer: the driver must
    raise LinkUncertain then, and otherwise have run it exactly once."""
    transport = ModelTransport(corrupt=0.01, corrupt_replies=0.01, seed=11)
    host = Host(transport, timeout=0.02, retries=8)
    transport_clean = ModelTransport()
    rng = random.Random(4)
    ok = uncertain = 0
    for _ in range(300):
        sample = bytes(rng.randrange(256) for _ in range(8))
        try:
            host.train(sample, rng.randrange(4))
            ok += 1
        except LinkUncertain:
            uncertain += 1
    trained = transport.link.counters["samples_trained"]
    assert ok <= trained <= ok + uncertain
    assert uncertain > 0, "no reply was ever lost: the test did not test the ambiguous case"
    del transport_clean


def test_silence_is_a_timeout_not_a_hang():
    class Dead:
        def write(self, data):
            pass

        def read(self, size, timeout):
            return b""

        def reset_input(self):
            pass

        def close(self):
            pass

    host = Host(Dead(), timeout=0.01, retries=2)
    with pytest.raises(LinkTimeout, match="PING: no reply after 3 attempts"):
        host.ping()
    with pytest.raises(LinkUncertain, match="TRAIN"):
        Host(Dead(), timeout=0.01).command(proto.Command.TRAIN, bytes(9), idempotent=False)


def test_serial_transport_runs_the_api_over_a_pty():
    # pyserial on the slave side of a pseudo-terminal; the Python model of the test top serves the master side
    import os
    import select
    import threading
    import tty

    from loco_fpga.sim.virtual import reference_top
    master, slave = os.openpty()
    tty.setraw(slave)
    link, stop = reference_top(None), threading.Event()

    def serve():
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.02)
            out = link.feed(os.read(master, 4096)) if ready else link.idle()
            if out:
                os.write(master, out)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        transport = SerialTransport(os.ttyname(slave), 115200, timeout=0.05)
        try:
            _exercise(Host(transport, timeout=2.0), random.Random(7), rounds=1)
        finally:
            transport.close()
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave)
    with pytest.raises(ValueError, match="baud = 0"):
        SerialTransport("/dev/null", 0)


def test_host_api_on_the_verilator_virtual_board():
    harness.require_simulator("verilator")
    with VerilatorBoard() as board:
        host = Host(board.transport(), timeout=5.0)
        _exercise(host, random.Random(3), rounds=2)
        # garbage and a truncated frame on the wire, then the driver carries on
        host.transport.write(b"\x00\x37\xA5\x5A\x08\x08")     # garbage, then a frame that stops
        time.sleep(0.5)                                          # the device times it out meanwhile
        assert host.ping().n_classes == TOP_PARAMS["n_out"]
        host.infer(bytes(range(8)))
        stats = host.stats()
        assert stats["timeouts"] == 1 and stats["samples_inferred"] == 1 and stats["run_cycles"] > 0
        host.close()
