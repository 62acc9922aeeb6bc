"""BP against finite differences; the NP update's expectation against the BP gradient."""

import numpy as np
import pytest

from loco_fpga.config import Config
from loco_fpga.golden_model.network import RateNetwork, mse_loss
from loco_fpga.golden_model.rules import make_rule


def small_net(seed=0, arch=(6, 5, 4, 3)):
    cfg = Config().replace(network={"arch": arch, "init_gain": 2.0, "out_scale": 1.0})
    rng = np.random.default_rng(seed)
    net = RateNetwork(cfg.network, rng)
    x = rng.uniform(0.2, 1.0, arch[0])
    t = np.eye(arch[-1])[1]
    return cfg, net, x, t


def away_from_kinks(net, x, margin):
    zs, _ = net.forward(x[None, :], return_all=True)
    return all(np.all(np.minimum(np.abs(z), np.abs(z - 1)) > margin) for z in zs[:-1])


@pytest.mark.parametrize("seed", range(4))
def test_bp_matches_finite_differences(seed):
    cfg, net, x, t = small_net(seed)
    assert away_from_kinks(net, x, 1e-4)
    rule = make_rule(net, cfg.rule.__class__(name="bp"), np.random.default_rng(0))
    grads, _ = rule.gradients(x, t)
    eps = 1e-6
    for w, g in zip(net.weights, grads):
        num = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + eps
            lp = mse_loss(net.forward(x[None, :])[0], t)
            w[idx] = old - eps
            lm = mse_loss(net.forward(x[None, :])[0], t)
            w[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9)


def test_np_update_is_an_unbiased_gradient_estimate():
    """Average of the NP step's −ΔW/η over many Rademacher draws ≈ the BP gradient.

    Tolerance: with ΔL ≈ Σ_m d_m ξ_m (d = ∂ℓ/∂z over all layers' neurons), the estimate of ∂ℓ/∂z_i is
    d_i + Σ_{m≠i} d_m ξ_m ξ_i / σ², whose variance is Σ_{m≠i} d_m² ≤ ‖d‖². The mean of N draws then has
    standard error ≤ ‖d‖/√N per neuron, times |v_j| ≤ 1 per weight. We allow 5 standard errors (the chance
    that any of the ~60 weights exceeds it by luck is < 1e-4) plus O(σ) bias from the second-order terms,
    which at σ = 1e-3 is orders of magnitude below it.
    """
    # the first seed whose pre-activations stay 1e-2 away from clamp's kinks (σ = 1e-3 never crosses one)
    cfg, net, x, t = next(s for s in map(small_net, range(100)) if away_from_kinks(s[1], s[2], 1e-2))
    bp = make_rule(net, cfg.rule.__class__(name="bp"), np.random.default_rng(0))
    grads, _ = bp.gradients(x, t)
    sigma = 1e-3
    rule = make_rule(net, cfg.rule.__class__(name="np", sigma=sigma, lr_schedule="constant"),
                     np.random.default_rng(42))
    n = 40_000
    start = net.copy_weights()
    acc = [np.zeros_like(w) for w in start]
    for _ in range(n):
        rule.step(x, t, 1.0)
        for a, w, w0 in zip(acc, net.weights, start):
            a += w0 - w
            w[...] = w0
    # ‖d‖: the BP gradient with respect to the pre-activations of every layer
    d = np.concatenate([g[:, -1] for g in grads])          # bias column = ∂ℓ/∂z
    se = np.linalg.norm(d) / np.sqrt(n)
    for a, g in zip(acc, grads):
        est = a / n
        assert np.max(np.abs(est - g)) < 5 * se
    # and the estimate is informative, not just within noise of zero
    flat_est = np.concatenate([(a / n).ravel() for a in acc])
    flat_g = np.concatenate([g.ravel() for g in grads])
    assert np.count_nonzero(grads[0]) > 10  # the first layer really receives gradient
    cos = flat_est @ flat_g / (np.linalg.norm(flat_est) * np.linalg.norm(flat_g))
    assert cos > 0.99


def test_bp_step_applies_minus_lr_times_gradient():
    cfg, net, x, t = small_net(2)
    rule = make_rule(net, cfg.rule.__class__(name="bp"), np.random.default_rng(0))
    grads, _ = rule.gradients(x, t)
    expected = [w - 0.1 * g for w, g in zip(net.weights, grads)]
    rule.step(x, t, 0.1)
    for w, e in zip(net.weights, expected):
        np.testing.assert_allclose(w, e, rtol=1e-12, atol=1e-14)
