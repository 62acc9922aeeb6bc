"""Fixed-point formats: the one place where the width, scale and rounding of every quantity is declared.

Shared by the fixed-point golden model (``golden_model/fixed.py``) and the HDL (``hdl/fixed``): both read
:func:`formats` of the same :class:`~loco_fpga.config.Config`, so a width changes in one place.

Conventions (bit-exact contract, SPEC §4):

- A :class:`QFormat` is a two's-complement (or unsigned) integer of ``bits`` bits whose real value is
  ``q · 2^-frac``. Integers are NumPy ``int64`` (or Python ``int``); every declared width is ≤ 63 bits and
  every intermediate product is checked by :func:`check_config` to fit 63 bits.
- **Narrowing** (dropping fraction bits, then fitting the width) always *saturates* to the format's
  [min, max] — never wraps — and rounds with exactly one of:
    * ``half-up``: ``(x + 2^(s-1)) >> s`` (add-and-shift; ties go towards +∞),
    * ``trunc``: ``x >> s`` (arithmetic shift: floor, towards −∞),
    * ``stochastic``: ``(x + r) >> s`` with r the top s bits of a PRNG draw (``golden_model/prng.py``).
- **Division** is the sign–magnitude restoring divider: quotient truncated towards zero
  (:func:`div_trunc`); **square roots** are the restoring square root: ⌊√a⌋ (:func:`isqrt`).

The full table of formats and rounding points is :func:`describe` (and docs/fixed_point.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["QFormat", "Formats", "formats", "check_config", "shift_round", "narrow", "narrow_mode", "div_trunc",
           "isqrt", "ROUNDING_MODES", "describe"]

ROUNDING_MODES = ("half-up", "trunc", "stochastic")


@dataclass(frozen=True)
class QFormat:
    """A fixed-point format: ``signed`` two's complement or unsigned, ``bits`` wide, ``frac`` fraction bits."""

    name: str
    signed: bool
    bits: int
    frac: int
    #: how a wider value is narrowed into this format: a ROUNDING_MODES entry, `exact` (no narrowing),
    #: `toward-zero-div` (restoring divider quotient), `floor-sqrt` (restoring square root).
    rounding: str = "exact"
    #: where the value comes from, for the documentation table.
    doc: str = ""

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def saturate(self, q):
        """Clamp integers to [min, max] (saturation, never wrap-around)."""
        if isinstance(q, (int, np.integer)):
            return int(min(max(int(q), self.min), self.max))
        return np.minimum(np.maximum(np.asarray(q, dtype=np.int64), self.min), self.max)

    def from_float(self, x):
        """Host-side quantisation of real values: round half up, saturate. Not on the data path."""
        scaled = np.floor(np.asarray(x, dtype=np.float64) * (1 << self.frac) + 0.5)
        scaled = np.clip(scaled, self.min, self.max)
        out = scaled.astype(np.int64)
        return int(out) if out.ndim == 0 else out

    def to_float(self, q):
        return np.asarray(q, dtype=np.float64) * self.lsb

    def label(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}.{self.frac}"


def shift_round(x, shift: int, mode: str = "half-up", rand=None):
    """Drop ``shift`` fraction bits of int64 ``x`` with the given rounding (``shift`` ≤ 0 shifts left, exactly).

    ``rand`` (stochastic only): non-negative integers < 2^shift, one per element.
    """
    if shift <= 0:
        return np.left_shift(x, -shift)
    if mode == "half-up":
        return np.right_shift(x + (1 << (shift - 1)), shift)
    if mode == "trunc":
        return np.right_shift(x, shift)
    if mode == "stochastic":
        if rand is None:
            raise ValueError("stochastic rounding needs PRNG bits")
        return np.right_shift(x + rand, shift)
    raise ValueError(f"unknown rounding mode {mode!r}")


def narrow_mode(fmt: QFormat, mode: str | None = None) -> str:
    """The rounding a narrowing into ``fmt`` uses: ``mode`` if given, else the format's own rounding when it
    is a rounding mode, else ``half-up``. Shared by the model and the gateware (``hdl.fixed``)."""
    mode = mode or (fmt.rounding if fmt.rounding in ROUNDING_MODES else "half-up")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"mode = {mode!r}: expected one of {', '.join(ROUNDING_MODES)}")
    return mode


def narrow(x, src_frac: int, fmt: QFormat, mode: str | None = None, rand=None):
    """Re-scale ``x`` (``src_frac`` fraction bits) to ``fmt``: round with ``mode`` (default: the format's), saturate."""
    mode = narrow_mode(fmt, mode)
    return fmt.saturate(shift_round(np.asarray(x, dtype=np.int64), src_frac - fmt.frac, mode, rand))


