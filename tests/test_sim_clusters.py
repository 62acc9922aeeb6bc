"""cocotb bench of the LOCO cluster block (hdl/clusters.py) against ``FixedClusters``: random configurations
(layer width, K, N_ref, T, proto/H/v⊥ formats, norm guard bits, η_c, λ), one build each, random samples,
random idle cycles on ``i`` and back-pressure on ``o``; k*, v⊥, count, r_k, prototypes and H after every
sample, bit for bit. The default form (one unit per cluster) and the shared forms (``units`` P < K)."""

import random

import pytest

from loco_fpga.config import Config, ConfigError, preset
from loco_fpga.hdl.clusters import ClusterBlock
from loco_fpga.sim import harness


def random_config(rng: random.Random, wide: bool = False) -> dict:
    """Config.replace arguments of a valid LOCO config (draws check_config rejects are drawn again).
    ``wide``: the default-sized layer (64 inputs, dim 65) with K = 8."""
    while True:
        try:
            return _random_config(rng, wide)
        except ConfigError:
            continue


def _random_config(rng, wide):
    base = rng.choice(["up5k", "ecp5"])
    n_in = 64 if wide else rng.randint(1, 24)
    pb = rng.randint(10, 18)
    pf = pb - 2
    hb = rng.randint(20, 30)
    hf = rng.randint(10, hb - 6)
    log2t = rng.randint(1, 5)
    vb = rng.randint(10, 18)
    changes = {
        "network": {"arch": (n_in, 8, 3)},
        "rule": {"name": "loco", "clusters": 8 if wide else rng.randint(1, 8), "refresh": rng.randint(1, 5),
                 "proto_lr": 2.0 ** -rng.randint(1, min(pf, 8)), "ridge": rng.choice([1e-4, 2.0 ** -6, 2.0 ** -3])},
        "spiking": {"enabled": True, "steps": 1 << log2t},
        "fixed": {"enabled": True, "proto_bits": pb, "proto_frac": pf, "h_bits": hb, "h_frac": hf,
                  "vperp_bits": vb, "vperp_frac": rng.randint(log2t, vb - 2),
                  "norm_guard": rng.randint(0, 8), "recip_extra": rng.randint(4, 16)},
    }
    preset(base).replace(**changes)              # validates (raises ConfigError naming the field)
    return {"base": base, **changes}


def _full(spec: dict) -> dict:
    """The complete Config.replace arguments of a spec (the bench rebuilds the config from them)."""
    cfg = preset(spec["base"]).replace(**{k: v for k, v in spec.items() if k != "base"})
    return {section: {f: getattr(getattr(cfg, section), f) for f in getattr(cfg, section).__dataclass_fields__}
            for section in ("network", "rule", "train", "spiking", "fixed")}


def _run(case: int, simulator: str, samples: int, units: str | None = None):
    """``units``: None (the default form, P = K), "one" (P = 1) or "random" (P drawn from 1 … K)."""
    harness.require_simulator(simulator)
    rng = random.Random(6000 + case)
    spec = random_config(rng, wide=case == 0)
    full = _full(spec)
    cfg = Config().replace(**full)
    K = cfg.rule.clusters
    p = {None: None, "one": 1, "random": rng.randint(1, K)}[units]
    built = harness.build(lambda: ClusterBlock.from_config(cfg, 0, units=p), name="clusters",
                          params={"spec": spec, **({} if p is None else {"units": p})}, simulator=simulator)
    harness.run(built, "loco_fpga.sim.benches.clusters",
                params={"config": full, "seed": rng.randrange(1 << 30), "samples": samples,
                        "idle": rng.choice([0.0, 0.2, 0.5]), "stall": rng.choice([0.0, 0.2, 0.5])})


# Default run: 6 random configurations × 20 samples on Verilator (case 0: dim 65, K = 8) and 3 on Icarus.
@pytest.mark.parametrize("case", range(6))
def test_clusters_bench_verilator(case):
    _run(case, "verilator", 20)


@pytest.mark.parametrize("case", range(3))
def test_clusters_bench_icarus(case):
    _run(case, "icarus", 20)


# The shared forms: the wide configuration (dim 65, K = 8) with one unit, and a random configuration with a
# random number of units, on Verilator; one with a random number of units on Icarus.
@pytest.mark.parametrize("case, units", [(0, "one"), (1, "random")])
def test_clusters_bench_shared_verilator(case, units):
    _run(case, "verilator", 20, units)


@pytest.mark.parametrize("case", [2])
def test_clusters_bench_shared_icarus(case):
    _run(case, "icarus", 20, "random")


@pytest.mark.slow
@pytest.mark.parametrize("case", range(100, 112))
def test_clusters_bench_random_configs_slow(case):
    """More random configurations, 40 samples each, on Verilator; `pytest -m slow`."""
    _run(case, "verilator", 40)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(200, 210))
def test_clusters_bench_shared_random_configs_slow(case):
    """The shared forms: random configurations with a random number of units, 40 samples each, on Verilator."""
    _run(case, "verilator", 40, "random")
