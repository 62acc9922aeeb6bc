"""The research experiments (``loco-fpga experiment compare|depth|continual|lr|spiking``): each ``--quick``
variant end to end (valid JSON with one record per point and seed, a real PNG, the markdown table), the
shared grid machinery, and the continual-learning bookkeeping against a hand computation."""

import json

import numpy as np
import pytest

from loco_fpga.cli import main
from loco_fpga.config import Config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out, name, n_runs, header):
    data = json.loads((out / f"{name}.json").read_text())
    assert data["quick"] is True
    assert len(data["runs"]) == n_runs
    for r in data["runs"]:
        assert 0.0 <= r["final_test_acc"] <= 1.0
        Config.from_dict(r["config"])                      # every record carries a valid config
    png = (out / f"{name}.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 2000
    md = (out / f"{name}.md").read_text()
    assert header in md and md.count("\n|") >= 3          # header, separator, at least one row
    return data


def test_compare_quick(tmp_path):
    assert main(["experiment", "compare", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "compare_digits.json").read_text())
    assert {r["rule"] for r in data["runs"]} == {"bp", "np", "loco"}
    for r in data["runs"]:
        assert r["samples_seen"] == [300] and len(r["test_acc"]) == 1 and r["wall_time_s"] > 0
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG_MAGIC
    md = (tmp_path / "compare.md").read_text()
    assert "| digits | bp |" in md and "samples to 90 %" in md


def test_depth_quick(tmp_path):
    assert main(["experiment", "depth", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = _check_outputs(tmp_path, "depth", 8, "| hidden layers |")
    archs = {(r["rule"], r["hidden"]): r["config"]["network"]["arch"] for r in data["runs"]}
    assert archs[("loco", 3)] == [64, 64, 64, 64, 10]
    # loco and np differ only in the rule's name
    cfg = {(r["rule"], r["hidden"]): r["config"] for r in data["runs"]}
    a, b = dict(cfg[("loco", 3)]["rule"]), dict(cfg[("np", 3)]["rule"])
    a.pop("name"), b.pop("name")
    assert a == b


def test_continual_quick(tmp_path):
    assert main(["experiment", "continual", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = _check_outputs(tmp_path, "continual", 4, "| avg acc after task 5 |")
    for r in data["runs"]:
        acc = np.array(r["acc_matrix"])
        assert acc.shape == (5, 5)
        assert r["avg_acc"] == pytest.approx(acc[-1].mean())
        assert r["forgetting"] == pytest.approx([acc[:-1, j].max() - acc[-1, j] for j in range(4)])


def test_lr_quick(tmp_path):
    assert main(["experiment", "lr", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = _check_outputs(tmp_path, "lr", 4, "| lr |")
    assert {(r["rule"], r["lr"]) for r in data["runs"]} == {(r, lr) for r in ("loco", "np") for lr in (0.01, 0.08)}


def test_spiking_quick(tmp_path):
    assert main(["experiment", "spiking", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = _check_outputs(tmp_path, "spiking", 2, "| T |")
    assert all(r["config"]["spiking"]["enabled"] for r in data["runs"])
    assert {r["config"]["spiking"]["steps"] for r in data["runs"]} == {8, 16}


def test_depth_rejects_bad_options(tmp_path, capsys):
    assert main(["experiment", "depth", "--quick", "--depths", "1,x", "--out-dir", str(tmp_path)]) == 2
    assert "--depths" in capsys.readouterr().err
    assert main(["experiment", "depth", "--quick", "--rules", "loco,sgd", "--out-dir", str(tmp_path)]) == 2
    assert "--rules" in capsys.readouterr().err


def test_run_grid_resumes_and_summarises(tmp_path):
    from loco_fpga.golden_model.datasets import load_digits
    from loco_fpga.golden_model.experiment_common import Point, run_grid, samples_to, subset, summarise
    calls = []

    def runner(cfg, data):
        calls.append((cfg.rule.lr, cfg.train.seed))
        return {"final_test_acc": cfg.rule.lr * 10 + cfg.train.seed, "test_acc": [0.5, 0.95],
                "samples_seen": [10, 20]}

    pts = [Point(f"p{lr}", {"rule": {"lr": lr}}, {"lr": lr}) for lr in (0.01, 0.02)]
    data = subset(load_digits(), 10, 10)
    path = tmp_path / "g.json"
    runs = run_grid("g", pts, [0, 1], data, path, quick=False, settings={}, progress=False, runner=runner)
    assert len(calls) == 4 and all(r["samples_to_90"] == 20 for r in runs)
    rows = summarise(runs, ["lr"], ["final_test_acc"])
    assert rows[0]["final_test_acc_mean"] == pytest.approx(0.6) and rows[0]["final_test_acc_std"] == pytest.approx(0.5)
    # same points again: nothing retrained; a changed config is retrained
    run_grid("g", pts, [0, 1], data, path, quick=False, settings={}, progress=False, runner=runner)
    assert len(calls) == 4
    pts[1].changes["rule"]["sigma"] = 2.0**-4
    run_grid("g", pts, [0, 1], data, path, quick=False, settings={}, progress=False, runner=runner)
    assert len(calls) == 6
    assert samples_to([0.2, 0.89, 0.9], [5, 10, 15], 0.9) == 15 and samples_to([0.1], [5], 0.9) is None


def test_run_grid_in_parallel_gives_the_serial_results_in_the_same_order(tmp_path):
    from loco_fpga.golden_model.experiment_common import Point, digits_subset, run_grid
    pts = [Point(f"{r}", {"network": {"arch": (64, 16, 10)}, "rule": {"name": r}, "train": {"epochs": 1}},
                 {"rule": r}) for r in ("np", "loco", "bp")]
    data = digits_subset(True)
    serial = run_grid("s", pts, [0, 1], data, tmp_path / "s.json", quick=True, settings={}, progress=False)
    par = run_grid("p", pts, [0, 1], data, tmp_path / "p.json", quick=True, settings={}, progress=False, jobs=2)
    assert [(r["name"], r["seed"]) for r in par] == [(p.name, s) for p in pts for s in (0, 1)]
    for a, b in zip(serial, par):
        assert (a["name"], a["seed"], a["test_acc"], a["train_acc"]) == (b["name"], b["seed"], b["test_acc"],
                                                                          b["train_acc"])
    assert json.loads((tmp_path / "p.json").read_text())["runs"] == json.loads(json.dumps(par))


def test_experiment_all_quick_writes_every_experiment_and_the_timing(tmp_path):
    assert main(["experiment", "all", "--quick", "-q", "-j", "2", "--out-dir", str(tmp_path)]) == 0
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert set(suite["wall_time_s"]) == {"compare", "depth", "continual", "lr", "spiking"}
    assert suite["total_s"] >= max(suite["wall_time_s"].values()) > 0
    assert set(suite["cpu_time_s"]) == set(suite["wall_time_s"]) and min(suite["cpu_time_s"].values()) > 0
    assert suite["total_cpu_s"] >= sum(suite["cpu_time_s"].values()) - 0.5     # rounding of each entry
    for name in suite["wall_time_s"]:
        assert (tmp_path / name / f"{name}.md").exists()


# -- rule.output_update = "delta" (the depth-enabling option) ----------------------------------------------

def test_output_update_delta_is_validated():
    from loco_fpga.config import ConfigError, RuleConfig
    assert RuleConfig().output_update == "perturb"          # default unchanged
    RuleConfig(name="np", output_update="delta")
    with pytest.raises(ConfigError, match="rule.output_update = 'delta': 'delta' applies to np and loco"):
        RuleConfig(name="bp", output_update="delta")
    with pytest.raises(ConfigError, match="rule.output_update = 'exact': must be one of"):
        RuleConfig(output_update="exact")


@pytest.mark.parametrize("name", ["np", "loco"])
def test_output_update_delta_gives_exact_readout_gradient_and_perturbs_hidden_only(name):
    from loco_fpga.golden_model.network import RateNetwork
    from loco_fpga.golden_model.rules import Backprop, make_rule
    cfg = Config().replace(network={"arch": (10, 8, 6, 4)}, rule={"name": name, "clusters": 3,
                                                                 "output_update": "delta"})
    rng = np.random.default_rng(3)
    net = RateNetwork(cfg.network, rng)
    rule = make_rule(net, cfg.rule, np.random.default_rng(4))
    ref = Backprop(net, cfg.rule, rng)
    lr = 0.05
    changed_hidden = 0
    for _ in range(12):
        x, t = rng.random(10), np.eye(4)[rng.integers(0, 4)]
        grads, _ = ref.gradients(x, t)
        xi = rule.draw_noise()
        assert np.all(xi[rule._offsets[-2]:] == 0) and np.all(np.abs(xi[:rule._offsets[-2]]) == cfg.rule.sigma)
        before = net.copy_weights()
        _, acts = net.forward(x[None], return_all=True)
        u_clean = np.append(acts[-2][0], 1.0)
        if name == "loco":    # expected readout step: the BP gradient with the input projected (spy on project)
            seen = {}
            orig = rule.project

            def spy(l, u, v, _orig=orig):
                out = _orig(l, u, v)
                seen[l] = (u.copy(), v.copy(), out.copy())
                return out
            rule.project = spy
        rule.step(x, t, lr)
        dw = net.weights[-1] - before[-1]
        e = grads[-1][:, -1]                     # dℓ/db = 2(y − t)/n_L (the bias column's input is 1)
        if name == "np":
            assert np.allclose(dw, -lr * grads[-1], atol=1e-12)
            assert np.allclose(grads[-1], np.outer(e, u_clean))
        else:
            u, v, u_perp = seen[len(net.weights) - 1]
            rule.project = orig
            assert np.array_equal(u, v)          # the readout projects its clean input
            assert np.allclose(u, u_clean)
            assert np.allclose(dw, -lr * np.outer(e, u_perp), atol=1e-12)
        changed_hidden += sum(not np.array_equal(a, b) for a, b in zip(before[:-1], net.weights[:-1]))
    assert changed_hidden > 0                    # hidden layers still learn by perturbation


# -- rule.step_norm = "energy" (normalised steps; MNIST) -----------------------------------------------------

def test_step_norm_is_validated():
    from loco_fpga.config import ConfigError, RuleConfig, preset
    assert RuleConfig().step_norm == "none"
    with pytest.raises(ConfigError, match="rule.step_norm = 'energy': applies to np and loco, not bp"):
        RuleConfig(name="bp", step_norm="energy")
    with pytest.raises(ConfigError, match="rule.step_norm = 'l2': must be one of"):
        RuleConfig(step_norm="l2")
    from loco_fpga.qformat import check_config
    with pytest.raises(ConfigError, match="rule.step_norm = 'energy': the fixed-point model"):
        check_config(preset("up5k").replace(rule={"step_norm": "energy"}))


@pytest.mark.parametrize("name, delta", [("np", False), ("loco", False), ("np", True), ("loco", True)])
def test_step_norm_energy_divides_each_layers_step_by_its_input_energy(name, delta):
    # one layer: the normalised step with η equals the plain step with η/‖u‖², same noise draws
    from loco_fpga.golden_model.network import RateNetwork
    from loco_fpga.golden_model.rules import make_rule
    rng = np.random.default_rng(5)
    x, t = rng.random(12), np.eye(5)[2]
    u = np.append(x, 1.0)
    after = {}
    for norm, lr in (("energy", 0.7), ("none", 0.7 / float(u @ u))):
        rule_cfg = {"name": name, "clusters": 3, "step_norm": norm, "output_update": "delta" if delta else "perturb"}
        cfg = Config().replace(network={"arch": (12, 5)}, rule=rule_cfg)
        net = RateNetwork(cfg.network, np.random.default_rng(1))
        rule = make_rule(net, cfg.rule, np.random.default_rng(2))
        before = net.copy_weights()[0]
        for _ in range(3):
            rule.step(x, t, lr)
        after[norm] = net.weights[0] - before
    assert np.abs(after["none"]).max() > 0
    np.testing.assert_allclose(after["energy"], after["none"], rtol=1e-9, atol=1e-15)


def test_compare_mnist_only_quick(tmp_path):
    from pathlib import Path
    mnist = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
    if not mnist.exists():
        pytest.skip(reason="MNIST file ../shared/data/mnist.npz not present")
    assert main(["experiment", "compare", "--quick", "-q", "--mnist-only", "--data", str(mnist),
                 "--out-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "compare_digits.json").exists()
    data = json.loads((tmp_path / "compare_mnist.json").read_text())
    runs = {r["rule"]: r for r in data["runs"]}
    assert set(runs) == {"loco", "bp"} and data["n_train"] == 1000
    assert runs["loco"]["config"]["rule"]["step_norm"] == "energy"
    assert runs["loco"]["config"]["network"]["arch"] == [784, 500, 500, 10]


def test_compare_mnist_only_needs_data(tmp_path, capsys):
    assert main(["experiment", "compare", "--mnist-only", "--out-dir", str(tmp_path)]) == 2
    assert "--mnist-only needs --data" in capsys.readouterr().err
