"""Local learning with fixed periodic basis vectors: ``lls``, ``lls-m``, ``lls-mxm`` (per-sample SGD).

LLS (Apolinario, Roy & Roy, arXiv:2405.15868): every hidden layer l has its own loss, and its gradient
never leaves the layer. For hidden activity a = clamp(z, 0, 1), z = W_l [a_{l-1}; 1], and label c:

    â = a / max(‖a‖, ε)                       (L2 normalisation, ε = 1e-12 as in F.normalize)
    p = B â                                    B: C × n_l fixed basis, C = number of classes
    logits = p / T                  (lls)      T = ``rule.lls_temperature`` (0.5)
    logits = (m ⊙ p) / T            (lls-m)    m ∈ R^C learnable per-class gain
    logits = (Mᵀ p) / T             (lls-mxm)  M ∈ R^{C×C} learnable mixing matrix (p as a row times M)
    ℓ_l = −log softmax(logits)_c

    B[c, j] = sin(f_c · j),  f = linspace(50, 512, C) rad per neuron index j = 0..n_l−1   (``sine``)
    B[c, j] = sign(sin(f_c · j))                                                          (``square``)

The frequencies and the sign() square wave follow the authors' code (``generate_frequency_matrix`` with
max_freq=512); the square wave is what a phase accumulator in hardware produces. Gradient of ℓ_l:

    g = softmax(logits) − onehot(c);  ∂ℓ/∂p = g/T (lls), m ⊙ g/T (lls-m), M g/T (lls-mxm)
    ∂ℓ/∂â = Bᵀ ∂ℓ/∂p;   ∂ℓ/∂a = (∂ℓ/∂â − â (âᵀ ∂ℓ/∂â)) / max(‖a‖, ε);   ∂ℓ/∂z = ∂ℓ/∂a ⊙ 1[0 < z < 1]
    W_l −= η ∂ℓ/∂z [a_{l-1}; 1]ᵀ;   m −= η p ⊙ g/T;   M −= η p gᵀ/T

The output layer trains on the global loss ℓ = mean_k (y_k − t_k)² (the authors' code trains its last,
linear classifier on the global cross-entropy; this project's global loss is the MSE of SPEC §1), so
W_L −= η e [a_{L-1}; 1]ᵀ with e = 2 (y − t)/n_L. The gains start as in the authors' code: m, M ~ 0.01·N(0, 1).
All layers update from the same clean forward pass (the input of layer l is the pre-update a_{l-1}).
"""

from __future__ import annotations

import numpy as np

from .rules import Rule
from .rules_feedback import clamp_derivative, forward_trace, output_error

__all__ = ["LLS_MIN_FREQ", "LLS_MAX_FREQ", "lls_basis", "lls_local_loss", "lls_local_gradients",
           "LocalLearningSignals"]

LLS_MIN_FREQ = 50.0
LLS_MAX_FREQ = 512.0
_EPS = 1e-12


def lls_basis(n_classes: int, width: int, kind: str = "square") -> np.ndarray:
    """The C × n fixed basis: sin(f_c j) or its sign, f = linspace(50, 512, C) rad per neuron index."""
    freqs = np.linspace(LLS_MIN_FREQ, LLS_MAX_FREQ, n_classes)[:, None]
    basis = np.sin(freqs * np.arange(width)[None, :])
    if kind == "square":
        return np.sign(basis)
    if kind == "sine":
        return basis
    raise ValueError(f"lls basis {kind!r}: must be square or sine")


def _logits(a, basis, temperature, variant, gain):
    norm = max(float(np.sqrt(a @ a)), _EPS)
    a_hat = a / norm
    p = basis @ a_hat
    if variant == "lls":
        q = p
    elif variant == "lls-m":
        q = gain * p
    else:
        q = p @ gain
    return q / temperature, p, a_hat, norm


def lls_local_loss(w: np.ndarray, u: np.ndarray, label: int, basis: np.ndarray, temperature: float,
                   variant: str = "lls", gain: np.ndarray | None = None) -> float:
    """ℓ_l for hidden weights ``w`` and bias-augmented input ``u`` (for finite-difference checks)."""
    a = np.clip(w @ u, 0.0, 1.0)
    logits = _logits(a, basis, temperature, variant, gain)[0]
    top = logits.max()
    return float(top + np.log(np.sum(np.exp(logits - top))) - logits[label])


def lls_local_gradients(w: np.ndarray, u: np.ndarray, label: int, basis: np.ndarray, temperature: float,
                        variant: str = "lls", gain: np.ndarray | None = None):
    """(∂ℓ_l/∂W_l, ∂ℓ_l/∂gain or None, a) — the analytic gradient given in the module docstring."""
    z = w @ u
    a = np.clip(z, 0.0, 1.0)
    logits, p, a_hat, norm = _logits(a, basis, temperature, variant, gain)
    g = np.exp(logits - logits.max())
    g /= g.sum()
    g[label] -= 1.0
    g /= temperature
    if variant == "lls":
        dp, dgain = g, None
    elif variant == "lls-m":
        dp, dgain = gain * g, p * g
    else:
        dp, dgain = gain @ g, np.outer(p, g)
    d_hat = basis.T @ dp
    da = (d_hat - a_hat * (a_hat @ d_hat)) / norm
    dz = da * clamp_derivative(z)
    return np.outer(dz, u), dgain, a


class LocalLearningSignals(Rule):
    """``lls`` / ``lls-m`` / ``lls-mxm``: hidden layers on their own basis-projected cross-entropy."""

    name = "lls"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.variant = config.name
        self.temperature = config.lls_temperature
        n_classes = net.arch[-1]
        hidden = net.arch[1:-1]
        self.bases = [lls_basis(n_classes, n, config.lls_basis) for n in hidden]
        if self.variant == "lls-m":
            self.gains = [0.01 * rng.standard_normal(n_classes) for _ in hidden]
        elif self.variant == "lls-mxm":
            self.gains = [0.01 * rng.standard_normal((n_classes, n_classes)) for _ in hidden]
        else:
            self.gains = [None for _ in hidden]

    def step(self, x, t, lr):
        ws = self.net.weights
        label = int(np.argmax(t))
        inputs, zs, y = forward_trace(ws, x)
        for l in range(len(ws) - 1):
            gw, dgain, _ = lls_local_gradients(ws[l], inputs[l], label, self.bases[l], self.temperature,
                                               self.variant, self.gains[l])
            ws[l] -= lr * gw
            if dgain is not None:
                self.gains[l] -= lr * dgain
        ws[-1] -= lr * np.outer(output_error(y, t), inputs[-1])
        return int(np.argmax(y))
