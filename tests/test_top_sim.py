"""The accelerator top in Verilator over the real protocol (the virtual board's socket), byte for byte against
its Python twin (``accelerator_reference``: ``ReferenceLink`` over ``AcceleratorModel``, i.e. ``FixedRule.step_q``):
seeds, weights, TRAIN steps with every weight read back after each, INFER, argument errors, RESET_STATE.

The small configuration (64-16-10, T = 8, rule np, LANES 8) is shared with tests/test_demo.py: one Verilator
build (a few minutes cold, cached in sim_build/)."""

import socket
import struct

import numpy as np

from loco_fpga.boards import protocol as proto
from loco_fpga.config import preset
from loco_fpga.golden_model import prng
from loco_fpga.golden_model.fixed import FixedNetwork
from loco_fpga.sim import harness
from loco_fpga.sim.virtual import VerilatorBoard, accelerator_reference, mask_run_cycles

C = proto.Command
A = proto.AcceleratorRegister
f = proto.encode_frame
LANES = 8


def small_config():
    """The default-run virtual board: digits-sized (64 inputs, 10 classes), a 16-neuron hidden layer, T = 8, np."""
    return preset("up5k").replace(network={"arch": (64, 16, 10)}, spiking={"steps": 8}, rule={"name": "np"})


def exchange(conn: socket.socket, frame: bytes, timeout: float = 60.0) -> bytes:
    """Send one frame; return the bytes of the one reply frame."""
    conn.sendall(frame)
    parser = proto.FrameParser()
    data = bytearray()
    conn.settimeout(timeout)
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("the virtual board closed the connection")
        data += chunk
        if any(ev is not None for ev in (parser.feed(b) for b in chunk)):
            return bytes(data)


def test_accelerator_on_verilator_equals_its_model_byte_for_byte():
    harness.require_simulator("verilator")
    config = small_config()
    ref = accelerator_reference(config, lanes=LANES)
    info = ref.info
    model = ref.device
    rng = np.random.default_rng(11)
    init = FixedNetwork(config, np.random.default_rng(4)).weights          # golden init: the hidden layer spikes
    script = [f(C.PING)] + [f(C.READ_REG, bytes([a])) for a in A]
    for lane, (stream, index) in enumerate(model.seed_map):
        script += [f(C.WRITE_REG, bytes([A.SEED_LANE]) + struct.pack("<I", lane)),
                   f(C.WRITE_REG, bytes([A.SEED]) + struct.pack("<I", prng.seed_state(config.train.seed, stream, index)))]
    per_load, per_read = (info.max_payload - 3) // 2, (info.max_payload - 1) // 2
    reads = []
    for l, w in enumerate(init):
        words = proto.pack_weights(w.tolist(), LANES, 16)
        script += [f(C.LOAD_WEIGHTS, bytes([l]) + struct.pack("<H", at)
                     + b"".join(x.to_bytes(2, "little") for x in words[at:at + per_load]))
                   for at in range(0, len(words), per_load)]
        reads += [f(C.READ_WEIGHTS, bytes([l]) + struct.pack("<HH", at, min(per_read, len(words) - at)))
                  for at in range(0, len(words), per_read)]
    script += reads + [f(C.WRITE_REG, bytes([A.LR]) + struct.pack("<I", 30000))]
    for step in range(6):
        x = rng.integers(0, 257, size=64)
        script.append(f(C.TRAIN, bytes([int(rng.integers(10))]) + b"".join(int(v).to_bytes(2, "little") for v in x)))
        script += reads
    script.append(f(C.INFER, b"".join(int(v).to_bytes(2, "little") for v in rng.integers(0, 1 << 16, size=64))))
    script += reads + [f(C.READ_REG, bytes([0x30])), f(C.WRITE_REG, bytes([A.SEED]) + bytes(4)),
                       f(C.READ_WEIGHTS, bytes([2, 0, 0, 1, 0])), f(C.LOAD_PROTOTYPES, bytes([0, 0, 0, 0, 0])),
                       f(C.TRAIN, bytes([10]) + bytes(info.sample_bytes)), f(C.STATS),
                       f(C.RESET_STATE, bytes([proto.RESET_DEVICE | proto.RESET_COUNTERS])), f(C.STATS)] + reads[:2]
    before_reset = None
    with VerilatorBoard(config=config, lanes=LANES) as board:
        with socket.create_connection(("127.0.0.1", board.port), timeout=60) as conn:
            for n, frame in enumerate(script):
                if frame[2] == C.RESET_STATE:
                    before_reset = [w.copy() for w in model.net.weights]
                want = ref.feed(frame)
                got = exchange(conn, frame)
                assert mask_run_cycles(got) == want, f"frame {n} ({frame[2]:#04x}): got {got.hex()}, want {want.hex()}"
    moved = sum(int(np.sum(a != b)) for a, b in zip(before_reset, init))
    assert moved > 0, "the TRAIN steps changed no weight"
    print(f"{len(script)} frames equal; {moved} weights moved by 6 TRAIN steps")


#: random/mutated cases against the accelerator in the default run (one case = one frame, or a busy case)
CASES = 10_000


def test_accelerator_survives_random_and_mutated_frames(tmp_path):
    """The link robustness bench (sim/benches/link.py) against the accelerator top: ≥ 10,000 random and mutated
    frames byte for byte against ``accelerator_reference``, every weight and register read back after each
    rejected state-changing frame; the device never hangs and every TRAIN/INFER reply (prediction, dl, g,
    outputs) equals the golden model's. Shares the build of the test above."""
    import json

    harness.require_simulator("verilator")
    built = VerilatorBoard(config=small_config(), lanes=LANES).build()
    stats_file = tmp_path / "stats.json"
    harness.run(built, "loco_fpga.sim.benches.link", testcase="robustness",
                params={"target": "accelerator", "seed": 1, "cases": CASES, "stall": 0.125, "clock_impl": "gpi",
                        "snapshot_every": 500, "stats_file": str(stats_file)})
    stats = json.loads(stats_file.read_text())
    assert stats["cases"] == CASES and stats["mismatches"] == 0
    assert stats["rejected"] > CASES // 4 and stats["accepted"] > CASES // 4
    assert stats["busy_replies"] > 0 and stats["timeouts_fired"] > 0
    print(json.dumps({k: stats[k] for k in ("cases", "accepted", "rejected", "snapshots", "busy_cases",
                                            "busy_replies", "timeouts_fired", "cycles", "seconds")}))
