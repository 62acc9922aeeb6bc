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
    print(demo.summary(report))


def test_on_chip_config_says_which_rule():
    same, note = demo.on_chip_config(preset("up5k").replace(rule={"name": "np"}))
    assert same.rule.name == "np" and note == "rule np on chip"
    deep, note = demo.on_chip_config(preset("ecp5"))             # LOCO with the delta readout: in gateware
    assert deep.rule.name == "loco" and deep.rule.output_update == "delta" and note == "rule loco on chip"


def test_demo_real_board_needs_a_port(tmp_path):
    out = run_cli("--board", "icebreaker", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--port" in out.stderr


def test_fmax_comes_from_a_build_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"fmax_mhz": 48.5, "part": "lfe5u-85f", "inner": "AcceleratorTop",
                                "config": {"network": {"arch": [64, 32, 10]}, "rule": {"name": "loco"}},
                                "clock": {"mhz": 45.0}}))
    mhz, source = demo.fmax_from_report(path)
    assert mhz == 48.5 and str(path) in source and "lfe5u-85f" in source and "rule loco" in source
    mhz, source = demo.default_fmax()
    assert mhz > 0 and ("report.json" in source or "docs/hdl.md" in source)
