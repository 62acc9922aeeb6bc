"""The PRNG of the fixed-point model and the HDL, specified bit for bit.

Generator: Marsaglia's **xorshift32** with shifts (13, 17, 5) on a 32-bit state s ≠ 0::

    s ^= (s << 13) mod 2^32;  s ^= s >> 17;  s ^= (s << 5) mod 2^32;  output = s (the new state)

Period 2^32 − 1. In hardware: three XOR/shift stages, no multipliers.

**Streams.** Each consumer owns independent generators ("lanes"); lane ``(stream, index)`` starts from
:func:`seed_state` of ``train.seed``. The host computes the seeds (it has multipliers; the fabric does
not need them) and writes them into the PRNG state registers. Layout:

========== ====== ================================ ==================================================
stream     id     lanes (index)                    draws
========== ====== ================================ ==================================================
NOISE      0      one per layer l                  per training sample, ⌈n_l/32⌉ words; neuron i takes
                                                   bit (i mod 32) of word ⌊i/32⌋: 1 → +σ, 0 → −σ
ENCODER    1      one per input i                  per time step t, one word; Bernoulli spike when
                                                   (word >> (32 − input_frac)) < x_i. The noisy pass
                                                   replays the clean pass's spikes (drawn once).
ROUNDING   2      layer l, row i: index l·2^16 + i per weight update of layer l, row i draws N_l words
                                                   in column order j = 0..N_l−1; r_ij = word >> (32 − s)
                                                   (s = the bits dropped by the update narrowing)
DFA        3      reserved for DFA feedback         (not used by np/loco)
EVAL       4      index b·2^16 + i (sample b of an  encoder draws for inference; reseeded at the start of
                  evaluation batch, input i)       every evaluation, so accuracy is repeatable
========== ====== ================================ ==================================================

Streams advance only when drawn from; the deterministic encoder and the ``half-up``/``trunc`` roundings
draw nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOISE", "ENCODER", "ROUNDING", "DFA", "EVAL", "MASK32", "xorshift32", "seed_state", "lane_seed_state",
           "XorShift32Bank", "LANE_STRIDE"]

NOISE, ENCODER, ROUNDING, DFA, EVAL = 0, 1, 2, 3, 4
MASK32 = 0xFFFFFFFF
#: lanes of one stream are indexed ``major · LANE_STRIDE + minor`` (e.g. layer · 2^16 + row).
LANE_STRIDE = 1 << 16
_ZERO_STATE_REPLACEMENT = 0x6D2B79F5
_S13, _S17, _S5 = np.uint32(13), np.uint32(17), np.uint32(5)


def xorshift32(s: int) -> int:
    """One step of xorshift32 on a Python int (the reference for one lane)."""
    s ^= (s << 13) & MASK32
    s ^= s >> 17
    s ^= (s << 5) & MASK32
    return s


def seed_state(seed: int, stream: int, index: int) -> int:
    """The initial state of lane (stream, index): a MurmurHash3 finaliser of a linear mix; never 0."""
    h = (seed * 0x9E3779B1 + stream * 0x85EBCA77 + index * 0xC2B2AE3D + 0x27D4EB2F) & MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h or _ZERO_STATE_REPLACEMENT


def lane_seed_state(config, stream: int, index: int) -> int:
    """The state the host loads into lane (stream, index) of a config's hardware: ``seed_state`` of
    ``rule.feedback_seed`` for the DFA feedback lanes, of ``train.seed`` for every other lane."""
    return seed_state(config.rule.feedback_seed if stream == DFA else config.train.seed, stream, index)


class XorShift32Bank:
    """Independent xorshift32 lanes advanced together (vectorised over lanes; each lane is sequential)."""

    def __init__(self, seed: int, stream: int, indices):
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        self.state = np.array([seed_state(seed, stream, int(i)) for i in idx.ravel()],
                              dtype=np.uint32).reshape(idx.shape)

    def next(self) -> np.ndarray:
        """Advance every lane by one step; returns the new states (uint32)."""
        s = self.state
        s ^= s << _S13
        s ^= s >> _S17
        s ^= s << _S5
        return s.copy()

    def draw(self, n: int) -> np.ndarray:
        """n successive words of every lane: shape (*lanes, n), int64."""
        out = np.empty((n,) + self.state.shape, dtype=np.uint32)
        s = self.state
        for j in range(n):
            s ^= s << _S13
            s ^= s >> _S17
            s ^= s << _S5
            out[j] = s
        return np.moveaxis(out, 0, -1).astype(np.int64)

    def top_bits(self, bits: int) -> np.ndarray:
        """One draw per lane, keeping its top ``bits`` bits (uniform in [0, 2^bits)), int64."""
        return (self.next() >> np.uint32(32 - bits)).astype(np.int64) if bits else \
            np.zeros(self.state.shape, dtype=np.int64)

    def get_state(self) -> np.ndarray:
        return self.state.copy()

    def set_state(self, state: np.ndarray) -> None:
        self.state = np.array(state, dtype=np.uint32)
