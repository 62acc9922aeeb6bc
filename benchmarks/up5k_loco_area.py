"""Where the logic cells of the iCEBreaker's LOCO build go (issue 6's UP5K must-show; it fits since session 16).

    python benchmarks/up5k_loco_area.py [--build-dir DIR] [--seed N]

Builds the accelerator for the ``up5k`` preset with its LOCO rule on one microcoded cluster block for both layers,
as ``loco-fpga build --board icebreaker --config up5k.json --cluster-impl micro --cluster-share 2`` does, and
reports two views of the same RTLIL:

* **the whole design** (what decides whether it fits): nextpnr's packed logic cells (``ICESTORM_LC``, a LUT4 and a
  flip-flop sharing a cell count once), block RAMs and DSPs against the UP5K's, read from nextpnr's log whether or
  not the placer found room, Yosys' flat cell counts and, when it routes, the routed Fmax at the board's 24 MHz;
* **per module**: Yosys ``synth_ice40 -dsp -noflatten`` with the build's collision-free marks (without the build's
  ``-dff``: abc9 exits with an error on this design unflattened) — each module's own SB_LUT4, flip-flops, SB_CARRY,
  SB_RAM40_4K, SB_MAC16 and SB_SPRAM256KA. Unflattened, Yosys cannot optimise across module ports (a port nobody
  reads keeps its logic), so the modules add up to more than the flat design: this view says *where*, the first
  one *how much*.

Writes ``benchmarks/results/up5k_loco_area.json`` and ``.md``. Takes ≈ 5 minutes (Yosys twice, nextpnr).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "results" / "up5k_loco_area.json"
OUT_MD = OUT_JSON.with_suffix(".md")
#: Yosys cell types counted per module, by report key
CELLS = {"lut": ("SB_LUT4",), "carry": ("SB_CARRY",), "ebr": ("SB_RAM40_4K",), "dsp": ("SB_MAC16",),
         "spram": ("SB_SPRAM256KA",)}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def module_cells(stat_text: str) -> dict:
    """Yosys ``stat`` (text) of an unflattened design: {module: {kind: count}} with ``ff`` = every SB_DFF* cell."""
    out = {}
    blocks = re.split(r"^=== (.*) ===$", stat_text, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        counts = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(SB_\w+)", body, flags=re.M)}
        row = {kind: sum(counts.get(t, 0) for t in types) for kind, types in CELLS.items()}
        row["ff"] = sum(v for k, v in counts.items() if k.startswith("SB_DFF"))
        if name != "design hierarchy" and any(row.values()):
            out[name.removeprefix("top.core.inner.").removeprefix("top.")] = row
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", help="where the build goes (default: a temporary directory)")
    parser.add_argument("--seed", type=int, help="nextpnr placement seed (default: the board's)")
    args = parser.parse_args(argv)

    from loco_fpga.boards.build import build_board, utilisation
    from loco_fpga.boards.synth import SynthesisError
    from loco_fpga.boards.tops import BOARDS, board_inner
    from loco_fpga.config import preset
    from loco_fpga.toolchain import setup_tool_environment

    setup_tool_environment()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.build_dir or tmp)
        start = time.monotonic()
        inner, config = board_inner(BOARDS["icebreaker"], preset("up5k"), cluster_impl="micro", cluster_share=2)
        fits = True
        try:
            build_board("icebreaker", out_dir=out, config=config, inner=inner, check_timing=False, seed=args.seed,
                        progress=lambda text: print(f"[{time.monotonic() - start:4.0f} s] {text}", file=sys.stderr))
        except SynthesisError:
            fits = False            # the placer found no room; its log still has the packed counts
        used = utilisation((out / "top.tim").read_text(errors="replace"))
        flat = json.loads((out / "stat.json").read_text())["modules"]["\\top"]["num_cells_by_type"]
        # per module: the build's script up to its synthesis, then an unflattened one
        script = [line for line in (out / "top.ys").read_text().splitlines()
                  if line and not line.startswith(("synth_ice40", "tee", "write_json", "#"))]
        script += ["synth_ice40 -dsp -noflatten -top top", "tee -q -o modules.txt stat"]
        (out / "modules.ys").write_text("\n".join(script) + "\n")
        with open(out / "modules.log", "w") as log:
            subprocess.run(os.environ["YOSYS"].split() + ["-q", "-s", "modules.ys"], cwd=out, stdout=log,
                           stderr=subprocess.STDOUT, check=True)
        modules = module_cells((out / "modules.txt").read_text())
        report = json.loads((out / "report.json").read_text()) if fits and (out / "report.json").exists() else None
        seconds = time.monotonic() - start

    lc_used, lc_avail = used["ICESTORM_LC"]
    result = {
        "benchmark": "up5k_loco_area", "date": datetime.date.today().isoformat(), "commit": _git_commit(),
        "design": "icebreaker, up5k preset, LOCO, --cluster-impl micro --cluster-share 2"
                  + (f" --seed {args.seed}" if args.seed is not None else ""),
        "fits": fits and lc_used <= lc_avail,
        "packed": {bel: {"used": u, "available": a} for bel, (u, a) in used.items() if u},
        "logic_cells_over": max(0, lc_used - lc_avail),
        "fmax_mhz": report["fmax_mhz"] if report else None,
        "clock_mhz": report["clock"]["mhz"] if report else None,
        "timing_met": report["met"] if report else None,
        "yosys_flat": {kind: sum(flat.get(t, 0) for t in types) for kind, types in CELLS.items()}
        | {"ff": sum(v for k, v in flat.items() if k.startswith("SB_DFF"))},
        "modules_noflatten": dict(sorted(modules.items(), key=lambda kv: -kv[1]["lut"])),
        "seconds": round(seconds),
    }
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# UP5K LOCO build: where the logic cells go ({result['date']}, {result['commit']})", "",
             f"{result['design']}: nextpnr packs **{lc_used:,} / {lc_avail:,} logic cells** "
             f"({100 * lc_used / lc_avail:.0f} %)" + ("" if result["fits"] else
                                                      f", {result['logic_cells_over']:,} too many") + "; "
             + ", ".join(f"{bel} {u} / {a}" for bel, (u, a) in used.items() if u and bel != "ICESTORM_LC") + "."
             + (f" Routed Fmax {result['fmax_mhz']:.2f} MHz at {result['clock_mhz']:.0f} MHz "
                f"({'met' if result['timing_met'] else 'not met'})." if report else ""),
             "", "Per module (`synth_ice40 -noflatten`; modules add up to more than the flat design):", "",
             "| module | SB_LUT4 | FF | SB_CARRY | EBR | MAC16 | SPRAM |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in result["modules_noflatten"].items():
        lines.append(f"| {name} | {row['lut']} | {row['ff']} | {row['carry']} | {row['ebr']} | {row['dsp']} | "
                     f"{row['spram']} |")
    OUT_MD.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
