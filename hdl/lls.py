# amaranth: UnusedElaboratable=no
# (the divider and square root are built in __init__ to publish the cycle count; a unit that is only inspected never elaborates them)
"""LLS in gateware: the layer-local error unit of one hidden layer — bit-exact twin of
:class:`~loco_fpga.golden_model.fixed_lls.FixedLocalError` (golden_model/fixed_lls.py, where the algorithm and
its formats are specified).

One sequential unit per hidden layer: it takes the layer's clean spike counts c_0 … c_{n−1} (index order) and
returns e_0 … e_{n−1} (g format, index order). Hardware: C 32-bit phase accumulators (the square-wave basis,
B_kj = sign of phase_k, restarted at j = 0 for each pass over j), C accumulators s_k, the count memory (n
words), one restoring square root, one restoring divider (2C + n divisions per sample), the 64-entry 2^-x table,
and the multiplies d̂_j·S, c_j·D and da_j·(n_L·lr).

Schedule (states): ``IN`` c_j in (S += c_j², s_k += B_kj c_j), ``SQRT`` R = isqrt(S·4^G), then S·R;
``LOGIT`` ×C divisions (and the running max); ``EXP`` one class per cycle; ``PROB`` ×C divisions (g_k);
``DHAT`` two cycles per j (d̂_j from the phase accumulators, D += c_j d̂_j); ``OUT`` per j: num_j, one
division, e_j on ``o``. The schedule does not depend on the data (:meth:`LocalErrorUnit.cycles`).
"""

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.golden_model.fixed_lls import (EXP2_INDEX_BITS, EXP2_TABLE, LOG2E, LOG2E_FRAC, PHASE_BITS,
                                              lls_phase_increments)
from loco_fpga.qformat import Formats

from .arith import Divider, Isqrt
from .fixed import narrow, shape

__all__ = ["LocalErrorUnit"]


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


def _bits(n: int) -> int:
    """Bits of the unsigned integer n."""
    return max(1, int(n).bit_length())


class _Div(enum.Enum, shape=2):
    """What the shared divider is computing."""
    LOGIT = 0
    PROB = 1
    DA = 2


