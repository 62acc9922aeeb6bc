"""The gateware that executes the microcode of ``hdl/microcode.py``, bit-exactly as its :class:`Machine` does.

One job: run a program held in a block-RAM ROM on a small datapath, for the UP5K, where area is the point.

**Digit-serial datapath.** The 64-bit registers A, B and Q are rotating shift registers that are processed
``digit`` bits (16 by default, n = 64/digit digits) per cycle, least significant digit first: in a digit
cycle every register moves down by one digit and its new top digit is either its old low digit (unchanged
after n cycles) or a new result digit. One (digit + 1)-bit adder serves every 64-bit instruction:

    S = L' + R' + carry-in,   L' = (L or 0) xor invL,   R' = (R or 0) xor invR

where ``L`` is a digit of A or of A shifted (≪1, ≪2, ≪8, ≪15, ≫1, ≫8: the bits that cross a digit boundary
come from the previous digit's top bits, kept in a small register, or from the next digit, one digit higher
in the rotating register) and ``R`` a digit of B, Q, B ≪ 2 | 1, or of the narrow operand (the data word, the
product P, both sign-extended, or the constant: an LDI immediate or a SAT bound). Loads and moves go through
the adder too (0 + R, A + 0). The carry and, on the last digit, the 65-bit sign are the adder's extra bit.
DIVSTEP and SQRTSTEP take two passes: the first finds the sign of the trial difference, the second writes
either the difference or the shifted remainder (the subtrahend gated to 0) and shifts Q (and B).

The 16 × 16 multiplier takes chunk(B or the data word, bi, bs) and chunk(Q, qj, qs) — both always 16-bit signed
— into a product register P written only in the MUL's wait cycle (one ``SB_MAC16`` under ``synth_ice40
-dsp``). Index registers, loop counters, PC and the link register are 12-bit and updated in parallel.

**Timing** (exact; :func:`op_cycles`, :meth:`Sequencer.cycles`): every instruction starts with a decode cycle
in which the ROM word is on the ROM's output; the last cycle of every instruction drives the ROM address
with the next PC, so a jump costs what a fall-through costs:

==================================================================  ==================
instruction                                                         cycles
==================================================================  ==================
NOP, ST, SETX, ADDX, SETY, ADDY, MOVX, MOVY, SETL, MOVL, DJNZ,      1
JMP, BR, CALL, RET, HALT (taken or not)
LD, LDI, MOV, ADD, SUB, NEG, SHIFT, SAT                             1 + n
MUL                                                                 2 + n (a wait cycle: data word → P)
DIVSTEP, SQRTSTEP                                                   1 + 2n
==================================================================  ==================

n = 64 / ``digit`` (4 by default: 1, 5, 6, 9 cycles). A run's cycles (``busy`` high, from the cycle after
``start`` through the cycle of its HALT) are Σ_op ``Machine.counts[op]`` · cycles(op) — no dependence on data
or on which branches are taken.

**Area** (``benchmarks/sequencer_area.py``: 512-word ROM, 1024-word data memory, widths (16, 30), digit 16,
``synth_ice40 -dsp``): 1063 SB_LUT4, 41 SB_CARRY, 409 flip-flops, 1 SB_MAC16, 12 SB_RAM40_4K; 1466 logic cells
placed out of context (with the wrapper's 66 flip-flops), 23.2 MHz routed (before the registered decode: 1021, 382,
1353, 25.2 MHz out of context — in the UP5K LOCO build the registered decode took the clock from 22.9 to 24.0 MHz).
Roughly: the narrow/constant operand path and R multiplexer ≈ 300 LUTs, the multiplier's chunk selection ≈ 115, the A shifter ≈ 85.

**Decode.** An instruction's operand selection (the L, R and narrow multiplexers, the inversions, the carry-in, what
each register's new top digit is) is decoded from the ROM word in its DECODE cycle and registered, so the digit cycles
start at flip-flops; the second pass of DIVSTEP/SQRTSTEP gates R and picks the inversion from ``second`` and ``ok``.
A = 0, which the branches test, is a flag that every digit cycle updates with the digit it writes.

**Window** (``window=True``): addresses with the top bit set read the ``win_data`` port instead of the data memory,
a cycle after ``win_addr`` (the address's other bits) like the memory (``win_en``: the program addresses the window
in this cycle); stores there write nothing. The data memory then has at most 2^(ADDR_BITS − 1) words.

**Host port.** While not ``busy`` the data memory is the host's: ``host_addr``, ``host_wdata``, ``host_we``
(a write at the edge), ``host_rdata`` (the word at the ``host_addr`` of the previous cycle).

**Memory hook and boot.** ``memory`` (a hook with :func:`~loco_fpga.hdl.layer.default_memory`'s signature,
called with ``name="microdata"``) replaces the data memory, e.g. by SPRAM, which has no initial contents: then
``init`` must be empty and ``boot`` (an entry address) is run after every reset — ``busy`` is high from the reset
through that run's HALT, 1 + its cycles. The memory needs one port only: the program's ST is a one-cycle
instruction whose read data nobody uses, and the host reads only in cycles it does not write.

Ports: ``start`` (In 1, a pulse; ignored while busy), ``entry`` (In ADDR_BITS: the first instruction),
``zbase`` (In ADDR_BITS: Z at the start),
``busy`` (Out 1), ``host_addr`` (In ADDR_BITS), ``host_wdata`` (In signed DATA_BITS), ``host_we`` (In 1),
``host_rdata`` (Out signed DATA_BITS), ``a`` (Out signed 64: the accumulator, valid while not busy).
B, Q, X, Y, the loop counters and PC are attributes (``b``, ``q``, ``x``, ``y``, ``loops``, ``pc``) for
simulation.
"""


