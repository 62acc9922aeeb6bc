"""Size and instruction counts of the LOCO program for the microcoded datapath (hdl/loco_program.py).

    python benchmarks/microcode_loco.py [--samples N]

For the ``up5k`` preset (layers of input widths 65 and 33 in one program: two banks) and the ``ecp5`` preset
(two 65-wide layers, as one ``cluster_share = 2`` block would hold them), runs the program on the
instruction-set simulator (hdl/microcode.py) over N samples per bank drawn as the cluster bench draws them
(sim/benches/clusters.py ``make_samples``), checks every sample's k* and v⊥ against ``FixedClusters`` and
reports: instructions in the program, data-memory words, and per bank the instructions per sample (its
``sample`` and ``update`` runs) — mean, max, and the mean of the samples with and without a refresh — and the
mean gateware cycles per sample (``hdl/sequencer.py`` ``op_cycles`` at its default 16-bit digit).

Writes ``benchmarks/results/microcode_loco.json`` and prints a markdown table.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed import FixedClusters
from loco_fpga.hdl.loco_program import LocoProgram
from loco_fpga.hdl.sequencer import op_cycles
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.clusters import make_samples

CASES = [("up5k", (65, 33)), ("ecp5", (65, 65))]


def measure(name: str, dims, n: int, seed: int = 5) -> dict:
    cfg = preset(name)
    prog = LocoProgram.from_config(cfg, dims)
    mach = prog.machine()
    rng = random.Random(seed)
    out = {"preset": name, "dims": list(dims), "instructions": len(prog.code), "data_words": prog.depth,
           "clusters": cfg.rule.clusters, "refresh": cfg.rule.refresh, "banks": []}
    for b, d in enumerate(dims):
        gold = FixedClusters(d, cfg, formats(cfg))
        with_ref, without, cycles = [], [], []
        for u, v in make_samples(rng, d, cfg.spiking.steps, n):
            u_hat = gold.normalise(u)
            k = gold.select(u_hat)
            v_perp = gold.project(v, k)
            gold.update(u_hat, k)
            start, before = mach.cycles, dict(mach.counts)
            got_k, got_vp = prog.run_sample(mach, b, u, v)
            cycles.append(sum((c - before.get(op, 0)) * op_cycles(op) for op, c in mach.counts.items()))
            if got_k != k or not np.array_equal(got_vp, v_perp):
                raise SystemExit(f"{name} bank {b}: the program differs from FixedClusters")
            (with_ref if gold._since_refresh == 0 else without).append(mach.cycles - start)
        counts = with_ref + without
        out["banks"].append({"dim": d, "mean": float(np.mean(counts)), "max": int(max(counts)),
                             "mean_with_refresh": float(np.mean(with_ref)) if with_ref else None,
                             "mean_without_refresh": float(np.mean(without)) if without else None,
                             "mean_gateware_cycles": float(np.mean(cycles))})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=40, help="samples per bank (default 40)")
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples must be ≥ 1")
    results = [measure(name, dims, args.samples) for name, dims in CASES]
    path = Path(__file__).parent / "results" / "microcode_loco.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"samples_per_bank": args.samples, "results": results}, indent=2) + "\n")
    print("| preset | program (instructions) | data words | bank: dim | instructions / sample: mean | max | "
          "with a refresh | without | gateware cycles / sample: mean |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for bk in r["banks"]:
            fmt = lambda x: "—" if x is None else f"{x:,.0f}"
            print(f"| {r['preset']} | {r['instructions']:,} | {r['data_words']:,} | {bk['dim']} | {fmt(bk['mean'])} "
                  f"| {bk['max']:,} | {fmt(bk['mean_with_refresh'])} | {fmt(bk['mean_without_refresh'])} "
                  f"| {fmt(bk['mean_gateware_cycles'])} |")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
