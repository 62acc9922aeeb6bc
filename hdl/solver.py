"""The small solver of one layer's LOCO unit: H = (C Cᵀ + λI)⁻¹ on chip, and the Schur downdate of H.

Bit-exact twin of ``golden_model/fixed.py``: :func:`~loco_fpga.golden_model.fixed.gauss_jordan_inverse`
(``INVERT``) and :meth:`FixedClusters.downdate <loco_fpga.golden_model.fixed.FixedClusters.downdate>`
(``DOWNDATE``), for a run-time size n ≤ ``size`` (the number of active clusters, K ≤ ``size``).

Storage: one memory A of ``size`` rows × 2·``size`` columns of the H format (word r·2K + c holds A[r, c];
only the leading n rows and 2n columns are used). ``INVERT`` runs on the augmented matrix [G | I·2^hf]: the
client writes G into the left n×n block (port ``g``), the solver writes the identity block itself. After
``INVERT`` the right block (columns n … 2n − 1) holds H; ``DOWNDATE`` writes M into the left block and
leaves H in place, so H survives any number of downdates until the next ``INVERT``.

Algorithm (exactly the golden model's order and rounding):

* ``INVERT``, for pivot p = 0 … n−1:
    1. d = max(A[p, p], 1) (the pivot clamp);
    2. for j = 0 … 2n−1: A[p, j] ← sat_h(trunc((A[p, j] · 2^hf) / d)) — sign–magnitude restoring division;
    3. for every row i ≠ p in order: f = A[i, p] (read before the row is touched), then for j = 0 … 2n−1:
       A[i, j] ← sat_h(A[i, j] − ((f · A[p, j] + 2^(hf−1)) >> hf)).
* ``DOWNDATE`` k: d = max(H[k, k], 1); for i, j = 0 … n−1 (row-major):
  M[i, j] = sat_m(H[i, j] − trunc(H[i, k] · H[k, j] / d)).

One :class:`~loco_fpga.hdl.arith.Divider` serves both, with a quotient of Q = h_bits bits and its overflow
flag: every quotient ≥ 2^Q saturates the result anyway (|A| < 2^(h_bits−1)), so the flag picks the limit.
One multiplier (h_bits × h_bits) serves the elimination and the downdate products; while the solver is idle
it multiplies the client's operands instead (ports ``mul_a``, ``mul_b``, ``mul_p``), so the cluster block's
w = M·cv needs no multiplier of its own.
"""



from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .arith import Divider
from .fixed import saturate, shape, times

__all__ = ["SolverOp", "MatrixHalf", "Solver"]

_MAX_SIZE = 64
_MAX_BANKS = 16


class SolverOp(enum.Enum, shape=1):
    """Command of :class:`Solver`'s ``cmd`` stream."""
    INVERT = 0      #: H ← gauss_jordan_inverse(G) (G written through ``g`` beforehand)
    DOWNDATE = 1    #: M ← H − trunc(H[:, k] H[k, :] / H_kk)


class MatrixHalf(enum.Enum, shape=1):
    """Which n×n block a read on ``rd_addr`` returns."""
    M = 0           #: left block: G before INVERT, the last DOWNDATE's M after one
    H = 1           #: right block: H after INVERT


