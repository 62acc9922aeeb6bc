"""The fixed-point spiking golden model: the arithmetic the HDL must reproduce bit for bit (SPEC §4).

Everything on the data path is an ``int64`` NumPy array (or a Python ``int``) whose format is declared in
``loco_fpga.qformat`` (``fmts.<name>`` below; the table is in docs/fixed_point.md). Floats appear only on
the host side: quantising the initial weights, the inputs and the learning-rate register, and converting
outputs back for reporting. Narrowings go through ``narrow``/``shift_round`` (rounding as declared, then
saturation); sums are exact (their widths are checked by ``qformat.check_config``), so the order of
summation never matters; every rounding point is listed in order here.

One training step on sample (x, label), as :meth:`FixedRule.step_q` runs it:

 1. Noise. Per layer l, ⌈n_l/32⌉ words of PRNG lane (NOISE, l); neuron i's sign is bit i mod 32 of word
    ⌊i/32⌋ (1 → +σ). ξ_i = ±2^(wf − s) weight LSBs (σ = 2^-s).
 2. Input spikes for T steps (drawn once; both passes use them — the encoder replay):
    deterministic: acc ← 2^(if−1); each step acc += x; spike = acc ≥ 2^if; acc −= 2^if·spike.
    bernoulli: spike = (top ``input_frac`` bits of a draw of lane (ENCODER, i)) < x_i.
 3. Passes (two columns: clean, noisy), for t = 0..T−1, for l = 1..L in order:
    I = sat_acc(Σ_j W_ij s_j(t) + b_i + ξ_i·[noisy]);
    hidden: V ← sat_membrane(V − (V >> k)·[LIF] + I); s = V ≥ θ; V ← V − θ s; count += s.
    output: Y += I.  After T steps: y = sat_out((Y + T/2) >> log2 T).
 4. Loss: Δy = sat_out(ỹ − y); ΔL_sum = Σ_k Δy_k (Δy_k + 2 (y_k − t_k)) (exact, 2·wf fraction bits);
    dl = narrow(ΔL_sum → fmts.dl, half-up); g = narrow(dl · lr_reg → fmts.g, half-up), where the host's
    lr_reg = η / (n_L σ) folds the mean's 1/n_L and 1/σ² · σ (ξ = σ·sign) into one register.
 5. Per layer, inputs u = [clean counts; T], v = [noisy counts; T] (rate format, log2 T fraction bits):
    NP: v⊥ = v << (vf − log2 T). LOCO: :class:`FixedClusters` (select k*, project, update prototypes).
 6. Update: e_i = ±g by ξ_i's sign (0 when the optional mask 1[0 < c̃_i < T] is off);
    W_ij ← sat_weight(W_ij − round(e_i v⊥_ij)), the rounding dropping g_frac + vperp_frac − wf bits
    (``fixed.update_rounding``; stochastic draws: lane (ROUNDING, l·2^16 + i), N_l words per row i,
    in column order).

With ``rule.output_update = "delta"`` the output layer is not perturbed (its noise word is still drawn, its
bits are ignored: ξ_L = 0) and learns from its exact local gradient instead: in step 5 its u = v = the clean
counts of the last hidden layer, and in step 6 e_i = narrow((y_i − t_i) · lr_reg → fmts.g, half-up), the
product read with out_frac + lr_frac + sigma_shift − 1 fraction bits — i.e. η · 2 (y_i − t_i) / n_L, because
lr_reg = η / (n_L σ) and σ = 2^-sigma_shift. The hidden layers are unchanged (ΔL then carries only their perturbations).

``rule.name = "dfa"`` (direct feedback alignment): both columns run without noise (the noise words are drawn
and ignored, as above, so the datapath is the same), the output layer takes e_L = the ``delta`` output error
and hidden layer l takes δ_i = narrow((Σ_k b_ik e_L,k) · fb → fmts.g, half-up) · 1[0 < c_i < T], where
b_ik = ±1 are the float model's DFA feedback signs (``rules_feedback.feedback_matrix``: PRNG lane
(DFA, l), regenerated, never stored) and fb = 1/√n_L in ``fmts.fb``; every layer's v is its clean input
[c; T] (no projection). The update (step 6) is the same rank-1 read-modify-write with e_i = δ_i.

``rule.name = "lls"``: as DFA (no perturbation, delta output error, clean v), but hidden layer l's e comes from
its own clean counts through :class:`~loco_fpga.golden_model.fixed_lls.FixedLocalError` (the integer local
loss against the square-wave basis; exact algorithm in ``fixed_lls``).

Inference is step 2–3 for the clean column only, prediction = first index of max y.
"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..qformat import Formats, div_trunc, formats, isqrt, narrow, shift_round
from . import prng
from .network import RateNetwork

__all__ = ["FixedNetwork", "FixedRule", "FixedClusters", "gauss_jordan_inverse", "make_fixed_rule"]


def gauss_jordan_inverse(g: np.ndarray, fmt, frac: int) -> np.ndarray:
    """Inverse of an SPD integer matrix ``g`` (``frac`` fraction bits) by Gauss–Jordan without pivoting.

    Augmented [G | I]; for pivot p = 0..n−1: row p ← sat(trunc((row p << frac) / A_pp)) (restoring
    divider; a non-positive pivot — only possible after saturation — is replaced by 1 LSB); then every
    other row i ← sat(row i − ((A_ip · row p + half) >> frac)), all rows i using A_ip read before the
    elimination of pivot p. Returns the right half, in ``fmt``.
    """
    n = g.shape[0]
    a = np.concatenate([g.astype(np.int64), np.eye(n, dtype=np.int64) << frac], axis=1)
    for p in range(n):
        pivot = max(int(a[p, p]), 1)
        a[p] = fmt.saturate(div_trunc(a[p] << frac, pivot))
        factors = a[:, p].copy()
        factors[p] = 0
        a = fmt.saturate(a - shift_round(np.outer(factors, a[p]), frac, "half-up"))
    return a[:, n:].copy()


class FixedClusters:
    """One layer's prototypes, H and projection in integers (the per-cluster units and the small solver).

    Normalisation (integer-friendly): û = u / ‖u‖ with ‖u‖ from a restoring square root with
    ``norm_guard`` extra bits and one reciprocal by the restoring divider, then one multiply per input.
    Cluster score: (c_k · û) · r_k with r_k = ⌊2^(2 pf) / ⌊√(c_k·c_k)⌋⌋ ≈ 2^pf / ‖c_k‖ held per cluster
    and recomputed whenever c_k changes — so the selection needs no division per sample. k* = the first
    index of the maximum score.
    """

    def __init__(self, dim: int, config: Config, fmts: Formats):
        rule, fx = config.rule, config.fixed
        self.fmts = fmts
        self.dim = dim
        self.capacity = rule.clusters
        self.refresh_every = rule.refresh
        self.pf = fx.proto_frac
        self.hf = fx.h_frac
        self.vf = fx.vperp_frac
        self.rf = fmts.log2_steps
        self.norm_guard = fx.norm_guard
        self.recip_extra = fx.recip_extra
        self.proto_shift = fmts.proto_shift
        self.ridge_q = fmts.gram.from_float(rule.ridge)
        self.protos = np.zeros((self.capacity, dim), dtype=np.int64)
        self.recips = np.zeros(self.capacity, dtype=np.int64)
        self.count = 0
        self.h = np.zeros((0, 0), dtype=np.int64)
        self._since_refresh = 0

    @property
    def active(self) -> np.ndarray:
        return self.protos[: self.count]

    def normalise(self, u: np.ndarray) -> np.ndarray:
        """û (proto format) of u (rate format, bias entry T ⇒ u ≠ 0)."""
        root = isqrt(int(u @ u) << (2 * self.norm_guard))              # ‖u‖, rf + norm_guard frac bits
        recip = (1 << (self.pf + self.norm_guard + self.recip_extra)) // root
        return narrow(u * recip, self.pf + self.recip_extra, self.fmts.uhat)   # û·2^(pf + recip_extra)

    def _recip_norm(self, c: np.ndarray) -> int:
        root = isqrt(int(c @ c))
        return (1 << (2 * self.pf)) // root if root else 0

    def refresh(self) -> None:
        c = self.active
        gram = narrow(c @ c.T, 2 * self.pf, self.fmts.gram)
        gram = self.fmts.gram.saturate(gram + self.ridge_q * np.eye(self.count, dtype=np.int64))
        self.h = gauss_jordan_inverse(gram, self.fmts.h, self.hf)
        self._since_refresh = 0

    def select(self, u_hat: np.ndarray) -> int:
        if self.count:
            scores = (self.active @ u_hat) * self.recips[: self.count]
            k = int(np.argmax(scores))
            if self.count == self.capacity or np.array_equal(self.protos[k], u_hat):
                return k
        k = self.count
        self.protos[k] = u_hat
        self.recips[k] = self._recip_norm(u_hat)
        self.count += 1
        self.refresh()
        return k

    def downdate(self, k: int) -> np.ndarray:
        """M = H − trunc(H[:, k] H[k, :] / H_kk): row and column k become exactly 0."""
        h = self.h
        return self.fmts.m.saturate(h - div_trunc(np.outer(h[:, k], h[k, :]), max(int(h[k, k]), 1)))

    def project(self, v: np.ndarray, k: int) -> np.ndarray:
        """v⊥ = v − Cᵀ M C v (vperp format) for v in rate format."""
        fm = self.fmts
        v_scaled = v << (self.vf - self.rf)
        if self.count < 2:
            return fm.vperp.saturate(v_scaled)
        c = self.active
        cv = narrow(c @ v, self.pf + self.rf, fm.cv)
        w = narrow(self.downdate(k) @ cv, 2 * self.hf, fm.w)
        return fm.vperp.saturate(v_scaled - shift_round(w @ c, self.pf + self.hf - self.vf, "half-up"))

    def update(self, u_hat: np.ndarray, k: int) -> None:
        c = self.protos[k]
        self.protos[k] = self.fmts.proto.saturate(c + shift_round(u_hat - c, self.proto_shift, "half-up"))
        self.recips[k] = self._recip_norm(self.protos[k])
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            self.refresh()


class FixedNetwork:
    """Integer weights of the spiking network and its passes. Initial weights: the float model's
    initialisation (same seed), quantised by the host (round half up, saturate)."""

    def __init__(self, config: Config, init_rng: np.random.Generator):
        self.config = config
        self.fmts = fmts = formats(config)
        self.arch = config.network.arch
        self.steps = config.spiking.steps
        self.encoder = config.spiking.encoder
        self.leak_shift = config.spiking.leak_shift if config.spiking.neuron == "lif" else 0
        self.theta = fmts.membrane.from_float(config.spiking.threshold)
        self.one_in = 1 << config.fixed.input_frac
        self.weights = [fmts.weight.from_float(w) for w in RateNetwork(config.network, init_rng).weights]

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    # -- the passes ------------------------------------------------------------------------------
    def encode(self, x_q: np.ndarray, bank: prng.XorShift32Bank | None) -> np.ndarray:
        """Input spikes (T, *x_q.shape), int64 0/1; ``bank`` has one lane per element of x_q (Bernoulli)."""
        out = np.empty((self.steps,) + x_q.shape, dtype=np.int64)
        if self.encoder == "bernoulli":
            bits = self.config.fixed.input_frac
            for t in range(self.steps):
                out[t] = bank.top_bits(bits) < x_q
            return out
        acc = np.full(x_q.shape, self.one_in >> 1, dtype=np.int64)
        for t in range(self.steps):
            acc += x_q
            spike = (acc >= self.one_in).astype(np.int64)
            out[t] = spike
            acc -= spike * self.one_in
        return out

    def run(self, spikes: np.ndarray, noise: list[np.ndarray] | None = None):
        """One or more passes: spikes (T, B, n_0); noise[l] (B, n_l) in weight LSBs or None.

        Returns (counts, y): counts[l] (B, n_{l+1}) spike counts of hidden layer l+1, y (B, n_L) out format.
        """
        fm = self.fmts
        batch = spikes.shape[1]
        last = self.n_layers - 1
        membranes = [np.zeros((batch, w.shape[0]), dtype=np.int64) for w in self.weights[:-1]]
        counts = [np.zeros((batch, w.shape[0]), dtype=np.int64) for w in self.weights[:-1]]
        y_acc = np.zeros((batch, self.weights[-1].shape[0]), dtype=np.int64)
        for t in range(self.steps):
            s = spikes[t]
            for l, w in enumerate(self.weights):
                current = s @ w[:, :-1].T + w[:, -1]
                if noise is not None:
                    current += noise[l]
                current = fm.acc.saturate(current)
                if l == last:
                    y_acc += current
                    break
                v = membranes[l]
                if self.leak_shift:
                    v -= v >> self.leak_shift
                v = fm.membrane.saturate(v + current)
                s = (v >= self.theta).astype(np.int64)
                membranes[l] = v - s * self.theta
                counts[l] += s
        y = fm.out.saturate(shift_round(y_acc, fm.log2_steps, "half-up"))
        return counts, y

    def infer_q(self, x_q: np.ndarray) -> np.ndarray:
        """Outputs (out format) of a batch of quantised inputs; Bernoulli draws from the EVAL stream."""
        bank = None
        if self.encoder == "bernoulli":
            b, n = x_q.shape
            idx = np.arange(b)[:, None] * prng.LANE_STRIDE + np.arange(n)[None, :]
            bank = prng.XorShift32Bank(self.config.train.seed, prng.EVAL, idx)
        return self.run(self.encode(x_q, bank))[1]

    # -- the float model's interface (host side: quantise inputs, report floats) -------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fmts.out.to_float(self.infer_q(self.fmts.input.from_float(x)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.infer_q(self.fmts.input.from_float(x)), axis=-1)

    def accuracy(self, x: np.ndarray, labels: np.ndarray, batch: int = 512) -> float:
        preds = np.concatenate([self.predict(x[i:i + batch]) for i in range(0, len(x), batch)])
        return float(np.mean(preds == labels))

    def is_finite(self) -> bool:
        return True  # integers saturate; nothing can become inf/NaN

    def is_diverged(self, limit: float = 1e6) -> bool:
        return False  # saturating integers cannot run away

    def copy_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]


class FixedRule:
    """Fixed-point NP, LOCO, DFA or LLS training step (see the module docstring for the exact order)."""

    batch_size = 1

    def __init__(self, net: FixedNetwork, config: Config):
        self.net = net
        self.config = config
        self.fmts = fm = net.fmts
        self.name = config.rule.name
        seed = config.train.seed
        widths = net.arch[1:]
        self.sigma_q = 1 << (config.fixed.weight_frac - fm.sigma_shift)
        self.noise_banks = [prng.XorShift32Bank(seed, prng.NOISE, l) for l in range(net.n_layers)]
        self.encoder_bank = prng.XorShift32Bank(seed, prng.ENCODER, np.arange(net.arch[0]))
        self.rounding = config.fixed.update_rounding
        self.drop = config.fixed.g_frac + config.fixed.vperp_frac - config.fixed.weight_frac
        self.rounding_banks = [prng.XorShift32Bank(seed, prng.ROUNDING, l * prng.LANE_STRIDE + np.arange(n))
                               for l, n in enumerate(widths)]
        self.mask = config.rule.mask
        self.output_delta = config.rule.output_update == "delta"
        self.clusters = ([FixedClusters(n + 1, config, fm) for n in net.arch[:-1]]
                         if self.name == "loco" else None)
        self.dfa = self.name == "dfa"
        self.lls = self.name == "lls"
        self.local = None
        if self.lls:    # one LLS error unit per hidden layer (golden_model/fixed_lls.py)
            from .fixed_lls import FixedLocalError
            tau_shift = -int(round(np.log2(config.rule.lls_temperature)))
            self.local = [FixedLocalError(n, net.arch[-1], net.steps, fm, config.fixed.norm_guard, tau_shift)
                          for n in net.arch[1:-1]]
        self.feedback = None
        if self.dfa:   # ±1 signs, the float model's bits (rules_feedback): lane DFA_LANE + l of the DFA stream
            from .rules_feedback import dfa_feedback
            self.feedback = [np.sign(b).astype(np.int64) for b in dfa_feedback(net.arch, config.rule.feedback_seed)]
            self.fb_q = fm.fb.from_float(1.0 / np.sqrt(net.arch[-1]))
        self.lr_scale = 1.0 / (net.arch[-1] * config.rule.sigma)
        self.last: dict = {}

    def lr_register(self, lr: float) -> int:
        """Host side: the learning-rate register η / (n_L σ) for learning rate η."""
        return self.fmts.lr.from_float(lr * self.lr_scale)

    def draw_noise(self) -> list[np.ndarray]:
        """Per layer: the sign bits (1 → +σ) of ξ_l, int64 0/1."""
        signs = []
        for bank, n in zip(self.noise_banks, self.net.arch[1:]):
            words = bank.draw((n + 31) // 32)[0]
            i = np.arange(n)
            signs.append((words[i // 32] >> (i % 32)) & 1)
        return signs

    def loss_unit(self, y: np.ndarray, y_noisy: np.ndarray, label: int, lr_q: int):
        """Δy = sat_out(ỹ − y); ΔL_sum = Σ_k Δy_k (Δy_k + 2 (y_k − t_k)) exactly (2·wf fraction bits, k in
        index order — exact, so the order cannot change it); dl and g narrowed half up. Returns (Δy, dl, g)."""
        fm, wf = self.fmts, self.config.fixed.weight_frac
        target = np.zeros_like(y)
        target[label] = 1 << wf
        dy = fm.out.saturate(y_noisy - y)
        dl_sum = int(np.sum(dy * (dy + 2 * (y - target))))
        dl = narrow(dl_sum, 2 * wf, fm.dl)
        g = narrow(dl * lr_q, fm.dl.frac + fm.lr.frac, fm.g)
        return dy, dl, g

    def output_error(self, y: np.ndarray, label: int, lr_q: int) -> np.ndarray:
        """``output_update = "delta"``: the output layer's e_i = η · 2 (y_i − t_i) / n_L in the g format,
        = narrow((y_i − t_i) · lr_reg read with out_frac + lr_frac + sigma_shift − 1 fraction bits → g, half-up)."""
        fm = self.fmts
        err = y.copy()
        err[label] -= 1 << self.config.fixed.weight_frac
        return narrow(err * lr_q, fm.out.frac + fm.lr.frac + fm.sigma_shift - 1, fm.g)

    def step(self, x: np.ndarray, t: np.ndarray, lr: float) -> int:
        """The float rules' interface: quantise x and lr on the host, then :meth:`step_q`."""
        return self.step_q(self.fmts.input.from_float(x), int(np.argmax(t)), self.lr_register(lr))

    def train_batch(self, x: np.ndarray, t: np.ndarray, lr: float) -> np.ndarray:
        return np.array([self.step(xi, ti, lr) for xi, ti in zip(x, t)])

    def step_q(self, x_q: np.ndarray, label: int, lr_q: int) -> int:
        net, fm = self.net, self.fmts
        wf, steps = self.config.fixed.weight_frac, net.steps
        # 1-2. noise signs and input spikes (one draw serves both passes)
        signs = self.draw_noise()
        spikes = net.encode(x_q, self.encoder_bank)                       # (T, n_0)
        pair = np.broadcast_to(spikes[:, None, :], (steps, 2, spikes.shape[1]))
        noise = [np.stack([np.zeros_like(s), np.where(s == 1, self.sigma_q, -self.sigma_q)]) for s in signs]
        last = net.n_layers - 1
        if self.output_delta:                                              # ξ_L = 0
            noise[last] = np.zeros_like(noise[last])
        if self.dfa or self.lls:                                           # no perturbation at all
            noise = [np.zeros_like(n) for n in noise]
        # 3. clean and noisy passes
        counts, y_pair = net.run(pair, noise)
        y, y_noisy = y_pair[0], y_pair[1]
        # 4. the global scalar
        dy, dl, g = self.loss_unit(y, y_noisy, label, lr_q)
        e_out = self.output_error(y, label, lr_q) if self.output_delta or self.dfa or self.lls else None
        # 5-6. per layer: input vectors, projection, rank-1 update
        ones = np.array([steps], dtype=np.int64)
        k_stars, v_perps, es = [], [], []
        for l, w in enumerate(net.weights):
            if l == 0:  # the input layer's activity is the encoder's spike count (same in both passes)
                u = v = np.concatenate([spikes.sum(axis=0), ones])
            else:
                u = np.concatenate([counts[l - 1][0], ones])
                v = (u if self.dfa or self.lls or (l == last and self.output_delta)
                     else np.concatenate([counts[l - 1][1], ones]))
            if self.clusters is not None:
                cl = self.clusters[l]
                u_hat = cl.normalise(u)
                k = cl.select(u_hat)
                v_perp = cl.project(v, k)
                cl.update(u_hat, k)
                k_stars.append(k)
            else:
                v_perp = fm.vperp.saturate(v << (fm.vperp.frac - fm.log2_steps))
                k_stars.append(-1)
            v_perps.append(v_perp)
            if l == last and e_out is not None:
                e = e_out
            elif self.dfa:
                e = narrow((self.feedback[l] @ e_out) * self.fb_q, fm.g.frac + fm.fb.frac, fm.g)
            elif self.lls:                                                 # masked inside the unit
                e = self.local[l].error(counts[l][0], label, lr_q)
            else:
                e = np.where(signs[l] == 1, g, -g)
            if (self.mask or self.dfa) and l < last:
                e = np.where((counts[l][1] > 0) & (counts[l][1] < steps), e, 0)
            es.append(e)
            prod = e[:, None] * v_perp[None, :]
            rand = None
            if self.rounding == "stochastic" and self.drop > 0:
                rand = self.rounding_banks[l].draw(w.shape[1]) >> (32 - self.drop)
            net.weights[l] = fm.weight.saturate(w - shift_round(prod, self.drop, self.rounding, rand))
        self.last = {"x": x_q, "spikes_in": spikes.sum(axis=0), "counts_clean": [c[0] for c in counts],
                     "counts_noisy": [c[1] for c in counts], "noise_signs": signs, "y": y,
                     "y_noisy": y_noisy, "dl": dl, "g": g, "e_out": e_out, "e": es, "k_star": k_stars,
                     "v_perp": v_perps}
        return int(np.argmax(y))


def make_fixed_rule(net: FixedNetwork, config: Config) -> FixedRule:
    return FixedRule(net, config)
