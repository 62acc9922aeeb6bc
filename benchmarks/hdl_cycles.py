"""Exact cycles per training sample of the network datapath (both passes), against the SPEC §7 roofline.

    python benchmarks/hdl_cycles.py [--quick] [--simulators verilator,icarus]

For the UP5K and ECP5 preset networks (``loco_fpga.config.preset``) at several LANES values:

* **formula**: ``Network.cycles_per_sample`` (hdl/network.py, the engines' published timing chained);
* **measured** (where simulated): the network's Verilog under cocotb (sim/harness.py) on Verilator and Icarus,
  random weights and PRNG seeds written first, then the samples' rates offered back to back (n_0 transfers
  per sample) with every output always ready; cycles per sample = cycles between consecutive ``last``
  transfers on ``o`` (ΔL_sum, dl, g), and the first sample's latency = cycles from its first ``x`` transfer to
  its ``last`` transfer on ``o``;
* **bound** (SPEC §7 roofline for that LANES): each layer engine reads one LANES-wide weight word per cycle
  from its single memory read port, the clean and noisy passes share every read, and the engines of
  different layers work in parallel, so a sample needs at least
  ``T · max_l n_l·⌈(n_{l−1} + 1)/LANES_l⌉`` cycles (LANES_l = min(LANES, n_{l−1} + 1)); the engine multiplies
  nothing (spike-gated adds), so the part's multipliers do not bound it. Efficiency = bound / cycles;
* **simulator speed**: simulated cycles per wall-clock second of the free-running sample phase (Python is
  only woken at sample boundaries and on output words, not every cycle);
* **samples/s** = routed Fmax / cycles, with the Fmax of an out-of-context UP5K build (boards/synth.py) of
  the preset's full ``Network`` where ``--synth-lanes`` asks for one.

Writes ``benchmarks/results/hdl_cycles.json`` and the table between the ``hdl_cycles`` markers of
``docs/benchmarks.md``. This file is also the cocotb bench module (``count_cycles``) the simulators import.
"""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT_JSON = RESULTS / "hdl_cycles.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- hdl_cycles:begin -->", "<!-- hdl_cycles:end -->"
PERIOD_NS = 10

#: LANES values tabulated from the formula; SIMULATED the (preset, LANES) pairs that are also simulated
LANES = (1, 2, 4, 8, 16, 65)
SIMULATED = {"up5k": (1, 4), "ecp5": ()}
QUICK = {"up5k": (16,), "ecp5": (65,)}


def roofline(arch, lanes: int, steps: int) -> int:
    """SPEC §7 lower bound: T · max over layers of n_out · ⌈(n_in + 1)/LANES⌉ weight-word reads."""
    return steps * max(n_out * math.ceil((n_in + 1) / min(lanes, n_in + 1))
                       for n_in, n_out in zip(arch[:-1], arch[1:]))


# -- the cocotb bench ---------------------------------------------------------------------------------------

