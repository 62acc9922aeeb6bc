"""Feedback alignment (``fa``) and direct feedback alignment (``dfa``), per-sample SGD.

Both replace the transported weights of backprop by fixed random feedback matrices. With the output
error e = dℓ/dy = 2 (y − t) / n_L and the clamp derivative f'(z) = 1[0 < z < 1]:

    output layer:   δ_L = e                                   (the true gradient, both rules)
    FA,  hidden l:  δ_l = (B_{l+1} δ_{l+1}) ⊙ f'(z_l)          B_{l+1} is n_l × n_{l+1}, replaces W_{l+1}ᵀ
    DFA, hidden l:  δ_l = (B_l e) ⊙ f'(z_l)                    B_l is n_l × n_L, straight from the output
    update:         W_l −= η δ_l [a_{l-1}; 1]ᵀ

With B_{l+1} = W_{l+1}[:, :-1]ᵀ, FA is exactly backprop (a test checks this). DFA needs no backward
chain: every hidden layer gets its error from the broadcast e, as LOCO's layers get the scalar g.

Feedback matrices are never stored by the hardware: they are regenerated from ``rule.feedback_seed``
by a specified PRNG, so the golden model builds them the same way (:func:`feedback_matrix`):

- one lane of the project PRNG (``prng.py``: xorshift32, shifts 13/17/5, output = the new state) per
  matrix, on the PRNG's reserved ``DFA`` stream: lane index ``DFA_LANE + l`` for DFA's matrix of hidden
  layer l (0-based), ``FA_LANE + l`` for FA's; start state ``prng.seed_state(seed, DFA, index)``;
- entry i of the row-major matrix takes bit (i mod 32) of word ⌊i / 32⌋ (LSB first, the same convention
  as the NOISE stream): bit 1 → +scale, bit 0 → −scale;
- scale = 1/√fan, fan = the length of the error vector the matrix multiplies (n_{l+1} for FA, n_L for
  DFA), so ‖B δ‖ is of the order of ‖δ‖ whatever the width.

Entries are ±scale (Rademacher), so the hardware multiplies by a sign and applies one common scale.
"""

from __future__ import annotations

import numpy as np

from . import prng
from .network import clamp01, rank1_update
from .rules import Rule

__all__ = [
    "FA_LANE", "DFA_LANE", "stream_state", "xorshift32", "feedback_matrix", "fa_feedback",
    "dfa_feedback", "forward_trace", "output_error", "FeedbackAlignment", "DirectFeedbackAlignment",
]

_M32 = 0xFFFFFFFF
#: lane indices on the PRNG's DFA stream: DFA's matrix of hidden layer l uses DFA_LANE + l, FA's FA_LANE + l.
DFA_LANE = 0
FA_LANE = 1 << 15


def stream_state(seed: int, lane: int) -> int:
    """Start state of the feedback lane ``lane`` (on the PRNG's DFA stream) for ``seed``."""
    return prng.seed_state(int(seed), prng.DFA, int(lane))


def xorshift32(state: int, n: int) -> np.ndarray:
    """The next ``n`` words of a 32-bit xorshift generator started at ``state`` (state advanced first)."""
    out = np.empty(n, dtype=np.uint64)
    x = state & _M32
    for i in range(n):
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        out[i] = x
    return out


def feedback_matrix(rows: int, cols: int, seed: int, lane: int, scale: float) -> np.ndarray:
    """A rows × cols matrix of ±scale from feedback lane ``lane`` (bit layout in the module docstring)."""
    n = rows * cols
    words = xorshift32(stream_state(seed, lane), (n + 31) // 32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    signs = bits.reshape(-1)[:n].astype(np.float64) * 2.0 - 1.0
    return scale * signs.reshape(rows, cols)


def fa_feedback(arch: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """FA feedback: entry l (0-based hidden layer) is n_l × n_{l+1} and carries δ_{l+1} back to layer l."""
    return [feedback_matrix(arch[l + 1], arch[l + 2], seed, FA_LANE + l, 1.0 / np.sqrt(arch[l + 2]))
            for l in range(len(arch) - 2)]


def dfa_feedback(arch: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """DFA feedback: entry l (0-based hidden layer) is n_l × n_L and carries the output error e to layer l."""
    n_out = arch[-1]
    return [feedback_matrix(arch[l + 1], n_out, seed, DFA_LANE + l, 1.0 / np.sqrt(n_out))
            for l in range(len(arch) - 2)]


def forward_trace(weights: list[np.ndarray], x: np.ndarray):
    """One clean pass keeping what local rules need: bias-augmented inputs [a_{l-1}; 1], pre-activations, y."""
    inputs, zs = [], []
    a = x
    last = len(weights) - 1
    for l, w in enumerate(weights):
        u = np.append(a, 1.0)
        z = w @ u
        inputs.append(u)
        zs.append(z)
        a = clamp01(z) if l < last else z
    return inputs, zs, a


def output_error(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """e = dℓ/dy for ℓ = mean_k (y_k − t_k)²."""
    return 2.0 * (y - t) / len(t)


def clamp_derivative(z: np.ndarray) -> np.ndarray:
    return ((z > 0.0) & (z < 1.0)).astype(np.float64)


class FeedbackAlignment(Rule):
    """``fa``: backprop's chain with every W_{l+1}ᵀ replaced by a fixed random B_{l+1} (``feedback``)."""

    name = "fa"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.feedback = fa_feedback(net.arch, config.feedback_seed)

    def deltas(self, zs: list[np.ndarray], e: np.ndarray) -> list[np.ndarray]:
        out = [None] * len(zs)
        out[-1] = e
        for l in range(len(zs) - 2, -1, -1):
            out[l] = (self.feedback[l] @ out[l + 1]) * clamp_derivative(zs[l])
        return out

    def gradients(self, x: np.ndarray, t: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The per-layer update directions δ_l [a_{l-1}; 1]ᵀ (W_l −= η · this) and the output y."""
        inputs, zs, y = forward_trace(self.net.weights, x)
        ds = self.deltas(zs, output_error(y, t))
        return [np.outer(d, u) for d, u in zip(ds, inputs)], y

    def step(self, x, t, lr):
        inputs, zs, y = forward_trace(self.net.weights, x)
        for w, d, u in zip(self.net.weights, self.deltas(zs, output_error(y, t)), inputs):
            rank1_update(w, d, u, -lr)          # W −= η δ uᵀ in place (BLAS dger), = gradients()
        return int(np.argmax(y))


class DirectFeedbackAlignment(FeedbackAlignment):
    """``dfa``: every hidden layer's error is B_l e, straight from the output (no backward chain)."""

    name = "dfa"

    def __init__(self, net, config, rng):
        Rule.__init__(self, net, config, rng)
        self.feedback = dfa_feedback(net.arch, config.feedback_seed)

    def deltas(self, zs, e):
        out = [(b @ e) * clamp_derivative(z) for b, z in zip(self.feedback, zs[:-1])]
        out.append(e)
        return out
