"""Amaranth components of the LOCO accelerator (``loco_fpga.hdl``)."""
