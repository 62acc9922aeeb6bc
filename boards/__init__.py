"""Board platforms, board tops and the host driver (``loco_fpga.boards``)."""
