"""Fixed-point LLS (``rule.name = "lls"``): the layer-local error of each hidden layer in integers only.

The float rule (``rules_lls``) gives hidden layer l the local loss ℓ_l = −log softmax(B â / τ)_label with
â = a / ‖a‖ and a square-wave basis B (C × n_l, C = n_L classes), and trains W_l with ∂ℓ_l/∂z. The
fixed-point model computes the same error from the layer's clean spike counts c (a = c / T) with operations a
small sequential unit can run — adds, one square root, restoring divisions, a 64-entry 2^-x table, and a
multiplier — and then updates W_l with the rank-1 engine exactly as DFA does (e_i v_j, v = [clean input; T]).

The basis (``lls_basis_q``): class c has a 32-bit phase accumulator stepping by
inc_c = round(f_c / 2π · 2^32) per neuron, f = linspace(50, 512, C) rad (the float basis' frequencies);
B_cj = +1 while the phase is in (0, 2^31), −1 in (2^31, 2^32), 0 at exactly 0 or 2^31 — the sign of
sin(f_c j) up to the phase rounding (tests/test_fixed_lls.py compares it with the float ``lls_basis``).

Error of one hidden layer, counts c_j ∈ [0, T], label t, τ = 2^-tau_shift, G = ``fixed.norm_guard``,
formats in ``loco_fpga.qformat`` (``fmts.lls_*``; F, Q, A are their fraction bits):

 1. S = Σ_j c_j² (exact). S = 0 (no spike): e = 0 for the whole layer (the mask would clear it anyway).
 2. R = isqrt(S · 4^G) (≈ ‖c‖ · 2^G);  s_k = Σ_j B_kj c_j (exact).
 3. logits L_k = sat_logit(trunc(s_k · 2^(G + F + tau_shift) / R))       (≈ (B â)_k / τ with F fraction bits)
 4. softmax in base 2: d_k = max L − L_k ≥ 0; x_k = d_k · LOG2E (LOG2E = round(log2 e · 2^14));
    i = x_k >> (F + 14), f = (x_k >> (F + 14 − 6)) mod 64;
    E_k = EXP2[f] >> i (0 when i ≥ 17), EXP2[f] = round(2^(16 − f/64))      (≈ 2^16 · e^(L_k − max L))
 5. P_k = ⌊E_k · 2^Q / Σ E⌋;  g_k = P_k − 2^Q·[k = t]                   (≈ softmax − one-hot, Q fraction bits)
 6. d̂_j = Σ_k B_kj g_k;  D = Σ_j c_j d̂_j;  num_j = d̂_j · S − c_j · D (all exact)
 7. da_j = sat_da(trunc(num_j · 2^(log2 T + tau_shift + G + A − Q) / (S · R)))
    (= ∂ℓ/∂a_j = (T/τ)(d̂_j S − c_j D) / S^(3/2): the derivative through the L2 normalisation)
 8. e_j = narrow(da_j · n_L · lr_reg → g, half-up), the product read with A + lr_frac + sigma_shift fraction
    bits — i.e. η · da_j, because lr_reg = η / (n_L σ); then e_j = 0 unless 0 < c_j < T (the spiking form of
    the derivative mask 1[0 < z < 1]).

Every division is ``div_trunc`` (sign–magnitude restoring division); the sums are exact, so their order does
not matter. The output layer learns from the delta error (``FixedRule.output_error``), and neither pass is
perturbed, as for DFA. Not in the fixed-point model: ``lls-m``/``lls-mxm`` (learnable gains) and the
``sine`` basis.
"""

from __future__ import annotations

import math

import numpy as np

from ..qformat import Formats, div_trunc, isqrt, narrow
from .rules_lls import LLS_MAX_FREQ, LLS_MIN_FREQ

__all__ = ["PHASE_BITS", "LOG2E_FRAC", "LOG2E", "EXP2_INDEX_BITS", "EXP2_TABLE", "lls_phase_increments",
           "lls_basis_q", "FixedLocalError"]

