"""Per-layer cluster prototypes and the cluster-orthogonal projection of LOCO (SPEC §2 step 4).

One :class:`ClusterProjector` per layer holds K prototypes c_1..c_K (rows of ``C``, dimension N_l) and
H = (C Cᵀ + λI)⁻¹. For a sample with clean input û (normalised) and noisy input v:

1. ``select``: the own cluster k* = argmax_k c_kᵀû / ‖c_k‖. While fewer than K prototypes exist, a û
   that differs from every prototype becomes a new prototype (and is its own cluster).
2. ``project``: v⊥ = v − Uᵀ (U Uᵀ + λI)⁻¹ U v with U = C without row k*. The (K−1)×(K−1) inverse is the
   Schur downdate of H: M = H − H[:, k*] H[k*, :] / H[k*, k*]. M has a zero row and column k* and equals
   the downdated inverse elsewhere, so v⊥ = v − Cᵀ (M (C v)) needs no index deletion — each cluster k
   contributes −c_k w_k with w = M (C v); the hardware's per-cluster units compute exactly this.
   M is never formed: with p = C v and q = H p, M p = q − H[:, k*] q[k*] / H[k*, k*] (O(K²)).
3. ``update``: online k-means c_k* += η_c (û − c_k*); H is refreshed from C every N_ref samples.

Note U excludes k*, so the prototype update of step 3 never changes the U used in step 2.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ClusterProjector", "schur_downdate"]

_DISTINCT_TOL = 1e-12


def schur_downdate(h: np.ndarray, k: int) -> np.ndarray:
    """H − H[:, k] H[k, :] / H[k, k]: zero row/column k, and the inverse of the Gram matrix without k elsewhere."""
    return h - np.outer(h[:, k], h[k, :]) / h[k, k]


class ClusterProjector:
    def __init__(self, dim: int, clusters: int, proto_lr: float, ridge: float, refresh: int):
        self.dim = dim
        self.capacity = clusters
        self.proto_lr = proto_lr
        self.ridge = ridge
        self.refresh_every = refresh
        self.protos = np.zeros((clusters, dim))
        self.norms = np.zeros(clusters)
        self.count = 0            # prototypes in use (grows to K during the first samples)
        self.h = np.zeros((0, 0))  # (C Cᵀ + λI)⁻¹ over the prototypes in use
        self._since_refresh = 0
        self._ridge_eye = {}

    @property
    def active(self) -> np.ndarray:
        return self.protos[: self.count]

    def refresh(self) -> None:
        c = self.active
        eye = self._ridge_eye.get(self.count)
        if eye is None:
            eye = self._ridge_eye[self.count] = self.ridge * np.eye(self.count)
        gram = c @ c.T + eye
        try:
            self.h = np.linalg.inv(gram)
        except np.linalg.LinAlgError:  # only reachable with ridge = 0 and duplicate prototypes
            self.h = np.linalg.pinv(gram)
        self._since_refresh = 0

    def select(self, u_hat: np.ndarray) -> int:
        if self.count:
            sims = self.active @ u_hat / self.norms[: self.count]
            k = int(np.argmax(sims))
            if self.count == self.capacity or sims[k] >= 1.0 - _DISTINCT_TOL:
                return k
        k = self.count
        self.protos[k] = u_hat
        self.norms[k] = np.sqrt(u_hat @ u_hat)
        self.count += 1
        self.refresh()
        return k

    def project(self, v: np.ndarray, k: int) -> np.ndarray:
        if self.count < 2:
            return v
        c = self.active
        h = self.h
        q = h @ (c @ v)
        w = q - h[:, k] * (q[k] / h[k, k])   # = schur_downdate(h, k) @ (c @ v)
        w[k] = 0.0                            # exactly zero in exact arithmetic: k* is not projected out
        return v - w @ c

    def update(self, u_hat: np.ndarray, k: int) -> None:
        c = self.protos[k]
        c += self.proto_lr * (u_hat - c)
        self.norms[k] = np.sqrt(c @ c)
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            self.refresh()
