"""cocotb benches, simulator runner glue and the virtual board (``loco_fpga.sim``)."""
