# amaranth: UnusedElaboratable=no
"""The microcode sequencer (hdl/sequencer.py) in the Amaranth simulator against the instruction-set simulator
(``Machine`` of hdl/microcode.py): seeded random programs that execute every op and every field combination,
and real routines (restoring division, square root), run on both; after HALT A, B, Q, X, Y, Z, the loop counters
and the whole data memory (read through the host port) must be equal integers, and the cycles ``busy`` was
high must equal the published formula (``Sequencer.cycles`` of the ISS's per-op counts). Also the host port,
the instruction-word layout against ``encode``, and the parameter errors."""

import itertools
import math
import random

import pytest
from amaranth.sim import Simulator

from loco_fpga.hdl.microcode import (CHUNK, DATA_BITS, WORD, Cond, Instr, Machine, MulMode, Op, Program, Reg,
                                     Shift, ZRel, encode, wrap)
from loco_fpga.boards.spram import POISON, spram_memory
from loco_fpga.hdl.sequencer import DIGITS, WORD_LAYOUT, Sequencer, op_cycles

A, B, Q = Reg.A, Reg.B, Reg.Q
WIDTHS = (16, 30)
DEPTH = 64
OPS_WITHOUT_GATEWARE_TEST = set()


# -- running a program on both ---------------------------------------------------------------------------------
def run_gateware(code, init, *, widths=WIDTHS, depth=DEPTH, entry=0, digit=16, limit=200_000):
    """Run ``code`` from ``entry`` to HALT on the gateware: (registers, memory read through the host port,
    cycles ``busy`` was high)."""
    dut = Sequencer(code, depth=depth, widths=widths, init=init, digit=digit)
    out = {}

    async def bench(ctx):
        out["cycles"] = await run_entry(ctx, dut, entry, limit)
        out["regs"] = {"a": ctx.get(dut.a), "b": wrap(ctx.get(dut.b)), "q": wrap(ctx.get(dut.q)),
                       "x": ctx.get(dut.x), "y": ctx.get(dut.y), "z": ctx.get(dut.z), "loops": [ctx.get(l) for l in dut.loops]}
        out["mem"] = await read_memory(ctx, dut, depth)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out["regs"], out["mem"], out["cycles"], dut


async def run_entry(ctx, dut, entry, limit=10_000_000, z=0):
    """Start the program at ``entry`` (Z = ``z``) and wait for HALT: the cycles ``busy`` was high."""
    ctx.set(dut.entry, entry)
    ctx.set(dut.zbase, z)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    cycles = 0
    while ctx.get(dut.busy):
        await ctx.tick()
        cycles += 1
        assert cycles <= limit, f"no HALT after {limit} cycles (pc {ctx.get(dut.pc)})"
    return cycles


async def read_memory(ctx, dut, depth):
    words = []
    for addr in range(depth):
        ctx.set(dut.host_addr, addr)
        await ctx.tick()
        words.append(ctx.get(dut.host_rdata))
    return words


def run_iss(code, init, *, widths=WIDTHS, depth=DEPTH, entry=0):
    mem = list(init) + [0] * (depth - len(init))
    mach = Machine(code, mem, widths)
    mach.run(entry)
    regs = {"a": mach.a, "b": mach.b, "q": mach.q, "x": mach.x, "y": mach.y, "z": mach.z, "loops": list(mach.loops)}
    return regs, mach.mem, mach


def check(code, init, *, entry=0, digit=16, widths=WIDTHS, depth=DEPTH):
    want_regs, want_mem, mach = run_iss(code, init, widths=widths, depth=depth, entry=entry)
    got_regs, got_mem, cycles, dut = run_gateware(code, init, widths=widths, depth=depth, entry=entry, digit=digit)
    assert got_regs == want_regs
    assert got_mem == want_mem
    assert cycles == dut.cycles(mach.counts), f"measured {cycles} cycles, formula {dut.cycles(mach.counts)}"
    return mach


