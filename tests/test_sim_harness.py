"""The simulation harness: stable port names, eager errors, one cached build per parameter set."""

import pytest
from amaranth import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.hdl.prng import Xorshift32
from loco_fpga.sim import harness


class _Passthrough(wiring.Component):
    i: In(stream.Signature(data.StructLayout({"x": 9})))
    o: Out(stream.Signature(data.StructLayout({"x": 9})))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid),
                     self.i.ready.eq(self.o.ready)]
        return m


def test_port_names_follow_the_signature():
    dut = _Passthrough()
    text = harness.to_verilog(dut)
    assert harness.port_names(dut) == (
        "i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready")
    for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready"):
        assert f" {port};" in text or f" {port}," in text, port


def test_to_verilog_rejects_a_non_component():
    with pytest.raises(TypeError, match="expected an amaranth.lib.wiring.Component, got 42"):
        harness.to_verilog(42)


def test_build_rejects_unknown_simulator_and_bad_name():
    with pytest.raises(ValueError, match="simulator = 'ghdl': expected one of verilator, icarus"):
        harness.build(_Passthrough, name="p", simulator="ghdl")
    with pytest.raises(ValueError, match=r"name = 'a/b': use letters"):
        harness.build(_Passthrough, name="a/b")


def test_second_build_of_the_same_parameters_is_reused(tmp_path, monkeypatch):
    harness.require_simulator("icarus")     # the cheapest build; the Verilator path is exercised by the benches
    monkeypatch.setenv("LOCO_SIM_BUILD", str(tmp_path))
    monkeypatch.delenv("WAVES", raising=False)
    first = harness.build(Xorshift32, name="xs", params={"n": 1}, simulator="icarus")
    again = harness.build(Xorshift32, name="xs", params={"n": 1}, simulator="icarus")
    other = harness.build(Xorshift32, name="xs", params={"n": 2}, simulator="icarus")
    assert not first.cached and again.cached and not other.cached
    assert again.directory == first.directory != other.directory
    assert (first.directory / "params.json").read_text().replace(" ", "").replace("\n", "") == '{"n":1}'
    assert first.ports == ("seed", "load", "en", "word", "state")


def test_build_args_top_ports_only():
    """top_ports_only adds Verilator's flags that undo the runner's --public-flat-rw; Icarus is unaffected."""
    plain = harness.build_args("verilator")
    top = harness.build_args("verilator", top_ports_only=True)
    assert "--no-public-flat-rw" not in plain
    assert top == [*plain, "--no-public-flat-rw", "--public-depth", "1"]
    assert harness.build_args("icarus", top_ports_only=True) == harness.build_args("icarus") == []
    with pytest.raises(ValueError, match="simulator = 'ghdl': expected one of verilator, icarus"):
        harness.build_args("ghdl")
    with pytest.raises(ValueError, match="top_ports_only = 1: expected True or False"):
        harness.build(_Passthrough, name="p", top_ports_only=1)


def test_top_ports_only_is_ignored_by_icarus(tmp_path, monkeypatch):
    harness.require_simulator("icarus")
    monkeypatch.setenv("LOCO_SIM_BUILD", str(tmp_path))
    monkeypatch.delenv("WAVES", raising=False)
    first = harness.build(Xorshift32, name="xs", params={"n": 1}, simulator="icarus", top_ports_only=True)
    again = harness.build(Xorshift32, name="xs", params={"n": 1}, simulator="icarus")
    assert not first.top_ports_only and again.cached and again.directory == first.directory
