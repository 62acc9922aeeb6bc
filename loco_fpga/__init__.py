"""loco-fpga: on-chip local learning (LOCO) for spiking neural networks on open-toolchain FPGAs."""

__version__ = "0.1.0"