class Solver(wiring.Component):
    """Gauss–Jordan inverse and Schur downdate of a run-time n×n matrix, n ≤ ``size``.

    Parameters (keyword-only): ``formats`` (:class:`~loco_fpga.qformat.Formats`: ``gram``, ``h``, ``m`` —
    one width, one fraction), ``size`` (the largest n, the layer's number of clusters K), ``banks`` (default 1:
    matrices kept side by side, one per layer of a cluster block that serves several layers; the input ``bank``
    — present when ``banks`` > 1 — selects the one that commands, writes and reads use; bank b's word
    r·2K + c is ``matrix[b·2K² + r·2K + c]``).

    Ports:
        cmd (In stream of :attr:`command_layout` = {op: :class:`SolverOp`, n: 0 … size, k: 0 … size−1}):
            accepted only while idle; n = 0 is a no-op.
        busy (Out 1): high from the edge after a command is accepted until it is finished.
        g (In stream of {row, col, value: h format}): writes A[row, col] (left block: G); accepted while idle.
        rd_addr (In {row, col, half: :class:`MatrixHalf`}), rd_data (Out h format): read of A[row, col]
            (``half`` = H: A[row, n + col], n the last command's; col < 2·size, so ``half`` = M with col = n' + c
            reads H[row, c] of a bank last inverted with n'), one cycle latency; only while idle.
        mul_a, mul_b (In h format), mul_p (Out 2·h_bits signed): the solver's multiplier lent to the client,
            mul_p = mul_a · mul_b (combinational) while idle; undefined while busy.

    Timing (cycles from the edge accepting the command to the edge after which ``busy`` is low), with
    Q = h_bits: :meth:`invert_cycles` (n) = n² + n·(4 + 2n·(Q + 4) + (n − 1)(2n + 2)),
    :meth:`downdate_cycles` (n) = 3 + n·(2 + n·(Q + 4)).
    """

    def __init__(self, *, formats: Formats, size: int, banks: int = 1):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_SIZE:
            raise ValueError(f"size = {size!r}: must be an integer in [1, {_MAX_SIZE}]")
        h = formats.h
        for fmt in (formats.gram, formats.m):
            if (fmt.bits, fmt.frac, fmt.signed) != (h.bits, h.frac, h.signed):
                raise ValueError(f"formats.{fmt.name} = {fmt.label()}: the solver needs gram, h and m in one "
                                 f"format (h is {h.label()})")
        if not h.signed or not 1 <= h.frac < h.bits:
            raise ValueError(f"formats.h = {h.label()}: must be signed with 1 … bits − 1 fraction bits")
        if isinstance(banks, bool) or not isinstance(banks, int) or not 1 <= banks <= _MAX_BANKS:
            raise ValueError(f"banks = {banks!r}: must be an integer in [1, {_MAX_BANKS}]")
        self._formats, self._size, self._banks = formats, size, banks
        self._command_layout = data.StructLayout({"op": SolverOp, "n": range(size + 1), "k": range(size)})
        self._write_layout = data.StructLayout({"row": range(size), "col": range(2 * size), "value": shape(h)})
        self._read_layout = data.StructLayout({"row": range(size), "col": range(2 * size), "half": MatrixHalf})
        #: the matrix memory's contents (simulation tests read them directly)
        self.matrix = memory.MemoryData(shape=shape(h), depth=banks * 2 * size * size, init=[])
        members = {"cmd": In(stream.Signature(self._command_layout)), "busy": Out(1),
                   "g": In(stream.Signature(self._write_layout)),
                   "rd_addr": In(self._read_layout), "rd_data": Out(shape(h)),
                   "mul_a": In(shape(h)), "mul_b": In(shape(h)), "mul_p": Out(signed(2 * h.bits))}
        if banks > 1:
            members["bank"] = In(range(banks))
        super().__init__(members)

    formats = property(lambda self: self._formats)
    size = property(lambda self: self._size)
    banks = property(lambda self: self._banks)
    command_layout = property(lambda self: self._command_layout)
    write_layout = property(lambda self: self._write_layout)
    read_layout = property(lambda self: self._read_layout)

    @property
    def quotient_width(self) -> int:
        return self._formats.h.bits

    @property
    def division_cycles(self) -> int:
        """Cycles per element that needs a division: read, issue, Q + 2 waiting for the divider."""
        return self.quotient_width + 4

    def invert_cycles(self, n: int) -> int:
        """Cycles of ``INVERT`` of an n×n matrix: identity block, then per pivot its division row and the
        elimination of the n − 1 other rows."""
        if n == 0:
            return 1
        return n * n + n * (4 + 2 * n * self.division_cycles + (n - 1) * (2 * n + 2))

    def downdate_cycles(self, n: int) -> int:
        """Cycles of ``DOWNDATE``: H_kk, then per row H_ik and n divisions."""
        if n == 0:
            return 1
        return 3 + n * (2 + n * self.division_cycles)

    def elaborate(self, platform):
        m = Module()
        h, size = self._formats.h, self._size
        hb, hf = h.bits, h.frac
        stride = 2 * size

        m.submodules.divider = div = Divider(dividend_width=2 * hb - 1, divisor_width=hb - 1,
                                             quotient_width=self.quotient_width)
        m.submodules.mem = mem = memory.Memory(self.matrix)
        rd_a = mem.read_port(domain="sync")       # the pivot row p (INVERT) / row k of H (DOWNDATE)
        rd_b = mem.read_port(domain="sync")       # the row being eliminated / downdated; client reads
        wr = mem.write_port()

        bank_base = times(self.bank, stride * size) if self._banks > 1 else 0

        def addr(row, col):
            return bank_base + row * stride + col

        op = Signal(SolverOp)
        n = Signal(range(size + 1))
        k = Signal(range(size))
        p = Signal(range(size))
        i = Signal(range(size + 1))
        j = Signal(range(2 * size))
        d = Signal(hb - 1)                 # the clamped divisor, 1 … 2^(hb−1) − 1
        f = Signal(signed(hb))             # elimination factor A[i, p] / downdate factor H[i, k]
        neg = Signal()
        h_ij = Signal(signed(hb))

        a_val = rd_a.data.as_signed()
        b_val = rd_b.data.as_signed()
        # the one multiplier: f · A[p or k, j] while busy, the client's mul_a · mul_b while idle
        idle = Signal()
        product = Signal(signed(2 * hb))
        m.d.comb += [product.eq(Mux(idle, self.mul_a, f) * Mux(idle, self.mul_b, a_val)), self.mul_p.eq(product)]

        # division result in either use: the signed quotient, or the saturation limit on overflow
        res = div.o.payload
        q_signed = Signal(signed(hb + 2))
        m.d.comb += q_signed.eq(Mux(neg, -res.quotient, res.quotient))
        gj_value = Mux(res.overflow, Mux(neg, h.min, h.max), saturate(q_signed, h))
        dd_value = Mux(res.overflow, Mux(neg, h.max, h.min), saturate(h_ij - q_signed, h))
        elim_value = saturate(b_val - ((product + (1 << (hf - 1))) >> hf), h)

        clamp = Mux(a_val < 1, 1, a_val)
        last_col = Signal(range(2 * size))
        m.d.comb += last_col.eq(Mux(op == SolverOp.INVERT, 2 * n - 1, n - 1))

        m.d.comb += [rd_a.en.eq(1), rd_b.en.eq(1)]
        # client reads while idle (overridden by the FSM states below)
        ra = self.rd_addr
        m.d.comb += rd_b.addr.eq(addr(ra.row, Mux(ra.half == MatrixHalf.H, n + ra.col, ra.col)))
        m.d.comb += self.rd_data.eq(b_val)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [wr.en.eq(self.g.valid), wr.addr.eq(addr(self.g.payload.row, self.g.payload.col)),
                             wr.data.eq(self.g.payload.value)]
                with m.If(self.cmd.valid):
                    c = self.cmd.payload
                    m.d.sync += [op.eq(c.op), n.eq(c.n), k.eq(c.k), p.eq(0), i.eq(0), j.eq(0)]
                    with m.If(c.n == 0):
                        m.next = "IDLE_AFTER_NOP"
                    with m.Elif(c.op == SolverOp.INVERT):
                        m.next = "INIT"
                    with m.Else():
                        m.next = "DD_START"
            with m.State("IDLE_AFTER_NOP"):
                m.next = "IDLE"

            # -- INVERT ----------------------------------------------------------------------------------
            with m.State("INIT"):                        # right block ← I·2^hf
                m.d.comb += [wr.en.eq(1), wr.addr.eq(addr(i, n + j)), wr.data.eq(Mux(i == j, 1 << hf, 0))]
                with m.If(j == n - 1):
                    m.d.sync += [j.eq(0), i.eq(i + 1)]
                    with m.If(i == n - 1):
                        m.d.sync += i.eq(0)
                        m.next = "PIVOT_READ"
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            with m.State("PIVOT_READ"):
                m.d.comb += rd_a.addr.eq(addr(p, p))
                m.next = "PIVOT"
            with m.State("PIVOT"):
                m.d.sync += [d.eq(clamp), j.eq(0)]
                m.next = "DIV_READ"
            with m.State("DIV_READ"):
                m.d.comb += rd_a.addr.eq(addr(p, j))
                m.next = "DIV_ISSUE"
            with m.State("DIV_ISSUE"):
                m.d.comb += [rd_a.addr.eq(addr(p, j)), div.i.valid.eq(1),
                             div.i.payload.dividend.eq(Mux(a_val < 0, -a_val, a_val) << hf),
                             div.i.payload.divisor.eq(d)]
                with m.If(div.i.ready):
                    m.d.sync += neg.eq(a_val < 0)
                    m.next = "DIV_WAIT"
            with m.State("DIV_WAIT"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.comb += [wr.en.eq(1), wr.addr.eq(addr(p, j)), wr.data.eq(gj_value)]
                    with m.If(j == last_col):
                        m.d.sync += i.eq(0)
                        m.next = "ELIM_ROW"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        m.next = "DIV_READ"
            with m.State("ELIM_ROW"):
                with m.If(i == n):
                    with m.If(p == n - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += p.eq(p + 1)
                        m.next = "PIVOT_READ"
                with m.Elif(i == p):
                    m.d.sync += i.eq(i + 1)
                with m.Else():
                    m.d.comb += rd_b.addr.eq(addr(i, p))
                    m.next = "ELIM_FACTOR"
            with m.State("ELIM_FACTOR"):
                m.d.comb += [rd_a.addr.eq(addr(p, 0)), rd_b.addr.eq(addr(i, 0))]
                m.d.sync += [f.eq(b_val), j.eq(0)]
                m.next = "ELIM_RUN"
            with m.State("ELIM_RUN"):                    # A[p, j], A[i, j] arrive; reads for j + 1 go out
                m.d.comb += [rd_a.addr.eq(addr(p, j + 1)), rd_b.addr.eq(addr(i, j + 1)),
                             wr.en.eq(1), wr.addr.eq(addr(i, j)), wr.data.eq(elim_value)]
                with m.If(j == last_col):
                    m.d.sync += i.eq(i + 1)
                    m.next = "ELIM_ROW"
                with m.Else():
                    m.d.sync += j.eq(j + 1)

            # -- DOWNDATE --------------------------------------------------------------------------------
            with m.State("DD_START"):
                m.d.comb += rd_a.addr.eq(addr(k, n + k))
                m.next = "DD_PIVOT"
            with m.State("DD_PIVOT"):
                m.d.sync += [d.eq(clamp), i.eq(0)]
                m.next = "DD_ROW"
            with m.State("DD_ROW"):
                with m.If(i == n):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += rd_b.addr.eq(addr(i, n + k))
                    m.next = "DD_FACTOR"
            with m.State("DD_FACTOR"):
                m.d.sync += [f.eq(b_val), j.eq(0)]
                m.next = "DD_READ"
            with m.State("DD_READ"):
                m.d.comb += [rd_a.addr.eq(addr(k, n + j)), rd_b.addr.eq(addr(i, n + j))]
                m.next = "DD_ISSUE"
            with m.State("DD_ISSUE"):
                m.d.comb += [rd_a.addr.eq(addr(k, n + j)), rd_b.addr.eq(addr(i, n + j)), div.i.valid.eq(1),
                             div.i.payload.dividend.eq(Mux(product < 0, -product, product)),
                             div.i.payload.divisor.eq(d)]
                with m.If(div.i.ready):
                    m.d.sync += [neg.eq(product < 0), h_ij.eq(b_val)]
                    m.next = "DD_WAIT"
            with m.State("DD_WAIT"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.comb += [wr.en.eq(1), wr.addr.eq(addr(i, j)), wr.data.eq(dd_value)]
                    with m.If(j == last_col):
                        m.d.sync += i.eq(i + 1)
                        m.next = "DD_ROW"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        m.next = "DD_READ"
        # ports as functions of the state outside the FSM (Icarus evaluates them from time 0; see layer.py)
        m.d.comb += [idle.eq(fsm.ongoing("IDLE")),
                     self.busy.eq(~fsm.ongoing("IDLE")), self.cmd.ready.eq(fsm.ongoing("IDLE")),
                     self.g.ready.eq(fsm.ongoing("IDLE"))]
        return m
