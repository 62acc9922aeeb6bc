# amaranth: UnusedElaboratable=no
"""LLS training in hardware (``Network(update="lls")``) in the Amaranth simulator: after every training step the
clean forward results (hidden counts, y) and every weight (``rd_*``) equal ``FixedRule.step_q``'s with
``rule.name = "lls"`` (output error e = η·2(y − t)/n_L on the output layer; hidden layer l's e from its
:class:`~loco_fpga.hdl.lls.LocalErrorUnit`, the integer local loss against the square-wave basis); the schedule;
errors. As for DFA, the noisy column, Δy, dl and g on ``o`` are not part of the rule."""

import random

import numpy as np
import pytest

from loco_fpga.config import preset
from loco_fpga.hdl.network import Network
from loco_fpga.sim.benches.network import random_stimulus
from loco_fpga.sim.benches.update import train_trace

from test_hdl_update_dfa import check_schedule, first_difference
from test_hdl_update_loco import run_training


def lls_config(*, arch, steps, encoder="deterministic", neuron="if", seed=0, rounding="stochastic", tau=0.5):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"name": "lls", "sigma": 2.0 ** -3, "lls_temperature": tau},
                                  fixed={"update_rounding": rounding})


CASES = [  # arch, lanes, T, encoder, neuron, rounding, idle/stall, τ
    ((5, 6, 3), 2, 4, "bernoulli", "if", "stochastic", 0.3, 0.5),
    ((3, 4, 2), 4, 8, "deterministic", "if", "half-up", 0.0, 1.0),
    ((4, 5, 4, 3), 1, 4, "deterministic", "lif", "stochastic", 0.2, 0.25),
    ((6, 12, 4), 5, 8, "deterministic", "if", "trunc", 0.1, 0.5),
    ((2, 3, 3, 3, 5), 2, 4, "bernoulli", "lif", "stochastic", 0.2, 0.5),
]


#: the default run trains cases 0, 1 and 3 (~35 s each in the Amaranth simulator); the cocotb bench
#: (tests/test_sim_lls.py) trains 5 random configurations × 10 steps on Verilator in the default run
SLOW_CASES = (2, 4)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c
                                  for c in range(len(CASES))])
def test_lls_training_equals_the_model(case):
    arch, lanes, steps, encoder, neuron, rounding, noise, tau = CASES[case]
    config = lls_config(arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=900 + case,
                        rounding=rounding, tau=tau)
    net = Network.from_config(config, lanes=lanes, update="lls")
    weights, samples = random_stimulus(config, 10, np.random.default_rng(71 + case))
    want = train_trace(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=noise, stall=noise, rng=random.Random(case))
    changed = [0] * (len(arch) - 1)
    for n, (g, w) in enumerate(zip(got, want)):
        problem = first_difference(net, n, g, w)
        assert problem is None, problem
        before = weights if n == 0 else want[n - 1]["weights"]
        for l, (a, b) in enumerate(zip(w["weights"], before)):
            changed[l] += int(np.sum(a != b))
    assert any(changed[:-1]), changed                 # hidden weights moved by their local error


@pytest.mark.parametrize("arch,lanes,steps", [((5, 6, 3), 2, 4), ((4, 7, 5, 3), 3, 2)])
def test_schedule_with_lls(arch, lanes, steps):
    """Back-to-back LLS samples: every first/last ``x`` transfer and every ``last`` on ``o`` at the cycle
    ``schedule()`` gives (the local error units' and update engines' published cycles)."""
    check_schedule(lls_config(arch=arch, steps=steps, seed=5), lanes, "lls")


def test_lls_parameters():
    cfg = lls_config(arch=(4, 3, 2), steps=4)
    with pytest.raises(ValueError, match=r"tau_shift = 17: must be an integer"):
        Network(arch=(4, 3, 2), lanes=1, formats=Network.from_config(cfg, lanes=1).formats, update="lls",
                tau_shift=17)
    net = Network.from_config(cfg, lanes=2, update="lls")
    assert "e" in net.updaters[0].signature.members and "g" not in net.updaters[0].signature.members
    with pytest.raises(ValueError, match=r"rule.name = 'lls': the network was asked for update = 'dfa'"):
        Network.from_config(cfg, lanes=1, update="dfa")
