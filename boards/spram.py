"""Weight memories (and the micro cluster block's data memory) in the iCE40 UP5K's single-port SPRAM, behind the
memory hook.

One job: a memory with one read port (one cycle latency) and one write port, like ``amaranth.lib.memory.Memory``
as :func:`loco_fpga.hdl.layer.default_memory` returns it, built from ``SB_SPRAM256KA`` blocks (16K × 16 bits,
**single-ported**: a block either reads or writes in a cycle). The UP5K has four of them (1 Mbit) next to its 30
block RAMs (120 kbit); the layer engines' weight memories are the largest memories of the accelerator.

**Two banks.** The words are split over two banks by address bit :data:`BANK_BIT`, each bank its own blocks. The
only cycles in which a layer's weight memory is read and written at once are the update engine's sweep
(``hdl/update.py``): it reads word a while it writes word a − 4, the word it read :attr:`UpdateEngine.stages
<loco_fpga.hdl.update.UpdateEngine.stages>` = 4 cycles earlier — and a and a − 4 always differ in bit 2, so they
are in different banks. A write wins its bank; a read of the bank being written in the same cycle returns garbage
(the behavioural model returns :data:`POISON`, so a test that used such a word would fail). Other writes (a host
LOAD, RESET_STATE) happen in cycles whose read data nobody uses (docs/boards.md).

**One bank** (:class:`Spram`): the microcoded cluster block's data memory (``name = "microdata"``), 32-bit words
in two blocks side by side. Its sequencer never needs a read in the cycle after a write; SPRAM has no initial
contents, so the block's program writes it after a reset (``hdl/micro_clusters.py``).

:func:`spram_memory` is the hook for ``AcceleratorTop(memory=…)``: weight memories whose words fit
(``lanes`` × 16 bits ≤ 16 bits per block column, depth ≤ 2 × 16K) go into SPRAM while blocks are left (less the
``reserve`` for micro data), everything else into block RAM. On other platforms (simulation, ECP5)
:class:`BankedSpram` is two ``lib.memory.Memory`` banks with the same behaviour, conflicts included, and
:class:`Spram` one, which starts as garbage.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Shape, Signal, Value
from amaranth.lib import memory

from loco_fpga.hdl.layer import default_memory

__all__ = ["BankedSpram", "Spram", "spram_memory", "BANK_BIT", "SPRAM_BLOCKS", "SPRAM_DEPTH", "SPRAM_WIDTH", "POISON"]

#: address bit that selects the bank: the update engine writes word a − 2^BANK_BIT while it reads word a
BANK_BIT = 2
#: SB_SPRAM256KA blocks of the UP5K, words and bits of one block
SPRAM_BLOCKS = 4
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
#: what the behavioural model reads from a bank written in the same cycle (the cell model's ``x``)
POISON = 0x5A5A


def _is_ice40(platform) -> bool:
    if platform is None:
        return False
    from amaranth.vendor import SiliconBluePlatform  # noqa: PLC0415
    return isinstance(platform, SiliconBluePlatform)


class _Port:
    """The signals of one port (``addr``, ``data``, ``en``), as ``lib.memory`` ports have them."""

    def __init__(self, shape, depth: int, name: str, en_init: int):
        self.addr = Signal(range(depth), name=f"{name}_addr")
        self.data = Signal(shape, name=f"{name}_data")
        self.en = Signal(init=en_init, name=f"{name}_en")


class _Ports:
    """``read_port`` (one, sync) and ``write_port`` (one) of an SPRAM memory of ``_shape`` × ``_depth``."""

    def read_port(self, *, domain: str = "sync"):
        if domain != "sync" or self._read is not None:
            raise ValueError(f"domain = {domain!r}: one read port in the sync domain")
        self._read = _Port(self._shape, self._depth, "spram_rd", 1)
        return self._read

    def write_port(self):
        if self._write is not None:
            raise ValueError("write_port: one write port only")
        self._write = _Port(self._shape, self._depth, "spram_wr", 0)
        return self._write


class BankedSpram(_Ports, Elaboratable):
    """``depth`` words of ``shape`` in two SPRAM banks (see the module docstring): :meth:`read_port` (domain
    ``sync``, data one cycle after the address while ``en``) and :meth:`write_port` (``en``, ``addr``, ``data``),
    one of each. :attr:`blocks` = SB_SPRAM256KA cells used on an iCE40."""

    def __init__(self, *, shape, depth: int):
        self._shape = shape
        width = Shape.cast(shape).width
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 2 * SPRAM_DEPTH:
            self._MustUse__silence = True       # a block that failed to construct is not an unused elaboratable
            raise ValueError(f"depth = {depth!r}: must be an integer in [1, {2 * SPRAM_DEPTH}] (two banks of "
                             f"{SPRAM_DEPTH} words)")
        self._width, self._depth = width, depth
        self._columns = -(-width // SPRAM_WIDTH)
        self._read = self._write = None

    shape = property(lambda self: self._shape)
    depth = property(lambda self: self._depth)
    #: SB_SPRAM256KA cells: two banks of ⌈width / 16⌉ each
    blocks = property(lambda self: 2 * self._columns)

    def elaborate(self, platform):
        m = Module()
        rd = self._read or _Port(self._shape, self._depth, "spram_rd", 0)
        wr = self._write or _Port(self._shape, self._depth, "spram_wr", 0)
        width, columns = self._width, self._columns
        bank_depth = -(-self._depth // (2 << BANK_BIT)) << BANK_BIT      # words per bank

        def split(addr):          # (bank, address within the bank)
            a = addr.as_unsigned()
            return a[BANK_BIT], Cat(a[:BANK_BIT], a[BANK_BIT + 1:])

        rd_bank, rd_local = split(rd.addr)
        wr_bank, wr_local = split(wr.addr)
        read_bank = Signal()                # the bank read in the previous cycle
        written = Signal(2)                 # banks written in the previous cycle
        with m.If(rd.en):
            m.d.sync += read_bank.eq(rd_bank)
        m.d.sync += written.eq(Cat(wr.en & ~wr_bank, wr.en & wr_bank))
        wr_bits = Signal(columns * SPRAM_WIDTH)
        m.d.comb += wr_bits.eq(Value.cast(wr.data))
        outs = []
        ice40 = _is_ice40(platform)
        for b in range(2):
            write_here = wr.en & (wr_bank == b)
            local = Signal(14 if ice40 else range(max(2, bank_depth)), name=f"bank{b}_addr")
            m.d.comb += local.eq(Mux(write_here, wr_local, rd_local))
            out = Signal(columns * SPRAM_WIDTH, name=f"bank{b}_data")
            if ice40:
                for c in range(columns):
                    m.submodules[f"spram{b}_{c}"] = Instance(
                        "SB_SPRAM256KA",
                        i_ADDRESS=local, i_DATAIN=wr_bits[SPRAM_WIDTH * c:SPRAM_WIDTH * (c + 1)],
                        i_MASKWREN=0b1111, i_WREN=write_here, i_CHIPSELECT=write_here | rd.en,
                        i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                        o_DATAOUT=out[SPRAM_WIDTH * c:SPRAM_WIDTH * (c + 1)])
            else:
                bank = memory.Memory(shape=columns * SPRAM_WIDTH, depth=max(1, bank_depth), init=[])
                m.submodules[f"bank{b}"] = bank
                r, w = bank.read_port(domain="sync"), bank.write_port()
                m.d.comb += [r.addr.eq(local), r.en.eq(rd.en & ~write_here), w.addr.eq(local), w.data.eq(wr_bits),
                             w.en.eq(write_here)]
                m.d.comb += out.eq(Mux(written[b], Cat(*[Const(POISON, SPRAM_WIDTH)] * columns), r.data))
            outs.append(out)
        m.d.comb += rd.data.eq(Mux(read_bank, outs[1], outs[0])[:width])
        return m


class Spram(_Ports, Elaboratable):
    """``depth`` ≤ 16K words of ``shape`` in one bank of ⌈width / 16⌉ SPRAM blocks side by side (the microcoded
    cluster block's data memory): one read port (data one cycle after the address while ``en``) and one write
    port, which share the blocks' single port — in a cycle with a write the write wins and the read data of the
    next cycle is garbage (:data:`POISON` in the behavioural model). SPRAM has no initial contents; the
    behavioural model starts as garbage too (every word :data:`POISON`), so a design that reads a word it has not
    written fails its tests."""

    def __init__(self, *, shape, depth: int):
        self._shape = shape
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= SPRAM_DEPTH:
            self._MustUse__silence = True       # a block that failed to construct is not an unused elaboratable
            raise ValueError(f"depth = {depth!r}: must be an integer in [1, {SPRAM_DEPTH}] (one bank)")
        self._width, self._depth = Shape.cast(shape).width, depth
        self._columns = -(-self._width // SPRAM_WIDTH)
        self._read = self._write = None

    shape = property(lambda self: self._shape)
    depth = property(lambda self: self._depth)
    #: SB_SPRAM256KA cells used on an iCE40
    blocks = property(lambda self: self._columns)

    def elaborate(self, platform):
        m = Module()
        rd = self._read or _Port(self._shape, self._depth, "spram_rd", 0)
        wr = self._write or _Port(self._shape, self._depth, "spram_wr", 0)
        bits = self._columns * SPRAM_WIDTH
        wr_bits, out = Signal(bits), Signal(bits)
        m.d.comb += [wr_bits.eq(Value.cast(wr.data)), rd.data.eq(out[:self._width])]
        if _is_ice40(platform):
            addr = Signal(14)
            m.d.comb += addr.eq(Mux(wr.en, wr.addr, rd.addr))
            for c in range(self._columns):
                m.submodules[f"spram{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr, i_DATAIN=wr_bits[SPRAM_WIDTH * c:SPRAM_WIDTH * (c + 1)],
                    i_MASKWREN=0b1111, i_WREN=wr.en, i_CHIPSELECT=wr.en | rd.en,
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out[SPRAM_WIDTH * c:SPRAM_WIDTH * (c + 1)])
        else:
            poison = sum(POISON << (SPRAM_WIDTH * c) for c in range(self._columns))
            mem = memory.Memory(shape=bits, depth=self._depth, init=[poison] * self._depth)
            m.submodules.mem = mem
            r, w = mem.read_port(domain="sync"), mem.write_port()
            written = Signal()
            m.d.sync += written.eq(wr.en)
            m.d.comb += [r.addr.eq(rd.addr), r.en.eq(rd.en & ~wr.en), w.addr.eq(wr.addr), w.data.eq(wr_bits),
                         w.en.eq(wr.en), out.eq(Mux(written, poison, r.data))]
        return m


def spram_memory(blocks: int = SPRAM_BLOCKS, *, reserve: int = 0):
    """A memory hook (``AcceleratorTop(memory=…)``, :func:`~loco_fpga.hdl.layer.default_memory`'s signature) that
    puts weight memories into :class:`BankedSpram` while ``blocks − reserve`` SPRAM cells last (layer order), the
    rest (and every state memory) into block RAM; ``reserve`` cells are kept for the microcoded cluster blocks'
    data memories (``name = "microdata"``, :class:`Spram`, while they last; then block RAM — without initial
    contents either way: the block's boot entry writes them). :attr:`used` on the returned hook counts the cells
    handed out."""
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= SPRAM_BLOCKS:
        raise ValueError(f"blocks = {blocks!r}: must be an integer in [0, {SPRAM_BLOCKS}]")
    if isinstance(reserve, bool) or not isinstance(reserve, int) or not 0 <= reserve <= blocks:
        raise ValueError(f"reserve = {reserve!r}: must be an integer in [0, blocks = {blocks}]")

    def hook(*, shape, depth: int, name: str):
        columns = -(-Shape.cast(shape).width // SPRAM_WIDTH)
        if name == "weights" and depth <= 2 * SPRAM_DEPTH and hook.used - micro[0] + 2 * columns <= blocks - reserve:
            hook.used += 2 * columns
            return BankedSpram(shape=shape, depth=depth)
        if name == "microdata" and depth <= SPRAM_DEPTH and micro[0] + columns <= reserve:
            hook.used += columns
            micro[0] += columns
            return Spram(shape=shape, depth=depth)
        if name == "microdata":
            return memory.Memory(shape=shape, depth=depth, init=[])
        return default_memory(shape=shape, depth=depth, name=name)

    hook.used = 0
    micro = [0]           # cells of the reserve handed out
    return hook
