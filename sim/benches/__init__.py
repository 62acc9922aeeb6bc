"""cocotb bench modules (run by :func:`loco_fpga.sim.harness.run`, never imported by pytest directly).

Each bench is driver → monitor → golden model → in-order checker and ends with zero mismatches.
"""

from __future__ import annotations

import json
import os

PARAMS_ENV = "LOCO_BENCH_PARAMS"   # the same name as loco_fpga.sim.harness.PARAMS_ENV (kept import-free)


def bench_params() -> dict:
    """The parameters :func:`loco_fpga.sim.harness.run` handed to this bench (JSON object)."""
    text = os.environ.get(PARAMS_ENV)
    if text is None:
        raise RuntimeError(f"{PARAMS_ENV} is not set: run benches through loco_fpga.sim.harness.run")
    return json.loads(text)
