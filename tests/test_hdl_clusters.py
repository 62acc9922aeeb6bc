# amaranth: UnusedElaboratable=no
"""The LOCO cluster block (hdl/clusters.py) in the Amaranth simulator against ``FixedClusters`` — the same
calls ``FixedRule.step_q`` makes (normalise, select, project, update) — over sequences of samples: k*, v⊥,
every prototype, every r_k, the count and H compared after every sample, integer for integer; random idle
cycles on ``i``, back-pressure on ``o``; the published cycles per sample; parameter errors. The default form
(one unit per cluster) and the shared forms (``units`` P < K: one unit, and P between 1 and K, also with a
partial last group)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed import FixedClusters
from loco_fpga.hdl.clusters import ClusterBlock, PairBuffer, PeekKind
from loco_fpga.hdl.solver import Solver
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.clusters import make_samples


def make_config(*, n_in, clusters, refresh, steps=16, base="up5k", fixed=None, proto_lr=2.0 ** -5, ridge=1e-4):
    return preset(base).replace(network={"arch": (n_in, 8, 3)},
                                rule={"clusters": clusters, "refresh": refresh, "proto_lr": proto_lr,
                                      "ridge": ridge},
                                spiking={"steps": steps}, fixed=fixed or {})


def golden_trace(cl: FixedClusters, samples):
    """Per sample what FixedRule.step_q does with one layer's FixedClusters, and the state after it."""
    trace = []
    for u, v in samples:
        count = cl.count
        u_hat = cl.normalise(u)
        k = cl.select(u_hat)
        new = cl.count > count
        v_perp = cl.project(v, k)
        c_used = cl.active.copy()                                 # the C that project used
        m_used = cl.downdate(k) if cl.count >= 2 else None
        cl.update(u_hat, k)
        trace.append({"c_used": c_used, "m_used": m_used, "v": v,
                      "k_star": k, "v_perp": v_perp.copy(), "protos": cl.protos.copy(), "recips": cl.recips.copy(),
                      "count": cl.count, "h": cl.h.copy(), "new": new, "refreshed": cl._since_refresh == 0})
    return trace


def run_block(dut: ClusterBlock, samples, rng, idle, stall, peeks=True, banks=None):
    """Stream the samples through; after each sample's v⊥ and the block's return to RECV, snapshot its
    state (of the sample's bank: ``banks[n]``, for a block with ``banks`` > 1). Returns per sample {k_star,
    v_perp, protos, recips, count, h, start}."""
    dim, K = dut.dim, dut.clusters
    got = [dict() for _ in samples]
    outputs = []
    cycle = [0]

    async def clock(ctx):
        while True:
            await ctx.tick()
            cycle[0] += 1

    async def driver(ctx):
        for n, (u, v) in enumerate(samples):
            s = banks[n] if banks is not None else 0
            field = {"bank": s} if banks is not None else {}
            for j in range(dim):
                while rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"u": int(u[j]), "v": int(v[j]), "last": int(j == dim - 1)} | field)
                if j == 0:
                    while not ctx.get(dut.i.ready):
                        await ctx.tick()
                    got[n]["start"] = cycle[0]
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            while len(outputs) < (n + 1) * dim:
                await ctx.tick()
            while not ctx.get(dut.i.ready):                 # the update and its refresh are done
                await ctx.tick()
            state, protos = dut.bank_state[s], dut.bank_prototypes[s]
            count = ctx.get(state.count)
            stride, base = 2 * K, s * 2 * K * K
            got[n].update(
                protos=np.array([[ctx.get(protos[k][j]) for j in range(dim)] for k in range(K)]),
                recips=np.array([ctx.get(r) for r in state.recips]),
                count=count,
                h=np.array([[ctx.get(dut.solver.matrix[base + r * stride + count + c]) for c in range(count)]
                            for r in range(count)], dtype=np.int64).reshape(count, count))

            if not peeks:
                continue

            # the debug port returns the same state (one cycle latency, while the block waits)
            async def peek(what, index=0, col=0):
                ctx.set(dut.peek, {"what": what, "index": index, "col": col} | field)
                await ctx.tick()
                return ctx.get(dut.peek_data)
            k = rng.randrange(K)
            seen = {"count": await peek(PeekKind.COUNT),
                    "recips": [await peek(PeekKind.RECIP, i) for i in range(K)],
                    "proto": [await peek(PeekKind.PROTO, k, c) for c in range(dim)],
                    "h": [[await peek(PeekKind.H, r, c) for c in range(count)] for r in range(count)]}
            assert seen == {"count": count, "recips": got[n]["recips"].tolist(),
                            "proto": got[n]["protos"][k].tolist(), "h": got[n]["h"].tolist()}, \
                f"sample {n}: the peek port disagrees with the state"

    async def monitor(ctx):
        while len(outputs) < len(samples) * dim:
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                outputs.append((int(payload.v), int(payload.k_star), int(payload.last),
                                int(payload.bank) if banks is not None else 0))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    for n in range(len(samples)):
        rows = outputs[n * dim:(n + 1) * dim]
        got[n]["v_perp"] = np.array([r[0] for r in rows], dtype=np.int64)
        got[n]["k_stars"] = {r[1] for r in rows}
        got[n]["last"] = [r[2] for r in rows]
        got[n]["banks"] = {r[3] for r in rows}
    return got


