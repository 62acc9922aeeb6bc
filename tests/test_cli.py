"""The command line as a user meets it: real subprocesses, exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "loco_fpga.cli"]


def run(*args, cwd=None, timeout=300):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "loco-fpga"
    assert script.exists()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "loco-fpga" in out.stdout


@pytest.mark.parametrize("command", [[], ["train"], ["demo"], ["config"], ["config", "init"],
                                     ["config", "check"], ["doctor"]])
def test_help_everywhere(command):
    out = run(*command, "--help")
    assert out.returncode == 0
    assert "Usage:" in out.stdout and len(out.stdout.splitlines()) > 3


@pytest.mark.parametrize("args, fragment", [
    (["train", "--rule", "sgd"], "'sgd' is not one of"),
    (["train", "--arch", "64-x-10"], "network.arch = '64-x-10'"),
    (["train", "--lr", "-0.01"], "rule.lr = -0.01: must be > 0"),
    (["train", "--epochs", "0"], "train.epochs = 0"),
    (["train", "--dataset", "mnist", "--data", "/no/such/mnist.npz"], "does not exist"),
    (["train", "--dataset", "mnist"], "needs a local file"),
    (["train", "--config", "/no/such/config.toml"], "cannot read config file"),
    (["train", "--arch", "10-5-3"], "digits needs 64 inputs and 10 outputs"),
    (["train", "--bogus"], "No such option"),
    (["nonsense"], "No such command"),
])
def test_bad_input_exit_2_one_line_no_traceback(args, fragment):
    out = run(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("loco-fpga: error: ") and fragment in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


def test_malformed_config_file(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[rule]\nlr = [1, 2\n")
    out = run("train", "--config", str(bad))
    assert out.returncode == 2 and "is not valid toml" in out.stderr and "Traceback" not in out.stderr
    bad.write_text("[rule]\nclusters = -3\n")
    out = run("train", "--config", str(bad))
    assert out.returncode == 2 and "rule.clusters = -3" in out.stderr


def test_train_writes_json_and_plot(tmp_path):
    out = run("train", "--rule", "bp", "--arch", "64-32-10", "--epochs", "2", "-q",
              "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["epochs_run"] == 2 and len(report["test_acc"]) == 2
    assert report["config"]["network"]["arch"] == [64, 32, 10]
    assert report["final_test_acc"] > 0.5 and report["wall_time_s"] > 0
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_flag_prints_parseable_result():
    out = run("train", "--rule", "loco", "--arch", "64-16-10", "--epochs", "1", "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["config"]["rule"]["name"] == "loco"


def test_config_file_drives_training_and_cli_overrides_it(tmp_path):
    cfg = tmp_path / "c.toml"
    assert run("config", "init", str(cfg)).returncode == 0
    assert run("config", "init", str(cfg)).returncode == 2  # refuses to overwrite without --force
    text = cfg.read_text().replace('name = "loco"', 'name = "bp"').replace("epochs = 40", "epochs = 1")
    cfg.write_text(text)
    out = run("train", "--config", str(cfg), "--arch", "64-16-10", "--seed", "5", "--json", "-q")
    report = json.loads(out.stdout)
    assert report["config"]["rule"]["name"] == "bp" and report["config"]["train"]["epochs"] == 1
    assert report["config"]["train"]["seed"] == 5
    checked = run("config", "check", str(cfg))
    assert checked.returncode == 0 and json.loads(checked.stdout)["rule"]["name"] == "bp"


def test_config_init_preset_writes_the_hardware_default(tmp_path):
    from loco_fpga.config import load_config, preset
    cfg = tmp_path / "up5k.toml"
    assert run("config", "init", "--preset", "up5k", str(cfg)).returncode == 0
    assert load_config(cfg) == preset("up5k")
    bad = run("config", "init", "--preset", "zynq", str(tmp_path / "z.toml"))
    assert bad.returncode == 2 and "zynq" in bad.stderr


def test_doctor_json():
    out = run("doctor", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["verilator"]
