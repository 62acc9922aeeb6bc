"""A small microcoded datapath for the UP5K's LOCO cluster work: instruction set, assembler and the
instruction-set simulator (ISS) that defines what every instruction does.

Why: the parallel :class:`~loco_fpga.hdl.clusters.ClusterBlock` needs ≈ 4,000 iCE40 LUTs and 10 MAC16 even with
one unit — far more than the UP5K has left beside its network. The same integer algorithm can run as a
program on one 64-bit accumulator, one 16 × 16 signed multiplier (one ``SB_MAC16``) used in 15-bit chunks,
a restoring divide step and a restoring square-root step: slow (tens of thousands of cycles per sample) but
small. This module fixes the machine; ``hdl/loco_program.py`` is the LOCO program for it, checked against
``FixedClusters`` by running it on :class:`Machine`.

Architecture (every register a two's-complement integer; results wrap to the register's width):

- ``A``, ``B``, ``Q``: 64-bit. ``A`` is the accumulator (every ALU result lands there), ``B`` the second
  operand / divisor / root, ``Q`` the multiplier operand and the shift register of the divide and square-root
  steps.
- ``X``, ``Y``: 12-bit index registers; ``Z``: 12-bit base register (``SETZ``: one copy of the code serves
  several banks of data, each at its own base; a run starts with the Z it is given); a memory operand's address is ``imm + X·ux + Y·uy + Z·uz``
  (mod 2^12).
- ``L0`` … ``L3``: 12-bit loop counters (``DJNZ``), set from an immediate (``SETL``) or from A (``MOVL``);
  X and Y can also be set from A (``MOVX``, ``MOVY``).
- data memory: ``DATA_BITS``-bit signed words; a load sign-extends, a store writes A's low ``DATA_BITS``
  bits (the ISS refuses a store of a value that does not fit: the program saturates first).
- one return address (``CALL``/``RET``: no nesting).

Chunks (the multiplier): ``chunk(R, i, signed)`` = bits 15i … 15i + 14 of R, zero-extended (unsigned chunk),
or bits 15i … 15i + 15 as a 16-bit signed number (signed chunk: the top chunk of a value). A signed value
of n chunks (|v| < 2^15n) is Σ_i chunk(v, i)·2^15i with chunks 0 … n − 2 unsigned and chunk n − 1 signed,
so every partial product is one 16 × 16 signed product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import enum

__all__ = ["Op", "Reg", "Cond", "Shift", "MulMode", "Instr", "Program", "Machine", "MachineError", "ZRel",
           "MEM_OPS", "DATA_BITS", "ADDR_BITS", "WORD", "CHUNK", "chunk", "encode", "decode"]

DATA_BITS = 32
ADDR_BITS = 12
WORD = 64
CHUNK = 15
IMM_BITS = 20          # LDI's immediate (signed); with ``high`` it lands in bits 44 … 63
LOOPS = 4

_MASK = (1 << WORD) - 1


def wrap(x: int, bits: int = WORD) -> int:
    """x as a ``bits``-bit two's-complement integer."""
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def chunk(r: int, i: int, signed: bool) -> int:
    if signed:
        return wrap(r >> (CHUNK * i), 16)
    return (r >> (CHUNK * i)) & ((1 << CHUNK) - 1)


class Op(enum.IntEnum):
    NOP = 0
    LD = 1        # r ← mem[ea]
    ST = 2        # mem[ea] ← A
    LDI = 3       # r ← imm (or imm << 44 with high)
    MOV = 4       # d ← s
    ADD = 5       # A ← A + (B | mem[ea])
    SUB = 6       # A ← A − (B | mem[ea])
    NEG = 7       # A ← −A
    SHIFT = 8     # A ← A >> 1 | A >> 8 | A << 1 | A << 8 (arithmetic right shifts)
    SAT = 9       # A ← clamp(A) to widths[w] signed bits
    MUL = 10      # P = chunk(B | mem[ea], i) · chunk(Q, j); A ← P | A + P | (A << 15) + P | A − P
    DIVSTEP = 11  # restoring divide step: remainder A, dividend → quotient Q, divisor B
    SQRTSTEP = 12  # restoring square-root step: remainder A, radicand Q (2 bits a step), root B
    SETX = 13
    ADDX = 14
    SETY = 15
    ADDY = 16
    MOVX = 17     # X ← A mod 2^12
    SETL = 18     # L_n ← imm
    DJNZ = 19     # L_n ← L_n − 1; jump if L_n ≠ 0
    JMP = 20
    BR = 21       # jump if cond(A)
    CALL = 22
    RET = 23
    HALT = 24
    MOVY = 25     # Y ← A mod 2^12
    MOVL = 26     # L_n ← A mod 2^12
    SETZ = 27     # Z ← imm


