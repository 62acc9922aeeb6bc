"""Area of the microcode sequencer (hdl/sequencer.py) on an iCE40 UP5K, out of context.

    python benchmarks/sequencer_area.py [--design random|up5k] [--digit 16] [--pnr] [--build-dir …]

``--design random`` (default), the representative size: a 512-instruction ROM of random valid instructions
(seeded), a 1024-word data memory, SAT widths (16, 30). ``--design up5k``: the real thing for the UP5K —
``MicroClusterBlock`` (hdl/micro_clusters.py) of the ``up5k`` preset's two layers (widths 65 and 33), the LOCO
program and its data memory, with the ``ClusterBlock`` ports. Two numbers:

* **Yosys** (``synth_ice40 -dsp``) of the bare ``Sequencer`` as the top module: its ports stay top-level ports,
  so the counts are the design's own cells — SB_LUT4, SB_CARRY, flip-flops (every SB_DFF* kind), SB_MAC16,
  SB_RAM40_4K — with no wrapper logic;
* with ``--pnr``, the out-of-context build of ``boards/synth.py`` (:func:`~loco_fpga.boards.synth.synthesize`:
  a one-pin serial wrapper around the ports, nextpnr for the UP5K at 24 MHz): logic cells (LUT4 and flip-flop
  sharing a cell count once) and the routed Fmax; the wrapper's ``wrapper_ffs`` flip-flops and up to one LUT
  per input bit are included there.

Writes ``benchmarks/results/sequencer_area.json`` (``--design up5k``: ``sequencer_area_up5k.json``).
"""

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil

from loco_fpga.hdl.microcode import ADDR_BITS, Cond, Instr, MulMode, Op, Reg, Shift
from loco_fpga.hdl.sequencer import Sequencer, op_cycles
from loco_fpga.toolchain import setup_tool_environment

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "benchmarks" / "results" / "sequencer_area.json"
ROM_WORDS, DEPTH, WIDTHS = 512, 1024, (16, 30)


def random_code(n: int, seed: int = 1) -> list[Instr]:
    """``n`` random instructions, every field in its valid range (never executed: only the ROM's contents)."""
    rng = random.Random(seed)
    code = []
    for _ in range(n):
        op = rng.choice(list(Op))
        kw = {}
        if op in (Op.LD, Op.ST, Op.ADD, Op.SUB, Op.MUL):
            kw.update(imm=rng.randrange(DEPTH), ux=rng.random() < 0.5, uy=rng.random() < 0.5)
            if op != Op.ST:
                kw["s"] = int(op != Op.LD and rng.random() < 0.5)
            if op == Op.LD:
                kw["r"] = rng.choice(list(Reg))
        if op == Op.LDI:
            kw.update(r=rng.choice(list(Reg)), imm=rng.randrange(-(1 << 19), 1 << 19), high=rng.random() < 0.5)
        if op == Op.MOV:
            kw.update(r=rng.choice(list(Reg)), s=rng.choice(list(Reg)))
        if op == Op.SHIFT:
            kw["s"] = rng.choice(list(Shift))
        if op == Op.SAT:
            kw["s"] = rng.randrange(len(WIDTHS))
        if op == Op.BR:
            kw["s"] = rng.choice(list(Cond))
        if op in (Op.SETL, Op.DJNZ) or op.name == "MOVL":
            kw["s"] = rng.randrange(4)
        if op in (Op.SETX, Op.SETY, Op.ADDX, Op.ADDY, Op.SETL):
            kw["imm"] = rng.randrange(1 << ADDR_BITS)
        if op in (Op.DJNZ, Op.JMP, Op.BR, Op.CALL):
            kw["imm"] = rng.randrange(n)
        if op == Op.MUL:
            kw.update(mode=rng.choice(list(MulMode)), bi=rng.randrange(4), bs=rng.random() < 0.5,
                      qj=rng.randrange(4), qs=rng.random() < 0.5)
        code.append(Instr(op, **kw))
    return code


