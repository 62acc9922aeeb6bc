"""``loco-fpga demo`` end to end on the virtual board: the CLI trains on the simulated accelerator, evaluates the
test split by INFER, reads the weights back and must match the golden fixed-point model bit for bit.

Default run: the small configuration of tests/test_top_sim.py (one shared Verilator build), 40 training samples.
``-m slow``: the UP5K preset for one full epoch (the README's main job)."""

import json
import subprocess
import sys

import pytest

from loco_fpga.boards import demo
from loco_fpga.config import preset, save_config
from loco_fpga.sim import harness

from test_top_sim import small_config


def run_cli(*args, cwd, timeout):
    return subprocess.run([sys.executable, "-m", "loco_fpga.cli", "demo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def check_report(report, samples):
    assert report["samples_trained"] == samples and report["test_samples"] == 360
    assert report["bit_exact"], report["mismatches"]
    assert report["chip_test_acc"] == report["golden_test_acc"]
    # deterministic encoder: INFER's twin (step_q with lr 0) and the golden model's own evaluation agree
    assert report["golden_eval_test_acc"] == report["golden_test_acc"]
    cyc = report["cycles"]
    assert cyc["train_run_cycles"] > 0 and cyc["total_run_cycles"] > cyc["train_run_cycles"]
    assert report["samples_per_s_at_fmax"] > 0 and report["fmax_source"]


def test_demo_small_on_the_virtual_board(tmp_path):
    harness.require_simulator("verilator")
    cfg = tmp_path / "small.toml"
    save_config(small_config(), cfg)
    out = run_cli("--config", str(cfg), "--limit", "40", "--lanes", "8", "--out", str(tmp_path / "out"), "-q",
                  cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    check_report(report, 40)
    assert report["rule_on_chip"] == "np" and report["lanes"] == 8
    assert (tmp_path / "out" / "curve.png").stat().st_size > 1000
    assert "bit for bit equal" in out.stdout
    print(demo.summary(report))


@pytest.mark.slow
def test_demo_up5k_one_epoch_on_the_virtual_board(tmp_path):
    """The must-show run: the UP5K preset, one full epoch (1,437 samples) on chip, the test split by INFER."""
    harness.require_simulator("verilator")
    out = run_cli("--out", str(tmp_path / "out"), "-q", cwd=tmp_path, timeout=4 * 3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    check_report(report, report["train_samples_per_epoch"])
    assert report["config"]["network"]["arch"] == list(preset("up5k").network.arch)
    assert report["cluster_units"] == demo.DEMO_CLUSTER_UNITS and report["fmax_is_this_design"] is True
    print(demo.summary(report))


def test_the_default_demo_design_has_a_committed_routed_build():
    """``loco-fpga demo``'s samples/s come from a routed, timing-met build of the very design it simulates."""
    chip, _ = demo.on_chip_config(preset("up5k").replace(rule={"lr": demo.DEMO_LR}))
    mhz, source, own = demo.default_fmax(demo.design_key(chip.to_dict(), 8, demo.DEMO_CLUSTER_UNITS))
    assert own is True and "ulx3s-85f-loco-demo" in source and mhz > 15.0


def test_on_chip_config_says_which_rule():
    same, note = demo.on_chip_config(preset("up5k").replace(rule={"name": "np"}))
    assert same.rule.name == "np" and note == "rule np on chip"
    deep, note = demo.on_chip_config(preset("ecp5"))             # LOCO with the delta readout: in gateware
    assert deep.rule.name == "loco" and deep.rule.output_update == "delta" and note == "rule loco on chip"


def test_demo_real_board_needs_a_port(tmp_path):
    out = run_cli("--board", "icebreaker", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--port" in out.stderr
    out = run_cli("--board", "icebreaker", "--port", "/dev/null", "--cluster-units", "1", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--cluster-units is for the virtual board" in out.stderr


def test_demo_rejects_a_bad_virtual_board_before_building(tmp_path):
    """--lanes that the address map cannot take, --cluster-units above K: one line, exit 2, no Verilator build."""
    harness.require_simulator("verilator")          # (checked first by the CLI)
    out = run_cli("--lanes", "3", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "lanes = 3" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("--cluster-units", "9", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "units = 9: must be an integer in [1, 8]" in out.stderr
    assert not (tmp_path / "sim_build").exists()


def test_fmax_comes_from_a_build_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"fmax_mhz": 48.5, "part": "lfe5u-85f", "inner": "AcceleratorTop",
                                "config": {"network": {"arch": [64, 32, 10]}, "rule": {"name": "loco"}},
                                "clock": {"mhz": 45.0}, "design": {"lanes": 8, "cluster_units": 1}}))
    mhz, source = demo.fmax_from_report(path)
    assert mhz == 48.5 and str(path) in source and "lfe5u-85f" in source and "rule loco" in source
    assert "LANES 8" in source and "1 cluster unit" in source


def test_default_fmax_is_the_routed_build_of_the_same_design(tmp_path, monkeypatch):
    """A committed report counts only when its gateware-defining config, LANES and cluster units equal the run's
    and it met timing; the learning rate (a register) does not matter; otherwise the fallback says so."""
    config = preset("up5k")
    key = demo.design_key(config.to_dict(), 8, 1)
    assert key == demo.design_key(config.replace(rule={"lr": 0.1}).to_dict(), 8, 1)
    assert key != demo.design_key(config.to_dict(), 8, 8) != demo.design_key(config.to_dict(), 4, 1)
    assert key != demo.design_key(config.replace(rule={"clusters": 4}).to_dict(), 8, 1)
    assert key != demo.design_key(config.replace(spiking={"steps": 8}).to_dict(), 8, 1)
    assert key != demo.design_key(config.to_dict(), 8, 1, shared_update=True)    # other cycles per sample

    def report(name, fmax, cfg, lanes, units, met=True, shared=None):
        (tmp_path / name).mkdir()
        design = {"lanes": lanes, "cluster_units": units} | ({} if shared is None else {"shared_update": shared})
        (tmp_path / name / "report.json").write_text(json.dumps(
            {"fmax_mhz": fmax, "met": met, "config": cfg.to_dict(), "design": design,
             "part": "p", "inner": "AcceleratorTop", "clock": {"mhz": 10}}))

    report("a-other-lanes", 30.0, config, 4, 1)
    report("b-not-met", 25.0, config, 8, 1, met=False)
    report("c-same", 21.5, config.replace(rule={"lr": 0.3}), 8, 1)
    report("ulx3s-85f", 68.0, config.replace(rule={"name": "np"}), 1, None)
    np_config = config.replace(rule={"name": "np"})
    report("icebreaker", 24.1, np_config, 1, None, shared=True)
    monkeypatch.setattr(demo, "BUILD_RESULTS", tmp_path)
    monkeypatch.setattr(demo, "BUILD_REPORT", tmp_path / "ulx3s-85f" / "report.json")
    mhz, source, own = demo.default_fmax(key)
    assert (mhz, own) == (21.5, True) and "c-same" in source
    # the iCEBreaker's NP build has one update engine for both layers: it is the design of a run on that board only
    assert demo.default_fmax(demo.design_key(np_config.to_dict(), 1, 0, shared_update=True))[:3:2] == (24.1, True)
    assert demo.design_key(np_config.to_dict(), 1, 0, True) != demo.design_key(np_config.to_dict(), 1, 0, True, True)
    assert demo.default_fmax(demo.design_key(np_config.to_dict(), 1, 0))[:3:2] == (68.0, True)
    mhz, source, own = demo.default_fmax(demo.design_key(config.to_dict(), 2, 1))
    assert (mhz, own) == (68.0, False) and "NOT this run's design" in source
    (tmp_path / "ulx3s-85f" / "report.json").unlink()
    mhz, source, own = demo.default_fmax(None)
    assert (mhz, own) == (demo.ROUTED_FMAX["up5k"][0], False) and "NOT this run's design" in source


def test_which_demo_boards_share_the_update_engine_and_skip_silent_inputs():
    """The demo's ``--board`` names against the board builds: only the iCEBreaker's NP design shares one update
    engine between the layers, and only the iCEBreaker skips silent inputs; the virtual board and the ECP5 boards
    have neither."""
    np_config = preset("up5k").replace(rule={"name": "np"})
    assert demo._board_design("icebreaker", np_config) == (True, True)
    assert demo._board_design("icebreaker", preset("up5k").replace(rule={"name": "dfa"})) == (False, True)
    assert demo._board_design("icebreaker", np_config.replace(rule={"output_update": "delta"})) == (False, True)
    for board in ("virtual", "ulx3s", "orangecrab"):
        assert demo._board_design(board, np_config) == (False, False)
