# amaranth: UnusedElaboratable=no
"""The delta readout in hardware (``rule.output_update = "delta"``, ``Network(output_delta=True)``) for NP and
LOCO in the Amaranth simulator: the output layer is not perturbed and learns from e = η·2(y − t)/n_L with the
clean last-hidden counts as v (projected under LOCO), the hidden layers from g as before. After every training
step the forward results (incl. ỹ, Δy, dl, g), every weight and, for LOCO, every layer's k*, v⊥, count,
prototypes, r_k and H equal ``FixedRule.step_q``'s; the schedule; errors."""

import random

import numpy as np
import pytest

from loco_fpga.config import preset
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.loco import check_step
from loco_fpga.sim.benches.network import random_stimulus
from loco_fpga.sim.benches.update import train_trace

from test_hdl_update_loco import cluster_events, run_back_to_back, run_training


def delta_config(*, rule, arch, steps, encoder="deterministic", neuron="if", seed=0, rounding="stochastic",
                 mask=False, clusters=3, refresh=1):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"name": rule, "sigma": 2.0 ** -3, "mask": mask, "clusters": clusters,
                                        "refresh": refresh, "ridge": 2.0 ** -6, "output_update": "delta"},
                                  fixed={"update_rounding": rounding})


CASES = [  # rule, arch, lanes, T, encoder, neuron, rounding, mask, K, N_ref, idle/stall
    ("np", (5, 6, 3), 2, 4, "bernoulli", "if", "stochastic", False, 1, 1, 0.3),
    ("np", (4, 5, 4, 3), 1, 8, "deterministic", "lif", "half-up", True, 1, 1, 0.1),
    ("np", (3, 2), 4, 4, "deterministic", "if", "trunc", False, 1, 1, 0.0),
    ("loco", (5, 6, 3), 2, 4, "deterministic", "if", "stochastic", True, 3, 1, 0.2),
    ("loco", (4, 5, 4, 3), 3, 8, "bernoulli", "lif", "stochastic", True, 4, 2, 0.3),
]


#: the default run trains NP case 0 and both LOCO cases (~35 s each in the Amaranth simulator)
SLOW_CASES = (1, 2)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c
                                  for c in range(len(CASES))])
def test_delta_readout_training_equals_the_model(case):
    rule, arch, lanes, steps, encoder, neuron, rounding, mask, K, n_ref, noise = CASES[case]
    config = delta_config(rule=rule, arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=300 + case,
                          rounding=rounding, mask=mask, clusters=K, refresh=n_ref)
    net = Network.from_config(config, lanes=lanes, update=rule)
    assert net.updaters[-1].errors and not any(u.errors for u in net.updaters[:-1])
    weights, samples = random_stimulus(config, 8, np.random.default_rng(31 + case))
    want = train_trace(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=noise, stall=noise, rng=random.Random(case))
    for n, (g, w) in enumerate(zip(got, want)):
        _, problem = check_step(net, n, g, w)
        assert problem is None, problem
    out_changed = sum(int(np.sum(a["weights"][-1] != b["weights"][-1])) for a, b in zip(want[1:], want[:-1]))
    assert out_changed > 0                                       # the output layer learned from its error


@pytest.mark.parametrize("rule", ["np", "loco"])
def test_schedule_with_delta_readout(rule):
    config = delta_config(rule=rule, arch=(5, 6, 3), steps=4, seed=5, clusters=3)
    net = Network.from_config(config, lanes=2, update=rule)
    n = 5
    weights, samples = random_stimulus(config, n, np.random.default_rng(8))
    want = train_trace(config, weights, samples) if rule == "loco" else None
    events = cluster_events(want, [0, 0]) if rule == "loco" else None
    x_cycles, o_last, _ = run_back_to_back(net, config, weights, samples, None)
    sched = net.schedule(n, events) if rule == "loco" else net.schedule(n)
    base, n0 = x_cycles[0], 5
    assert [c - base for c in x_cycles[::n0]] == list(sched.first_x)
    assert [c - base for c in x_cycles[n0 - 1::n0]] == list(sched.last_x)
    assert [c - base for c in o_last] == list(sched.loss_done)


def test_delta_readout_parameters():
    fm = formats(delta_config(rule="np", arch=(4, 3, 2), steps=4))
    with pytest.raises(ValueError, match=r"output_delta = True: the delta readout applies to update 'np' and "
                                         r"'loco', not 'dfa'"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="dfa", output_delta=True)
    with pytest.raises(ValueError, match=r"output_delta = 1: must be True or False"):
        Network(arch=(4, 3, 2), lanes=1, formats=fm, update="np", output_delta=1)
