"""``loco-fpga demo``: a spiking network learns the digits on chip — on a board over a serial port, or on the
virtual board (the accelerator top in Verilator behind a socket) — and the host checks it against the golden
fixed-point model trained on the same stream.

One job: drive the :class:`~loco_fpga.boards.host.Host` API (the same calls for every board) through

1. PING and the accelerator's read-only registers (rule, lanes, layers, PRNG lanes) — checked against the config;
2. RESET_STATE (counters and device), every PRNG lane's seed (``golden_model.prng.lane_seed_state``: ``train.seed``;
   ``rule.feedback_seed`` for the DFA lanes;
   in the gateware's ``seed_map`` order), the initial weights (the golden model's init, same seed);
3. the training stream: per epoch the golden model's shuffled order (``golden_model.train.build``'s order
   generator), the first ``limit`` samples of it when a limit is given; before a sample whose learning rate differs
   from the previous one the host writes LR = ``FixedRule.lr_register(learning_rate(rule, seen/total))`` — the
   schedule the golden training loop uses — then TRAIN. The golden model (``FixedRule.step_q``) takes the same
   step; the prediction, ΔL (dl) and g of every TRAIN reply are compared with it;
4. INFER on the whole test split (the device's INFER is a step with lr 0: no weight changes; its twin is
   ``step_q(x, 0, 0)``), outputs and predictions compared, accuracy on chip vs golden;
5. the weights (LOCO: and every layer's prototypes and cluster count) read back after training and after the
   evaluation, compared word for word; STATS for the simulated (or real) cycles.

The report (JSON) holds all numbers; the PNG shows the running training accuracy on chip and in the golden model
and the golden model's test accuracy per epoch. Any difference from the golden model is printed (the first one)
and makes :func:`run_demo` report ``"bit_exact": false`` (the CLI then exits non-zero).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import protocol as proto
from .host import Host

__all__ = ["BOARDS", "DEMO_LR", "DEMO_CLUSTER_UNITS", "ROUTED_FMAX", "BUILD_RESULTS", "BUILD_REPORT", "DemoError",
           "run_demo", "on_chip_config", "fmax_from_report", "default_fmax", "design_key"]

#: board → (default config preset, default serial baud). The virtual board runs the accelerator in Verilator.
BOARDS = {"virtual": ("up5k", None), "icebreaker": ("up5k", 115200), "ulx3s": ("up5k", 115200),
          "orangecrab": ("up5k", 115200)}

#: The demo's initial learning rate with the preset (``--config`` keeps the file's own). The presets' η = 0.02 (cosine)
#: is tuned for 40 epochs and leaves the UP5K network at chance after one (test accuracy 0.136); the golden
#: fixed-point model after one epoch of the up5k preset with η = 0.1, cosine: 0.772 / 0.750 / 0.581 (seeds 0 / 1 / 2);
#: 0.05 constant 0.639, 0.2 constant diverges (0.108). Measured in session 3 with ``golden_model.train.train``.
DEMO_LR = 0.1

#: The virtual board's cluster units per block with LOCO (``--cluster-units``): 1, the smallest form
#: (docs/hdl_learning.md) and the design whose routed Fmax is committed (docs/demo.md).
DEMO_CLUSTER_UNITS = 1

#: Where "samples/s at Fmax" takes its Fmax from, in order: ``--fmax-report`` (a ``loco-fpga build`` report.json);
#: a committed board build of **this run's design** (:data:`BUILD_RESULTS`: ``*/report.json`` whose gateware-defining
#: config — network, spiking, fixed, the rule's hardware fields — LANES and cluster units equal the device's, see
#: :func:`design_key`); else :data:`BUILD_REPORT` (``loco-fpga build --board ulx3s-85f`` with the board's defaults:
#: np, LANES 1 — another design, and the report says so); else :data:`ROUTED_FMAX`, the UP5K training network alone
#: (docs/hdl.md "Synthesis", nextpnr-ice40, LANES 1, no link).
BUILD_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "boards"
BUILD_REPORT = BUILD_RESULTS / "ulx3s-85f" / "report.json"
ROUTED_FMAX = {"up5k": (26.6, "docs/hdl.md Synthesis: Network.from_config(preset('up5k'), lanes=1), "
                               "nextpnr-ice40 routed Fmax on up5k-sg48 (the network alone, without the link)")}
#: the rule fields that shape the gateware (the learning rate and its schedule are a register written by the host)
_HARDWARE_RULE_FIELDS = ("name", "sigma", "noise", "noise_placement", "mask", "output_update", "clusters",
                         "proto_lr", "ridge", "refresh", "lls_temperature")


def design_key(config: dict, lanes: int, cluster_units: int, shared_update: bool = False,
               sparse_input: bool = False, cluster_share: int = 1) -> str:
    """What identifies a built accelerator: the config's gateware-defining parts (a ``Config.to_dict()``), LANES,
    the cluster units (0 without cluster blocks) and whether one update engine serves all layers (the iCEBreaker's
    builds: same results, other cycles) and whether layer 0 skips silent inputs (the iCEBreaker's too); LOCO's layers
    per cluster block when more than one (absent otherwise, so the keys of earlier reports stay valid)."""
    rule = config.get("rule", {})
    if rule.get("name") != "loco":
        rule = {k: v for k, v in rule.items() if k not in ("clusters", "proto_lr", "ridge", "refresh")}
    key = {"network": {"arch": list(config.get("network", {}).get("arch", []))},
           "spiking": config.get("spiking"), "fixed": config.get("fixed"),
           "rule": {k: rule.get(k) for k in _HARDWARE_RULE_FIELDS}, "lanes": lanes, "cluster_units": cluster_units,
           "shared_update": bool(shared_update), "sparse_input": bool(sparse_input)}
    if cluster_share > 1:
        key["cluster_share"] = cluster_share
    return json.dumps(key, sort_keys=True)


def fmax_from_report(path, name: str | None = None) -> tuple[float, str]:
    """(routed Fmax in MHz, where it comes from) of a ``loco-fpga build`` report.json (``name``: how to call it)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    path = name or path
    cfg = data.get("config") or {}
    rule = (cfg.get("rule") or {}).get("name", "?")
    arch = "-".join(str(n) for n in (cfg.get("network") or {}).get("arch", []))
    design = data.get("design") or {}
    built = (f", LANES {design['lanes']}" if design.get("lanes") else "") + \
        (f", {design['cluster_units']} cluster unit(s)" if design.get("cluster_units") else "") + \
        (f", {design['cluster_share']} layers per cluster block" if (design.get("cluster_share") or 1) > 1 else "")
    return (float(data["fmax_mhz"]),
            f"{path}: {data.get('inner', '?')} ({arch}, rule {rule}{built}) routed on {data.get('part', '?')} "
            f"at {data.get('clock', {}).get('mhz', '?')} MHz by `loco-fpga build`")


def _report_key(data: dict) -> str | None:
    design = data.get("design")
    if not design or not data.get("config") or not data.get("met"):
        return None
    return design_key(data["config"], design.get("lanes"), design.get("cluster_units") or 0,
                      design.get("shared_update", False), design.get("sparse_input", False),
                      design.get("cluster_share") or 1)


def default_fmax(key: str | None = None) -> tuple[float, str, bool]:
    """(Fmax MHz, its source, whether it is this design's): a committed, timing-met build report of the design
    ``key`` (:func:`design_key`) if there is one, else the fallbacks of :data:`BUILD_RESULTS`' comment."""
    root = BUILD_RESULTS.parents[2]
    if key is not None and BUILD_RESULTS.is_dir():
        for path in sorted(BUILD_RESULTS.glob("*/report.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if _report_key(data) == key:
                    return (*fmax_from_report(path, str(path.relative_to(root))), True)
            except (ValueError, KeyError, OSError, TypeError):
                continue
    if BUILD_REPORT.exists():
        try:
            fmax, source = fmax_from_report(BUILD_REPORT, str(BUILD_REPORT.relative_to(root)))
            return fmax, source + "; NOT this run's design (no routed build of it is committed)", False
        except (ValueError, KeyError, OSError):
            pass
    fmax, source = ROUTED_FMAX["up5k"]
    return fmax, source + "; NOT this run's design", False


A = proto.AcceleratorRegister


def _board_design(board: str, config) -> tuple[bool, bool]:
    """(shared update engine, sparse layer 0) of the device behind ``board`` (a ``--board`` name of the demo:
    ``virtual`` or a board name's first word); the virtual board has neither."""
    from .tops import BOARDS   # noqa: PLC0415
    match = [b for name, b in BOARDS.items() if board != "virtual" and name.split("-")[0] == board]
    return (match[0].shares_update(config), match[0].sparse_input) if match else (False, False)


class DemoError(Exception):
    """The demo cannot run (wrong device, unsupported config); the message says why."""


@dataclass
class Mismatch:
    what: str
    where: str
    chip: object
    golden: object

    def __str__(self):
        return f"{self.what} differs at {self.where}: chip {self.chip}, golden model {self.golden}"


def on_chip_config(config):
    """(config the chip trains, note): the config's rule when the gateware updates it, else ``np`` with a note."""
    from loco_fpga.hdl.top import SUPPORTED_RULES  # noqa: PLC0415

    if config.rule.name in SUPPORTED_RULES:
        return config, f"rule {config.rule.name} on chip"
    return (config.replace(rule={"name": "np"}),
            f"rule np on chip: the config asks for {config.rule.name!r}, the gateware updates "
            f"{', '.join(SUPPORTED_RULES)} only (golden model and chip both train np)")


def _seed_map(config, lanes):
    from loco_fpga.hdl.network import Network  # noqa: PLC0415  (the gateware's lane order; not elaborated)

    return Network.from_config(config, lanes=lanes, update=config.rule.name).seed_map


def _sample_bytes(x_q, input_bytes):
    return b"".join(int(v).to_bytes(input_bytes, "little") for v in x_q)


def _signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def run_demo(*, host: Host, config, epochs: int = 1, limit: int | None = None, board: str = "virtual",
             progress: bool = True, log=print, fmax: tuple[float, str] | None = None,
             curve_every: int = 100) -> dict:
    """Train on the device behind ``host`` and compare with the golden model; returns the report dict."""
    from loco_fpga.golden_model import load_dataset, prng  # noqa: PLC0415
    from loco_fpga.golden_model.train import build, check_arch, learning_rate  # noqa: PLC0415

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs = {epochs!r}: must be a positive integer")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit = {limit!r}: must be a positive integer")
    if not config.fixed.enabled or not config.spiking.enabled:
        raise DemoError("the demo needs a fixed-point spiking config ([fixed] enabled, [spiking] enabled)")
    chip_config, rule_note = on_chip_config(config)
    dataset = load_dataset(chip_config.train.dataset, chip_config.train.data_path, chip_config.train.seed)
    check_arch(chip_config, dataset)
    arch = chip_config.network.arch
    net, rule, order_rng = build(chip_config, dataset)
    fm = net.fmts
    wall_start = time.perf_counter()

    # -- 1. who is there ------------------------------------------------------------------------------
    info = host.ping()
    regs = {r.name: host.read_reg(r) for r in (A.ID, A.RULE, A.LANES, A.LAYERS, A.SEED_LANES, A.CLUSTER_UNITS)}
    lanes, units = regs["LANES"], regs["CLUSTER_UNITS"]
    input_bytes = (fm.input.bits + 7) // 8
    out_bytes = (fm.out.bits + 7) // 8
    expect = {"RULE": proto.RULE_CODES[chip_config.rule.name], "LAYERS": len(arch) - 1}
    for name, value in expect.items():
        if regs[name] != value:
            raise DemoError(f"the device's {name} register is {regs[name]}, the config needs {value}")
    if (info.sample_bytes, info.n_classes, info.infer_bytes) != (arch[0] * input_bytes, arch[-1],
                                                                  arch[-1] * out_bytes + 1):
        raise DemoError(f"the device ({info}) was not built for network {chip_config.network.arch_str}")
    seed_map = _seed_map(chip_config, lanes)
    if regs["SEED_LANES"] != len(seed_map):
        raise DemoError(f"the device has {regs['SEED_LANES']} PRNG lanes, the config needs {len(seed_map)}")
    log(f"device: {board}, {rule_note}, network {chip_config.network.arch_str}, lanes {lanes}, "
        + (f"{units} unit(s) per cluster block, " if units else "")
        + f"T = {chip_config.spiking.steps}, {info.sample_bytes}-byte samples")

    # -- 2. a known state: counters, registers, seeds, initial weights --------------------------------
    host.reset_state(counters=True, device=True)
    for lane, (stream, index) in enumerate(seed_map):
        host.write_reg(A.SEED_LANE, lane)
        host.write_reg(A.SEED, prng.lane_seed_state(chip_config, stream, index))
    wbits = fm.weight.bits
    sizes = []
    for l, w in enumerate(net.weights):
        words = proto.pack_weights(w.tolist(), lanes, wbits)
        sizes.append(len(words))
        host.load_weights(l, words)
    mismatches: list[Mismatch] = []

    clusters = rule.clusters or []                   # LOCO: every layer's prototypes and count are read back too
    pbits = fm.proto.bits

    def read_back(when):
        for l, (w, n) in enumerate(zip(net.weights, sizes)):
            got = np.array(proto.unpack_weights(host.read_weights(l, n), w.shape[0], w.shape[1] - 1, lanes, wbits))
            if not np.array_equal(got, w):
                i, j = (int(v) for v in np.argwhere(got != w)[0])
                mismatches.append(Mismatch("weight", f"{when}, layer {l}, row {i}, column {j}",
                                           int(got[i, j]), int(w[i, j])))
                return False
        for l, cl in enumerate(clusters):
            want = [int(v) & ((1 << pbits) - 1) for v in cl.protos.reshape(-1)] + [cl.count]
            got = host.read_prototypes(l, len(want))
            if got != want:
                a = next(i for i, (g, v) in enumerate(zip(got, want)) if g != v)
                where = "count" if a == len(want) - 1 else f"prototype {a // cl.dim}, column {a % cl.dim}"
                mismatches.append(Mismatch("prototype word", f"{when}, layer {l}, {where}", got[a], want[a]))
                return False
        return True

    read_back("after loading")

    # -- 3. the training stream -------------------------------------------------------------------------
    n_train = len(dataset.x_train)
    per_epoch = min(n_train, limit) if limit else n_train
    total = per_epoch * epochs
    x_train_q = fm.input.from_float(dataset.x_train)
    x_test_q = fm.input.from_float(dataset.x_test)
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=total, unit="sample", dynamic_ncols=True, desc=f"train on {board}")
    seen = chip_correct = golden_correct = 0
    lr_written = None
    curve = {"samples": [], "chip_running_acc": [], "golden_running_acc": []}
    epoch_test, epoch_running = [], []
    window = [0, 0, 0]            # samples, chip correct, golden correct since the last curve point
    train_start = time.perf_counter()
    try:
        for epoch in range(epochs):
            order = order_rng.permutation(n_train)[:per_epoch]
            correct_epoch = 0
            for idx in order:
                lr_q = rule.lr_register(learning_rate(chip_config.rule, seen / total))
                if lr_q != lr_written:
                    host.write_reg(A.LR, lr_q)
                    lr_written = lr_q
                x_q, label = x_train_q[idx], int(dataset.y_train[idx])
                result = host.train(_sample_bytes(x_q, input_bytes), label)
                gold_pred = rule.step_q(x_q, label, lr_q)
                chip = (result.prediction, _signed(int.from_bytes(result.raw[1:5], "little"), 32),
                        _signed(int.from_bytes(result.raw[5:9], "little"), 32))
                gold = (gold_pred, int(rule.last["dl"]), int(rule.last["g"]))
                if chip != gold and len(mismatches) < 20:
                    mismatches.append(Mismatch("TRAIN reply (prediction, dl, g)", f"training sample {seen}",
                                               chip, gold))
                seen += 1
                hit = result.prediction == label
                chip_correct += hit
                correct_epoch += hit
                golden_correct += gold_pred == label
                window = [window[0] + 1, window[1] + hit, window[2] + (gold_pred == label)]
                if window[0] == curve_every or seen == total:
                    curve["samples"].append(seen)
                    curve["chip_running_acc"].append(window[1] / window[0])
                    curve["golden_running_acc"].append(window[2] / window[0])
                    window = [0, 0, 0]
                if bar is not None:
                    rate = seen / max(time.perf_counter() - train_start, 1e-9)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, run_acc=f"{chip_correct / seen:.3f}",
                                    sps=f"{rate:.1f}", refresh=False)
            epoch_running.append(correct_epoch / per_epoch)
            epoch_test.append(net.accuracy(dataset.x_test, dataset.y_test))
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - train_start
    stats_train = host.stats()
    read_back("after training")

    # -- 4. test split by INFER ---------------------------------------------------------------------------
    chip_preds, gold_preds = [], []
    golden_eval_acc = net.accuracy(dataset.x_test, dataset.y_test)     # the golden model's own evaluation
    eval_start = time.perf_counter()
    for k, x_q in enumerate(x_test_q):
        res = host.infer(_sample_bytes(x_q, input_bytes))
        gold_pred = rule.step_q(x_q, 0, 0)                              # INFER's twin: a step with lr 0
        outs = [_signed(v, 8 * out_bytes) for v in res.outputs]
        gold_outs = [int(v) for v in rule.last["y"]]
        if (outs, res.prediction) != (gold_outs, gold_pred) and len(mismatches) < 20:
            mismatches.append(Mismatch("INFER reply (outputs, prediction)", f"test sample {k}",
                                       (outs, res.prediction), (gold_outs, gold_pred)))
        chip_preds.append(res.prediction)
        gold_preds.append(gold_pred)
    eval_seconds = time.perf_counter() - eval_start
    read_back("after the test split")
    stats_end = host.stats()

    y_test = dataset.y_test
    chip_acc = float(np.mean(np.array(chip_preds) == y_test))
    gold_acc = float(np.mean(np.array(gold_preds) == y_test))
    cycles_train = stats_train["run_cycles"]
    per_sample = cycles_train / max(seen, 1)
    fmax_mhz, fmax_source, fmax_own = ((*fmax, None) if fmax is not None
                                       else default_fmax(design_key(chip_config.to_dict(), lanes, units,
                                                                    *_board_design(board, chip_config))))
    report = {
        "board": board,
        "rule_on_chip": chip_config.rule.name,
        "rule_note": rule_note,
        "config": config.to_dict(),
        "chip_config": chip_config.to_dict(),
        "network": chip_config.network.arch_str,
        "lanes": lanes,
        "cluster_units": units,
        "device_info": info.__dict__,
        "epochs": epochs,
        "epochs_run": epochs,
        "train_samples_per_epoch": per_epoch,
        "samples_trained": seen,
        "prototypes_compared": bool(clusters),
        "test_samples": len(y_test),
        "chip_running_acc": chip_correct / max(seen, 1),
        "golden_running_acc": golden_correct / max(seen, 1),
        "chip_test_acc": chip_acc,
        "golden_test_acc": gold_acc,
        "golden_eval_test_acc": golden_eval_acc,
        "golden_test_acc_per_epoch": epoch_test,
        "chip_running_acc_per_epoch": epoch_running,
        "bit_exact": not mismatches,
        "mismatches": [str(m) for m in mismatches],
        "cycles": {"train_run_cycles": cycles_train, "total_run_cycles": stats_end["run_cycles"],
                   "per_train_sample": per_sample,
                   "per_infer_sample": (stats_end["run_cycles"] - cycles_train) / max(len(y_test), 1)},
        "fmax_mhz": fmax_mhz,
        "fmax_source": fmax_source,
        "fmax_is_this_design": fmax_own,
        "samples_per_s_at_fmax": fmax_mhz * 1e6 / per_sample if per_sample else None,
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "train_wall_s": round(train_seconds, 3),
        "eval_wall_s": round(eval_seconds, 3),
        "train_samples_per_s_wall": round(seen / max(train_seconds, 1e-9), 2),
        "stats": stats_end,
        "host_retries": dict(host.retry_log),
        "curve": curve,
        "python": platform.python_version(),
    }
    return report


