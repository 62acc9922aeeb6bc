"""cocotb bench of LOCO training in hardware (``Network(update="loco")``) against ``FixedRule.step_q``: random
configurations (the network bench's random up5k variations — depth 1–4 weight layers, widths, LANES, T, IF/LIF,
encoder, Q formats — with rule ``loco``, random K, N_ref, λ, η_c, update rounding, mask and an optional random
prototype load), several per simulation build (:class:`~loco_fpga.sim.benches.loco.Batch`), random data,
random idle cycles on ``x`` and back-pressure on ``counts``/``o``; per training step the forward results, every
layer's k* and v⊥, every weight, and every layer's count, prototypes, r_k and H compared bit for bit."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.network import Network
from loco_fpga.sim import harness
from loco_fpga.sim.benches.loco import Batch

from test_sim_network import full_replace
from test_sim_network import random_config as network_config

#: the update rounding of case k is ROUNDINGS[k % 4] (stochastic, the hardware default, in half the cases)
ROUNDINGS = ("stochastic", "half-up", "stochastic", "trunc")


def random_config(rng: random.Random, case: int, *, depth: int | None = None, max_width: int = 10,
                  wide: float = 0.2, clusters: int | None = None, accept=None) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): a network-bench configuration (``depth``, ``max_width``, ``wide`` as in
    :func:`test_sim_network.random_config`) with rule loco and random cluster parameters (K = ``clusters``, or
    random 1 … 8 when None); redrawn until the config validates (and ``accept``, as in :func:`draw_rule`). The
    defaults give the slow tier's draws."""
    if clusters is not None and (isinstance(clusters, bool) or not isinstance(clusters, int)
                                 or not 1 <= clusters <= 8):
        raise ValueError(f"clusters = {clusters!r}: must be None or an integer in [1, 8]")
    k_lo, k_hi = (1, 8) if clusters is None else (clusters, clusters)
    return draw_rule(rng, case, lambda r: {"name": "loco", "mask": r.random() < 0.5, "clusters": r.randint(k_lo, k_hi),
                                           "refresh": r.choice([1, 1, 2, 3]),
                                           "ridge": r.choice([1e-4, 2.0 ** -6, 2.0 ** -3]),
                                           "proto_lr": 2.0 ** -r.randint(1, 6)},
                     depth=depth, max_width=max_width, wide=wide, accept=accept)


def draw_rule(rng: random.Random, case: int, rule_fields, *, accept=None, **network) -> tuple[dict, int]:
    """(Config.replace arguments, lanes): a network-bench configuration (``network``: keywords of
    :func:`test_sim_network.random_config`) with the rule fields ``rule_fields(rng)`` and the update rounding
    ``ROUNDINGS[case % 4]``; redrawn until ``accept(changes)`` (checked before the rule fields are drawn) holds and
    the config validates. The LOCO, DFA and LLS benches draw their cases with it."""
    while True:
        changes, lanes = network_config(rng, **network)
        if accept is not None and not accept(changes):
            continue
        changes["rule"] = {**changes["rule"], **rule_fields(rng)}
        changes["fixed"] = {**changes["fixed"], "update_rounding": ROUNDINGS[case % len(ROUNDINGS)]}
        try:
            preset("up5k").replace(**changes)
        except ConfigError:
            continue
        return changes, lanes


def bench_case(rng: random.Random, changes: dict, lanes: int, steps: int, *, preload: bool = True) -> dict:
    """A case of the batch bench: the full config, lanes, data seed, steps, idle and stall rates and (``preload``:
    drawn, else False) whether random prototypes are loaded first."""
    return {"config": full_replace(changes), "lanes": lanes, "seed": rng.randrange(1 << 30), "steps": steps,
            "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5]),
            "preload": preload and rng.random() < 0.4}


def make_case(case: int, steps: int) -> dict:
    """Slow-tier draw ``case`` (network-bench ranges: depth 1–4, widths 1–10, 20 % with a 33–36-wide layer,
    K 1–8) as a bench case."""
    rng = random.Random(9600 + case)
    changes, lanes = random_config(rng, case)
    return bench_case(rng, changes, lanes, steps)


#: The default tier's draws. A Verilator build costs about the same per weight layer whatever the widths (each layer
#: has its own cluster block: ≈ 8,700 lines of Verilog per layer at K = 1, plus ≈ 800 per cluster), so the 20
#: default configurations are mostly one-layer networks: draw c has DEFAULT_SHAPES[c] = (weight layers, K, a
#: 33–36-wide hidden layer or not), K 1 … 8 on one layer and up to 4 deeper, other widths 1 … 6. Every other
#: parameter (widths, LANES, T, IF/LIF, encoder, Q formats, θ, σ, N_ref, λ, η_c, mask, rounding, preload,
#: idle, stall) is drawn as in the slow tier.
DEFAULT_SHAPES = ((1, 4, False), (2, 3, True), (1, 6, False), (4, 2, False), (1, 1, False), (1, 8, False),
                  (3, 3, False), (1, 5, False), (2, 1, False), (1, 2, False), (1, 7, False), (1, 3, False),
                  (2, 4, False), (1, 8, False), (1, 6, False), (1, 2, False), (1, 5, False), (1, 1, False),
                  (1, 7, False), (1, 4, False))
