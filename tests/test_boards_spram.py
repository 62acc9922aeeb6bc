# amaranth: UnusedElaboratable=no
"""boards/spram.py: the two-bank SPRAM weight memory — its behavioural model against a dictionary (random reads
and writes, never the same bank in one cycle; a same-bank read returns the poison word), the hook's allocation,
and the SB_SPRAM256KA instances of an iCE40 elaboration. (The accelerator top with this memory, byte for byte
against its model: tests/test_top.py.)"""

import random

import pytest
from amaranth import Module, signed
from amaranth.back import rtlil
from amaranth.lib import data
from amaranth.sim import Simulator

from loco_fpga.boards.spram import BANK_BIT, POISON, BankedSpram, Spram, spram_memory


def _run(mem, ops):
    """ops: per cycle (read address or None, (write address, value) or None); returns read data per cycle + 1."""
    rd, wr = mem.read_port(domain="sync"), mem.write_port()
    got = []

    async def bench(ctx):
        for r, w in ops + [(None, None)]:
            ctx.set(rd.en, r is not None)
            ctx.set(rd.addr, r or 0)
            ctx.set(wr.en, w is not None)
            if w is not None:
                ctx.set(wr.addr, w[0])
                ctx.set(wr.data, w[1])
            await ctx.tick()
            got.append(ctx.get(rd.data))

    m = Module()
    m.submodules.mem = mem
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def _bank(addr):
    return (addr >> BANK_BIT) & 1


@pytest.mark.parametrize("depth", [35, 2080])
def test_banked_memory_reads_what_was_written(depth):
    rng = random.Random(depth)
    mem = BankedSpram(shape=16, depth=depth)
    model = {}
    ops, want = [], []
    for _ in range(600):
        r = rng.randrange(depth) if rng.random() < 0.8 else None
        w = None
        if rng.random() < 0.6:
            a = rng.randrange(depth)
            if r is None or _bank(a) != _bank(r):
                w = (a, rng.randrange(1 << 16))
        ops.append((r, w))
        want.append(model.get(r, 0) if r is not None else None)     # read before this cycle's write
        if w:
            model[w[0]] = w[1]
    got = _run(mem, ops)
    checked = [(n, g, x) for n, (g, x) in enumerate(zip(got, want)) if x is not None]
    assert len(checked) > 400
    assert all(g == x for _, g, x in checked), [c for c in checked if c[1] != c[2]][:3]


def test_a_read_of_the_bank_being_written_is_poison():
    mem = BankedSpram(shape=16, depth=64)
    a, b = 3, 3 ^ (1 << BANK_BIT)                       # same word pair, different banks
    ops = [(None, (a, 111)), (None, (b, 222)), (a, (a + 8, 5)), (a, (b, 7)), (b, None)]
    got = _run(mem, ops)
    assert got[2] == POISON                 # read a while a's bank is written
    assert got[3] == 111                    # read a while the other bank is written
    assert got[4] == 7


def test_words_of_several_lanes():
    layout = data.ArrayLayout(signed(16), 2)
    mem = BankedSpram(shape=layout, depth=40)
    assert mem.blocks == 4
    got = _run(mem, [(None, (5, [-2, 0x1234])), (5, None)])
    assert [got[1][0], got[1][1]] == [-2, 0x1234]


def test_hook_allocates_the_four_blocks_in_layer_order():
    hook = spram_memory()
    m0 = hook(shape=16, depth=2080, name="weights")
    s0 = hook(shape=58, depth=32, name="state")
    m1 = hook(shape=16, depth=330, name="weights")
    m2 = hook(shape=16, depth=100, name="weights")
    assert isinstance(m0, BankedSpram) and isinstance(m1, BankedSpram) and hook.used == 4
    assert not isinstance(s0, BankedSpram) and not isinstance(m2, BankedSpram)   # state, and no block left
    big = spram_memory()(shape=16, depth=40000, name="weights")
    assert not isinstance(big, BankedSpram)
    for mem in (m0, s0, m1, m2, big):
        mem._MustUse__silence = True        # built, never elaborated here


def test_parameter_errors():
    with pytest.raises(ValueError, match=r"depth = 0"):
        BankedSpram(shape=16, depth=0)
    with pytest.raises(ValueError, match=r"depth = 40000"):
        BankedSpram(shape=16, depth=40000)
    with pytest.raises(ValueError, match=r"blocks = 5"):
        spram_memory(5)


def _ice40_spram_cells(mem):
    """SB_SPRAM256KA cells of ``mem`` elaborated for the iCEBreaker."""
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    rd, wr = mem.read_port(domain="sync"), mem.write_port()
    m = Module()
    m.submodules.mem = mem
    text = rtlil.convert(m, platform=ICEBreakerPlatform(),
                         ports=[rd.addr, rd.data, rd.en, wr.addr, wr.data, wr.en])
    return text.count("cell \\SB_SPRAM256KA")


def test_ice40_elaboration_is_sb_spram256ka_cells():
    assert _ice40_spram_cells(BankedSpram(shape=16, depth=2080)) == 2


def test_single_bank_memory_reads_what_was_written_and_starts_as_garbage():
    """:class:`Spram` (the micro cluster block's data memory): a read returns the last write, or the poison word
    for a word never written (SPRAM has no initial contents) and in the cycle after a write (one port)."""
    rng = random.Random(5)
    depth = 300
    mem = Spram(shape=signed(32), depth=depth)
    assert mem.blocks == 2
    poison32 = POISON | POISON << 16
    model = {}
    ops, want = [], []
    for _ in range(800):
        r = rng.randrange(depth) if rng.random() < 0.7 else None
        w = (rng.randrange(depth), rng.randrange(-(1 << 31), 1 << 31)) if rng.random() < 0.4 else None
        ops.append((r, w))
        if r is None:
            want.append(None)
        elif w is not None:
            want.append(poison32)                 # the write wins the port
        else:
            want.append(model.get(r, poison32))
        if w:
            model[w[0]] = w[1]
    got = _run(mem, ops)
    checked = [(n, g, x) for n, (g, x) in enumerate(zip(got, want)) if x is not None]
    assert len(checked) > 400 and sum(x == poison32 for _, _, x in checked) > 100
    assert all(g == x for _, g, x in checked), [c for c in checked if c[1] != c[2]][:3]


def test_hook_reserves_blocks_for_micro_data():
    hook = spram_memory(reserve=2)
    m0 = hook(shape=16, depth=2080, name="weights")
    m1 = hook(shape=16, depth=330, name="weights")             # the reserve is not the weights'
    d0 = hook(shape=signed(32), depth=1400, name="microdata")
    d1 = hook(shape=signed(32), depth=1400, name="microdata")   # reserve used up: block RAM
    assert isinstance(m0, BankedSpram) and not isinstance(m1, BankedSpram)
    assert isinstance(d0, Spram) and not isinstance(d1, Spram) and hook.used == 4
    for mem in (m0, m1, d0, d1):
        mem._MustUse__silence = True
    with pytest.raises(ValueError, match=r"reserve = 5"):
        spram_memory(reserve=5)
    with pytest.raises(ValueError, match=r"depth = 16385"):
        Spram(shape=16, depth=16385)


def test_single_bank_ice40_elaboration():
    assert _ice40_spram_cells(Spram(shape=signed(32), depth=1400)) == 2