def write_outputs(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """``report.json`` and ``curve.png`` (learning curve) in ``out_dir``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path_json = out / "report.json"
    path_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(7, 4))
    c = report["curve"]
    ax.plot(c["samples"], c["chip_running_acc"], label=f"on chip ({report['board']}), running", lw=2)
    ax.plot(c["samples"], c["golden_running_acc"], "--", label="golden fixed-point model, running")
    per_epoch = report["train_samples_per_epoch"]
    ax.plot([per_epoch * (e + 1) for e in range(len(report["golden_test_acc_per_epoch"]))],
            report["golden_test_acc_per_epoch"], "o", label="golden model, test split")
    ax.axhline(report["chip_test_acc"], color="k", lw=0.8, ls=":",
               label=f"on chip, test split (INFER): {report['chip_test_acc']:.3f}")
    ax.set_xlabel("training samples")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['rule_on_chip']} {report['network']} on digits, {report['board']} board")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path_png = out / "curve.png"
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_json, path_png


def summary(report: dict) -> str:
    """The human-readable result lines."""
    cyc = report["cycles"]
    lines = [
        f"{report['rule_note']}; {report['samples_trained']} training samples ({report['epochs']} epoch(s) of "
        f"{report['train_samples_per_epoch']}), {report['test_samples']} test samples",
        f"test accuracy on chip {report['chip_test_acc']:.4f}, golden model {report['golden_test_acc']:.4f} "
        f"({'equal' if report['chip_test_acc'] == report['golden_test_acc'] else 'DIFFERENT'}); running training "
        f"accuracy {report['chip_running_acc']:.4f}",
        f"weights and replies vs the golden model: {'bit for bit equal' if report['bit_exact'] else 'DIFFERENT'}",
        f"cycles: {cyc['train_run_cycles']} for training ({cyc['per_train_sample']:.0f} per sample), "
        f"{cyc['total_run_cycles']} in all; at {report['fmax_mhz']:.1f} MHz ({report['fmax_source']}): "
        f"{report['samples_per_s_at_fmax']:.0f} training samples/s",
        f"wall time {report['wall_time_s']:.1f} s (training {report['train_wall_s']:.1f} s, "
        f"{report['train_samples_per_s_wall']:.1f} samples/s; test {report['eval_wall_s']:.1f} s)",
    ]
    lines += [f"first difference: {m}" for m in report["mismatches"][:1]]
    return "\n".join(lines)