DEFAULT_MAX_WIDTH = 6


def make_default_case(case: int, steps: int) -> dict:
    """Default-tier draw ``case`` (0 … 19) as a bench case."""
    depth, clusters, wide = DEFAULT_SHAPES[case]
    rng = random.Random(9700 + case)
    changes, lanes = random_config(rng, case, depth=depth, max_width=DEFAULT_MAX_WIDTH, wide=float(wide),
                                   clusters=clusters)
    return bench_case(rng, changes, lanes, steps)


def _run(specs, simulator: str, name: str):
    harness.require_simulator(simulator)

    def top():
        return Batch([Network.from_config(Config().replace(**s["config"]), lanes=s["lanes"], update="loco",
                                          cluster_share=s.get("cluster_share", 1),
                                          cluster_impl=s.get("cluster_impl", "parallel")) for s in specs])

    hw = [{"config": s["config"], "lanes": s["lanes"]} | {k: s[k] for k in ("cluster_share", "cluster_impl") if k in s}
          for s in specs]
    built = harness.build(top, name=name, params={"parts": hw}, simulator=simulator, top_ports_only=True)
    harness.run(built, "loco_fpga.sim.benches.loco", params={"cases": specs})


#: Default run: the 20 default-tier draws × 20 steps on Verilator, DEFAULT_PER_BUILD per build (built with the top's
#: ports only, harness.build(top_ports_only=True)), and 2 slow-tier draws × 10 steps on Icarus (builds in
#: seconds, simulates these networks at a few k cycles/s). `-m slow` runs 6 slow-tier draws in one build, 5 more on
#: Icarus, then all 40 draws, 5 per build. Build and run times: docs/hdl_learning.md (bench cost).
DEFAULT_CASES = 20
DEFAULT_PER_BUILD = 10
DEFAULT_STEPS = 20
DEFAULT_ICARUS = (5, 17)
SLOW_SIX = (0, 8, 18, 19, 30, 32)


