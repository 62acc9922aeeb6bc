# amaranth: UnusedElaboratable=no
# (the top builds its link, device and network in __init__ to validate the parameters and publish the sizes;
# a top that is only inspected — sizes, the virtual board's build key — never elaborates them)
"""The accelerator top: the host link (:class:`~.link.Link`) in front of the training network
(:class:`~.network.Network` with an on-chip update), behind the link's :class:`~.link.DeviceSignature`.

* :class:`AcceleratorDevice` — the device side of the protocol for a :class:`~.network.Network`: the config
  registers (LR, the PRNG lane seeds), the weight memories of every layer as protocol memory spaces, INFER and
  TRAIN (docs/protocol.md, "Accelerator top").
* :class:`AcceleratorTop` — :class:`~.link.Link` + :class:`AcceleratorDevice` with ``rx``/``tx`` byte streams
  and ``busy``, built from a :class:`~loco_fpga.config.Config`: ``AcceleratorTop(config, lanes=8)``.

**TRAIN(label, x)** streams the n_0 inputs (``input_bytes`` each, little-endian; values above the rate 1.0,
2^input_frac, are clamped to it) into the network together with the label and the LR register, collects the
outputs y (the clean pass: the prediction is the first index of the maximum, *before* the update), ΔL (dl) and
g, waits until every layer's update engine has written its last word, then replies ``prediction u8, dl i32,
g i32``. **INFER(x)** is the same step with lr = 0: g = 0, so no weight changes, and replies the n_L outputs
(``out_bytes`` each, signed little-endian) and the prediction. Every step (INFER too) draws its PRNG words
(noise, Bernoulli encoder, stochastic rounding lanes), as the golden model's ``FixedRule.step_q`` does with
``lr_q = 0``: the Python twin, ``loco_fpga.sim.virtual.AcceleratorModel``, is built on that function.

**Weights on the wire.** Layer l is memory space l with n_l · C_l · P_l words (P_l = the layer engine's lanes,
a power of two; C_l = its chunks per row): word a is lane a mod P_l of engine word ⌊a / P_l⌋, so row i is
words i·C_l·P_l … and column j of row i is word i·C_l·P_l + j; the columns N_l … C_l·P_l − 1 are padding (the
engines never use them; the host writes 0). A word is ``word_bytes`` little-endian; a write keeps its low
``weight_bits`` bits (two's complement), a read returns them zero-extended.

**Prototypes** (LOCO networks): space 0x80 | l has K·N_l + 1 words — c_k[j] at k·N_l + j (low ``proto_bits``,
two's complement), then the cluster count (a write is clamped to K and makes the layer's cluster block recompute
every r_k and refresh H; the reply waits until it is done). RESET_STATE(device) clears weights, prototypes and
counts.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.boards import protocol as proto
from loco_fpga.qformat import formats as make_formats

from .clusters import PeekKind
from .fixed import at_least
from .layer import BLOCK_RAM, COLLISION_FREE, default_memory
from .link import REQUEST_LAYOUT, DeviceError, DeviceOp, DeviceSignature, Link, LinkTop, RunOp
from .network import UPDATES, Network

__all__ = ["AcceleratorRegister", "RULE_CODES", "AcceleratorDevice", "AcceleratorTop", "REGISTER_RESETS",
           "SUPPORTED_RULES", "BOARD_TIMEOUT", "board_top"]


AcceleratorRegister = proto.AcceleratorRegister
RULE_CODES = proto.RULE_CODES
REGISTER_RESETS = proto.ACCELERATOR_RESETS
#: the rules the accelerator trains on chip (the network's update engines)
SUPPORTED_RULES = tuple(u for u in UPDATES if u)
#: the frame timeout of a board top, in clock cycles (~44 ms at 24 MHz: many UART byte times at any usual rate)
BOARD_TIMEOUT = 1 << 20


def _bytes_for(bits: int) -> int:
    return (bits + 7) // 8


class AcceleratorDevice(wiring.Component):
    """The protocol device of a training :class:`~.network.Network` (see the module docstring).

    Parameters (keyword-only): ``network`` (a :class:`~.network.Network` with ``update`` set; every layer's
    lanes a power of two), ``word_bytes`` (2 or 4, ≥ the weight width).

    Ports: ``host`` (In :class:`~.link.DeviceSignature`), ``busy`` (Out 1).
    The device holds a sample's label and lr on ``network.x`` until the network is idle again (it takes no command
    meanwhile), so a network built with ``held_args`` (:class:`AcceleratorTop`'s) keeps no copies of them.
    Sizes for the link: :attr:`sample_bytes`, :attr:`infer_bytes`, :attr:`train_bytes`, :attr:`n_classes`.
    """

    def __init__(self, *, network: Network, word_bytes: int = 2):
        if not isinstance(network, Network):
            raise TypeError(f"network = {network!r}: expected a loco_fpga.hdl.network.Network")
        if network.update is None:
            raise ValueError("network.update = None: the accelerator needs a network with an on-chip update "
                             f"(one of {', '.join(u for u in UPDATES if u)})")
        for l, e in enumerate(network.engines):
            if e.lanes & (e.lanes - 1):
                raise ValueError(f"lanes = {network.lanes!r}: layer {l} uses {e.lanes} lanes; the accelerator's "
                                 "weight address map needs a power of two in every layer")
        fm = network.formats
        if isinstance(word_bytes, bool) or word_bytes not in (2, 4) or 8 * word_bytes < fm.weight.bits:
            raise ValueError(f"word_bytes = {word_bytes!r}: must be 2 or 4 and hold a {fm.weight.bits}-bit weight")
        for name in ("dl", "g"):
            if getattr(fm, name).bits > 32:
                raise ValueError(f"fixed.{name}_bits = {getattr(fm, name).bits}: TRAIN replies carry it in 32 bits")
        self._net, self._word_bytes = network, word_bytes
        self._input_bytes = _bytes_for(fm.input.bits)
        self._out_bytes = _bytes_for(fm.out.bits)
        super().__init__({"host": In(DeviceSignature()), "busy": Out(1)})

    network = property(lambda self: self._net)
    word_bytes = property(lambda self: self._word_bytes)
    #: bytes per input in a sample (little-endian, unsigned)
    input_bytes = property(lambda self: self._input_bytes)
    #: bytes per output in an INFER reply (little-endian, two's complement)
    out_bytes = property(lambda self: self._out_bytes)
    sample_bytes = property(lambda self: self._net.arch[0] * self._input_bytes)
    infer_bytes = property(lambda self: self._net.arch[-1] * self._out_bytes + 1)
    train_bytes = property(lambda self: 9)       # prediction u8, dl i32, g i32
    n_classes = property(lambda self: self._net.arch[-1])

    def weight_words(self, layer: int) -> int:
        """Words of layer ``layer``'s memory space: n_l · C_l · P_l."""
        e = self._net.engines[layer]
        return e.weight_depth * e.lanes

    def elaborate(self, platform):
        m = Module()
        m.submodules.network = net = self._net
        fm = net.formats
        host = self.host
        A = AcceleratorRegister
        n_layers, n_in, n_out = net.n_layers, net.arch[0], net.arch[-1]
        engines = net.engines
        wbits = fm.weight.bits

        # -- registers -------------------------------------------------------------------------------
        lr = Signal(fm.lr.bits, init=REGISTER_RESETS[A.LR])
        seed_lane = Signal(range(max(2, net.seed_lanes)), init=REGISTER_RESETS[A.SEED_LANE])
        seed = Signal(32, init=REGISTER_RESETS[A.SEED])
        ro = {A.ID: int.from_bytes(proto.MAGIC, "big"), A.SEED_LANES: net.seed_lanes,
              A.RULE: RULE_CODES[net.update], A.LANES: net.lanes, A.LAYERS: n_layers,
              A.CLUSTER_UNITS: net.cluster_blocks[0].units if net.cluster_blocks else 0}

        req = Signal(REQUEST_LAYOUT)         # the request being decoded (registered from ``host.req``)
        resp = host.resp
        m.d.comb += [net.seed.eq(seed), net.seed_lane.eq(seed_lane)]

        # -- memory spaces: layer l weights, word a = (engine word a >> log2 P_l, lane a mod P_l) -------
        words = [self.weight_words(l) for l in range(n_layers)]
        space_ok = Signal()
        addr_ok = Signal()
        eword = Signal(range(max(e.weight_depth for e in engines)))
        elane = Signal(range(max(2, max(e.lanes for e in engines))))
        for l, e in enumerate(engines):
            with m.If(req.space == proto.weights_space(l)):
                m.d.comb += [space_ok.eq(1), addr_ok.eq(~at_least(req.addr, words[l])),
                             eword.eq(req.addr >> (e.lanes.bit_length() - 1)), elane.eq(req.addr & (e.lanes - 1))]
        blocks = net.cluster_blocks if hasattr(net, "cluster_blocks") else []
        proto_words = [net.proto_write_depth(l) for l in range(n_layers)] if blocks else []
        is_proto = Signal()                            # the request's space is a layer's prototypes
        for l, depth in enumerate(proto_words):
            with m.If(req.space == proto.prototypes_space(l)):
                m.d.comb += [space_ok.eq(1), addr_ok.eq(~at_least(req.addr, depth)), is_proto.eq(1)]
        # a memory request's fields, straight from the registered request (it stays until the next IDLE)
        mem_layer = Signal(range(max(2, n_layers)))
        mem_word, mem_lane, mem_data = eword, elane, req.data[:wbits]
        mem_is_write, mem_proto = req.op == DeviceOp.WRITE_MEM, is_proto
        m.d.comb += mem_layer.eq(req.space[:7])
        m.d.comb += [net.rd_layer.eq(mem_layer), net.rd_addr.eq(mem_word)]
        if blocks:
            # a prototype-space word as (what, index, col): found by subtracting N from the address, one prototype
            # per cycle (PROTO_SPLIT; ≤ K cycles), instead of K comparators and subtractors per layer and port
            K = blocks[0].clusters
            dims = [net.proto_dim(l) for l in range(n_layers)]   # N of each layer (K·N prototype words + count)
            mem_at = Signal(net.at_layout)
            rem = Signal(range(max(proto_words)))              # what is left of the address
            m.d.comb += [net.pr_layer.eq(mem_layer), net.pr_at.eq(mem_at), net.pw_at.eq(mem_at)]
        lanes_of_word = [net.rd_data[k].as_unsigned() for k in range(net.word_layout.length)]

        # -- a run: sample bytes → x transfers; outputs → result bytes --------------------------------
        op = Signal(RunOp)
        label = Signal(range(n_out))
        in_index = Signal(range(n_in + 1))
        in_byte = Signal(range(max(2, self._input_bytes)))
        in_value = Signal(8 * self._input_bytes)
        x_valid = Signal()
        x_value = Signal(fm.input.bits)
        one = 1 << (fm.input.bits - 1)                       # rate 1.0 (the input format is u(frac + 1, frac))
        assembled = Cat(in_value[8:], host.sample.payload.data)     # little-endian: shifted in from the top
        out_shape = signed(8 * self._out_bytes)
        if not net.micro_loss:
            # the outputs y_k of the clean pass, for the INFER reply: a small memory (block RAM, not n_L registers).
            # Collision-free: written only in OUTPUTS, its read data used only in EMIT (another FSM state)
            m.submodules.outputs = ymem = memory.Memory(shape=out_shape, depth=n_out, init=[],
                                                        attrs=BLOCK_RAM | COLLISION_FREE)
            y_rd, y_wr = ymem.read_port(domain="sync"), ymem.write_port()
        y_word = Signal(range(n_out))                      # EMIT: the output whose bytes go out
        y_byte = Signal(range(self._out_bytes))
        y_done = Signal()                                  # every output sent: the prediction is next
        out_k = Signal(range(n_out + 1))
        best = Signal(out_shape)
        pred = Signal(8)
        if net.micro_loss:
            # the micro block's data memory holds y_k of the last sample (it is idle until the next sample), and its
            # program found the prediction: no copy here, no comparator
            y_data, emitting = net.yr_data[:out_shape.width], Signal()
            m.d.comb += [net.yr_index.eq(y_word), net.yr_en.eq(emitting), pred.eq(net.pred)]
        else:
            y_data = y_rd.data
        # the reply's dl and g: the network's ``o`` keeps the last transfer's payload until the next sample's first
        # output (the loss unit's output registers), and no sample starts before the reply is sent
        dl = Signal(signed(32))
        g = Signal(signed(32))
        m.d.comb += [dl.eq(net.o.payload.dl), g.eq(net.o.payload.g)]
        byte_i = Signal(range(max(self.infer_bytes, self.train_bytes) + 1))
        train_bytes = Cat(pred, dl, g)
        clr_layer = Signal(range(max(2, n_layers)))
        clr_word = Signal.like(eword)
        last_word = Array(Const(e.weight_depth - 1, eword.shape()) for e in engines)

        # the network's x stream: one rate per transfer, label and lr with every one (taken from the last)
        m.d.comb += [net.x.valid.eq(x_valid), net.x.payload.x.eq(x_value), net.x.payload.label.eq(label),
                     net.x.payload.lr.eq(Mux(op == RunOp.TRAIN, lr, 0)), net.o.ready.eq(1)]
        for l in range(n_layers - 1):
            m.d.comb += net.counts[l].ready.eq(1)          # hidden counts are not reported: drained
        with m.If(net.x.valid & net.x.ready):
            m.d.sync += x_valid.eq(0)

        # micro cluster blocks with SPRAM data write it after a reset (their boot run; the network is busy): no
        # command is taken before they are done (a link at UART speed cannot even deliver one that early)
        take = Signal(init=1)
        if any(getattr(b, "boot_cycles", 0) for b in net.cluster_blocks):
            m.d.comb += take.eq(~net.busy)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [host.req.ready.eq(take), host.run.ready.eq(take)]
                with m.If(host.run.valid & take):
                    m.d.sync += [op.eq(host.run.payload.op), label.eq(host.run.payload.label), in_index.eq(0),
                                 in_byte.eq(0), out_k.eq(0)]
                    if not net.micro_loss:
                        m.d.sync += pred.eq(0)
                    m.next = "SAMPLE"
                with m.Elif(host.req.valid & take):
                    m.d.sync += req.eq(host.req.payload)
                    m.next = "DECODE"
            # the request was registered in IDLE: the link's dispatcher and this decode are not one combinational
            # path (it was the UP5K build's critical path: link state → request multiplexers → decode → enables)
            with m.State("DECODE"):
                m.d.sync += [resp.payload.data.eq(0), resp.payload.error.eq(DeviceError.NONE)]
                m.next = "RESPOND"
                with m.Switch(req.op):
                    with m.Case(DeviceOp.READ_REG):
                        with m.Switch(req.addr):
                            for addr, value in ro.items():
                                with m.Case(addr):
                                    m.d.sync += resp.payload.data.eq(value)
                            with m.Case(A.STATUS):
                                m.d.sync += resp.payload.data.eq(net.busy)
                            with m.Case(A.LR):
                                m.d.sync += resp.payload.data.eq(lr)
                            with m.Case(A.SEED_LANE):
                                m.d.sync += resp.payload.data.eq(seed_lane)
                            with m.Case(A.SEED):
                                m.d.sync += resp.payload.data.eq(seed)
                            with m.Default():
                                m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                    with m.Case(DeviceOp.WRITE_REG):
                        with m.Switch(req.addr):
                            with m.Case(A.LR):
                                with m.If((req.data >> fm.lr.bits).any()):
                                    m.d.sync += resp.payload.error.eq(DeviceError.VALUE)
                                with m.Else():
                                    m.d.sync += lr.eq(req.data)
                            with m.Case(A.SEED_LANE):
                                with m.If(at_least(req.data, net.seed_lanes)):
                                    m.d.sync += resp.payload.error.eq(DeviceError.VALUE)
                                with m.Else():
                                    m.d.sync += seed_lane.eq(req.data)
                            with m.Case(A.SEED):
                                with m.If(req.data == 0):         # a zero state is a fixed point of xorshift
                                    m.d.sync += resp.payload.error.eq(DeviceError.VALUE)
                                with m.Else():
                                    m.d.sync += seed.eq(req.data)
                                    m.next = "SEED_LOAD"
                            with m.Default():                     # read-only or absent
                                m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                    with m.Case(DeviceOp.PROBE):
                        m.d.sync += resp.payload.error.eq(Mux(space_ok & addr_ok, DeviceError.NONE,
                                                              DeviceError.ADDRESS))
                    with m.Case(DeviceOp.READ_MEM, DeviceOp.WRITE_MEM):
                        with m.If(space_ok & addr_ok):
                            m.next = "MEM_ADDR"
                            if blocks:
                                with m.If(is_proto):
                                    m.d.sync += [mem_at.what.eq(PeekKind.PROTO), mem_at.index.eq(0), rem.eq(req.addr)]
                                    m.next = "PROTO_SPLIT"
                        with m.Else():
                            m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
                    with m.Case(DeviceOp.RESET):
                        m.d.sync += [lr.eq(REGISTER_RESETS[A.LR]), seed_lane.eq(REGISTER_RESETS[A.SEED_LANE]),
                                     seed.eq(REGISTER_RESETS[A.SEED]), clr_layer.eq(0), clr_word.eq(0)]
                        m.next = "CLEAR"
                    with m.Default():
                        m.d.sync += resp.payload.error.eq(DeviceError.ADDRESS)
            with m.State("SEED_LOAD"):
                m.d.comb += net.seed_en.eq(1)
                m.next = "RESPOND"
            if blocks:
                with m.State("PROTO_SPLIT"):           # rem ≥ N: one prototype further (past the last: the count)
                    diff = Signal(len(rem) + 1)
                    m.d.comb += diff.eq(rem - Array(Const(d, len(rem)) for d in dims)[mem_layer])
                    with m.If(diff[-1]):
                        m.d.sync += mem_at.col.eq(rem)
                        m.next = "MEM_ADDR"
                    with m.Else():
                        m.d.sync += [rem.eq(diff), mem_at.index.eq(mem_at.index + 1)]
                        with m.If(mem_at.index == K - 1):   # addr = K·N (addr_ok: nothing lies beyond)
                            m.d.sync += [mem_at.what.eq(PeekKind.COUNT), mem_at.index.eq(0), mem_at.col.eq(0)]
                            m.next = "MEM_ADDR"
            with m.State("MEM_ADDR"):                  # rd_layer/rd_addr held; the word arrives next cycle
                m.next = "MEM_DATA"
            with m.State("MEM_DATA"):
                m.d.sync += resp.payload.data.eq(Array(lanes_of_word)[mem_lane][:wbits])
                if blocks:
                    with m.If(mem_proto):
                        m.d.sync += resp.payload.data.eq(net.pr_data[:fm.proto.bits])
                    with m.If(mem_is_write & mem_proto):
                        m.next = "PROTO_WRITE"
                with m.If(mem_is_write & ~mem_proto):
                    m.next = "MEM_WRITE"
                with m.Elif(~mem_is_write):
                    m.next = "RESPOND"
            if blocks:
                # prototype word c_k[j] (low proto_bits, two's complement) or the count (clamped to K); a count
                # write makes the layer's cluster block recompute r_k and refresh H: wait until it is idle again
                count_value = Mux(mem_data > K, K, mem_data)
                with m.State("PROTO_WRITE"):
                    m.d.comb += [net.pw_en.eq(1), net.pw_layer.eq(mem_layer),
                                 net.pw_data.eq(Mux(mem_at.what == PeekKind.COUNT, count_value,
                                                    mem_data[:fm.proto.bits].as_signed()))]
                    m.d.sync += resp.payload.data.eq(0)
                    m.next = "PROTO_SETTLE"
                with m.State("PROTO_SETTLE"):
                    m.next = "PROTO_WAIT"
                with m.State("PROTO_WAIT"):
                    with m.If(~net.busy):
                        m.next = "RESPOND"
            with m.State("MEM_WRITE"):                 # read-modify-write of the engine word, one lane changed
                m.d.comb += [net.w_en.eq(1), net.w_layer.eq(mem_layer), net.w_addr.eq(mem_word)]
                for k in range(net.word_layout.length):
                    m.d.comb += net.w_data[k].eq(Mux(mem_lane == k, mem_data, net.rd_data[k]))
                m.d.sync += resp.payload.data.eq(0)
                m.next = "RESPOND"
            with m.State("CLEAR"):                     # every engine word of every layer ← 0
                m.d.comb += [net.w_en.eq(1), net.w_layer.eq(clr_layer), net.w_addr.eq(clr_word), net.w_data.eq(0)]
                m.d.sync += clr_word.eq(clr_word + 1)
                with m.If(clr_word == last_word[clr_layer]):
                    m.d.sync += [clr_word.eq(0), clr_layer.eq(clr_layer + 1)]
                    with m.If(clr_layer == n_layers - 1):
                        m.d.sync += clr_layer.eq(0)
                        if blocks:
                            m.d.sync += [mem_at.what.eq(PeekKind.PROTO), mem_at.index.eq(0), mem_at.col.eq(0)]
                        m.next = "CLEAR_PROTOS" if blocks else "RESPOND"
            if blocks:
                with m.State("CLEAR_PROTOS"):          # every prototype word of every layer ← 0, then count ← 0
                    m.d.comb += [net.pw_en.eq(1), net.pw_layer.eq(clr_layer), net.pw_data.eq(0)]
                    with m.If(mem_at.what == PeekKind.COUNT):          # the layer's count: the next layer
                        m.d.sync += [mem_at.what.eq(PeekKind.PROTO), clr_layer.eq(clr_layer + 1)]
                        with m.If(clr_layer == n_layers - 1):
                            m.next = "PROTO_SETTLE"
                        with m.Else():
                            # once the block has taken the count (its reload runs; a block shared with the next
                            # layer takes no load meanwhile)
                            m.next = "CLEAR_SETTLE"
                    with m.Elif(mem_at.col == Array(Const(d - 1, len(mem_at.col)) for d in dims)[clr_layer]):
                        m.d.sync += [mem_at.col.eq(0), mem_at.index.eq(mem_at.index + 1)]
                        with m.If(mem_at.index == K - 1):
                            m.d.sync += [mem_at.what.eq(PeekKind.COUNT), mem_at.index.eq(0)]
                    with m.Else():
                        m.d.sync += mem_at.col.eq(mem_at.col + 1)
                with m.State("CLEAR_SETTLE"):
                    with m.If(~net.busy):
                        m.next = "CLEAR_PROTOS"
            with m.State("RESPOND"):
                m.d.comb += resp.valid.eq(1)
                with m.If(resp.ready):
                    m.next = "IDLE"

            with m.State("SAMPLE"):                    # bytes → one rate per x transfer (clamped to 1.0)
                m.d.comb += host.sample.ready.eq(~x_valid)
                with m.If(host.sample.valid & ~x_valid):
                    m.d.sync += [in_value.eq(assembled), in_byte.eq(in_byte + 1)]
                    with m.If(in_byte == self._input_bytes - 1):
                        m.d.sync += [in_byte.eq(0), in_index.eq(in_index + 1), x_valid.eq(1),
                                     x_value.eq(Mux(at_least(assembled, one + 1), one, assembled))]
                        with m.If(in_index == n_in - 1):
                            m.next = "OUTPUTS"
            with m.State("OUTPUTS"):                   # y_k (clean pass) in order; the last one carries dl, g
                with m.If(net.o.valid):
                    y = net.o.payload.y
                    if not net.micro_loss:
                        m.d.comb += [y_wr.addr.eq(out_k), y_wr.data.eq(y), y_wr.en.eq(1)]
                    m.d.sync += out_k.eq(out_k + 1)
                    if not net.micro_loss:
                        with m.If((out_k == 0) | (y > best)):
                            m.d.sync += [best.eq(y), pred.eq(out_k)]
                    with m.If(net.o.payload.last):
                        m.next = "UPDATE"
            with m.State("UPDATE"):                    # every layer's last weight write done
                with m.If(~net.busy):
                    m.d.sync += [byte_i.eq(0), y_word.eq(0), y_byte.eq(0), y_done.eq(0)]
                    m.next = "EMIT_READ"
            with m.State("EMIT_READ"):                 # y_word is addressed: its value arrives next cycle
                m.next = "EMIT"
            with m.State("EMIT"):
                n_bytes = Mux(op == RunOp.TRAIN, self.train_bytes, self.infer_bytes)
                last = byte_i == n_bytes - 1
                value = Mux(op == RunOp.TRAIN, train_bytes.word_select(byte_i, 8),     # INFER: y bytes, then pred
                            Mux(y_done, pred, y_data.as_unsigned().word_select(y_byte, 8)))
                m.d.comb += [host.result.valid.eq(1), host.result.payload.data.eq(value),
                             host.result.payload.last.eq(last)]
                with m.If(host.result.ready):
                    m.d.sync += [byte_i.eq(byte_i + 1), y_byte.eq(y_byte + 1)]
                    with m.If(y_byte == self._out_bytes - 1):
                        m.d.sync += y_byte.eq(0)
                        with m.If(y_word == n_out - 1):
                            m.d.sync += y_done.eq(1)
                        with m.Elif(op == RunOp.INFER):
                            m.d.sync += y_word.eq(y_word + 1)
                            m.next = "EMIT_READ"
                    with m.If(last):
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | net.busy)
        if net.micro_loss:
            m.d.comb += emitting.eq(fsm.ongoing("EMIT_READ") | fsm.ongoing("EMIT"))
        else:
            m.d.comb += [y_rd.addr.eq(y_word), y_rd.en.eq(1)]
        return m


