"""The fixed-point golden model: agreement with the float math, saturation in the data path, determinism."""

import numpy as np
import pytest

from loco_fpga.config import Config
from loco_fpga.golden_model.datasets import load_digits
from loco_fpga.golden_model.fixed import FixedClusters, FixedNetwork, FixedRule, gauss_jordan_inverse
from loco_fpga.golden_model.spiking import encode, simulate
from loco_fpga.qformat import formats


def _cfg(**changes):
    base = {"network": {"arch": (64, 32, 10)}, "spiking": {"enabled": True, "steps": 16},
            "fixed": {"enabled": True}, "rule": {"ridge": 2.0**-13}}
    for k, v in changes.items():
        base.setdefault(k, {}).update(v)
    return Config().replace(**base)


def _model(cfg, seed=0):
    net = FixedNetwork(cfg, np.random.default_rng(seed))
    return net, FixedRule(net, cfg)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_integer_passes_equal_the_float_spiking_model(digits):
    # IF neurons, deterministic encoder, inputs and weights on the fixed-point grid: every float sum is
    # exact, so spike counts must be identical and y differs only by the final half-up rounding.
    cfg = _cfg(network={"arch": (64, 40, 24, 10)})
    net, _ = _model(cfg)
    fm = net.fmts
    x_q = fm.input.from_float(digits.x_test[:50])
    counts, y = net.run(net.encode(x_q, None))
    w_float = [fm.weight.to_float(w) for w in net.weights]
    rates, y_float = simulate(w_float, encode(fm.input.to_float(x_q), 16, "deterministic", None), cfg.spiking)
    for c, r in zip(counts, rates):
        np.testing.assert_array_equal(c, r * 16)
    assert np.max(np.abs(fm.out.to_float(y) - y_float)) <= 0.5 * fm.out.lsb


def _reference_update(w, g, signs, v_perp, drop, fmt):
    # Python ints (no wrap-around possible), round half up, then clamp
    out = w.copy()
    for i in range(w.shape[0]):
        e = g if signs[i] else -g
        for j in range(w.shape[1]):
            d = (e * int(v_perp[j]) + (1 << (drop - 1))) >> drop
            out[i, j] = min(max(int(w[i, j]) - d, fmt.min), fmt.max)
    return out


def test_np_step_weight_update_matches_python_integers(digits):
    cfg = _cfg(rule={"name": "np"}, fixed={"update_rounding": "half-up"})
    net, rule = _model(cfg)
    before = [w.copy() for w in net.weights]
    rule.step_q(net.fmts.input.from_float(digits.x_train[0]), int(digits.y_train[0]), rule.lr_register(0.5))
    last = rule.last
    assert last["g"] != 0
    for l, w in enumerate(before):
        expect = _reference_update(w, int(last["g"]), last["noise_signs"][l], last["v_perp"][l], rule.drop,
                                   net.fmts.weight)
        np.testing.assert_array_equal(net.weights[l], expect)


def test_output_delta_update_matches_python_integers_and_the_float_gradient(digits):
    # output_update = "delta": the output layer is not perturbed and takes e_i = η·2(y_i − t_i)/n_L
    cfg = _cfg(rule={"name": "np", "output_update": "delta"}, fixed={"update_rounding": "half-up"})
    net, rule = _model(cfg)
    fm, wf = net.fmts, cfg.fixed.weight_frac
    lr = 0.05
    lr_q = rule.lr_register(lr)
    label = int(digits.y_train[0])
    before = [w.copy() for w in net.weights]
    # the output layer's own noise is off: a network of one (output) layer sees no perturbation at all
    single = _cfg(network={"arch": (64, 10)}, rule={"name": "np", "output_update": "delta"})
    snet, srule = _model(single)
    srule.step_q(fm.input.from_float(digits.x_train[0]), label, lr_q)
    np.testing.assert_array_equal(srule.last["y"], srule.last["y_noisy"])
    assert srule.last["dl"] == 0 and srule.last["g"] == 0
    # the two-layer network: hidden layer as NP, output layer by its local gradient with the clean input
    rule.step_q(fm.input.from_float(digits.x_train[0]), label, lr_q)
    last = rule.last
    y = last["y"]
    err = [int(v) - ((1 << wf) if k == label else 0) for k, v in enumerate(y)]
    drop = fm.out.frac + fm.lr.frac + fm.sigma_shift - 1 - fm.g.frac
    e_ref = [min(max((d * lr_q + (1 << (drop - 1))) >> drop, fm.g.min), fm.g.max) for d in err]
    np.testing.assert_array_equal(last["e_out"], e_ref)
    e_float = lr * 2.0 * (fm.out.to_float(y) - np.eye(10)[label]) / 10
    assert np.max(np.abs(fm.g.to_float(np.array(e_ref)) - e_float)) <= 1.01 * fm.g.lsb + e_float.max() * 2e-3
    u = np.append(last["counts_clean"][0], cfg.spiking.steps)
    np.testing.assert_array_equal(last["v_perp"][1], u << (fm.vperp.frac - fm.log2_steps))
    out = before[1].copy()
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            d = (e_ref[i] * int(last["v_perp"][1][j]) + (1 << (rule.drop - 1))) >> rule.drop
            out[i, j] = min(max(int(before[1][i, j]) - d, fm.weight.min), fm.weight.max)
    np.testing.assert_array_equal(net.weights[1], out)
    expect0 = _reference_update(before[0], int(last["g"]), last["noise_signs"][0], last["v_perp"][0],
                                rule.drop, fm.weight)
    np.testing.assert_array_equal(net.weights[0], expect0)