class LocalErrorUnit(wiring.Component):
    """e of one hidden layer from its clean spike counts (see the module docstring).

    Parameters (keyword-only): ``formats`` (:class:`~loco_fpga.qformat.Formats`), ``width`` n (the layer's
    neurons), ``n_classes`` C (the output width), ``norm_guard`` G (``fixed.norm_guard``), ``tau_shift``
    (τ = 2^-tau_shift).

    Ports:
        i (In stream {count: rate format}): c_0 … c_{n−1}, index order.
        o (Out stream {e: g format}): e_0 … e_{n−1}, index order.
        label (In 0 … C−1), lr (In lr format): stable from the first ``i`` transfer to the last ``o`` transfer.
        idle (Out 1): waiting for c_0.
    """

    def __init__(self, *, formats: Formats, width: int, n_classes: int, norm_guard: int, tau_shift: int):
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        _check_int("width", width, 1, (1 << 16) - 1)
        _check_int("n_classes", n_classes, 1, 64)
        _check_int("norm_guard", norm_guard, 0, 16)
        _check_int("tau_shift", tau_shift, 0, 16)
        fm = formats
        self._fm, self._n, self._c, self._g, self._tau = fm, width, n_classes, norm_guard, tau_shift
        steps = 1 << fm.log2_steps
        self._s_bits = _bits(width * steps * steps)                  # S = Σ c²
        self._sk_bits = _bits(width * steps)                         # |s_k|
        self._isqrt = Isqrt(width=self._s_bits + 2 * norm_guard)
        rw = self._isqrt.root_width
        qf = fm.lls_prob.frac
        self._z_bits = _bits(n_classes << fm.lls_exp.frac)           # Σ E ≤ C·2^16
        self._dh_bits = qf + 2 + _bits(n_classes)                    # |d̂| ≤ C·2^Q, signed
        self._logit_shift = norm_guard + fm.lls_logit.frac + tau_shift
        self._da_shift = fm.log2_steps + tau_shift + norm_guard + fm.lls_da.frac - qf
        if self._da_shift < 0:
            raise ValueError(f"formats: the LLS da shift log2 T + tau_shift + G + {fm.lls_da.frac} − {qf} "
                             f"= {self._da_shift} must be ≥ 0")
        num_bits = self._s_bits + qf + 2                              # |num| ≤ n T² 2^(Q+2)
        dividend = max(self._sk_bits + self._logit_shift, fm.lls_exp.bits + qf, num_bits + self._da_shift)
        divisor = max(rw, self._z_bits, self._s_bits + rw)
        self._num_bits = num_bits
        self._divider = Divider(dividend_width=dividend, divisor_width=divisor,
                                quotient_width=min(dividend, max(fm.lls_da.bits, fm.lls_logit.bits, qf + 1)))
        super().__init__({"i": In(stream.Signature(data.StructLayout({"count": shape(fm.rate)}))),
                          "o": Out(stream.Signature(data.StructLayout({"e": shape(fm.g)}))),
                          "label": In(range(n_classes)), "lr": In(shape(fm.lr)), "idle": Out(1)})

    width = property(lambda self: self._n)

    def cycles(self) -> int:
        """Cycles from the last ``i`` transfer to the last ``o`` transfer with ``o`` always ready — the same
        for every sample (a layer without spikes runs the same schedule; its divisions by R = 0 overflow and
        the mask 1[0 < c_j < T] zeroes every e_j, as the model's S = 0 case does)."""
        n, C = self._n, self._c
        # a division: its operand state, SEND (accepted), WAIT until the result is taken (latency + 1)
        div = 1 + 1 + self._divider.latency + 1
        sqrt = 1 + self._isqrt.latency + 1 + 1                        # SQRT, SQRT_WAIT, SR
        return sqrt + C * div + C + C * div + 2 * n + n * (2 + div + 1)   # LOGIT, EXP, PROB, DHAT, OUT … EMIT

    def elaborate(self, platform):
        m = Module()
        fm, n, C, G = self._fm, self._n, self._c, self._g
        rf, qf, lf, af = fm.log2_steps, fm.lls_prob.frac, fm.lls_logit.frac, fm.lls_da.frac
        steps = 1 << rf
        m.submodules.isqrt = sq = self._isqrt
        m.submodules.divider = div = self._divider
        m.submodules.counts = mem = memory.Memory(shape=unsigned(rf + 1), depth=n, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="sync")

        # -- the square-wave basis: one phase accumulator per class -----------------------------------
        half = 1 << (PHASE_BITS - 1)
        phases = [Signal(PHASE_BITS, name=f"phase{k}") for k in range(C)]
        incs = [int(v) for v in lls_phase_increments(C)]

        def b_times(k, x):
            """B_kj · x for the current phase of class k."""
            p = phases[k]
            return Mux((p == 0) | (p == half), 0, Mux(p < half, x, -x))

        step_phases = [p.eq(p + inc) for p, inc in zip(phases, incs)]   # modulo 2^32: a phase accumulator
        clear_phases = [p.eq(0) for p in phases]

        # -- state ------------------------------------------------------------------------------------
        j = Signal(range(n + 1))
        k = Signal(range(C + 1))
        s2 = Signal(self._s_bits)
        sk = [Signal(signed(self._sk_bits + 1), name=f"s{c}") for c in range(C)]
        root = Signal(self._isqrt.root_width)
        sr = Signal(self._s_bits + self._isqrt.root_width)
        logits = Array(Signal(shape(fm.lls_logit), name=f"logit{c}") for c in range(C))
        top = Signal(shape(fm.lls_logit))
        exps = Array(Signal(fm.lls_exp.bits, name=f"exp{c}") for c in range(C))
        zsum = Signal(self._z_bits)
        gs = [Signal(signed(qf + 2), name=f"g{c}") for c in range(C)]
        dh = Signal(signed(self._dh_bits))
        big_d = Signal(signed(self._dh_bits + self._sk_bits + 1))
        cnt = Signal(rf + 1)
        num = Signal(signed(self._num_bits + 1))
        e_out = Signal(shape(fm.g))
        kind = Signal(_Div)
        dvd = Signal(div.dividend_width)
        dvs = Signal(div.divisor_width)
        neg = Signal()

        d_hat = sum((b_times(c, gs[c]) for c in range(C)), Const(0, signed(2)))
        sk_now = Array(sk)[k]
        table = Array(Const(int(v), fm.lls_exp.bits) for v in EXP2_TABLE)
        qw = div.quotient_width
        # the divider's signed, saturated quotient (sign–magnitude: trunc toward zero), in format fmt
        def signed_quotient(fmt):
            mag = Mux(div.o.payload.overflow, (1 << qw) - 1, div.o.payload.quotient)
            return Mux(neg, Mux(mag > -fmt.min, fmt.min, -mag), Mux(mag > fmt.max, fmt.max, mag))

        m.d.comb += [div.i.payload.dividend.eq(dvd), div.i.payload.divisor.eq(dvs),
                     sq.i.payload.radicand.eq(s2 << (2 * G)), rd.addr.eq(j)]

        with m.FSM() as fsm:
            with m.State("IN"):
                with m.If(self.i.valid):
                    c_in = self.i.payload.count
                    m.d.comb += [wr.addr.eq(j), wr.data.eq(c_in), wr.en.eq(1)]
                    m.d.sync += [s2.eq(s2 + c_in * c_in), *step_phases]
                    m.d.sync += [s.eq(s + b_times(c, c_in)) for c, s in enumerate(sk)]
                    with m.If(j == n - 1):
                        m.d.sync += [j.eq(0), *clear_phases]
                        m.next = "SQRT"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
            with m.State("SQRT"):
                with m.If(sq.i.ready):
                    m.next = "SQRT_WAIT"
            with m.State("SQRT_WAIT"):
                with m.If(sq.o.valid):
                    m.d.sync += root.eq(sq.o.payload.root)
                    m.next = "SR"
            with m.State("SR"):
                m.d.sync += [sr.eq(s2 * root), k.eq(0)]
                m.next = "LOGIT"
            with m.State("LOGIT"):                                     # operands of L_k
                mag = Mux(sk_now < 0, -sk_now, sk_now)
                m.d.sync += [dvd.eq(mag.as_unsigned() << self._logit_shift), dvs.eq(root), neg.eq(sk_now < 0),
                             kind.eq(_Div.LOGIT)]
                m.next = "SEND"
            with m.State("SEND"):
                with m.If(div.i.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(div.o.valid):
                    with m.Switch(kind):
                        with m.Case(_Div.LOGIT):
                            value = signed_quotient(fm.lls_logit)
                            m.d.sync += logits[k].eq(value)
                            with m.If((k == 0) | (value > top)):
                                m.d.sync += top.eq(value)
                            with m.If(k == C - 1):
                                m.d.sync += [k.eq(0), zsum.eq(0)]
                                m.next = "EXP"
                            with m.Else():
                                m.d.sync += k.eq(k + 1)
                                m.next = "LOGIT"
                        with m.Case(_Div.PROB):
                            prob = div.o.payload.quotient[:qf + 1]
                            m.d.sync += Array(gs)[k].eq(prob - Mux(k == self.label, 1 << qf, 0))
                            with m.If(k == C - 1):
                                m.d.sync += [k.eq(0), j.eq(0), big_d.eq(0), *clear_phases]
                                m.next = "DHAT"
                            with m.Else():
                                m.d.sync += k.eq(k + 1)
                                m.next = "PROB"
                        with m.Case(_Div.DA):
                            da = signed_quotient(fm.lls_da)
                            e = narrow(da * (self.lr * C), af + fm.lr.frac + fm.sigma_shift, fm.g, "half-up")
                            m.d.sync += e_out.eq(Mux((cnt > 0) & (cnt < steps), e, 0))
                            m.next = "EMIT"
            with m.State("EXP"):                                       # E_k = 2^-(top − L_k)·log2 e, one per cycle
                x = (top - logits[k]).as_unsigned() * LOG2E
                whole = x >> (lf + LOG2E_FRAC)
                frac = x[lf + LOG2E_FRAC - EXP2_INDEX_BITS:lf + LOG2E_FRAC]
                value = Mux(whole >= fm.lls_exp.bits, 0, table[frac] >> whole[:5])
                m.d.sync += [exps[k].eq(value), zsum.eq(zsum + value)]
                with m.If(k == C - 1):
                    m.d.sync += k.eq(0)
                    m.next = "PROB"
                with m.Else():
                    m.d.sync += k.eq(k + 1)
            with m.State("PROB"):
                m.d.sync += [dvd.eq(exps[k] << qf), dvs.eq(zsum), neg.eq(0), kind.eq(_Div.PROB)]
                m.next = "SEND"
            with m.State("DHAT"):                                      # d̂_j from the phases; c_j is read
                m.d.sync += [dh.eq(d_hat), *step_phases]
                m.next = "DHAT_ACC"
            with m.State("DHAT_ACC"):
                m.d.sync += big_d.eq(big_d + rd.data * dh)
                with m.If(j == n - 1):
                    m.d.sync += [j.eq(0), *clear_phases]
                    m.next = "OUT"
                with m.Else():
                    m.d.sync += j.eq(j + 1)
                    m.next = "DHAT"
            with m.State("OUT"):
                m.d.sync += [dh.eq(d_hat), *step_phases]
                m.next = "OUT_NUM"
            with m.State("OUT_NUM"):
                m.d.sync += [num.eq(dh * s2 - rd.data * big_d), cnt.eq(rd.data)]
                m.next = "OUT_OPS"
            with m.State("OUT_OPS"):
                mag = Mux(num < 0, -num, num)
                m.d.sync += [dvd.eq(mag.as_unsigned() << self._da_shift), dvs.eq(sr), neg.eq(num < 0),
                             kind.eq(_Div.DA)]
                m.next = "SEND"
            with m.State("EMIT"):
                with m.If(self.o.ready):
                    with m.If(j == n - 1):
                        m.d.sync += [j.eq(0), s2.eq(0), *[s.eq(0) for s in sk], *clear_phases]
                        m.next = "IN"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        m.next = "OUT"
        # handshakes outside the FSM (continuous assignments: Icarus sees them from time 0)
        m.d.comb += [self.i.ready.eq(fsm.ongoing("IN")), self.idle.eq(fsm.ongoing("IN") & (j == 0)),
                     sq.i.valid.eq(fsm.ongoing("SQRT")), sq.o.ready.eq(fsm.ongoing("SQRT_WAIT")),
                     div.i.valid.eq(fsm.ongoing("SEND")), div.o.ready.eq(fsm.ongoing("WAIT")),
                     self.o.valid.eq(fsm.ongoing("EMIT")), self.o.payload.e.eq(e_out)]
        return m
