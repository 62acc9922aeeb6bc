"""``loco-fpga golden trace``: files, determinism, self-consistency, error handling."""

import numpy as np
import pytest

from loco_fpga.cli import main
from loco_fpga.config import Config, load_config, save_config


def _write_cfg(path, **changes):
    base = {"network": {"arch": (64, 16, 10)}, "rule": {"clusters": 4}}
    for k, v in changes.items():
        base.setdefault(k, {}).update(v)
    save_config(Config().replace(**base), path)
    return path


def _trace(tmp_path, name, cfg_path, samples=6, extra=()):
    out = tmp_path / name
    assert main(["golden", "trace", "--config", str(cfg_path), "--samples", str(samples), "--out", str(out),
                 *extra]) == 0
    with np.load(out / "trace.npz") as npz:
        return out, {k: npz[k] for k in npz.files}


def test_trace_files_and_contents(tmp_path):
    cfg_path = _write_cfg(tmp_path / "c.toml")
    out, tr = _trace(tmp_path, "a", cfg_path)
    cfg = load_config(out / "config.toml")
    assert cfg.fixed.enabled and cfg.spiking.enabled and cfg.network.arch == (64, 16, 10)
    assert (out / "formats.json").exists()
    assert tr["x"].shape == (6, 64) and tr["y"].shape == (6, 10) and tr["dl"].shape == (6,)
    assert tr["L0.weights"].shape == (6, 16, 65) and tr["L1.weights"].shape == (6, 10, 17)
    assert tr["L0.h"].shape == (6, 4, 4) and tr["L0.protos"].shape == (6, 4, 65)
    assert all(a.dtype == np.int64 for a in tr.values())
    assert list(tr["L0.count"]) == sorted(tr["L0.count"])            # prototypes only accumulate
    assert set(np.unique(tr["L0.k_star"])) <= set(range(4))
    # the weights change from step to step (learning happens) and stay inside the weight format
    assert not np.array_equal(tr["L0.weights"][0], tr["L0.weights_initial"])
    assert np.abs(tr["L0.weights"]).max() < 2 ** 15


def test_same_seed_same_trace_changed_seed_differs(tmp_path):
    cfg_path = _write_cfg(tmp_path / "c.toml", spiking={"encoder": "bernoulli"})
    _, a = _trace(tmp_path, "a", cfg_path)
    _, b = _trace(tmp_path, "b", cfg_path)
    _, c = _trace(tmp_path, "c", cfg_path, extra=("--seed", "1"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("L0.noise_sign", "L0.weights_initial", "L0.weights", "y"):
        assert not np.array_equal(a[k], c[k]), k


def test_trace_carries_what_a_bench_needs_to_check_the_update(tmp_path):
    # with half-up rounding, every weight after step s follows from the trace alone (Python ints)
    cfg_path = _write_cfg(tmp_path / "c.toml", rule={"name": "np"}, fixed={"update_rounding": "half-up"})
    out, tr = _trace(tmp_path, "a", cfg_path, samples=3)
    fx = load_config(out / "config.toml").fixed
    drop = fx.g_frac + fx.vperp_frac - fx.weight_frac
    lo, hi = -(1 << (fx.weight_bits - 1)), (1 << (fx.weight_bits - 1)) - 1
    for l in (0, 1):
        w = tr[f"L{l}.weights_initial"].tolist()
        for s in range(3):
            g = int(tr["g"][s])
            for i, row in enumerate(w):
                e = g if tr[f"L{l}.noise_sign"][s][i] else -g
                for j in range(len(row)):
                    d = (e * int(tr[f"L{l}.v_perp"][s][j]) + (1 << (drop - 1))) >> drop
                    row[j] = min(max(row[j] - d, lo), hi)
            assert w == tr[f"L{l}.weights"][s].tolist()


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "0"], "--samples = 0: must be >= 1"),
    (["--config", "nope.toml"], "cannot read config file"),
    (["--preset", "up5k", "--config", "x.toml"], "give --config or --preset, not both"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, args, fragment):
    code = main(["golden", "trace", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("loco-fpga: error: ") and fragment in err and err.count("\n") == 1


def test_invalid_fixed_config_is_rejected_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[network]\narch = [64, 16, 10]\n[fixed]\nacc_bits = 18\n', encoding="utf-8")
    code = main(["golden", "trace", "--config", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "fixed.acc_bits = 18" in err


def test_study_points_cover_every_factor():
    from loco_fpga.golden_model.experiment_fixed_point import preset_points, study_points
    groups = {p["group"] for p in study_points(quick=False)}
    assert groups == {"baseline", "weight_bits", "T", "sigma", "K", "encoder", "rounding", "N_ref"}
    widths = sorted(int(p["label"]) for p in study_points(False) if p["group"] == "weight_bits")
    assert widths == [8, 12, 20, 24]                     # plus the 16-bit baseline
    assert {p["label"] for p in preset_points(False)} == {"up5k", "ecp5"}
    # every point is a valid configuration
    from loco_fpga.golden_model.experiment_fixed_point import _config
    for p in study_points(False) + preset_points(False):
        _config(p)


@pytest.mark.slow
def test_fixed_point_study_quick_writes_json_png_markdown(tmp_path):
    import json
    assert main(["experiment", "fixed-point", "--quick", "-q", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "fixed_point.json").read_text())
    assert data["quick"] and len(data["runs"]) >= 5
    assert (tmp_path / "fixed_point.png").stat().st_size > 0
    assert "| baseline |" in (tmp_path / "fixed_point.md").read_text()