def test_dfa_step_matches_python_integers_and_the_float_feedback(digits):
    from loco_fpga.golden_model.rules_feedback import dfa_feedback
    cfg = _cfg(rule={"name": "dfa"}, network={"arch": (64, 24, 16, 10)}, fixed={"update_rounding": "half-up"})
    net, rule = _model(cfg)
    fm, steps = net.fmts, cfg.spiking.steps
    before = [w.copy() for w in net.weights]
    x_q = fm.input.from_float(digits.x_train[3])
    label = int(digits.y_train[3])
    lr_q = rule.lr_register(0.05)
    rule.step_q(x_q, label, lr_q)
    last = rule.last
    # no perturbation: both columns equal the plain inference pass
    counts, y = _with_weights(net, before).run(net.encode(x_q, None)[:, None, :])
    np.testing.assert_array_equal(last["y"], y[0])
    np.testing.assert_array_equal(last["y_noisy"], y[0])
    e_out = last["e_out"]
    assert np.any(e_out != 0)
    signs = [np.sign(b) for b in dfa_feedback(cfg.network.arch, cfg.rule.feedback_seed)]
    fb = int(np.floor(256 / np.sqrt(10) + 0.5))
    drop_fb = 8
    for l in range(2):                                   # hidden layers: δ = mask · round((B e) · fb)
        c = counts[l][0]
        for i in range(len(c)):
            total = sum(int(signs[l][i, k]) * int(e_out[k]) for k in range(10)) * fb
            d = (total + (1 << (drop_fb - 1))) >> drop_fb
            d = min(max(d, fm.g.min), fm.g.max) if 0 < c[i] < steps else 0
            assert last["e"][l][i] == d, (l, i)
    inputs = [last["spikes_in"], counts[0][0], counts[1][0]]
    for l, w in enumerate(before):                       # W −= round(e vᵀ), v = clean input [c; T]
        v = np.append(inputs[l], steps) << (fm.vperp.frac - fm.log2_steps)
        np.testing.assert_array_equal(last["v_perp"][l], v)
        expect = w.copy()
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                d = (int(last["e"][l][i]) * int(v[j]) + (1 << (rule.drop - 1))) >> rule.drop
                expect[i, j] = min(max(int(w[i, j]) - d, fm.weight.min), fm.weight.max)
        np.testing.assert_array_equal(net.weights[l], expect)


def _with_weights(net, weights):
    clone = FixedNetwork.__new__(FixedNetwork)
    clone.__dict__.update(net.__dict__)
    clone.weights = [w.copy() for w in weights]
    return clone


def test_dfa_fixed_point_learns_like_the_float_rule(digits):
    # measured: 600 samples, constant lr 0.05, 2 epochs -> fixed spiking 0.839, float rate 0.831
    from loco_fpga.golden_model import train
    from loco_fpga.golden_model.datasets import Dataset
    small = Dataset("digits", digits.x_train[:600], digits.y_train[:600], digits.x_test, digits.y_test, 10)
    cfg = _cfg(rule={"name": "dfa", "lr": 0.05, "lr_schedule": "constant"}, train={"epochs": 2})
    fixed = train(cfg, small).final_test_acc
    rate = train(cfg.replace(spiking={"enabled": False}, fixed={"enabled": False}), small).final_test_acc
    assert fixed >= 0.75 and fixed >= rate - 0.05, (fixed, rate)


