"""Shared pytest setup: one BLAS thread per process (the suite runs on 2 xdist workers and the tiny
per-sample matrices gain nothing from threads; oversubscription made it many times slower), and the
wheel-installed simulators and synthesis tools put on PATH once."""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from loco_fpga.toolchain import setup_tool_environment

setup_tool_environment()
