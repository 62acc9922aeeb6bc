"""SVD-space alignment (``ssa``): DFA on factored weights W_l = U_l diag(s_l) V_lᵀ (per-sample SGD).

Source: Roy, Apolinario, Das Biswas & Roy, "Feedback Alignment Meets Low-Rank Manifolds: A Structured
Recipe for Local Learning", arXiv:2510.25594. No public code exists; the paper text available to this
project gives the structure but not every formula. What it pins down and what this module implements:

- each layer is stored and trained in factored form W = U diag(s) Vᵀ, U ∈ R^{n_l × r}, V ∈ R^{N_l × r},
  r ≤ min(n_l, N_l) (here W includes the bias column, so V has N_l = n_{l-1} + 1 rows);
- the task signal is DFA's (see ``rules_feedback``): δ_l = (B_l e) ⊙ 1[0 < z_l < 1] for hidden layers,
  δ_L = e for the output, giving the layer's pseudo-gradient G_l = δ_l [a_{l-1}; 1]ᵀ;
- a composite local loss adds an orthogonality penalty on U and V and an alignment term;
- the rank shrinks during training by keeping the singular values that hold a given energy fraction.

What could not be pinned down, and the choices made here (documented in docs/rules.md too):

1. *Task loss.* The paper uses cross-entropy; here the global loss is SPEC §1's MSE, e = 2 (y − t)/n_L.
2. *Feedback structure.* The paper builds feedback matrices "matching the SVD structure"; the exact
   construction is not recoverable. Here B_l is DFA's seeded ±1/√n_L matrix (``dfa_feedback``), so the
   hardware regenerates it from ``rule.feedback_seed`` exactly as for ``dfa``.
3. *Factor updates.* Plain SGD on the factors by the chain rule through W = U diag(s) Vᵀ, for any
   direction D = ∂(loss)/∂W:  ∂U = D V diag(s),  ∂s = diag(Uᵀ D V),  ∂V = Dᵀ U diag(s).
   (No retraction onto the Stiefel manifold; the penalty keeps U, V near-orthonormal.)
4. *Orthogonality penalty.* R = ‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F with weight ``rule.ssa_ortho``;
   ∂R/∂U = 4 U (UᵀU − I), likewise for V.
5. *Alignment term* (switch: ``rule.ssa_align`` > 0). Our choice: make DFA's feedback to layer l−1 agree
   with what backprop would send through layer l, B_{l−1} ≈ W_l[:, :-1]ᵀ B_l (B_L = I for the output
   layer), via A_l = ½‖W_l[:, :-1]ᵀ B_l − B_{l−1}‖²_F on every layer l ≥ 2 — layer-local, since it needs
   only the layer's own weights and two regenerable feedback matrices. ∂A/∂W_l[:, :-1] = B_l (W_l[:, :-1]ᵀ B_l − B_{l−1})ᵀ.
6. *Rank reduction.* Every ``rule.ssa_reduce_every`` samples (only when ``rule.ssa_energy`` < 1) the
   layer is re-factored by an exact SVD of U diag(s) Vᵀ (which also restores exact orthonormality) and
   truncated to the fewest r with Σ_{i≤r} s_i² ≥ energy · Σ s_i², but never below n_L (our floor: repeated
   truncation otherwise collapses the rank). ``rule.ssa_rank`` (0 = full) caps r from the start. The
   paper's schedule and threshold values are not known.
7. *Initialisation.* The factors are the SVD of SPEC §1's initial W (truncated to the rank cap).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController  # a scikit-learn dependency, so always installed

from .rules import Rule
from .rules_feedback import clamp_derivative, dfa_feedback, forward_trace, output_error

__all__ = ["ortho_penalty", "ortho_penalty_grad", "align_penalty", "align_penalty_grad",
           "factor_gradients", "factor_gradients_rank1", "energy_rank", "SvdSpaceAlignment"]


def ortho_penalty(u: np.ndarray, v: np.ndarray) -> float:
    """R = ‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F."""
    r = u.shape[1]
    return float(np.sum((u.T @ u - np.eye(r)) ** 2) + np.sum((v.T @ v - np.eye(r)) ** 2))


def ortho_penalty_grad(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = u.shape[1]
    return 4.0 * u @ (u.T @ u - np.eye(r)), 4.0 * v @ (v.T @ v - np.eye(r))


def align_penalty(w_in: np.ndarray, b_next: np.ndarray, b_prev: np.ndarray) -> float:
    """A = ½‖W[:, :-1]ᵀ B_l − B_{l−1}‖²_F for the weights without bias column ``w_in``."""
    return 0.5 * float(np.sum((w_in.T @ b_next - b_prev) ** 2))


def align_penalty_grad(w_in: np.ndarray, b_next: np.ndarray, b_prev: np.ndarray) -> np.ndarray:
    return b_next @ (w_in.T @ b_next - b_prev).T


def factor_gradients(u: np.ndarray, s: np.ndarray, v: np.ndarray, d: np.ndarray):
    """Chain rule of a loss with ∂/∂W = D through W = U diag(s) Vᵀ: (∂U, ∂s, ∂V)."""
    dv_ = d @ v                       # n × r
    return dv_ * s, np.sum(u * dv_, axis=0), (d.T @ u) * s


def factor_gradients_rank1(u: np.ndarray, s: np.ndarray, v: np.ndarray, delta: np.ndarray, x: np.ndarray):
    """:func:`factor_gradients` for D = δ xᵀ without forming D (matrix–vector products only)."""
    vx, ud = v.T @ x, u.T @ delta
    return np.outer(delta, vx * s), ud * vx, np.outer(x, ud * s)


def energy_rank(s: np.ndarray, energy: float) -> int:
    """Fewest leading singular values (s sorted descending) holding ``energy`` of Σ s²."""
    e = np.cumsum(s * s)
    if e[-1] <= 0.0:
        return 1
    return int(min(np.searchsorted(e, energy * e[-1] * (1.0 - 1e-12)) + 1, len(s)))


class SvdSpaceAlignment(Rule):
    """``ssa``: DFA signal, factored weights, orthogonality penalty, optional alignment and rank reduction."""

    name = "ssa"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.feedback = dfa_feedback(net.arch, config.feedback_seed)
        n_out = net.arch[-1]
        # B_l for the alignment term; the output layer's "feedback" is the identity (δ_L = e).
        self._align_next = self.feedback + [np.eye(n_out)]
        self.factors = []
        for w in net.weights:
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            r = len(s) if config.ssa_rank == 0 else min(config.ssa_rank, len(s))
            self.factors.append([u[:, :r].copy(), s[:r].copy(), vt[:r].T.copy()])
            w[...] = (u[:, :r] * s[:r]) @ vt[:r]
        self.seen = 0
        self._blas = ThreadpoolController()

    @property
    def ranks(self) -> list[int]:
        return [len(f[1]) for f in self.factors]

    def reduce_rank(self) -> None:
        """Re-factor every layer exactly and keep the singular values holding ``ssa_energy`` of the energy.

        The rank never drops below n_L (the number of classes, the dimension of the DFA error): repeated
        energy truncation is a ratchet — the leading singular value grows during training, so without a
        floor the rank collapses towards 1 and training diverges (measured: 27 → 5 in 4 epochs at 0.9).
        """
        floor = self.net.arch[-1]
        for (w, f) in zip(self.net.weights, self.factors):
            if not np.isfinite(w).all():     # diverged: leave it to the training loop to report
                continue
            u, s, vt = np.linalg.svd((f[0] * f[1]) @ f[2].T, full_matrices=False)
            r = min(max(energy_rank(s, self.config.ssa_energy), floor), len(f[1]))
            f[0], f[1], f[2] = u[:, :r].copy(), s[:r].copy(), vt[:r].T.copy()
            w[...] = (f[0] * f[1]) @ f[2].T

    def directions(self, x: np.ndarray, t: np.ndarray):
        """Per layer (∂U, ∂s, ∂V) of the composite loss for one sample, and the output y."""
        cfg = self.config
        ws = self.net.weights
        inputs, zs, y = forward_trace(ws, x)
        e = output_error(y, t)
        deltas = [(b @ e) * clamp_derivative(z) for b, z in zip(self.feedback, zs[:-1])] + [e]
        out = []
        for l, (w, (u, s, v)) in enumerate(zip(ws, self.factors)):
            if cfg.ssa_align > 0.0 and l > 0:
                d = np.outer(deltas[l], inputs[l])
                d[:, :-1] += cfg.ssa_align * align_penalty_grad(w[:, :-1], self._align_next[l],
                                                                self.feedback[l - 1])
                du, ds, dv = factor_gradients(u, s, v, d)
            else:
                du, ds, dv = factor_gradients_rank1(u, s, v, deltas[l], inputs[l])
            if cfg.ssa_ortho > 0.0:
                ou, ov = ortho_penalty_grad(u, v)
                du += cfg.ssa_ortho * ou
                dv += cfg.ssa_ortho * ov
            out.append((du, ds, dv))
        return out, y

    def train_batch(self, x, t, lr):
        # The factor algebra is small matrix–matrix products; multi-threaded BLAS makes them up to 50×
        # slower on a loaded 2-core machine, so SSA runs its BLAS calls on one thread.
        with self._blas.limit(limits=1, user_api="blas"):
            return super().train_batch(x, t, lr)

    def step(self, x, t, lr):
        dirs, y = self.directions(x, t)
        for w, f, (du, ds, dv) in zip(self.net.weights, self.factors, dirs):
            f[0] -= lr * du
            f[1] -= lr * ds
            f[2] -= lr * dv
            w[...] = (f[0] * f[1]) @ f[2].T
        self.seen += 1
        if self.config.ssa_energy < 1.0 and self.seen % self.config.ssa_reduce_every == 0:
            self.reduce_rank()
        return int(np.argmax(y))