def test_weight_update_saturates_at_both_limits(digits):
    cfg = _cfg(rule={"name": "np"}, fixed={"update_rounding": "half-up"})
    net, rule = _model(cfg)
    fmt = net.fmts.weight
    # alternate rows at the two limits: any update pushing further must stop there, never wrap
    for w in net.weights:
        w[0::2] = fmt.max
        w[1::2] = fmt.min
    before = [w.copy() for w in net.weights]
    rule.step_q(net.fmts.input.from_float(digits.x_train[1]), int(digits.y_train[1]), net.fmts.lr.max)
    last = rule.last
    hit_max = hit_min = False
    for l, w in enumerate(before):
        expect = _reference_update(w, int(last["g"]), last["noise_signs"][l], last["v_perp"][l], rule.drop, fmt)
        np.testing.assert_array_equal(net.weights[l], expect)
        hit_max |= bool(np.any((net.weights[l] == fmt.max) & (w == fmt.max)))
        hit_min |= bool(np.any((net.weights[l] == fmt.min) & (w == fmt.min)))
    assert hit_max and hit_min and last["g"] in (net.fmts.g.max, net.fmts.g.min)


@pytest.mark.parametrize("limit", ["max", "min"])
def test_membrane_output_loss_and_g_saturate(digits, limit):
    cfg = _cfg(fixed={"membrane_bits": 16, "out_bits": 16, "dl_bits": 24})
    net, rule = _model(cfg)
    fm = net.fmts
    for w in net.weights:
        w[...] = getattr(fm.weight, limit)
    x_q = fm.input.from_float(digits.x_train[2])
    counts, y = net.run(net.encode(x_q[None, :], None))
    if limit == "max":   # V saturates at +max ≥ θ: a spike every step (a wrapped V would go negative)
        assert np.all(counts[0] == 16)
    else:
        assert np.all(counts[0] == 0)
    assert np.all(y == getattr(fm.out, limit))
    # loss unit: Δy saturates (ỹ − y overflows the out format), then ΔL and g at the same limit
    top, bottom = np.full(10, fm.out.max), np.full(10, fm.out.min)
    y, y_noisy = (np.zeros(10, dtype=np.int64), top) if limit == "max" else (top, bottom)
    dy, dl, g = rule.loss_unit(y, y_noisy, 3, fm.lr.max)
    assert np.all(dy == getattr(fm.out, limit))
    assert dl == getattr(fm.dl, limit) and g == getattr(fm.g, limit)


def test_gauss_jordan_saturates_and_matches_float_inverse():
    cfg = _cfg()
    fm = formats(cfg)
    hf = cfg.fixed.h_frac
    # a nearly singular Gram matrix: its inverse saturates at both limits of a narrow H format
    from loco_fpga.qformat import QFormat
    narrow_h = QFormat("h", True, 20, hf)            # ±32: the inverse (±≈8192) is far outside
    g = np.array([[1 << hf, (1 << hf) - 1], [(1 << hf) - 1, 1 << hf]], dtype=np.int64)
    h = gauss_jordan_inverse(g, narrow_h, hf)
    assert h.max() == narrow_h.max and h.min() == narrow_h.min
    # a well-conditioned one: close to the float inverse
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    gram = a @ a.T / 6 + np.eye(6)
    g_q = fm.gram.from_float(gram)
    h_q = gauss_jordan_inverse(g_q, fm.h, hf)
    h_float = np.linalg.inv(fm.gram.to_float(g_q))
    bound = _gj_bound(h_float, fm.gram.to_float(g_q), fm.h.lsb)
    assert np.linalg.norm(fm.h.to_float(h_q) - h_float, 2) <= bound < 0.01


def _gj_bound(h, g, lsb):
    # Gauss–Jordan in fixed point: every entry gets ≤ 1 LSB per pivot (truncating division, half-up
    # elimination); the residual R = G H̃ − I then has ‖R‖ ≤ n·LSB·(1 + ‖G‖∞)(1 + ‖H‖∞), and
    # H̃ − H = H R up to second order.
    n = len(h)
    return np.linalg.norm(h, 2) * n * lsb * (1 + np.abs(g).sum(1).max()) * (1 + np.abs(h).sum(1).max())