class AcceleratorTop(LinkTop):
    """:class:`~.link.Link` + :class:`AcceleratorDevice` over ``Network.from_config(config, lanes=…,
    update=config.rule.name)``: the whole accelerator on ``rx``/``tx`` byte streams.

    Parameters: ``config`` (:class:`~loco_fpga.config.Config`; its rule must be one the gateware updates,
    :data:`~.network.UPDATES`), keyword-only ``lanes`` (synapse lanes per layer engine; a power of two in every
    layer), ``timeout`` (idle cycles that end a truncated frame), ``max_payload`` (default: room for a sample
    and the longest reply, at least 256), ``event_depth``, ``memory`` (the layer engines' memory hook),
    ``cluster_units`` (LOCO: parallel units of every cluster block, 1 … K, default K; a build choice like ``lanes``:
    it changes cycles and area, never a result — docs/hdl_learning.md), ``cluster_share`` (LOCO: layers of equal
    width per cluster block, default 1, ``Network(cluster_share=…)``; likewise a build choice), ``cluster_impl``
    (LOCO: ``"parallel"`` cluster blocks or the ``"micro"``coded one, ``Network(cluster_impl=…)``; a build choice
    too), ``shared_update`` (NP: one update engine
    for every layer instead of one per layer, ``Network(shared_update=True)``; also a build choice that changes
    cycles and area, never a result), ``sparse_input`` (layer 0 reads only the weights of the input chunks that
    spiked, ``Network(sparse_input=True)``: data-dependent cycles, the same results), ``hold_spikes`` (the engines
    work on their producers' spike vectors, ``Network(hold_spikes=True)``: fewer flip-flops, steps that no longer
    overlap, the same results), ``micro_loss`` (LOCO on micro blocks: the first block's program computes dl and g
    instead of a loss unit, ``Network(micro_loss=True)``: fewer logic cells, the update ≈ 4,000 cycles later on the
    UP5K, the same results), ``readout`` (with ``micro_loss`` and one micro block for every layer: that block also
    computes the output layer from the last hidden layer's counts, ``Network(readout=True)``: no output layer engine,
    the same results).
    """

    def __init__(self, config, *, lanes: int, timeout: int = 1024, max_payload: int | None = None,
                 event_depth: int = 4, memory=default_memory, cluster_units: int | None = None,
                 cluster_share: int = 1, cluster_impl: str = "parallel", shared_update: bool = False,
                 sparse_input: bool = False, hold_spikes: bool = False, micro_loss: bool = False,
                 readout: bool = False):
        rule = config.rule.name
        if rule not in UPDATES or rule is None:
            raise ValueError(f"rule.name = {rule!r}: the gateware updates {', '.join(u for u in UPDATES if u)} "
                             "only (train another rule in the golden model)")
        self._config = config
        self._network = Network.from_config(config, lanes=lanes, memory=memory, update=rule,
                                            cluster_units=cluster_units, cluster_share=cluster_share,
                                            cluster_impl=cluster_impl, shared_update=shared_update,
                                            sparse_input=sparse_input, hold_spikes=hold_spikes,
                                            micro_loss=micro_loss, held_args=True, readout=readout)
        fm = make_formats(config)
        self._device = AcceleratorDevice(network=self._network, word_bytes=2 if fm.weight.bits <= 16 else 4)
        d = self._device
        if max_payload is None:
            max_payload = max(256, d.sample_bytes + 2, d.infer_bytes + 1)
        self._link = Link(max_payload=max_payload, timeout=timeout, word_bytes=d.word_bytes,
                          sample_bytes=d.sample_bytes, infer_bytes=d.infer_bytes, train_bytes=d.train_bytes,
                          n_classes=d.n_classes, event_depth=event_depth)
        super().__init__(device_busy=True)

    config = property(lambda self: self._config)
    network = property(lambda self: self._network)


