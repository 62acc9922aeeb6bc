"""The float spiking model of SPEC §3 — what the hardware runs, before quantisation.

One pass of T time steps, every step in this order (the fixed-point model, ``fixed.py``, uses the same):

1. **Encoder** (input layer): ``deterministic`` — sigma-delta: acc ← acc + x, spike when acc ≥ 1, then
   acc ← acc − 1; acc starts at ½, so the count over T steps is round(T·x). ``bernoulli`` — spike when
   a uniform draw r(t) < x. The clean and noisy passes of a training step see the *same* input spikes
   (common random numbers: the encoder draws are replayed).
2. **Hidden layers**, l = 1..L−1, in order, within the same time step: current I = W_l [s_{l-1}(t); 1]
   (+ ξ_l in the noisy pass: a constant current ±σ each step); membrane V ← β V + I (β = 1 for IF,
   1 − 2^-k for LIF); spike s_l(t) = [V ≥ θ]; soft reset V ← V − θ s_l(t). V starts at 0 each sample.
3. **Output layer** (no spiking): y accumulates I_L; after T steps y ← y / T (time-averaged current).

Activity a_l = spike count / T replaces clamp(z_l, 0, 1) of the rate model (for IF with θ = 1 and a
constant current z the count is clamp(z, 0, 1)·T up to one spike — the rate/spike agreement test).

Training reuses the float rules unchanged: :class:`SpikingNP` / :class:`SpikingLoco` only replace the
rate model's ``two_passes`` by the spiking one (the input layer's activity is its spike rate, as in
hardware), so ΔL, g, the cluster selection, the projection
(``ClusterProjector``) and the rank-1 update are the same code as the rate model's. The optional
derivative mask becomes 1[0 < ã < 1] on the noisy pass's spike rate.
"""

from __future__ import annotations

import numpy as np

from ..config import ConfigError, NetworkConfig, RuleConfig, SpikingConfig
from .network import RateNetwork
from .rules import Loco, NodePerturbation

__all__ = ["SpikingNetwork", "SpikingNP", "SpikingLoco", "make_spiking_rule", "simulate", "encode"]

#: Seed of the encoder draws used when a network is *evaluated* with the Bernoulli encoder, so that
#: accuracy measurements are repeatable and independent of the training stream.
EVAL_SEED = 0x5EED


def encode(x: np.ndarray, steps: int, encoder: str, rng: np.random.Generator | None) -> np.ndarray:
    """Input spikes, shape (steps, *x.shape), as float 0/1."""
    out = np.empty((steps,) + x.shape)
    if encoder == "bernoulli":
        draws = rng.random((steps,) + x.shape)
        np.less(draws, x, out=out)
        return out
    acc = np.full(x.shape, 0.5)
    for t in range(steps):
        acc += x
        spike = acc >= 1.0
        out[t] = spike
        acc -= spike
    return out


def simulate(weights: list[np.ndarray], spikes_in: np.ndarray, spiking: SpikingConfig,
             noise: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Run one pass for a batch: ``spikes_in`` (T, B, n_0); ``noise[l]`` (B, n_l) constant currents or None.

    Returns (rates, y): rates[l] (B, n_{l+1}) spike counts / T of hidden layer l+1, y (B, n_L).
    """
    steps, batch = spikes_in.shape[:2]
    last = len(weights) - 1
    beta, theta = spiking.beta, spiking.threshold
    membranes = [np.zeros((batch, w.shape[0])) for w in weights[:-1]]
    counts = [np.zeros((batch, w.shape[0])) for w in weights[:-1]]
    y = np.zeros((batch, weights[-1].shape[0]))
    for t in range(steps):
        s = spikes_in[t]
        for l, w in enumerate(weights):
            current = s @ w[:, :-1].T + w[:, -1]
            if noise is not None and noise[l] is not None:
                current += noise[l]
            if l == last:
                y += current
                break
            v = membranes[l]
            if beta != 1.0:
                v *= beta
            v += current
            s = (v >= theta).astype(np.float64)
            v -= theta * s
            counts[l] += s
    return [c / steps for c in counts], y / steps


class SpikingNetwork(RateNetwork):
    """A :class:`RateNetwork` whose forward pass (inference, accuracy) is the spiking simulation."""

    def __init__(self, config: NetworkConfig, spiking: SpikingConfig, rng: np.random.Generator):
        super().__init__(config, rng)
        self.spiking = spiking

    def forward(self, x: np.ndarray, return_all: bool = False):
        enc_rng = np.random.default_rng(EVAL_SEED) if self.spiking.encoder == "bernoulli" else None
        spikes = encode(x, self.spiking.steps, self.spiking.encoder, enc_rng)
        rates, y = simulate(self.weights, spikes, self.spiking)
        return ([x] + rates + [y]) if return_all else y


class _SpikingPasses:
    """Mixin: the clean and noisy spiking passes in place of the rate model's ``two_passes``."""

    def two_passes(self, x: np.ndarray, xi: np.ndarray):
        spk = self.net.spiking
        spikes = encode(x, spk.steps, spk.encoder, self.rng)       # drawn once, used by both passes
        pair = np.broadcast_to(spikes[:, None, :], (spk.steps, 2, x.shape[0]))
        noise = []
        for l in range(self.net.n_layers):
            layer = np.zeros((2, self.widths[l]))
            layer[1] = xi[self._offsets[l]:self._offsets[l + 1]]
            noise.append(layer)
        rates, y = simulate(self.net.weights, pair, spk, noise)
        self._inputs[0][:-1, 0] = spikes.mean(axis=0)   # the input layer's activity: its spike rate
        self._inputs[0][:-1, 1] = self._inputs[0][:-1, 0]
        masks = []
        for l, r in enumerate(rates):
            self._inputs[l + 1][:-1] = r.T
            masks.append((r[1] > 0.0) & (r[1] < 1.0))
        masks.append(None)
        return self._inputs, y[0], y[1], masks


class SpikingNP(_SpikingPasses, NodePerturbation):
    name = "np"


class SpikingLoco(_SpikingPasses, Loco):
    name = "loco"


_SPIKING_RULES = {"np": SpikingNP, "loco": SpikingLoco}


def make_spiking_rule(net: SpikingNetwork, config: RuleConfig, rng: np.random.Generator):
    if config.name not in _SPIKING_RULES:
        raise ConfigError(f"rule.name = {config.name!r}: the spiking model trains with "
                          f"{' or '.join(_SPIKING_RULES)}")
    if config.noise_placement != "pre":
        raise ConfigError(f"rule.noise_placement = {config.noise_placement!r}: the spiking model "
                          "perturbs the input current ('pre')")
    return _SPIKING_RULES[config.name](net, config, rng)