# -- random programs ----------------------------------------------------------------------------------------
class RandomProgram:
    """Straight-line random code (with forward branches, counted loops and a subroutine) whose memory
    operands stay inside ``DEPTH`` words: X, Y and Z are kept < 14, memory immediates < 24."""

    def __init__(self, rng: random.Random, widths=WIDTHS):
        self.rng, self.widths, self.p = rng, widths, Program()
        self.x = self.y = 0
        self.subs = []
        self.body = 0        # > 0 inside a loop body (no relative index update) or a subroutine (no index op)
        self.p.setx(0)
        self.p.sety(0)
        self.p.setz(rng.randrange(14))

    # operands
    def mem(self):
        rng = self.rng
        ux, uy, uz = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
        imm = rng.randrange(24)
        return {"imm": ZRel(imm) if uz else imm, "ux": ux, "uy": uy}

    def value(self):
        rng = self.rng
        return rng.choice([0, 1, -1, rng.randrange(-(1 << 19), 1 << 19), rng.randrange(-64, 64)])

    def ldi(self, r=None, high=None):
        r = self.rng.choice(list(Reg)) if r is None else r
        high = self.rng.random() < 0.3 if high is None else high
        self.p.ldi(r, self.value(), high=high)

    def store(self):
        p, rng = self.p, self.rng
        p.sat(rng.randrange(len(self.widths)))
        p.st(**self.mem())

    def dump(self):
        """Store A, B and Q in 16-bit pieces (sign-extended) at 48 … 59, to see them mid-program."""
        p = self.p
        for r in Reg:
            for part in range(WORD // 16):
                p.mov(A, r)
                shl(p, WORD - 16 * (part + 1))
                for _ in range(6):
                    p.shift(Shift.SAR8)
                p.st(48 + 4 * r + part)

    def emit_random(self, n):
        for _ in range(n):
            getattr(self, "_" + self.rng.choice(self.KINDS))()

    KINDS = ("ld", "ldi", "mov", "add", "sub", "neg", "shift", "sat", "mul", "div", "sqrt", "index", "store",
             "nop", "branch", "jmp")

    def _ld(self): self.p.ld(self.rng.choice(list(Reg)), **self.mem())
    def _ldi(self): self.ldi()
    def _mov(self): self.p.mov(self.rng.choice(list(Reg)), self.rng.choice(list(Reg)))
    def _add(self): self.p.add(**self.mem()) if self.rng.random() < 0.5 else self.p.add()
    def _sub(self): self.p.sub(**self.mem()) if self.rng.random() < 0.5 else self.p.sub()
    def _neg(self): self.p.neg()
    def _shift(self): self.p.shift(self.rng.choice(list(Shift)))
    def _sat(self): self.p.sat(self.rng.randrange(len(self.widths)))
    def _nop(self): self.p.emit(Op.NOP)
    def _store(self): self.store()
    def _div(self): self.p.divstep()
    def _sqrt(self): self.p.sqrtstep()

    def _mul(self, mode=None, bi=None, bs=None, qj=None, qs=None, mem=None):
        rng = self.rng
        pick = lambda v, f: f() if v is None else v
        kw = self.mem() if pick(mem, lambda: rng.random() < 0.5) else {}
        self.p.mul(pick(mode, lambda: rng.choice(list(MulMode))), pick(bi, lambda: rng.randrange(4)),
                   pick(bs, lambda: rng.random() < 0.5), pick(qj, lambda: rng.randrange(4)),
                   pick(qs, lambda: rng.random() < 0.5), mem=kw.get("imm"), ux=kw.get("ux", False),
                   uy=kw.get("uy", False))

    def _index(self):
        p, rng = self.p, self.rng
        if self.body < 0:
            return
        kinds = ["setx", "sety", "setz", "movx", "movy"] + (["addx", "addy"] if self.body == 0 else [])
        kind = rng.choice(kinds)
        if kind == "setz":
            p.setz(rng.randrange(14))
            return
        if kind in ("setx", "sety"):
            v = rng.randrange(14)
            getattr(p, kind)(v)
        elif kind in ("addx", "addy"):
            old = self.x if kind == "addx" else self.y
            v = rng.randrange(14)
            getattr(p, kind)(v - old)                # wraps mod 2^12 through 0 when v < old
        else:
            v = rng.randrange(14)
            p.ldi(A, rng.randrange(-(1 << 7), 1 << 7) * 4096 + v)       # only A's low 12 bits count
            if kind == "movy" and not hasattr(Op, "MOVY"):
                p.sety(v)
            else:
                getattr(p, kind)()
        if kind.endswith("x"):
            self.x = v
        else:
            self.y = v

    def branch(self, cond, taken):
        """BR cond over one LDI, with A set so that the branch is (not) taken."""
        p, rng = self.p, self.rng
        pos, neg = rng.randrange(1, 1 << 19), -rng.randrange(1, 1 << 19)
        truth = {Cond.Z: [0], Cond.NZ: [pos, neg], Cond.NEG: [neg], Cond.NNEG: [0, pos], Cond.POS: [pos],
                 Cond.NPOS: [0, neg]}[cond]
        falsity = {Cond.Z: [pos, neg], Cond.NZ: [0], Cond.NEG: [0, pos], Cond.NNEG: [neg], Cond.POS: [0, neg],
                   Cond.NPOS: [pos]}[cond]
        p.ldi(A, rng.choice(truth if taken else falsity), high=rng.random() < 0.3)
        skip = p.fresh()
        p.br(cond, skip)
        self.ldi(B)
        p.label(skip)

    def _branch(self):
        self.branch(self.rng.choice(list(Cond)), self.rng.random() < 0.5)

    def _jmp(self):
        skip = self.p.fresh()
        self.p.jmp(skip)
        self.ldi(A)
        self.p.label(skip)

    def loop(self, counter, count, body):
        top = self.p.fresh()
        if hasattr(Op, "MOVL") and self.rng.random() < 0.5:
            self.p.ldi(A, self.rng.randrange(-8, 8) * 4096 + count)
            self.p.movl(counter)
        else:
            self.p.setl(counter, count)
        self.p.label(top)
        self.body += 1
        body()
        self.body -= 1
        self.p.djnz(counter, top)

    def call(self, body_len):
        name = self.p.fresh("sub")
        self.p.call(name)
        self.subs.append((name, body_len))

    def finish(self):
        self.p.halt()
        self.body = -1
        for name, body_len in self.subs:
            self.p.label(name)
            self.emit_random(body_len)
            self.p.ret()
        return self.p.assemble()


MUL_COMBOS = list(itertools.product(MulMode, range(4), (False, True), range(4), (False, True), (False, True)))


def random_program(seed: int, combos=()):
    """A program with one of each op kind, the given MUL field combinations, every branch condition taken
    and not taken, two nested loops and a subroutine, among random instructions."""
    rng = random.Random(seed)
    g = RandomProgram(rng)
    for r in Reg:                                         # random 64-bit contents to start with
        g.ldi(r, high=True)
        g.p.add(**g.mem())
        g.p.mul(MulMode.HORNER, rng.randrange(4), True, rng.randrange(4), True)
    plan = [lambda c=c: g._mul(*c[:5], mem=c[5]) for c in combos]
    plan += [lambda k=k: getattr(g, "_" + k)() for k in RandomProgram.KINDS]
    plan += [lambda c=c, t=t: g.branch(c, t) for c in Cond for t in (False, True)]
    plan += [lambda d=d, s=s: g.p.mov(d, s) for d in Reg for s in Reg]
    plan += [lambda h=h: g.p.shift(h) for h in Shift] + [lambda w=w: g.p.sat(w) for w in range(len(g.widths))]
    plan += [lambda r=r, h=h: g.ldi(r, h) for r in Reg for h in (False, True)]
    for ux, uy, uz in itertools.product((False, True), repeat=3):
        addr = lambda ux=ux, uy=uy, uz=uz: {"imm": (ZRel if uz else int)(rng.randrange(24)), "ux": ux, "uy": uy}
        plan += [lambda a=addr: g.p.ld(rng.choice(list(Reg)), **a()), lambda a=addr: g.p.add(**a()),
                 lambda a=addr: g.p.sub(**a()), lambda a=addr: (g.p.sat(1), g.p.st(**a()))]
    plan += [lambda: g.loop(0, rng.randrange(1, 4), lambda: (g.emit_random(2),
                                                             g.loop(1, rng.randrange(1, 3), lambda: g.emit_random(2)))),
             lambda: g.loop(2, 2, lambda: g.emit_random(1)), lambda: g.loop(3, 1, lambda: g.emit_random(1)),
             lambda: g.call(3), lambda: g.call(2), g.dump, g.dump]
    rng.shuffle(plan)
    for step in plan:
        step()
        g.emit_random(rng.randrange(0, 2))
        if rng.random() < 0.2:
            g.store()
    for _ in range(3):
        g.store()
    return g.finish()


def random_init(seed):
    rng = random.Random(seed + 10_000)
    return [rng.choice([rng.randrange(-(1 << 31), 1 << 31), rng.randrange(-99, 99)]) for _ in range(DEPTH)]


SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_programs(seed):
    combos = MUL_COMBOS[seed::len(SEEDS)]          # the seeds share out every MUL field combination
    code = random_program(seed, combos)
    check(code, random_init(seed))


def test_random_programs_cover_every_op_and_field():
    """What the seeds of test_random_programs execute on the ISS: every op, every MUL field combination,
    every MOV pair, SHIFT, SAT width, memory-operand index combination, LDI high and low."""
    ops, muls, movs, shifts, sats, index, ldi = set(), set(), set(), set(), set(), set(), set()
    for seed in SEEDS:
        code = random_program(seed, MUL_COMBOS[seed::len(SEEDS)])
        mach = run_iss(code, random_init(seed))[2]
        ops |= set(mach.counts)
        for ins in code:
            if ins.op == Op.MUL:
                muls.add((ins.mode, ins.bi, ins.bs, ins.qj, ins.qs, bool(ins.s)))
            if ins.op == Op.MOV:
                movs.add((ins.r, ins.s))
            if ins.op == Op.SHIFT:
                shifts.add(ins.s)
            if ins.op == Op.SAT:
                sats.add(ins.s)
            if ins.op in (Op.LD, Op.ST, Op.ADD, Op.SUB) and (ins.op in (Op.LD, Op.ST) or ins.s):
                index.add((ins.op, ins.ux, ins.uy, ins.uz))
            if ins.op == Op.MUL and ins.s:
                index.add((ins.op, ins.uz))
            if ins.op == Op.LDI:
                ldi.add((ins.r, ins.high))
    assert ops == set(Op)
    assert muls == set(MUL_COMBOS)
    assert movs == set(itertools.product(Reg, Reg))
    assert shifts == set(Shift) and sats == set(range(len(WIDTHS)))
    assert index == (set(itertools.product((Op.LD, Op.ST, Op.ADD, Op.SUB), (False, True), (False, True), (False, True)))
                     | {(Op.MUL, False), (Op.MUL, True)})
    assert ldi == set(itertools.product(Reg, (False, True)))


@pytest.mark.parametrize("digit", [d for d in DIGITS if d != 16])
def test_random_program_other_digits(digit):
    check(random_program(100, MUL_COMBOS[::37]), random_init(100), digit=digit)


# -- real routines ----------------------------------------------------------------------------------------------
def shl(p, n):
    for _ in range(n // 8):
        p.shift(Shift.SHL8)
    for _ in range(n % 8):
        p.shift(Shift.SHL1)


def division_program(n):
    """mem[2] ← ⌊mem[0] / mem[1]⌋, mem[3] ← the remainder (0 ≤ mem[0] < 2^n, mem[1] > 0; both stored
    saturated to 30 bits): restoring division, one DIVSTEP per quotient bit in a DJNZ loop."""
    p = Program()
    p.ld(A, 0)
    shl(p, WORD - n)
    p.mov(Q, A)
    p.ld(B, 1)
    p.ldi(A, 0)
    p.setl(3, n)
    top = p.label()
    p.divstep()
    p.djnz(3, top)
    p.sat(1)
    p.st(3)
    p.mov(A, Q)
    p.sat(1)
    p.st(2)
    p.halt()
    return p.assemble()


def sqrt_program(bits):
    """mem[1] ← ⌊√mem[0]⌋ (0 ≤ mem[0] < 2^bits) by SQRTSTEP in a loop, through a CALL."""
    p = Program()
    p.ld(A, 0)
    p.call("isqrt")
    p.mov(A, B)
    p.st(1)
    p.halt()
    p.label("isqrt")
    m = (bits + 1) // 2
    shl(p, WORD - 2 * m)
    p.mov(Q, A)
    p.ldi(A, 0)
    p.ldi(B, 0)
    p.setl(3, m)
    top = p.label()
    p.sqrtstep()
    p.djnz(3, top)
    p.ret()
    return p.assemble()


@pytest.mark.parametrize("dividend,divisor", [(1_000_000_007, 12_345), (2**29 - 1, 1), (2**30 - 1, 3),
                                              (5, 7), (0, 3), (2**30 - 5, 2**28 + 17)])
def test_division_routine(dividend, divisor):
    mach = check(division_program(30), [dividend, divisor], depth=8)
    assert mach.mem[2:4] == [dividend // divisor, dividend % divisor]


@pytest.mark.parametrize("radicand", [0, 1, 2, 99, 2**30 - 1, 1_234_567_890])
def test_sqrt_routine(radicand):
    mach = check(sqrt_program(31), [radicand], depth=8)
    assert mach.mem[1] == math.isqrt(radicand)


@pytest.mark.slow
def test_long_loop():
    """SETL 0 counts 2^12 iterations (the counter wraps through 0 before it stops)."""
    p = Program()
    p.ldi(A, 0)
    p.setl(0, 0)
    top = p.label()
    p.add(0)
    p.djnz(0, top)
    p.sat(1)
    p.st(1)
    p.halt()
    check(p.assemble(), [3], depth=8)


# -- host port, timing, layout, errors --------------------------------------------------------------------------
def test_host_port():
    """Host writes (also back to back) are read back one cycle after the address; a program sees them and
    the host sees what the program stored; start while busy is ignored."""
    rng = random.Random(7)
    depth = 16
    values = [rng.randrange(-(1 << 31), 1 << 31) for _ in range(depth)]
    p = Program()
    p.ld(A, 3)
    p.add(5)
    p.sat(1)
    p.st(9)
    p.halt()
    code = p.assemble()
    dut = Sequencer(code, depth=depth, widths=WIDTHS, init=[1] * depth)

    async def bench(ctx):
        for addr, v in enumerate(values):
            ctx.set(dut.host_addr, addr)
            ctx.set(dut.host_wdata, v)
            ctx.set(dut.host_we, 1)
            await ctx.tick()
        ctx.set(dut.host_we, 0)
        assert await read_memory(ctx, dut, depth) == values
        ctx.set(dut.start, 1)
        await ctx.tick()
        while ctx.get(dut.busy):
            ctx.set(dut.host_we, 1)                    # ignored while busy
            ctx.set(dut.host_addr, 9)
            await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.host_we, 0)
        want = list(values)
        want[9] = max(-(1 << 29), min((1 << 29) - 1, values[3] + values[5]))
        assert await read_memory(ctx, dut, depth) == want

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_cycle_table():
    for digit in DIGITS:
        n = WORD // digit
        for op in Op:
            want = {Op.MUL: 2 + n, Op.DIVSTEP: 1 + 2 * n, Op.SQRTSTEP: 1 + 2 * n}.get(op)
            if want is None:
                want = 1 + n if op in (Op.LD, Op.LDI, Op.MOV, Op.ADD, Op.SUB, Op.NEG, Op.SHIFT, Op.SAT) else 1
            assert op_cycles(op, digit=digit) == want
    dut = Sequencer([Instr(Op.HALT)], depth=4, widths=WIDTHS)
    assert dut.cycles({Op.ADD: 3, Op.MUL: 2, Op.HALT: 1}) == 3 * 5 + 2 * 6 + 1
    assert dut.timing[Op.DIVSTEP] == 9


def test_word_layout_matches_encode():
    rng = random.Random(3)
    for _ in range(200):
        ins = Instr(Op.MUL, s=1, ux=rng.random() < 0.5, uy=True, imm=rng.randrange(4096),
                    mode=rng.randrange(4), bi=rng.randrange(4), bs=True, qj=rng.randrange(4), qs=rng.random() < 0.5)
        view = WORD_LAYOUT.from_bits(encode(ins))
        assert (view.op, view.s, view.ux, view.uy) == (Op.MUL, 1, ins.ux, ins.uy)
        assert (view.tail.f.imm, view.tail.f.mode, view.tail.f.bi, view.tail.f.bs, view.tail.f.qj,
                view.tail.f.qs) == (ins.imm, ins.mode, ins.bi, ins.bs, ins.qj, ins.qs)
        ldi = Instr(Op.LDI, r=rng.randrange(3), imm=rng.randrange(-(1 << 19), 1 << 19), high=rng.random() < 0.5)
        view = WORD_LAYOUT.from_bits(encode(ldi))
        assert (view.op, view.r, view.s & 1, view.tail.imm20) == (Op.LDI, ldi.r, ldi.high, ldi.imm)


@pytest.mark.parametrize("kwargs,message", [
    (dict(code=[]), "code = \\[\\]: expected a non-empty list of Instr"),
    (dict(depth=0), "depth = 0: must be an integer in \\[1, 4096\\]"),
    (dict(depth=5000), "depth = 5000: must be"),
    (dict(widths=()), "widths = \\(\\): expected 1 … 8 integer bit widths in \\[2, 64\\]"),
    (dict(widths=(16, 65)), "widths = \\(16, 65\\)"),
    (dict(init=[0] * 9), "init has 9 words: more than depth = 8"),
    (dict(init=[1 << 31]), "init value 2147483648 does not fit 32 signed bits"),
    (dict(digit=8), "digit = 8: expected one of \\(16, 32, 64\\)"),
    (dict(boot=1), "boot = 1: expected None or an address in the code \\(0 … 0\\)"),
    (dict(memory=spram_memory(reserve=2), init=[1]), "init: a memory hook's data memory has no initial contents"),
    (dict(memory="spram"), "memory = 'spram': expected None or a memory hook"),
])
def test_parameter_errors(kwargs, message):
    args = dict(code=[Instr(Op.HALT)], depth=8, widths=WIDTHS) | kwargs
    code = args.pop("code")
    with pytest.raises(ValueError, match=message):
        Sequencer(code, **args)
    with pytest.raises(ValueError, match="digit = 12"):
        op_cycles(Op.ADD, digit=12)


def test_boot_run_on_spram():
    """With a memory hook (here the UP5K's SPRAM model: garbage until written, garbage read data after a write
    cycle) and ``boot``: after the reset the boot entry runs by itself, ``busy`` for 1 + its cycles; then a program
    started as usual reads back what the boot wrote — every word as the ISS has it after the same two runs."""
    p = Program()
    p.label("boot")
    p.ldi(A, 0)
    p.setx(0)
    p.setl(0, DEPTH)
    top = p.label()
    p.st(0, ux=True)
    p.addx(1)
    p.djnz(0, top)
    p.ldi(A, -77_777)
    p.st(5)
    p.halt()
    p.label("main")
    p.ld(A, 5)              # right after a store would read garbage from a single-port memory: not here
    p.ld(B, 5)
    p.add()
    p.st(6)
    p.ld(A, 6)
    p.st(7)
    p.halt()
    code = p.assemble()
    boot, main = p.labels["boot"], p.labels["main"]
    dut = Sequencer(code, depth=DEPTH, widths=WIDTHS, memory=spram_memory(reserve=2), boot=boot)
    mach = Machine(code, [POISON] * DEPTH, WIDTHS)
    mach.run(boot)
    boot_cycles = dut.cycles(mach.counts)
    mach.run(main)
    out = {}

    async def bench(ctx):
        busy = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            busy += 1
        out["boot"] = busy
        out["mem_after_boot"] = await read_memory(ctx, dut, DEPTH)
        await run_entry(ctx, dut, main)
        out["mem"] = await read_memory(ctx, dut, DEPTH)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert out["boot"] == 1 + boot_cycles
    assert out["mem_after_boot"] == [0] * 5 + [-77_777] + [0] * (DEPTH - 6)
    assert out["mem"] == mach.mem and mach.mem[7] == -155_554
