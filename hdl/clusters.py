# amaranth: UnusedElaboratable=no
# (the solver is built in __init__ to publish its cycle counts; a block that is only inspected never elaborates it)
"""LOCO cluster block of one layer — the gateware twin of ``FixedClusters`` (golden_model/fixed.py).

Per sample it takes u (clean) and v (noisy) of the layer's input — ``dim`` = n + 1 rate-format values each,
index order, the last one the bias entry T — and produces k* and v⊥ (vperp format, index order), doing exactly
what ``FixedRule.step_q`` does with its ``FixedClusters``: ``normalise``, ``select``, ``project``, ``update``
(with the refreshes they trigger).

Structure: P = ``units`` **cluster units** (1 ≤ P ≤ K, default K) work in parallel. Unit p owns one
prototype memory of G·``dim`` words (proto format), G = ⌈K/P⌉ **groups**: cluster k lives in unit k mod P,
words ⌊k/P⌋·dim … ⌊k/P⌋·dim + dim − 1, and group g is clusters gP … gP + P − 1. Each unit has an accumulator
and one multiplier c_kj × y, where y is the operand broadcast to all units (û_j, v_j or c_bj) or, when v⊥ is
produced, the w_k of the unit's cluster in the current group. A pass over the ``dim`` indices reads all unit
memories at the same address and covers one group; a pass that needs every active cluster (UHAT, GRAM, CV)
repeats for the max(1, ⌈n/P⌉) groups that hold the n active clusters (:meth:`ClusterBlock.groups`), so with
P = K every pass is one group, as many cycles whatever K is. Per cluster the block keeps dot_k, [c_k = û],
cv_k, w_k and r_k: in registers when P = K; with P < K in small memories (dot, cv, w: one of G words per unit,
written a group at a time; r: K words), [c_k = û] in K flip-flops — their one-cycle reads cost ``SCORE`` one
cycle. Around the units: the input buffer (u, v), the û buffer, the column buffer
(G > 1 only: c_b of a GRAM column for the groups after b's own), one shared restoring square root and divider
(``hdl/arith.py``) for ‖u‖, 1/‖u‖ and r_k, the score dot_k · r_k (the argmax runs over the clusters in index
order, so the first maximum wins) on a multiplier of its own — or, in a shared form whose dot and r fit, on the
solver's multiplier in two halves (dot = hi·2^(h_bits−1) + lo), two cycles per cluster —, one squarer
(Σ û_j², Σ c_j²), and the :class:`~loco_fpga.hdl.solver.Solver` (H refresh, Schur downdate) whose read port
and multiplier compute w = M·cv. All sums are exact integer sums, so the group order cannot change a result.

Schedule of one sample (state names of the FSM; formulas in :meth:`ClusterBlock.sample_cycles`):

1. ``RECV``      u_j, v_j into the buffer, s = Σ u_j²                               (``dim`` transfers)
2. ``NORM``      ‖u‖ = isqrt(s · 4^norm_guard); recip = ⌊2^(pf + ng + re) / ‖u‖⌋
3. pass UHAT     û_j = narrow(u_j · recip, pf + re → uhat); per cluster: dot_k = Σ c_kj û_j,
                 eq_k = [c_k = û]; Σ û_j² (first group)
4. ``SCORE``     k* = first argmax over active k of dot_k · r_k (:meth:`ClusterBlock.score_cycles`); a new
                 cluster (k* = count)
                 when count < K and c_k* ≠ û: pass NEW copies û into unit count, r_count from Σ û_j²,
                 count += 1 and a refresh (5)
5. refresh       pass GRAM per column b, b's group first (it fills the column buffer): cluster a accumulates
                 Σ_j c_aj c_bj; after each group G_ab = sat(narrow(·, 2pf → gram) + λ[a = b]) of its clusters
                 is written into the solver; ``INVERT``; samples since refresh ← 0
6. project       count < 2: v⊥ = sat(v ≪ (vf − rf)). Otherwise pass CV (cluster k: Σ_j c_kj v_j → cv_k),
                 ``DOWNDATE`` k*, w_i = narrow(Σ_j M_ij cv_j, 2hf → w) through the solver's read port and
                 multiplier
7. ``OUT_*``     v⊥_j = sat(v_j ≪ (vf − rf) − shift_round(Σ_k w_k c_kj, pf + hf − vf, half-up)) on ``o``;
                 Σ_k over the groups, one group per cycle
8. pass UPDATE   unit k*: c_j ← sat(c_j + shift_round(û_j − c_j, proto_shift, half-up)); r_k* from Σ c_j²;
                 samples since refresh += 1, and a refresh (5) when it reaches ``refresh``.
"""

import math
from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .arith import Divider, Isqrt
from .fixed import narrow_mode, shape, shift_round, times
from .layer import BLOCK_RAM, COLLISION_FREE
from .solver import MatrixHalf, Solver, SolverOp

__all__ = ["ClusterBlock", "PairBuffer", "PeekKind"]

# the block's buffers and cv/w/r values go into block RAM (BLOCK_RAM): as ECP5 LUT RAM a 65-word buffer takes
# 5 × ⌈bits/4⌉ DPR16X4 cells, each 6 logic-cell positions (4 RAM + 2 write-port LUTs); 79 of them per block at the
# ``ecp5`` preset, 6,191 logic cells in the deep build (docs/hdl_learning.md).

_MAX_DIM = 1 << 16
_MAX_BANKS = 16


class _Rows:
    """``prototypes[k]``: cluster k's ``dim`` words in its unit's memory (``[j]`` is a simulator row)."""

    def __init__(self, memory_data, base, dim):
        self._mem, self._base, self._dim = memory_data, base, dim

    def __len__(self):
        return self._dim

    def __getitem__(self, j):
        if not 0 <= j < self._dim:
            raise IndexError(f"j = {j!r}: must be in [0, {self._dim - 1}]")
        return self._mem[self._base + j]


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


def _saturate(value, fmt):
    """``hdl.fixed.saturate`` without the comparisons the value's own range makes constant (Verilator's
    CMPCONST lint is fatal in the harness, and a narrow û or a shifted v can never reach a limit)."""
    value = Value.cast(value)
    sh = Shape.cast(value.shape())
    lo = -(1 << (sh.width - 1)) if sh.signed else 0
    hi = (1 << (sh.width - 1)) - 1 if sh.signed else (1 << sh.width) - 1
    if hi > fmt.max:
        value = Mux(value > fmt.max, fmt.max, value)
    if lo < fmt.min:
        value = Mux(value < fmt.min, fmt.min, value)
    sh = Shape.cast(value.shape())
    if sh.width < fmt.bits:                     # extend by the value's own signedness before reinterpreting
        fill = value[-1].replicate(fmt.bits - sh.width) if sh.signed else Const(0, fmt.bits - sh.width)
        value = Cat(value, fill)
    bits = value[:fmt.bits]
    return bits.as_signed() if fmt.signed else bits.as_unsigned()


def _narrow(value, src_frac, fmt, mode="half-up"):
    """``hdl.fixed.narrow`` with :func:`_saturate`."""
    return _saturate(shift_round(value, src_frac - fmt.frac, narrow_mode(fmt, mode)), fmt)