def div_trunc(a, b):
    """Quotient a / b truncated towards zero, b > 0 — what a sign–magnitude restoring divider returns."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def isqrt(a: int) -> int:
    """⌊√a⌋ for an integer a ≥ 0 — what a restoring (digit-by-digit) square root returns."""
    return math.isqrt(int(a))


class Formats:
    """Every fixed-point format of one configuration, as attributes (``fmts.weight``, ``fmts.h`` …)."""

    def __init__(self, config):
        fx, spk, rule = config.fixed, config.spiking, config.rule
        wf = fx.weight_frac
        self.log2_steps = int(round(math.log2(spk.steps)))
        rf = self.log2_steps
        self.sigma_shift = -int(round(math.log2(rule.sigma)))  # σ = 2^-sigma_shift
        self.proto_shift = -int(round(math.log2(rule.proto_lr))) if rule.proto_lr > 0 else 0
        up = fx.update_rounding
        F = QFormat
        self.input = F("input", False, fx.input_frac + 1, fx.input_frac, "half-up",
                       "input rate x ∈ [0, 1]; quantised by the host")
        self.weight = F("weight", True, fx.weight_bits, wf, up,
                        "weights and biases W_l; W ← sat(W − round(e·v⊥))")
        self.noise = F("noise", True, wf + 2, wf, "exact", "perturbation ±σ = ±2^(wf − s) LSBs")
        self.acc = F("acc", True, fx.acc_bits, wf, "exact", "synaptic current Σ_j W_ij s_j + b_i (+ ξ_i)")
        self.membrane = F("membrane", True, fx.membrane_bits, wf, "trunc",
                          "membrane V ← sat(V − (V >> k) + I); leak by arithmetic shift")
        self.rate = F("rate", False, rf + 1, rf, "exact", "spike count c ∈ [0, T] = rate c/T (u, v)")
        self.out = F("out", True, fx.out_bits, wf, "half-up",
                     "outputs y, ỹ = (Σ_t I_t) >> log2 T; also Δy = ỹ − y")
        self.dl = F("dl", True, fx.dl_bits, fx.dl_frac, "half-up",
                    "ΔL_sum = Σ_k Δy_k (Δy_k + 2(y_k − t_k)), from 2·wf fraction bits")
        self.lr = F("lr", False, fx.lr_bits, fx.lr_frac, "half-up",
                    "learning-rate register η / (n_L σ), written by the host")
        self.g = F("g", True, fx.g_bits, fx.g_frac, "half-up",
                   "g = ΔL_sum · lr_reg; also every per-neuron error e_i (delta readout, DFA δ_i)")
        self.fb = F("fb", False, 10, 8, "half-up", "DFA feedback scale 1/√n_L (a constant register)")
        self.lls_logit = F("lls_logit", True, 24, 8, "toward-zero-div",
                           "LLS logit (B û)_k / τ = s_k · 2^(G + 8 + tau_shift) / ⌊√(Σ c² · 4^G)⌋")
        self.lls_exp = F("lls_exp", False, 17, 16, "table",
                         "LLS softmax numerator 2^((L_k − max L) log2 e): 64-entry 2^-x table, shifted")
        self.lls_prob = F("lls_prob", False, 13, 12, "toward-zero-div", "LLS softmax P_k = E_k / Σ E")
        self.lls_da = F("lls_da", True, 32, 16, "toward-zero-div",
                        "LLS ∂ℓ/∂a_j = (T/τ)(d̂_j S − c_j D) / S^(3/2)")
        self.uhat = F("uhat", True, fx.proto_bits, fx.proto_frac, "half-up",
                      "û_j = u_j / ‖u‖ = (u_j · recip) >> recip_extra")
        self.norm = F("norm", False, 32, rf + fx.norm_guard, "floor-sqrt",
                      "‖u‖ = ⌊√(Σ u_j² · 4^norm_guard)⌋ (restoring square root)")
        self.recip = F("recip", False, 48, fx.proto_frac + fx.recip_extra - rf, "toward-zero-div",
                       "1/‖u‖ = ⌊2^(pf + norm_guard + recip_extra) / ‖u‖⌋ (restoring divider)")
        self.proto = F("proto", True, fx.proto_bits, fx.proto_frac, "half-up",
                       "prototypes c_k; c_k* ← sat(c_k* + ((û − c_k*) >> m)), η_c = 2^-m")
        self.pnorm = F("pnorm", False, 48, fx.proto_frac, "toward-zero-div",
                       "r_k = ⌊2^(2 pf) / ⌊√(Σ_j c_kj²)⌋⌋ ≈ 1/‖c_k‖, refreshed when c_k changes")
        self.score = F("score", True, 63, 3 * fx.proto_frac, "exact",
                       "cluster score (c_kᵀ û) · r_k; k* = first index of the maximum")
        self.gram = F("gram", True, fx.h_bits, fx.h_frac, "half-up",
                      "G = C Cᵀ + λ I, from 2·pf fraction bits")
        self.h = F("h", True, fx.h_bits, fx.h_frac, "toward-zero-div + half-up",
                   "H = G⁻¹ by Gauss–Jordan: row ÷ pivot truncates, elimination products round half up")
        self.m = F("m", True, fx.h_bits, fx.h_frac, "toward-zero-div",
                   "Schur downdate M = H − trunc(H_:k H_k: / H_kk)")
        self.cv = F("cv", True, fx.h_bits, fx.h_frac, "half-up", "C v, from pf + log2 T fraction bits")
        self.w = F("w", True, fx.h_bits, fx.h_frac, "half-up", "w = M (C v), from 2·hf fraction bits")
        self.vperp = F("vperp", True, fx.vperp_bits, fx.vperp_frac, "half-up",
                       "v⊥ = v − Cᵀ w (Cᵀ w from pf + hf fraction bits); NP: v⊥ = v")
        self.update = F("update", True, fx.update_acc_bits, fx.g_frac + fx.vperp_frac, "exact",
                        "rank-1 term e_i v⊥_j, e_i = ±g (or 0 when masked)")

    def all(self) -> list[QFormat]:
        return [v for v in vars(self).values() if isinstance(v, QFormat)]


def formats(config) -> Formats:
    return Formats(config)


def _fail(name, value, why):
    from .config import ConfigError
    raise ConfigError(f"{name} = {value!r}: {why}")


def _bits_for(n: int) -> int:
    """Bits that a sum of n terms adds to its terms' width: ⌈log2 n⌉."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def _pow2_exponent(x: float) -> int | None:
    m, e = math.frexp(x)
    return e - 1 if m == 0.5 else None