@pytest.mark.parametrize("batch", range(DEFAULT_CASES // DEFAULT_PER_BUILD))
def test_loco_training_bench_verilator(batch):
    cases = range(batch * DEFAULT_PER_BUILD, (batch + 1) * DEFAULT_PER_BUILD)
    _run([make_default_case(c, DEFAULT_STEPS) for c in cases], "verilator", "network-loco")


def test_loco_training_bench_icarus():
    _run([make_case(c, 10) for c in DEFAULT_ICARUS], "icarus", "network-loco")


#: Cluster blocks shared by layers (``cluster_share``): (weight layers, S) of the shared draws — random networks whose
#: weight layers all have one input width (so all may share), every other parameter drawn as in the default tier.
SHARED_SHAPES = ((4, 2), (3, 3))


def make_shared_case(case: int, steps: int) -> dict:
    """Shared draw ``case``: SHARED_SHAPES[case] weight layers of one input width (1 … 6), blocks of S layers."""
    depth, share = SHARED_SHAPES[case]
    rng = random.Random(9800 + case)
    changes, lanes = random_config(rng, case, depth=depth, max_width=DEFAULT_MAX_WIDTH, wide=0.0,
                                   accept=lambda ch: len(set(ch["network"]["arch"][:-1])) == 1)
    return bench_case(rng, changes, lanes, steps) | {"cluster_share": share}


def test_loco_training_bench_shared_blocks_verilator():
    """Both shared draws × 20 steps in one Verilator build: 4 layers in blocks {0, 1}, {2, 3} and 3 layers in one
    block — the Verilog of the banked blocks and the pair buffers, bit for bit against the model."""
    specs = [make_shared_case(c, DEFAULT_STEPS) for c in range(len(SHARED_SHAPES))]
    for s, (depth, share) in zip(specs, SHARED_SHAPES):
        net = Network.from_config(Config().replace(**s["config"]), lanes=s["lanes"], update="loco",
                                  cluster_share=share)
        assert len(net.cluster_groups) == -(-depth // share)
    _run(specs, "verilator", "network-loco-shared")


def test_loco_training_bench_micro_blocks_verilator():
    """The microcoded cluster blocks (``cluster_impl = "micro"``) in Verilog: three default-tier draws × 10 steps
    with one block per layer and one shared draw (one block for several layers) — bit for bit against the model."""
    specs = [make_default_case(c, 10) | {"cluster_impl": "micro"} for c in (0, 3, 6)]
    specs.append(make_shared_case(1, 10) | {"cluster_impl": "micro"})
    _run(specs, "verilator", "network-loco-micro")


def test_loco_training_bench_micro_blocks_icarus():
    """Two small default-tier draws (3-2, K = 2; 4-4, K = 1) with micro cluster blocks × 10 steps on Icarus."""
    _run([make_default_case(c, 10) | {"cluster_impl": "micro"} for c in (15, 17)], "icarus", "network-loco-micro")


@pytest.mark.slow
def test_loco_training_bench_six_configs_slow():
    _run([make_case(c, 20) for c in SLOW_SIX], "verilator", "network-loco")


@pytest.mark.slow
@pytest.mark.parametrize("cases", [(13, 33), (2, 11, 23)])
def test_loco_training_bench_extra_icarus_slow(cases):
    """5 more draws (K 1 … 8, three with a prototype load) × 20 steps on Icarus (~4 min per batch)."""
    _run([make_case(c, 20) for c in cases], "icarus", "network-loco")


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(8))
def test_loco_training_bench_random_configs_slow(batch):
    """All 40 slow-tier random configurations, 20 steps each, 5 per Verilator build; `pytest -m slow`."""
    _run([make_case(c, 20) for c in range(5 * batch, 5 * batch + 5)], "verilator", "network-loco")


def test_default_configs_cover_the_space():
    """The 20 default Verilator draws include every update rounding, both mask settings, both encoders, IF and
    LIF, T = 1 and 16, LANES 1 and > 1, depths 1 … 4, every K 1 … 8, a layer with K > inputs + 1, N_ref 1 and
    > 1, every λ, ≥ 4 η_c values, a 33–36-wide layer, preloaded prototypes and not, idle and stall 0 and > 0."""
    drawn = [make_default_case(c, DEFAULT_STEPS) for c in range(DEFAULT_CASES)]
    cfg = [d["config"] for d in drawn]
    assert {c["fixed"]["update_rounding"] for c in cfg} == {"stochastic", "half-up", "trunc"}
    assert {c["rule"]["mask"] for c in cfg} == {True, False}
    assert {c["spiking"]["encoder"] for c in cfg} == {"deterministic", "bernoulli"}
    assert {c["spiking"]["neuron"] for c in cfg} == {"if", "lif"}
    assert {1, 16} <= {c["spiking"]["steps"] for c in cfg}
    assert {d["lanes"] == 1 for d in drawn} == {True, False}
    assert {len(c["network"]["arch"]) - 1 for c in cfg} == {1, 2, 3, 4}
    assert {c["rule"]["clusters"] for c in cfg} == set(range(1, 9))
    assert any(c["rule"]["clusters"] > min(c["network"]["arch"][:-1]) + 1 for c in cfg)
    assert {c["rule"]["refresh"] > 1 for c in cfg} == {True, False}
    assert {c["rule"]["ridge"] for c in cfg} == {1e-4, 2.0 ** -6, 2.0 ** -3}
    assert len({c["rule"]["proto_lr"] for c in cfg}) >= 4
    assert any(max(c["network"]["arch"]) > 32 for c in cfg)
    assert {d["preload"] for d in drawn} == {True, False}
    assert {d["idle"] > 0 for d in drawn} == {True, False}
    assert {d["stall"] > 0 for d in drawn} == {True, False}
    assert [(len(c["network"]["arch"]) - 1, c["rule"]["clusters"], max(c["network"]["arch"]) > 32) for c in cfg] \
        == list(DEFAULT_SHAPES)


def test_slow_configs_cover_the_space():
    """The slow tier's first draws (the six-configuration batch and the default Icarus pair) include all three
    update roundings, both mask settings, both encoders, depths 1 and 4, K = 1 and K ≥ 6, N_ref 1 and > 1, and
    preloaded prototypes."""
    drawn = [make_case(c, 20) for c in SLOW_SIX + DEFAULT_ICARUS]
    cfg = [d["config"] for d in drawn]
    assert {c["fixed"]["update_rounding"] for c in cfg} == {"stochastic", "half-up", "trunc"}
    assert {c["rule"]["mask"] for c in cfg} == {True, False}
    assert {c["spiking"]["encoder"] for c in cfg} == {"deterministic", "bernoulli"}
    depths = {len(c["network"]["arch"]) - 1 for c in cfg}
    assert 1 in depths and 4 in depths
    ks = {c["rule"]["clusters"] for c in cfg}
    assert 1 in ks and max(ks) >= 6
    assert {c["rule"]["refresh"] > 1 for c in cfg} == {True, False}
    assert {d["preload"] for d in drawn} == {True, False}
