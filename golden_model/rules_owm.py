"""Orthogonal weight modification (``owm``), the continual-learning reference (Zeng et al., 2019).

Each layer keeps a projector P_l (N_l × N_l, N_l = n_{l-1} + 1, P = I at the start) onto the orthogonal
complement of the inputs it has already seen, built recursively (recursive least squares):

    k = P u,    P ← P − k kᵀ / (α + uᵀ k)          u = [a_{l-1}; 1], α = ``rule.owm_alpha``

and the backprop gradient is projected before it is applied (per-sample SGD):

    W_l −= η δ_l (P u)ᵀ       (= η (δ_l uᵀ) P, P symmetric; P is the one before this sample's update)

P equals α (Σ u uᵀ + α I)⁻¹ over the stored inputs, so P u_stored ≈ 0 when α ≪ uᵀPu: later updates
leave the layer's response to every stored input (almost) unchanged. Inside a single task this also
acts as a 1/t step-size decay along well-visited input directions. δ_l is backprop's
(clamp derivative 1[0 < z < 1]); every sample enters P (there are no task boundaries in the rule).
"""

from __future__ import annotations

import numpy as np

from .rules import Rule
from .rules_feedback import clamp_derivative, forward_trace, output_error

__all__ = ["owm_update", "OrthogonalWeightModification"]


def owm_update(p: np.ndarray, u: np.ndarray, alpha: float) -> np.ndarray:
    """Store ``u`` in projector ``p`` in place: P ← P − k kᵀ/(α + uᵀk), k = P u. Returns k (before the update)."""
    k = p @ u
    p -= np.outer(k, k) / (alpha + u @ k)
    return k


class OrthogonalWeightModification(Rule):
    """``owm``: backprop gradients projected by each layer's recursive input projector."""

    name = "owm"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.alpha = config.owm_alpha
        self.projectors = [np.eye(n + 1) for n in net.arch[:-1]]

    def step(self, x, t, lr):
        ws = self.net.weights
        inputs, zs, y = forward_trace(ws, x)
        delta = output_error(y, t)
        deltas = [None] * len(ws)
        for l in range(len(ws) - 1, -1, -1):
            deltas[l] = delta
            if l:
                delta = (ws[l][:, :-1].T @ delta) * clamp_derivative(zs[l - 1])
        for l, w in enumerate(ws):
            k = owm_update(self.projectors[l], inputs[l], self.alpha)
            w -= lr * np.outer(deltas[l], k)
        return int(np.argmax(y))