#: the ops with a memory operand (``uz`` applies to them only)
MEM_OPS = frozenset({Op.LD, Op.ST, Op.ADD, Op.SUB, Op.MUL})


class ZRel(int):
    """An address relative to Z: the assembler sets ``uz`` for it (sums with ints stay relative)."""

    def __add__(self, other):
        return ZRel(int(self) + int(other))

    __radd__ = __add__

    def __sub__(self, other):
        return ZRel(int(self) - int(other))

    def __repr__(self):
        return f"Z+{int(self)}"


class Reg(enum.IntEnum):
    A = 0
    B = 1
    Q = 2


class Cond(enum.IntEnum):
    Z = 0      # A = 0
    NZ = 1     # A ≠ 0
    NEG = 2    # A < 0
    NNEG = 3   # A ≥ 0
    POS = 4    # A > 0
    NPOS = 5   # A ≤ 0


class Shift(enum.IntEnum):
    SAR1 = 0
    SAR8 = 1
    SHL1 = 2
    SHL8 = 3


class MulMode(enum.IntEnum):
    SET = 0
    ADD = 1
    HORNER = 2   # A ← (A << 15) + P
    SUB = 3


@dataclass(frozen=True)
class Instr:
    """One instruction. Fields not used by ``op`` stay at their defaults (they encode as 0)."""
    op: Op
    r: int = 0            # LD/LDI/MOV destination; MOV source in ``s``
    s: int = 0            # MOV source; ADD/SUB/MUL operand: 0 = B, 1 = memory; SHIFT kind; SAT width index;
    #                       BR condition; SETL/DJNZ loop counter
    ux: bool = False
    uy: bool = False
    uz: bool = False      # memory operand (LD, ST, ADD, SUB, MUL): + Z
    imm: int = 0          # address / immediate / jump target
    high: bool = False    # LDI: imm << 44
    mode: int = 0         # MUL mode
    bi: int = 0           # MUL: chunk of the first operand, signed?
    bs: bool = False
    qj: int = 0           # MUL: chunk of Q, signed?
    qs: bool = False

    def __str__(self) -> str:
        names = {"r": Reg, "mode": MulMode}
        parts = [self.op.name]
        for f in ("r", "s", "imm", "mode", "bi", "bs", "qj", "qs", "ux", "uy", "uz", "high"):
            v = getattr(self, f)
            if v:
                parts.append(f"{f}={names[f](v).name if f in names else v}")
        return " ".join(parts)


# -- encoding: 32-bit words ------------------------------------------------------------------------------
# every op:  op[0:5] | r[5:7] | s[7:10] | ux[10] | uy[11] | imm[12:24]  (address, jump target, index, count)
# memory ops (LD, ST, ADD, SUB, MUL): s[7] only (0/1), uz[9]
# LDI:       op | r[5:7] | high[7] | imm[12:32] (20 bits, signed)
# MUL:       op | s[7] (1: memory operand) | ux | uy | imm[12:24] | mode[24:26] | bi[26:28] | bs[28] | qj[29:31] | qs[31]


def encode(ins: Instr) -> int:
    if ins.uz and ins.op not in MEM_OPS:
        raise ValueError(f"{ins.op.name}: uz applies to memory operands only")
    if ins.op in MEM_OPS and not 0 <= ins.s <= 1:
        raise ValueError(f"{ins.op.name}: s = {ins.s}, expected 0 or 1")
    word = int(ins.op) | ins.r << 5 | ins.s << 7 | int(ins.uz) << 9 | int(ins.ux) << 10 | int(ins.uy) << 11
    if ins.op == Op.LDI:
        if not -(1 << (IMM_BITS - 1)) <= ins.imm < (1 << (IMM_BITS - 1)):
            raise ValueError(f"LDI immediate {ins.imm} does not fit {IMM_BITS} signed bits")
        word |= int(ins.high) << 7 | (ins.imm & ((1 << IMM_BITS) - 1)) << 12
    else:
        if not 0 <= ins.imm < (1 << ADDR_BITS):
            raise ValueError(f"{ins.op.name} immediate {ins.imm} does not fit {ADDR_BITS} unsigned bits")
        word |= ins.imm << 12
    if ins.op == Op.MUL:
        word |= ins.mode << 24 | ins.bi << 26 | int(ins.bs) << 28 | ins.qj << 29 | int(ins.qs) << 31
    return word


