"""The LOCO cluster work of one or more layers as a program for the microcoded datapath (hdl/microcode.py).

:class:`LocoProgram` generates, for ``dims`` (one entry per layer served: its input width n + 1, the bias
entry last), the code and the initial data memory of a machine that does exactly what ``FixedClusters``
(golden_model/fixed.py) does for each layer, integer for integer: per sample, from the (u, v) pairs the host
wrote, ``normalise``, ``select`` (a new cluster and its refresh when needed), ``project`` (v⊥ into the VP
buffer, k* into ``KSTAR``) and ``update`` (the prototype, its r_k and the refresh every N_ref samples).
Entry ``sample`` (run with Z = bank b's base: one copy of the code serves every bank) runs one sample of layer
(bank) b up to v⊥ (normalise, select, project), entry ``update`` its update (the prototype, r_k, the refresh every
N_ref samples); entry ``reload`` follows a host load of bank b's prototypes and count (r_k of every active
prototype, the refresh, samples since refresh
← 0: what ``ClusterBlock`` does on a load of the count). Entry ``init`` writes the whole initial data memory
(every variable 0, then the constants and each bank's dim), for a data memory that has no initial contents of its own (the UP5K's
SPRAM): :meth:`initial_memory` is what it leaves.

Data memory (one word per value):

- per bank b, at its base (the Z register while the program serves it): the count of active clusters, the
  samples since the last refresh, the bank's dim, H (K × K, row stride K), then K prototype rows of
  S = max(dims) + 2 words — r_k, w_k, c_k0 … c_k,dim−1. The code is one copy for every bank: its addresses of
  bank data are Z-relative, its loops over j run to the dim word, and its bounds (chunks, root steps) are
  those of the widest bank — the same integers, a few more cycles for a narrower bank;
- shared: U, V (the inputs: the host writes the pair (u_j, v_j) packed into U[j] as u_j + 2^16 v_j, one word
  per pair, and the program unpacks it first), UH (û), VP (v⊥), ROW (a copy of one prototype, the gram's other
  operand), GL (the left half of Gauss–Jordan's augmented matrix, then the downdated M, K × K), PROW (the
  pivot row, 2K; row k* of H for the downdate), CV (K), the variables of the loops, and the constants.

How the arithmetic maps onto the machine (every narrowing is ``narrow``'s: add 2^(s−1) for half-up, shift
right arithmetically, saturate):

- Σ u², Σ c², dot products and C v: 16-bit × 16-bit products, one ``MUL`` each, exact 64-bit sums;
- the square roots and divisions: the restoring steps, the radicand / dividend pre-shifted to the top of Q;
  divisions with a signed dividend (Gauss–Jordan's row ÷ pivot, the downdate's H_ik H_kj / H_kk) divide the
  magnitude and negate — ``div_trunc``;
- wider products (u_j · recip, dot_k · r_k, Gauss–Jordan's eliminations): 15-bit chunks in Horner order,
  ``A ← (A ≪ 15) + P`` per weight; wide sums of products (w = M cv, Cᵀ w): Horner over the chunk weights,
  each weight one pass over the terms.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from loco_fpga.config import Config
from loco_fpga.qformat import Formats, formats, narrow_mode

from .microcode import ADDR_BITS, CHUNK, IMM_BITS, WORD, Cond, Machine, MulMode, Program, Reg, Shift, ZRel

__all__ = ["LocoProgram"]

_TIMING: dict = {}

A, B, Q = Reg.A, Reg.B, Reg.Q


def _chunks(lo: int, hi: int) -> int:
    """Chunks n of a value in [lo, hi]: the top (signed) chunk holds [−2^15n, 2^15n)."""
    n = 1
    while not (-(1 << (CHUNK * n)) <= lo and hi < (1 << (CHUNK * n))):
        n += 1
    return n


def _signed_chunks(bits: int) -> int:
    return _chunks(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


class LocoProgram:
    """Code, initial data memory and the memory map for the layers of input widths ``dims``; the other
    parameters as :class:`~loco_fpga.hdl.clusters.ClusterBlock`'s (``ridge`` λ in gram LSBs); :meth:`from_config`
    derives them from a config."""

    def __init__(self, *, formats: Formats, dims, clusters: int, refresh: int, ridge: int, norm_guard: int,
                 recip_extra: int, loss_outputs: int = 0, readout: bool = False):
        fm = formats
        self.fmts = fm
        self.dims = tuple(dims) if isinstance(dims, (list, tuple)) else dims
        if (not isinstance(self.dims, tuple) or not self.dims
                or any(isinstance(d, bool) or not isinstance(d, int) or not 2 <= d <= 1 << 10 for d in self.dims)):
            raise ValueError(f"dims = {dims!r}: every layer needs at least one input and the bias entry "
                             "(2 … 1024 values)")
        for name, value, lo, hi in (("clusters", clusters, 1, 64), ("refresh", refresh, 1, 1 << 20),
                                    ("ridge", ridge, 0, fm.gram.max), ("norm_guard", norm_guard, 0, 16),
                                    ("recip_extra", recip_extra, 0, 24)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")
        self.K = K = clusters
        self.refresh_every = refresh
        self.steps = 1 << fm.log2_steps
        self.pf, self.hf, self.vf, self.rf = fm.proto.frac, fm.h.frac, fm.vperp.frac, fm.log2_steps
        self.ng, self.re, self.m = norm_guard, recip_extra, fm.proto_shift
        if self.vf < self.rf:
            raise ValueError(f"vperp_frac {self.vf} < log2 T {self.rf}: v ≪ (vf − rf) needs vf ≥ rf")
        for f in (fm.uhat, fm.gram, fm.cv, fm.w):
            if narrow_mode(f) != "half-up":
                raise ValueError(f"format {f.name}: the program rounds half up, the format says {f.rounding}")
        if isinstance(loss_outputs, bool) or not isinstance(loss_outputs, int) or not 0 <= loss_outputs <= 255:
            raise ValueError(f"loss_outputs = {loss_outputs!r}: must be an integer in [0, 255] (0: no loss entry)")
        self.n_loss = loss_outputs
        if not isinstance(readout, bool):
            raise ValueError(f"readout = {readout!r}: must be True or False")
        if readout and not loss_outputs:
            raise ValueError("readout = True: the readout computes the loss's outputs (loss_outputs > 0)")
        self.readout = readout
        loss_formats = (fm.out, fm.dl, fm.g) if loss_outputs else ()
        for f in loss_formats[1:]:
            if narrow_mode(f) != "half-up":
                raise ValueError(f"format {f.name}: the program rounds half up, the format says {f.rounding}")
        if loss_outputs and fm.out.frac != fm.weight.frac:
            raise ValueError(f"formats.out = {fm.out.label()}: the loss needs the weight format's fraction bits")
        if loss_outputs and fm.g.bits > 24:
            raise ValueError(f"formats.g = {fm.g.label()}: the loss returns g in 24 bits of the accumulator")
        self.widths = tuple(sorted({f.bits for f in (fm.uhat, fm.proto, fm.gram, fm.h, fm.m, fm.cv, fm.w,
                                                     fm.vperp) + loss_formats}))
        # -- memory map -------------------------------------------------------------------------------
        self._next = 0
        self._consts: dict[int, int] = {}
        dmax = max(self.dims)
        self.U, self.V, self.UH, self.VP, self.ROW = (self._alloc(dmax) for _ in range(5))
        self.GL = self._alloc(K * K)
        self.PROW = self._alloc(2 * K)
        self.CV = self._alloc(K)
        self.KSTAR, self.TMP, self.HKK, self.RETSEL, self.FLAG = (self._alloc(1) for _ in range(5))
        self.VA, self.VB, self.VP_, self.VI = (self._alloc(1) for _ in range(4))
        # the loss (``loss_outputs`` = n_L > 0): LY[2k] = y_k, LY[2k + 1] = ỹ_k, LR (the LR register) and LABEL,
        # written by the host; VK, TK, BEST, PRED, DY, BT, DLW, GW, SINK: k, t_k, the largest y so far and its k,
        # Δy_k, Δy_k + 2 (y_k − t_k), dl, g, a word the balanced branch's other path writes
        self.LY = self._alloc(2 * loss_outputs)
        (self.LR, self.LABEL, self.VK, self.TK, self.BEST, self.PRED, self.DY, self.BT, self.DLW, self.GW,
         self.SINK) = (self._alloc(1) for _ in range(11))
        # the readout: SG (the output layer's noise word, written by the host), SR (its bits still to use), NB (the
        # noisy pass's start value), RV (a result); the weights are read from a window of the address space, WIN +
        # k·C + j for W_kj (C = the last bank's dim: row k of the output layer's weight memory at one weight a word)
        self.SG, self.SR, self.NB, self.RV = (self._alloc(1) for _ in range(4)) if readout else (None,) * 4
        self.WIN = 1 << (ADDR_BITS - 1) if readout else None
        self.ridge = ridge
        # one bank per layer, at base Z: count, since, dim, H (K × K), then K rows of S = dmax + 2 words:
        # r_k, w_k, c_k0 … c_k,dim−1 (the same stride in every bank: the code is one copy for all of them)
        self.S = S = dmax + 2
        self.rel = {"count": ZRel(0), "since": ZRel(1), "dim": ZRel(2), "h": ZRel(3), "rk": ZRel(3 + K * K),
                    "wk": ZRel(4 + K * K), "proto": ZRel(5 + K * K)}
        self.banks = []
        for d in self.dims:
            base = self._alloc(3 + K * K + K * S)
            self.banks.append({"dim": d, "stride": S, "base": base, "count": base, "since": base + 1,
                               "dim_word": base + 2, "h": base + 3, "row": base + 3 + K * K,
                               "proto": base + 5 + K * K})
        self._const_base = self._next
        # -- code ------------------------------------------------------------------------------------
        self.p = Program()
        self._subroutines: dict[tuple, str] = {}
        self._pending: list = []
        self._code()
        while self._pending:                                  # subroutines, after the entry code
            self._pending.pop(0)()
        self._init_code()                                     # last: it writes every constant the code uses
        self.code = self.p.assemble()
        # per bank (one copy of the code: the same address for every bank; a run of bank b starts with Z = base)
        self.entry_address = [self.p.labels["sample"]] * len(self.dims)
        self.update_address = [self.p.labels["update"]] * len(self.dims)
        self.reload_address = [self.p.labels["reload"]] * len(self.dims)
        self.bank_base = [bk["base"] for bk in self.banks]
        self.init_address = self.p.labels["init"]
        self.loss_address = self.p.labels.get("loss")
        self.depth = self._const_base + len(self._consts)
        if self.depth > 1 << ADDR_BITS or len(self.code) > 1 << ADDR_BITS:
            raise ValueError(f"dims = {dims!r}, clusters = {clusters}: the program needs {self.depth} data words and "
                             f"{len(self.code)} instructions, more than the {1 << ADDR_BITS} an address reaches")
        if readout and (self.depth > self.WIN or self.n_loss * self.dims[-1] > (1 << ADDR_BITS) - self.WIN):
            raise ValueError(f"readout = True: {self.depth} data words and {self.n_loss} × {self.dims[-1]} output "
                             f"weights; each half of the {1 << ADDR_BITS}-word address space holds {self.WIN}")
        # the per-path instruction counts, shared by every program with the same code and initial memory
        self._timing = _TIMING.setdefault((tuple(self.code), tuple(self.initial_memory()), self.widths), {})

    @classmethod
    def from_config(cls, config: Config, dims, *, loss_outputs: int = 0, readout: bool = False) -> "LocoProgram":
        fm = formats(config)
        return cls(formats=fm, dims=dims, clusters=config.rule.clusters, refresh=config.rule.refresh,
                   ridge=fm.gram.from_float(config.rule.ridge), norm_guard=config.fixed.norm_guard,
                   recip_extra=config.fixed.recip_extra, loss_outputs=loss_outputs, readout=readout)

    # -- memory ----------------------------------------------------------------------------------------
    def _alloc(self, n: int) -> int:
        a = self._next
        self._next += n
        return a

    def const(self, v: int) -> int:
        """Address of a constant word holding ``v`` (the constants follow the variables)."""
        if not -(1 << 31) <= v < (1 << 31):
            raise ValueError(f"constant {v} does not fit a data word")
        if v not in self._consts:
            self._consts[v] = len(self._consts)
        return self._const_base + self._consts[v]

    def initial_memory(self) -> list[int]:
        mem = [0] * self.depth
        for v, i in self._consts.items():
            mem[self._const_base + i] = v
        for bk in self.banks:
            mem[bk["dim_word"]] = bk["dim"]
        return mem

    def _init_code(self):
        """Entry ``init``: every word 0, then every other constant and each bank's dim (an LDI when it fits the
        immediate, else LDI of its top bits, shifted up 12 places, plus its low 12 bits through B)."""
        p = self.p
        p.label("init")
        depth = self._const_base + len(self._consts)
        zeroed = depth if depth < 1 << ADDR_BITS else self._const_base      # (a loop count is < 2^12)
        p.ldi(A, 0)
        with self.over_j(zeroed):
            p.st(0, uy=True)
        words = [(self._const_base + i, v) for v, i in self._consts.items()
                 if v or self._const_base + i >= zeroed]
        words += [(bk["dim_word"], bk["dim"]) for bk in self.banks]
        for addr, v in words:
            if -(1 << (IMM_BITS - 1)) <= v < 1 << (IMM_BITS - 1):
                p.ldi(A, v)
            else:
                p.ldi(A, v >> 12)
                self.shl(12)
                p.ldi(B, v & 0xFFF)
                p.add()
            p.st(addr)
        p.halt()

    def sat_index(self, fmt) -> int:
        return self.widths.index(fmt.bits)

    # -- emit helpers -------------------------------------------------------------------------------------
    def _shifts(self, kind8: Shift, kind1: Shift, n: int):
        """n single-place shifts as SHIFT-by-8s and -by-1s; a run of four or more as a loop on L3."""
        for kind, times in ((kind8, n // 8), (kind1, n % 8)):
            if times >= 4:
                self.p.setl(3, times)
                top = self.p.label()
                self.p.shift(kind)
                self.p.djnz(3, top)
            else:
                for _ in range(times):
                    self.p.shift(kind)

    def sar(self, n: int):
        self._shifts(Shift.SAR8, Shift.SAR1, n)

    def shl(self, n: int):
        self._shifts(Shift.SHL8, Shift.SHL1, n)

    def narrow(self, shift: int, fmt):
        """A ← sat_fmt(shift_round(A, shift, half-up)) (shift ≤ 0: exact left shift)."""
        self.narrow_no_sat(shift)
        self.p.sat(self.sat_index(fmt))

    def product(self, nb: int, nq: int, mem=None, ux=False, uy=False):
        """A ← src · Q, src (``nb`` chunks) = B or the memory word ``mem``, Q ``nq`` chunks: Horner order."""
        p = self.p
        for w in range(nb + nq - 2, -1, -1):
            terms = [(i, w - i) for i in range(nb) if 0 <= w - i < nq]
            for t, (i, j) in enumerate(terms):
                if t == 0:
                    mode = MulMode.SET if w == nb + nq - 2 else MulMode.HORNER
                else:
                    mode = MulMode.ADD
                p.mul(mode, i, i == nb - 1, j, j == nq - 1, mem=mem, ux=ux, uy=uy)

    def x_from(self, var: int, stride: int):
        """X ← mem[var] · stride."""
        p = self.p
        p.ld(Q, var)
        p.mul(MulMode.SET, 0, True, 0, True, mem=self.const(stride))
        p.movx()

    @contextmanager
    def for_var(self, var: int, end: int, start: int | None = None):
        """for mem[var] in [start or 0, mem[end]) — a loop whose bound is in memory (``start``: an address)."""
        p = self.p
        top, done = p.fresh("for"), p.fresh("done")
        if start is None:
            p.ldi(A, 0)
        else:
            p.ld(A, start)
        p.st(var)
        p.label(top)
        p.ld(A, var)
        p.sub(end)
        p.br(Cond.NNEG, done)
        yield
        p.ld(A, var)
        p.add(self.const(1))
        p.st(var)
        p.jmp(top)
        p.label(done)

    @contextmanager
    def over_j(self, n: int | None = None, counter: int = 0, count_addr: int | None = None, keep_a=False,
               first=None):
        """Y = 0 … n − 1 (or mem[count_addr] − 1, which must be ≥ 1) with loop counter ``counter``;
        ``keep_a``: A survives the set-up (through B); ``first``: emits code after the set-up, before the loop."""
        p = self.p
        p.sety(0)
        if count_addr is None:
            p.setl(counter, n)
        else:
            if keep_a:
                p.mov(B, A)
            p.ld(A, count_addr)
            p.movl(counter)
            if keep_a:
                p.mov(A, B)
        if first is not None:
            first()
        top = p.label()
        yield
        p.addy(1)
        p.djnz(counter, top)

    def subroutine(self, key: tuple, body) -> str:
        """Label of a leaf subroutine made once by ``body()`` (emitted after the entry code)."""
        if key not in self._subroutines:
            name = self.p.fresh("sub")
            self._subroutines[key] = name

            def emit():
                self.p.label(name)
                body()
                self.p.ret()
            self._pending.append(emit)
        return self._subroutines[key]

    def udiv(self, n: int):
        """Q ← ⌊dividend / B⌋ where Q holds the dividend ≪ (64 − n) (dividend < 2^n), B > 0; A ← remainder."""
        p = self.p
        p.ldi(A, 0)
        p.setl(3, n)
        top = p.label()
        p.divstep()
        p.djnz(3, top)

    def sdiv_sub(self, pre: int, n: int) -> str:
        """Subroutine: A ← div_trunc(A ≪ pre, B), B > 0, |A| ≪ pre < 2^n."""
        def body():
            p = self.p
            neg = p.fresh()
            p.br(Cond.NEG, neg)
            for negative in (False, True):          # the magnitude's division, twice: no room for a sign bit
                if negative:
                    p.label(neg)
                    p.neg()
                else:                                # the same cycles on both paths: two NEGs cancel
                    p.neg()
                    p.neg()
                self.shl(pre + WORD - n)
                p.mov(Q, A)
                self.udiv(n)
                p.mov(A, Q)
                if negative:
                    p.neg()
                else:
                    p.ret()
        return self.subroutine(("sdiv", pre, n), body)

    def isqrt(self, bits: int):
        """B ← ⌊√A⌋ for 0 ≤ A < 2^bits."""
        p = self.p
        m = (bits + 1) // 2
        self.shl(WORD - 2 * m)
        p.mov(Q, A)
        p.ldi(A, 0)
        p.ldi(B, 0)
        p.setl(3, m)
        top = p.label()
        p.sqrtstep()
        p.djnz(3, top)

    def recip_pow2(self, e: int):
        """Q ← ⌊2^e / B⌋, B > 0."""
        p = self.p
        if e + 1 > WORD - 1:
            raise ValueError(f"2^{e} does not fit the divider")
        p.ldi(Q, -(1 << 19), high=True)           # bit 63: the dividend 2^e ≪ (64 − (e + 1))
        self.udiv(e + 1)

    # -- the algorithm ----------------------------------------------------------------------------------
    def _code(self):
        """The entries, one copy for every bank (run with Z = the bank's base): ``sample`` (one sample),
        ``update``, ``reload`` (after a host load of the prototypes and the count: r_k of every active prototype,
        then the refresh — H of an empty set is empty — and since ← 0), and the refresh they share."""
        p, bank = self.p, self.rel
        self._sites = []
        p.label("sample")
        for step in (self._unpack, self._normalise, self._select, self._project):
            p.label(p.fresh(step.__name__[1:]))
            step()
        p.halt()
        p.label("update")
        self._update()
        p.halt()
        p.label("reload")
        with self.for_var(self.VA, bank["count"]):
            self.x_from(self.VA, self.S)
            self._recip_norm()
        empty = p.fresh()
        p.ld(A, bank["count"])
        p.br(Cond.Z, empty)
        self._goto_refresh()
        p.halt()
        p.label(empty)
        p.st(bank["since"])
        p.halt()
        if self.n_loss:
            p.label("loss")
            if self.readout:
                self._readout()
            self._loss()
            p.halt()
        # the refresh, entered by a jump with its return site's number in RETSEL (a CALL cannot nest, and the
        # refresh calls the divider)
        p.label("refresh")
        self._refresh()
        p.ld(A, self.RETSEL)
        for i, site in enumerate(self._sites[:-1]):
            if i:
                p.sub(self.const(1))
            p.br(Cond.Z, site)
        p.jmp(self._sites[-1])

    def _loss(self):
        """``LossUnit``'s dl and g (golden_model/fixed.py, ``FixedRule.loss_unit``) and the prediction from LY, LR
        and LABEL: Δy_k = sat_out(ỹ_k − y_k); ΔL_sum = Σ_k Δy_k (Δy_k + 2 (y_k − t_k)), t_k = 2^wf·[k = label],
        exact in B; dl and g narrowed half up; the prediction is the first k of the largest y_k. Every branch is
        balanced (one path for all data). It ends with A = dl · 2^32 + pred · 2^24 + g + 2^23: dl is A's top 32
        bits, pred bits 24 … 31, g bits 0 … 23 with bit 23 inverted."""
        p, fm = self.p, self.fmts
        wf = fm.weight.frac
        dy_chunks = _signed_chunks(fm.out.bits)
        b_chunks = _signed_chunks(fm.out.bits + 3)          # |Δy + 2 (y − t)| < 3 · 2^(ob − 1) + 2^(wf + 1)
        p.ld(A, self.const(fm.out.min - 1))                 # below every y: output 0 is taken first
        p.st(self.BEST)
        p.ldi(A, 0)
        p.st(self.VK)
        p.ldi(B, 0)
        p.setx(0)
        with self.over_j(self.n_loss):                      # X = Y = k: LY + X + Y = LY + 2k
            p.ld(A, self.VK)                                # t_k
            p.sub(self.LABEL)
            self.balanced(Cond.Z, lambda: p.ldi(A, 1 << wf), lambda: p.ldi(A, 0))
            p.st(self.TK)
            p.ld(A, self.LY, ux=True, uy=True)              # y_k > the largest so far: the prediction

            def take(dest_best, dest_k):
                def emit():
                    p.ld(A, self.LY, ux=True, uy=True)
                    p.st(dest_best)
                    p.ld(A, self.VK)
                    p.st(dest_k)
                return emit
            p.sub(self.BEST)
            self.balanced(Cond.POS, take(self.BEST, self.PRED), take(self.SINK, self.SINK))
            p.ld(A, self.LY + 1, ux=True, uy=True)          # Δy_k
            p.sub(self.LY, ux=True, uy=True)
            p.sat(self.sat_index(fm.out))
            p.st(self.DY)
            p.mov(Q, A)
            p.ld(A, self.LY, ux=True, uy=True)              # Δy_k + 2 (y_k − t_k)
            p.sub(self.TK)
            p.shift(Shift.SHL1)
            p.add(self.DY)
            p.st(self.BT)
            self.product(b_chunks, dy_chunks, mem=self.BT)
            p.add()
            p.mov(B, A)
            p.addx(1)
            p.ld(A, self.VK)
            p.add(self.const(1))
            p.st(self.VK)
        p.mov(A, B)
        self.narrow(2 * wf - fm.dl.frac, fm.dl)
        p.st(self.DLW)
        p.mov(Q, A)
        self.product(_chunks(0, fm.lr.max), _signed_chunks(fm.dl.bits), mem=self.LR)
        self.narrow(fm.dl.frac + fm.lr.frac - fm.g.frac, fm.g)
        p.st(self.GW)
        p.ld(A, self.DLW)                                   # A ← (dl · 2^8 + pred) · 2^24 + g + 2^23
        p.shift(Shift.SHL8)
        p.add(self.PRED)
        self.shl(24)
        p.add(self.GW)
        p.add(self.const(1 << 23))

    def _readout(self):
        """The output layer from the last bank's counts: LY[2k] = y_k, LY[2k + 1] = ỹ_k with

            y_k = sat_out((T/2 + Σ_j W_kj u_j) ≫ log2 T),   ỹ_k = sat_out((T/2 ± T·σ + Σ_j W_kj v_j) ≫ log2 T)

        (j over the bias entry too: u = v = T there; + when bit k of SG is 1). ``FixedNetwork.run`` adds
        sat_acc(W s_t + b ± σ) over the T steps; where no such sum can saturate (the layer engine's ``fold``
        condition, which :class:`~loco_fpga.hdl.micro_clusters.MicroClusterBlock` checks) that is the same integer
        as W·(Σ_t s_t) + T·b ± T·σ — a product per weight instead of a sum per step. U and V still hold the last
        bank's u and v (the program writes them only when it unpacks a sample). One path for all data."""
        p, fm = self.p, self.fmts
        T, log2t = self.steps, fm.log2_steps
        t_sigma = T << (fm.weight.frac - fm.sigma_shift)
        half = T >> 1
        C = self.dims[-1]
        p.ld(A, self.SG)
        p.st(self.SR)
        p.ldi(A, 0)
        p.st(self.VK)
        p.setx(0)                                           # X = k·C: row k's weights
        p.setl(1, self.n_loss)
        top = p.label()
        # bit k of SG: with w = SR, h = w ≫ 1, 2h − w = −bit
        p.ld(A, self.SR)
        p.shift(Shift.SAR1)
        p.st(self.RV)
        p.shift(Shift.SHL1)
        p.sub(self.SR)
        self.balanced(Cond.Z, lambda: p.ld(A, self.const(half - t_sigma)), lambda: p.ld(A, self.const(half + t_sigma)))
        p.st(self.NB)
        p.ld(A, self.RV)
        p.st(self.SR)
        for noisy, (src, start) in enumerate(((self.U, self.const(half)), (self.V, self.NB))):
            p.ld(A, start)
            with self.over_j(C):
                p.ld(Q, src, uy=True)
                p.mul(MulMode.ADD, 0, True, 0, True, mem=self.WIN, ux=True, uy=True)
            self.sar(log2t)
            p.sat(self.sat_index(fm.out))
            p.st(self.RV)
            p.ld(A, self.VK)                                # Y = 2k (+ 1)
            p.shift(Shift.SHL1)
            if noisy:
                p.add(self.const(1))
            p.movy()
            p.ld(A, self.RV)
            p.st(self.LY, uy=True)
        p.addx(C)
        p.ld(A, self.VK)
        p.add(self.const(1))
        p.st(self.VK)
        p.djnz(1, top)

    def window_machine(self, mach: Machine, weights) -> Machine:
        """``mach`` with the readout's weight window: the output layer's weights (n_L × C) at WIN + k·C + j."""
        w = np.asarray(weights, dtype=np.int64)
        if not self.readout:
            raise ValueError("this program has no readout (readout = False)")
        if w.shape != (self.n_loss, self.dims[-1]):
            raise ValueError(f"weights of shape {w.shape}: the readout takes {self.n_loss} × {self.dims[-1]}")
        if len(mach.mem) < self.WIN:
            mach.mem.extend([0] * (self.WIN - len(mach.mem)))
        mach.mem[self.WIN:] = [int(v) for v in w.reshape(-1)]
        return mach

    def run_readout(self, mach: Machine, weights, signs: int, label: int, lr_q: int) -> tuple[int, int, int]:
        """The ``loss`` entry with the readout on ``mach``, whose U and V hold the last bank's sample (after
        :meth:`run_sample`): ``weights`` the output layer's (n_L × C), ``signs`` its noise word. (dl, g, prediction);
        y_k and ỹ_k are left in LY."""
        self.window_machine(mach, weights)
        mach.mem[self.SG] = int(signs) - ((int(signs) >> 31 & 1) << 32)     # the word as the host writes it
        mach.mem[self.LR], mach.mem[self.LABEL] = int(lr_q), int(label)
        mach.run(self.loss_address)
        return self.unpack_loss(mach.a)

    def outputs(self, mach: Machine) -> tuple[np.ndarray, np.ndarray]:
        """(y, ỹ) from LY."""
        ly = np.array(mach.mem[self.LY:self.LY + 2 * self.n_loss], dtype=np.int64)
        return ly[0::2], ly[1::2]

    def run_loss(self, mach: Machine, y, y_noisy, label: int, lr_q: int) -> tuple[int, int, int]:
        """The ``loss`` entry on ``mach`` for the outputs of one sample: (dl, g, prediction) from A."""
        n = self.n_loss
        if not n:
            raise ValueError("this program has no loss entry (loss_outputs = 0)")
        if self.readout:
            raise ValueError("this program's loss computes its outputs (readout = True): run_readout")
        if len(y) != n or len(y_noisy) != n:
            raise ValueError(f"the loss takes {n} outputs of each pass")
        for k in range(n):
            mach.mem[self.LY + 2 * k] = int(y[k])
            mach.mem[self.LY + 2 * k + 1] = int(y_noisy[k])
        mach.mem[self.LR], mach.mem[self.LABEL] = int(lr_q), int(label)
        mach.run(self.loss_address)
        return self.unpack_loss(mach.a)

    @staticmethod
    def unpack_loss(a: int) -> tuple[int, int, int]:
        """(dl, g, prediction) from the accumulator after ``loss``."""
        a &= (1 << WORD) - 1
        dl = (a >> 32) - ((a >> 63) << 32)
        return dl, (a & 0xFFFFFF) - (1 << 23), (a >> 24) & 0xFF

    def loss_counts(self) -> dict:
        """Instructions of each op that ``loss`` executes (one path: no data-dependent branch)."""
        if "loss" not in self._timing:
            mach = self.machine()
            before = dict(mach.counts)
            if self.readout:
                self.run_readout(mach, np.zeros((self.n_loss, self.dims[-1]), dtype=np.int64), 0, 0, 0)
            else:
                self.run_loss(mach, [0] * self.n_loss, [0] * self.n_loss, 0, 0)
            self._timing["loss"] = {op: n - before.get(op, 0) for op, n in mach.counts.items()
                                    if n > before.get(op, 0)}
        return self._timing["loss"]

    def _goto_refresh(self):
        p = self.p
        back = p.fresh("back")
        p.ldi(A, len(self._sites))
        p.st(self.RETSEL)
        self._sites.append(back)
        p.jmp("refresh")
        p.label(back)

    def over_dim(self, counter: int = 0, first=None):
        """Y = 0 … dim − 1 of the bank at Z (its dim word)."""
        return self.over_j(count_addr=self.rel["dim"], counter=counter, first=first)

    def _unpack(self):
        """V[j] ← U[j] ≫ 16, U[j] ← U[j] − (V[j] ≪ 16): the pairs the host wrote one word each."""
        p = self.p
        with self.over_dim():
            p.ld(A, self.U, uy=True)
            p.shift(Shift.SAR8)
            p.shift(Shift.SAR8)
            p.st(self.V, uy=True)
            p.shift(Shift.SHL8)
            p.shift(Shift.SHL8)
            p.neg()
            p.add(self.U, uy=True)
            p.st(self.U, uy=True)

    def _normalise(self):
        p = self.p
        d, T = max(self.dims), self.steps                 # d: a bound (the root's steps)
        with self.over_dim(first=lambda: p.ldi(A, 0)):
            p.ld(Q, self.U, uy=True)
            p.mul(MulMode.ADD, 0, True, 0, True, mem=self.U, uy=True)
        # ‖u‖ = isqrt(Σ u² · 4^ng); recip = ⌊2^(pf + ng + re) / ‖u‖⌋
        self.shl(2 * self.ng)
        self.isqrt((d * T * T).bit_length() + 2 * self.ng)
        e = self.pf + self.ng + self.re
        self.recip_pow2(e)
        nq = _chunks(0, 1 << e)
        nb = _chunks(0, T)
        with self.over_dim():
            self.product(nb, nq, mem=self.U, uy=True)
            self.narrow(self.pf + self.re - self.fmts.uhat.frac, self.fmts.uhat)
            p.st(self.UH, uy=True)

    def _recip_norm(self):
        """r_k of the prototype row at X: ⌊2^(2pf) / ⌊√(c·c)⌋⌋, 0 when c = 0."""
        p, bank = self.p, self.rel
        d = max(self.dims)                                # a bound (the root's steps)
        with self.over_dim(first=lambda: p.ldi(A, 0)):
            p.ld(Q, bank["proto"], ux=True, uy=True)
            p.mul(MulMode.ADD, 0, True, 0, True, mem=bank["proto"], ux=True, uy=True)
        pb = self.fmts.proto.bits
        self.isqrt((d << (2 * (pb - 1))).bit_length())
        self.recip_pow2(2 * self.pf)           # also when the root is 0 (its quotient is not used): same cycles
        p.mov(A, B)
        self.balanced(Cond.Z, lambda: p.mov(A, A), lambda: p.mov(A, Q))
        p.st(bank["rk"], ux=True)

    def _score_sub(self) -> str:
        """Subroutine: A ← (c_k · û) · r_k for the prototype row at X."""
        bank = self.rel
        d, pb = max(self.dims), self.fmts.proto.bits     # d: a bound (the product's chunks)

        def body():
            p = self.p
            with self.over_dim(first=lambda: p.ldi(A, 0)):
                p.ld(Q, self.UH, uy=True)
                p.mul(MulMode.ADD, 0, True, 0, True, mem=bank["proto"], ux=True, uy=True)
            p.mov(Q, A)
            bound = d << (pb - 1 + self.fmts.uhat.bits - 1)
            self.product(_chunks(0, 1 << (2 * self.pf)), _chunks(-bound, bound), mem=bank["rk"], ux=True)
        return self.subroutine(("score",), body)

    def _select(self):
        p, bank = self.p, self.rel
        S, K = self.S, self.K
        new, done = p.fresh("new"), p.fresh("sel")
        p.ld(A, bank["count"])
        p.br(Cond.Z, new)
        # k* = first argmax of the scores over the active clusters (best score in B)
        score = self._score_sub()
        p.ldi(A, 0)
        p.st(self.KSTAR)
        p.setx(0)
        p.call(score)
        p.mov(B, A)
        p.setx(S)
        with self.for_var(self.VA, bank["count"], start=self.const(1)):
            p.call(score)
            p.sub()

            def better():
                p.add()
                p.mov(B, A)
                p.ld(A, self.VA)
                p.st(self.KSTAR)

            def not_better():                  # the same ops' cycles, no effect (A is dead after)
                p.add()
                p.mov(A, A)
                p.ld(A, self.VA)
                p.st(self.TMP)
            self.balanced(Cond.POS, better, not_better)
            p.addx(S)
        # full, or c_k* = û: k* stands
        p.ld(A, bank["count"])
        p.sub(self.const(K))
        p.br(Cond.Z, done)
        self.x_from(self.KSTAR, S)
        p.ldi(A, 0)
        p.st(self.FLAG)
        with self.over_dim():                 # every index (no early exit: the cycles do not depend on û)
            p.ld(A, bank["proto"], ux=True, uy=True)
            p.sub(self.UH, uy=True)

            def differs():
                p.ldi(A, 1)
                p.st(self.FLAG)

            def same():                        # the same ops (B, the best score, is done with)
                p.ldi(B, 0)
                p.st(self.TMP)
            self.balanced(Cond.NZ, differs, same)
        p.ld(A, self.FLAG)
        p.br(Cond.NZ, new)
        p.jmp(done)
        # a new cluster k* = count: c = û, its r, count + 1, refresh
        p.label(new)
        p.ld(A, bank["count"])
        p.st(self.KSTAR)
        self.x_from(bank["count"], S)
        with self.over_dim():
            p.ld(A, self.UH, uy=True)
            p.st(bank["proto"], ux=True, uy=True)
        self._recip_norm()
        p.ld(A, bank["count"])
        p.add(self.const(1))
        p.st(bank["count"])
        self._goto_refresh()
        p.label(done)

    def _refresh(self):
        """H = GJ⁻¹(sat(narrow(C Cᵀ, 2pf → gram) + λ I)) over the active clusters; since ← 0."""
        p, bank, fm = self.p, self.rel, self.fmts
        S, K, hf = self.S, self.K, self.hf
        ridge = self.ridge
        cnt = bank["count"]
        p.label(p.fresh("gram"))
        # gram, upper triangle and its mirror
        with self.for_var(self.VA, cnt):
            self.x_from(self.VA, S)
            with self.over_dim():
                p.ld(A, bank["proto"], ux=True, uy=True)
                p.st(self.ROW, uy=True)
            with self.for_var(self.VB, cnt, start=self.VA):
                self.x_from(self.VB, S)
                with self.over_dim(first=lambda: p.ldi(A, 0)):
                    p.ld(Q, self.ROW, uy=True)
                    p.mul(MulMode.ADD, 0, True, 0, True, mem=bank["proto"], ux=True, uy=True)
                self.narrow(2 * self.pf - fm.gram.frac, fm.gram)
                p.st(self.TMP)
                p.ld(A, self.VA)
                p.sub(self.VB)
                off = p.fresh()
                p.br(Cond.NZ, off)
                p.ld(A, self.TMP)
                p.add(self.const(ridge))
                p.sat(self.sat_index(fm.gram))
                p.st(self.TMP)
                p.label(off)
                self.x_from(self.VA, K)           # G[a][b]
                p.ld(A, self.VB)
                p.movy()
                p.ld(A, self.TMP)
                p.st(self.GL, ux=True, uy=True)
                self.x_from(self.VB, K)           # G[b][a]
                p.ld(A, self.VA)
                p.movy()
                p.ld(A, self.TMP)
                p.st(self.GL, ux=True, uy=True)
        p.label(p.fresh("ident"))
        # right half: I ≪ hf
        with self.for_var(self.VA, cnt):
            self.x_from(self.VA, K)
            with self.over_j(count_addr=cnt):
                p.ldi(A, 0)
                p.st(bank["h"], ux=True, uy=True)
            self.x_from(self.VA, K + 1)
            p.ld(A, self.const(1 << hf))
            p.st(bank["h"], ux=True)
        p.label(p.fresh("gj"))
        # Gauss–Jordan
        hb = max(fm.gram.bits, fm.h.bits)
        div = self.sdiv_sub(hf, hb + hf)
        halves = ((self.GL, 0), (bank["h"], K))
        with self.for_var(self.VP_, cnt):
            self.divisor(self.VP_, self.GL)       # pivot = max(a_pp, 1)
            self.x_from(self.VP_, K)
            for base, off in halves:               # row p ← sat(div_trunc(row p ≪ hf, pivot)), into PROW too
                with self.gj_columns(base == self.GL, cnt):
                    p.ld(B, self.HKK)
                    p.ld(A, base, ux=True, uy=True)
                    p.call(div)
                    p.sat(self.sat_index(fm.h))
                    p.st(base, ux=True, uy=True)
                    p.st(self.PROW + off, uy=True)
            with self.for_var(self.VI, cnt):       # rows i ≠ p: row i ← sat(row i − rnd(a_ip · row p ≫ hf))
                p.ld(A, self.VI)
                p.sub(self.VP_)
                skip = p.fresh()
                p.br(Cond.Z, skip)
                self.x_from(self.VI, K)
                p.ld(A, self.VP_)
                p.movy()
                p.ld(A, self.GL, ux=True, uy=True)
                p.st(self.TMP)                     # the factor a_ip, read before the row changes
                hc = _signed_chunks(hb)
                for base, off in halves:
                    with self.gj_columns(base == self.GL, cnt):
                        p.ld(Q, self.TMP)
                        self.product(hc, hc, mem=self.PROW + off, uy=True)
                        p.add(self.const(1 << (hf - 1)))
                        self.sar(hf)
                        p.neg()
                        p.add(base, ux=True, uy=True)
                        p.sat(self.sat_index(fm.h))
                        p.st(base, ux=True, uy=True)
                p.label(skip)
        p.ldi(A, 0)
        p.st(bank["since"])

    def balanced(self, cond: Cond, then, other):
        """if cond(A): then() else: other() — both paths a branch, their body and a jump, so with bodies of the
        same ops (the callers' are) a run's instructions do not depend on the data."""
        p = self.p
        yes, end = p.fresh(), p.fresh()
        p.br(cond, yes)
        other()
        p.jmp(end)
        p.label(yes)
        then()
        p.jmp(end)
        p.label(end)

    def divisor(self, var: int, base: int):
        """HKK ← max(a_ii, 1) for i = mem[var] of the K × K matrix at ``base``."""
        p = self.p
        self.x_from(var, self.K + 1)
        p.ld(A, base, ux=True)
        self.balanced(Cond.POS, lambda: p.ldi(B, 0), lambda: p.ldi(A, 1))   # B is free here
        p.st(self.HKK)

    @contextmanager
    def gj_columns(self, left: bool, cnt: int):
        """Y over the columns that pivot p can change: left half p + 1 … n − 1 (the columns ≤ p are never read
        again: H comes out the same), right half 0 … p (the right half of row p is 0 beyond column p, so the
        columns beyond p stay as they are: rnd(f · 0) = 0)."""
        p = self.p
        skip = p.fresh()
        p.ld(A, self.VP_)
        p.add(self.const(1))
        if left:
            p.movy()
            p.ld(A, cnt)
            p.sub(self.VP_)
            p.sub(self.const(1))
            p.br(Cond.Z, skip)
        else:
            p.sety(0)
        p.movl(0)
        top = p.label()
        yield
        p.addy(1)
        p.djnz(0, top)
        p.label(skip)

    def _project(self):
        p, bank, fm = self.p, self.rel, self.fmts
        S, K, hf = self.S, self.K, self.hf
        cnt = bank["count"]
        plain, done = p.fresh(), p.fresh()
        p.ld(A, cnt)
        p.sub(self.const(2))
        p.br(Cond.NEG, plain)
        p.label(p.fresh("cv"))
        # cv_i = narrow(Σ_j c_ij v_j, pf + rf → cv)
        with self.for_var(self.VI, cnt):
            self.x_from(self.VI, S)
            with self.over_dim(first=lambda: p.ldi(A, 0)):
                p.ld(Q, self.V, uy=True)
                p.mul(MulMode.ADD, 0, True, 0, True, mem=bank["proto"], ux=True, uy=True)
            self.narrow(self.pf + self.rf - fm.cv.frac, fm.cv)
            p.st(self.TMP)
            p.ld(A, self.VI)
            p.movx()
            p.ld(A, self.TMP)
            p.st(self.CV, ux=True)
        p.label(p.fresh("downdate"))
        # M = sat_m(H − div_trunc(H_:k H_k:, max(H_kk, 1))) into GL; the row k of H into PROW
        self.divisor(self.KSTAR, bank["h"])
        self.x_from(self.KSTAR, K)
        with self.over_j(count_addr=cnt):
            p.ld(A, bank["h"], ux=True, uy=True)
            p.st(self.PROW, uy=True)
        hc = _signed_chunks(fm.h.bits)
        div = self.sdiv_sub(0, 2 * (fm.h.bits - 1) + 1)
        with self.for_var(self.VI, cnt):
            self.x_from(self.VI, K)
            p.ld(A, self.KSTAR)
            p.movy()
            p.ld(A, bank["h"], ux=True, uy=True)
            p.st(self.TMP)                         # H_ik
            with self.over_j(count_addr=cnt):
                p.ld(Q, self.TMP)
                self.product(hc, hc, mem=self.PROW, uy=True)
                p.ld(B, self.HKK)
                p.call(div)
                p.neg()
                p.add(bank["h"], ux=True, uy=True)
                p.sat(self.sat_index(fm.m))
                p.st(self.GL, ux=True, uy=True)
        p.label(p.fresh("w"))
        # w_i = narrow(Σ_j M_ij cv_j, 2hf → w): Horner over the chunk weights, a pass over j per weight
        mc, cc = _signed_chunks(fm.m.bits), _signed_chunks(fm.cv.bits)
        with self.for_var(self.VI, cnt):
            self.x_from(self.VI, K)
            self._wide_sum(mc, cc, lambda: p.ld(Q, self.CV, uy=True), self.GL, True, True, cnt)
            self.narrow(2 * hf - fm.w.frac, fm.w)
            p.st(self.TMP)
            self.x_from(self.VI, S)
            p.ld(A, self.TMP)
            p.st(bank["wk"], ux=True)
        p.label(p.fresh("vperp"))
        # v⊥_j = sat(v_j ≪ (vf − rf) − rnd(Σ_k w_k c_kj ≫ pf + hf − vf))
        wc, pc = _signed_chunks(fm.w.bits), _signed_chunks(fm.proto.bits)
        with self.over_dim(counter=1):
            self._wide_sum_k(wc, pc)
            self.narrow_no_sat(self.pf + hf - self.vf)
            p.neg()
            p.mov(B, A)
            p.ld(A, self.V, uy=True)
            self.shl(self.vf - self.rf)
            p.add()
            p.sat(self.sat_index(fm.vperp))
            p.st(self.VP, uy=True)
        p.jmp(done)
        p.label(plain)
        with self.over_dim():
            p.ld(A, self.V, uy=True)
            self.shl(self.vf - self.rf)
            p.sat(self.sat_index(fm.vperp))
            p.st(self.VP, uy=True)
        p.label(done)

    def narrow_no_sat(self, shift: int):
        """A ← shift_round(A, shift, half-up) (shift ≤ 0: exact left shift)."""
        if shift > 0:
            self.p.add(self.const(1 << (shift - 1)))
            self.sar(shift)
        elif shift < 0:
            self.shl(-shift)

    def _wide_sum(self, na: int, nq: int, load_q, mem, ux, uy, cnt):
        """A ← Σ_j mem[j] · Q_j over Y = 0 … mem[cnt] − 1 (``load_q`` loads Q_j): per chunk weight one pass."""
        p = self.p
        p.ldi(A, 0)
        for w in range(na + nq - 2, -1, -1):
            if w != na + nq - 2:
                p.mul(MulMode.HORNER, 0, False, 0, False, mem=self.const(0))
            with self.over_j(count_addr=cnt, keep_a=True):
                load_q()
                for i in range(na):
                    j = w - i
                    if 0 <= j < nq:
                        p.mul(MulMode.ADD, i, i == na - 1, j, j == nq - 1, mem=mem, ux=ux, uy=uy)

    def _wide_sum_k(self, wc: int, pc: int):
        """A ← Σ_k w_k c_kj for the caller's Y = j (kept): X walks the prototype rows, w_k sits in each row."""
        p, bank, S = self.p, self.rel, self.S
        p.ldi(A, 0)
        for w in range(wc + pc - 2, -1, -1):
            if w != wc + pc - 2:
                p.mul(MulMode.HORNER, 0, False, 0, False, mem=self.const(0))
            p.setx(0)
            p.mov(B, A)
            p.ld(A, bank["count"])
            p.movl(2)
            p.mov(A, B)
            top = p.label()
            p.ld(Q, bank["wk"], ux=True)
            for i in range(wc):                       # w chunk i (in Q) × c chunk j (the memory operand)
                j = w - i
                if 0 <= j < pc:
                    p.mul(MulMode.ADD, j, j == pc - 1, i, i == wc - 1, mem=bank["proto"], ux=True, uy=True)
            p.addx(S)
            p.djnz(2, top)

    def _update(self):
        """c_k* ← sat(c + rnd((û − c) ≫ m)); r_k*; since + 1 and the refresh every N_ref samples."""
        p, bank, fm = self.p, self.rel, self.fmts
        self.x_from(self.KSTAR, self.S)
        with self.over_dim():
            p.ld(A, self.UH, uy=True)
            p.sub(bank["proto"], ux=True, uy=True)
            self.narrow_no_sat(self.m)
            p.add(bank["proto"], ux=True, uy=True)
            p.sat(self.sat_index(fm.proto))
            p.st(bank["proto"], ux=True, uy=True)
        self._recip_norm()
        p.ld(A, bank["since"])
        p.add(self.const(1))
        p.st(bank["since"])
        p.sub(self.const(self.refresh_every))
        skip = p.fresh()
        p.br(Cond.NEG, skip)
        self._goto_refresh()
        p.label(skip)

    # -- running it on the instruction-set simulator ------------------------------------------------------
    def machine(self) -> Machine:
        return Machine(self.code, self.initial_memory(), self.widths)

    def run_sample(self, mach: Machine, bank: int, u, v) -> tuple[int, np.ndarray]:
        """One sample of layer ``bank``: (k*, v⊥)."""
        d = self.dims[bank]
        if len(u) != d or len(v) != d:
            raise ValueError(f"bank {bank} takes {d} values of u and v")
        mach.mem[self.U:self.U + d] = self.pack(u, v)
        mach.run(self.entry_address[bank], z=self.bank_base[bank])
        out = mach.mem[self.KSTAR], np.array(mach.mem[self.VP:self.VP + d], dtype=np.int64)
        mach.run(self.update_address[bank], z=self.bank_base[bank])
        return out

    @staticmethod
    def pack(u, v) -> list[int]:
        """The input words of a sample: u_j + 2^16 v_j."""
        return [int(a) + (int(b) << 16) for a, b in zip(u, v)]

    # -- timing: a run's instructions depend only on the bank, the count and the path ----------------------------
    def sample_counts(self, bank: int, count: int, new: bool) -> dict:
        """Instructions of each op that ``sample`` executes for ``bank`` with ``count`` active clusters before the
        selection and ``new`` (a new cluster made, and its refresh). Every data-dependent branch of the program
        has paths of equal cost (:meth:`balanced`), so this is every such run's; it is measured once on a made-up
        state that takes that path (``tests/test_loco_program.py`` checks it against real runs)."""
        K = self.K
        if not 0 <= count <= K or (count == 0 and not new) or (count == K and new):
            raise ValueError(f"count = {count}, new = {new}: not a path of the selection (K = {K})")
        key = ("sample", bank, count, new)
        if key not in self._timing:
            bk = self.banks[bank]
            d, S = bk["dim"], bk["stride"]
            mach = self.machine()
            u = [(3 * j) % (self.steps + 1) for j in range(d - 1)] + [self.steps]
            self.run_sample(mach, bank, u, u)               # c_0 = û
            row = mach.mem[bk["proto"]:bk["proto"] + d]
            for k in range(K):
                r = list(row)
                if new:
                    r[0] += k + 1                              # every prototype differs from û
                mach.mem[bk["proto"] + k * S:bk["proto"] + k * S + d] = r
            mach.mem[bk["count"]] = count
            mach.mem[self.U:self.U + d] = self.pack(u, u)
            before = dict(mach.counts)
            mach.run(self.entry_address[bank], z=self.bank_base[bank])
            got = mach.mem[bk["count"]] > count
            assert got == new, "the made-up state did not take the path"
            self._timing[key] = {op: n - before.get(op, 0) for op, n in mach.counts.items() if n > before.get(op, 0)}
        return self._timing[key]

    def update_counts(self, bank: int, count: int, refresh: bool) -> dict:
        """Instructions of each op that ``update`` executes for ``bank`` with ``count`` (≥ 1) active clusters and
        ``refresh`` (the N_ref-th sample since the last refresh) — as :meth:`sample_counts`."""
        if not 1 <= count <= self.K or (not refresh and self.refresh_every == 1):
            raise ValueError(f"count = {count}, refresh = {refresh}: not a path of the update "
                             f"(K = {self.K}, N_ref = {self.refresh_every})")
        key = ("update", bank, count, refresh)
        if key not in self._timing:
            bk = self.banks[bank]
            mach = self.machine()
            mach.mem[bk["count"]] = count
            mach.mem[bk["since"]] = self.refresh_every - 1 if refresh else 0
            mach.mem[self.KSTAR] = 0
            before = dict(mach.counts)
            mach.run(self.update_address[bank], z=self.bank_base[bank])
            assert (mach.mem[bk["since"]] == 0) == refresh, "the made-up state did not take the path"
            self._timing[key] = {op: n - before.get(op, 0) for op, n in mach.counts.items() if n > before.get(op, 0)}
        return self._timing[key]

    def init_counts(self) -> dict:
        """Instructions of each op that ``init`` executes (one path: it reads nothing)."""
        if "init" not in self._timing:
            mach = Machine(self.code, [0] * self.depth, self.widths)
            mach.run(self.init_address)
            self._timing["init"] = dict(mach.counts)
        return self._timing["init"]

    def reload_counts(self, bank: int, count: int) -> dict:
        """Instructions of each op that ``reload`` executes for ``bank`` for ``count`` active clusters."""
        if not 0 <= count <= self.K:
            raise ValueError(f"count = {count}: must be in [0, {self.K}]")
        key = ("reload", bank, count)
        if key not in self._timing:
            mach = self.machine()
            mach.mem[self.banks[bank]["count"]] = count
            before = dict(mach.counts)
            mach.run(self.reload_address[bank], z=self.bank_base[bank])
            self._timing[key] = {op: n - before.get(op, 0) for op, n in mach.counts.items() if n > before.get(op, 0)}
        return self._timing[key]

    def load(self, mach: Machine, bank: int, protos, count: int) -> None:
        """A host load: bank ``bank``'s prototypes (K × dim) and count written, then ``reload`` run."""
        bk = self.banks[bank]
        d, S = bk["dim"], bk["stride"]
        if not 0 <= count <= self.K:
            raise ValueError(f"count = {count}: must be in [0, {self.K}]")
        for k, row in enumerate(np.asarray(protos, dtype=np.int64).reshape(self.K, d)):
            mach.mem[bk["proto"] + k * S: bk["proto"] + k * S + d] = [int(x) for x in row]
        mach.mem[bk["count"]] = count
        mach.run(self.reload_address[bank], z=self.bank_base[bank])

    def state(self, mach: Machine, bank: int) -> dict:
        """The bank's prototypes (K × dim), r_k (K), count, samples since the refresh and H (count × count)."""
        bk = self.banks[bank]
        d, S, K = bk["dim"], bk["stride"], self.K
        mem = mach.mem
        rows = [mem[bk["row"] + k * S: bk["row"] + k * S + S] for k in range(K)]       # r_k, w_k, c_k
        n = mem[bk["count"]]
        h = np.array([[mem[bk["h"] + i * K + j] for j in range(n)] for i in range(n)], dtype=np.int64)
        return {"protos": np.array([r[2:2 + d] for r in rows], dtype=np.int64),
                "recips": np.array([r[0] for r in rows], dtype=np.int64),
                "count": n, "since": mem[bk["since"]], "h": h.reshape(n, n)}