def orthogonality_check(cl: FixedClusters, want, got):
    """The orthogonality error of the HDL's v⊥ against the derived bound (docs/hdl_learning.md).

    For every other active cluster a ≠ k*: D_a = c_a·v⊥ − λ w*_a (real units), where λ w*_a = c_a·v⊥* is what
    the exact ridge projection leaves (w* = (UUᵀ + λI)⁻¹ U v, U = C without row k*). Without saturation,
    |D_a| ≤ B_a = Σ_b |(CCᵀ)_ab| (Σ_c |δM_bc| |(Cv)_c| + ‖M̃_b‖₁ u/2 + u/2) + ‖c_a‖₁ 2^-(vf+1), u = 2^-hf,
    δM = M̃ − M* (M* = the exact downdated inverse). Returns (samples checked, worst |D_a|, worst |D_a|/B_a,
    worst |λ w*_a|)."""
    fm = cl.fmts
    pf, hf, vf, rf = fm.proto.frac, fm.h.frac, fm.vperp.frac, fm.log2_steps
    lam = cl.ridge_q * 2.0 ** -hf
    u = 2.0 ** -hf
    checked, worst_d, worst_ratio, worst_ridge = 0, 0.0, 0.0, 0.0
    for w, g in zip(want, got):
        if w["m_used"] is None:
            continue
        c = w["c_used"] * 2.0 ** -pf
        m_q = w["m_used"]
        n, k = len(c), w["k_star"]
        vp_q = g["v_perp"]
        if (np.any(np.abs(vp_q) >= fm.vperp.max) or np.any(np.abs(m_q) >= fm.m.max)):
            continue                                               # the bound assumes no saturation
        v = w["v"] * 2.0 ** -rf
        others = [a for a in range(n) if a != k]
        gram = c @ c.T + lam * np.eye(n)
        m_exact = np.zeros((n, n))
        m_exact[np.ix_(others, others)] = np.linalg.inv(gram[np.ix_(others, others)])
        w_exact = m_exact @ (c @ v)
        d_m = np.abs(m_q * u - m_exact)
        w_err = d_m @ np.abs(c @ v) + np.abs(m_q * u).sum(axis=1) * u / 2 + u / 2
        bound = np.abs(c @ c.T) @ w_err + np.abs(c).sum(axis=1) * 2.0 ** -(vf + 1)
        for a in others:
            d = c[a] @ (vp_q * 2.0 ** -vf) - lam * w_exact[a]
            assert abs(d) <= bound[a], f"orthogonality: |D_{a}| = {abs(d)} > bound {bound[a]} (k* = {k})"
            worst_d = max(worst_d, abs(d))
            worst_ratio = max(worst_ratio, abs(d) / bound[a])
            worst_ridge = max(worst_ridge, abs(lam * w_exact[a]))
        checked += 1
    return checked, worst_d, worst_ratio, worst_ridge


def first_difference(want, got, dim):
    """The first differing quantity as 'quantity, sample n, index …: HDL x != model y', or None."""
    for n, (w, g) in enumerate(zip(want, got)):
        if g["k_stars"] != {w["k_star"]}:
            return f"k* at sample {n}: HDL {sorted(g['k_stars'])} != model {w['k_star']}"
        if g["last"] != [0] * (dim - 1) + [1]:
            return f"last flags at sample {n}: {g['last']}"
        for name in ("v_perp", "recips"):
            bad = np.flatnonzero(g[name] != w[name])
            if len(bad):
                i = bad[0]
                return f"{name} at sample {n}, index {i}: HDL {g[name][i]} != model {w[name][i]}"
        bad = np.argwhere(g["protos"] != w["protos"])
        if len(bad):
            k, j = bad[0]
            return f"prototype c_{k} at sample {n}, index {j}: HDL {g['protos'][k, j]} != model {w['protos'][k, j]}"
        if g["count"] != w["count"]:
            return f"count at sample {n}: HDL {g['count']} != model {w['count']}"
        bad = np.argwhere(g["h"] != w["h"])
        if len(bad):
            r, c = bad[0]
            return f"H[{r}, {c}] at sample {n}: HDL {g['h'][r, c]} != model {w['h'][r, c]}"
    return None


