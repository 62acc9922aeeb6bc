# amaranth: UnusedElaboratable=no
"""The solver (hdl/solver.py) in the Amaranth simulator against ``gauss_jordan_inverse`` and
``FixedClusters.refresh/downdate`` (golden_model/fixed.py), integer for integer: Gram matrices of random,
duplicated and zero prototype sets (λ keeps them invertible), arbitrary integer matrices that drive the pivot
clamp and saturation, K = 1 … 8; the published cycle counts; and the first-order error bound against the exact
rational inverse (fractions.Fraction)."""

import random
from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed import FixedClusters, gauss_jordan_inverse
from loco_fpga.hdl.solver import MatrixHalf, Solver, SolverOp
from loco_fpga.qformat import formats, narrow


def _config(h_bits=30, h_frac=14, proto_bits=16, proto_frac=14, clusters=8, ridge=1e-4, dim=17):
    return preset("up5k").replace(network={"arch": (dim - 1, 8, 3)},
                                  rule={"clusters": clusters, "ridge": ridge},
                                  fixed={"h_bits": h_bits, "h_frac": h_frac, "proto_bits": proto_bits,
                                         "proto_frac": proto_frac})


def _gram(cl: FixedClusters) -> np.ndarray:
    """The Gram matrix FixedClusters.refresh inverts (the same two lines)."""
    c = cl.active
    gram = narrow(c @ c.T, 2 * cl.pf, cl.fmts.gram)
    return cl.fmts.gram.saturate(gram + cl.ridge_q * np.eye(cl.count, dtype=np.int64))


