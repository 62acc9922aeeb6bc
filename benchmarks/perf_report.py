"""Performance report: each board's default accelerator against the SPEC §7 roofline and the golden model.

    python benchmarks/perf_report.py [--builds DIR] [--seconds 3] [--quick]

For every board of ``loco_fpga.boards.tops.BOARDS``, its default network (``tops.board_inner``: the board's
preset with the rule the gateware trains, at the board's LANES):

* **cycles per training sample**: ``Network.schedule().period`` of the on-chip training datapath
  (``Network(update=…)``: both passes, loss, every layer's update; hdl/network.py — the formula the cycle-exact
  tests in tests/test_hdl_update_network.py check against the simulator);
* **routed Fmax** and **resources**: ``report.json`` of ``loco-fpga build --board B`` (``--builds``, default
  ``benchmarks/results/boards/<board>/report.json``; the board clock is the timing constraint it met);
* **samples/s** = Fmax / cycles (SPEC §7), and at the board's clock; and through the UART (one TRAIN frame
  and its reply per sample at the build's baud rate: the host link, not the datapath, bounds a real board);
* **roofline** (SPEC §7): every layer engine reads one LANES-wide weight word per cycle from its one memory
  read port, the two passes share each read, the layers run in parallel, and each layer's update sweeps its
  weights once (read-modify-write through the memory's read and write ports, one word per cycle), so a sample
  needs at least ``T·max_l n_l·C_l + max_l n_l·C_l`` cycles (C_l = ⌈(n_{l−1}+1)/LANES_l⌉). The spike-gated
  accumulation multiplies nothing; the update's multiplies (g·ξ_i·v_j, one per weight per lane) are as many
  as the weight-port words, so the part's multipliers do not tighten the bound. Efficiency = bound / cycles;
* **golden model**: ``FixedRule.step_q`` (the bit-exact fixed-point spiking model) samples/s on this CPU for
  the same network and rule (and for LOCO, the rule the golden model also runs);
* **update latency vs depth**: ``hdl_cycles.update_rows`` (g to the last weight written, L = 2…12).

Writes ``benchmarks/results/perf_report.json``, ``docs/img/performance.png`` and the table between the
``perf_report`` markers of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
OUT_JSON = RESULTS / "perf_report.json"
PLOT = ROOT / "docs" / "img" / "performance.png"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- perf_report:begin -->", "<!-- perf_report:end -->"


def golden_speed(config, seconds: float) -> dict:
    """Samples/s of ``FixedRule.step_q`` (random rates, random labels; throughput does not depend on them)."""
    from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule

    rng = np.random.default_rng(0)
    net = FixedNetwork(config, np.random.default_rng(config.train.seed))
    rule = FixedRule(net, config)
    one = 1 << config.fixed.input_frac
    n = 256
    xs = rng.integers(0, one + 1, (n, config.network.arch[0]))
    labels = rng.integers(0, config.network.arch[-1], n)
    lr_q = rule.lr_register(config.rule.lr)
    for i in range(16):                                   # warm-up: every code path (LOCO: prototypes fill)
        rule.step_q(xs[i], int(labels[i]), lr_q)
    done, start = 0, time.perf_counter()
    while True:
        rule.step_q(xs[done % n], int(labels[done % n]), lr_q)
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 10:
            break
    return {"rule": config.rule.name, "samples": done, "seconds": round(elapsed, 3),
            "samples_per_s": round(done / elapsed, 1)}


#: samples of the training data whose input spikes give a sparse layer 0's cycles (the first ones, in order)
SPARSE_SAMPLES = 200


def sparse_schedule(net, config, samples: int):
    """``net.schedule`` of the first ``samples`` training samples of ``config``'s data set back to back, with layer
    0's active input chunks of each step from the golden model's encoder; (schedule, active counts)."""
    from loco_fpga.golden_model.datasets import load_dataset
    from loco_fpga.golden_model.fixed import FixedNetwork

    data = load_dataset(config.train.dataset, config.train.data_path, config.train.seed)
    model = FixedNetwork(config, np.random.default_rng(0))
    if model.encoder != "deterministic":
        raise ValueError(f"spiking.encoder = {model.encoder!r}: the sparse cycle count uses the deterministic encoder")
    x_q = model.fmts.input.from_float(data.x_train[:samples])
    active = [net.input_activity(model.encode(x, None)) for x in x_q]
    return net.schedule(samples, active=active), active


def board_row(name: str, builds: Path, seconds: float) -> dict:
    from hdl_cycles import roofline

    from loco_fpga.boards import protocol as proto
    from loco_fpga.boards import tops

    board = tops.BOARDS[name]
    inner, config = tops.board_inner(board, lanes=board.default_lanes)
    net = inner.network
    sched = net.schedule(3)
    cycles = sched.period
    forward = roofline(net.arch, net.lanes, net.steps)
    sweep = max(u.sweep_cycles for u in net.updaters)    # a shared engine (iCEBreaker): its Σ_l n_l·C_l
    bound = forward + sweep
    sparse = {}
    if net.sparse_input:     # layer 0 skips silent inputs: cycles and bound over the config's training data
        cycles_dense, bound_dense = cycles, bound
        sched, active = sparse_schedule(net, config, SPARSE_SAMPLES)
        cycles = round((sched.start[-1] - sched.start[0]) / (SPARSE_SAMPLES - 1), 1)
        e0, rest = net.engines[0], net.engines[1:]
        # per sample: layer 0 reads n_1·(a_t + 1) words per step, the other layers their dense n_l·C_l
        reads = [max(sum(e0.n_out * (a + 1) for a in act), *(net.steps * e.accumulate_cycles for e in rest))
                 for act in active]
        bound = round(float(np.mean(reads)) + sweep, 1)
        forward = round(float(np.mean(reads)), 1)
        sparse = {"sparse_input": True, "data": f"{config.train.dataset}, first {SPARSE_SAMPLES} training samples",
                  "mean_active_chunks": round(float(np.mean(active)), 2), "chunks": e0.chunks - 1,
                  "cycles_per_sample_dense": cycles_dense, "bound_dense": bound_dense}
    report_path = builds / name / "report.json"
    build = json.loads(report_path.read_text()) if report_path.exists() else None
    row = {"board": name, "part": board.part, "arch": list(net.arch), "steps": net.steps, "lanes": net.lanes,
           "rule_on_chip": config.rule.name, "cycles_per_sample": cycles, "first_sample_latency": sched.first_latency,
           "update_latency": sched.update_latency, "bound": bound, "bound_forward": forward, "bound_update": sweep,
           "efficiency": round(bound / cycles, 4), **sparse}
    d = inner.device
    frame_bytes = 2 * proto.OVERHEAD + 1 + d.sample_bytes + 1 + d.train_bytes   # TRAIN request + its reply
    row["uart_bytes_per_sample"] = frame_bytes
    if build:
        fmax, clock = build["fmax_mhz"], build["clock"]["mhz"]
        baud = build["baud"]
        row.update(build=str(report_path.relative_to(ROOT)) if report_path.is_relative_to(ROOT) else str(report_path),
                   met=build["met"], clock_mhz=clock, fmax_mhz=round(fmax, 2), seed=build["seed"],
                   resources=build["resources"], baud=baud,
                   samples_per_s_fmax=round(fmax * 1e6 / cycles, 1),
                   samples_per_s_clock=round(clock * 1e6 / cycles, 1),
                   samples_per_s_uart=round(1 / (frame_bytes * 10 / baud + cycles / (clock * 1e6)), 1),
                   samples_per_s_uart_3mbaud=round(1 / (frame_bytes * 10 / 3e6 + cycles / (clock * 1e6)), 1))
    else:
        error = builds / name / "build-error.txt"
        row["build_error"] = " ".join(error.read_text().split()) if error.exists() else "not built"
        # what the board would do at its clock, for comparison only: this design did not build
        row["samples_per_s_projected_at_clock"] = round(board.default_mhz * 1e6 / cycles, 1)
        row["clock_mhz"] = board.default_mhz
    golden = [golden_speed(config, seconds)]
    if config.rule.name != "loco":
        golden.append(golden_speed(config.replace(rule={"name": "loco"}), seconds))
    row["golden"] = golden
    return row


def markdown(rows) -> str:
    lines = ["| board | network (T, LANES) | rule | cycles/sample | bound | efficiency | clock / routed Fmax (MHz) | "
             "samples/s at Fmax | at the clock | via UART | golden model samples/s (rule) | LUT | FF | BRAM | DSP |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        arch = "-".join(map(str, r["arch"]))
        golden = ", ".join(f"{g['samples_per_s']:,.0f} ({g['rule']})" for g in r["golden"])
        if "fmax_mhz" in r:
            res = r["resources"]
            cells = [f"{r['clock_mhz']:g} / {r['fmax_mhz']:.1f}", f"{r['samples_per_s_fmax']:,.0f}",
                     f"{r['samples_per_s_clock']:,.0f}", f"{r['samples_per_s_uart']:,.0f} ({r['baud']} baud)"]
            use = [f"{res[k]['used']:,}/{res[k]['available']:,}" for k in ("lut", "ff", "bram", "dsp")]
        else:
            cells = [f"{r['clock_mhz']:g} / not built", "–",
                     f"({r['samples_per_s_projected_at_clock']:,.0f} if it fit)", "–"]
            use = ["–"] * 4
        star = "*" if r.get("sparse_input") else ""
        lines.append(f"| {r['board']}{star} | {arch} (T {r['steps']}, {r['lanes']}) | {r['rule_on_chip']} | "
                     f"{r['cycles_per_sample']:,} | {r['bound']:,} | {r['efficiency']:.3f} | " + " | ".join(cells)
                     + f" | {golden} | " + " | ".join(use) + " |")
    for r in rows:
        if r.get("sparse_input"):
            lines += ["", f"\\* {r['board']}: layer 0 reads only the weights of the input chunks that spiked "
                      f"(`sparse_input`), so its cycles depend on the data: the mean over the {r['data']} "
                      f"({r['mean_active_chunks']} of {r['chunks']} inputs active per step on average; with every "
                      f"input active {r['cycles_per_sample_dense']:,} cycles, bound {r['bound_dense']:,}). Its bound "
                      "counts the weight words of the active inputs."]
    notes = [f"- {r['board']}: {r['build_error']}" for r in rows if "build_error" in r]
    if notes:
        lines += ["", "Boards whose default build failed:", ""] + notes
    return "\n".join(lines)


def depth_table(rows) -> str:
    lines = ["| layers L | LANES | g → last weight written (cycles) | training cycles/sample |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layers']} | {r['lanes']} | {int(r['g_to_last_write']):,} | "
                     f"{int(r['train_cycles_per_sample']):,} |")
    return "\n".join(lines)


def plot(rows, depth, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["board"] for r in rows]
    x = np.arange(len(rows))
    chip = [r.get("samples_per_s_fmax", 0) for r in rows]
    uart = [r.get("samples_per_s_uart", 0) for r in rows]
    gold = [r["golden"][0]["samples_per_s"] for r in rows]
    bars = a.bar(x - 0.27, chip, 0.27, label="on chip at routed Fmax")
    for k, r in enumerate(rows):             # a board whose build failed: what it would do at its clock, hatched
        if "samples_per_s_projected_at_clock" in r:
            a.bar(x[k] - 0.27, r["samples_per_s_projected_at_clock"], 0.27, fill=False, hatch="//",
                  edgecolor=bars.patches[0].get_facecolor(), label="projected at the clock (did not fit)")
    a.bar(x, uart, 0.27, label="on chip through the UART")
    a.bar(x + 0.27, gold, 0.27, label="golden model on this CPU")
    a.set_xticks(x, names)
    a.set_yscale("log")
    a.set_ylabel("training samples/s")
    a.legend(fontsize=8)
    a.set_title("Training throughput, board default networks")
    for lanes in sorted({r["lanes"] for r in depth}):
        pts = [(r["layers"], r["g_to_last_write"]) for r in depth if r["lanes"] == lanes]
        b.plot(*zip(*pts), marker="o", label=f"LANES {lanes}")
    b.set_xlabel("weight layers L (64-wide hidden layers)")
    b.set_ylabel("cycles from g to the last weight written")
    b.set_ylim(bottom=0)
    b.legend(fontsize=8)
    b.set_title("Update latency vs depth")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {BEGIN} … {END} markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def _git_head() -> str | None:
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv=None) -> None:
    from hdl_cycles import update_rows

    from loco_fpga.boards import tops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=Path, default=RESULTS / "boards",
                        help="folder with <board>/report.json from `loco-fpga build` (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="golden-model timing per rule")
    parser.add_argument("--boards", default=",".join(tops.BOARDS), help="comma-separated boards")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    rows = [board_row(name, args.builds, args.seconds) for name in args.boards.split(",")]
    depth = update_rows()
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "numpy": np.__version__, "git_head": _git_head(), "command": "python benchmarks/perf_report.py " + " ".join(argv or sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps({"meta": meta, "boards": rows, "update_latency": depth}, indent=1) + "\n")
    plot(rows, depth, PLOT)
    table = markdown(rows) + "\n\nUpdate latency vs depth (NP update in gateware, `Network.schedule`):\n\n" + depth_table(depth)
    table += (f"\n\nMeasured {meta['date']} at git {meta['git_head']} on {meta['cpus']} CPUs (1-min load "
              f"{meta['load_1min']}: the golden-model rates are from a shared, loaded machine), Python "
              f"{meta['python']}, NumPy {meta['numpy']}; `{meta['command'].strip()}`.")
    if not args.no_doc:
        write_doc(table)
    print(table)
    print(f"wrote {OUT_JSON}, {PLOT}" + ("" if args.no_doc else f", {DOC}"))


if __name__ == "__main__":
    main()