def _field(word: int, lsb: int, width: int) -> int:
    return (word >> lsb) & ((1 << width) - 1)


def decode(word: int) -> Instr:
    op = Op(_field(word, 0, 5))
    kw = dict(op=op, r=_field(word, 5, 2), s=_field(word, 7, 3), ux=bool(_field(word, 10, 1)),
              uy=bool(_field(word, 11, 1)))
    if op in MEM_OPS:
        kw.update(s=_field(word, 7, 1), uz=bool(_field(word, 9, 1)))
    if op == Op.LDI:
        kw.update(s=0, high=bool(_field(word, 7, 1)), imm=wrap(_field(word, 12, IMM_BITS), IMM_BITS))
    else:
        kw["imm"] = _field(word, 12, ADDR_BITS)
    if op == Op.MUL:
        kw.update(mode=_field(word, 24, 2), bi=_field(word, 26, 2), bs=bool(_field(word, 28, 1)),
                  qj=_field(word, 29, 2), qs=bool(_field(word, 31, 1)))
    return Instr(**kw)


# -- assembler -------------------------------------------------------------------------------------------
@dataclass
class Program:
    """Instructions with symbolic jump targets (labels), resolved by :meth:`assemble`."""
    code: list = field(default_factory=list)     # Instr, or (Instr, label) for a jump
    labels: dict = field(default_factory=dict)
    _fresh: int = 0

    def label(self, name: str | None = None) -> str:
        """Define a label here (a fresh one when ``name`` is None); returns its name."""
        if name is None:
            name = self.fresh()
        if name in self.labels:
            raise ValueError(f"label {name!r} defined twice")
        self.labels[name] = len(self.code)
        return name

    def fresh(self, stem: str = "L") -> str:
        self._fresh += 1
        return f".{stem}{self._fresh}"

    def emit(self, op: Op, target: str | None = None, **kw) -> None:
        if isinstance(kw.get("imm"), ZRel):           # a Z-relative address: uz
            if op not in MEM_OPS:
                raise ValueError(f"{op.name}: a Z-relative immediate is a memory operand's only")
            kw.update(imm=int(kw["imm"]), uz=True)
        ins = Instr(op, **kw)
        self.code.append((ins, target) if target is not None else ins)

    # mnemonics
    def ld(self, r: Reg, imm: int, ux=False, uy=False): self.emit(Op.LD, r=r, imm=imm, ux=ux, uy=uy)
    def st(self, imm: int, ux=False, uy=False): self.emit(Op.ST, imm=imm, ux=ux, uy=uy)
    def ldi(self, r: Reg, imm: int, high=False): self.emit(Op.LDI, r=r, imm=imm, high=high)
    def mov(self, d: Reg, s: Reg): self.emit(Op.MOV, r=d, s=s)
    def add(self, imm: int | None = None, ux=False, uy=False): self._alu(Op.ADD, imm, ux, uy)
    def sub(self, imm: int | None = None, ux=False, uy=False): self._alu(Op.SUB, imm, ux, uy)
    def neg(self): self.emit(Op.NEG)
    def shift(self, kind: Shift): self.emit(Op.SHIFT, s=kind)
    def sat(self, w: int): self.emit(Op.SAT, s=w)
    def divstep(self): self.emit(Op.DIVSTEP)
    def sqrtstep(self): self.emit(Op.SQRTSTEP)
    def setx(self, imm: int): self.emit(Op.SETX, imm=imm)
    def setz(self, imm: int): self.emit(Op.SETZ, imm=imm)
    def addx(self, imm: int): self.emit(Op.ADDX, imm=imm % (1 << ADDR_BITS))
    def sety(self, imm: int): self.emit(Op.SETY, imm=imm)
    def addy(self, imm: int): self.emit(Op.ADDY, imm=imm % (1 << ADDR_BITS))
    def movx(self): self.emit(Op.MOVX)
    def movy(self): self.emit(Op.MOVY)
    def movl(self, n: int): self.emit(Op.MOVL, s=n)
    def setl(self, n: int, imm: int): self.emit(Op.SETL, s=n, imm=imm)
    def djnz(self, n: int, target: str): self.emit(Op.DJNZ, target, s=n)
    def jmp(self, target: str): self.emit(Op.JMP, target)
    def br(self, cond: Cond, target: str): self.emit(Op.BR, target, s=cond)
    def call(self, target: str): self.emit(Op.CALL, target)
    def ret(self): self.emit(Op.RET)
    def halt(self): self.emit(Op.HALT)

    def mul(self, mode: MulMode, bi: int, bs: bool, qj: int, qs: bool, mem: int | None = None,
            ux=False, uy=False):
        self.emit(Op.MUL, mode=mode, bi=bi, bs=bs, qj=qj, qs=qs, s=0 if mem is None else 1,
                  imm=0 if mem is None else mem, ux=ux, uy=uy)

    def _alu(self, op, imm, ux, uy):
        self.emit(op, s=0 if imm is None else 1, imm=0 if imm is None else imm, ux=ux, uy=uy)

    def assemble(self) -> list[Instr]:
        out = []
        for item in self.code:
            if isinstance(item, tuple):
                ins, target = item
                if target not in self.labels:
                    raise ValueError(f"undefined label {target!r}")
                item = Instr(**{**ins.__dict__, "imm": self.labels[target]})
            out.append(item)
        if len(out) > (1 << ADDR_BITS):
            raise ValueError(f"{len(out)} instructions: more than the {1 << ADDR_BITS} a target can address")
        return out


