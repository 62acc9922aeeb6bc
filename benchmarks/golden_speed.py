"""Training throughput of the float golden model (per-sample updates) on this CPU.

Writes ``benchmarks/results/golden_speed.json`` and the table in ``docs/benchmarks.md`` (between the
``golden_speed`` markers). Inputs are synthetic uniform [0, 1] vectors with random labels: throughput
does not depend on what is learned. Each measurement trains for at least ``--seconds`` of wall time
after a warm-up, single-threaded BLAS recommended (set OMP_NUM_THREADS=1 for stable numbers).

    python benchmarks/golden_speed.py [--seconds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from loco_fpga.config import Config
from loco_fpga.golden_model.network import RateNetwork, one_hot
from loco_fpga.golden_model.rules import make_rule

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = [(64, 100, 100, 10), (784, 500, 500, 10)]
RULES = ["np", "loco", "bp"]


def measure(arch, rule_name, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    cfg = Config().replace(network={"arch": arch}, rule={"name": rule_name, "lr": 1e-3})
    net = RateNetwork(cfg.network, rng)
    rule = make_rule(net, cfg.rule, np.random.default_rng(1))
    n = 512
    x = rng.random((n, arch[0]))
    t = one_hot(rng.integers(0, arch[-1], n), arch[-1])
    for i in range(min(n, 64)):  # warm-up: fills LOCO's prototypes, touches every code path
        rule.step(x[i], t[i], 1e-3)
    done, start = 0, time.perf_counter()
    while True:
        i = done % n
        rule.step(x[i], t[i], 1e-3)
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 20:
            break
    return {"arch": "-".join(map(str, arch)), "rule": rule_name, "samples": done,
            "seconds": round(elapsed, 3), "samples_per_s": round(done / elapsed, 1),
            "us_per_sample": round(1e6 * elapsed / done, 1)}


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["| network | rule | samples/s | µs per sample | cost vs np |", "|---|---|---:|---:|---:|"]
    by = {(r["arch"], r["rule"]): r for r in results}
    for r in results:
        base = by.get((r["arch"], "np"))
        rel = f"{base['samples_per_s'] / r['samples_per_s']:.2f}×" if base else "–"
        lines.append(f"| {r['arch']} | {r['rule']} | {r['samples_per_s']:,.0f} | {r['us_per_sample']:,.1f} | {rel} |")
    lines.append("")
    lines.append(f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} cores, 1-min load average "
                 f"{meta['load_average_1min']} at the end), Python {meta['python']}, "
                 f"NumPy {meta['numpy']}; one update per sample (clean + noisy pass + update for np/loco, "
                 f"forward + backward for bp); `python benchmarks/golden_speed.py`.")
    return "\n".join(lines)


def write_docs(table: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    begin, end = "<!-- golden_speed:begin -->", "<!-- golden_speed:end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Golden-model training throughput\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement (default 3)")
    ap.add_argument("--quick", action="store_true", help="0.3 s per measurement, no docs update")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "golden_speed.json"))
    args = ap.parse_args()
    seconds = 0.3 if args.quick else args.seconds
    results = []
    for arch in NETWORKS:
        for rule in RULES:
            r = measure(arch, rule, seconds)
            print(f"{r['arch']:>16s} {r['rule']:>5s} {r['samples_per_s']:>10,.0f} samples/s", flush=True)
            results.append(r)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_1min": round(os.getloadavg()[0], 2)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    if not args.quick:
        write_docs(markdown(results, meta))
        print(f"updated {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