@cocotb.test()
async def count_cycles(dut):
    """Back-to-back samples, outputs always ready: the cycle of every ``x`` and every last ``o`` transfer."""
    import numpy as np

    from loco_fpga.config import preset
    from loco_fpga.hdl.network import Network
    from loco_fpga.sim.benches import bench_params
    from loco_fpga.sim.benches.network import random_stimulus, reset_and_load, x_payloads

    params = bench_params()
    config = preset(params["preset"])
    model = Network.from_config(config, lanes=params["lanes"])
    n_samples = params["samples"]
    weights, samples = random_stimulus(config, n_samples, np.random.default_rng(params["seed"]))
    payloads = x_payloads(model, samples)

    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.x__valid.value = 0
    dut.o__ready.value = 1
    for l in range(model.n_layers - 1):
        getattr(dut, f"counts__{l}__ready").value = 1
    await reset_and_load(dut, config, model, weights)

    def cycle() -> int:
        return int(cocotb.utils.get_sim_time("ns")) // PERIOD_NS

    last_o = []

    async def watch_outputs():
        while True:
            await RisingEdge(dut.o__valid)
            while True:                                # a few cycles per sample: the n_L result words
                await ReadOnly()
                if not dut.o__valid.value:
                    break
                if model.output_layout.from_bits(dut.o__payload.value.to_unsigned()).last:
                    last_o.append(cycle())
                await RisingEdge(dut.clk)

    cocotb.start_soon(watch_outputs())
    accepted = []
    wall = time.monotonic()
    for payload in payloads:
        dut.x__payload.value = payload
        dut.x__valid.value = 1
        await ReadOnly()
        if not dut.x__ready.value:
            await RisingEdge(dut.x__ready)
            await ReadOnly()
        accepted.append(cycle())                       # the transfer happens at the end of this cycle
        await RisingEdge(dut.clk)
        dut.x__valid.value = 0
    while len(last_o) < n_samples:                     # the last sample is complete
        await RisingEdge(dut.clk)
    seconds = time.monotonic() - wall
    Path(params["out"]).write_text(json.dumps({
        "accepted": accepted, "last_o": last_o, "seconds": seconds,
        "cycles": last_o[-1] - accepted[0]}))


# -- the driver ---------------------------------------------------------------------------------------------

def simulate(preset_name: str, lanes: int, simulator: str, samples: int) -> dict:
    from loco_fpga.config import preset
    from loco_fpga.hdl.network import Network
    from loco_fpga.sim import harness

    built = harness.build(lambda: Network.from_config(preset(preset_name), lanes=lanes),
                          name=f"hdl-cycles-{preset_name}-l{lanes}",
                          params={"preset": preset_name, "lanes": lanes}, simulator=simulator)
    out = built.directory / f"cycles-{samples}.json"
    harness.run(built, "hdl_cycles", params={"samples": samples, "seed": 7, "out": str(out)})
    got = json.loads(out.read_text())
    acc, last_o = got["accepted"], got["last_o"]
    periods = [b - a for a, b in zip(last_o[:-1], last_o[1:])][1:]   # steady state: from the second sample on
    latency = last_o[0] - acc[0] if last_o else None
    return {"simulator": simulator, "samples": samples, "periods": periods, "latency_first_to_last": latency,
            "build_seconds": round(built.build_seconds, 1), "sim_seconds": round(got["seconds"], 2),
            "cycles_per_second": round(got["cycles"] / got["seconds"])}


def synth_fmax(preset_name: str, lanes: int, synth_lanes, synth_dir: str):
    """Routed Fmax of the UP5K preset's full ``Network`` (boards/synth.py, out of context, 24 MHz requested,
    timing checked by us)."""
    if preset_name != "up5k" or lanes not in synth_lanes:
        return None
    from loco_fpga.boards import synth
    from loco_fpga.config import preset
    from loco_fpga.hdl.network import Network

    if synth.tools_available("up5k-sg48"):
        return None
    print(f"up5k LANES={lanes}: synthesis …", flush=True)
    try:
        res = synth.synthesize(Network.from_config(preset("up5k"), lanes=lanes), part="up5k-sg48", freq_mhz=24,
                               dsp=True, check_timing=False, build_dir=Path(synth_dir) / f"up5k-l{lanes}")
    except synth.SynthesisError as err:
        return {"part": "up5k-sg48", "design": "full Network", "error": str(err).splitlines()[0]}
    print(f"  {res.summary()}", flush=True)
    return {"part": res.part, "design": "full Network", **res.to_json()}


#: depths (weight layers) and LANES of the update-latency table (issue 6: flat in depth is the claim)
UPDATE_DEPTHS = (2, 4, 8, 12)
UPDATE_LANES = (1, 16)


