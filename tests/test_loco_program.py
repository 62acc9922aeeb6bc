"""The LOCO program for the microcoded datapath (hdl/loco_program.py on hdl/microcode.py's instruction-set
simulator) against ``FixedClusters``: per sample û, k*, v⊥ and, after it, the bank's prototypes, r_k, count,
samples since the refresh and H, integer for integer — for the cluster block test cases (several formats, K,
N_ref and T), each with two banks of different widths served in turn, and for the ``up5k`` and ``ecp5``
presets. The samples must reach every path of ``select``: a new cluster, a full set, and an input equal to
its nearest prototype."""

import random

import numpy as np
import pytest

from loco_fpga.config import preset
from loco_fpga.golden_model.fixed import FixedClusters
from loco_fpga.hdl.loco_program import LocoProgram
from loco_fpga.hdl.microcode import Machine, decode, encode
from loco_fpga.qformat import formats
from loco_fpga.sim.benches.clusters import make_samples

from test_hdl_clusters import CASES, case_config


def model_step(cl: FixedClusters, u, v, paths=None):
    """What ``FixedRule.step_q`` does with one layer's ``FixedClusters``: (û, k*, new cluster, v⊥); ``paths`` counts
    the ``select`` path taken (a new cluster, a full set, an input equal to its nearest prototype)."""
    before = cl.count
    u_hat = cl.normalise(u)
    k = cl.select(u_hat)
    new = cl.count > before
    if paths is not None:
        paths["new" if new else "full" if before == cl.capacity else "equal"] += 1
    v_perp = cl.project(v, k)
    cl.update(u_hat, k)
    return u_hat, k, new, v_perp


def run_both(cfg, dims, n, seed, paths):
    """n samples per bank, banks in a random order; asserts equality after every sample. ``paths`` counts the
    select paths the model took."""
    rng = random.Random(seed)
    fm = formats(cfg)
    prog = LocoProgram.from_config(cfg, dims)
    mach = prog.machine()
    gold = [FixedClusters(d, cfg, fm) for d in dims]
    samples = [make_samples(rng, d, cfg.spiking.steps, n) for d in dims]
    order = [b for b in range(len(dims)) for _ in range(n)]
    rng.shuffle(order)
    seen = [0] * len(dims)
    for b in order:
        u, v = samples[b][seen[b]]
        where = f"bank {b} sample {seen[b]}"
        seen[b] += 1
        cl = gold[b]
        u_hat, k, _, v_perp = model_step(cl, u, v, paths)
        got_k, got_vp = prog.run_sample(mach, b, u, v)
        d = dims[b]
        assert mach.mem[prog.UH:prog.UH + d] == list(u_hat), f"û, {where}"
        assert got_k == k, f"k*, {where}"
        assert np.array_equal(got_vp, v_perp), f"v⊥, {where}: {got_vp} != {v_perp}"
        st = prog.state(mach, b)
        assert st["count"] == cl.count, f"count, {where}"
        assert st["since"] == cl._since_refresh, f"samples since the refresh, {where}"
        assert np.array_equal(st["protos"], cl.protos), f"prototypes, {where}"
        assert np.array_equal(st["recips"], cl.recips), f"r_k, {where}"
        assert np.array_equal(st["h"], cl.h), f"H, {where}"
    return prog, mach


