"""Learning rules of the float golden model: ``bp``, ``np``, ``loco`` (streaming) and ``loco-batch``.

All rules update a :class:`RateNetwork` in place with plain SGD. Streaming rules (``bp``, ``np``,
``loco``) take one sample per update; ``loco-batch`` takes a mini-batch.

Node perturbation (SPEC §2): a clean and a noisy pass share the weights; the noisy pass adds ξ_l to
every layer. With ΔL = ℓ(ỹ) − ℓ(y) and g = η ΔL / σ², each layer updates W_l −= g · e_l v_lᵀ where
e_l = ξ_l (times the derivative mask where that applies) and v_l = [ã_{l-1}; 1] (noisy input). LOCO
replaces v_l by its projection v⊥ orthogonal to the other clusters' prototypes (``clusters.py``).
Every layer's update needs only the broadcast scalar g and layer-local signals.

``rule.output_update = "delta"`` (np, loco): the output layer gets no perturbation and learns from its exact
local gradient, W_L −= η (2/n_L)(y − t) u⊥ᵀ with u its clean input (projected like v for LOCO); ΔL then
carries only the hidden layers' perturbations. In deep networks the output layer's own noise dominates
ΔL and drowns the hidden layers' signal (docs/results.md, depth).
"""

from __future__ import annotations

import numpy as np

from ..config import RuleConfig
from .clusters import ClusterProjector
from .network import RateNetwork, clamp01, loss_difference, rank1_update

__all__ = ["Rule", "Backprop", "NodePerturbation", "Loco", "LocoBatch", "make_rule"]


class Rule:
    """Base class: ``train_batch`` applies one update per sample (streaming) unless overridden."""

    name = "rule"
    batch_size = 1

    def __init__(self, net: RateNetwork, config: RuleConfig, rng: np.random.Generator):
        self.net = net
        self.config = config
        self.rng = rng

    def step(self, x: np.ndarray, t: np.ndarray, lr: float) -> int:
        """One update on one sample; returns the clean pass's predicted class (for running accuracy)."""
        raise NotImplementedError

    def train_batch(self, x: np.ndarray, t: np.ndarray, lr: float) -> np.ndarray:
        return np.array([self.step(xi, ti, lr) for xi, ti in zip(x, t)])