def _clog2(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


class PeekKind(enum.Enum, shape=2):
    """What the debug port ``peek`` reads (between samples, while the block waits for input)."""
    PROTO = 0       #: c_index[col], proto format
    H = 1           #: H[index, col] (the solver's last INVERT)
    RECIP = 2       #: r_index (pnorm format, unsigned)
    COUNT = 3       #: the number of active clusters


class _Pass(enum.Enum, shape=3):
    """What a pass over the ``dim`` indices computes."""
    UHAT = 0
    NEW = 1
    GRAM = 2
    CV = 3
    UPDATE = 4
    LOAD = 5        #: Σ_j c_bj² of a loaded prototype b (for its r_b)


class ClusterBlock(wiring.Component):
    """P cluster units shared by K clusters, the normaliser and the solver of one layer (see the module
    docstring).

    Parameters (keyword-only): ``formats`` (:class:`~loco_fpga.qformat.Formats` of the config), ``dim``
    (n + 1: the layer's inputs plus the bias), ``clusters`` K, ``refresh`` N_ref (samples between H
    refreshes), ``ridge`` λ in gram LSBs, ``norm_guard``, ``recip_extra`` (``[fixed]``), ``units`` P
    (parallel unit multipliers, 1 … K; default K: one pass covers every cluster; fewer units repeat the
    passes per group of P clusters, see :meth:`groups`), ``banks`` S (default 1: the layers of equal input width
    the block serves, one sample of one layer at a time; each keeps its own prototypes, count, r_k, samples since
    refresh and H — a prototype memory of S·G·``dim`` words, bank s from word s·G·``dim`` on, and a solver of S
    banks — while the per-sample buffers and values are shared: one block for S layers, S times its cycles). The
    prototype step η_c = 2^-proto_shift comes from
    ``formats.proto_shift``. :meth:`from_config` derives all of them but ``units``.

    Ports:
        i (In stream of :attr:`input_layout` = {u: rate, v: rate, last: 1}, and bank: 0 … S − 1 when S > 1):
            ``dim`` transfers per sample, index order (the unit counts them itself; ``last`` is ignored; the
            first transfer's ``bank`` is the sample's).
        o (Out stream of :attr:`output_layout` = {v: vperp, k_star: 0 … K−1, last: 1}): ``dim``
            transfers per sample, v⊥ in index order; every transfer carries the sample's k*, ``last`` marks
            the bias entry (and ``bank``, the sample's, when S > 1). ``o.valid`` never waits on ``o.ready``.
        idle (Out 1): the block waits for a sample and has received nothing of it (``RECV``, no element in).

        peek (In {what: :class:`PeekKind`, index, col}), peek_data (Out signed): debug/trace reads of the
            prototypes, H, r_k and the count, :attr:`peek_latency` = 1 cycle, valid while ``i.ready`` is high
            (between samples; the reads share the memories' single read ports). With S > 1, ``peek.bank`` and
            ``load.bank`` select the layer whose state is read or loaded.
        load_en, load (In {count: 1, index, col, value}): host load, taken only while ``idle``. ``count`` = 0:
            c_index[col] ← value (proto format). ``count`` = 1: the number of active clusters ← value (0 … K),
            then the block recomputes r_k of every active prototype and refreshes H from them (as a
            ``FixedClusters`` whose ``protos``/``count`` were set, followed by ``refresh()``), samples since
            refresh ← 0; ``idle`` is low until that is done (:meth:`load_cycles`).

    The unit memories (``memories[p]``, :class:`~amaranth.lib.memory.MemoryData`; cluster k's word j as a
    simulator row: ``prototypes[k][j]``), the solver (``solver``, H in its ``matrix``) and the count,
    r_k, cv_k and w_k (``state``: registers with P = K, memory rows with P < K) are attributes for simulation
    tests; with S > 1, bank s's count, r_k and samples since refresh are ``bank_state[s]`` (``state`` holds bank
    0's) and its prototypes ``bank_prototypes[s][k][j]``.
    """

    def __init__(self, *, formats: Formats, dim: int, clusters: int, refresh: int, ridge: int,
                 norm_guard: int, recip_extra: int, units: int | None = None, banks: int = 1):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        _check_int("dim", dim, 1, _MAX_DIM)
        _check_int("clusters", clusters, 1, 64)
        _check_int("refresh", refresh, 1, 1 << 20)
        _check_int("ridge", ridge, 0, formats.gram.max)
        _check_int("norm_guard", norm_guard, 0, 16)
        _check_int("recip_extra", recip_extra, 0, 24)
        if units is None:
            units = clusters
        _check_int("units", units, 1, clusters)
        _check_int("banks", banks, 1, _MAX_BANKS)
        if formats.uhat.bits != formats.proto.bits or formats.uhat.frac != formats.proto.frac:
            raise ValueError(f"formats.uhat = {formats.uhat.label()}: must equal formats.proto "
                             f"({formats.proto.label()}); û is copied into a prototype")
        if formats.vperp.frac < formats.log2_steps:
            raise ValueError(f"formats.vperp = {formats.vperp.label()}: needs ≥ log2 T = {formats.log2_steps} "
                             "fraction bits")
        if not 0 <= formats.proto_shift <= formats.proto.frac:
            raise ValueError(f"formats.proto_shift = {formats.proto_shift!r}: must be in [0, "
                             f"{formats.proto.frac}]")
        self._formats, self._dim, self._k, self._refresh = formats, dim, clusters, refresh
        self._ridge, self._ng, self._re = ridge, norm_guard, recip_extra
        self._units, self._groups, self._banks = units, -(-clusters // units), banks
        bank_field = {"bank": range(banks)} if banks > 1 else {}
        self._input_layout = data.StructLayout({"u": shape(formats.rate), "v": shape(formats.rate), "last": 1}
                                               | bank_field)
        self._output_layout = data.StructLayout({"v": shape(formats.vperp), "k_star": range(clusters),
                                                 "last": 1} | bank_field)
        pf, rf = formats.proto.frac, formats.log2_steps
        pb = formats.proto.bits
        # the shared square root: ‖u‖² · 4^ng and Σ c_j² (prototypes and û)
        self._sq_u_width = 2 * formats.rate.bits + _clog2(dim)
        self._sq_c_width = 2 * pb + _clog2(dim)
        self._isqrt_width = max(self._sq_u_width + 2 * norm_guard, self._sq_c_width)
        self._recip_num = pf + norm_guard + recip_extra          # recip = ⌊2^this / ‖u‖⌋
        self._div_width = max(self._recip_num, 2 * pf) + 1
        self.solver = Solver(formats=formats, size=clusters, banks=banks)
        span = self._groups * dim            # one bank's words in a unit memory
        self.memories = [memory.MemoryData(shape=shape(formats.proto), depth=banks * span, init=[])
                         for _ in range(units)]
        self.bank_prototypes = tuple(tuple(_Rows(self.memories[k % units], s * span + (k // units) * dim, dim)
                                           for k in range(clusters)) for s in range(banks))
        self.prototypes = self.bank_prototypes[0]
        self._dot_shape = signed(2 * pb + _clog2(dim) + 1)
        # shared form: dot_k · r_k on the solver's h_bits × h_bits multiplier in two halves (dot = hi·2^L + lo,
        # lo unsigned L = h_bits − 1 bits) when the widths allow; otherwise a score multiplier of its own
        hb = formats.h.bits
        self._score_on_solver = (self._groups > 1 and self._dot_shape.width <= 2 * hb - 1
                                 and 2 * pf + 2 <= hb)
        def name(base, s):
            return base if s == 0 else f"{base}_bank{s}"
        if self._groups == 1:        # one unit per cluster: its values in registers
            recips = [[Signal(2 * pf + 1, name=name(f"recip{k}", s)) for k in range(clusters)] for s in range(banks)]
            cvs = [Signal(shape(formats.cv), name=f"cv{k}") for k in range(clusters)]
            ws = [Signal(shape(formats.w), name=f"w{k}") for k in range(clusters)]
            self._values = None
        else:                        # shared units: per unit a memory of G words (cluster k: unit k mod P, word
            # ⌊k/P⌋) for dot, cv and w, one of K words for r (written one at a time)
            def per_unit(sh):
                return [memory.MemoryData(shape=sh, depth=self._groups, init=[]) for _ in range(units)]
            self._values = SimpleNamespace(dot=per_unit(self._dot_shape), cv=per_unit(shape(formats.cv)),
                                           w=per_unit(shape(formats.w)),
                                           recip=memory.MemoryData(shape=2 * pf + 1, depth=banks * clusters, init=[]))
            v = self._values
            recips = [[v.recip[s * clusters + k] for k in range(clusters)] for s in range(banks)]
            cvs = [v.cv[k % units][k // units] for k in range(clusters)]
            ws = [v.w[k % units][k // units] for k in range(clusters)]
        self.bank_state = tuple(SimpleNamespace(count=Signal(range(clusters + 1), name=name("count", s)),
                                                recips=recips[s],
                                                since=Signal(range(refresh + 1), name=name("since_refresh", s)))
                                for s in range(banks))
        b0 = self.bank_state[0]
        self.state = SimpleNamespace(count=b0.count, recips=b0.recips, since=b0.since, cv=cvs, w=ws,
                                     k_star=Signal(range(clusters), name="k_star"))
        self._peek_layout = data.StructLayout({"what": PeekKind, "index": range(clusters),
                                               "col": range(max(dim, clusters))} | bank_field)
        self._peek_width = max(formats.proto.bits, formats.h.bits, 2 * pf + 2, clusters.bit_length() + 1)
        self._load_layout = data.StructLayout({"count": 1, "index": range(clusters), "col": range(dim),
                                               "value": signed(max(formats.proto.bits,
                                                                   clusters.bit_length() + 1))} | bank_field)
        super().__init__({"i": In(stream.Signature(self._input_layout)),
                          "o": Out(stream.Signature(self._output_layout)),
                          "idle": Out(1),
                          "peek": In(self._peek_layout), "peek_data": Out(signed(self._peek_width)),
                          "load_en": In(1), "load": In(self._load_layout)})

    @classmethod
    def from_config(cls, config, layer: int, *, units: int | None = None, banks: int = 1) -> "ClusterBlock":
        """The block of layer ``layer`` (0-based: its input has arch[layer] + 1 entries) of ``config``, with
        ``units`` parallel units (default K) and ``banks`` layers served (default 1)."""
        from loco_fpga.qformat import formats  # noqa: PLC0415

        arch = config.network.arch
        _check_int("layer", layer, 0, len(arch) - 2)
        fm = formats(config)
        return cls(formats=fm, dim=arch[layer] + 1, clusters=config.rule.clusters, refresh=config.rule.refresh,
                   ridge=fm.gram.from_float(config.rule.ridge), norm_guard=config.fixed.norm_guard,
                   recip_extra=config.fixed.recip_extra, units=units, banks=banks)

    formats = property(lambda self: self._formats)
    dim = property(lambda self: self._dim)
    clusters = property(lambda self: self._k)
    refresh = property(lambda self: self._refresh)
    ridge = property(lambda self: self._ridge)
    norm_guard = property(lambda self: self._ng)
    recip_extra = property(lambda self: self._re)
    units = property(lambda self: self._units)
    banks = property(lambda self: self._banks)
    input_layout = property(lambda self: self._input_layout)
    output_layout = property(lambda self: self._output_layout)
    peek_layout = property(lambda self: self._peek_layout)
    load_layout = property(lambda self: self._load_layout)

    @property
    def peek_latency(self) -> int:
        """Cycles from ``peek`` to its value on ``peek_data`` (valid only while ``i.ready`` is high)."""
        return 1

    # -- published timing -------------------------------------------------------------------------------
    @property
    def pass_cycles(self) -> int:
        """One pass over the ``dim`` indices for one group (all units at once): ``dim`` reads, the last
        element, 1 to finish."""
        return self._dim + 2

    def groups(self, n: int) -> int:
        """Groups of P clusters that a pass over the first n active clusters visits: max(1, ⌈n/P⌉) (1 for
        every n when P = K)."""
        return max(1, -(-n // self._units))

    @property
    def isqrt_cycles(self) -> int:
        """Issue + result of one square root on the shared unit: its latency + 2."""
        return (self._isqrt_width + 1) // 2 + 1 + 2

    @property
    def divide_cycles(self) -> int:
        """Issue + result of one division on the shared divider: its latency + 2."""
        return self._div_width + 1 + 2

    def score_cycles(self, n: int) -> int:
        """The selection among n active clusters: one cycle per cluster (two when the score uses the solver's
        multiplier, shared forms whose dot and r fit it), one to decide, and with P < K one to read dot_0, r_0."""
        if self._score_on_solver:
            return 2 * n + 2
        return n + 1 + (self._groups > 1)

    def refresh_cycles(self, n: int) -> int:
        """H refresh with n active clusters: per column, :meth:`groups` (n) GRAM passes and n solver writes,
        then ``INVERT`` (command + the solver's cycles + 1 to see it idle)."""
        return n * (self.groups(n) * self.pass_cycles + n) + 1 + self.solver.invert_cycles(n) + 1

    def output_cycles(self, count: int, new: bool) -> int:
        """Cycles from a sample's last ``i`` transfer to its last ``o`` transfer (``o`` always ready);
        ``count`` and ``new`` as in :meth:`sample_cycles`."""
        before = count - 1 if new else count
        c = self.isqrt_cycles + self.divide_cycles                # NORM
        c += self.groups(before) * self.pass_cycles               # UHAT
        c += self.score_cycles(before)                            # SCORE
        if new:
            c += self.pass_cycles + self.isqrt_cycles + self.divide_cycles + self.refresh_cycles(count)
        c += 1                                                    # PROJECT
        if count >= 2:
            c += self.groups(count) * self.pass_cycles + 1 + self.solver.downdate_cycles(count) + 1  # CV, DOWNDATE
            c += 2 * count * count + 1                                            # w = M cv
        return c + (self.groups(count) + 1) * self._dim           # OUT_READ, OUT_ACC per further group, OUT_SEND

    def tail_cycles(self, count: int, refreshed: bool) -> int:
        """Cycles from a sample's last ``o`` transfer to the last cycle before ``idle`` is high again (the
        prototype update, r_k*, and the refresh when ``refreshed``): ``idle`` rises tail_cycles + 1 cycles after
        the last ``o`` transfer."""
        c = self.pass_cycles + self.isqrt_cycles + self.divide_cycles            # UPDATE, r_k*
        return c + (self.refresh_cycles(count) if refreshed else 0)

    def load_cycles(self, count: int) -> int:
        """Cycles from the ``load`` of the count (``count`` ≥ 1) until ``idle`` is high again."""
        return count * (self.pass_cycles + self.isqrt_cycles + self.divide_cycles) + self.refresh_cycles(count)

    def sample_cycles(self, count: int, new: bool, refreshed: bool) -> int:
        """Cycles from accepting a sample's first (u, v) to accepting the next sample's first, with ``i``
        always valid and ``o`` always ready: ``dim`` + :meth:`output_cycles` + :meth:`tail_cycles`.

        ``count``: active clusters *after* the selection; ``new``: the sample opened cluster count − 1;
        ``refreshed``: the update's refresh ran (the N_ref-th sample since the last refresh). A new cluster
        always refreshes once more inside the selection.
        """
        return self._dim + self.output_cycles(count, new) + self.tail_cycles(count, refreshed)

    def elaborate(self, platform):
        m = Module()
        fm, dim, K, P, G, S = self._formats, self._dim, self._k, self._units, self._groups, self._banks
        pf, pb = fm.proto.frac, fm.proto.bits
        rf, hf, vf = fm.log2_steps, fm.h.frac, fm.vperp.frac
        hb = fm.h.bits
        ng, re = self._ng, self._re

        m.submodules.solver = solver = self.solver
        m.submodules.isqrt = sq = Isqrt(width=self._isqrt_width)
        m.submodules.divider = div = Divider(dividend_width=self._div_width, divisor_width=sq.root_width)

        # -- memories ----------------------------------------------------------------------------------
        buf_layout = data.StructLayout({"u": shape(fm.rate), "v": shape(fm.rate)})
        m.submodules.inputs = inputs = memory.Memory(shape=buf_layout, depth=dim, init=[], attrs=BLOCK_RAM)
        m.submodules.uhat = uhat_mem = memory.Memory(shape=shape(fm.uhat), depth=dim, init=[], attrs=BLOCK_RAM)
        in_rd, in_wr = inputs.read_port(domain="sync"), inputs.write_port()
        uh_rd, uh_wr = uhat_mem.read_port(domain="sync"), uhat_mem.write_port()
        c_rd, c_wr = [], []
        for p in range(P):
            mem = memory.Memory(self.memories[p])
            m.submodules[f"proto{p}"] = mem
            c_rd.append(mem.read_port(domain="sync"))
            c_wr.append(mem.write_port())
        c_val = [port.data.as_signed() for port in c_rd]

        # -- where cluster k lives: unit k mod P, group ⌊k/P⌋ at word ⌊k/P⌋·dim. Arithmetic, not constant
        # tables: a table lookup becomes an `always @*` case block that Icarus never evaluates while its index
        # keeps its reset value (X out of the prototype mux in the first sample); P = K and powers of two need
        # no divider.
        class _Index:
            def __init__(self, fn):
                self._fn = fn

            def __getitem__(self, value):
                return self._fn(Value.cast(value))
        shift = P.bit_length() - 1 if P & (P - 1) == 0 else None
        if P == K:
            unit_of, group_of = _Index(lambda k: k), _Index(lambda k: Const(0))
        elif shift is not None:
            unit_of = _Index(lambda k: k[:shift] if shift else Const(0))
            group_of = _Index(lambda k: k >> shift)
        else:
            unit_of, group_of = _Index(lambda k: k % P), _Index(lambda k: k // P)
        base_of = _Index(lambda g: times(g, dim))
        first_of = _Index(lambda g: times(g, P))
        groups_of = _Index(lambda n: Const(1) if G == 1 else Mux(n == 0, 1, (n + (P - 1)) // P
                                                                   if shift is None else (n + (P - 1)) >> shift))

        # -- state ---------------------------------------------------------------------------------------
        st = self.state
        # the bank (layer) of the sample or load in progress; its count, samples since refresh and r_k
        bank = Signal(range(S)) if S > 1 else Const(0)
        if S > 1:
            counts, sinces = Array(bs.count for bs in self.bank_state), Array(bs.since for bs in self.bank_state)
            count, since = counts[bank], sinces[bank]
            recip_banks = Array(Array(bs.recips) for bs in self.bank_state)
        else:
            count, since = st.count, st.since

        peek_bank = self.peek.bank if S > 1 else Const(0)
        load_bank = self.load.bank if S > 1 else Const(0)

        def bank_offset(sel, words):         # the first word of bank ``sel`` in a memory of S·words words
            return times(sel, words) if S > 1 else 0

        def recip_reg(sel, k):               # r_k of bank ``sel`` (registers: P = K)
            return recip_banks[sel][k] if S > 1 else Array(st.recips)[k]
        j = Signal(range(max(dim, K) + 1))   # read address of every buffer/prototype memory; cluster index in W_ACC
        pv = Signal()                        # a pass's data for index pj arrives this cycle
        pj = Signal(range(dim))
        phase = Signal(_Pass)
        grp = Signal(range(G))               # the group a pass (or an OUT entry) is at
        gleft = Signal(range(G))             # groups after this one in the current pass
        gfirst = Signal()                    # the pass is at its first group
        if G > 1:
            gcount = Signal(range(G + 1))    # groups holding the active clusters
            m.d.comb += gcount.eq(groups_of[count])
        else:
            gcount = Const(1)
        b = Signal(range(K))                 # GRAM column
        a = Signal(range(K + 1))             # solver write row / w row / score index
        kstar = st.k_star
        new = Signal()
        after_refresh = Signal()             # 0: refresh from SELECT (continue to project), 1: from UPDATE
        s_u = Signal(self._sq_u_width)       # Σ u_j²
        s_c = Signal(self._sq_c_width)       # Σ û_j² or Σ c_j² (for r_k)
        recip_u = Signal(self._recip_num + 1)
        acc_w = 2 * pb + max(hb, rf + 2) + _clog2(dim) + 1
        accs = [Signal(signed(acc_w), name=f"acc{p}") for p in range(P)]
        ueqs = [Signal(name=f"ueq{p}") for p in range(P)]          # unit p: [c = û] so far in this group
        eqs = [Signal(name=f"eq{k}") for k in range(K)]
        if G == 1:
            dots = [Signal(self._dot_shape, name=f"dot{k}") for k in range(K)]
            cvs, ws = st.cv, st.w
        best = Signal(signed(2 * pb + _clog2(dim) + 2 * pf + 3))
        tacc = Signal(signed(2 * hb + _clog2(K) + 1))
        in_j = Signal(range(dim))

        # -- datapath ------------------------------------------------------------------------------------
        idle = Signal()                      # waiting for a sample: the debug port owns the read addresses
        score_addr = Signal(range(K + 2))    # P < K: the cluster whose dot and r are read (SCORE: the next one)
        if G > 1:                            # per-cluster values in memories (one-cycle reads)
            vals = self._values

            def ports(data, name, attrs=BLOCK_RAM):
                mem = memory.Memory(data, attrs=attrs)
                m.submodules[name] = mem
                return mem.read_port(domain="sync"), mem.write_port()
            dot_p = [ports(vals.dot[p], f"dot{p}", {}) for p in range(P)]   # 40 bits: 2 block RAMs for 8 words
            cv_p = [ports(vals.cv[p], f"cv{p}") for p in range(P)]
            w_p_ = [ports(vals.w[p], f"w{p}") for p in range(P)]
            recip_rd, recip_wr = ports(vals.recip, "recip")
            m.d.comb += [rd.addr.eq(group_of[score_addr]) for rd, _ in dot_p]
            m.d.comb += recip_rd.addr.eq(Mux(idle, bank_offset(peek_bank, K) + self.peek.index,
                                             bank_offset(bank, K) + score_addr))
            m.d.comb += [rd.addr.eq(group_of[j]) for rd, _ in cv_p]
        read_grp = Signal(range(G + 1))      # the group whose words the unit memories read (OUT_ACC: the next)
        m.d.comb += read_grp.eq(grp)
        m.d.comb += [in_rd.addr.eq(j), uh_rd.addr.eq(j)]
        peek_addr = bank_offset(peek_bank, G * dim) + base_of[group_of[self.peek.index]] + self.peek.col
        offset = bank_offset(bank, G * dim)
        m.d.comb += [port.addr.eq(Mux(idle, peek_addr, offset + base_of[read_grp] + j)) for port in c_rd]
        write_addr = offset + base_of[grp] + pj  # a pass writes the word of index pj of the group it is at
        u_j, v_j = in_rd.data.u, in_rd.data.v
        uh_j = uh_rd.data.as_signed()
        uhat_new = Signal(shape(fm.uhat))
        m.d.comb += uhat_new.eq(_narrow(u_j * recip_u, pf + re, fm.uhat, "half-up"))
        # c_bj of the GRAM column (or of the LOADed prototype b): straight from b's unit while the pass is at b's
        # group, from the column buffer (filled then) at the other groups
        c_b = Signal(shape(fm.proto))
        m.d.comb += c_b.eq(Array(c_val)[unit_of[b]])
        if G > 1:
            m.submodules.column = col_mem = memory.Memory(shape=shape(fm.proto), depth=dim, init=[], attrs=BLOCK_RAM)
            col_rd, col_wr = col_mem.read_port(domain="sync"), col_mem.write_port()
            m.d.comb += col_rd.addr.eq(j)
            col_op = Mux(gfirst, c_b, col_rd.data.as_signed())
        else:
            col_op = c_b
        # the broadcast operand of the units' multipliers
        x = Signal(signed(max(pb, rf + 2) + 1))
        m.d.comb += x.eq(Mux(phase == _Pass.UHAT, uhat_new, Mux(phase == _Pass.CV, v_j, col_op)))
        out_phase = Signal()
        products = []
        for p in range(P):
            if G > 1:                        # w of unit p's cluster in the group read (0 for clusters ≥ count)
                m.d.comb += w_p_[p][0].addr.eq(read_grp)
                w_p = Mux(first_of[grp] + p < count, w_p_[p][0].data.as_signed(), 0)
            else:
                w_p = ws[p]
            prod = Signal(signed(pb + max(hb, rf + 2, pb) + 1), name=f"prod{p}")
            m.d.comb += prod.eq(c_val[p] * Mux(out_phase, w_p, x))
            products.append(prod)
        t_sum = Signal(signed(hb + pb + _clog2(K) + 1))
        if G > 1:                            # OUT: Σ over the groups before the last one, one per cycle
            oacc = Signal.like(t_sum)
            m.d.comb += t_sum.eq(oacc + sum(products))
        else:
            m.d.comb += t_sum.eq(sum(products))
        v_scaled = v_j << (vf - rf)
        vperp_j = _saturate(v_scaled - shift_round(t_sum, pf + hf - vf, "half-up"), fm.vperp)
        vpass_j = _saturate(v_scaled, fm.vperp)
        # the prototype update of cluster k*
        c_k = Array(c_val)[unit_of[kstar]]
        c_upd = Signal(shape(fm.proto))
        m.d.comb += c_upd.eq(_saturate(c_k + shift_round(uh_j - c_k, fm.proto_shift, "half-up"), fm.proto))
        # one squarer for Σ û_j² (UHAT) and Σ c_j² (UPDATE)
        sq_in = Signal(shape(fm.proto))
        m.d.comb += sq_in.eq(Mux(phase == _Pass.UHAT, uhat_new, c_upd))
        square = sq_in * sq_in

        # processing of the element arriving in a pass
        with m.If(pv):
            with m.Switch(phase):
                with m.Case(_Pass.UHAT):
                    m.d.comb += [uh_wr.en.eq(1), uh_wr.addr.eq(pj), uh_wr.data.eq(uhat_new)]
                    if G > 1:                     # û is formed again at every group; Σ û_j² once
                        with m.If(gfirst):
                            m.d.sync += s_c.eq(s_c + square)
                    else:
                        m.d.sync += s_c.eq(s_c + square)
                    for p in range(P):
                        m.d.sync += [accs[p].eq(accs[p] + products[p]),
                                     ueqs[p].eq(ueqs[p] & (c_val[p] == uhat_new))]
                with m.Case(_Pass.NEW):
                    for p in range(P):
                        m.d.comb += [c_wr[p].en.eq(unit_of[count] == p), c_wr[p].addr.eq(write_addr),
                                     c_wr[p].data.eq(uh_j)]
                with m.Case(_Pass.GRAM, _Pass.CV, _Pass.LOAD):
                    for p in range(P):
                        m.d.sync += accs[p].eq(accs[p] + products[p])
                    if G > 1:
                        m.d.comb += [col_wr.en.eq(gfirst & (phase == _Pass.GRAM)), col_wr.addr.eq(pj),
                                     col_wr.data.eq(c_b)]
                with m.Case(_Pass.UPDATE):
                    for p in range(P):
                        m.d.comb += [c_wr[p].en.eq(unit_of[kstar] == p), c_wr[p].addr.eq(write_addr),
                                     c_wr[p].data.eq(c_upd)]
                    m.d.sync += s_c.eq(s_c + square)

        # host load of a prototype word (between samples)
        with m.If(self.load_en & self.idle & ~self.load.count):
            for p in range(P):
                m.d.comb += [c_wr[p].en.eq(unit_of[self.load.index] == p),
                             c_wr[p].addr.eq(bank_offset(load_bank, G * dim)
                                             + base_of[group_of[self.load.index]] + self.load.col),
                             c_wr[p].data.eq(self.load.value)]

        def clear_units():
            return [acc.eq(0) for acc in accs] + [eq.eq(1) for eq in ueqs]

        def start_pass(kind, *, group=0, groups=1, clear_acc=True, clear_sc=False):
            """A pass of ``kind`` over ``groups`` groups from ``group`` on (it wraps at the last active one)."""
            stmts = [phase.eq(kind), j.eq(0)]
            if G > 1:
                stmts += [grp.eq(group), gleft.eq(groups - 1), gfirst.eq(1)]
            if clear_acc:
                stmts += clear_units()
            if clear_sc:
                stmts.append(s_c.eq(0))
            return stmts

        more_groups = (gleft != 0) if G > 1 else Const(0)

        def next_group():
            return [grp.eq(Mux(grp + 1 == gcount, 0, grp + 1)), gleft.eq(gleft - 1), gfirst.eq(0),
                    j.eq(0)] + clear_units()

        def store_group(targets, value_of_unit):
            """targets[k] ← value_of_unit(k mod P) for the clusters k of the current group."""
            if G == 1:
                m.d.sync += [targets[k].eq(value_of_unit(k)) for k in range(K)]
                return
            with m.Switch(grp):
                for g in range(G):
                    with m.Case(g):
                        m.d.sync += [targets[g * P + p].eq(value_of_unit(p)) for p in range(P) if g * P + p < K]

        # solver client signals
        m.d.comb += solver.rd_addr.row.eq(Mux(idle, self.peek.index, a))
        if S > 1:   # the solver's H offset is the last command's n; a bank's H sits at columns count … 2·count − 1
            m.d.comb += [solver.bank.eq(Mux(idle, peek_bank, bank)), solver.rd_addr.half.eq(MatrixHalf.M),
                         solver.rd_addr.col.eq(Mux(idle, counts[peek_bank] + self.peek.col, j))]
        else:
            m.d.comb += [solver.rd_addr.col.eq(Mux(idle, self.peek.col, j)),
                         solver.rd_addr.half.eq(Mux(idle, MatrixHalf.H, MatrixHalf.M))]
        # debug port: selectors registered with the memories' read addresses (one cycle latency)
        peek_q = Signal(self._peek_layout)
        m.d.sync += peek_q.eq(self.peek)
        with m.Switch(peek_q.what):
            with m.Case(PeekKind.PROTO):
                m.d.comb += self.peek_data.eq(Array(c_val)[unit_of[peek_q.index]])
            with m.Case(PeekKind.H):
                m.d.comb += self.peek_data.eq(solver.rd_data)
            with m.Case(PeekKind.RECIP):
                m.d.comb += self.peek_data.eq(recip_reg(peek_q.bank if S > 1 else 0, peek_q.index) if G == 1
                                              else recip_rd.data)
            with m.Case(PeekKind.COUNT):
                m.d.comb += self.peek_data.eq(counts[peek_q.bank] if S > 1 else count)
        gram_value = _saturate(_narrow(Array(accs)[unit_of[a]], 2 * pf, fm.gram, "half-up")
                               + Mux(a == b, self._ridge, 0), fm.gram)
        m.d.comb += [solver.g.payload.row.eq(a), solver.g.payload.col.eq(b), solver.g.payload.value.eq(gram_value),
                     solver.cmd.payload.n.eq(count), solver.cmd.payload.k.eq(kstar)]
        score = Signal.like(best)
        score_on = Signal()                  # SCORE / SCORE_HI with the score on the solver's multiplier
        score_half = Signal()                # 0: lo · r, 1: hi · r
        if G == 1:
            m.d.comb += score.eq(Array(dots)[a] * recip_reg(bank, a))
            cv_j = Array(cvs)[j]
        else:
            dot_a = Array(rd.data.as_signed() for rd, _ in dot_p)[unit_of[a]]
            cv_j = Array(rd.data.as_signed() for rd, _ in cv_p)[unit_of[j]]
        # w = M·cv on the solver's multiplier (the solver is idle then); so is the score of a shared form
        m.d.comb += [solver.mul_a.eq(solver.rd_data), solver.mul_b.eq(cv_j)]
        if self._score_on_solver:
            low = hb - 1
            plo = Signal(2 * hb)             # lo · r ≥ 0
            with m.If(score_on):
                m.d.comb += [solver.mul_a.eq(Mux(score_half, dot_a[low:].as_signed(), dot_a[:low].as_unsigned())),
                             solver.mul_b.eq(recip_rd.data)]
            m.d.comb += score.eq((solver.mul_p << low) + plo)
        elif G > 1:
            m.d.comb += score.eq(dot_a * recip_rd.data)

        # r_k from a Σ c_j²: isqrt, then ⌊2^(2pf) / root⌋ (0 when the root is 0)
        root = Signal(sq.root_width)

        with m.FSM() as fsm:
            with m.State("RECV"):
                with m.If(self.load_en & self.idle & self.load.count):
                    if S > 1:
                        lb = load_bank
                        m.d.sync += [bank.eq(lb), counts[lb].eq(self.load.value), sinces[lb].eq(0), b.eq(0)]
                    else:
                        m.d.sync += [count.eq(self.load.value), since.eq(0), b.eq(0)]
                    with m.If(self.load.value != 0):
                        m.d.sync += start_pass(_Pass.LOAD, group=group_of[0])
                        m.next = "PASS"
                with m.Elif(self.i.valid):
                    p_ = self.i.payload
                    m.d.comb += [in_wr.en.eq(1), in_wr.addr.eq(in_j), in_wr.data.u.eq(p_.u), in_wr.data.v.eq(p_.v)]
                    m.d.sync += [s_u.eq(s_u + p_.u * p_.u), in_j.eq(in_j + 1)]
                    if S > 1:
                        with m.If(in_j == 0):
                            m.d.sync += bank.eq(p_.bank)
                    with m.If(in_j == dim - 1):
                        m.d.sync += in_j.eq(0)
                        m.next = "NORM_SQRT"
            with m.State("NORM_SQRT"):
                m.d.comb += [sq.i.valid.eq(1), sq.i.payload.radicand.eq(s_u << (2 * ng))]
                with m.If(sq.i.ready):
                    m.next = "NORM_SQRT_WAIT"
            with m.State("NORM_SQRT_WAIT"):
                m.d.comb += sq.o.ready.eq(1)
                with m.If(sq.o.valid):
                    m.d.sync += root.eq(sq.o.payload.root)
                    m.next = "NORM_DIV"
            with m.State("NORM_DIV"):
                m.d.comb += [div.i.valid.eq(1), div.i.payload.dividend.eq(1 << self._recip_num),
                             div.i.payload.divisor.eq(root)]
                with m.If(div.i.ready):
                    m.next = "NORM_DIV_WAIT"
            with m.State("NORM_DIV_WAIT"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += [recip_u.eq(div.o.payload.quotient), s_u.eq(0), s_c.eq(0)]
                    m.d.sync += start_pass(_Pass.UHAT, groups=gcount)
                    m.next = "PASS"

            # -- a pass over the dim indices (one group); what happens after it depends on the phase --------
            with m.State("PASS"):
                m.d.sync += [pv.eq(1), pj.eq(j), j.eq(j + 1)]
                with m.If(j == dim - 1):
                    m.next = "DRAIN"
            with m.State("DRAIN"):                        # the last element is processed
                m.d.sync += [pv.eq(0), j.eq(0)]
                m.next = "PASS_DONE"
            with m.State("PASS_DONE"):
                with m.Switch(phase):
                    with m.Case(_Pass.UHAT):
                        if G == 1:
                            store_group(dots, lambda p: accs[p])
                        else:
                            for p, (_, wr) in enumerate(dot_p):
                                m.d.comb += [wr.en.eq(1), wr.addr.eq(grp), wr.data.eq(accs[p])]
                        store_group(eqs, lambda p: ueqs[p])
                        with m.If(more_groups):
                            m.d.sync += next_group()
                            m.next = "PASS"
                        with m.Else():
                            m.d.sync += [a.eq(0), best.eq(0)]
                            m.next = "SCORE" if G == 1 else "SCORE_FIRST"
                    with m.Case(_Pass.NEW):
                        m.next = "RK_SQRT"
                    with m.Case(_Pass.GRAM):
                        m.d.sync += a.eq(first_of[grp] if G > 1 else 0)
                        m.next = "GRAM_WRITE"
                    with m.Case(_Pass.CV):
                        if G == 1:
                            store_group(cvs, lambda p: _narrow(accs[p], pf + rf, fm.cv, "half-up"))
                        else:
                            for p, (_, wr) in enumerate(cv_p):
                                m.d.comb += [wr.en.eq(1), wr.addr.eq(grp),
                                             wr.data.eq(_narrow(accs[p], pf + rf, fm.cv, "half-up"))]
                        with m.If(more_groups):
                            m.d.sync += next_group()
                            m.next = "PASS"
                        with m.Else():
                            m.next = "DOWNDATE"
                    with m.Case(_Pass.UPDATE):
                        m.next = "RK_SQRT"
                    with m.Case(_Pass.LOAD):              # acc = Σ_j c_bj²: r_b of loaded prototype b
                        m.d.sync += [s_c.eq(Array(accs)[unit_of[b]]), kstar.eq(b)]
                        m.next = "RK_SQRT"

            # -- selection -----------------------------------------------------------------------------------
            if G > 1:
                with m.State("SCORE_FIRST"):              # dot_0 and r_0 are read (score_addr = 0)
                    m.next = "SCORE"
            with m.State("SCORE"):
                if self._score_on_solver:        # lo · r now, hi · r and the comparison in SCORE_HI
                    m.d.comb += [score_addr.eq(a), score_on.eq(1)]
                elif G > 1:
                    m.d.comb += score_addr.eq(a + 1)
                with m.If(a == count):
                    with m.If((count == K) | ((count != 0) & Array(eqs)[kstar])):
                        m.d.sync += new.eq(0)
                        m.next = "PROJECT"
                    with m.Else():
                        m.d.sync += [new.eq(1), kstar.eq(count)] + start_pass(_Pass.NEW, group=group_of[count])
                        m.next = "PASS"
                with m.Else():
                    if self._score_on_solver:
                        m.d.sync += plo.eq(solver.mul_p)
                        m.next = "SCORE_HI"
                    else:
                        with m.If((a == 0) | (score > best)):
                            m.d.sync += [best.eq(score), kstar.eq(a)]
                        m.d.sync += a.eq(a + 1)
            if self._score_on_solver:
                with m.State("SCORE_HI"):
                    m.d.comb += [score_addr.eq(a + 1), score_on.eq(1), score_half.eq(1)]
                    with m.If((a == 0) | (score > best)):
                        m.d.sync += [best.eq(score), kstar.eq(a)]
                    m.d.sync += a.eq(a + 1)
                    m.next = "SCORE"

            # -- r_k of the new or updated prototype (kstar) ----------------------------------------------------
            with m.State("RK_SQRT"):
                m.d.comb += [sq.i.valid.eq(1), sq.i.payload.radicand.eq(s_c)]
                with m.If(sq.i.ready):
                    m.next = "RK_SQRT_WAIT"
            with m.State("RK_SQRT_WAIT"):
                m.d.comb += sq.o.ready.eq(1)
                with m.If(sq.o.valid):
                    m.d.sync += root.eq(sq.o.payload.root)
                    m.next = "RK_DIV"
            with m.State("RK_DIV"):
                m.d.comb += [div.i.valid.eq(1), div.i.payload.dividend.eq(1 << (2 * pf)),
                             div.i.payload.divisor.eq(root)]
                with m.If(div.i.ready):
                    m.next = "RK_DIV_WAIT"
            with m.State("RK_DIV_WAIT"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    r_new = Mux(root == 0, 0, div.o.payload.quotient)
                    if G == 1:
                        m.d.sync += recip_reg(bank, kstar).eq(r_new)
                    else:
                        m.d.comb += [recip_wr.en.eq(1), recip_wr.addr.eq(bank_offset(bank, K) + kstar),
                                     recip_wr.data.eq(r_new)]
                    with m.If(phase == _Pass.LOAD):
                        with m.If(b == count - 1):
                            m.d.sync += [after_refresh.eq(1), b.eq(0)] + start_pass(_Pass.GRAM, groups=gcount)
                        with m.Else():
                            m.d.sync += [b.eq(b + 1)] + start_pass(_Pass.LOAD, group=group_of[b + 1])
                        m.next = "PASS"
                    with m.Elif(phase == _Pass.NEW):
                        m.d.sync += ([count.eq(count + 1), after_refresh.eq(0), b.eq(0)]
                                     + start_pass(_Pass.GRAM, groups=groups_of[count + 1]))
                        m.next = "PASS"
                    with m.Elif(since + 1 >= self._refresh):
                        m.d.sync += [after_refresh.eq(1), b.eq(0)] + start_pass(_Pass.GRAM, groups=gcount)
                        m.next = "PASS"
                    with m.Else():
                        m.d.sync += since.eq(since + 1)
                        m.next = "RECV"

            # -- refresh: G column b into the solver (the current group's rows after each pass), then INVERT ----
            with m.State("GRAM_WRITE"):
                m.d.comb += solver.g.valid.eq(1)
                with m.If(solver.g.ready):
                    m.d.sync += a.eq(a + 1)
                    with m.If((a == count - 1) | (unit_of[a] == P - 1) if G > 1 else (a == count - 1)):
                        with m.If(more_groups):
                            m.d.sync += next_group()
                            m.next = "PASS"
                        with m.Elif(b == count - 1):
                            m.next = "INVERT"
                        with m.Else():
                            m.d.sync += b.eq(b + 1)
                            m.d.sync += start_pass(_Pass.GRAM, group=group_of[b + 1], groups=gcount)
                            m.next = "PASS"
            with m.State("INVERT"):
                m.d.comb += [solver.cmd.valid.eq(1), solver.cmd.payload.op.eq(SolverOp.INVERT)]
                with m.If(solver.cmd.ready):
                    m.next = "INVERT_WAIT"
            with m.State("INVERT_WAIT"):
                with m.If(~solver.busy):
                    m.d.sync += since.eq(0)
                    with m.If(after_refresh):
                        m.next = "RECV"
                    with m.Else():
                        m.next = "PROJECT"

            # -- projection ----------------------------------------------------------------------------------
            with m.State("PROJECT"):
                with m.If(count < 2):
                    m.d.sync += j.eq(0)
                    if G == 1:
                        m.d.sync += [w.eq(0) for w in ws]
                    else:
                        m.d.sync += grp.eq(0)
                    m.next = "OUT_READ"
                with m.Else():
                    m.d.sync += start_pass(_Pass.CV, groups=gcount)
                    m.next = "PASS"
            with m.State("DOWNDATE"):
                m.d.comb += [solver.cmd.valid.eq(1), solver.cmd.payload.op.eq(SolverOp.DOWNDATE)]
                with m.If(solver.cmd.ready):
                    m.d.sync += [a.eq(0), j.eq(0), tacc.eq(0)]
                    if G == 1:
                        m.d.sync += [w.eq(0) for w in ws]
                    else:
                        m.d.sync += grp.eq(0)
                    m.next = "DOWNDATE_WAIT"
            with m.State("DOWNDATE_WAIT"):
                with m.If(~solver.busy):
                    m.next = "W_READ"
            with m.State("W_READ"):                       # M[a, j] is read; it arrives in W_ACC
                m.next = "W_ACC"
            with m.State("W_ACC"):
                total = tacc + solver.mul_p
                with m.If(j == count - 1):
                    w_new = _narrow(total, 2 * hf, fm.w, "half-up")
                    if G == 1:
                        m.d.sync += Array(ws)[a].eq(w_new)
                    else:
                        for p, (_, wr) in enumerate(w_p_):
                            m.d.comb += [wr.en.eq(unit_of[a] == p), wr.addr.eq(group_of[a]), wr.data.eq(w_new)]
                    m.d.sync += [tacc.eq(0), j.eq(0), a.eq(a + 1)]
                    with m.If(a == count - 1):
                        m.next = "OUT_START"
                    with m.Else():
                        m.next = "W_READ"
                with m.Else():
                    m.d.sync += [tacc.eq(total), j.eq(j + 1)]
                    m.next = "W_READ"
            with m.State("OUT_START"):
                m.next = "OUT_READ"

            # -- v⊥ on o: per entry, the words of group 0 are read, then one group per cycle ----------------------
            with m.State("OUT_READ"):                     # v_j and the group-0 c_kj are read
                if G > 1:
                    m.d.sync += oacc.eq(0)
                    with m.If(gcount > 1):
                        m.next = "OUT_ACC"
                    with m.Else():
                        m.next = "OUT_SEND"
                else:
                    m.next = "OUT_SEND"
            if G > 1:
                with m.State("OUT_ACC"):                  # group grp arrives, group grp + 1 is read
                    m.d.comb += read_grp.eq(grp + 1)
                    m.d.sync += [oacc.eq(t_sum), grp.eq(grp + 1)]
                    with m.If(grp + 2 == gcount):
                        m.next = "OUT_SEND"
            with m.State("OUT_SEND"):
                with m.If(self.o.ready):
                    m.d.sync += j.eq(j + 1)
                    if G > 1:
                        m.d.sync += grp.eq(0)
                    with m.If(j == dim - 1):
                        m.d.sync += start_pass(_Pass.UPDATE, group=group_of[kstar], clear_acc=False, clear_sc=True)
                        m.next = "PASS"
                    with m.Else():
                        m.next = "OUT_READ"

        m.d.comb += [
            idle.eq(fsm.ongoing("RECV")),
            self.idle.eq(fsm.ongoing("RECV") & (in_j == 0)),
            self.i.ready.eq(fsm.ongoing("RECV") & ~self.load_en),
            out_phase.eq(fsm.ongoing("OUT_SEND") | (fsm.ongoing("OUT_ACC") if G > 1 else 0)),
            self.o.valid.eq(fsm.ongoing("OUT_SEND")),
            self.o.payload.v.eq(Mux(count < 2, vpass_j, vperp_j)),
            self.o.payload.k_star.eq(kstar),
            self.o.payload.last.eq(j == dim - 1),
        ]
        if S > 1:
            m.d.comb += self.o.payload.bank.eq(bank)
        return m


class PairBuffer(wiring.Component):
    """One sample's (u, v) pairs of a layer held for a cluster block that serves several layers (``banks`` > 1)
    and is still busy with an earlier layer's sample: the layer's pair stream never waits, the block takes the
    pairs when its turn comes.

    Parameters: ``formats``, ``depth`` (pairs per sample: the layer's n + 1). Ports: ``i`` (In stream {u, v: rate
    format, last: 1}): always ready while the sample is incomplete; the transfer marked ``last`` completes it.
    ``o`` (Out stream, same layout): the ``depth`` pairs in order, the last one marked, from the second cycle after
    the sample is complete (one-cycle memory read; ``o.valid`` then waits only on ``o.ready``). ``idle`` (Out 1):
    nothing of a sample is in the buffer. The pairs sit in block RAM (:data:`BLOCK_RAM`).
    """

    def __init__(self, *, formats: Formats, depth: int):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        _check_int("depth", depth, 1, _MAX_DIM)
        self._formats, self._depth = formats, depth
        self._layout = data.StructLayout({"u": shape(formats.rate), "v": shape(formats.rate), "last": 1})
        super().__init__({"i": In(stream.Signature(self._layout)), "o": Out(stream.Signature(self._layout)),
                          "idle": Out(1)})

    depth = property(lambda self: self._depth)
    layout = property(lambda self: self._layout)

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        pair = data.StructLayout({"u": shape(self._formats.rate), "v": shape(self._formats.rate)})
        # collision-free: written only while the sample is incomplete (``~full``); the read data is used only
        # for reads made while it is complete
        m.submodules.pairs = mem = memory.Memory(shape=pair, depth=depth, init=[], attrs=BLOCK_RAM | COLLISION_FREE)
        wr, rd = mem.write_port(), mem.read_port(domain="sync")
        wp = Signal(range(depth))
        full = Signal()                          # the sample is complete
        rp = Signal(range(depth + 1))            # the next pair to read
        valid, last = Signal(), Signal()         # the pair on ``o`` (read a cycle earlier)
        m.d.comb += [self.i.ready.eq(~full), wr.addr.eq(wp), wr.data.u.eq(self.i.payload.u),
                     wr.data.v.eq(self.i.payload.v)]
        with m.If(self.i.valid & self.i.ready):
            m.d.comb += wr.en.eq(1)
            m.d.sync += wp.eq(wp + 1)
            with m.If(self.i.payload.last):
                m.d.sync += [full.eq(1), wp.eq(0)]
        advance = ~valid | self.o.ready          # the output register is free or being taken
        m.d.comb += [rd.en.eq(advance), rd.addr.eq(rp)]
        with m.If(advance):
            with m.If(full & (rp != depth)):
                m.d.sync += [valid.eq(1), last.eq(rp == depth - 1), rp.eq(rp + 1)]
            with m.Else():
                m.d.sync += valid.eq(0)
        with m.If(self.o.valid & self.o.ready & last):
            m.d.sync += [full.eq(0), rp.eq(0)]
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.u.eq(rd.data.u), self.o.payload.v.eq(rd.data.v),
                     self.o.payload.last.eq(last), self.idle.eq(~full & (wp == 0) & ~valid)]
        return m