def yosys_cells(design, build: Path) -> dict[str, int]:
    """Cell counts of ``synth_ice40 -dsp`` with ``design`` as the top module."""
    setup_tool_environment()
    build.mkdir(parents=True, exist_ok=True)
    (build / "sequencer.il").write_text(rtlil.convert(design, name="sequencer"))
    (build / "synth.ys").write_text("read_rtlil sequencer.il\nsynth_ice40 -dsp -top sequencer\n"
                                    "tee -q -o stat.json stat -json\n")
    with open(build / "synth.log", "w") as log:
        subprocess.run(os.environ["YOSYS"].split() + ["-q", "-s", "synth.ys"], cwd=build, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    stat = json.loads((build / "stat.json").read_text())
    design_stat = stat.get("design") or stat["modules"]["\\sequencer"]
    return {name: int(n) for name, n in design_stat["num_cells_by_type"].items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", choices=("random", "up5k"), default="random",
                    help="random: the bare sequencer with a random 512-word program; up5k: MicroClusterBlock of "
                         "the up5k preset (default: random)")
    ap.add_argument("--digit", type=int, default=16, help="datapath digit width (16, 32 or 64)")
    ap.add_argument("--pnr", action="store_true", help="also place and route (out of context, nextpnr)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "sequencer_area"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    args = ap.parse_args(argv)

    def make():
        if args.design == "up5k":
            from loco_fpga.config import preset
            from loco_fpga.hdl.micro_clusters import MicroClusterBlock
            return MicroClusterBlock.from_config(preset("up5k"), [65, 33], digit=args.digit)
        return Sequencer(random_code(ROM_WORDS), depth=DEPTH, widths=WIDTHS, digit=args.digit)

    build = Path(args.build_dir) / f"{args.design}-digit{args.digit}"
    if args.design == "up5k":
        from loco_fpga.config import preset
        from loco_fpga.hdl.loco_program import LocoProgram
        prog = LocoProgram.from_config(preset("up5k"), [65, 33])
        design_info = {"design": "MicroClusterBlock(preset('up5k'), [65, 33])",
                       "rom_words": len(prog.code), "depth": prog.depth,
                       "widths": list(prog.widths), "digit": args.digit}
    else:
        design_info = {"rom_words": ROM_WORDS, "depth": DEPTH, "widths": list(WIDTHS), "digit": args.digit}
    start = time.monotonic()
    cells = yosys_cells(make(), build / "yosys")
    ffs = sum(n for cell, n in cells.items() if cell.startswith("SB_DFF"))
    out = {
        "date": datetime.date.today().isoformat(),
        "design": design_info,
        "cycles": {op.name: op_cycles(op, digit=args.digit) for op in Op},
        "yosys": {"command": "synth_ice40 -dsp", "SB_LUT4": cells.get("SB_LUT4", 0),
                  "SB_CARRY": cells.get("SB_CARRY", 0), "flip_flops": ffs,
                  "SB_MAC16": cells.get("SB_MAC16", 0), "SB_RAM40_4K": cells.get("SB_RAM40_4K", 0),
                  "lut4_plus_ff": cells.get("SB_LUT4", 0) + ffs, "cells": cells,
                  "seconds": round(time.monotonic() - start, 1)},
    }
    if args.pnr:
        from loco_fpga.boards.synth import synthesize
        result = synthesize(make(), part="up5k-sg48", freq_mhz=24, build_dir=build / "pnr", dsp=True,
                            check_timing=False)
        out["pnr"] = {"part": result.part, "logic_cells": result.resources.get("lc", (0, 0))[0],
                      "wrapper_ffs": result.wrapper_ffs, "fmax_mhz": round(result.fmax_mhz, 2),
                      "resources": {k: {"used": u, "available": a} for k, (u, a) in result.resources.items()},
                      "seconds": result.seconds}
    print(json.dumps(out, indent=2))
    if not args.no_write:
        path = OUT_JSON if args.design == "random" else OUT_JSON.with_name(f"sequencer_area_{args.design}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
