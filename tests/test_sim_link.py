"""Protocol robustness on the simulated LinkTestTop (cocotb on Verilator): random and mutated frames,
byte for byte against the Python reference, read-backs after every rejected state-changing frame."""

import json

import pytest

from loco_fpga.hdl.link import LinkTestTop
from loco_fpga.sim import harness
from loco_fpga.sim.virtual import FEEDER_PARAMS, TOP_PARAMS, ByteFeederTop

#: cases in the default run (each one frame, mutated or not, or one busy case with two)
CASES = 10_000


def _run(tmp_path, simulator, cases, seed):
    harness.require_simulator(simulator)
    built = harness.build(lambda: ByteFeederTop(LinkTestTop(**TOP_PARAMS), **FEEDER_PARAMS),
                          name="link_test_top_feeder", params={**TOP_PARAMS, **FEEDER_PARAMS}, simulator=simulator)
    stats_file = tmp_path / "stats.json"
    harness.run(built, "loco_fpga.sim.benches.link", testcase="robustness",
                params={"seed": seed, "cases": cases, "stall": 0.125, "stats_file": str(stats_file)})
    return json.loads(stats_file.read_text())


def test_link_survives_random_and_mutated_frames(tmp_path):
    stats = _run(tmp_path, "verilator", CASES, seed=1)
    assert stats["cases"] == CASES and stats["mismatches"] == 0
    assert stats["rejected"] > CASES // 4 and stats["accepted"] > CASES // 4       # both kinds exercised
    assert stats["busy_replies"] > 0 and stats["timeouts_fired"] > 0
    print(json.dumps({k: stats[k] for k in ("cases", "accepted", "rejected", "snapshots", "busy_cases",
                                            "busy_replies", "timeouts_fired", "cycles", "seconds")}))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_link_survives_more_frames(tmp_path, seed):
    stats = _run(tmp_path, "verilator", 50_000, seed=seed)
    assert stats["mismatches"] == 0