def update_rows(rule: str = "np", *, cluster_units: int | None = None, cluster_share: int = 1,
                cluster_impl: str = "parallel"):
    """NP, LOCO, DFA or LLS training in hardware (``Network(update=rule)``), by formula (``Network.schedule``, checked
    against the simulator in tests/test_hdl_update_network.py, test_hdl_update_loco.py, test_hdl_update_dfa.py,
    test_hdl_update_lls.py):
    for 64-wide
    hidden layers (the ECP5 preset's shape and formats) at depth L, the cycles from g (the loss unit's last
    transfer) to the last weight written, against the weight-port bound max_l n_l·C_l (every layer's update engine
    sweeps its memory in parallel, one word per cycle), and the cycles per training sample. LOCO: every layer's
    cluster block in its steady state (K clusters in use), N_ref = the preset's; the cycles per sample are the
    mean over one refresh period; ``vperp_after_g`` = cycles from g to the last layer's last v⊥ (≤ 0: v⊥ was
    ready before g); ``cluster_units``, ``cluster_share`` and ``cluster_impl`` as in ``Network``."""
    from loco_fpga.config import preset
    from loco_fpga.hdl.network import Network

    rows = []
    for depth in UPDATE_DEPTHS:
        arch = (64,) + (64,) * (depth - 1) + (10,)
        config = preset("ecp5").replace(network={"arch": arch}, rule={"name": rule, "output_update": "perturb"})
        for lanes in UPDATE_LANES:
            blocks = ({"cluster_units": cluster_units, "cluster_share": cluster_share, "cluster_impl": cluster_impl}
                      if rule == "loco" else {})
            net = Network.from_config(config, lanes=lanes, update=rule, **blocks)
            period = config.rule.refresh if rule == "loco" else 1
            sched = net.schedule(2 * period + 2)
            bound = max(u.sweep_cycles for u in net.updaters)
            row = {"layers": depth, "arch": arch, "lanes": lanes, "steps": net.steps,
                   "g_to_last_write": sched.update_latency, "bound": bound,
                   "train_cycles_per_sample": (sched.start[-1] - sched.start[-1 - period]) / period,
                   "forward_bound": roofline(arch, lanes, net.steps)}
            if rule == "loco":
                row.update(refresh=config.rule.refresh, clusters=config.rule.clusters,
                           cluster_units=net.cluster_blocks[0].units, cluster_share=cluster_share,
                           cluster_impl=cluster_impl,
                           vperp_after_g=max(sched.vperp_done[0]) - sched.loss_done[0])
            rows.append(row)
    return rows


def update_table(rows) -> str:
    lines = ["| layers L | LANES | g → last weight written | bound max_l n_l·C_l | training cycles/sample | "
             "forward bound T·max_l n_l·C_l |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layers']} | {r['lanes']} | {r['g_to_last_write']:,} | {r['bound']:,} | "
                     f"{r['train_cycles_per_sample']:,g} | {r['forward_bound']:,} |")
    return "\n".join(lines)