CASES = [  # (n_in, K, N_ref, T, fixed overrides, samples, idle, stall)
    (8, 4, 1, 16, None, 24, 0.2, 0.3),
    (5, 8, 3, 8, None, 30, 0.0, 0.0),
    (12, 3, 2, 16, {"proto_frac": 12, "proto_bits": 14, "h_bits": 24, "h_frac": 12}, 24, 0.3, 0.0),
    (3, 2, 1, 4, {"vperp_bits": 10, "vperp_frac": 6}, 24, 0.0, 0.5),
    (16, 5, 4, 32, {"norm_guard": 3, "recip_extra": 10}, 22, 0.1, 0.1),
    (1, 1, 1, 2, None, 20, 0.2, 0.2),
]


# (case, units): every case in the default form; the shared forms on two cases (K = 5, P = 1; K = 3, P = 2:
# a partial last group), the others in the slow tier (P = 1 and middle values, K mod P = 0 and ≠ 0)
UNIT_CASES = [(c, None) for c in range(len(CASES))] + [(4, 1), (2, 2)]
UNIT_CASES_SLOW = [(1, 1), (1, 3), (4, 2), (0, 1), (0, 3), (2, 1), (3, 1), (4, 3), (4, 4), (1, 5), (1, 7)]


@pytest.mark.parametrize("case, units", UNIT_CASES)
def test_block_equals_fixed_clusters(case, units):
    _check_case(case, units)


@pytest.mark.slow
@pytest.mark.parametrize("case, units", UNIT_CASES_SLOW)
def test_shared_block_equals_fixed_clusters_slow(case, units):
    _check_case(case, units)


def case_config(case):
    """(config, formats) of CASES[case]; λ scaled to the H format (≥ 4 LSBs)."""
    n_in, K, n_ref, steps, fixed, *_ = CASES[case]
    h_frac = (fixed or {}).get("h_frac", 14)
    cfg = make_config(n_in=n_in, clusters=K, refresh=n_ref, steps=steps, fixed=fixed,
                      ridge=max(1e-4, 2.0 ** -(h_frac - 2)))
    return cfg, formats(cfg)


@pytest.mark.parametrize("case, units, banks", [(4, 1, 3), (2, 2, 2),
                                                (pytest.param(0, None, 2, marks=pytest.mark.slow))])
def test_banked_block_equals_one_fixed_clusters_per_bank(case, units, banks):
    """A block serving ``banks`` layers (one sample at a time, in a random bank order) against one
    ``FixedClusters`` per bank: every sample's k* and v⊥ and, after it, its bank's prototypes, r_k, count and H
    (also through the peek port with ``peek.bank``), integer for integer; ``o`` carries the sample's bank. A
    bank's state survives the other banks' samples, refreshes and solver commands in between."""
    n_in, _, _, steps, _, count, idle, stall = CASES[case]
    rng = random.Random(700 + case)
    cfg, fm = case_config(case)
    samples = make_samples(rng, n_in + 1, steps, count * banks)
    order = [rng.randrange(banks) for _ in samples]
    models = [FixedClusters(n_in + 1, cfg, fm) for _ in range(banks)]
    want = [golden_trace(models[s], [smp])[0] for s, smp in zip(order, samples)]
    dut = ClusterBlock.from_config(cfg, 0, units=units, banks=banks)
    assert dut.banks == banks and len(dut.bank_state) == banks
    got = run_block(dut, samples, rng, idle, stall, banks=order)
    assert [g["banks"] for g in got] == [{s} for s in order]
    problem = first_difference(want, got, n_in + 1)
    assert problem is None, problem
    for s in range(banks):          # every bank learned: clusters opened, and samples that reused one
        mine = [w for w, o in zip(want, order) if o == s]
        assert any(w["new"] for w in mine) and any(not w["new"] for w in mine), f"bank {s}"


