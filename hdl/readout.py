"""The output layer's weights when a micro cluster block computes the output layer (``Network(readout=True)``).

One job: hold the output layer's weight memory — one weight a word, the layer engine's memory map at one lane
(word k·(n_in + 1) + j holds W_kj, the bias last) — with the ports of a :class:`~loco_fpga.hdl.layer.LayerEngine`
that the network's weight and update plumbing uses, and a third reader: the block's program, whose loss entry
reads the weights through its sequencer's window (``LocoProgram._readout``: y_k = sat_out((T/2 + Σ_j W_kj u_j) ≫
log2 T) from the last hidden layer's counts, ỹ_k alike with ± T·σ, the same integers as T steps of the engine).

Ports (as ``LayerEngine``'s): ``noise`` (In stream {word: 32}; one word per sample, taken when offered — the signs
are the lane's state from then on, ``noise_state``), ``noise_state`` (In 32), ``w_en``/``w_addr``/``w_data`` (weight
writes), ``u_en``/``u_addr``/``u_data`` (reads: the update engine's sweep and the host's read-back while ``u_en``),
``signs`` (Out n_out: ξ_k's sign bits), ``active`` (Out n_out: all ones, no mask on the output layer). The window:
``win_addr`` (In), ``win_data`` (Out weight; a cycle after the address, while ``u_en`` is low — the network gives the
port to the update engine and the host only while no sample is in the layers, and the block reads only during its
loss run, inside a sample).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.qformat import Formats

from .fixed import shape
from .layer import COLLISION_FREE, default_memory
from .microcode import ADDR_BITS

__all__ = ["OutputWeights"]


class OutputWeights(wiring.Component):
    """The weights of an output layer of ``n_in`` inputs and ``n_out`` ≤ 32 outputs (``formats``: the weight format)
    in a memory from ``memory`` (the hook, ``name = "weights"``), with the ports of a ``LayerEngine`` (module
    docstring) and the block's window."""

    def __init__(self, *, n_in: int, n_out: int, formats: Formats, memory=default_memory):
        for name, value, hi in (("n_in", n_in, 1 << 16), ("n_out", n_out, 32)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"{name} = {value!r}: must be an integer in [1, {hi}]")
        if n_out * (n_in + 1) > 1 << (ADDR_BITS - 1):
            raise ValueError(f"{n_out} × {n_in + 1} weights: more than the window's {1 << (ADDR_BITS - 1)} words")
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        self._n_in, self._n_out, self._formats, self._memory = n_in, n_out, formats, memory
        self._word_layout = data.ArrayLayout(shape(formats.weight), 1)
        depth = n_out * (n_in + 1)
        super().__init__({
            "noise": In(stream.Signature(data.StructLayout({"word": 32}))), "noise_state": In(32),
            "w_en": In(1), "w_addr": In(range(depth)), "w_data": In(self._word_layout),
            "u_en": In(1), "u_addr": In(range(depth)), "u_data": Out(self._word_layout),
            "signs": Out(n_out), "active": Out(n_out),
            "win_addr": In(ADDR_BITS - 1), "win_data": Out(shape(formats.weight)),
        })

    n_in = property(lambda self: self._n_in)
    n_out = property(lambda self: self._n_out)
    formats = property(lambda self: self._formats)
    lanes = property(lambda self: 1)
    chunks = property(lambda self: self._n_in + 1)
    weight_depth = property(lambda self: self._n_out * (self._n_in + 1))
    word_layout = property(lambda self: self._word_layout)
    output = property(lambda self: True)
    held_noise = property(lambda self: True)
    noise_words = property(lambda self: 1)

    def elaborate(self, platform):
        m = Module()
        mem = self._memory(shape=self._word_layout, depth=self.weight_depth, name="weights")
        if isinstance(mem, memory.Memory):
            # collision-free: as the layer engine's weights (an update sweep writes a word stages after reading it;
            # a host write's cycle reads nothing the host uses); the window reads only while no write can happen
            mem.attrs.update(COLLISION_FREE)
        m.submodules.weights = mem
        rd, wr = mem.read_port(domain="sync"), mem.write_port()
        m.d.comb += [wr.en.eq(self.w_en), wr.addr.eq(self.w_addr), wr.data.eq(self.w_data),
                     rd.addr.eq(Mux(self.u_en, self.u_addr, self.win_addr)), rd.en.eq(1),
                     self.u_data.eq(rd.data), self.win_data.eq(rd.data[0]),
                     self.noise.ready.eq(1), self.signs.eq(self.noise_state[:self._n_out]),
                     self.active.eq((1 << self._n_out) - 1)]
        return m