def board_top(config=None, *, lanes: int = 1, memory=default_memory, cluster_units: int | None = None,
              cluster_share: int = 1, cluster_impl: str = "parallel", shared_update: bool = False,
              sparse_input: bool = False, hold_spikes: bool = False, micro_loss: bool = False,
              readout: bool = False) -> AcceleratorTop:
    """The accelerator a board build puts behind its UART (``boards/tops.py`` ``default_inner``): ``config``
    (default: the ``up5k`` preset; its rule becomes ``np`` when the gateware does not update it) at ``lanes``
    (default 1, the configuration whose routed Fmax is measured), with :data:`BOARD_TIMEOUT` and the board's
    memory hook (``memory``; the iCEBreaker puts the weights into SPRAM, ``boards/spram.py``), LOCO's
    ``cluster_units`` (default K), ``cluster_share`` (default 1) and ``cluster_impl`` (default parallel), ``shared_update`` (NP without the delta readout: one update engine for all
    layers; the iCEBreaker's, for area) and ``sparse_input`` (layer 0 skips the weights of silent inputs; the
    iCEBreaker's, for samples per second), ``hold_spikes`` (no copies of the spike vectors), ``micro_loss`` (the
    loss on the micro block) and ``readout`` (the output layer on it too; all three the iCEBreaker's LOCO build's,
    for area)."""
    from loco_fpga.config import preset  # noqa: PLC0415

    config = preset("up5k") if config is None else config
    if config.rule.name not in SUPPORTED_RULES:
        config = config.replace(rule={"name": "np"})
    return AcceleratorTop(config, lanes=lanes, timeout=BOARD_TIMEOUT, memory=memory, cluster_units=cluster_units,
                          cluster_share=cluster_share, cluster_impl=cluster_impl, shared_update=shared_update,
                          sparse_input=sparse_input, hold_spikes=hold_spikes, micro_loss=micro_loss,
                          readout=readout)
