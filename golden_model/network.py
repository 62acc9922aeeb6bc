"""The float rate network of SPEC §1.

    z_l = W_l â_{l-1},  â = [a; 1];   a_l = clamp(z_l, 0, 1) for hidden layers;   y = z_L (linear readout)
    loss ℓ(y, t) = mean_k (y_k − t_k)²;   prediction argmax_k y_k

W_l has shape (n_l, n_{l-1} + 1) with the bias as its last column. clamp(·, 0, 1) is the large-T rate of a
non-leaky integrate-and-fire neuron with threshold 1 and soft reset.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dger

from ..config import NetworkConfig

__all__ = ["RateNetwork", "clamp01", "mse_loss", "loss_difference", "one_hot", "rank1_update"]


def rank1_update(w: np.ndarray, e: np.ndarray, v: np.ndarray, alpha: float) -> None:
    """In place: W += α e vᵀ (BLAS ``dger`` on the Fortran view of the C-ordered W; no n×N temporary)."""
    out = dger(alpha, v, e, a=w.T, overwrite_a=True)
    if not np.shares_memory(out, w):  # only if W were not contiguous; never for the model's own weights
        w[...] = out.T


def clamp01(z: np.ndarray) -> np.ndarray:
    return np.clip(z, 0.0, 1.0)


def mse_loss(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ℓ(y, t) = mean_k (y_k − t_k)² over the last axis."""
    return np.mean((y - t) ** 2, axis=-1)


def loss_difference(y: np.ndarray, y_noisy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ΔL = ℓ(ỹ) − ℓ(y) computed without cancellation: mean_k Δy_k (Δy_k + 2 (y_k − t_k)) (SPEC §2 step 3)."""
    dy = y_noisy - y
    return np.mean(dy * (dy + 2.0 * (y - t)), axis=-1)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


class RateNetwork:
    """Weights of an L-layer rate network and its batched forward pass.

    Initialisation: W ~ U(±gain/√n_in) (bias column included), output-layer weights (not bias) × out_scale.
    """

    def __init__(self, config: NetworkConfig, rng: np.random.Generator):
        self.config = config
        self.arch = config.arch
        self.weights: list[np.ndarray] = []
        for l, (n_in, n_out) in enumerate(zip(self.arch[:-1], self.arch[1:])):
            bound = config.init_gain / np.sqrt(n_in)
            w = rng.uniform(-bound, bound, size=(n_out, n_in + 1))
            if l == len(self.arch) - 2:
                w[:, :-1] *= config.out_scale
            self.weights.append(w)

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def forward(self, x: np.ndarray, return_all: bool = False):
        """Batched clean forward pass. ``x``: (batch, n_0). Returns y (batch, n_L), or (zs, activations)."""
        a = x
        zs, acts = [], [x]
        for l, w in enumerate(self.weights):
            z = a @ w[:, :-1].T + w[:, -1]
            zs.append(z)
            a = clamp01(z) if l < self.n_layers - 1 else z
            acts.append(a)
        return (zs, acts) if return_all else a

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.forward(x), axis=-1)

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == labels))

    def is_diverged(self, limit: float = 1e6) -> bool:
        """True when a weight is inf/NaN or beyond ``limit`` in magnitude.

        Networks that learn keep |w| well below 100; once node perturbation runs away the weights grow
        without bound (the clamp keeps the activations finite, so they may never reach inf).
        """
        return not all(np.isfinite(w).all() and np.abs(w).max() <= limit for w in self.weights)

    def copy_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]
