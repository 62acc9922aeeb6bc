# amaranth: UnusedElaboratable=no
"""DFA training in hardware (``Network(update="dfa")``) in the Amaranth simulator: after every training step the
clean forward results (hidden counts, y) and every weight (``rd_*``) equal ``FixedRule.step_q``'s with
``rule.name = "dfa"`` (output error e = η·2(y − t)/n_L on the output layer; δ = narrow((B_l e)·fb)·1[0 < c < T]
on hidden layer l, B_l regenerated from PRNG lane (DFA, l)); the schedule; errors. The noisy column, Δy, dl and g
on ``o`` are not part of DFA (the model runs both columns without noise; the gateware's noisy column is ignored)."""

import random

import numpy as np
import pytest

from loco_fpga.config import preset
from loco_fpga.hdl.network import Network
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.network import decode_results, random_stimulus
from loco_fpga.sim.benches.update import compare_weights, train_trace

from test_hdl_update_loco import run_back_to_back, run_training


def dfa_config(*, arch, steps, encoder="deterministic", neuron="if", seed=0, rounding="stochastic",
               feedback_seed=7, output_update="perturb"):
    return preset("up5k").replace(network={"arch": arch}, train={"seed": seed},
                                  spiking={"steps": steps, "encoder": encoder, "neuron": neuron, "leak_shift": 3,
                                           "threshold": 0.5},
                                  rule={"name": "dfa", "sigma": 2.0 ** -3, "feedback_seed": feedback_seed,
                                        "output_update": output_update},
                                  fixed={"update_rounding": rounding})


def first_difference(net, n, got, want):
    res = decode_results(net, got["counts_raw"], got["o_raw"], 1)[0]
    for l in range(net.n_layers - 1):
        diff = np.flatnonzero(res["counts"][l][0] != want["fwd"]["counts"][l][0])
        if len(diff):
            i = int(diff[0])
            return (f"clean count differs at step {n}, layer {l}, neuron {i}: HDL {res['counts'][l][0][i]}, "
                    f"model {want['fwd']['counts'][l][0][i]}")
    diff = np.flatnonzero(res["y"] != want["fwd"]["y"])
    if len(diff):
        return f"y differs at step {n}, output {int(diff[0])}"
    _, errors = compare_weights(got["weights"], want["weights"], n)
    return errors[0] if errors else None


CASES = [  # arch, lanes, T, encoder, neuron, rounding, idle/stall, feedback seed, output_update
    ((5, 6, 3), 2, 4, "bernoulli", "if", "stochastic", 0.3, 7, "perturb"),
    ((3, 2), 4, 8, "deterministic", "if", "half-up", 0.0, 1, "perturb"),
    ((4, 5, 4, 3), 1, 4, "deterministic", "lif", "stochastic", 0.2, 99, "perturb"),
    ((6, 34, 2), 5, 8, "deterministic", "if", "trunc", 0.1, 3, "perturb"),
    ((2, 3, 3, 3, 5), 2, 2, "bernoulli", "lif", "stochastic", 0.2, 12345, "perturb"),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_dfa_training_equals_the_model(case):
    arch, lanes, steps, encoder, neuron, rounding, noise, fseed, output_update = CASES[case]
    config = dfa_config(arch=arch, steps=steps, encoder=encoder, neuron=neuron, seed=700 + case,
                        rounding=rounding, feedback_seed=fseed, output_update=output_update)
    net = Network.from_config(config, lanes=lanes, update="dfa")
    weights, samples = random_stimulus(config, 10, np.random.default_rng(61 + case))
    want = train_trace(config, weights, samples)
    got = run_training(net, config, weights, samples, idle=noise, stall=noise, rng=random.Random(case))
    changed = 0
    for n, (g, w) in enumerate(zip(got, want)):
        problem = first_difference(net, n, g, w)
        assert problem is None, problem
        before = weights if n == 0 else want[n - 1]["weights"]
        changed += sum(int(np.sum(a != b)) for a, b in zip(w["weights"], before))
    assert changed > 0                                        # the steps did update weights


@pytest.mark.parametrize("arch,lanes,steps", [((5, 6, 3), 2, 4), ((4, 7, 5, 3), 3, 2)])
def test_schedule_with_dfa(arch, lanes, steps):
    """Back-to-back DFA samples: every first/last ``x`` transfer and every ``last`` on ``o`` at the cycle
    ``schedule()`` gives (the feedback units' and update engines' published cycles)."""
    check_schedule(dfa_config(arch=arch, steps=steps, seed=5), lanes, "dfa")


def check_schedule(config, lanes: int, update: str, samples: int = 5):
    """Back-to-back samples of ``Network.from_config(config, update=update)``: every first/last ``x`` transfer
    and every ``last`` on ``o`` happen in the cycles ``schedule()`` gives (also used for LLS)."""
    net = Network.from_config(config, lanes=lanes, update=update)
    weights, stimulus = random_stimulus(config, samples, np.random.default_rng(8))
    x_cycles, o_last, _ = run_back_to_back(net, config, weights, stimulus, None)
    sched = net.schedule(samples)
    base, n0 = x_cycles[0], config.network.arch[0]
    assert [c - base for c in x_cycles[::n0]] == list(sched.first_x)
    assert [c - base for c in x_cycles[n0 - 1::n0]] == list(sched.last_x)
    assert [c - base for c in o_last] == list(sched.loss_done)


def test_dfa_parameters():
    cfg = dfa_config(arch=(4, 3, 2), steps=4)
    with pytest.raises(ValueError, match=r"fb = -1: must be an integer"):
        Network(arch=(4, 3, 2), lanes=1, formats=formats(cfg), update="dfa", fb=-1)
    net = Network.from_config(cfg, lanes=2, update="dfa")
    assert net.seed_map[-1] == (3, 0)                          # (DFA, DFA_LANE + 0): rule.feedback_seed
    assert "e" in net.updaters[0].signature.members and "g" not in net.updaters[0].signature.members


def test_feedback_parameters():
    from loco_fpga.hdl.feedback import FeedbackUnit, OutputError

    fm = formats(dfa_config(arch=(4, 3, 2), steps=4))
    with pytest.raises(ValueError, match=r"n_rows = 0: must be an integer"):
        FeedbackUnit(formats=fm, n_rows=0, n_err=2, fb=10)
    with pytest.raises(ValueError, match=r"n_err = 0: must be an integer"):
        FeedbackUnit(formats=fm, n_rows=3, n_err=0, fb=10)
    with pytest.raises(ValueError, match=rf"fb = {fm.fb.max + 1}: must be an integer"):
        FeedbackUnit(formats=fm, n_rows=3, n_err=2, fb=fm.fb.max + 1)
    with pytest.raises(TypeError, match=r"formats = None"):
        OutputError(formats=None, n_out=2)
    with pytest.raises(ValueError, match=r"n_out = 0: must be an integer"):
        OutputError(formats=fm, n_out=0)
