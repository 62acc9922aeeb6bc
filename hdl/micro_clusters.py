# amaranth: UnusedElaboratable=no
"""LOCO's cluster work of one or more layers on the microcoded datapath — with the ports of
:class:`~loco_fpga.hdl.clusters.ClusterBlock`, so it can stand where one stands.

Inside: a :class:`~loco_fpga.hdl.sequencer.Sequencer` running the :class:`~loco_fpga.hdl.loco_program.LocoProgram`
of the layers it serves (``dims``: their input widths, bias entry included; banks of different widths are
allowed, unlike a banked ``ClusterBlock``). Everything goes through the sequencer's host port into its data
memory while the program is not running:

1. ``RECV``: per transfer on ``i`` (the first one's ``bank`` is the sample's; ``dims[bank]`` transfers, ``last``
   is not looked at) u_j + 2^16 v_j is written to U[j] in the transfer's cycle (one transfer a cycle; the program
   unpacks the pairs);
2. ``RUN``: the program's ``sample`` entry with Z = the bank's base (its cycles: :meth:`Sequencer.cycles` of the run's per-op counts);
3. ``OUT``: k* is read, then v⊥_j from VP[j], one word every two cycles on ``o`` (``o.valid`` waits for
   nothing but the read), with k*, ``last`` on the bias entry and the sample's ``bank``;
4. ``UPDATE``: the program's ``update`` entry (the prototype, r_k, the refresh when due), then ``RECV``.

Timing: :meth:`output_cycles`, :meth:`tail_cycles`, :meth:`load_cycles`, :meth:`sample_cycles` — exact, from the
program's per-path instruction counts (``LocoProgram.sample_counts`` …) and the sequencer's cycles per op.

``memory``: a memory hook for the sequencer's data memory (e.g. the UP5K's SPRAM, ``boards/spram.py``), which then
has no initial contents: after a reset the program's ``init`` entry writes them (:attr:`boot_cycles`; ``idle``
is low until then). Default: block RAM with the initial contents.

``loss_outputs`` = n_L (the network's ``micro_loss``): the block also computes the loss and the prediction. With
the block in ``RECV`` after the update of its last bank (banks take turns in order), output k on ``loss_i`` writes
y_k and, in the next cycle (which takes the transfer), ỹ_k into the data memory; after the last one LR
(``loss_lr``) and the label (``loss_label``) are written and the program's ``loss`` entry run; then ``loss_o``
offers dl, g and the prediction (the first k of the largest y_k) — fields of the sequencer's accumulator, which
holds them until the block's next run (:meth:`loss_cycles`). ``out_en``/``out_index`` (while idle, latency 1):
y_k of the last loss on ``peek_data`` (the accelerator's INFER reply reads y there).

``readout`` (with ``loss_outputs``; the network's ``readout``): the block also computes the output layer. Its last bank
is the output layer's, whose pairs are the last hidden layer's counts; right after that bank's update (no ``loss_i``)
the block writes the output layer's noise word (``signs``), LR and the label and runs ``loss``, whose first part
computes y_k and ỹ_k from those counts and the output weights, read through the sequencer's window (``win_addr``,
``win_en``; ``win_data`` a cycle later — the network's :class:`~loco_fpga.hdl.readout.OutputWeights`), into LY;
``out_index`` then names an LY word (y_k at 2k, ỹ_k at 2k + 1). Exact where no per-step sum of the output layer can
saturate (checked: a ValueError quotes the bound).

``peek`` (while ``idle``, latency 1) reads the prototypes, H, r_k and the count from the data memory (what
:class:`~loco_fpga.hdl.clusters.PeekKind` names, of ``peek.bank``). ``load_en``/``load`` (taken only while
``idle``): ``count`` = 0 writes c_index[col]; ``count`` = 1 writes the count and runs ``reload`` (r_k of
the active prototypes, the refresh), ``idle`` low until it is done.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.config import Config
from loco_fpga.qformat import Formats

from .clusters import PeekKind
from .fixed import shape
from .layer import row_sum_bound
from .loco_program import LocoProgram
from .microcode import ADDR_BITS, DATA_BITS
from .sequencer import Sequencer

__all__ = ["MicroClusterBlock"]


class MicroClusterBlock(wiring.Component):
    """The cluster work of the layers of input widths ``dims`` (one bank each); ``formats``, ``clusters``,
    ``refresh``, ``ridge``, ``norm_guard``, ``recip_extra`` as ``ClusterBlock``'s (:meth:`from_config`);
    ``digit``: the sequencer's datapath width."""

    def __init__(self, *, formats, dims, clusters: int, refresh: int, ridge: int, norm_guard: int, recip_extra: int,
                 digit: int = 16, memory=None, loss_outputs: int = 0, readout: bool = False):
        try:
            if not isinstance(formats, Formats):
                raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
            if formats.uhat.bits != formats.proto.bits or formats.uhat.frac != formats.proto.frac:
                raise ValueError(f"formats.uhat = {formats.uhat.label()}: must equal formats.proto "
                                 f"({formats.proto.label()}); û is copied into a prototype")
            self.program = LocoProgram(formats=formats, dims=dims, clusters=clusters, refresh=refresh, ridge=ridge,
                                       norm_guard=norm_guard, recip_extra=recip_extra, loss_outputs=loss_outputs,
                                       readout=readout)
            prog = self.program
            if readout:
                # the premise of the readout (LocoProgram._readout): no per-step sum of the output layer saturates
                bound = row_sum_bound(prog.dims[-1], formats)
                if bound > formats.acc.max:
                    raise ValueError(f"readout = True: the output layer's per-step sums reach {bound}, beyond acc max "
                                     f"{formats.acc.max} (saturating sums are not the sum of products)")
                if loss_outputs > 32:
                    raise ValueError(f"readout = True: {loss_outputs} outputs; their noise signs are one 32-bit word")
            if memory is None:
                self.sequencer = Sequencer(prog.code, depth=prog.depth, widths=prog.widths,
                                           init=prog.initial_memory(), digit=digit, window=readout)
            else:
                self.sequencer = Sequencer(prog.code, depth=prog.depth, widths=prog.widths, digit=digit,
                                           memory=memory, boot=prog.init_address, window=readout)
        except (TypeError, ValueError):
            self._MustUse__silence = True       # a block that failed to construct is not an unused elaboratable
            raise
        fm = prog.fmts
        self._dims, self._k = prog.dims, prog.K
        self._banks = len(prog.dims)
        bank_field = {"bank": range(self._banks)} if self._banks > 1 else {}
        dmax, K = max(self._dims), self._k
        self._input_layout = data.StructLayout({"u": shape(fm.rate), "v": shape(fm.rate), "last": 1} | bank_field)
        self._output_layout = data.StructLayout({"v": shape(fm.vperp), "k_star": range(K), "last": 1}
                                                | bank_field)
        self._peek_layout = data.StructLayout({"what": PeekKind, "index": range(K), "col": range(max(dmax, K))}
                                              | bank_field)
        self._load_layout = data.StructLayout({"count": 1, "index": range(K), "col": range(dmax),
                                               "value": signed(max(fm.proto.bits, K.bit_length() + 1))}
                                              | bank_field)
        members = {"i": In(stream.Signature(self._input_layout)),
                   "o": Out(stream.Signature(self._output_layout)),
                   "idle": Out(1),
                   "peek": In(self._peek_layout), "peek_data": Out(signed(DATA_BITS)),
                   "load_en": In(1), "load": In(self._load_layout)}
        self._n_loss, self._readout = loss_outputs, readout
        if loss_outputs:
            self._loss_input_layout = data.StructLayout({"y": shape(fm.out), "y_noisy": shape(fm.out)})
            self._loss_output_layout = data.StructLayout({"dl": shape(fm.dl), "g": shape(fm.g),
                                                          "pred": range(loss_outputs)})
            members |= {"loss_label": In(range(loss_outputs)), "loss_lr": In(shape(fm.lr)),
                        "loss_o": Out(stream.Signature(self._loss_output_layout)),
                        "out_en": In(1), "out_index": In(range(2 * loss_outputs if readout else loss_outputs))}
            if readout:
                members |= {"win_addr": Out(ADDR_BITS - 1), "win_en": Out(1), "win_data": In(shape(fm.weight)),
                            "signs": In(32)}
            else:
                members["loss_i"] = In(stream.Signature(self._loss_input_layout))
        super().__init__(members)

    @classmethod
    def from_config(cls, config: Config, dims, *, digit: int = 16, memory=None,
                    loss_outputs: int = 0) -> "MicroClusterBlock":
        p = LocoProgram.from_config(config, dims)
        return cls(formats=p.fmts, dims=p.dims, clusters=p.K, refresh=p.refresh_every, ridge=p.ridge,
                   norm_guard=p.ng, recip_extra=p.re, digit=digit, memory=memory, loss_outputs=loss_outputs)

    dims = property(lambda self: self._dims)
    #: the input width when every bank has the same (what a ``Network`` group has)
    dim = property(lambda self: self._dims[0] if len(set(self._dims)) == 1 else None)
    refresh = property(lambda self: self.program.refresh_every)
    #: one multiplier does the work of ``ClusterBlock``'s parallel units
    units = property(lambda self: 1)
    load_layout = property(lambda self: self._load_layout)
    peek_layout = property(lambda self: self._peek_layout)
    clusters = property(lambda self: self._k)
    banks = property(lambda self: self._banks)
    input_layout = property(lambda self: self._input_layout)
    output_layout = property(lambda self: self._output_layout)
    peek_latency = property(lambda self: 1)
    #: n_L when the block also computes the loss (``loss_*`` ports), else 0
    loss_outputs = property(lambda self: self._n_loss)
    #: whether the loss entry computes the outputs itself (``readout``)
    readout = property(lambda self: self._readout)

    def loss_cycles(self) -> int:
        """Cycles from the cycle of the last ``loss_i`` transfer to the first cycle ``loss_o`` is valid (the block
        idle, in RECV, when the first output arrives; each output takes 2 cycles: its two words are written one a
        cycle; then LR and the label are written and the program run). ``readout``: from the last cycle of the last
        bank's update (:meth:`tail_cycles`) — SG, LR and the label are written, then the program runs."""
        return (4 if self._readout else 3) + self.sequencer.cycles(self.program.loss_counts()) + 2

    # -- timing (exact: the program's instructions depend only on the bank, the count and the path) -----------
    def output_cycles(self, count: int, new: bool, bank: int = 0) -> int:
        """Cycles from a sample's last ``i`` transfer to its last ``o`` transfer (``o`` always ready); ``count``:
        active clusters after the selection, ``new``: the sample opened one (as ``ClusterBlock``'s)."""
        run = self.sequencer.cycles(self.program.sample_counts(bank, count - 1 if new else count, new))
        return run + 2 * self._dims[bank] + 2

    def tail_cycles(self, count: int, refreshed: bool, bank: int = 0) -> int:
        """Cycles from a sample's last ``o`` transfer to the last cycle before ``idle`` is high again (the
        program's update; ``refreshed``: with the refresh)."""
        return self.sequencer.cycles(self.program.update_counts(bank, count, refreshed)) + 2

    @property
    def boot_cycles(self) -> int:
        """Cycles from a reset to the first cycle ``idle`` is high: 0 with block-RAM data (initial contents), else
        the ``init`` entry's run."""
        if self.sequencer.boot is None:
            return 0
        return self.sequencer.cycles(self.program.init_counts()) + 2

    def load_cycles(self, count: int, bank: int = 0) -> int:
        """Cycles from the ``load`` of the count to the cycle ``idle`` is high again."""
        return self.sequencer.cycles(self.program.reload_counts(bank, count)) + 3

    def sample_cycles(self, count: int, new: bool, refreshed: bool, bank: int = 0) -> int:
        """Cycles from accepting a sample's first (u, v) to accepting the next sample's first, with ``i`` always
        valid and ``o`` always ready: dim + :meth:`output_cycles` + :meth:`tail_cycles`."""
        return self._dims[bank] + self.output_cycles(count, new, bank) + self.tail_cycles(count, refreshed, bank)

    def _address(self, bank, what, index, col):
        """Data-memory address of a peek/load target of ``bank`` (signals, or ``what`` a :class:`PeekKind`): the
        bank's base + an offset that is the same in every bank (one row stride for all of them)."""
        prog = self.program
        rel = {name: int(v) for name, v in prog.rel.items()}
        offsets = [rel["proto"] + index * prog.S + col,       # PROTO
                   rel["h"] + index * prog.K + col,           # H
                   rel["rk"] + index * prog.S,                # RECIP
                   rel["count"]]                              # COUNT
        offset = offsets[what.value] if isinstance(what, PeekKind) else Array(offsets)[what]
        bases = prog.bank_base
        return (bases[0] if self._banks == 1 else Array(bases)[bank]) + offset

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = seq = self.sequencer
        prog = self.program
        multi = self._banks > 1

        bank = Signal(range(self._banks))
        j = Signal(range(max(self._dims) + 1))
        k_star = Signal(range(self._k))
        last_j = Array([d - 1 for d in self._dims])[bank]
        in_bank = self.i.payload.bank if multi else 0
        first_last = Array([d - 1 for d in self._dims])[in_bank]     # the sample's bank, at its first transfer
        peek_bank = self.peek.bank if multi else 0
        load_bank = self.load.bank if multi else 0

        def start(entries):                     # the program from the bank's entry of ``entries``, Z = its base
            m.d.comb += [seq.entry.eq(Array(entries)[bank]), seq.zbase.eq(Array(prog.bank_base)[bank]),
                         seq.start.eq(1)]

        n_loss, readout = self._n_loss, self._readout
        # the bank whose sample comes next (banks take turns in order): the loss waits for every bank's update
        turn = Signal(range(self._banks)) if multi and not readout else 0
        if readout:
            # the loss follows the last bank's update at once (FINISH); the output weights come through the window
            loss_next = Signal()
            m.d.comb += [self.win_addr.eq(seq.win_addr), self.win_en.eq(seq.win_en), seq.win_data.eq(self.win_data)]
        if n_loss and not readout:
            # the loss words: y_k (RECV), ỹ_k (LOSS_NOISY)
            k = Signal(range(n_loss))
            lp = self.loss_i.payload
            fsm_noisy = Signal()
            loss_word = Mux(fsm_noisy, lp.y_noisy, lp.y)
        # one address computation for the host's peeks and prototype loads (never in the same cycle: a load is a
        # write, a peek's word is read in the cycles the host names it)
        load_at = self.load_en & ~self.load.count
        target = self._address(Mux(load_at, load_bank, peek_bank), Mux(load_at, PeekKind.PROTO, self.peek.what),
                               Mux(load_at, self.load.index, self.peek.index), Mux(load_at, self.load.col, self.peek.col))
        m.d.comb += [self.peek_data.eq(seq.host_rdata), seq.host_addr.eq(target)]
        if n_loss:                              # (while idle) the last loss's y_k (readout: LY word) on peek_data
            with m.If(self.out_en):
                m.d.comb += seq.host_addr.eq(prog.LY + (self.out_index if readout else 2 * self.out_index))

        with m.FSM(init="RECV" if seq.boot is None else "BOOT") as fsm:
            with m.State("BOOT"):               # (with a memory hook) the sequencer's boot run writes the data
                with m.If(~seq.busy):
                    m.next = "RECV"
            with m.State("RECV"):
                with m.If(self.i.valid):
                    with m.If(j == 0):
                        m.d.sync += bank.eq(in_bank)
                    m.d.comb += [seq.host_addr.eq(prog.U + j),
                                 seq.host_wdata.eq(self.i.payload.u | (self.i.payload.v << 16)),
                                 seq.host_we.eq(1)]
                    with m.If(j == Mux(j == 0, first_last, last_j)):
                        m.d.sync += j.eq(0)
                        m.next = "GO"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                if n_loss and not readout:
                    with m.Elif((j == 0) & (turn == 0) & self.loss_i.valid):  # y_k (ỹ_k: LOSS_NOISY)
                        m.d.comb += [seq.host_addr.eq(prog.LY + 2 * k), seq.host_wdata.eq(loss_word),
                                     seq.host_we.eq(1)]
                        m.next = "LOSS_NOISY"
                with m.Elif((j == 0) & self.load_en):
                    with m.If(self.load.count):
                        addr = Array([bk["count"] for bk in prog.banks])[load_bank]
                        m.d.comb += [seq.host_addr.eq(addr), seq.host_wdata.eq(self.load.value), seq.host_we.eq(1)]
                        m.d.sync += bank.eq(load_bank)
                        m.next = "RELOAD"
                    with m.Else():
                        m.d.comb += [seq.host_addr.eq(target), seq.host_wdata.eq(self.load.value), seq.host_we.eq(1)]
            with m.State("GO"):
                start(prog.entry_address)
                m.next = "START"
            with m.State("RELOAD"):
                start(prog.reload_address)
                if readout:
                    m.d.sync += loss_next.eq(0)
                m.next = "STARTED"
            with m.State("START"):
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += seq.host_addr.eq(prog.KSTAR)
                with m.If(~seq.busy):
                    m.next = "KSTAR"
            with m.State("KSTAR"):
                m.d.comb += seq.host_addr.eq(prog.VP + j)
                m.d.sync += k_star.eq(seq.host_rdata)
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [seq.host_addr.eq(prog.VP + j),
                             self.o.payload.v.eq(seq.host_rdata), self.o.payload.k_star.eq(k_star),
                             self.o.payload.last.eq(j == last_j)]
                if multi:
                    m.d.comb += self.o.payload.bank.eq(bank)
                with m.If(self.o.ready):
                    with m.If(j == last_j):
                        m.d.sync += j.eq(0)
                        m.next = "UPDATE"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        m.next = "READ"
            with m.State("READ"):
                m.d.comb += seq.host_addr.eq(prog.VP + j)
                m.next = "OUT"
            with m.State("UPDATE"):
                start(prog.update_address)
                if multi and not readout:
                    m.d.sync += turn.eq(Mux(bank == self._banks - 1, 0, bank + 1))
                if readout:
                    m.d.sync += loss_next.eq(bank == self._banks - 1)
                m.next = "STARTED"
            if readout:
                with m.State("LOSS_SG"):            # the output layer's noise word (its signs)
                    m.d.comb += [seq.host_addr.eq(prog.SG), seq.host_wdata.eq(self.signs), seq.host_we.eq(1)]
                    m.next = "LOSS_LR"
            elif n_loss:
                with m.State("LOSS_NOISY"):         # the transfer is taken here
                    m.d.comb += [seq.host_addr.eq(prog.LY + 2 * k + 1), seq.host_wdata.eq(loss_word),
                                 seq.host_we.eq(1)]
                    m.d.sync += k.eq(k + 1)
                    m.next = "RECV"
                    with m.If(k == n_loss - 1):
                        m.d.sync += k.eq(0)
                        m.next = "LOSS_LR"
            if n_loss:
                with m.State("LOSS_LR"):
                    m.d.comb += [seq.host_addr.eq(prog.LR), seq.host_wdata.eq(self.loss_lr), seq.host_we.eq(1)]
                    m.next = "LOSS_LABEL"
                with m.State("LOSS_LABEL"):
                    m.d.comb += [seq.host_addr.eq(prog.LABEL), seq.host_wdata.eq(self.loss_label), seq.host_we.eq(1)]
                    m.next = "LOSS_GO"
                with m.State("LOSS_GO"):
                    m.d.comb += [seq.entry.eq(prog.loss_address), seq.start.eq(1)]
                    m.next = "LOSS_STARTED"
                with m.State("LOSS_STARTED"):
                    m.next = "LOSS_RUN"
                with m.State("LOSS_RUN"):
                    with m.If(~seq.busy):
                        m.next = "LOSS_DONE"
                with m.State("LOSS_DONE"):          # dl and g are on ``a`` (until the next run)
                    with m.If(self.loss_o.ready):
                        m.next = "RECV"
            with m.State("STARTED"):            # the update or the reload: back to RECV when the program halts
                m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(~seq.busy):
                    if readout:
                        with m.If(loss_next):
                            m.next = "LOSS_SG"
                        with m.Else():
                            m.next = "RECV"
                    else:
                        m.next = "RECV"
        # the handshake outputs as plain expressions of the state (continuous assignments in Verilog: defined
        # from time 0 in every simulator)
        m.d.comb += [self.i.ready.eq(fsm.ongoing("RECV")), self.o.valid.eq(fsm.ongoing("OUT"))]
        if n_loss:
            a = seq.a.as_unsigned()
            if readout:
                m.d.comb += self.idle.eq(fsm.ongoing("RECV") & (j == 0))
            else:
                m.d.comb += [fsm_noisy.eq(fsm.ongoing("LOSS_NOISY")),
                             self.idle.eq(fsm.ongoing("RECV") & (j == 0) & (k == 0)),
                             self.loss_i.ready.eq(fsm.ongoing("LOSS_NOISY"))]
            m.d.comb += [self.loss_o.valid.eq(fsm.ongoing("LOSS_DONE")),
                         self.loss_o.payload.dl.eq(a[32:]), self.loss_o.payload.pred.eq(a[24:32]),
                         self.loss_o.payload.g.eq(Cat(a[:23], ~a[23]).as_signed())]   # g + 2^23 in bits 0 … 23
        else:
            m.d.comb += self.idle.eq(fsm.ongoing("RECV") & (j == 0))
        return m