def _check_case(case, units):
    n_in, K, _, steps, _, count, idle, stall = CASES[case]
    rng = random.Random(900 + case)
    cfg, fm = case_config(case)
    samples = make_samples(rng, n_in + 1, steps, count)
    want = golden_trace(FixedClusters(n_in + 1, cfg, fm), samples)
    dut = ClusterBlock.from_config(cfg, 0, units=units)
    assert dut.units == (K if units is None else units)
    got = run_block(dut, samples, rng, idle, stall)
    problem = first_difference(want, got, n_in + 1)
    assert problem is None, problem
    checked, worst_d, worst_ratio, worst_ridge = orthogonality_check(FixedClusters(n_in + 1, cfg, fm), want, got)
    print(f"case {case}, units {dut.units}: orthogonality checked on {checked} samples; "
          f"max |c_a·v⊥ − λw*_a| = {worst_d:.3g}, "
          f"max ratio to the bound {worst_ratio:.3g}; max |λ w*_a| = {worst_ridge:.3g}")
    assert max(w["count"] for w in want) == min(K, max(w["count"] for w in want))
    assert any(w["new"] for w in want) and any(not w["new"] for w in want)


@pytest.mark.parametrize("units", [None, 1, 3])
def test_published_cycles_per_sample(units):
    """Always-valid input, always-ready output: the cycles between two samples' first transfers equal
    ``sample_cycles`` for every kind of sample (new cluster, refresh, count < 2), in the default form and the
    shared forms (K = 4: one unit, and 3 units — groups {0, 1, 2} and {3})."""
    rng = random.Random(5)
    cfg = make_config(n_in=6, clusters=4, refresh=3, steps=8)
    fm = formats(cfg)
    samples = make_samples(rng, 7, 8, 14)
    want = golden_trace(FixedClusters(7, cfg, fm), samples)
    dut = ClusterBlock.from_config(cfg, 0, units=units)
    got = run_block(dut, samples, rng, 0.0, 0.0, peeks=False)
    assert first_difference(want, got, 7) is None
    kinds = set()
    for n in range(len(samples) - 1):
        w = want[n]
        published = dut.sample_cycles(w["count"], w["new"], w["refreshed"])
        # the driver waits for the state snapshot before the next sample: it starts once the block is
        # back in RECV, so the measured gap is exact
        assert got[n + 1]["start"] - got[n]["start"] == published, \
            f"sample {n} (count {w['count']}, new {w['new']}, refreshed {w['refreshed']})"
        kinds.add((w["count"] >= 2, w["new"], w["refreshed"]))
    assert len(kinds) >= 3
    assert {w["count"] for w in want} >= {1, 2, 3, 4}          # every number of groups of the shared forms


def test_cycles_of_the_shared_forms():
    """The shared forms' formulas against the default form's, term by term (independent arithmetic here):
    a pass over the active clusters repeats per group of P, each v⊥ entry takes one cycle per group, and SCORE
    reads dot_0 and r_0 from memories first (one cycle) and, where dot and r fit the solver's multiplier (the
    preset: dot 40 bits ≤ 2·30 − 1, r 29 bits ≤ 30 − 2), takes two cycles per cluster (lo · r, hi · r)."""
    cfg = make_config(n_in=64, clusters=8, refresh=1, steps=16)
    full, one, three = (ClusterBlock.from_config(cfg, 0, units=u) for u in (None, 1, 3))
    dim, pc = 65, 67
    assert full.units == 8 and [full.groups(n) for n in range(9)] == [1] * 9
    assert [one.groups(n) for n in range(9)] == [1, 1, 2, 3, 4, 5, 6, 7, 8]
    assert [three.groups(n) for n in range(9)] == [1, 1, 1, 1, 2, 2, 2, 3, 3]
    for count in range(9):
        for new in ([False, True] if count else [False]):
            before = count - 1 if new else count
            for shared in (one, three):
                g = shared.groups
                extra = 1 + before + (g(before) - 1) * pc                     # SCORE (below), UHAT
                if new:
                    extra += count * (g(count) - 1) * pc                      # the select refresh's GRAM passes
                if count >= 2:
                    extra += (g(count) - 1) * pc + (g(count) - 1) * dim        # CV, OUT
                assert shared.output_cycles(count, new) - full.output_cycles(count, new) == extra
                assert (shared.refresh_cycles(count) - full.refresh_cycles(count)
                        == count * (g(count) - 1) * pc)
    # r of 2·16 + 1 = 33 bits does not fit a 30-bit signed operand: the shared form keeps its own score multiplier
    # and one cycle per cluster
    wide = make_config(n_in=64, clusters=8, refresh=1, steps=16, fixed={"proto_bits": 18, "proto_frac": 16})
    wide_full, wide_one = (ClusterBlock.from_config(wide, 0, units=u) for u in (None, 1))
    for count in range(1, 9):
        extra = 1 + (wide_one.groups(count) - 1) * pc + (wide_one.groups(count) - 1) * (pc + dim) * (count >= 2)
        assert wide_one.output_cycles(count, False) - wide_full.output_cycles(count, False) == extra


