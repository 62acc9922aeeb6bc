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

__all__ = ["TestDeviceModel", "AcceleratorModel", "accelerator_reference", "reference_top", "mask_run_cycles", "ModelTransport", "ByteFeederTop",
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


class AcceleratorModel:
    """The accelerator device (``hdl.top.AcceleratorDevice``) in Python, on the golden model: registers, the
    weight memory spaces and INFER/TRAIN as ``FixedRule.step_q`` (TRAIN: lr_q = the LR register; INFER:
    lr_q = 0, which changes no weight but draws the same PRNG words, as the gateware does).

    ``config``, ``lanes`` and ``cluster_units`` as for ``AcceleratorTop``. The weights start at 0 (the gateware's
    memories are initialised to 0); the PRNG lanes start at the golden model's seeds (the gateware's lanes start at
    their reset seed): a host loads every lane through SEED_LANE/SEED before training, so only loaded
    states are ever compared.
    """

    def __init__(self, config, *, lanes: int, cluster_units: int | None = None):
        import numpy as np  # noqa: PLC0415

        from loco_fpga.golden_model import prng  # noqa: PLC0415
        from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule  # noqa: PLC0415
        from loco_fpga.hdl.network import Network  # noqa: PLC0415  (layout only: lanes, seed_map; not elaborated)

        self._np = np
        self.config, self.lanes = config, lanes
        layout = Network.from_config(config, lanes=lanes, update=config.rule.name, cluster_units=cluster_units)
        self.seed_map = layout.seed_map
        self.cluster_units = layout.cluster_blocks[0].units if layout.cluster_blocks else 0
        self.geometry = [proto.layer_geometry(n, lanes) for n in config.network.arch[:-1]]
        self.net = FixedNetwork(config, np.random.default_rng(0))
        self.rule = FixedRule(self.net, config)
        self.fmts = self.net.fmts
        self.wbits = self.fmts.weight.bits
        self.input_bytes = (self.fmts.input.bits + 7) // 8
        self.out_bytes = (self.fmts.out.bits + 7) // 8
        self.n_classes = config.network.arch[-1]
        self._prng = prng
        self.reset()

    def reset(self):
        np = self._np
        self.regs = {int(r): v for r, v in proto.ACCELERATOR_RESETS.items()}
        self.net.weights = [np.zeros_like(w) for w in self.net.weights]
        for cl in self.rule.clusters or []:          # prototypes 0, count 0 (r_k and H are unused until count ≥ 1)
            cl.protos[...] = 0
            cl.count = 0
            cl._since_refresh = 0
        self.padding = [np.zeros((w.shape[0], p * c - w.shape[1]), dtype=np.int64)
                        for w, (p, c) in zip(self.net.weights, self.geometry)]

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def word_bytes(self) -> int:
        return 2 if self.wbits <= 16 else 4

    @property
    def sample_bytes(self) -> int:
        return self.config.network.arch[0] * self.input_bytes

    @property
    def infer_bytes(self) -> int:
        return self.n_classes * self.out_bytes + 1

    train_bytes = 9

    def info(self, max_payload: int) -> proto.DeviceInfo:
        return proto.DeviceInfo(proto.PROTOCOL_VERSION, self.word_bytes, max_payload, self.sample_bytes,
                                self.infer_bytes, self.train_bytes, self.n_classes)

    def state(self):
        """Everything a rejected frame must leave unchanged (registers, weights, padding, PRNG lanes)."""
        protos = [(c.protos.tolist(), c.count) for c in self.rule.clusters or []]
        return (dict(self.regs), [w.tolist() for w in self.net.weights], [p.tolist() for p in self.padding],
                self.lane_states(), protos)

    # -- PRNG lanes, in the gateware's seed_lane order -----------------------------------------------
    def _lane(self, index):
        stream, i = self.seed_map[index]
        prng, rule = self._prng, self.rule
        if stream == prng.NOISE:
            return rule.noise_banks[i], ()
        if stream == prng.ENCODER:
            return rule.encoder_bank, (i,)
        layer, row = divmod(i, prng.LANE_STRIDE)
        return rule.rounding_banks[layer], (row,)

    def lane_states(self) -> list[int]:
        out = []
        for index in range(len(self.seed_map)):
            bank, at = self._lane(index)
            out.append(int(bank.state[at]) if at else int(bank.state.reshape(-1)[0]))
        return out

    def load_lane(self, index: int, state: int) -> None:
        bank, at = self._lane(index)
        if at:
            bank.state[at] = state
        else:
            bank.state[...] = state

    # -- the device port -----------------------------------------------------------------------------
    def read_reg(self, addr):
        A = proto.AcceleratorRegister
        fixed = {A.ID: int.from_bytes(proto.MAGIC, "big"), A.STATUS: 0, A.SEED_LANES: len(self.seed_map),
                 A.RULE: proto.RULE_CODES[self.config.rule.name], A.LANES: self.lanes,
                 A.LAYERS: len(self.config.network.arch) - 1, A.CLUSTER_UNITS: self.cluster_units}
        if addr in fixed:
            return S.OK, fixed[addr]
        if addr in self.regs:
            return S.OK, self.regs[addr]
        return S.BAD_ADDRESS, 0

    def write_reg(self, addr, value):
        A = proto.AcceleratorRegister
        if addr == A.LR:
            if value >> self.fmts.lr.bits:
                return S.BAD_VALUE
        elif addr == A.SEED_LANE:
            if value >= len(self.seed_map):
                return S.BAD_VALUE
        elif addr == A.SEED:
            if value == 0:
                return S.BAD_VALUE
            self.load_lane(self.regs[A.SEED_LANE], value)
        else:
            return S.BAD_ADDRESS
        self.regs[addr] = value
        return S.OK

    def _cell(self, space, addr):
        """(array, row, column) of word ``addr`` of memory ``space``, or None; prototypes: (clusters, k, j),
        j = dim for the count word."""
        layer = space & ~proto.PROTOTYPE_SPACE_FLAG
        if layer >= len(self.geometry):
            return None
        if space & proto.PROTOTYPE_SPACE_FLAG:
            if not self.rule.clusters:
                return None
            cl = self.rule.clusters[layer]
            if addr > cl.capacity * cl.dim:
                return None
            return (cl,) + ((cl.capacity, cl.dim) if addr == cl.capacity * cl.dim else divmod(addr, cl.dim))
        p, c = self.geometry[layer]
        w = self.net.weights[layer]
        if addr >= w.shape[0] * p * c:
            return None
        i, j = divmod(addr, p * c)
        return (w, i, j) if j < w.shape[1] else (self.padding[layer], i, j - w.shape[1])

    def probe(self, space, addr):
        return S.OK if self._cell(space, addr) is not None else S.BAD_ADDRESS

    def write_mem(self, space, addr, word):
        cell = self._cell(space, addr)
        if cell is None:
            return S.BAD_ADDRESS
        arr, i, j = cell
        if not isinstance(arr, self._np.ndarray):   # a layer's prototypes (FixedClusters)
            self._write_proto(arr, i, j, word)
            return S.OK
        sign = 1 << (self.wbits - 1)
        arr[i, j] = ((word & ((1 << self.wbits) - 1)) ^ sign) - sign    # the low weight_bits bits
        return S.OK

    def _write_proto(self, cl, k, j, word):
        """c_k[j] ← the low proto_bits bits (two's complement); the count word: count ← min(word mod 2^16, K),
        then r_k of every active prototype and H recomputed, samples-since-refresh 0 (what the cluster block's
        count load does: ``FixedClusters`` with its prototypes and count set, then ``refresh()``)."""
        if k == cl.capacity:
            cl.count = min(word & 0xFFFF, cl.capacity)
            cl._since_refresh = 0
            if cl.count:
                for b in range(cl.count):
                    cl.recips[b] = cl._recip_norm(cl.protos[b])
                cl.refresh()
            return
        bits = self.fmts.proto.bits
        sign = 1 << (bits - 1)
        cl.protos[k, j] = ((word & ((1 << bits) - 1)) ^ sign) - sign

    def read_mem(self, space, addr):
        cell = self._cell(space, addr)
        if cell is None:
            return S.BAD_ADDRESS, 0
        arr, i, j = cell
        if not isinstance(arr, self._np.ndarray):
            value = arr.count if i == arr.capacity else int(arr.protos[i, j])
            return S.OK, value & ((1 << self.fmts.proto.bits) - 1)
        return S.OK, int(arr[i, j]) & ((1 << self.wbits) - 1)

    def sample_rates(self, sample: bytes):
        """The quantised inputs of a sample: ``input_bytes`` little-endian each, clamped to 2^input_frac."""
        one = 1 << self.config.fixed.input_frac
        b = self.input_bytes
        return self._np.array([min(int.from_bytes(sample[k:k + b], "little"), one)
                               for k in range(0, len(sample), b)], dtype=self._np.int64)

    def run(self, op, label, sample):
        lr_q = self.regs[proto.AcceleratorRegister.LR] if op == "train" else 0
        pred = self.rule.step_q(self.sample_rates(sample), label % self.n_classes if op == "train" else 0, lr_q)
        last = self.rule.last
        if op == "train":
            return bytes([pred]) + (int(last["dl"]) & 0xFFFFFFFF).to_bytes(4, "little") + \
                (int(last["g"]) & 0xFFFFFFFF).to_bytes(4, "little")
        mask = (1 << (8 * self.out_bytes)) - 1
        return b"".join((int(y) & mask).to_bytes(self.out_bytes, "little") for y in last["y"]) + bytes([pred])


def accelerator_reference(config, *, lanes: int, max_payload: int | None = None,
                          cluster_units: int | None = None) -> proto.ReferenceLink:
    """``AcceleratorTop(config, lanes=lanes, max_payload=…, cluster_units=…)`` in Python: a ReferenceLink over an
    :class:`AcceleratorModel` (``max_payload`` default as the top's)."""
    device = AcceleratorModel(config, lanes=lanes, cluster_units=cluster_units)
    if max_payload is None:
        max_payload = max(256, device.sample_bytes + 2, device.infer_bytes + 1)
    return proto.ReferenceLink(device, device.info(max_payload))


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


#: Verilator flags of the virtual board's build: cocotb's runner marks *every* signal public (``--public-flat-rw``),
#: which keeps Verilator from optimising the design (the UP5K accelerator then simulates at ~10k cycles/s on the
#: shared machine); the virtual board only touches ``ByteFeederTop``'s ports, so only the top module stays public.
FAST_BUILD_ARGS = ("--no-public-flat-rw", "--public-depth", "1")


def build_fast(component, *, name: str, params: dict):
    """``component`` (a factory) built for Verilator like ``harness.build`` — one cached build per parameter set in
    ``sim_build/<name>-verilator-fast-<hash>/``, rebuilt only when the Verilog changes — but with only the top
    module's signals visible to cocotb (:data:`FAST_BUILD_ARGS`). Returns a ``harness.Build`` for ``harness.run``."""
    import fcntl  # noqa: PLC0415
    import hashlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    from loco_fpga.sim import harness  # noqa: PLC0415
    from loco_fpga.toolchain import setup_tool_environment  # noqa: PLC0415

    setup_tool_environment()
    dut = component()
    text = harness.to_verilog(dut)
    ports = harness.port_names(dut)
    root = harness.sim_build_root()
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps({"name": name, "params": params, "args": FAST_BUILD_ARGS}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    directory = root / f"{name}-verilator-fast-{key}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    with open(root / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp, source = directory / "built.sha256", directory / "top.v"
        if stamp.exists() and stamp.read_text() == digest and source.exists():
            return harness.Build(name, "verilator", directory, source, ports, params, False, 0.0, True)
        directory.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        source.write_text(text)
        (directory / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True, default=str))
        start = time.monotonic()
        get_runner("verilator").build(sources=[source], hdl_toplevel="top", build_dir=directory, always=True,
                                      build_args=["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE",
                                                  "-Wno-ASCRANGE", "-Wno-CMPCONST", *FAST_BUILD_ARGS],
                                      timescale=("1ns", "1ps"), log_file=directory / "build.log")
        seconds = time.monotonic() - start
        stamp.write_text(digest)
    return harness.Build(name, "verilator", directory, source, ports, params, False, seconds, False)


class VerilatorBoard:
    """A top in Verilator behind a TCP socket, opened by the host driver like a serial port: ``LinkTestTop``
    by default, the accelerator (``hdl.top.AcceleratorTop(config, lanes=…, cluster_units=…)``) when ``config`` is
    given.

        with VerilatorBoard(config=preset("up5k").replace(rule={"name": "np"}), lanes=8) as board:
            host = Host(board.transport())
            host.ping()

    The simulator runs in a cocotb process (bench ``loco_fpga.sim.benches.link.serve``) started from a
    background thread; :meth:`close` closes the socket, which ends the bench, and re-raises a bench failure.
    Builds are cached per top and parameter set (``sim_build/``; a cold Verilator build of the UP5K
    accelerator takes minutes, a cached one a few seconds of Verilog generation).
    """

    def __init__(self, params: dict | None = None, *, config=None, lanes: int = 8, timeout: int = 127,
                 simulator: str = "verilator", start_timeout: float = 1800.0, log_level: str | None = None,
                 cluster_units: int | None = None):
        if config is not None and params is not None:
            raise ValueError("params = {params!r}: LinkTestTop parameters and an accelerator config are exclusive")
        if cluster_units is not None and config is None:
            raise ValueError(f"cluster_units = {cluster_units!r}: only the accelerator (config=…) has cluster blocks")
        self.config, self.lanes, self.timeout, self.cluster_units = config, lanes, timeout, cluster_units
        self.params = {**TOP_PARAMS, **(params or {})} if config is None else \
            {"config": config.to_dict(), "lanes": lanes, "timeout": timeout}
        if cluster_units is not None:       # (absent when default: the cached builds of the default form stay valid)
            self.params["cluster_units"] = cluster_units
        self.simulator, self.start_timeout, self.log_level = simulator, start_timeout, log_level
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._transports: list = []
        self.port: int | None = None
        #: the harness Build (after start): ``build_seconds``, ``cached``
        self.built = None

    def build(self):
        from loco_fpga.sim import harness  # noqa: PLC0415

        if self.config is not None:
            from loco_fpga.hdl.top import AcceleratorTop  # noqa: PLC0415

            config, lanes, timeout, units = self.config, self.lanes, self.timeout, self.cluster_units
            factory = lambda: ByteFeederTop(AcceleratorTop(config, lanes=lanes, timeout=timeout,  # noqa: E731
                                                           cluster_units=units), **FEEDER_PARAMS)
            if self.simulator == "verilator":
                return build_fast(factory, name="accelerator_feeder", params={**self.params, **FEEDER_PARAMS})
            return harness.build(factory, name="accelerator_feeder", params={**self.params, **FEEDER_PARAMS},
                                 simulator=self.simulator)
        from loco_fpga.hdl.link import LinkTestTop  # noqa: PLC0415

        top_params = dict(self.params)
        return harness.build(lambda: ByteFeederTop(LinkTestTop(**top_params), **FEEDER_PARAMS),
                             name="link_test_top_feeder", params={**top_params, **FEEDER_PARAMS},
                             simulator=self.simulator)

    def start(self) -> VerilatorBoard:
        import tempfile  # noqa: PLC0415
        from pathlib import Path  # noqa: PLC0415

        from loco_fpga.sim import harness  # noqa: PLC0415

        built = self.built = self.build()
        if self.log_level is not None:      # the simulator process inherits it (cocotb's own log lines)
            import os  # noqa: PLC0415

            os.environ["COCOTB_LOG_LEVEL"] = self.log_level
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
