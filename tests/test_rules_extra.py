"""The extra rules of the float golden model (fa, dfa, lls*, ssa, owm), each checked against an
independent computation: finite differences where a gradient is claimed, the stated invariant otherwise,
plus a short digits run per rule that must beat chance clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loco_fpga.cli import main
from loco_fpga.config import RULE_DEFAULT_LR, RULES, Config, ConfigError, NetworkConfig, RuleConfig, default_lr
from loco_fpga.golden_model import load_dataset, train
from loco_fpga.golden_model.network import RateNetwork, mse_loss
from loco_fpga.golden_model.rules import make_rule
from loco_fpga.golden_model.rules_feedback import (
    DFA_LANE, FA_LANE, dfa_feedback, fa_feedback, feedback_matrix, stream_state)
from loco_fpga.golden_model.rules_lls import lls_basis, lls_local_gradients, lls_local_loss
from loco_fpga.golden_model.rules_owm import owm_update
from loco_fpga.golden_model.rules_ssa import (
    align_penalty, align_penalty_grad, energy_rank, factor_gradients, factor_gradients_rank1,
    ortho_penalty, ortho_penalty_grad)

NEW_RULES = ("fa", "dfa", "lls", "lls-m", "lls-mxm", "ssa", "owm")
ARCH = (9, 7, 6, 4)


def _net(arch=ARCH, seed=0, gain=1.5):
    return RateNetwork(NetworkConfig(arch=arch, init_gain=gain, out_scale=1.0), np.random.default_rng(seed))


def _sample(arch=ARCH, seed=1):
    rng = np.random.default_rng(seed)
    t = np.zeros(arch[-1])
    t[rng.integers(arch[-1])] = 1.0
    return rng.uniform(0.0, 1.0, arch[0]), t


def _forward(weights, x):
    a = x
    for l, w in enumerate(weights):
        z = w @ np.append(a, 1.0)
        a = np.clip(z, 0.0, 1.0) if l < len(weights) - 1 else z
    return a


def _numeric_grad(f, m: np.ndarray, eps=1e-6) -> np.ndarray:
    """Central differences of scalar f() w.r.t. every entry of array m (perturbed in place)."""
    g = np.zeros_like(m)
    for idx in np.ndindex(m.shape):
        old = m[idx]
        m[idx] = old + eps
        fp = f()
        m[idx] = old - eps
        fm = f()
        m[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def _mse_grads_fd(weights, x, t):
    return [_numeric_grad(lambda: float(mse_loss(_forward(weights, x), t)), w) for w in weights]


def _rule(name, net, **rule):
    return make_rule(net, RuleConfig(name=name, **rule), np.random.default_rng(5))


# -- registry and config --------------------------------------------------------------------------------

def test_every_new_rule_is_registered_and_selectable():
    for name in NEW_RULES:
        assert name in RULES
        assert make_rule(_net(), RuleConfig(name=name), np.random.default_rng(0)) is not None


@pytest.mark.parametrize("field, value, fragment", [
    ("feedback_seed", -1, "rule.feedback_seed = -1"),
    ("lls_basis", "cosine", "rule.lls_basis = 'cosine'"),
    ("lls_temperature", 0.0, "rule.lls_temperature = 0.0"),
    ("ssa_rank", 1.5, "rule.ssa_rank = 1.5"),
    ("ssa_energy", 1.2, "rule.ssa_energy = 1.2"),
    ("ssa_reduce_every", 0, "rule.ssa_reduce_every = 0"),
    ("ssa_ortho", -0.1, "rule.ssa_ortho = -0.1"),
    ("ssa_align", float("nan"), "rule.ssa_align = nan"),
    ("owm_alpha", 0, "rule.owm_alpha = 0"),
])
def test_new_fields_are_validated_with_field_and_value_in_the_message(field, value, fragment):
    with pytest.raises(ConfigError) as err:
        RuleConfig(**{field: value})
    assert fragment in str(err.value)


def test_new_fields_round_trip_through_a_config_dict():
    cfg = Config().replace(rule={"name": "ssa", "ssa_energy": 0.9, "lls_basis": "sine", "owm_alpha": 0.5})
    assert Config.from_dict(cfg.to_dict()) == cfg


# -- FA / DFA -------------------------------------------------------------------------------------------

def test_fa_with_transposed_forward_weights_is_backprop():
    net = _net()
    rule = _rule("fa", net)
    x, t = _sample()
    rule.feedback = [net.weights[l + 1][:, :-1].T.copy() for l in range(net.n_layers - 1)]
    grads, _ = rule.gradients(x, t)
    for g, g_fd in zip(grads, _mse_grads_fd(net.weights, x, t)):
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-9)


def test_fa_with_its_random_feedback_is_not_backprop_below_the_output():
    net = _net()
    x, t = _sample()
    grads, _ = _rule("fa", net).gradients(x, t)
    fd = _mse_grads_fd(net.weights, x, t)
    np.testing.assert_allclose(grads[-1], fd[-1], rtol=1e-5, atol=1e-9)   # output layer: true gradient
    assert not np.allclose(grads[0], fd[0], rtol=1e-2, atol=1e-6)


def test_dfa_with_one_hidden_layer_and_transposed_output_weights_is_backprop():
    arch = (9, 7, 4)
    net = _net(arch)
    rule = _rule("dfa", net)
    x, t = _sample(arch)
    rule.feedback = [net.weights[1][:, :-1].T.copy()]
    grads, _ = rule.gradients(x, t)
    for g, g_fd in zip(grads, _mse_grads_fd(net.weights, x, t)):
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["fa", "dfa"])
def test_feedback_step_applies_minus_lr_times_the_gradients(name):
    net = _net()
    rule = _rule(name, net)
    x, t = _sample()
    grads, _ = rule.gradients(x, t)
    before = net.copy_weights()
    rule.step(x, t, 0.3)
    for w, w0, g in zip(net.weights, before, grads):
        np.testing.assert_allclose(w, w0 - 0.3 * g, rtol=1e-12, atol=1e-14)


def test_dfa_hidden_error_is_feedback_times_output_error():
    net = _net()
    rule = _rule("dfa", net)
    x, t = _sample()
    grads, y = rule.gradients(x, t)
    e = 2.0 * (y - t) / len(t)
    a = x
    for l in range(net.n_layers - 1):
        u = np.append(a, 1.0)
        z = net.weights[l] @ u
        expected = np.outer((rule.feedback[l] @ e) * ((z > 0) & (z < 1)), u)
        np.testing.assert_allclose(grads[l], expected, rtol=1e-12, atol=1e-15)
        a = np.clip(z, 0.0, 1.0)


def _xorshift_reference(state, n):
    """Independent scalar restatement of the documented generator: x ^= x<<13, x>>17, x<<5 (mod 2^32)."""
    out = []
    for _ in range(n):
        state = (state ^ (state << 13)) % 2**32
        state = state ^ (state >> 17)
        state = (state ^ (state << 5)) % 2**32
        out.append(state)
    return out


def test_dfa_feedback_regenerates_identically_from_the_seed_with_the_documented_bit_layout():
    arch = (64, 100, 100, 10)
    first, again = dfa_feedback(arch, 1234), dfa_feedback(arch, 1234)
    other = dfa_feedback(arch, 1235)
    assert [b.shape for b in first] == [(100, 10), (100, 10)]
    for b, c, d in zip(first, again, other):
        np.testing.assert_array_equal(b, c)
        assert np.mean(b == d) < 0.7                      # another seed: (nearly) independent signs
        assert set(np.unique(b)) == {-1 / math.sqrt(10), 1 / math.sqrt(10)}
        assert 0.4 < np.mean(b > 0) < 0.6
    words = _xorshift_reference(stream_state(1234, DFA_LANE), 2)
    bits = [(words[i // 32] >> (i % 32)) & 1 for i in range(64)]
    np.testing.assert_array_equal(first[0].reshape(-1)[:64] > 0, np.array(bits) == 1)
    assert not np.array_equal(first[0], first[1])          # each layer has its own stream
    # The rule uses exactly the regenerated matrices of its config's seed.
    net = RateNetwork(NetworkConfig(arch=arch), np.random.default_rng(0))
    rule = make_rule(net, RuleConfig(name="dfa", feedback_seed=1234), np.random.default_rng(0))
    for b, c in zip(rule.feedback, first):
        np.testing.assert_array_equal(b, c)


def test_fa_feedback_shapes_and_streams():
    fb = fa_feedback((64, 100, 50, 10), 3)
    assert [b.shape for b in fb] == [(100, 50), (50, 10)]
    np.testing.assert_array_equal(fb[1], feedback_matrix(50, 10, 3, FA_LANE + 1, 1 / math.sqrt(10)))
    assert stream_state(0, 0) != 0
    from loco_fpga.golden_model import prng
    assert stream_state(3, FA_LANE + 1) == prng.seed_state(3, prng.DFA, FA_LANE + 1)   # the project PRNG's lanes


# -- LLS ------------------------------------------------------------------------------------------------

def test_lls_basis_frequencies_follow_the_authors_code():
    b = lls_basis(10, 100, "sine")
    freqs = np.linspace(50, 512, 10)
    assert math.isclose(freqs[1], 50 + 462 / 9)
    for c, j in [(0, 1), (3, 17), (9, 99)]:
        assert math.isclose(b[c, j], math.sin(freqs[c] * j), abs_tol=1e-12)
    np.testing.assert_array_equal(lls_basis(10, 100, "square"), np.sign(b))
    assert np.all(b[:, 0] == 0.0)


@pytest.mark.parametrize("variant", ["lls", "lls-m", "lls-mxm"])
@pytest.mark.parametrize("kind", ["square", "sine"])
def test_lls_local_loss_gradient_matches_finite_differences(variant, kind):
    rng = np.random.default_rng(3)
    n_in, n, c = 8, 12, 5
    w = rng.uniform(-0.6, 0.6, (n, n_in + 1))
    u = np.append(rng.uniform(0, 1, n_in), 1.0)
    gain = {"lls": None, "lls-m": rng.normal(1.0, 0.5, c), "lls-mxm": rng.normal(0, 1, (c, c))}[variant]
    basis = lls_basis(c, n, kind)
    z = w @ u
    assert np.any((z > 0) & (z < 1)) and np.all(np.minimum(np.abs(z), np.abs(z - 1)) > 1e-4)
    gw, dgain, _ = lls_local_gradients(w, u, 2, basis, 0.5, variant, gain)
    fd = _numeric_grad(lambda: lls_local_loss(w, u, 2, basis, 0.5, variant, gain), w)
    np.testing.assert_allclose(gw, fd, rtol=1e-5, atol=1e-8)
    assert np.abs(gw).max() > 1e-3
    if gain is not None:
        fd_gain = _numeric_grad(lambda: lls_local_loss(w, u, 2, basis, 0.5, variant, gain), gain)
        np.testing.assert_allclose(dgain, fd_gain, rtol=1e-5, atol=1e-8)


def test_lls_step_trains_hidden_layers_locally_and_the_output_on_the_global_loss():
    arch = (9, 12, 10, 4)
    net = _net(arch)
    rule = _rule("lls-m", net, lls_basis="sine")
    x, t = _sample(arch)
    before = net.copy_weights()
    gains = [g.copy() for g in rule.gains]
    lr = 0.1
    # Expected updates, computed from the pre-step weights.
    u = np.append(x, 1.0)
    expected = []
    for l in range(2):
        gw, dg, a = lls_local_gradients(before[l], u, int(np.argmax(t)), rule.bases[l], 0.5, "lls-m", gains[l])
        expected.append((gw, dg))
        u = np.append(a, 1.0)
    out_fd = _mse_grads_fd([w.copy() for w in before], x, t)[-1]
    rule.step(x, t, lr)
    for l in range(2):
        np.testing.assert_allclose(net.weights[l], before[l] - lr * expected[l][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rule.gains[l], gains[l] - lr * expected[l][1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(net.weights[-1], before[-1] - lr * out_fd, rtol=1e-5, atol=1e-9)


# -- SSA ------------------------------------------------------------------------------------------------

def test_ssa_penalty_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    u, v = rng.normal(0, 0.4, (7, 5)), rng.normal(0, 0.4, (9, 5))
    du, dv = ortho_penalty_grad(u, v)
    np.testing.assert_allclose(du, _numeric_grad(lambda: ortho_penalty(u, v), u), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dv, _numeric_grad(lambda: ortho_penalty(u, v), v), rtol=1e-6, atol=1e-8)
    w_in, b_next, b_prev = rng.normal(size=(6, 8)), rng.normal(size=(6, 3)), rng.normal(size=(8, 3))
    np.testing.assert_allclose(align_penalty_grad(w_in, b_next, b_prev),
                               _numeric_grad(lambda: align_penalty(w_in, b_next, b_prev), w_in),
                               rtol=1e-6, atol=1e-8)


def test_ssa_factor_chain_rule_matches_finite_differences():
    rng = np.random.default_rng(6)
    m, n, r = 6, 9, 4
    u, s, v = rng.normal(size=(m, r)), rng.normal(size=r), rng.normal(size=(n, r))
    b_next, b_prev = rng.normal(size=(m, 3)), rng.normal(size=(n - 1, 3))

    def loss():   # the alignment term as a function of the factors
        return align_penalty(((u * s) @ v.T)[:, :-1], b_next, b_prev)

    d = np.zeros((m, n))
    d[:, :-1] = align_penalty_grad(((u * s) @ v.T)[:, :-1], b_next, b_prev)
    du, ds, dv = factor_gradients(u, s, v, d)
    for analytic, m_ in ((du, u), (ds, s), (dv, v)):
        np.testing.assert_allclose(analytic, _numeric_grad(loss, m_), rtol=1e-6, atol=1e-7)
    delta, x = rng.normal(size=m), rng.normal(size=n)
    for a, b in zip(factor_gradients_rank1(u, s, v, delta, x), factor_gradients(u, s, v, np.outer(delta, x))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_ssa_step_is_dfa_plus_penalties_on_the_factors_and_keeps_w_factored():
    net = _net()
    rule = _rule("ssa", net, ssa_ortho=0.3, ssa_align=0.2)
    x, t = _sample()
    for w, (u, s, v) in zip(net.weights, rule.factors):
        np.testing.assert_allclose(w, (u * s) @ v.T, atol=1e-12)
        np.testing.assert_allclose(u.T @ u, np.eye(len(s)), atol=1e-12)
    # Penalties are zero at the orthonormal start, so the first step's ∂s is DFA's diag(Uᵀ G V).
    dfa = _rule("dfa", net)
    grads, _ = dfa.gradients(x, t)
    dirs, _ = rule.directions(x, t)
    u, s, v = rule.factors[0]
    np.testing.assert_allclose(dirs[0][1], np.diag(u.T @ grads[0] @ v), rtol=1e-10, atol=1e-14)
    for _ in range(5):
        rule.step(x, t, 0.5)
    for w, (u, s, v) in zip(net.weights, rule.factors):
        np.testing.assert_allclose(w, (u * s) @ v.T, atol=1e-12)


def test_ssa_rank_reduction_keeps_the_energy_fraction():
    s = np.array([3.0, 2.0, 1.0, 0.5])
    assert energy_rank(s, 1.0) == 4
    assert energy_rank(s, 9 / 14.25) == 1
    assert energy_rank(s, 0.9) == 2          # (9 + 4) / 14.25 = 0.912
    net = RateNetwork(NetworkConfig(arch=(64, 30, 20, 10)), np.random.default_rng(0))
    rule = make_rule(net, RuleConfig(name="ssa", ssa_energy=0.8, ssa_reduce_every=3, ssa_rank=15),
                     np.random.default_rng(0))
    assert rule.ranks == [15, 15, 10]
    full = [np.linalg.svd(w, compute_uv=False) for w in net.weights]
    x, t = _sample((64, 30, 20, 10))
    for _ in range(3):
        rule.step(x, t, 1e-3)
    assert rule.ranks[0] < 15 and rule.ranks[1] < 15
    assert min(rule.ranks) >= 10 and rule.ranks[2] == 10        # never below n_L (the floor)
    for w, (u, s, v), sv in zip(net.weights, rule.factors, full):
        assert np.linalg.matrix_rank(w) == len(s)
        assert np.sum(s ** 2) >= 0.8 * np.sum(sv[:15] ** 2) * 0.99
        np.testing.assert_allclose(u.T @ u, np.eye(len(s)), atol=1e-10)


# -- OWM ------------------------------------------------------------------------------------------------

def test_owm_projector_annihilates_stored_inputs_and_matches_its_closed_form():
    rng = np.random.default_rng(8)
    n, alpha = 12, 1e-4
    stored = rng.uniform(0, 1, (6, n))
    p = np.eye(n)
    for x in stored:
        owm_update(p, x, alpha)
    for x in stored:
        assert np.linalg.norm(p @ x) < 1e-3 * np.linalg.norm(x)
    fresh = rng.normal(size=n)
    fresh_perp = fresh - stored.T @ np.linalg.lstsq(stored.T, fresh, rcond=None)[0]
    np.testing.assert_allclose(p @ fresh, fresh_perp, atol=1e-3)   # P → projector onto the complement
    np.testing.assert_allclose(p, alpha * np.linalg.inv(stored.T @ stored + alpha * np.eye(n)), atol=1e-8)


def test_owm_step_leaves_the_first_layers_response_to_stored_inputs_unchanged():
    net = _net()
    rule = _rule("owm", net, owm_alpha=1e-4)
    rng = np.random.default_rng(9)
    old = rng.uniform(0, 1, (3, ARCH[0]))
    for x in old:
        rule.step(x, _sample()[1], 0.0)          # lr 0: only stores the inputs in the projectors
    w0 = net.weights[0].copy()
    x, t = _sample(seed=11)
    rule.step(x, t, 0.5)
    assert not np.allclose(net.weights[0], w0)
    ub = np.hstack([old, np.ones((3, 1))])
    np.testing.assert_allclose(ub @ net.weights[0].T, ub @ w0.T, atol=1e-4)


# -- learning on digits ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("name", NEW_RULES)
def test_rule_beats_chance_clearly_on_digits_in_a_few_epochs(digits, name):
    # ssa starts slowly: the output layer's singular values start ×0.1 (SPEC §1 init) and its U, V steps
    # scale with them (docs/rules.md); it gets 4 epochs, the others 2.
    epochs = 4 if name == "ssa" else 2
    cfg = Config().replace(rule={"name": name, "lr": default_lr(name)}, train={"epochs": epochs})
    result = train(cfg, digits)
    assert not result.diverged
    assert result.final_test_acc > 0.6, (name, result.test_acc)   # chance is 0.1


def test_cli_uses_the_rules_default_lr_only_when_none_is_given(tmp_path, capsys):
    import json
    assert RULE_DEFAULT_LR["ssa"] != RuleConfig.lr and "loco" not in RULE_DEFAULT_LR
    runs = {
        "default": ["--rule", "ssa"],
        "given": ["--rule", "ssa", "--lr", "0.03"],
        "loco": ["--rule", "loco"],
    }
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[rule]\nname = "ssa"\nlr = 0.04\n', encoding="utf-8")
    runs["file"] = ["--config", str(cfg_file)]
    seen = {}
    for key, args in runs.items():
        assert main(["train", *args, "--arch", "64-8-10", "--epochs", "1", "--json", "-q"]) == 0
        seen[key] = json.loads(capsys.readouterr().out)["config"]["rule"]["lr"]
    assert seen == {"default": RULE_DEFAULT_LR["ssa"], "given": 0.03, "loco": RuleConfig.lr, "file": 0.04}
