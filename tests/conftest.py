"""Shared pytest setup: the wheel-installed simulators and synthesis tools are put on PATH once."""

from loco_fpga.toolchain import setup_tool_environment

setup_tool_environment()