from collections.abc import Mapping, Sequence
from functools import reduce
import operator

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .layer import BLOCK_RAM
from .microcode import ADDR_BITS, CHUNK, DATA_BITS, LOOPS, MEM_OPS, WORD, Cond, Instr, MulMode, Op, Reg, Shift, encode

__all__ = ["Sequencer", "op_cycles", "WORD_LAYOUT", "DIGITS"]

#: the digit widths the datapath can be built with (a digit must hold the 15-bit Horner shift)
DIGITS = (16, 32, 64)

#: an instruction word as ``encode`` lays it out; LDI's ``high`` is ``s`` bit 0 and its immediate ``imm20``
WORD_LAYOUT = data.StructLayout({
    "op": 5, "r": 2, "s": 3, "ux": 1, "uy": 1,
    "tail": data.UnionLayout({
        "imm20": signed(20),
        "f": data.StructLayout({"imm": ADDR_BITS, "mode": 2, "bi": 2, "bs": 1, "qj": 2, "qs": 1}),
    }),
})

_ONE_CYCLE = frozenset({Op.NOP, Op.ST, Op.SETX, Op.SETZ, Op.ADDX, Op.SETY, Op.ADDY, Op.MOVX, Op.SETL, Op.DJNZ, Op.JMP,
                        Op.BR, Op.CALL, Op.RET, Op.HALT} | {getattr(Op, name) for name in ("MOVY", "MOVL")
                                                            if hasattr(Op, name)})
_TWO_PASS = frozenset({Op.DIVSTEP, Op.SQRTSTEP})


def op_cycles(op: Op, *, digit: int = 16) -> int:
    """Cycles one ``op`` takes on a :class:`Sequencer` of digit width ``digit`` (see the module's table)."""
    if digit not in DIGITS:
        raise ValueError(f"digit = {digit!r}: expected one of {DIGITS}")
    n = WORD // digit
    op = Op(op)
    if op in _ONE_CYCLE:
        return 1
    if op in _TWO_PASS:
        return 1 + 2 * n
    if op == Op.MUL:
        return 2 + n
    return 1 + n


# selections of the adder's operands (local to the datapath)
_L_A, _L_SHL1, _L_SHL2, _L_SHL8, _L_SHL15, _L_SAR1, _L_SAR8, _L_ZERO = range(8)
_R_B, _R_Q, _R_N, _R_BS2, _R_ZERO = range(5)
_N_MEM, _N_P, _N_C = range(3)
_KEEP, _FROM_S, _SHL1, _SHL2 = range(4)        # what a register's new top digit is