# -- the instruction-set simulator ---------------------------------------------------------------------------
class MachineError(RuntimeError):
    """The program did something the hardware would silently get wrong (a store that does not fit, a run away)."""


class Machine:
    """Runs assembled instructions on ``mem`` (a list of ints, the data memory) exactly as the gateware must.

    ``widths``: the signed bit widths ``SAT`` index selects (fixed when the gateware is built).
    ``cycles`` counts executed instructions (the gateware's cycle cost per instruction is its own business).
    """

    def __init__(self, code: list[Instr], mem: list[int], widths: tuple[int, ...]):
        self.code = code
        self.mem = mem
        self.widths = tuple(widths)
        self.a = self.b = self.q = 0
        self.x = self.y = self.z = 0
        self.loops = [0] * LOOPS
        self.link = 0
        self.pc = 0
        self.cycles = 0
        self.counts: dict[Op, int] = {}

    def reg(self, r: int) -> int:
        return (self.a, self.b, self.q)[r]

    def set_reg(self, r: int, v: int) -> None:
        v = wrap(v)
        if r == Reg.A:
            self.a = v
        elif r == Reg.B:
            self.b = v
        elif r == Reg.Q:
            self.q = v
        else:
            raise MachineError(f"register {r} does not exist")

    def _ea(self, ins: Instr) -> int:
        ea = (ins.imm + (self.x if ins.ux else 0) + (self.y if ins.uy else 0) + (self.z if ins.uz else 0)) \
            % (1 << ADDR_BITS)
        if ea >= len(self.mem):
            raise MachineError(f"pc {self.pc}: address {ea} outside the {len(self.mem)}-word data memory")
        return ea

    def _load(self, ins: Instr) -> int:
        return wrap(self.mem[self._ea(ins)], DATA_BITS)

    def run(self, entry: int, limit: int = 10_000_000, *, z: int = 0) -> int:
        """Run from ``entry`` to ``HALT`` with Z = ``z`` to start with (the sequencer's ``zbase`` at its
        ``start``); returns the instructions executed."""
        self.pc, self.z = entry, z % (1 << ADDR_BITS)
        start = self.cycles
        while True:
            if self.cycles - start >= limit:
                raise MachineError(f"no HALT after {limit} instructions (pc {self.pc})")
            if not 0 <= self.pc < len(self.code):
                raise MachineError(f"pc {self.pc} outside the program")
            ins = self.code[self.pc]
            self.cycles += 1
            self.counts[ins.op] = self.counts.get(ins.op, 0) + 1
            nxt = self.pc + 1
            op = ins.op
            if op == Op.HALT:
                return self.cycles - start
            if op == Op.NOP:
                pass
            elif op == Op.LD:
                self.set_reg(ins.r, self._load(ins))
            elif op == Op.ST:
                if wrap(self.a, DATA_BITS) != self.a:
                    raise MachineError(f"pc {self.pc}: store of {self.a}, which does not fit {DATA_BITS} bits")
                self.mem[self._ea(ins)] = self.a
            elif op == Op.LDI:
                self.set_reg(ins.r, ins.imm << 44 if ins.high else ins.imm)
            elif op == Op.MOV:
                self.set_reg(ins.r, self.reg(ins.s))
            elif op in (Op.ADD, Op.SUB):
                operand = self._load(ins) if ins.s else self.b
                self.a = wrap(self.a + operand if op == Op.ADD else self.a - operand)
            elif op == Op.NEG:
                self.a = wrap(-self.a)
            elif op == Op.SHIFT:
                self.a = wrap({Shift.SAR1: self.a >> 1, Shift.SAR8: self.a >> 8,
                               Shift.SHL1: self.a << 1, Shift.SHL8: self.a << 8}[Shift(ins.s)])
            elif op == Op.SAT:
                w = self.widths[ins.s]
                self.a = min(max(self.a, -(1 << (w - 1))), (1 << (w - 1)) - 1)
            elif op == Op.MUL:
                src = self._load(ins) if ins.s else self.b
                p = chunk(src, ins.bi, ins.bs) * chunk(self.q, ins.qj, ins.qs)
                self.a = wrap({MulMode.SET: p, MulMode.ADD: self.a + p, MulMode.HORNER: (self.a << CHUNK) + p,
                               MulMode.SUB: self.a - p}[MulMode(ins.mode)])
            elif op == Op.DIVSTEP:
                qbit = (self.q >> (WORD - 1)) & 1
                t = wrap((self.a << 1) | qbit) - self.b
                self.q = wrap(self.q << 1)
                if t >= 0:
                    self.a, self.q = wrap(t), self.q | 1
                else:
                    self.a = wrap((self.a << 1) | qbit)
            elif op == Op.SQRTSTEP:
                r = wrap((self.a << 2) | ((self.q >> (WORD - 2)) & 3))
                t = r - wrap((self.b << 2) | 1)
                self.q = wrap(self.q << 2)
                if t >= 0:
                    self.a, self.b = wrap(t), wrap((self.b << 1) | 1)
                else:
                    self.a, self.b = r, wrap(self.b << 1)
            elif op == Op.SETX:
                self.x = ins.imm
            elif op == Op.SETZ:
                self.z = ins.imm
            elif op == Op.ADDX:
                self.x = (self.x + ins.imm) % (1 << ADDR_BITS)
            elif op == Op.SETY:
                self.y = ins.imm
            elif op == Op.ADDY:
                self.y = (self.y + ins.imm) % (1 << ADDR_BITS)
            elif op == Op.MOVX:
                self.x = self.a % (1 << ADDR_BITS)
            elif op == Op.MOVY:
                self.y = self.a % (1 << ADDR_BITS)
            elif op == Op.MOVL:
                self.loops[ins.s] = self.a % (1 << ADDR_BITS)
            elif op == Op.SETL:
                self.loops[ins.s] = ins.imm
            elif op == Op.DJNZ:
                self.loops[ins.s] = (self.loops[ins.s] - 1) % (1 << ADDR_BITS)
                if self.loops[ins.s]:
                    nxt = ins.imm
            elif op == Op.JMP:
                nxt = ins.imm
            elif op == Op.BR:
                a = self.a
                if {Cond.Z: a == 0, Cond.NZ: a != 0, Cond.NEG: a < 0, Cond.NNEG: a >= 0,
                        Cond.POS: a > 0, Cond.NPOS: a <= 0}[Cond(ins.s)]:
                    nxt = ins.imm
            elif op == Op.CALL:
                self.link = self.pc + 1
                nxt = ins.imm
            elif op == Op.RET:
                nxt = self.link
            else:
                raise MachineError(f"pc {self.pc}: unknown op {op}")
            self.pc = nxt
