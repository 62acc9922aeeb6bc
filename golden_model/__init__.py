"""The NumPy golden model of loco-fpga: rate network, learning rules, data sets, training loop.

Pure NumPy, no simulator imports. ``loco_fpga.golden_model`` is what the HDL is checked against.
"""

from .datasets import Dataset, DatasetError, load_dataset
from .network import RateNetwork
from .rules import make_rule
from .train import TrainResult, train

__all__ = ["Dataset", "DatasetError", "load_dataset", "RateNetwork", "make_rule", "TrainResult", "train"]
