# amaranth: UnusedElaboratable=no
"""The xorshift32 lane in the Amaranth simulator against an independent xorshift32 written here."""

import random

import pytest
from amaranth.sim import Simulator

from loco_fpga.hdl.prng import Xorshift32


def _reference_words(seed: int, n: int) -> list[int]:
    """Marsaglia's xorshift32 (13, 17, 5), written from the paper, not from the model."""
    out, x = [], seed
    for _ in range(n):
        x = (x ^ (x << 13)) & 0xFFFFFFFF
        x = x ^ (x >> 17)
        x = (x ^ (x << 5)) & 0xFFFFFFFF
        out.append(x)
    return out


def test_reference_matches_published_first_value():
    # Marsaglia (2003), "Xorshift RNGs": the 32-bit example starts from y = 2463534242.
    assert _reference_words(2463534242, 1) == [723471715]


def test_words_equal_reference_with_random_enables_and_reloads():
    dut = Xorshift32()
    rng = random.Random(7)
    seeds = [1, 0xFFFFFFFF, 0x80000000, 2463534242] + [rng.randrange(1, 1 << 32) for _ in range(4)]
    words_per_seed = 600
    compared = []

    async def bench(ctx):
        for seed in seeds:
            ctx.set(dut.seed, seed)
            ctx.set(dut.load, 1)
            ctx.set(dut.en, rng.random() < 0.5)          # load wins over en
            await ctx.tick()
            ctx.set(dut.load, 0)
            assert ctx.get(dut.state) == seed
            expected = _reference_words(seed, words_per_seed)
            got = []
            while len(got) < words_per_seed:
                draw = rng.random() < 0.75
                ctx.set(dut.en, draw)
                if draw:
                    got.append(ctx.get(dut.word))        # latency 0: the drawn word, this cycle
                await ctx.tick().repeat(1 + dut.latency)
            ctx.set(dut.en, 0)
            assert got == expected, f"seed {seed:#x}: first difference at word " \
                f"{next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)}"
            compared.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(compared) == len(seeds) * words_per_seed == 4800


def test_reset_state_and_validation():
    dut = Xorshift32(reset_seed=5)

    async def bench(ctx):
        assert ctx.get(dut.state) == 5
        assert ctx.get(dut.word) == _reference_words(5, 1)[0]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match=r"reset_seed = 0: must be an integer in \[1, 2\^32 − 1\]"):
        Xorshift32(reset_seed=0)
    with pytest.raises(ValueError, match=r"reset_seed = 4294967296"):
        Xorshift32(reset_seed=1 << 32)
