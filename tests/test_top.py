# amaranth: UnusedElaboratable=no
"""The accelerator top (hdl/top.py) in the Amaranth simulator, byte for byte against its Python twin
(``ReferenceLink`` over ``AcceleratorModel``, i.e. ``FixedRule.step_q``): registers, seeds, weight load and
read-back, TRAIN/INFER steps with the weights read back after them, every argument error; a reset in the middle
of a TRAIN; constructor errors. (The same top over the real protocol in Verilator: tests/test_top_sim.py.)"""

import random
import struct

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.hdl import ResetInserter
from amaranth.sim import Simulator

from loco_fpga.boards import protocol as proto
from loco_fpga.config import preset
from loco_fpga.golden_model import prng
from loco_fpga.hdl.network import Network
from loco_fpga.boards.spram import spram_memory
from loco_fpga.hdl.layer import default_memory
from loco_fpga.hdl.top import AcceleratorDevice, AcceleratorTop
from loco_fpga.sim.virtual import accelerator_reference, mask_run_cycles

C = proto.Command
A = proto.AcceleratorRegister
S = proto.Status
f = proto.encode_frame


def small_config(**rule):
    """A small NP network (6-5-3, T = 4) that the Amaranth simulator runs a step of in a fraction of a second."""
    return preset("up5k").replace(network={"arch": (6, 5, 3)}, spiking={"steps": 4},
                                  rule={"name": "np", **rule})


def reg(addr, value=None):
    if value is None:
        return f(C.READ_REG, bytes([addr]))
    return f(C.WRITE_REG, bytes([addr]) + struct.pack("<I", value))


def seed_frames(config, seed_lanes_map):
    out = []
    for lane, (stream, index) in enumerate(seed_lanes_map):
        out += [reg(A.SEED_LANE, lane), reg(A.SEED, prng.lane_seed_state(config, stream, index))]
    return out


def run_session(top, script, *, stall=0.3, seed=0, reset_after=None):
    """Send every frame of ``script`` (one at a time, random tx back-pressure); return the reply bytes of each.
    ``reset_after`` = (script index, cycles): pulse the top's reset that many cycles after that frame was sent."""
    rng = random.Random(seed)
    rst = Signal()
    m = Module()
    m.submodules.top = ResetInserter(rst)(top)
    replies = []

    async def bench(ctx):
        for n, chunk in enumerate(script):
            out = bytearray()

            async def tick():
                ctx.set(top.tx.ready, int(rng.random() >= stall))
                _, _, valid, ready, data = await ctx.tick().sample(top.tx.valid, top.tx.ready, top.tx.payload)
                if valid and ready:
                    out.append(data)
                return valid

            for b in chunk:
                ctx.set(top.rx.valid, 1)
                ctx.set(top.rx.payload, b)
                await tick()
                ctx.set(top.rx.valid, 0)
            if reset_after is not None and reset_after[0] == n:
                for _ in range(reset_after[1]):
                    await tick()
                ctx.set(rst, 1)
                await tick()
                ctx.set(rst, 0)
                out.clear()
            quiet = 0
            while quiet < 40:
                valid = await tick()
                quiet = 0 if (valid or ctx.get(top.busy)) else quiet + 1
            replies.append(bytes(out))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return replies


def random_weights(config, rng):
    fm_bits = config.fixed.weight_bits
    arch = config.network.arch
    # small weights (±0.5) so that the hidden layer spikes
    return [rng.integers(-(1 << (config.fixed.weight_frac - 1)), 1 << (config.fixed.weight_frac - 1),
                         size=(arch[l + 1], arch[l] + 1)) for l in range(len(arch) - 1)], fm_bits


def load_frames(weights, lanes, bits, max_payload, wb):
    out = []
    for l, w in enumerate(weights):
        words = proto.pack_weights(w.tolist(), lanes, bits)
        per = (max_payload - 3) // wb
        for at in range(0, len(words), per):
            chunk = words[at:at + per]
            out.append(f(C.LOAD_WEIGHTS, bytes([l]) + struct.pack("<H", at)
                         + b"".join(x.to_bytes(wb, "little") for x in chunk)))
    return out