def table(rows) -> str:
    lines = ["| network | LANES | cycles/sample (formula) | measured (sim) | first x → last o (sim; formula) | bound | "
             "efficiency | Verilator cyc/s | Icarus cyc/s | Fmax (part) | samples/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        sims = {s["simulator"]: s for s in r["simulated"]}
        measured = sorted({p for s in r["simulated"] for p in s["periods"]})
        lat = sorted({s["latency_first_to_last"] for s in r["simulated"]})
        fm = r.get("synth")
        lines.append("| " + " | ".join([
            f"{r['preset']} {'-'.join(map(str, r['arch'])) if len(r['arch']) < 5 else str(r['arch'][0]) + '-' + str(r['arch'][1]) + '×' + str(len(r['arch']) - 2) + '-' + str(r['arch'][-1])}",
            str(r["lanes"]), f"{r['formula']:,}",
            ", ".join(f"{p:,}" for p in measured) or "—",
            (", ".join(f"{p:,}" for p in lat if p is not None) or "—") + f"; {r['latency_formula']:,}",
            f"{r['bound']:,}", f"{r['efficiency']:.3f}",
            f"{sims['verilator']['cycles_per_second']:,}" if "verilator" in sims else "—",
            f"{sims['icarus']['cycles_per_second']:,}" if "icarus" in sims else "—",
            (f"{fm['fmax_mhz']:.1f} MHz ({fm['part']}, {'met' if fm['met'] else 'not met'} at "
             f"{fm['freq_mhz']:g})" if fm and "fmax_mhz" in fm else "—"),
            f"{fm['fmax_mhz'] * 1e6 / r['formula']:,.0f}" if fm and "fmax_mhz" in fm else "—"]) + " |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## HDL cycles per sample\n\n" + section + "\n"
    DOC.write_text(doc)


def main(argv=None) -> int:
    from loco_fpga.config import preset
    from loco_fpga.hdl.network import Network
    from loco_fpga.sim import harness

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synth-dir", default=str(ROOT / "sim_build" / "hdl_cycles_synth"))
    ap.add_argument("--quick", action="store_true", help="simulate one LANES value per preset")
    ap.add_argument("--simulators", default=",".join(harness.available_simulators()))
    ap.add_argument("--target-cycles", type=int, default=60_000,
                    help="simulate about this many cycles per run (3 … 60 samples)")
    ap.add_argument("--synth-lanes", default="1",
                    help="UP5K LANES values to synthesise (boards/synth.py) for Fmax; '' for none")
    args = ap.parse_args(argv)
    simulators = [s for s in args.simulators.split(",") if s]
    plan = QUICK if args.quick else SIMULATED
    synth_lanes = [int(v) for v in args.synth_lanes.split(",") if v]
    previous = {}
    if OUT_JSON.exists():        # simulations not repeated in this run are kept (same network, same formula)
        for old in json.loads(OUT_JSON.read_text())["rows"]:
            previous[(old["preset"], old["lanes"], old["formula"])] = old
    rows = []
    for name in ("up5k", "ecp5"):
        config = preset(name)
        arch = tuple(config.network.arch)
        for lanes in LANES:
            net = Network.from_config(config, lanes=lanes)
            bound = roofline(arch, lanes, net.steps)
            row = {"preset": name, "arch": arch, "lanes": lanes, "steps": net.steps,
                   "formula": net.cycles_per_sample, "latency_formula": net.schedule().first_latency,
                   "bound": bound,
                   "efficiency": round(bound / net.cycles_per_sample, 4), "simulated": []}
            if lanes in plan[name] and simulators:
                for sim in simulators:
                    print(f"{name} LANES={lanes}: {sim} …", flush=True)
                    samples = max(3, min(60, math.ceil(args.target_cycles / net.cycles_per_sample)))
                    res = simulate(name, lanes, sim, samples)
                    print(f"  {res}", flush=True)
                    if any(p != net.cycles_per_sample for p in res["periods"]):
                        print(f"  MISMATCH: formula {net.cycles_per_sample}, measured {res['periods']}",
                              flush=True)
                    row["simulated"].append(res)
            old = previous.get((name, lanes, net.cycles_per_sample), {})
            if not row["simulated"]:
                row["simulated"] = old.get("simulated", [])
            row["synth"] = synth_fmax(name, lanes, synth_lanes, args.synth_dir) or old.get("synth")
            rows.append(row)
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "command": "python benchmarks/hdl_cycles.py"
            + (" --quick" if args.quick else "") + (" --simulators ''" if not simulators else "")
            + (" --synth-lanes ''" if not synth_lanes else "")}
    updates = update_rows()
    loco_updates = update_rows("loco")
    loco_small = update_rows("loco", cluster_units=1)                    # the ECP5 board build's blocks ...
    loco_pairs = update_rows("loco", cluster_units=1, cluster_share=2)   # ... shared by pairs of layers
    loco_micro = update_rows("loco", cluster_impl="micro")               # the microcoded blocks, one per layer
    dfa_updates = update_rows("dfa")
    lls_updates = update_rows("lls")
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps({"meta": meta, "bound": "T * max_l n_l * ceil((n_{l-1}+1)/min(LANES, "
                                    "n_{l-1}+1))", "rows": rows, "np_update": updates, "loco_update": loco_updates,
                                    "loco_update_one_unit": loco_small, "loco_update_one_unit_pairs": loco_pairs,
                                    "loco_update_micro": loco_micro,
                                    "dfa_update": dfa_updates, "lls_update": lls_updates},
                                   indent=1) + "\n")
    text = (table(rows) + "\n\n"
            f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} cores, 1-min load {meta['load_1min']} "
            f"at the end); `{meta['command']}`. Bound = T·max_l n_l·⌈(n_(l−1)+1)/LANES⌉ (one LANES-wide "
            "weight read per cycle per layer engine, the two passes sharing each read, engines in parallel). "
            "Simulator speeds: simulated cycles per wall-clock second over the back-to-back sample phase of the "
            "same run (same Verilog, weights and samples) on both simulators, through cocotb (Python woken per "
            "sample and per output word). Fmax: out-of-context UP5K build of the full network, 24 MHz requested; "
            "samples/s = Fmax / formula cycles. Rows not simulated in the "
            "latest run keep their earlier simulations (same network, same formula).\n\n"
            f"NP training in hardware (`Network(update=\"np\")`, T = {updates[0]['steps']}, 64-wide hidden layers, "
            "the ECP5 preset's formats, by formula "
            "`Network.schedule`, which tests/test_hdl_update_network.py checks against the simulator): every "
            "layer's update engine sweeps its weight memory in parallel after the one broadcast of g, so the "
            "update latency does not grow with depth.\n\n" + update_table(updates) + "\n\n"
            f"LOCO training in hardware (`Network(update=\"loco\")`, same networks, K = {loco_updates[0]['clusters']}, "
            f"N_ref = {loco_updates[0]['refresh']}, every layer's cluster block in its steady state; cycles per sample "
            "= mean over one refresh period): the cluster blocks of all layers run in parallel, each from its "
            "layer's input counts, so v⊥ and the update latency do not grow with depth either; the cluster "
            "block's prototype update and refresh run after v⊥ and delay the next sample.\n\n"
            + update_table(loco_updates) + "\n\n"
            "The smallest cluster blocks (one unit each, `cluster_units = 1`: the passes repeat for every cluster), "
            "one per layer, and the same blocks shared by pairs of layers (`cluster_share = 2`, the ECP5 board "
            "build of the deep preset: a pair's second layer waits for its first, so the update latency is that of "
            "two block samples, still flat in depth):\n\n"
            + update_table(loco_small) + "\n\n" + update_table(loco_pairs) + "\n\n"
            "The microcoded cluster blocks (`cluster_impl = \"micro\"`, one per layer: the same integers from a "
            "program on one 16 × 16 multiplier, docs/hdl_learning.md): every layer's block still runs in parallel, "
            "so the update latency stays flat in depth, but it is ≈ 22 times the one-unit parallel blocks' (each "
            "block runs the whole cluster step as a program), and a sample takes ≈ 1.5 times the cycles at LANES 1:\n\n"
            + update_table(loco_micro) + "\n\n"
            "DFA training in hardware (`Network(update=\"dfa\")`, same networks; \"g\" = the loss unit's last "
            "transfer): the output error e goes to the output layer's update engine and to one feedback unit per "
            "hidden layer (n_l·(n_L + 1) cycles each, all in parallel), so the update latency is flat in depth.\n\n"
            + update_table(dfa_updates) + "\n\n"
            "LLS training in hardware (`Network(update=\"lls\")`, same networks, τ = 1/2): each hidden layer's "
            "local error unit starts from the layer's own clean counts (2·n_L + n_l restoring divisions), all "
            "layers in parallel, so the update latency is flat in depth; the output layer learns from e as in "
            "DFA.\n\n" + update_table(lls_updates))
    write_doc(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