def test_program_equals_fixed_clusters_on_the_block_cases():
    paths = {"new": 0, "full": 0, "equal": 0}
    for case, (n_in, *_rest) in enumerate(CASES):
        cfg, _ = case_config(case)
        run_both(cfg, [n_in + 1, max(2, n_in // 2 + 1)], 25, case, paths)
    assert min(paths.values()) > 0, paths


@pytest.mark.parametrize("name, dims, n", [("up5k", [65, 33], 10), ("ecp5", [65, 65], 8)])
def test_program_equals_fixed_clusters_on_the_presets(name, dims, n):
    prog, mach = run_both(preset(name), dims, n, 11, {"new": 0, "full": 0, "equal": 0})
    assert all(decode(encode(i)) == i for i in prog.code)
    assert len(mach.mem) == prog.depth


def test_program_errors():
    with pytest.raises(ValueError, match="at least one input"):
        LocoProgram.from_config(preset("up5k"), [1])
    with pytest.raises(ValueError, match="at least one input"):
        LocoProgram.from_config(preset("up5k"), [])
    with pytest.raises(ValueError, match=r"dims = \(5, True\)"):
        LocoProgram.from_config(preset("up5k"), (5, True))
    fm = formats(preset("up5k"))
    good = dict(formats=fm, dims=[5], clusters=4, refresh=1, ridge=2, norm_guard=8, recip_extra=16)
    for name, bad in (("clusters", 0), ("refresh", 0), ("ridge", -1), ("norm_guard", 17), ("recip_extra", 2.0)):
        with pytest.raises(ValueError, match=f"{name} = {bad!r}"):
            LocoProgram(**(good | {name: bad}))
    with pytest.raises(ValueError, match=r"the program needs \d+ data words"):
        LocoProgram(**(good | {"dims": [1000] * 2, "clusters": 8}))
    prog = LocoProgram(**good)
    with pytest.raises(ValueError, match="takes 5 values"):
        prog.run_sample(prog.machine(), 0, [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="not a path"):
        prog.sample_counts(0, 0, False)
    with pytest.raises(ValueError, match="not a path"):
        prog.update_counts(0, 2, False)             # N_ref = 1: every update refreshes


@pytest.mark.slow
def test_program_on_the_sequencer_gateware():
    """The program on the gateware (hdl/sequencer.py, Amaranth simulator), samples of two banks in turn: U and
    V written through the host port, then after HALT k*, v⊥ and the whole data memory (every prototype, r_k,
    H, count) read back and compared with the instruction-set simulator's and k*, v⊥ with FixedClusters;
    the cycles ``busy`` was high equal ``Sequencer.cycles`` of the simulator's per-op counts."""
    from amaranth.sim import Simulator

    from loco_fpga.hdl.sequencer import Sequencer
    from test_hdl_sequencer import read_memory, run_entry

    cfg, fm = case_config(3)                       # T = 4, K = 2, vperp s10.6
    dims = [4, 3]
    prog = LocoProgram.from_config(cfg, dims)
    mach = prog.machine()
    dut = Sequencer(prog.code, depth=prog.depth, widths=prog.widths, init=prog.initial_memory())
    gold = [FixedClusters(d, cfg, fm) for d in dims]
    rng = random.Random(0)
    samples = [make_samples(rng, d, cfg.spiking.steps, 6) for d in dims]
    order = [0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0]
    paths = {"new": 0, "full": 0, "equal": 0}

    async def bench(ctx):
        seen = [0, 0]
        for b in order:
            u, v = samples[b][seen[b]]
            seen[b] += 1
            _, k, _, v_perp = model_step(gold[b], u, v, paths)
            for j, x in enumerate(prog.pack(u, v)):
                ctx.set(dut.host_addr, prog.U + j)
                ctx.set(dut.host_wdata, x)
                ctx.set(dut.host_we, 1)
                await ctx.tick()
            ctx.set(dut.host_we, 0)
            mach.mem[prog.U:prog.U + dims[b]] = prog.pack(u, v)
            for entry in (prog.entry_address[b], prog.update_address[b]):
                counts_before = dict(mach.counts)
                mach.run(entry, z=prog.bank_base[b])
                ran = {op: n - counts_before.get(op, 0) for op, n in mach.counts.items()}
                cycles = await run_entry(ctx, dut, entry, z=prog.bank_base[b])
                assert cycles == dut.cycles(ran), f"cycles of bank {b} sample {seen[b] - 1} from {entry}"
            words = await read_memory(ctx, dut, prog.depth)
            assert words == mach.mem, f"data memory after bank {b} sample {seen[b] - 1}"
            assert words[prog.KSTAR] == k
            assert words[prog.VP:prog.VP + dims[b]] == list(v_perp)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert min(paths.values()) > 0, paths


def test_reload_after_a_host_load():
    """``reload<b>`` after the host wrote prototypes and a count: r_k of the active prototypes and H as
    ``FixedClusters`` gives them after setting ``protos``/``count`` and ``refresh()`` — then training goes on
    the same; a count of 0 leaves H empty; the other bank is untouched."""
    cfg, fm = case_config(0)
    dims = [9, 5]
    prog = LocoProgram.from_config(cfg, dims)
    mach = prog.machine()
    rng = np.random.default_rng(3)
    other = prog.state(mach, 1)
    for count in (3, 0, cfg.rule.clusters):
        cl = FixedClusters(dims[0], cfg, fm)
        cl.protos = rng.integers(fm.proto.min, fm.proto.max + 1, size=cl.protos.shape)
        cl.count = count
        for k in range(count):
            cl.recips[k] = cl._recip_norm(cl.protos[k])
        cl.refresh()
        prog.load(mach, 0, cl.protos, count)
        st = prog.state(mach, 0)
        assert st["count"] == count and st["since"] == 0
        assert np.array_equal(st["protos"], cl.protos)
        assert np.array_equal(st["recips"][:count], cl.recips[:count])
        assert np.array_equal(st["h"], cl.h)
        for u, v in make_samples(random.Random(count), dims[0], cfg.spiking.steps, 4):
            _, k, _, v_perp = model_step(cl, u, v)
            got_k, got_vp = prog.run_sample(mach, 0, u, v)
            assert got_k == k and np.array_equal(got_vp, v_perp)
            assert np.array_equal(prog.state(mach, 0)["h"], cl.h)
    after = prog.state(mach, 1)
    assert all(np.array_equal(after[key], other[key]) for key in other)
    with pytest.raises(ValueError, match="count = 9"):
        prog.load(mach, 0, cl.protos, 9)


@pytest.mark.parametrize("case", [0, 1, 4])
def test_instructions_depend_only_on_count_and_path(case):
    """Every sample's and every update's instructions of each op equal ``sample_counts(count, new)`` /
    ``update_counts(count, refresh)``, measured on made-up states: the data-dependent branches cost the same
    (what makes the cycle schedule exact)."""
    cfg, fm = case_config(case)
    n_in = CASES[case][0]
    dims = [n_in + 1, max(2, n_in // 2 + 1)]
    prog = LocoProgram.from_config(cfg, dims)
    mach = prog.machine()
    rng = random.Random(case)
    gold = [FixedClusters(d, cfg, fm) for d in dims]
    seen = set()
    for b, d in enumerate(dims):
        for u, v in make_samples(rng, d, cfg.spiking.steps, 25):
            cl = gold[b]
            count = cl.count
            _, _, new, _ = model_step(cl, u, v)
            mach.mem[prog.U:prog.U + d] = prog.pack(u, v)
            for entry, want in ((prog.entry_address[b], prog.sample_counts(b, count, new)),
                                (prog.update_address[b],
                                 prog.update_counts(b, cl.count, cl._since_refresh == 0))):
                before = dict(mach.counts)
                mach.run(entry, z=prog.bank_base[b])
                ran = {op: n - before.get(op, 0) for op, n in mach.counts.items() if n > before.get(op, 0)}
                assert ran == want, f"bank {b}, count {count}, new {new}"
            seen.add((b, count, new))
    assert len(seen) >= 2 * cfg.rule.clusters


class _WideConstant(LocoProgram):
    """A program that also uses constants too wide for LDI's immediate (the init entry's other path)."""

    def _code(self):
        self.const((1 << 30) + 12_345)
        self.const(-(1 << 31))
        super()._code()


@pytest.mark.parametrize("cls", [LocoProgram, _WideConstant])
@pytest.mark.parametrize("name, dims", [("up5k", [65, 33]), ("ecp5", [65, 65])])
def test_init_entry_writes_the_initial_memory(cls, name, dims):
    """``init`` (the boot run of a data memory without initial contents) leaves every word as
    ``initial_memory`` has it, from a memory of garbage; ``init_counts`` are that run's."""
    prog = cls.from_config(preset(name), dims)
    want = prog.initial_memory()
    if cls is _WideConstant:
        assert {(1 << 30) + 12_345, -(1 << 31)} <= set(want)
    rng = random.Random(len(dims))
    mach = Machine(prog.code, [rng.randrange(-(1 << 31), 1 << 31) for _ in range(prog.depth)], prog.widths)
    mach.run(prog.init_address)
    assert mach.mem == want
    assert mach.counts == prog.init_counts()


@pytest.mark.parametrize("name", ["up5k", "ecp5"])
def test_loss_entry_equals_the_model(name):
    """``loss_outputs``: the ``loss`` entry's dl and g against ``FixedRule.loss_unit`` and its prediction against the
    first index of the largest y, on the machine, for random outputs, outputs near zero, at the saturation bounds (dl
    and g saturate; ties for the largest y) and every learning rate edge; one path (the published op counts are every
    run's)."""
    from loco_fpga.golden_model.fixed import FixedRule

    cfg = preset(name)
    fm = formats(cfg)
    n = cfg.network.arch[-1]
    prog = LocoProgram.from_config(cfg, [5], loss_outputs=n)
    rule = FixedRule.__new__(FixedRule)
    rule.fmts, rule.config = fm, cfg
    mach = prog.machine()
    rng = np.random.default_rng(5)
    lo, hi = fm.out.min, fm.out.max
    saturated = set()
    for it in range(400):
        kind = it % 4
        if kind == 0:
            y, yn = rng.integers(lo, hi + 1, n), rng.integers(lo, hi + 1, n)
        elif kind == 1:
            y = rng.integers(-5000, 5000, n)
            yn = y + rng.integers(-300, 300, n)
        elif kind == 2:
            y, yn = rng.choice([lo, hi, 0, 1 << fm.weight.frac], n), rng.choice([lo, hi, 0], n)
        else:
            y = rng.integers(lo, hi + 1, n)
            yn = np.clip(y + rng.integers(-(1 << 22), 1 << 22, n), lo, hi)
        label = int(rng.integers(0, n))
        lr = int(rng.choice([0, 1, fm.lr.max, int(rng.integers(0, fm.lr.max + 1))]))
        _, dl, g = rule.loss_unit(y.astype(np.int64), yn.astype(np.int64), label, lr)
        before = dict(mach.counts)
        assert prog.run_loss(mach, y, yn, label, lr) == (int(dl), int(g), int(np.argmax(y))), f"run {it}"
        assert {op: c - before.get(op, 0) for op, c in mach.counts.items() if c > before.get(op, 0)} \
            == prog.loss_counts()
        if dl in (fm.dl.min, fm.dl.max):
            saturated.add("dl")
        if g in (fm.g.min, fm.g.max):
            saturated.add("g")
    assert saturated == {"dl", "g"}
    with pytest.raises(ValueError, match="no loss entry"):
        LocoProgram.from_config(cfg, [5]).run_loss(mach, y, yn, 0, 0)
    with pytest.raises(ValueError, match=r"loss_outputs = -1: must be an integer in \[0, 255\]"):
        LocoProgram.from_config(cfg, [5], loss_outputs=-1)


@pytest.mark.parametrize("name", ["up5k", "ecp5"])
def test_readout_equals_the_model(name):
    """``readout``: the ``loss`` entry first computes the output layer — y_k and ỹ_k from the last bank's counts (left
    in U and V by its sample), the output weights in the window and the noise word — equal to ``FixedNetwork.run``'s
    y of both passes (T steps of sat_acc sums), for random weights over the whole weight range, random spikes and noise
    signs; then dl, g and the prediction as ``loss_unit``'s; one path (the published op counts are every run's)."""
    from loco_fpga.golden_model.fixed import FixedNetwork, FixedRule

    cfg = preset(name)
    fm = formats(cfg)
    arch, T = cfg.network.arch, cfg.spiking.steps
    n = arch[-1]
    dims = ([arch[-3] + 1] if len(arch) > 2 else []) + [arch[-2] + 1]
    prog = LocoProgram.from_config(cfg, dims, loss_outputs=n, readout=True)
    rng = np.random.default_rng(7)
    net = FixedNetwork(cfg, rng)
    sigma_q = 1 << (fm.weight.frac - fm.sigma_shift)
    # the condition under which the per-step sums cannot saturate (the readout's premise)
    assert (arch[-2] + 1) * (1 << (fm.weight.bits - 1)) + sigma_q <= fm.acc.max
    rule = FixedRule.__new__(FixedRule)
    rule.fmts, rule.config = fm, cfg
    mach = prog.machine()
    for it in range(6):
        for l, w in enumerate(net.weights):
            net.weights[l] = rng.integers(fm.weight.min, fm.weight.max + 1, w.shape)
        if it == 1:
            net.weights[-1][:] = fm.weight.max                  # the largest sums
        if it == 2:
            net.weights[-1][:] = fm.weight.min
        spikes = (rng.random((T, 1, arch[0])) < rng.random()).astype(np.int64)
        signs = [rng.integers(0, 2, width) for width in arch[1:]]
        noise = [np.where(s == 1, sigma_q, -sigma_q)[None, :] for s in signs]
        counts, y = net.run(spikes)
        counts_n, yn = net.run(spikes, noise)
        u, v = list(counts[-1][0]) + [T], list(counts_n[-1][0]) + [T]
        if len(dims) > 1:                                       # the bank before: any sample
            rates = list(rng.integers(0, T + 1, dims[0] - 1)) + [T]
            prog.run_sample(mach, 0, rates, rates)
        prog.run_sample(mach, len(dims) - 1, u, v)
        label, lr = int(rng.integers(0, n)), int(rng.integers(0, fm.lr.max + 1))
        word = sum(int(b) << k for k, b in enumerate(signs[-1]))
        before = dict(mach.counts)
        got = prog.run_readout(mach, net.weights[-1], word, label, lr)
        assert {op: c - before.get(op, 0) for op, c in mach.counts.items() if c > before.get(op, 0)} \
            == prog.loss_counts()
        got_y, got_yn = prog.outputs(mach)
        assert got_y.tolist() == y[0].tolist(), f"run {it}: y"
        assert got_yn.tolist() == yn[0].tolist(), f"run {it}: ỹ"
        _, dl, g = rule.loss_unit(y[0], yn[0], label, lr)
        assert got == (int(dl), int(g), int(np.argmax(y[0]))), f"run {it}"
    with pytest.raises(ValueError, match="readout = True: the readout computes"):
        LocoProgram.from_config(cfg, dims, readout=True)
    with pytest.raises(ValueError, match="run_readout"):
        prog.run_loss(mach, y[0], yn[0], 0, 0)


def test_readout_on_the_sequencer_gateware():
    """``readout`` on the gateware (hdl/sequencer.py with ``window``, Amaranth simulator): the data memory as the
    instruction-set simulator left it after a sample of each bank, the output weights in a block RAM on the window
    port; after the ``loss`` entry the accumulator (dl, g, prediction) and the whole data memory (y, ỹ in LY) equal
    the simulator's, and the cycles ``busy`` was high equal ``Sequencer.cycles`` of its per-op counts."""
    from amaranth import Module
    from amaranth.lib import memory
    from amaranth.sim import Simulator

    from loco_fpga.golden_model.fixed import FixedNetwork
    from loco_fpga.hdl.sequencer import Sequencer
    from test_hdl_sequencer import read_memory, run_entry

    cfg = preset("up5k")
    fm = formats(cfg)
    arch, T = cfg.network.arch, cfg.spiking.steps
    dims = [arch[0] + 1, arch[1] + 1]
    prog = LocoProgram.from_config(cfg, dims, loss_outputs=arch[-1], readout=True)
    rng = np.random.default_rng(11)
    net = FixedNetwork(cfg, rng)
    weights = rng.integers(fm.weight.min, fm.weight.max + 1, net.weights[-1].shape)
    spikes = (rng.random((T, 1, arch[0])) < 0.4).astype(np.int64)
    signs = rng.integers(0, 2, arch[-1])
    noise = [np.zeros((1, arch[1]), dtype=np.int64), np.where(signs == 1, 1, -1)[None, :] << (fm.weight.frac - fm.sigma_shift)]
    net.weights[-1] = weights
    counts, y = net.run(spikes)
    counts_n, yn = net.run(spikes, noise)
    mach = prog.machine()
    prog.run_sample(mach, 0, [3] * arch[0] + [T], [2] * arch[0] + [T])
    prog.run_sample(mach, 1, list(counts[0][0]) + [T], list(counts_n[0][0]) + [T])
    word = sum(int(b) << k for k, b in enumerate(signs))
    mach.mem[prog.SG] = word
    mach.mem[prog.LABEL], mach.mem[prog.LR] = 3, 1000
    init = list(mach.mem)
    before = dict(mach.counts)
    want = prog.run_readout(mach, weights, word, 3, 1000)
    ran = {op: n - before.get(op, 0) for op, n in mach.counts.items() if n > before.get(op, 0)}
    assert prog.outputs(mach)[0].tolist() == y[0].tolist() and prog.outputs(mach)[1].tolist() == yn[0].tolist()

    dut = Sequencer(prog.code, depth=prog.depth, widths=prog.widths, init=init, window=True)
    top = Module()
    top.submodules.seq = dut
    top.submodules.wmem = wmem = memory.Memory(shape=fm.weight.bits, depth=weights.size,
                                               init=[int(v) & 0xFFFF for v in weights.reshape(-1)])
    rd = wmem.read_port(domain="sync")
    top.d.comb += [rd.addr.eq(dut.win_addr), dut.win_data.eq(rd.data.as_signed())]

    async def bench(ctx):
        cycles = await run_entry(ctx, dut, prog.loss_address)
        assert cycles == dut.cycles(ran)
        assert LocoProgram.unpack_loss(ctx.get(dut.a)) == want
        assert await read_memory(ctx, dut, prog.depth) == mach.mem[:prog.depth]

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match="window = True: depth = 3000"):
        Sequencer(prog.code, depth=3000, widths=prog.widths, window=True)