class Sequencer(wiring.Component):
    """Executes ``code`` (a list of :class:`~loco_fpga.hdl.microcode.Instr`) on a data memory of ``depth``
    signed ``DATA_BITS``-bit words (initial contents ``init``), SAT selecting among ``widths``; ``digit``: the
    datapath's width (16, 32 or 64 bits per cycle; see the module docstring for the cycle table)."""

    def __init__(self, code: Sequence[Instr], *, depth: int, widths: Sequence[int], init: Sequence[int] | None = None,
                 digit: int = 16, memory=None, boot: int | None = None, window: bool = False):
        try:
            self._code = list(code)
            if not self._code or not all(isinstance(ins, Instr) for ins in self._code):
                raise ValueError(f"code = {code!r}: expected a non-empty list of Instr")
            if len(self._code) > 1 << ADDR_BITS:
                raise ValueError(f"code has {len(self._code)} instructions: at most {1 << ADDR_BITS}")
            self._words = [encode(ins) for ins in self._code]
            if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 1 << ADDR_BITS:
                raise ValueError(f"depth = {depth!r}: must be an integer in [1, {1 << ADDR_BITS}]")
            widths = tuple(widths)
            if not 1 <= len(widths) <= 8 or not all(isinstance(w, int) and not isinstance(w, bool) and 2 <= w <= WORD
                                                    for w in widths):
                raise ValueError(f"widths = {widths!r}: expected 1 … 8 integer bit widths in [2, {WORD}]")
            init = [] if init is None else [int(v) for v in init]
            if len(init) > depth:
                raise ValueError(f"init has {len(init)} words: more than depth = {depth}")
            bad = [v for v in init if not -(1 << (DATA_BITS - 1)) <= v < 1 << (DATA_BITS - 1)]
            if bad:
                raise ValueError(f"init value {bad[0]} does not fit {DATA_BITS} signed bits")
            if digit not in DIGITS:
                raise ValueError(f"digit = {digit!r}: expected one of {DIGITS}")
            if boot is not None and (isinstance(boot, bool) or not isinstance(boot, int)
                                     or not 0 <= boot < len(self._code)):
                raise ValueError(f"boot = {boot!r}: expected None or an address in the code (0 … "
                                 f"{len(self._code) - 1})")
            if memory is not None and init:
                raise ValueError("init: a memory hook's data memory has no initial contents (let a boot entry "
                                 "write them)")
            if memory is not None and not callable(memory):
                raise ValueError(f"memory = {memory!r}: expected None or a memory hook (shape=, depth=, name=)")
            if not isinstance(window, bool):
                raise ValueError(f"window = {window!r}: must be True or False")
            if window and depth > 1 << (ADDR_BITS - 1):
                raise ValueError(f"window = True: depth = {depth} must leave the upper half of the address space "
                                 f"(at most {1 << (ADDR_BITS - 1)} words)")
        except ValueError:
            self._MustUse__silence = True       # a block that failed to construct is not an unused elaboratable
            raise
        self._depth, self._widths, self._init, self._digit = depth, widths, init, digit
        self._memory, self._boot, self._window = memory, boot, window
        members = {"start": In(1), "entry": In(ADDR_BITS), "zbase": In(ADDR_BITS), "busy": Out(1),
                   "host_addr": In(ADDR_BITS), "host_wdata": In(signed(DATA_BITS)), "host_we": In(1),
                   "host_rdata": Out(signed(DATA_BITS)), "a": Out(signed(WORD))}
        if window:
            members |= {"win_addr": Out(ADDR_BITS - 1), "win_en": Out(1), "win_data": In(signed(DATA_BITS))}
        super().__init__(members)
        # the architectural registers (A is the port ``a``), for simulation and debugging
        self.b = Signal(WORD)
        self.q = Signal(WORD)
        self.x = Signal(ADDR_BITS)
        self.y = Signal(ADDR_BITS)
        self.z = Signal(ADDR_BITS)
        self.loops = Array(Signal(ADDR_BITS, name=f"l{i}") for i in range(LOOPS))
        self.pc = Signal(ADDR_BITS, init=boot or 0)
        self.link = Signal(ADDR_BITS)

    code = property(lambda self: list(self._code))
    depth = property(lambda self: self._depth)
    widths = property(lambda self: self._widths)
    digit = property(lambda self: self._digit)
    boot = property(lambda self: self._boot)
    #: whether the upper half of the address space reads the ``win_*`` port
    window = property(lambda self: self._window)
    #: digits of a 64-bit register (cycles of one pass)
    digits = property(lambda self: WORD // self._digit)

    @property
    def timing(self) -> dict[Op, int]:
        """Cycles of every op (the module's table)."""
        return {op: op_cycles(op, digit=self._digit) for op in Op}

    def cycles(self, counts: Mapping[Op, int]) -> int:
        """Cycles of a run (``busy`` high) that executed ``counts[op]`` instructions of each op — e.g.
        ``Machine.counts`` after ``Machine.run``, which includes the HALT."""
        return sum(n * op_cycles(op, digit=self._digit) for op, n in counts.items())

    def elaborate(self, platform):
        m = Module()
        D, n = self._digit, self.digits
        a, b, q, x, y, loops, pc, link = (Signal(WORD, name="a_reg"), self.b, self.q, self.x, self.y, self.loops,
                                          self.pc, self.link)
        m.d.comb += self.a.eq(a)

        # -- memories ---------------------------------------------------------------------------------------
        m.submodules.rom = rom = memory.Memory(shape=32, depth=len(self._words), init=self._words,
                                               attrs=BLOCK_RAM)
        if self._memory is None:
            dmem = memory.Memory(shape=signed(DATA_BITS), depth=self._depth, init=self._init, attrs=BLOCK_RAM)
        else:
            dmem = self._memory(shape=signed(DATA_BITS), depth=self._depth, name="microdata")
        m.submodules.data = dmem
        rom_rd = rom.read_port(domain="sync")
        d_rd, d_wr = dmem.read_port(domain="sync"), dmem.write_port()
        word = data.View(WORD_LAYOUT, rom_rd.data)
        op, r, s, imm = word.op, word.r, word.s, word.tail.f.imm
        mem = Signal(signed(DATA_BITS))

        def is_(*ops):
            return reduce(operator.or_, (op == int(o) for o in ops))

        # -- sequencing: IDLE → DECODE → [WAIT (MUL)] → DIGIT × n (× 2 for the two-pass steps) → DECODE … ----
        k = Signal(range(max(n, 2)))               # the digit a DIGIT cycle works on
        second = Signal()                          # second pass of DIVSTEP / SQRTSTEP
        first = Signal()
        last = Signal()
        m.d.comb += [first.eq(k == 0), last.eq(k == n - 1)]
        in_decode, in_wait, in_digit = Signal(), Signal(), Signal()
        fetch = Signal()                           # the last cycle of an instruction: ROM address ← next PC
        next_pc = Signal(ADDR_BITS)
        one_cycle = is_(*_ONE_CYCLE)
        two_pass = is_(*_TWO_PASS)

        with m.FSM(init="IDLE" if self._boot is None else "BOOT") as fsm:
            if self._boot is not None:
                with m.State("BOOT"):              # after a reset: the boot entry (pc's initial value)
                    m.next = "DECODE"
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.entry), self.z.eq(self.zbase)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(op == Op.HALT):
                    m.next = "IDLE"
                with m.Elif(one_cycle):
                    m.d.comb += fetch.eq(1)
                with m.Elif(op == Op.MUL):
                    m.next = "WAIT"
                with m.Else():
                    m.next = "DIGIT"
            with m.State("WAIT"):
                m.next = "DIGIT"
            with m.State("DIGIT"):
                m.d.sync += k.eq(Mux(last, 0, k + 1))
                with m.If(last):
                    with m.If(two_pass & ~second):
                        m.d.sync += second.eq(1)
                    with m.Else():
                        m.d.sync += second.eq(0)
                        m.d.comb += fetch.eq(1)
                        m.next = "DECODE"
        # the state as plain expressions (continuous assignments in Verilog: defined from time 0 in every simulator)
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")), in_decode.eq(fsm.ongoing("DECODE")),
                     in_wait.eq(fsm.ongoing("WAIT")), in_digit.eq(fsm.ongoing("DIGIT"))]
        with m.If(fetch):
            m.d.sync += pc.eq(next_pc)
        m.d.comb += rom_rd.addr.eq(Mux(self.busy, Mux(fetch, next_pc, pc), self.entry))

        # -- control: branches, index registers, loop counters ------------------------------------------------
        # A = 0 as a flag kept with A: every digit cycle writes one digit of A (the adder's or its old one), so the
        # flag is the AND of the digits' "= 0" over a pass (a 64-bit comparison would sit on the branch path)
        a_zero, a_neg = Signal(init=1), a[WORD - 1]
        cond_of = {Cond.Z: a_zero, Cond.NZ: ~a_zero, Cond.NEG: a_neg, Cond.NNEG: ~a_neg,
                   Cond.POS: ~a_neg & ~a_zero, Cond.NPOS: a_neg | a_zero}
        cond = Array(cond_of[c] for c in sorted(Cond))[s]
        loop = loops[s[:2]]
        loop_dec = Signal(ADDR_BITS)
        m.d.comb += loop_dec.eq(loop - 1)
        taken = is_(Op.JMP, Op.CALL) | (is_(Op.BR) & cond) | (is_(Op.DJNZ) & (loop_dec != 0))
        m.d.comb += next_pc.eq(Mux(is_(Op.RET), link, Mux(taken, imm, pc + 1)))
        # the effective address imm + X·ux + Y·uy; ADDX / ADDY reuse its adder (imm + X, imm + Y)
        use_x = Mux(is_(Op.ADDX), 1, Mux(is_(Op.ADDY), 0, word.ux))
        use_y = Mux(is_(Op.ADDY), 1, Mux(is_(Op.ADDX), 0, word.uy))
        use_z = rom_rd.data[9] & is_(*MEM_OPS)
        ea = Signal(ADDR_BITS)
        m.d.comb += ea.eq(imm + Mux(use_x, x, 0) + Mux(use_y, y, 0) + Mux(use_z, self.z, 0))
        # one next-value bus per register kind and a write enable per register (the flip-flops' CE): no per-counter
        # multiplexers
        a_low = a[:ADDR_BITS]
        has_movy, has_movl = hasattr(Op, "MOVY"), hasattr(Op, "MOVL")
        from_a = Signal()
        m.d.comb += from_a.eq(is_(Op.MOVX, *([Op.MOVY] if has_movy else []), *([Op.MOVL] if has_movl else [])))
        index_next = Signal(ADDR_BITS)
        m.d.comb += index_next.eq(Mux(from_a, a_low, Mux(is_(Op.ADDX, Op.ADDY), ea, imm)))
        with m.If(in_decode & is_(Op.SETX, Op.ADDX, Op.MOVX)):
            m.d.sync += x.eq(index_next)
        with m.If(in_decode & is_(Op.SETY, Op.ADDY, *([Op.MOVY] if has_movy else []))):
            m.d.sync += y.eq(index_next)
        with m.If(in_decode & is_(Op.SETZ)):
            m.d.sync += self.z.eq(imm)
        loop_next = Signal(ADDR_BITS)
        m.d.comb += loop_next.eq(Mux(from_a, a_low, Mux(is_(Op.DJNZ), loop_dec, imm)))
        loop_write = in_decode & is_(Op.SETL, Op.DJNZ, *([Op.MOVL] if has_movl else []))
        for i in range(LOOPS):
            with m.If(loop_write & (s[:2] == i)):
                m.d.sync += loops[i].eq(loop_next)
        with m.If(in_decode & is_(Op.CALL)):
            m.d.sync += link.eq(pc + 1)

        # -- data memory: the program's while busy, the host's otherwise --------------------------------------
        m.d.comb += [
            d_rd.addr.eq(Mux(self.busy, ea, self.host_addr)),
            d_wr.addr.eq(Mux(self.busy, ea, self.host_addr)),
            d_wr.data.eq(Mux(self.busy, a[:DATA_BITS], self.host_wdata)),
            d_wr.en.eq(Mux(self.busy, in_decode & is_(Op.ST), self.host_we)),
            self.host_rdata.eq(mem),
        ]
        if self._window:
            # the upper half of the address space reads the window port (the program's, while busy): its word comes
            # a cycle after the address, as the memory's does. Stores there write nothing
            in_window, windowed = Signal(), Signal()
            m.d.comb += [in_window.eq(self.busy & ea[ADDR_BITS - 1]), self.win_addr.eq(ea[:ADDR_BITS - 1]),
                         self.win_en.eq(in_window)]
            m.d.sync += windowed.eq(in_window)
            with m.If(in_window):
                m.d.comb += d_wr.en.eq(0)
            m.d.comb += mem.eq(Mux(windowed, self.win_data, d_rd.data))
        else:
            m.d.comb += mem.eq(d_rd.data)

        # -- the multiplier: P = chunk(B or the data word, bi, bs) · chunk(Q, qj, qs), written in WAIT -------------
        f = word.tail.f
        mem64 = Cat(mem, mem[DATA_BITS - 1].replicate(WORD - DATA_BITS))

        def chunk(value, index, is_signed):
            chunks = WORD // CHUNK                       # 4: bits 0 … 59 (+ the sign bit 60 of chunk 3)
            low = Array(value[CHUNK * i:CHUNK * i + CHUNK] for i in range(chunks))[index]
            top = Array(value[CHUNK * i + CHUNK] for i in range(chunks))[index] & is_signed
            return Cat(low, top).as_signed()

        mul_a, mul_b = Signal(signed(16)), Signal(signed(16))
        p = Signal(signed(32), reset_less=True)       # the SB_MAC16's output register
        m.d.comb += [mul_a.eq(Mux(s[0], chunk(mem64, f.bi, f.bs), chunk(b, f.bi, f.bs))),
                     mul_b.eq(chunk(q, f.qj, f.qs))]
        with m.If(in_wait):
            m.d.sync += p.eq(mul_a * mul_b)

        # -- what the instruction does with the adder: decoded from the ROM word in DECODE and registered, so the
        # digit cycles' operand selection starts at flip-flops (for timing). The two-pass steps' second pass
        # changes a few of them with ``second`` and ``ok`` (below)
        lsel, rsel, nsel = Signal(range(8)), Signal(range(5)), Signal(range(3))
        inv_l, inv_r, cin0 = Signal(), Signal(), Signal()
        a_src, b_src, q_src = Signal(range(4)), Signal(range(4)), Signal(range(4))
        ok = Signal()                              # DIVSTEP / SQRTSTEP: the trial difference is ≥ 0
        # SAT's range test and A's sign, on A at rest (DECODE)
        fit_tests = []
        for w in self._widths:
            upper = a[w - 1:]
            fit_tests.append(upper.all() | ~upper.any())
        fits, a_sign = Array(fit_tests)[s], a_neg
        m.d.comb += [lsel.eq(_L_ZERO), rsel.eq(_R_ZERO), nsel.eq(_N_MEM)]

        def write(dest):
            with m.Switch(dest):
                for reg, src in ((Reg.A, a_src), (Reg.B, b_src), (Reg.Q, q_src)):
                    with m.Case(reg):
                        m.d.comb += src.eq(_FROM_S)

        with m.Switch(op):
            with m.Case(Op.LD):
                m.d.comb += rsel.eq(_R_N)
                write(r)
            with m.Case(Op.LDI):
                m.d.comb += [rsel.eq(_R_N), nsel.eq(_N_C)]
                write(r)
            with m.Case(Op.MOV):
                with m.Switch(s):
                    with m.Case(Reg.A):
                        m.d.comb += lsel.eq(_L_A)
                    with m.Case(Reg.B):
                        m.d.comb += rsel.eq(_R_B)
                    with m.Case(Reg.Q):
                        m.d.comb += rsel.eq(_R_Q)
                write(r)
            with m.Case(Op.ADD, Op.SUB):
                m.d.comb += [lsel.eq(_L_A), rsel.eq(Mux(s[0], _R_N, _R_B)), a_src.eq(_FROM_S),
                             inv_r.eq(op == Op.SUB), cin0.eq(op == Op.SUB)]
            with m.Case(Op.NEG):
                m.d.comb += [lsel.eq(_L_A), inv_l.eq(1), cin0.eq(1), a_src.eq(_FROM_S)]
            with m.Case(Op.SHIFT):
                shift_of = {Shift.SAR1: _L_SAR1, Shift.SAR8: _L_SAR8, Shift.SHL1: _L_SHL1, Shift.SHL8: _L_SHL8}
                m.d.comb += [lsel.eq(Array(Const(shift_of[h], 3) for h in sorted(Shift))[s[:2]]),
                             a_src.eq(_FROM_S)]
            with m.Case(Op.SAT):
                # out of range: A ← M or ~M (M = 2^(w−1) − 1) by A's sign; in range: A unchanged
                m.d.comb += [rsel.eq(_R_N), nsel.eq(_N_C), inv_r.eq(a_sign), a_src.eq(Mux(fits, _KEEP, _FROM_S))]
            with m.Case(Op.MUL):
                m.d.comb += [rsel.eq(_R_N), nsel.eq(_N_P), a_src.eq(_FROM_S)]
                with m.Switch(f.mode):
                    with m.Case(MulMode.ADD):
                        m.d.comb += lsel.eq(_L_A)
                    with m.Case(MulMode.HORNER):
                        m.d.comb += lsel.eq(_L_SHL15)
                    with m.Case(MulMode.SUB):
                        m.d.comb += [lsel.eq(_L_A), inv_r.eq(1), cin0.eq(1)]
            with m.Case(Op.DIVSTEP, Op.SQRTSTEP):
                # pass 1: the sign of L − R (what is registered); pass 2: A ← L − R if it is ≥ 0, else L (R gated to 0)
                sqrt = op == Op.SQRTSTEP
                m.d.comb += [lsel.eq(Mux(sqrt, _L_SHL2, _L_SHL1)), rsel.eq(Mux(sqrt, _R_BS2, _R_B)),
                             inv_r.eq(1), cin0.eq(1), q_src.eq(Mux(sqrt, _SHL2, _SHL1)),
                             b_src.eq(Mux(sqrt, _SHL1, _KEEP))]
        decoded = (lsel, rsel, nsel, inv_l, inv_r, cin0, a_src, b_src, q_src)
        kept = [Signal.like(v, name=f"{v.name}_q") for v in decoded]
        pass2, is_div = Signal(), Signal()         # a two-pass step; DIVSTEP
        with m.If(in_decode):
            m.d.sync += [k_.eq(v) for k_, v in zip(kept, decoded)]
            m.d.sync += [pass2.eq(two_pass), is_div.eq(op == Op.DIVSTEP)]
        lsel, rsel, nsel, inv_l, inv_r, cin0, a_src, b_src, q_src = kept
        # the two-pass steps: pass 1 writes only the sign (A, B, Q keep their digits); pass 2 gates R to 0 unless
        # the difference was ≥ 0, and writes A (and shifts Q, B)
        gate_r = pass2 & second & ~ok
        inv_r = Mux(pass2, ~second | ok, inv_r)
        cin0 = Mux(pass2, ~second | ok, cin0)
        a_src = Mux(pass2, Mux(second, _FROM_S, _KEEP), a_src)
        b_src = Mux(pass2 & ~second, _KEEP, b_src)
        q_src = Mux(pass2 & ~second, _KEEP, q_src)

        # -- operands, one digit ---------------------------------------------------------------------------------
        prev_a = Signal(CHUNK)        # the top bits of the previous digit of A, B, Q (0 on a pass's first digit)
        prev_b, prev_q = Signal(2), Signal(2)
        a0, b0, q0 = a[:D], b[:D], q[:D]
        if n > 1:
            above1, above8 = Mux(last, a0[D - 1], a[D]), Mux(last, a0[D - 1].replicate(8), a[D:D + 8])
        else:
            above1, above8 = a0[D - 1], a0[D - 1].replicate(8)
        l_raw = Array([
            a0,
            Cat(prev_a[CHUNK - 1] | (first & is_div & q[WORD - 1]), a0[:D - 1]),
            Cat(prev_a[CHUNK - 2] | (first & q[WORD - 2]), prev_a[CHUNK - 1] | (first & q[WORD - 1]), a0[:D - 2]),
            Cat(prev_a[CHUNK - 8:], a0[:D - 8]),
            Cat(prev_a, a0[:D - CHUNK]),
            Cat(a0[1:], above1),
            Cat(a0[8:], above8),
            Const(0, D),
        ])[lsel]

        # the constant: LDI's immediate (imm or imm ≪ 44) or SAT's bound 2^(w−1) − 1
        imm20 = word.tail.imm20
        ldi_value = Mux(s[0], Cat(Const(0, WORD - 20), imm20), imm20.as_signed())
        bound = Array(Const((1 << (w - 1)) - 1, WORD) for w in self._widths)[s]
        constant = Mux(op == Op.SAT, bound, ldi_value)[:WORD]
        narrow = Mux(nsel == _N_P, p, mem)
        narrow64 = Cat(narrow, narrow[DATA_BITS - 1].replicate(WORD - DATA_BITS))
        # digit k of the narrow operand: a case on k over constant slices (a word_select would be a shifter)
        is_c = nsel == _N_C
        n_digit = Array(Mux(is_c, constant[D * i:D * (i + 1)], narrow64[D * i:D * (i + 1)]) for i in range(n))[k]
        r_raw = Array([
            b0,
            q0,
            n_digit,
            Cat(prev_b[0] | first, prev_b[1], b0[:D - 2]),          # (B ≪ 2) | 1
            Const(0, D),
        ])[rsel]

        l_op, r_op = Signal(D), Signal(D)
        m.d.comb += [l_op.eq(l_raw ^ inv_l.replicate(D)), r_op.eq((r_raw & ~gate_r.replicate(D)) ^ inv_r.replicate(D))]
        carry = Signal()
        total = Signal(D + 1)         # bit D: the carry out, or on the last digit the sign of the 65-bit result
        m.d.comb += total.eq(Cat(l_op, last & l_op[D - 1]) + Cat(r_op, last & r_op[D - 1]) + Mux(first, cin0, carry))
        result = total[:D]

        # -- the digit cycle: rotate A, B, Q by one digit, the new top digits from the adder or shifted ------------
        def top(src, low, prev, fill):
            return Array([low, result, Cat(prev[1] | (first & fill), low[:D - 1]), Cat(prev, low[:D - 2])])[src]

        a_top = Mux(a_src == _FROM_S, result, a0)
        b_top = top(b_src, b0, prev_b, ok)
        q_top = top(q_src, q0, prev_q, ok)
        with m.If(in_digit):         # (read in DECODE only: after a pass's last digit it covers all of A)
            m.d.sync += a_zero.eq((first | a_zero) & (a_top == 0))
            m.d.sync += [
                a.eq(Cat(a[D:], a_top) if n > 1 else a_top),
                b.eq(Cat(b[D:], b_top) if n > 1 else b_top),
                q.eq(Cat(q[D:], q_top) if n > 1 else q_top),
                prev_a.eq(Mux(last, 0, a0[D - CHUNK:])),
                prev_b.eq(Mux(last, 0, b0[D - 2:])),
                prev_q.eq(Mux(last, 0, q0[D - 2:])),
                carry.eq(total[D]),
            ]
            with m.If(last & ~second):
                m.d.sync += ok.eq(~total[D])
        return m
