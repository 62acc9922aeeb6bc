"""LOCO's projection machinery (SPEC §2 step 4) against direct linear algebra."""

import numpy as np
import pytest

from loco_fpga.config import Config
from loco_fpga.golden_model.clusters import ClusterProjector, schur_downdate
from loco_fpga.golden_model.network import RateNetwork, loss_difference, mse_loss
from loco_fpga.golden_model.rules import make_rule


def filled_projector(rng, dim=12, k=5, ridge=0.0):
    p = ClusterProjector(dim, k, proto_lr=0.1, ridge=ridge, refresh=1)
    for _ in range(k):
        u = rng.random(dim)
        p.select(u / np.linalg.norm(u))
    assert p.count == k
    return p


@pytest.mark.parametrize("seed", range(5))
def test_projection_is_orthogonal_to_other_prototypes_at_zero_ridge(seed):
    rng = np.random.default_rng(seed)
    p = filled_projector(rng)
    v = rng.random(p.dim) * 3
    for k in range(p.count):
        v_perp = p.project(v, k)
        for j in range(p.count):
            c = p.protos[j]
            if j == k:
                continue
            assert abs(c @ v_perp) <= 1e-9 * np.linalg.norm(c) * np.linalg.norm(v)
        # and it is the orthogonal projection: the removed part lies in span(U)
        others = np.delete(p.protos[: p.count], k, axis=0)
        coef, *_ = np.linalg.lstsq(others.T, v - v_perp, rcond=None)
        np.testing.assert_allclose(others.T @ coef, v - v_perp, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_schur_downdate_equals_direct_inverse(seed):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((6, 10))
    lam = 1e-3
    h = np.linalg.inv(c @ c.T + lam * np.eye(6))
    for k in range(6):
        m = schur_downdate(h, k)
        keep = [i for i in range(6) if i != k]
        direct = np.linalg.inv(c[keep] @ c[keep].T + lam * np.eye(5))
        np.testing.assert_allclose(m[np.ix_(keep, keep)], direct, rtol=1e-9, atol=1e-12)
        assert np.all(m[k, :] == 0) or np.allclose(m[k, :], 0, atol=1e-12)
        np.testing.assert_allclose(m[:, k], 0, atol=1e-12)


def test_ridge_keeps_duplicate_prototypes_invertible():
    p = ClusterProjector(4, 3, proto_lr=0.0, ridge=1e-4, refresh=1)
    u = np.array([1.0, 0, 0, 0])
    p.protos[:3] = u
    p.norms[:3] = 1.0
    p.count = 3
    p.refresh()
    assert np.isfinite(p.h).all()
    v_perp = p.project(np.array([2.0, 1, 0, 0]), 0)
    assert abs(v_perp[0]) < 1e-3 and v_perp[1] == pytest.approx(1.0)


def test_first_distinct_inputs_become_prototypes():
    p = ClusterProjector(3, 3, proto_lr=0.5, ridge=1e-4, refresh=1)
    a = np.array([1.0, 0, 0])
    b = np.array([0, 1.0, 0])
    assert p.select(a) == 0
    p.update(a, 0)
    assert p.select(a) == 0 and p.count == 1      # a duplicate does not become a prototype
    assert p.select(b) == 1 and p.count == 2
    np.testing.assert_array_equal(p.protos[1], b)


def test_loss_difference_equals_difference_of_losses():
    rng = np.random.default_rng(3)
    y, yn = rng.standard_normal((2, 50, 10))
    t = np.eye(10)[rng.integers(0, 10, 50)]
    np.testing.assert_allclose(loss_difference(y, yn, t), mse_loss(yn, t) - mse_loss(y, t), rtol=1e-12, atol=1e-15)


def test_loco_step_leaves_response_to_other_prototypes_unchanged():
    """With λ = 0 a LOCO step changes no layer's response W c_j to another cluster's prototype j ≠ k*."""
    cfg = Config().replace(network={"arch": (10, 8, 4)}, rule={"clusters": 3, "ridge": 0.0, "lr": 0.05})
    rng = np.random.default_rng(0)
    net = RateNetwork(cfg.network, rng)
    rule = make_rule(net, cfg.rule, np.random.default_rng(1))
    chosen = {}
    for l, p in enumerate(rule.projectors):  # record k* of every layer (a spy, behaviour unchanged)
        def spy(u_hat, _select=p.select, _l=l):
            chosen[_l] = _select(u_hat)
            return chosen[_l]
        p.select = spy
    xs, ts = rng.random((30, 10)), np.eye(4)[rng.integers(0, 4, 30)]
    checked = 0
    for x, t in zip(xs, ts):
        before_w = net.copy_weights()
        before_c = [p.protos[: p.count].copy() for p in rule.projectors]
        rule.step(x, t, 0.05)
        for l, p in enumerate(rule.projectors):
            dw = net.weights[l] - before_w[l]
            scale = np.abs(dw).max()
            for j, c in enumerate(before_c[l]):
                if j != chosen[l]:
                    assert np.abs(dw @ c).max() <= 1e-9 * scale * np.linalg.norm(c)
                    checked += 1
            if len(before_c[l]) == p.capacity:
                assert scale > 0  # the step did update this layer
    assert checked > 100