def _run(dut: Solver, jobs):
    """jobs: list of (matrix or None, [downdate k …]). Returns per job (H, [M …], invert cycles, [dd cycles])."""
    out = []
    size = dut.size
    stride = 2 * size

    def block(ctx, n, col0):
        return np.array([[ctx.get(dut.matrix[r * stride + col0 + c]) for c in range(n)] for r in range(n)],
                        dtype=np.int64)

    async def command(ctx, op, n, k=0):
        ctx.set(dut.cmd.valid, 1)
        ctx.set(dut.cmd.payload, {"op": op, "n": n, "k": k})
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        cycles = 0
        while True:
            cycles += 1
            if not ctx.get(dut.busy):
                return cycles - 1
            await ctx.tick()

    async def bench(ctx):
        for g, ks in jobs:
            n = g.shape[0]
            for r in range(n):
                for c in range(n):
                    ctx.set(dut.g.valid, 1)
                    ctx.set(dut.g.payload, {"row": r, "col": c, "value": int(g[r, c])})
                    await ctx.tick().until(dut.g.ready)
            ctx.set(dut.g.valid, 0)
            inv_cycles = await command(ctx, SolverOp.INVERT, n)
            h = block(ctx, n, n)
            ms, dd_cycles = [], []
            for k in ks:
                dd_cycles.append(await command(ctx, SolverOp.DOWNDATE, n, k))
                ms.append(block(ctx, n, 0))
                assert np.array_equal(block(ctx, n, n), h), "DOWNDATE must leave H in place"
            # the client read port: H and M through rd_addr/rd_data (one cycle latency)
            reads = {}
            for half in (MatrixHalf.H, MatrixHalf.M):
                r, c = (n - 1, 0) if half == MatrixHalf.H else (0, n - 1)
                ctx.set(dut.rd_addr, {"row": r, "col": c, "half": half})
                await ctx.tick()
                reads[half] = ctx.get(dut.rd_data)
            assert reads[MatrixHalf.H] == h[n - 1, 0]
            if ks:
                assert reads[MatrixHalf.M] == ms[-1][0, n - 1]
            out.append((h, ms, inv_cycles, dd_cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


def _check(dut, jobs, results, fm, cls=None):
    for t, ((g, ks), (h, ms, inv, dds)) in enumerate(zip(jobs, results)):
        n = g.shape[0]
        want = gauss_jordan_inverse(g, fm.h, fm.h.frac)
        diff = np.argwhere(h != want)
        assert not len(diff), f"job {t} (n={n}): H[{diff[0][0]}, {diff[0][1]}] HDL {h[tuple(diff[0])]} != " \
                              f"model {want[tuple(diff[0])]}"
        cl = cls[t] if cls else FixedClusters(n, _config(), fm)
        cl.h = want
        for k, mm in zip(ks, ms):
            want_m = cl.downdate(k)
            diff = np.argwhere(mm != want_m)
            assert not len(diff), f"job {t} (n={n}) downdate k={k}: M[{diff[0][0]}, {diff[0][1]}] HDL " \
                                  f"{mm[tuple(diff[0])]} != model {want_m[tuple(diff[0])]}"
        assert inv == dut.invert_cycles(n), f"job {t}: INVERT took {inv} cycles, published {dut.invert_cycles(n)}"
        assert dds == [dut.downdate_cycles(n)] * len(ks), f"job {t}: DOWNDATE cycles {dds}"


def _prototype_jobs(cfg, rng, count):
    """Gram matrices as FixedClusters.refresh builds them, with the FixedClusters objects."""
    fm = formats(cfg)
    dim = cfg.network.arch[0] + 1
    jobs, cls = [], []
    for t in range(count):
        n = rng.randint(1, cfg.rule.clusters)
        cl = FixedClusters(dim, cfg, fm)
        one = 1 << fm.proto.frac
        kind = t % 4
        for a in range(n):
            if kind == 1 and a > 0 and rng.random() < 0.5:       # duplicated prototypes: singular C Cᵀ
                cl.protos[a] = cl.protos[rng.randrange(a)]
            elif kind == 2 and rng.random() < 0.3:               # zero prototypes
                cl.protos[a] = 0
            elif kind == 3:                                      # unit-norm prototypes (normalised û)
                x = np.array([rng.random() for _ in range(dim)])
                cl.protos[a] = np.floor(x / np.linalg.norm(x) * one + 0.5).astype(np.int64)
            else:                                                # anywhere in the format
                cl.protos[a] = [rng.randint(fm.proto.min, fm.proto.max) >> rng.randint(0, 4) for _ in range(dim)]
        cl.count = n
        cl.refresh()
        g = _gram(cl)
        jobs.append((g, sorted(rng.sample(range(n), min(n, 2)))))
        cls.append(cl)
        assert np.array_equal(gauss_jordan_inverse(g, fm.h, fm.h.frac), cl.h)
    return jobs, cls


@pytest.mark.parametrize("case, h_bits, h_frac, size", [
    (0, 30, 14, 8), (1, 30, 14, 3), (2, 24, 12, 8), (3, 20, 10, 5), (4, 30, 20, 8), (5, 16, 8, 2)])
def test_refresh_and_downdate_equal_the_model(case, h_bits, h_frac, size):
    rng = random.Random(100 + case)
    ridge = max(1e-4, 2.0 ** -h_frac)
    cfg = _config(h_bits=h_bits, h_frac=h_frac, clusters=size, ridge=ridge)
    fm = formats(cfg)
    jobs, cls = _prototype_jobs(cfg, rng, 8)
    jobs.append((_gram(cls[0]), []))                              # INVERT without a downdate
    cls.append(cls[0])
    dut = Solver(formats=fm, size=size)
    _check(dut, jobs, _run(dut, jobs), fm, cls)


@pytest.mark.parametrize("case, h_bits, h_frac", [(0, 30, 14), (1, 12, 6), (2, 20, 16)])
def test_arbitrary_matrices_hit_clamp_and_saturation(case, h_bits, h_frac):
    """Any integer matrix in the H format: non-positive pivots (the clamp to 1 LSB), saturating divisions,
    eliminations and downdates (H_kk ≤ 0 clamps too). Every path must match the model."""
    rng = random.Random(200 + case)
    fm = formats(_config(h_bits=h_bits, h_frac=h_frac, ridge=2.0 ** -h_frac))
    lo, hi = fm.h.min, fm.h.max
    jobs = []
    for t in range(10):
        n = rng.randint(1, 8)
        if t % 3 == 0:
            g = np.array([[rng.choice([lo, hi, 0, 1, -1, rng.randint(lo, hi)]) for _ in range(n)] for _ in range(n)])
        elif t % 3 == 1:
            g = np.array([[rng.randint(lo, hi) >> rng.randint(0, h_bits - 2) for _ in range(n)] for _ in range(n)])
        else:                                                     # tiny, possibly zero pivots
            g = np.array([[rng.randint(-3, 3) for _ in range(n)] for _ in range(n)])
        jobs.append((g.astype(np.int64), list(range(n))))
    dut = Solver(formats=fm, size=8)
    results = _run(dut, jobs)
    _check(dut, jobs, results, fm)
    hs = np.concatenate([r[0].ravel() for r in results])
    assert lo in hs and hi in hs, "the matrices must drive H into both saturation limits"


def test_sizes_one_to_eight_and_nop():
    rng = random.Random(7)
    cfg = _config()
    fm = formats(cfg)
    jobs = []
    for n in range(1, 9):
        cl = FixedClusters(17, cfg, fm)
        cl.protos[:n] = [[rng.randint(-(1 << 13), 1 << 13) for _ in range(17)] for _ in range(n)]
        cl.count = n
        jobs.append((_gram(cl), [n - 1]))
    dut = Solver(formats=fm, size=8)
    _check(dut, jobs, _run(dut, jobs), fm)
    assert dut.invert_cycles(0) == dut.downdate_cycles(0) == 1


def test_multiplier_is_lent_to_the_client_while_idle():
    """While idle, mul_p = mul_a · mul_b (signed, full width) — the cluster block's w = M·cv uses it — before
    and after an INVERT that used the multiplier itself (H still equal to the model's)."""
    rng = random.Random(11)
    fm = formats(_config())
    dut = Solver(formats=fm, size=3)
    h = fm.h
    pairs = [(h.min, h.min), (h.max, h.min), (h.max, h.max), (0, h.min), (-1, 1)]
    pairs += [(rng.randint(h.min, h.max), rng.randint(h.min, h.max)) for _ in range(20)]
    g = np.array([[9000, 100, -50], [100, 8000, 30], [-50, 30, 7000]], dtype=np.int64)
    got = {}

    async def bench(ctx):
        async def products():
            seen = []
            for a, b in pairs:
                ctx.set(dut.mul_a, a)
                ctx.set(dut.mul_b, b)
                await ctx.delay(1e-8)
                seen.append(ctx.get(dut.mul_p))
            return seen
        got["before"] = await products()
        for r in range(3):
            for c in range(3):
                ctx.set(dut.g.valid, 1)
                ctx.set(dut.g.payload, {"row": r, "col": c, "value": int(g[r, c])})
                await ctx.tick().until(dut.g.ready)
        ctx.set(dut.g.valid, 0)
        ctx.set(dut.cmd.valid, 1)
        ctx.set(dut.cmd.payload, {"op": SolverOp.INVERT, "n": 3, "k": 0})
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        await ctx.tick()
        while ctx.get(dut.busy):
            await ctx.tick()
        got["h"] = np.array([[ctx.get(dut.matrix[r * 6 + 3 + c]) for c in range(3)] for r in range(3)])
        got["after"] = await products()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [a * b for a, b in pairs]
    assert got["before"] == want and got["after"] == want
    assert np.array_equal(got["h"], gauss_jordan_inverse(g, fm.h, fm.h.frac))


def first_order_bound(g_real: np.ndarray, frac: int) -> float:
    """First-order bound (real units) on max |X̃ − G⁻¹| of the fixed-point Gauss–Jordan inverse of an SPD G
    without saturation (docs/hdl_learning.md): 2 n² u (1 + 2γ)(1 + γ) max(1, ‖G‖₂), u = 2^-frac, γ = ‖G⁻¹‖₂."""
    n = g_real.shape[0]
    gamma = np.linalg.norm(np.linalg.inv(g_real), 2)
    return 2 * n * n * 2.0 ** -frac * (1 + 2 * gamma) * (1 + gamma) * max(1.0, np.linalg.norm(g_real, 2))


def _exact_inverse(g_int: np.ndarray, frac: int):
    n = g_int.shape[0]
    a = [[Fraction(int(g_int[r, c]), 1 << frac) for c in range(n)] + [Fraction(int(r == c)) for c in range(n)]
         for r in range(n)]
    for p in range(n):
        piv = a[p][p]
        a[p] = [x / piv for x in a[p]]
        for r in range(n):
            if r != p and a[r][p]:
                f = a[r][p]
                a[r] = [x - f * y for x, y in zip(a[r], a[p])]
    return [row[n:] for row in a]


def test_hdl_inverse_is_within_the_derived_bound_of_the_exact_inverse():
    """HDL H against the exact rational inverse of the same integer G: within :func:`first_order_bound`.
    Well-conditioned Gram matrices (unit prototypes plus λ = 2^-4) and the default ridge 1e-4 on distinct
    prototypes; the measured worst error is reported in docs/hdl_learning.md."""
    rng = random.Random(11)
    worst = []
    for ridge in (2.0 ** -4, 1e-4):
        cfg = _config(ridge=ridge)
        fm = formats(cfg)
        jobs = []
        for t in range(6):
            n = rng.randint(2, 8)
            cl = FixedClusters(17, cfg, fm)
            for a in range(n):
                x = np.array([rng.random() - 0.3 for _ in range(17)])
                cl.protos[a] = np.floor(x / np.linalg.norm(x) * (1 << 14) + 0.5).astype(np.int64)
            cl.count = n
            jobs.append((_gram(cl), []))
        dut = Solver(formats=fm, size=8)
        for (g, _), (h, _, _, _) in zip(jobs, _run(dut, jobs)):
            exact = _exact_inverse(g, fm.h.frac)
            err = max(abs(Fraction(int(h[r, c]), 1 << fm.h.frac) - exact[r][c])
                      for r in range(len(g)) for c in range(len(g)))
            bound = first_order_bound(g / 2.0 ** fm.h.frac, fm.h.frac)
            assert float(err) <= bound, f"ridge {ridge}, n={len(g)}: |H − G⁻¹| = {float(err)} > bound {bound}"
            worst.append((ridge, len(g), float(err) * 2 ** fm.h.frac, bound * 2 ** fm.h.frac))
    print("max |H − G⁻¹| in LSBs vs bound:", worst)


def test_parameter_errors_quote_the_value():
    fm = formats(_config())
    with pytest.raises(ValueError, match=r"size = 0: must be an integer in \[1, 64\]"):
        Solver(formats=fm, size=0)
    with pytest.raises(ValueError, match=r"size = 'x': must be an integer"):
        Solver(formats=fm, size="x")
    with pytest.raises(TypeError, match=r"formats = None: expected a loco_fpga.qformat.Formats"):
        Solver(formats=None, size=4)