def check_config(config) -> None:
    """Cross-field checks of a fixed-point configuration; raises ConfigError naming field and value."""
    fx, spk, rule, arch = config.fixed, config.spiking, config.rule, config.network.arch
    if rule.name not in ("np", "loco", "dfa", "lls"):
        _fail("rule.name", rule.name, "the fixed-point model implements np, loco, dfa and lls")
    if rule.name == "lls":
        if rule.lls_basis != "square":
            _fail("rule.lls_basis", rule.lls_basis, "the fixed-point model implements the 'square' basis only")
        tau = _pow2_exponent(rule.lls_temperature)
        if tau is None or not -16 <= tau <= 0:
            _fail("rule.lls_temperature", rule.lls_temperature,
                  "must be a power of two in [2^-16, 1] in the fixed-point model (1/τ is a shift)")
    if rule.step_norm != "none":
        _fail("rule.step_norm", rule.step_norm, "the fixed-point model implements 'none' only")
    if rule.noise != "rademacher" or rule.noise_placement != "pre":
        _fail("rule.noise", rule.noise, "the fixed-point model uses Rademacher current noise ('pre')")
    if _pow2_exponent(spk.steps) is None:
        _fail("spiking.steps", spk.steps, "must be a power of two in the fixed-point model (/T is a shift)")
    log2t = _pow2_exponent(spk.steps)
    e = _pow2_exponent(rule.sigma)
    if e is None:
        _fail("rule.sigma", rule.sigma, "must be a power of two in the fixed-point model")
    if -e > fx.weight_frac:
        _fail("rule.sigma", rule.sigma, f"is below one weight LSB (fixed.weight_frac = {fx.weight_frac})")
    if rule.name == "loco":
        m = _pow2_exponent(rule.proto_lr) if rule.proto_lr > 0 else None
        if m is None or -m > fx.proto_frac:
            _fail("rule.proto_lr", rule.proto_lr,
                  f"must be a power of two ≥ 2^-{fx.proto_frac} (fixed.proto_frac) in the fixed-point model")
        if math.floor(rule.ridge * (1 << fx.h_frac) + 0.5) < 1:
            _fail("fixed.h_frac", fx.h_frac, f"cannot represent rule.ridge = {rule.ridge} (rounds to 0)")
    theta_q = math.floor(spk.threshold * (1 << fx.weight_frac) + 0.5)
    if theta_q < 1 or theta_q >= 1 << (fx.membrane_bits - 2):
        _fail("spiking.threshold", spk.threshold,
              f"does not fit the membrane format s{fx.membrane_bits}.{fx.weight_frac} with headroom")
    if fx.vperp_frac < log2t:
        _fail("fixed.vperp_frac", fx.vperp_frac, f"must be >= log2(spiking.steps) = {log2t}")
    if fx.vperp_bits - fx.vperp_frac < 2:
        _fail("fixed.vperp_bits", fx.vperp_bits, "needs >= 2 integer bits (v ∈ [0, 1] plus sign)")
    # Widths of sums and products (two's complement: a-bit × b-bit needs a + b − 1 bits).
    fan_in = max(arch[:-1]) + 1
    need = fx.weight_bits + _bits_for(fan_in) + 1           # Σ of fan_in weights, + the noise term
    if fx.acc_bits < need:
        _fail("fixed.acc_bits", fx.acc_bits,
              f"a sum of {fan_in} weights of {fx.weight_bits} bits plus noise needs {need} bits")
    need = fx.g_bits + fx.vperp_bits - 1
    if fx.update_acc_bits < need:
        _fail("fixed.update_acc_bits", fx.update_acc_bits,
              f"the product g·v⊥ needs fixed.g_bits + fixed.vperp_bits − 1 = {need} bits")
    need = fx.g_bits + _bits_for(arch[-1]) + 10
    if rule.name == "dfa" and need > 63:
        _fail("fixed.g_bits", fx.g_bits, f"the DFA feedback sum Σ_k ±e_k times fb needs {need} bits, more than 63")
    if rule.name == "lls":      # num_j · 2^shift of fixed_lls step 7: |num_j| ≤ n T² 2^(Q + 2)
        tau_shift = -_pow2_exponent(rule.lls_temperature)
        fm = Formats(config)
        shift = log2t + tau_shift + fx.norm_guard + fm.lls_da.frac - fm.lls_prob.frac
        need = _bits_for(max(arch[1:-1], default=1)) + 2 * log2t + fm.lls_prob.frac + 2 + shift + 1
        if need > 63:
            _fail("fixed.norm_guard", fx.norm_guard, f"the LLS error numerator needs {need} bits, more than 63")
    need = fx.dl_bits + fx.lr_bits
    if need > 63:
        _fail("fixed.dl_bits", fx.dl_bits, f"the product ΔL·lr needs {need} bits, more than 63")
    need = fx.out_bits + 1 + fx.lr_bits
    if (rule.output_update == "delta" or rule.name == "dfa") and need > 63:
        _fail("fixed.out_bits", fx.out_bits, f"the output error (y − t)·lr needs {need} bits, more than 63")
    need = 2 * (fx.out_bits + 2) + _bits_for(arch[-1])
    if need > 63:
        _fail("fixed.out_bits", fx.out_bits, f"the sum Σ_k Δy_k (Δy_k + 2(y_k − t_k)) needs {need} bits, more than 63")
    drop = fx.g_frac + fx.vperp_frac - fx.weight_frac
    if fx.update_rounding == "stochastic" and drop > 32:
        _fail("fixed.g_frac", fx.g_frac, f"stochastic rounding of the update drops {drop} bits; one 32-bit "
              "PRNG word supplies at most 32 (g_frac + vperp_frac − weight_frac ≤ 32)")
    if fx.acc_bits + log2t > 63:
        _fail("fixed.acc_bits", fx.acc_bits, "the output accumulator over T steps needs more than 63 bits")
    if rule.name == "loco":
        k = rule.clusters
        need = 2 * fx.h_bits - 1 + _bits_for(k)
        if need > 63:
            _fail("fixed.h_bits", fx.h_bits, f"the sum of {k} products M·(Cv) needs {need} bits, more than 63")
        need = 2 * fx.proto_bits - 1 + _bits_for(fan_in)
        if need > 63:
            _fail("fixed.proto_bits", fx.proto_bits, f"the Gram sum Σ c_a c_b needs {need} bits, more than 63")
        need = fx.proto_bits + fx.h_bits - 1 + _bits_for(k)
        if need > 63:
            _fail("fixed.h_bits", fx.h_bits, f"the sum Cᵀw needs {need} bits, more than 63")
        # score = (c·û) · r_k: |c·û| < fan_in · 4^(pbits−1), r_k < 2^(2pf) / (smallest nonzero ‖c‖ = 1 LSB).
        need = (2 * fx.proto_bits - 1 + _bits_for(fan_in)) + (fx.proto_frac + 1)
        if need > 63:
            _fail("fixed.proto_bits", fx.proto_bits, f"the cluster score needs {need} bits, more than 63")
        need = fx.proto_frac + fx.norm_guard + fx.recip_extra + 1
        if need > 62:
            _fail("fixed.recip_extra", fx.recip_extra, f"the reciprocal 2^{need - 1} needs more than 62 bits")


def describe(config) -> list[dict]:
    """Rows of the format table: name, format label, range, LSB, rounding, meaning."""
    rows = []
    for f in formats(config).all():
        rows.append({"name": f.name, "format": f.label(), "min": f.min * f.lsb, "max": f.max * f.lsb,
                     "lsb": f.lsb, "rounding": f.rounding, "doc": f.doc})
    return rows