class Backprop(Rule):
    """Exact gradient of ℓ = mean_k (y_k − t_k)², per-sample SGD — the reference."""

    name = "bp"

    def gradients(self, x: np.ndarray, t: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """dℓ/dW_l for one sample (clamp's derivative taken as 1[0 < z < 1]) and the output y."""
        ws = self.net.weights
        acts, zs = [x], []
        a = x
        for l, w in enumerate(ws):
            z = w[:, :-1] @ a + w[:, -1]
            zs.append(z)
            a = clamp01(z) if l < len(ws) - 1 else z
            acts.append(a)
        y = acts[-1]
        delta = 2.0 * (y - t) / len(t)
        grads = [None] * len(ws)
        for l in range(len(ws) - 1, -1, -1):
            grads[l] = np.outer(delta, np.append(acts[l], 1.0))
            if l:
                delta = (ws[l][:, :-1].T @ delta) * ((zs[l - 1] > 0) & (zs[l - 1] < 1))
        return grads, y

    def step(self, x, t, lr):
        ws = self.net.weights
        acts, zs = [np.append(x, 1.0)], []
        for l, w in enumerate(ws):
            z = w @ acts[-1]
            zs.append(z)
            if l < len(ws) - 1:
                acts.append(np.append(clamp01(z), 1.0))
        y = zs[-1]
        delta = 2.0 * (y - t) / len(t)
        for l in range(len(ws) - 1, -1, -1):
            nxt = (ws[l][:, :-1].T @ delta) * ((zs[l - 1] > 0) & (zs[l - 1] < 1)) if l else None
            rank1_update(ws[l], delta, acts[l], -lr)   # after nxt: the backward pass uses the old W_l
            delta = nxt
        return int(np.argmax(y))


class NodePerturbation(Rule):
    """Plain node perturbation (``np``): v⊥ = v. Subclasses change :meth:`project`."""

    name = "np"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.sigma = config.sigma
        self.widths = net.arch[1:]
        self._offsets = np.cumsum((0,) + tuple(self.widths))
        # Preallocated bias-augmented inputs, columns (clean, noisy); the last row stays 1.
        self._inputs = [np.ones((n + 1, 2)) for n in net.arch[:-1]]
        self.output_delta = config.output_update == "delta"
        self.energy_norm = config.step_norm == "energy"

    def draw_noise(self) -> np.ndarray:
        """All layers' perturbations for one sample, concatenated (sliced per layer with ``_offsets``)."""
        total = self._offsets[-1]
        if self.config.noise == "rademacher":
            xi = self.sigma * (2.0 * self.rng.integers(0, 2, size=total) - 1.0)
        else:
            xi = self.sigma * self.rng.standard_normal(total)
        if self.output_delta:          # the output layer is not perturbed (output_update = "delta")
            xi[self._offsets[-2]:] = 0.0
        return xi

    def two_passes(self, x: np.ndarray, xi: np.ndarray):
        """Clean and noisy pass together (each weight read serves both columns, as in hardware).

        Returns (inputs, y, y_noisy, masks): inputs[l] is the (N_l, 2) array [u | v] of layer l;
        masks[l] is the derivative mask 1[0 < z̃ < 1] of hidden layer l (None for the output layer).
        """
        post = self.config.noise_placement == "post"
        ws = self.net.weights
        last = len(ws) - 1
        self._inputs[0][:-1, 0] = x
        self._inputs[0][:-1, 1] = x
        masks = []
        for l, w in enumerate(ws):
            z = w @ self._inputs[l]                     # (n_l, 2): clean, noisy
            noise = xi[self._offsets[l]:self._offsets[l + 1]]
            if l == last:
                z[:, 1] += noise
                masks.append(None)
                return self._inputs, z[:, 0], z[:, 1], masks
            if not post:
                z[:, 1] += noise
            masks.append((z[:, 1] > 0.0) & (z[:, 1] < 1.0))
            nxt = self._inputs[l + 1]
            np.clip(z, 0.0, 1.0, out=nxt[:-1])
            if post:
                nxt[:-1, 1] += noise
        raise AssertionError("unreachable")

    def project(self, l: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return v

    def step(self, x, t, lr):
        xi = self.draw_noise()
        inputs, y, y_noisy, masks = self.two_passes(x, xi)
        g = lr * float(loss_difference(y, y_noisy, t)) / (self.sigma * self.sigma)
        use_mask = self.config.mask or self.config.noise_placement == "post"
        last = self.net.n_layers - 1
        for l, w in enumerate(self.net.weights):
            u = inputs[l][:, 0]
            scale = 1.0 / float(u @ u) if self.energy_norm else 1.0   # ‖u‖² ≥ 1 (bias entry)
            if l == last and self.output_delta:     # exact local gradient of the linear readout
                rank1_update(w, 2.0 * (y - t) / len(t), self.project(l, u, u), -lr * scale)
                continue
            e = xi[self._offsets[l]:self._offsets[l + 1]]
            if use_mask and masks[l] is not None:
                e = e * masks[l]
            v = self.project(l, u, inputs[l][:, 1])
            rank1_update(w, e, v, -g * scale)
        return int(np.argmax(y))


class Loco(NodePerturbation):
    """Streaming LOCO: node perturbation with v projected orthogonally to the other clusters (SPEC §2)."""

    name = "loco"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.projectors = [
            ClusterProjector(n + 1, config.clusters, config.proto_lr, config.ridge, config.refresh)
            for n in net.arch[:-1]
        ]

    def project(self, l, u, v):
        p = self.projectors[l]
        u_hat = u / np.sqrt(u @ u)   # ‖u‖ ≥ 1 thanks to the bias entry
        k = p.select(u_hat)
        v_perp = p.project(v, k)
        p.update(u_hat, k)
        return v_perp


def _kmeans(points: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    """Lloyd's k-means on rows, initialised with evenly spaced rows (as the authors' code does)."""
    idx = (np.arange(k) * len(points)) // k
    centers = points[idx].copy()
    for _ in range(iterations):
        d = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
        assign = np.argmin(d, axis=1)
        for j in range(k):
            members = points[assign == j]
            if len(members):
                centers[j] = members.mean(axis=0)
    return centers


class LocoBatch(NodePerturbation):
    """Code-faithful batch LOCO (SPEC §2 item 5), for comparison with the authors' script.

    Per layer and mini-batch: the normalised bias-augmented batch mean goes into a ring buffer; k-means
    (10 Lloyd iterations) over the buffer gives K centroids; the one nearest in angle to the current batch
    mean is dropped and the rest span the protected subspace (P_owm = I − U(UᵀU + λI)⁻¹Uᵀ). The batch mean
    and the top principal directions of the batch are projected by P_owm and Gram–Schmidt
    orthogonalised (directions that lose more than 90 % of their norm are dropped) into Q; the batch
    node-perturbation gradient Ĝ is replaced by Ĝ Q(QᵀQ)⁻¹Qᵀ. Adam (β = 0.9, 0.999; as the authors'
    code) or plain SGD (``rule.optimizer``) applies it.
    """

    name = "loco-batch"

    def __init__(self, net, config, rng):
        super().__init__(net, config, rng)
        self.batch_size = config.batch_size
        self.buffers = [np.zeros((config.buffer, n + 1)) for n in net.arch[:-1]]
        self.filled = 0
        self.cursor = 0
        self.adam_m = [np.zeros_like(w) for w in net.weights]
        self.adam_v = [np.zeros_like(w) for w in net.weights]
        self.adam_t = 0

    def _projector(self, l: int, u_batch: np.ndarray) -> np.ndarray:
        cfg = self.config
        n = u_batch.shape[1]
        mean = u_batch.mean(axis=0)
        p_owm = np.eye(n)
        if self.filled >= cfg.clusters:
            centers = _kmeans(self.buffers[l][: self.filled], cfg.clusters)
            cos = np.abs(centers @ mean) / (np.linalg.norm(centers, axis=1) * np.linalg.norm(mean) + 1e-30)
            u = np.delete(centers, int(np.argmax(cos)), axis=0).T          # (n, K-1)
            p_owm -= u @ np.linalg.solve(u.T @ u + cfg.ridge * np.eye(u.shape[1]), u.T)
        centred = u_batch - mean
        cov = centred.T @ centred / max(len(u_batch) - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        dirs = np.concatenate([mean[:, None], evecs[:, order[: max(cfg.pcs - 1, 0)]]], axis=1)
        dirs = p_owm @ dirs
        q = []
        for i in range(dirs.shape[1]):
            d = dirs[:, i].copy()
            for qj in q:
                d -= (d @ qj) / (qj @ qj) * qj
            if np.linalg.norm(d) > 0.1 * np.linalg.norm(dirs[:, i]):
                q.append(d)
        if not q:
            return np.zeros((n, n))
        qm = np.stack(q, axis=1)
        return qm @ np.linalg.solve(qm.T @ qm, qm.T)

    def train_batch(self, x, t, lr):
        preds, us, vs, es = [], [[] for _ in self.net.weights], [[] for _ in self.net.weights], []
        use_mask = self.config.mask or self.config.noise_placement == "post"
        for xi_, ti in zip(x, t):
            xi = self.draw_noise()
            inputs, y, y_noisy, masks = self.two_passes(xi_, xi)
            g = float(loss_difference(y, y_noisy, ti)) / (self.sigma * self.sigma)
            per_layer = []
            for l in range(self.net.n_layers):
                e = xi[self._offsets[l]:self._offsets[l + 1]]
                if use_mask and masks[l] is not None:
                    e = e * masks[l]
                per_layer.append(g * e)
                us[l].append(inputs[l][:, 0].copy())
                vs[l].append(inputs[l][:, 1].copy())
            es.append(per_layer)
            preds.append(int(np.argmax(y)))
        self.adam_t += 1
        for l, w in enumerate(self.net.weights):
            u_batch, v_batch = np.array(us[l]), np.array(vs[l])
            e_batch = np.array([e[l] for e in es])
            grad = e_batch.T @ v_batch / len(x) @ self._projector(l, u_batch)
            if self.config.optimizer == "adam":
                m, v2, t = self.adam_m[l], self.adam_v[l], self.adam_t
                m *= 0.9
                m += 0.1 * grad
                v2 *= 0.999
                v2 += 0.001 * grad * grad
                grad = (m / (1 - 0.9**t)) / (np.sqrt(v2 / (1 - 0.999**t)) + 1e-8)
            w -= lr * grad
            mean = u_batch.mean(axis=0)
            self.buffers[l][self.cursor] = mean / np.linalg.norm(mean)
        self.cursor = (self.cursor + 1) % self.config.buffer
        self.filled = min(self.filled + 1, self.config.buffer)
        return np.array(preds)


_RULES = {"bp": Backprop, "np": NodePerturbation, "loco": Loco, "loco-batch": LocoBatch}

# Further rules live in their own modules (they import Rule from here, hence the late import).
from .rules_feedback import DirectFeedbackAlignment, FeedbackAlignment  # noqa: E402
from .rules_lls import LocalLearningSignals  # noqa: E402
from .rules_owm import OrthogonalWeightModification  # noqa: E402
from .rules_ssa import SvdSpaceAlignment  # noqa: E402

_RULES.update({"fa": FeedbackAlignment, "dfa": DirectFeedbackAlignment, "lls": LocalLearningSignals,
               "lls-m": LocalLearningSignals, "lls-mxm": LocalLearningSignals, "ssa": SvdSpaceAlignment,
               "owm": OrthogonalWeightModification})


def make_rule(net: RateNetwork, config: RuleConfig, rng: np.random.Generator) -> Rule:
    return _RULES[config.name](net, config, rng)