def test_projection_and_h_close_to_float_math():
    cfg = _cfg(rule={"clusters": 6})
    fm = formats(cfg)
    rng = np.random.default_rng(3)
    dim = 33
    cl = FixedClusters(dim, cfg, fm)
    # six distinct inputs (spike counts, bias entry T) become the prototypes
    for _ in range(6):
        u = np.concatenate([rng.integers(0, 17, size=dim - 1), [16]]).astype(np.int64)
        cl.select(cl.normalise(u))
    assert cl.count == 6
    c = fm.proto.to_float(cl.active)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=dim * fm.proto.lsb)   # û is unit length
    lam = fm.gram.to_float(fm.gram.from_float(cfg.rule.ridge))
    gram = c @ c.T + lam * np.eye(6)
    h_float = np.linalg.inv(gram)
    # H: Gram rounding |E_ij| ≤ ½ LSB ⇒ ‖ΔH‖₂ ≤ ‖H‖² ‖E‖ / (1 − ‖H‖ ‖E‖), plus the Gauss–Jordan term
    hn = np.linalg.norm(h_float, 2)
    e2 = 6 * 0.5 * fm.gram.lsb
    bound_h = hn * hn * e2 / (1 - hn * e2) + _gj_bound(h_float, gram, fm.h.lsb)
    assert np.linalg.norm(fm.h.to_float(cl.h) - h_float, 2) <= bound_h < 0.1 * hn
    # v⊥ path with the model's own H: M = downdate (≤ 1 LSB truncation per entry), C v and w rounded
    # half up (½ LSB each), final v⊥ rounding ½ LSB:
    # ‖Δv⊥‖ ≤ ‖C‖ (‖M‖ √K ½δ_cv + √K ½δ_w + K δ_m ‖C v‖) + √N ½δ_v⊥
    v = np.concatenate([rng.integers(0, 17, size=dim - 1), [16]]).astype(np.int64)
    vf = v / 16.0
    h_i = fm.h.to_float(cl.h)
    for k in range(6):
        m = h_i - np.outer(h_i[:, k], h_i[k, :]) / h_i[k, k]
        v_perp_ref = vf - c.T @ (m @ (c @ vf))
        v_perp = fm.vperp.to_float(cl.project(v, k))
        cn, mn, kk = np.linalg.norm(c, 2), np.linalg.norm(m, 2), np.sqrt(6)
        bound_v = (cn * (mn * kk * 0.5 * fm.cv.lsb + kk * 0.5 * fm.w.lsb + 6 * fm.m.lsb * np.linalg.norm(c @ vf))
                   + np.sqrt(dim) * 0.5 * fm.vperp.lsb)
        assert np.linalg.norm(v_perp - v_perp_ref) <= bound_v < 0.02 * np.linalg.norm(vf)
        # the point of it all: v⊥ is (almost) orthogonal to every prototype except k*
        others = [j for j in range(6) if j != k]
        assert np.max(np.abs(c[others] @ v_perp)) < 0.02 * np.max(np.abs(c[others] @ vf))


def test_same_seed_same_run_and_changed_seed_differs(digits):
    def run(seed, encoder="bernoulli"):
        cfg = _cfg(train={"seed": seed}, spiking={"encoder": encoder})
        net, rule = _model(cfg, seed)
        for i in range(30):
            rule.step(digits.x_train[i], np.eye(10)[digits.y_train[i]], 0.02)
        return net, rule
    a, ra = run(5)
    b, rb = run(5)
    c, rc = run(6)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.weights, c.weights))
    for pa, pb in zip(ra.clusters, rb.clusters):
        np.testing.assert_array_equal(pa.protos, pb.protos)
        np.testing.assert_array_equal(pa.h, pb.h)
    np.testing.assert_array_equal(a.infer_q(a.fmts.input.from_float(digits.x_test[:20])),
                                  b.infer_q(b.fmts.input.from_float(digits.x_test[:20])))


def test_training_runs_through_the_shared_loop(digits):
    from loco_fpga.golden_model import train
    from loco_fpga.golden_model.datasets import Dataset
    small = Dataset("digits", digits.x_train[:200], digits.y_train[:200], digits.x_test[:100],
                    digits.y_test[:100], 10)
    res = train(_cfg(train={"epochs": 2}), small)
    assert len(res.test_acc) == 2 and 0.0 <= res.final_test_acc <= 1.0


@pytest.mark.slow
def test_fixed_point_up5k_preset_learns_digits():
    from loco_fpga.config import preset
    from loco_fpga.golden_model import train
    res = train(preset("up5k"))
    assert res.final_test_acc >= 0.88