PHASE_BITS = 32
LOG2E_FRAC = 14
LOG2E = math.floor(math.log2(math.e) * (1 << LOG2E_FRAC) + 0.5)
EXP2_INDEX_BITS = 6
#: EXP2_TABLE[f] = round(2^(16 − f/64)), f = 0 … 63: 2^-x for the fraction of x, in the ``lls_exp`` format
EXP2_TABLE = np.array([math.floor(2.0 ** (16 - f / (1 << EXP2_INDEX_BITS)) + 0.5)
                       for f in range(1 << EXP2_INDEX_BITS)], dtype=np.int64)


def lls_phase_increments(n_classes: int) -> np.ndarray:
    """inc_k = round(f_k / 2π · 2^32) mod 2^32 for f = linspace(50, 512, C) rad per neuron index."""
    freqs = np.linspace(LLS_MIN_FREQ, LLS_MAX_FREQ, n_classes)
    return np.array([math.floor(f / (2 * math.pi) * (1 << PHASE_BITS) + 0.5) % (1 << PHASE_BITS)
                     for f in freqs], dtype=np.int64)


def lls_basis_q(n_classes: int, width: int) -> np.ndarray:
    """The C × n square-wave basis of the phase accumulators (values −1, 0, +1; int64)."""
    if width >= 1 << 16:
        raise ValueError(f"width = {width}: the phase products need width < 2^16")
    inc = lls_phase_increments(n_classes)
    phase = (inc[:, None] * np.arange(width, dtype=np.int64)[None, :]) & ((1 << PHASE_BITS) - 1)
    half = 1 << (PHASE_BITS - 1)
    basis = np.where(phase < half, 1, -1)
    return np.where((phase == 0) | (phase == half), 0, basis).astype(np.int64)


class FixedLocalError:
    """The LLS error unit of one hidden layer of width ``width`` (see the module docstring)."""

    def __init__(self, width: int, n_classes: int, steps: int, fmts: Formats, norm_guard: int, tau_shift: int):
        self.basis = lls_basis_q(n_classes, width)
        self.n_classes, self.steps, self.fmts = n_classes, steps, fmts
        self.guard, self.tau_shift = norm_guard, tau_shift
        self.last: dict = {}

    def error(self, counts: np.ndarray, label: int, lr_q: int) -> np.ndarray:
        """e (g format, int64, one per neuron) from the layer's clean spike counts."""
        fm, c, steps = self.fmts, np.asarray(counts, dtype=np.int64), self.steps
        lf, qf, af = fm.lls_logit.frac, fm.lls_prob.frac, fm.lls_da.frac
        s2 = int(c @ c)
        if s2 == 0:
            self.last = {"s2": 0}
            return np.zeros_like(c)
        r = isqrt(s2 << (2 * self.guard))
        s = self.basis @ c
        logits = fm.lls_logit.saturate(div_trunc(s << (self.guard + lf + self.tau_shift), r))
        x = (logits.max() - logits) * LOG2E
        whole = x >> (lf + LOG2E_FRAC)
        frac = (x >> (lf + LOG2E_FRAC - EXP2_INDEX_BITS)) & ((1 << EXP2_INDEX_BITS) - 1)
        e2 = np.where(whole >= fm.lls_exp.bits, 0, EXP2_TABLE[frac] >> np.minimum(whole, fm.lls_exp.bits))
        prob = (e2 << qf) // int(e2.sum())
        g = prob.copy()
        g[label] -= 1 << qf
        d_hat = self.basis.T @ g
        big_d = int(c @ d_hat)
        num = d_hat * s2 - c * big_d
        shift = fm.log2_steps + self.tau_shift + self.guard + af - qf
        da = fm.lls_da.saturate(div_trunc(num << shift, s2 * r))
        e = narrow(da * (self.n_classes * lr_q), af + fm.lr.frac + fm.sigma_shift, fm.g)
        e = np.where((c > 0) & (c < steps), e, 0)
        self.last = {"s2": s2, "r": r, "logits": logits, "exp": e2, "prob": prob, "da": da}
        return e