def read_frames(weights, lanes, max_payload, wb):
    out = []
    for l, w in enumerate(weights):
        p, c = proto.layer_geometry(w.shape[1] - 1, lanes)
        n = w.shape[0] * p * c
        per = (max_payload - 1) // wb
        out += [f(C.READ_WEIGHTS, bytes([l]) + struct.pack("<HH", at, min(per, n - at))) for at in range(0, n, per)]
    return out


def sample_bytes(rng, n, input_bytes, *, wild=False):
    """A sample of n rates (input_bytes each); ``wild`` includes values above 1.0 (clamped by the device)."""
    top = 1 << 16 if wild else 257
    return b"".join(int(rng.integers(0, top)).to_bytes(input_bytes, "little") for _ in range(n))


def proto_frames(top, rng, wb):
    """LOCO: random prototypes (unit-ish vectors in the proto format) and a count of 2 for every layer, then the
    read-back of every prototype word and the count."""
    loads, reads = [], []
    net = top.network
    one = 1 << net.formats.proto.frac
    for l in range(net.n_layers):
        depth = net.proto_write_depth(l)
        words = [int(v) & 0xFFFF for v in rng.integers(-one // 2, one // 2, size=depth - 1)] + [2]
        loads += [f(C.LOAD_PROTOTYPES, bytes([l]) + struct.pack("<H", 0) + b"".join(w.to_bytes(wb, "little")
                                                                                  for w in words))]
        reads += [f(C.READ_PROTOTYPES, bytes([l]) + struct.pack("<HH", 0, depth))]
    return loads, reads


@pytest.mark.parametrize("rounding,lanes,rule,memory", [("stochastic", 2, "np", None), ("half-up", 4, "np", None),
                                                        ("stochastic", 2, "loco", None), ("stochastic", 1, "np", "spram"),
                                                        ("half-up", 2, "np", "spram"), ("stochastic", 2, "lls", None),
                                                        ("half-up", 2, "dfa", None),
                                                        ("stochastic", 2, "loco+delta", None),
                                                        ("stochastic", 1, "np+shared", "spram"),
                                                        ("half-up", 2, "loco+pairs", None),
                                                        ("stochastic", 2, "loco+micro", None),
                                                        ("stochastic", 1, "loco+micro", "spram")])
def test_accelerator_top_equals_its_model_byte_for_byte(rounding, lanes, rule, memory):
    """``memory = "spram"``: the weights in :class:`~loco_fpga.boards.spram.BankedSpram` (the iCEBreaker build's
    hook), whose model reads garbage from a bank written in the same cycle — the update sweep must never need one.
    ``loco+delta``: LOCO with ``rule.output_update = "delta"``, and with one unit per cluster block (the shared
    form, ``cluster_units = 1``: the CLUSTER_UNITS register reads 1; the default form's reads K). ``np+shared``: the
    iCEBreaker's build — one update engine for both layers (``shared_update``), layer 0 skipping silent inputs
    (``sparse_input``), weights in SPRAM, LANES 1; the reference model is the same (both change cycles, never a
    byte). ``loco+pairs``: 6-6-3, both layers in one cluster block (``cluster_share = 2``, the deep ECP5 build's form)
    — again the same bytes. ``loco+micro``: the microcoded cluster blocks (``cluster_impl = "micro"``; CLUSTER_UNITS
    reads 1) — the same bytes; with ``spram`` their data memory is in SPRAM and the engines work on their producers'
    spikes (``hold_spikes``), one block serves both layers and computes the loss (``micro_loss``) and the output layer
    (``readout``; the iCEBreaker's form), the data written by the block's boot run after the reset, and
    the session starts with reads of the prototypes before that run can be over."""
    delta = rule.endswith("+delta")
    shared = rule.endswith("+shared")
    pairs = rule.endswith("+pairs")
    micro = rule.endswith("+micro")
    units = 1 if delta else None
    rule = rule.removesuffix("+delta").removesuffix("+shared").removesuffix("+pairs").removesuffix("+micro")
    config = small_config(name=rule, clusters=3, output_update="delta" if delta else "perturb").replace(
        fixed={"update_rounding": rounding})
    if pairs:
        config = config.replace(network={"arch": (6, 6, 3)})
    hook = spram_memory(reserve=2 if micro else 0) if memory == "spram" else default_memory
    board_form = micro and memory == "spram"
    top = AcceleratorTop(config, lanes=lanes, timeout=32, memory=hook, cluster_units=units, shared_update=shared,
                         sparse_input=shared, cluster_share=2 if pairs or board_form else 1,
                         cluster_impl="micro" if micro else "parallel", hold_spikes=board_form,
                         micro_loss=board_form, readout=board_form)
    if micro:
        units = 1                                      # what CLUSTER_UNITS reads
    assert top.network.shared_update == shared == top.network.sparse_input
    assert top.network.hold_spikes == top.network.micro_loss == top.network.readout == board_form
    if pairs:
        assert top.network.cluster_groups == ((0, 1),)
    ref = accelerator_reference(config, lanes=lanes, max_payload=top.info.max_payload, cluster_units=units)
    assert ref.device.cluster_units == (0 if rule != "loco" else units or 3)
    info = top.info
    assert ref.info == info
    rng = np.random.default_rng(3)
    weights, bits = random_weights(config, rng)
    model_net = top.network
    wb = info.word_bytes
    ib = top.device.input_bytes
    script = [f(C.PING)] + [reg(a) for a in A] + seed_frames(config, model_net.seed_map)
    if micro and memory == "spram":     # first thing after the reset, while the block's boot run writes its SPRAM
        script = proto_frames(top, np.random.default_rng(0), wb)[1] + script
    script += load_frames(weights, lanes, bits, info.max_payload, wb) + read_frames(weights, lanes, info.max_payload, wb)
    proto_reads = []
    if rule == "loco":
        proto_loads, proto_reads = proto_frames(top, rng, wb)
        script += proto_reads + proto_loads + proto_reads
    lr_q = 40000
    script.append(reg(A.LR, lr_q))
    for step in range(4):
        script.append(f(C.TRAIN, bytes([step % 3]) + sample_bytes(rng, 6, ib, wild=step == 3)))
        script += read_frames(weights, lanes, info.max_payload, wb) + proto_reads
    script.append(f(C.INFER, sample_bytes(rng, 6, ib)))
    script += read_frames(weights, lanes, info.max_payload, wb)
    # argument errors: none may change anything
    script += [reg(0x20), reg(A.RULE, 1), reg(A.LR, 1 << 16), reg(A.SEED, 0), reg(A.SEED_LANE, model_net.seed_lanes),
               f(C.READ_WEIGHTS, bytes([2, 0, 0, 1, 0])), f(C.READ_PROTOTYPES, bytes([0, 0, 0, 1, 0])),
               f(C.LOAD_WEIGHTS, bytes([1]) + struct.pack("<H", 3 * 8 - 1) + bytes(2 * wb)),
               f(C.TRAIN, bytes([3]) + bytes(info.sample_bytes))]
    script += read_frames(weights, lanes, info.max_payload, wb) + [f(C.STATS)]
    script += [f(C.RESET_STATE, bytes([proto.RESET_DEVICE])), reg(A.LR)] + read_frames(weights, lanes,
                                                                                      info.max_payload, wb)
    script += proto_reads
    got = run_session(top, script)
    if memory == "spram":             # (the hook is called when the engines elaborate)
        # lanes 1: both layers (2 blocks each), or (micro) layer 0 and the micro block's data (after its boot run);
        # lanes 2: layer 0 (4 blocks), layer 1 in BRAM
        assert hook.used == 4
    want, trained_differs = [], False
    for chunk in script:
        if chunk[2] == C.RESET_STATE:
            trained_differs = any(not np.array_equal(a, b) for a, b in zip(ref.device.net.weights, weights))
        want.append(ref.feed(chunk))
    for n, (g, w) in enumerate(zip(got, want)):
        assert mask_run_cycles(g) == w, f"frame {n} ({script[n][2]:#04x}): got {g.hex()}, want {w.hex()}"
    statuses = [proto.FrameParser().feed_all(w)[0].payload[0] for w in want]
    assert statuses.count(S.OK) > 20 and {S.BAD_ADDRESS, S.BAD_VALUE} <= set(statuses)
    assert trained_differs, "the TRAIN steps changed no weight: the read-backs compared nothing new"


def test_reset_in_the_middle_of_train_leaves_a_consistent_state():
    """A reset at points spread over a TRAIN (sample streaming, passes, update sweep): the link answers again,
    LR reads its reset value, and every weight reads either its value before or after that step (engine words are
    written in single cycles: a row can be partly updated). The host reloads the weights and the PRNG seeds (or
    reads the weights back) after a reset — docs/protocol.md."""
    config = small_config()
    lanes = 2
    top = AcceleratorTop(config, lanes=lanes, timeout=32)
    info = top.info
    ref = accelerator_reference(config, lanes=lanes, max_payload=info.max_payload)
    rng = np.random.default_rng(5)
    weights, bits = random_weights(config, rng)
    setup = seed_frames(config, top.network.seed_map) + load_frames(weights, lanes, bits, info.max_payload,
                                                                    info.word_bytes) + [reg(A.LR, 60000)]
    train = f(C.TRAIN, bytes([1]) + sample_bytes(rng, 6, top.device.input_bytes))
    for frame in setup + [train]:
        ref.feed(frame)
    after = [w.copy() for w in ref.device.net.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(after, weights)), "the step must change some weight"
    reads = read_frames(weights, lanes, info.max_payload, info.word_bytes)
    # the step takes a few hundred cycles here: resets from the sample stream to after the reply
    partial = 0
    for delay in (0, 60, 120, 180, 200, 215, 230, 260, 400):
        got = run_session(top, setup + [train, f(C.PING), reg(A.LR)] + reads, reset_after=(len(setup), delay), stall=0)
        ping, lr = proto.FrameParser().feed_all(got[len(setup) + 1]), proto.FrameParser().feed_all(got[len(setup) + 2])
        assert ping[0].data[:4] == proto.MAGIC
        assert struct.unpack("<I", lr[0].data)[0] == 0                  # LR back at its reset value
        words = []
        for reply in got[len(setup) + 3:]:
            words += [int.from_bytes(fr.data[k:k + 2], "little") for fr in proto.FrameParser().feed_all(reply)
                      for k in range(0, len(fr.data), 2)]
        back, at = [], 0
        for w in weights:
            p, c = proto.layer_geometry(w.shape[1] - 1, lanes)
            n = w.shape[0] * p * c
            back.append(np.array(proto.unpack_weights(words[at:at + n], w.shape[0], w.shape[1] - 1, lanes, bits)))
            at += n
        both = sum(int(np.sum((b == w) | (b == a))) for b, w, a in zip(back, weights, after))
        assert both == sum(w.size for w in weights), f"reset after {delay} cycles: a weight is neither old nor new"
        partial += 0 < sum(int(np.sum(b != w)) for b, w in zip(back, weights)) and \
            any(int(np.sum(b != a)) for b, a in zip(back, after))
    assert partial, "no reset point caught the update sweep part-way"


def test_reset_in_the_middle_of_a_loco_train():
    """LOCO (K = 3, two prototypes and the count loaded per layer; the step opens a third cluster): after a reset
    at points of a TRAIN every prototype word reads its value before or after the step, every weight likewise, and
    every layer's cluster count reads 0 (the blocks' registers are reset): the host reloads prototypes and counts
    — docs/protocol.md."""
    config = small_config(name="loco", clusters=3)
    lanes = 2
    top = AcceleratorTop(config, lanes=lanes, timeout=32)
    info = top.info
    ref = accelerator_reference(config, lanes=lanes, max_payload=info.max_payload)
    rng = np.random.default_rng(5)
    weights, bits = random_weights(config, rng)
    loads, proto_reads = proto_frames(top, rng, info.word_bytes)
    setup = (seed_frames(config, top.network.seed_map) + load_frames(weights, lanes, bits, info.max_payload,
                                                                     info.word_bytes) + loads + [reg(A.LR, 60000)])
    train = f(C.TRAIN, bytes([1]) + sample_bytes(rng, 6, top.device.input_bytes))
    for frame in setup:
        ref.feed(frame)
    words_of = lambda: [[int(v) & 0xFFFF for v in c.protos.reshape(-1)] for c in ref.device.rule.clusters]  # noqa: E731
    old_p, old_w = words_of(), [w.copy() for w in ref.device.net.weights]
    ref.feed(train)
    new_p, new_w = words_of(), [w.copy() for w in ref.device.net.weights]
    assert old_p != new_p and [c.count for c in ref.device.rule.clusters] == [3] * len(new_p)
    reads = read_frames(weights, lanes, info.max_payload, info.word_bytes)
    moved = 0
    for delay in (150, 400, 1200):
        got = run_session(top, setup + [train, f(C.PING)] + proto_reads + reads, reset_after=(len(setup), delay),
                          stall=0)
        assert proto.FrameParser().feed_all(got[len(setup) + 1])[0].data[:4] == proto.MAGIC
        for l, reply in enumerate(got[len(setup) + 2:len(setup) + 2 + len(proto_reads)]):
            data = proto.FrameParser().feed_all(reply)[0].data
            back = [int.from_bytes(data[k:k + 2], "little") for k in range(0, len(data), 2)]
            assert back[-1] == 0, f"reset after {delay} cycles: layer {l} cluster count {back[-1]}, expected 0"
            assert all(b in (o, n) for b, o, n in zip(back[:-1], old_p[l], new_p[l])), \
                f"reset after {delay} cycles: a prototype word of layer {l} is neither old nor new"
            moved += sum(b != o for b, o in zip(back[:-1], old_p[l]))
        words = []
        for reply in got[len(setup) + 2 + len(proto_reads):]:
            words += [int.from_bytes(fr.data[k:k + 2], "little") for fr in proto.FrameParser().feed_all(reply)
                      for k in range(0, len(fr.data), 2)]
        at = 0
        for w, o, n in zip(weights, old_w, new_w):
            p, c = proto.layer_geometry(w.shape[1] - 1, lanes)
            k = w.shape[0] * p * c
            b = np.array(proto.unpack_weights(words[at:at + k], w.shape[0], w.shape[1] - 1, lanes, bits))
            at += k
            assert np.all((b == o) | (b == n)), f"reset after {delay} cycles: a weight is neither old nor new"
    assert moved, "no reset point came after a prototype write"


def test_constructor_errors_quote_the_bad_value():
    with pytest.raises(ValueError, match="rule.name = 'bp'"):
        AcceleratorTop(small_config().replace(fixed={"enabled": False}, rule={"name": "bp"}), lanes=4)
    with pytest.raises(ValueError, match="lanes = 3"):
        AcceleratorTop(small_config(), lanes=3)
    with pytest.raises(ValueError, match="cluster_units = 1: cluster blocks exist with update 'loco' only, not 'np'"):
        AcceleratorTop(small_config(name="np"), lanes=2, cluster_units=1)
    with pytest.raises(ValueError, match="units = 4"):
        AcceleratorTop(small_config(name="loco", clusters=3), lanes=2, cluster_units=4)
    with pytest.raises(ValueError, match="network.update = None"):
        AcceleratorDevice(network=Network.from_config(small_config(), lanes=2))
    with pytest.raises(ValueError, match="word_bytes = 1"):
        AcceleratorDevice(network=Network.from_config(small_config(), lanes=2, update="np"), word_bytes=1)
    with pytest.raises(TypeError, match="expected a loco_fpga.hdl.network.Network"):
        AcceleratorDevice(network=None)