def test_parameter_errors_quote_the_value():
    fm = formats(make_config(n_in=4, clusters=2, refresh=1))
    kw = dict(formats=fm, dim=5, clusters=2, refresh=1, ridge=2, norm_guard=8, recip_extra=16)
    with pytest.raises(ValueError, match=r"dim = 0: must be an integer in \[1, 65536\]"):
        ClusterBlock(**{**kw, "dim": 0})
    with pytest.raises(ValueError, match=r"clusters = 65: must be an integer in \[1, 64\]"):
        ClusterBlock(**{**kw, "clusters": 65})
    with pytest.raises(ValueError, match=r"refresh = 0: must be an integer"):
        ClusterBlock(**{**kw, "refresh": 0})
    with pytest.raises(ValueError, match=r"ridge = -1: must be an integer"):
        ClusterBlock(**{**kw, "ridge": -1})
    with pytest.raises(ValueError, match=r"units = 0: must be an integer in \[1, 2\]"):
        ClusterBlock(**{**kw, "units": 0})
    with pytest.raises(ValueError, match=r"units = 3: must be an integer in \[1, 2\]"):
        ClusterBlock(**{**kw, "units": 3})
    with pytest.raises(TypeError, match=r"formats = 'q': expected a loco_fpga.qformat.Formats"):
        ClusterBlock(**{**kw, "formats": "q"})
    with pytest.raises(ValueError, match=r"banks = 0: must be an integer in \[1, 16\]"):
        ClusterBlock(**{**kw, "banks": 0})
    with pytest.raises(ValueError, match=r"banks = 17: must be an integer in \[1, 16\]"):
        Solver(formats=fm, size=2, banks=17)
    with pytest.raises(ValueError, match=r"depth = 0: must be an integer in \[1, 65536\]"):
        PairBuffer(formats=fm, depth=0)
    with pytest.raises(ValueError, match=r"layer = 2: must be an integer in \[0, 1\]"):
        ClusterBlock.from_config(make_config(n_in=4, clusters=2, refresh=1), 2)


@pytest.mark.parametrize("count, units", [(1, None), (3, None), (4, None), (3, 1), (4, 3)])
def test_load_sets_prototypes_recips_and_h(count, units):
    """A host load (prototype words, then the count) leaves the block in the state of a ``FixedClusters``
    whose prototypes and count were set, with r_k recomputed and ``refresh()`` run; ``idle`` rises after
    ``load_cycles(count)`` cycles (training after a load: tests/test_hdl_update_loco.py)."""
    from loco_fpga.sim.benches.update import load_prototypes

    rng = random.Random(70 + count)
    cfg = make_config(n_in=5, clusters=4, refresh=2, steps=8)
    fm = formats(cfg)
    dut = ClusterBlock.from_config(cfg, 0, units=units)
    dim, K = dut.dim, dut.clusters
    c = np.array([[rng.randrange(0, 1 << fm.proto.frac) // 3 for _ in range(dim)] for _ in range(K)])
    cl = FixedClusters(dim, cfg, fm)
    load_prototypes(type("Rule", (), {"clusters": [cl]})(), [(c, count)])
    got = {}

    async def bench(ctx):
        for k in range(K):
            for j in range(dim):
                ctx.set(dut.load_en, 1)
                ctx.set(dut.load, {"count": 0, "index": k, "col": j, "value": int(c[k, j])})
                await ctx.tick()
        ctx.set(dut.load, {"count": 1, "index": 0, "col": 0, "value": count})
        await ctx.tick()
        ctx.set(dut.load_en, 0)
        cycles = 0
        while True:
            cycles += 1
            await ctx.tick()
            if ctx.get(dut.idle):
                break
        got["cycles"] = cycles
        got["protos"] = np.array([[ctx.get(dut.prototypes[k][j]) for j in range(dim)] for k in range(K)])
        got["recips"] = [ctx.get(r) for r in dut.state.recips]
        got["count"] = ctx.get(dut.state.count)
        got["h"] = [[ctx.get(dut.solver.matrix[r * 2 * K + count + q]) for q in range(count)] for r in range(count)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got["count"] == cl.count == count
    assert (got["protos"] == cl.protos).all()
    assert got["recips"] == cl.recips.tolist()
    assert got["h"] == cl.h.tolist()
    assert got["cycles"] == dut.load_cycles(count)
