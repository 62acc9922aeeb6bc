# amaranth: UnusedElaboratable=no
# (the sub-components are built in __init__ to validate the parameters and publish their sizes; a Network
# that is only inspected — cycle counts, layouts, benches — never elaborates them)
"""Network datapath — steps 1–4 of ``FixedRule.step_q`` (golden_model/fixed.py) for one sample in gateware.

Per sample (x, label, lr_reg) the datapath

1. draws the noise words of every layer (one xorshift32 lane per layer: PRNG stream NOISE, lane l;
   ⌈n_l/32⌉ words per sample, in draw order — golden_model/prng.py);
2. encodes x into T spike vectors with one time-multiplexed :class:`~.encoder.EncoderBank` (the rates
   arrive one per ``x`` transfer and live in its memory; Bernoulli lanes are PRNG stream ENCODER, lane i,
   one draw per step, their states in the bank's memory); both passes use the same spikes;
3. runs the T steps of both passes through the L :class:`~.layer.LayerEngine` s, one engine per layer;
4. feeds the output layer's y, ỹ to the :class:`~.loss.LossUnit` (Δy, ΔL_sum, dl, g).

All PRNG lanes are independent, so the order in which the lanes are drawn does not matter; only the order
within a lane does, and each lane has exactly one consumer.

**Pipelining.** The engines are chained by their spike streams (``o`` of layer l → ``i`` of layer l + 1), so
layer l + 1 works on step t − 1 while layer l works on step t; the handshakes couple the stages (a layer
emits its step's spikes only when the next layer is ready to take them). Samples are *not* overlapped in
the layers (training needs sample n's update before sample n + 1's reads): a sample *starts* (label, lr
latched, noise words drawn) once every result of the previous one has been delivered. The next sample's
rates stream into the encoder bank as soon as the bank has read the rates of the current sample's last
step, and the bank pre-computes its step 0, so with a fast enough source the fill is hidden behind the
current sample's tail. :meth:`Network.schedule` gives the exact cycle of every event of that schedule
(streams never stalling) and :attr:`cycles_per_sample` its steady-state period.
"""

import dataclasses
import math

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from loco_fpga.golden_model.prng import DFA, ENCODER, LANE_STRIDE, NOISE, ROUNDING
from loco_fpga.qformat import Formats

from .clusters import ClusterBlock, PairBuffer, PeekKind
from .micro_clusters import MicroClusterBlock
from .microcode import DATA_BITS
from .encoder import ENCODERS, EncoderBank
from .feedback import FeedbackUnit, OutputError
from .fixed import at_least, narrow, shape
from .layer import NEURONS, LayerEngine, default_memory
from .lls import LocalErrorUnit
from .loss import LossUnit
from .prng import Xorshift32
from .readout import OutputWeights
from .update import NpSource, PairSource, SharedUpdateEngine, UpdateEngine

__all__ = ["Network", "Schedule", "UPDATES", "CLUSTER_IMPLS"]

_MAX_LAYERS = 64
#: learning rules the network can run in hardware (``update``); ``None``: forward passes and loss only
UPDATES = (None, "np", "loco", "dfa", "lls")
#: LOCO's cluster work: ``parallel`` units (hdl/clusters.py) or a ``micro``coded datapath (hdl/micro_clusters.py)
CLUSTER_IMPLS = ("parallel", "micro")
#: the rules whose hidden layers learn from a per-neuron error (no perturbation, clean v, no g broadcast)
_ERROR_RULES = ("dfa", "lls")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The exact cycle schedule of back-to-back samples (``x`` always valid, outputs always ready), from the
    first cycle the network can take a rate (after reset and loading; cycle 0)."""

    #: per sample: the cycle of its first and of its last ``x`` transfer
    first_x: tuple
    last_x: tuple
    #: per sample: the cycle it starts (label and lr latched, noise words requested)
    start: tuple
    #: per sample, per layer, per step t: the cycle the layer accepts step t's input spikes
    accept: tuple
    #: per sample, per hidden layer: the cycle its last count transfers on ``counts[l]``
    counts_done: tuple
    #: per sample: the cycle of the ``last`` transfer (ΔL_sum, dl, g) on ``o``
    loss_done: tuple
    #: steady-state cycles from one sample's start to the next (the last two samples of the run)
    period: int
    #: per sample (``update`` only): the cycle of the last weight write of every layer's update
    update_done: tuple = ()
    #: per sample, per layer (``loco`` only): the cycle of the cluster block's last v⊥ transfer, and the last
    #: cycle before it is idle again (prototype update and refresh done; the next sample starts after it)
    vperp_done: tuple = ()
    clusters_idle: tuple = ()

    @property
    def update_latency(self) -> int | None:
        """Cycles from the first sample's ``last`` transfer on ``o`` (g) to its last weight write."""
        return self.update_done[0] - self.loss_done[0] if self.update_done else None

    @property
    def first_latency(self) -> int:
        """Cycles from the first sample's first ``x`` transfer to its ``last`` transfer on ``o``."""
        return self.loss_done[0] - self.first_x[0]


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}: must be an integer in [{lo}, {hi}]")


class Network(wiring.Component):
    """L chained layer engines with the input encoders, the noise PRNG lanes and the loss unit.

    Parameters (keyword-only): ``arch`` (n_0, n_1, …, n_L; at least one layer), ``lanes`` (synapse lanes per
    engine; layer l uses min(lanes, n_l + 1)), ``formats`` (:class:`~loco_fpga.qformat.Formats`),
    ``encoder`` (``"deterministic"``/``"bernoulli"``), ``threshold`` θ (membrane LSBs), ``neuron``
    (``"if"``/``"lif"``), ``leak_shift`` (LIF), ``memory`` (hook, :func:`.layer.default_memory`),
    ``encoder_lanes`` (inputs the encoder bank encodes per cycle; default: the smallest number with
    ⌈n_0/P⌉ + 1 ≤ layer 0's cycles per step, so the bank never starves layer 0), ``cluster_units``
    (``loco``: the parallel units of every layer's :class:`~.clusters.ClusterBlock`, 1 … K; default K),
    ``cluster_share`` (``loco``: the layers one cluster block serves, 1 … L; default 1 — see below).
    :meth:`from_config` derives them from a config (``cluster_units``, ``cluster_share`` and ``lanes`` are build
    choices).

    Ports:
        x (In stream of :attr:`sample_layout` = {x: input format, label: range(n_L), lr: lr format}): the
            rates of a sample, one per transfer, input order, n_0 transfers per sample; the sample's label and
            lr are taken from its last transfer (the others' are ignored). Ready while the encoder bank is
            filling and no complete sample is waiting to start.
        counts (Out, array of L − 1 streams of the hidden engines' :attr:`LayerEngine.result_layout`
            {count, count_noisy: rate format, last}; absent when L = 1): counts[l] carries layer l + 1's
            clean and noisy spike counts, n_{l+1} transfers per sample in neuron order.
        o (Out stream of :attr:`output_layout` = {y, y_noisy, dy: out format, dl_sum, dl, g, last}): n_L
            transfers per sample, output k in order; the ``last`` one also carries ΔL_sum, dl and g (zero on
            the others), as :class:`~.loss.LossUnit` does. Its dl and g stay after the ``last`` transfer
            until the next sample's outputs reach the loss unit (its output registers): the update engines' g
            and the accelerator's reply read them there.
        w_en, w_layer, w_addr, w_data (In; w_data = :attr:`word_layout`, max lanes weights): weight write
            into layer ``w_layer``'s engine at its word address (``LayerEngine`` memory map; a layer with
            fewer lanes uses the first ones). Only between samples.
        seed_en, seed_lane, seed (In): load a PRNG lane's state: lane l < L is (NOISE, l); lane L + i is
            (ENCODER, i) (Bernoulli only); then the rounding lanes (stochastic update) and, for DFA, one lane
            (DFA, l) per hidden layer — :attr:`seed_map` lists them in order. Only between samples. The host
            writes ``golden_model.prng.seed_state(seed, stream, index)`` into every lane before the first
            sample: ``seed`` = ``train.seed``, except ``rule.feedback_seed`` for the DFA lanes (the feedback
            matrices; these lanes hold a start state that every sample restarts from).

    With ``update`` (``"np"``, ``"loco"``, ``"dfa"``, ``"lls"``; docs/hdl_learning.md): ``busy``, ``rd_layer``/``rd_addr``/
    ``rd_data`` (weight read-back, one cycle); with ``"loco"`` also ``pw_*`` (prototype load), ``pr_*``
    (prototype, count, r_k, H read-back, one cycle) and ``vperp_tap`` (v⊥ monitor). ``"dfa"`` uses the clean
    column only (its engines add no noise, so the noisy column equals the clean one and Δy, dl, g are 0, as in
    the model); so does ``"lls"``, whose hidden
    layers take e from a :class:`~.lls.LocalErrorUnit` each (τ = 2^-``tau_shift``) fed with their clean counts.
    ``output_delta`` (np, loco: ``rule.output_update = "delta"``): the output layer is not perturbed (its noise
    words are still drawn) and learns from e = η·2(y − t)/n_L (:class:`~.feedback.OutputError`) with v = the last
    hidden layer's clean counts (projected by its cluster block under LOCO); g goes to the hidden layers only.
    ``shared_update`` (np or loco, without ``output_delta``): one :class:`~.update.SharedUpdateEngine` sweeps every
    layer's weights in turn instead of one :class:`~.update.UpdateEngine` per layer — fewer logic cells, the update
    Σ_l n_l·C_l + 4 cycles after the last of g and the v⊥ streams instead of max_l; same results, same ``seed_map``.
    ``cluster_share`` S > 1 (``loco``): consecutive layers of equal input width share one cluster block, up to S per
    block (its ``banks``: each layer keeps its own prototypes, count, r_k and H in it). The block takes its first
    layer's pairs straight from the layer's :class:`~.update.PairSource` and every further layer's from a
    :class:`~.clusters.PairBuffer` that holds them until the block is done with the layer before, in layer order;
    v⊥ goes to the layer's update engine as before. Same results; about 1/S of the blocks' logic, and a
    paired layer's v⊥ (and update) comes one block sample later per layer ahead of it in its block.
    ``cluster_impl = "micro"`` (``loco``): each block is a :class:`~.micro_clusters.MicroClusterBlock` — the same
    integers from a program on one small datapath (docs/hdl_learning.md): a fraction of the logic, many more cycles.
    With a ``memory`` hook other than the default, each micro block's data memory comes from it too (``name =
    "microdata"``; e.g. SPRAM on the UP5K) and has no initial contents: the block writes it after a reset
    (``MicroClusterBlock.boot_cycles``, during which the block is not idle, so no sample starts).
    ``sparse_input``: layer 0's engine is ``sparse`` — each step it reads only the weight words of the input chunks
    that spiked (and the bias's): same results, data-dependent cycles (:meth:`schedule`'s ``active``).
    ``hold_spikes``: every engine is ``hold_input`` — it works on its producer's spike vector (the encoder bank's,
    the layer before's) instead of a copy, and the producer waits meanwhile: the steps of the layers no longer
    overlap (:meth:`schedule`), 2·(n_l + 1) flip-flops per layer fewer, the same results. At one lane (and one encoder
    lane, layer 0 not sparse) layer 0 reads its inputs from the bank's spike memory (``EncoderBank(spike_memory=True)``,
    ``LayerEngine(input_memory=True)``): the bank's spike vector and layer 0's input selection go; same cycles.
    ``micro_loss`` (``cluster_impl = "micro"``, no ``output_delta``): no :class:`~.loss.LossUnit` — the outputs go into
    the first cluster block, which takes them once its last bank's update of the sample is done and runs its
    program's ``loss`` entry (``MicroClusterBlock.loss_cycles``); ``o`` carries the same y, ỹ, Δy, dl and g
    (ΔL_sum is 0: nothing reads it), g ≈ 1,500 cycles (plus the block's update tail) later; also ``pred`` (Out: the
    sample's prediction, the first k of the largest y_k, from its ``last`` transfer on ``o`` until the next sample) and
    ``yr_en``/``yr_index``/``yr_data`` (y_k of the last sample from the block's data memory, a cycle after the index,
    while not busy). The UP5K build's form: the loss unit's logic for ≈ 4,000 more cycles a sample there.
    ``readout`` (``micro_loss`` with one micro block for every layer, n_L ≤ 32): that block also computes the output
    layer, from the last hidden layer's counts (its last bank's pairs) and the output weights (``MicroClusterBlock``'s
    ``readout``; exact where no per-step sum of the output layer saturates, as in every preset). The output layer has
    no engine: :class:`~.readout.OutputWeights` holds its weights with the engine's weight and update ports and a read
    port for the block. The last hidden layer's spikes go nowhere; ``o`` carries y_k, ỹ_k from the block's data memory
    after its loss run (3 cycles an output). The UP5K LOCO build's form: ≈ 400 logic cells fewer, the loss run ≈ 10,000
    cycles longer, the output layer's steps gone (+1.4 % cycles a sample there).
    ``held_args``: the producer of ``x`` holds ``label`` and ``lr`` from a sample's first transfer until the network is
    no longer ``busy`` with it, and sends no further sample meanwhile (as the accelerator's device does: it takes no
    command while a sample runs); the network then uses them as they are instead of keeping copies (2·(lr bits +
    label bits) flip-flops fewer).
    """

    def __init__(self, *, arch, lanes: int, formats: Formats, encoder: str = "deterministic",
                 threshold: int = 1, neuron: str = "if", leak_shift: int = 0, memory=default_memory,
                 encoder_lanes: int | None = None, update: str | None = None, rounding: str = "stochastic",
                 mask: bool = False, clusters: int = 8, refresh: int = 1, ridge: int = 0, norm_guard: int = 8,
                 recip_extra: int = 16, fb: int = 0, cluster_units: int | None = None, cluster_share: int = 1,
                 cluster_impl: str = "parallel", tau_shift: int = 1,
                 output_delta: bool = False, shared_update: bool = False, sparse_input: bool = False,
                 hold_spikes: bool = False, micro_loss: bool = False, held_args: bool = False,
                 readout: bool = False):
        if (not isinstance(arch, (tuple, list)) or not 2 <= len(arch) <= _MAX_LAYERS + 1
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in arch)):
            raise ValueError(f"arch = {arch!r}: expected a sequence of 2 … {_MAX_LAYERS + 1} positive integers")
        _check_int("lanes", lanes, 1, 1 << 16)
        if not isinstance(formats, Formats):
            raise TypeError(f"formats = {formats!r}: expected a loco_fpga.qformat.Formats")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder = {encoder!r}: expected one of {', '.join(ENCODERS)}")
        if neuron not in NEURONS:
            raise ValueError(f"neuron = {neuron!r}: expected one of {', '.join(NEURONS)}")
        if update not in UPDATES:
            raise ValueError(f"update = {update!r}: expected one of {', '.join(map(repr, UPDATES))}")
        if not isinstance(mask, bool):
            raise ValueError(f"mask = {mask!r}: must be True or False")
        if not isinstance(output_delta, bool):
            raise ValueError(f"output_delta = {output_delta!r}: must be True or False")
        if cluster_units is not None and update != "loco":
            raise ValueError(f"cluster_units = {cluster_units!r}: cluster blocks exist with update 'loco' only, not "
                             f"{update!r}")
        if cluster_impl not in CLUSTER_IMPLS:
            raise ValueError(f"cluster_impl = {cluster_impl!r}: expected one of {', '.join(map(repr, CLUSTER_IMPLS))}")
        if cluster_impl != "parallel" and update != "loco":
            raise ValueError(f"cluster_impl = {cluster_impl!r}: cluster blocks exist with update 'loco' only, not "
                             f"{update!r}")
        if cluster_impl == "micro" and cluster_units is not None:
            raise ValueError(f"cluster_units = {cluster_units!r}: the micro cluster block has no parallel units")
        if cluster_share != 1 and update != "loco":
            raise ValueError(f"cluster_share = {cluster_share!r}: cluster blocks exist with update 'loco' only, not "
                             f"{update!r}")
        _check_int("cluster_share", cluster_share, 1, len(arch) - 1)
        if output_delta and update not in ("np", "loco"):
            raise ValueError(f"output_delta = True: the delta readout applies to update 'np' and 'loco', not "
                             f"{update!r}")
        if not isinstance(shared_update, bool):
            raise ValueError(f"shared_update = {shared_update!r}: must be True or False")
        if shared_update and (update not in ("np", "loco") or output_delta):
            rule = f"{update} with output_delta" if update in ("np", "loco") else repr(update)
            raise ValueError(f"shared_update = True: one update engine for every layer runs g·ξ rows only "
                             f"(update 'np' or 'loco' without output_delta), not {rule}")
        self._update, self._mask, self._delta, self._shared = update, mask, output_delta, shared_update
        if not isinstance(sparse_input, bool):
            raise ValueError(f"sparse_input = {sparse_input!r}: must be True or False")
        if not isinstance(hold_spikes, bool):
            raise ValueError(f"hold_spikes = {hold_spikes!r}: must be True or False")
        if not isinstance(micro_loss, bool):
            raise ValueError(f"micro_loss = {micro_loss!r}: must be True or False")
        if micro_loss and (cluster_impl != "micro" or output_delta):
            raise ValueError("micro_loss = True: the loss runs on a micro cluster block (update 'loco', cluster_impl "
                             "'micro') and feeds g to every layer (no output_delta)")
        self._micro_loss = micro_loss
        if not isinstance(readout, bool):
            raise ValueError(f"readout = {readout!r}: must be True or False")
        if readout and (not micro_loss or len(arch) < 3 or cluster_share != len(arch) - 1 or arch[-1] > 32):
            raise ValueError("readout = True: the output layer runs on the micro block that computes the loss "
                             "(micro_loss), from the last hidden layer's counts — a hidden layer, one block for "
                             f"every layer (cluster_share = {len(arch) - 1}) and at most 32 outputs (one noise word)")
        self._readout = readout
        if not isinstance(held_args, bool):
            raise ValueError(f"held_args = {held_args!r}: must be True or False")
        self._held_args = held_args
        self._arch, self._lanes, self._formats = tuple(arch), lanes, formats
        self._encoder, self._threshold, self._neuron = encoder, threshold, neuron
        self._leak_shift, self._memory = leak_shift, memory
        n_layers = len(arch) - 1
        # hold_spikes at one lane and one encoder lane: layer 0 reads its inputs from the bank's spike memory (no
        # spike vector in flip-flops, no n_0-way selection)
        input_memory = (hold_spikes and not sparse_input and min(lanes, arch[0] + 1) == 1
                        and encoder_lanes in (None, 1))
        # The engines validate the per-layer parameters (their errors quote the value).
        self._engines = [LayerEngine(n_in=arch[l], n_out=arch[l + 1], lanes=min(lanes, arch[l] + 1),
                                     formats=formats, threshold=threshold, neuron=neuron, leak_shift=leak_shift,
                                     output=l == n_layers - 1, memory=memory, update_port=update is not None,
                                     perturb=not (update in _ERROR_RULES or (output_delta and l == n_layers - 1)),
                                     held_noise=arch[l + 1] <= 32, sparse=sparse_input and l == 0,
                                     hold_input=hold_spikes, input_memory=input_memory and l == 0)
                         for l in range(n_layers - (1 if readout else 0))]
        if readout:           # the output layer: its weights only; the micro block computes it (hdl/readout.py)
            self._engines.append(OutputWeights(n_in=arch[-2], n_out=arch[-1], formats=formats, memory=memory))
        # g is broadcast from the loss unit's output register, which holds it until the next sample's outputs,
        # and no sample starts before every sweep is over: the engines need no copy of their own (held_g)
        if not shared_update:
            self._updaters = ([UpdateEngine(n_in=e.n_in, n_out=e.n_out, lanes=e.lanes, formats=formats,
                                            rounding=rounding, errors=errors, held_g=not errors)
                               for e in self._engines
                               for errors in [update in _ERROR_RULES or (output_delta and e.output)]] if update else [])
        # DFA: the output error, and one feedback unit per hidden layer (validates fb; the error quotes it)
        dfa = update == "dfa"
        self._output_error = (OutputError(formats=formats, n_out=arch[-1])
                              if update in _ERROR_RULES or output_delta else None)
        self._feedback = ([FeedbackUnit(formats=formats, n_rows=e.n_out, n_err=arch[-1], fb=fb)
                           for e in self._engines[:-1]] if dfa else [])
        # LLS: one local error unit per hidden layer (validates τ and the guard bits)
        self._local = ([LocalErrorUnit(formats=formats, width=e.n_out, n_classes=arch[-1], norm_guard=norm_guard,
                                       tau_shift=tau_shift) for e in self._engines[:-1]] if update == "lls" else [])
        # LOCO: one cluster block per group of up to ``cluster_share`` consecutive layers of equal input width (the
        # blocks validate K, N_ref, λ, the guard bits; errors quote the value); a layer is the bank of its block given
        # by its place in the group
        groups = []
        for l, e in enumerate(self._engines if update == "loco" else []):
            same_width = cluster_impl == "micro" or self._engines[groups[-1][0]].n_in == e.n_in if groups else True
            if groups and len(groups[-1]) < cluster_share and same_width:
                groups[-1].append(l)
            else:
                groups.append([l])
        self._cluster_groups, self._share = tuple(tuple(g) for g in groups), cluster_share
        if shared_update:   # one engine sweeps every layer in turn (area for cycles: Σ sweeps instead of max); with
            # one cluster block for every layer their v⊥ streams come one after the other: one v⊥ store
            self._updaters = [SharedUpdateEngine(shapes=[(e.n_in, e.n_out, e.lanes) for e in self._engines],
                                                 formats=formats, rounding=rounding,
                                                 one_store=update == "loco" and len(groups) == 1)]
        self._cluster_impl = cluster_impl
        common = dict(formats=formats, clusters=clusters, refresh=refresh, ridge=ridge, norm_guard=norm_guard,
                      recip_extra=recip_extra)
        if cluster_impl == "micro":
            micro_memory = None if memory is default_memory else memory   # a board's hook: its "microdata"
            blocks = [MicroClusterBlock(dims=[self._engines[l].n_in + 1 for l in g], memory=micro_memory,
                                        loss_outputs=arch[-1] if micro_loss and not b else 0, readout=readout,
                                        **common)
                      for b, g in enumerate(groups)]
        else:
            blocks = [ClusterBlock(dim=self._engines[g[0]].n_in + 1, units=cluster_units, banks=len(g), **common)
                      for g in groups]
        self._cluster_blocks = [b for b, g in zip(blocks, groups) for _ in g]       # the block of each layer
        self._pair_buffers = {l: PairBuffer(formats=formats, depth=self._engines[l].n_in + 1)
                              for g in groups for l in g[1:]}
        if encoder_lanes is None:      # the smallest bank that never starves layer 0 (one step per its step)
            encoder_lanes = next(p for p in range(1, arch[0] + 1)
                                 if -(-arch[0] // p) + 1 <= self._engines[0].cycles_per_step or p == arch[0])
        self._bank = EncoderBank(n_inputs=arch[0], input_format=formats.input, steps=1 << formats.log2_steps,
                                 encoder=encoder, lanes=encoder_lanes, counts=update is not None,
                                 spike_memory=input_memory)
        self._loss = LossUnit(formats=formats, n_out=arch[-1])
        out = shape(formats.out)
        self._sample_layout = data.StructLayout({"x": shape(formats.input), "label": range(arch[-1]),
                                                 "lr": shape(formats.lr)})
        lo = self._loss.output_layout
        self._output_layout = data.StructLayout({"y": out, "y_noisy": out, "dy": out, "dl_sum": lo["dl_sum"].shape,
                                                 "dl": shape(formats.dl), "g": shape(formats.g), "last": 1})
        self._word_layout = data.ArrayLayout(shape(formats.weight), max(e.lanes for e in self._engines))
        seed_map = [(NOISE, l) for l in range(n_layers)]
        if encoder == "bernoulli":
            seed_map += [(ENCODER, i) for i in range(arch[0])]
        if self._updaters and self._updaters[0].draws:   # layer l's rows (the shared engine's global rows alike)
            for l, e in enumerate(self._engines):
                seed_map += [(ROUNDING, l * LANE_STRIDE + i) for i in range(e.n_out)]
        seed_map += [(DFA, l) for l in range(len(self._feedback))]   # DFA_LANE + l; seeded from rule.feedback_seed
        self._seed_map = tuple(seed_map)
        self._seed_lanes = len(seed_map)
        members = {
            "x": In(stream.Signature(self._sample_layout)),
            "o": Out(stream.Signature(self._output_layout)),
            "w_en": In(1),
            "w_layer": In(range(n_layers)),
            "w_addr": In(range(max(e.weight_depth for e in self._engines))),
            "w_data": In(self._word_layout),
            "seed_en": In(1),
            "seed_lane": In(range(self._seed_lanes)),
            "seed": In(32),
        }
        if n_layers > 1:
            members["counts"] = Out(stream.Signature(self._engines[0].result_layout)).array(n_layers - 1)
        if micro_loss:        # the last sample's y_k from the micro block's data memory (one cycle; while ~busy) and
            # its prediction (the first k of the largest y_k; valid from its ``last`` on o until the next sample)
            members.update(yr_en=In(1), yr_index=In(range(arch[-1])), yr_data=Out(signed(DATA_BITS)),
                           pred=Out(range(arch[-1])))
        if update:
            members.update(busy=Out(1), rd_layer=In(range(n_layers)), rd_addr=In(members["w_addr"].shape),
                           rd_data=Out(self._word_layout))
        if self._cluster_blocks:
            blocks = self._cluster_blocks
            load_bits = max(b.load_layout["value"].shape.width for b in blocks)
            peek_bits = max(b.peek_data.shape().width for b in blocks)
            K = blocks[0].clusters
            self._at_layout = data.StructLayout({"what": PeekKind, "index": range(K),
                                                 "col": range(max([K] + [self._dim(l) for l in range(n_layers)]))})
            members.update(pw_en=In(1), pw_layer=In(range(n_layers)), pw_at=In(self._at_layout),
                           pw_data=In(signed(load_bits)), pr_layer=In(range(n_layers)), pr_at=In(self._at_layout),
                           pr_data=Out(signed(peek_bits)))
            self._tap_layout = data.StructLayout({"v": shape(formats.vperp), "k_star": range(clusters), "last": 1})
            tap = wiring.Signature({"valid": Out(1), "payload": Out(self._tap_layout)})
            members["vperp_tap"] = Out(tap).array(n_layers)
        super().__init__(members)

    @classmethod
    def from_config(cls, config, *, lanes: int, memory=default_memory, encoder_lanes: int | None = None,
                    update: str | None = None, cluster_units: int | None = None, cluster_share: int = 1,
                    cluster_impl: str = "parallel", shared_update: bool = False,
                    sparse_input: bool = False, hold_spikes: bool = False, micro_loss: bool = False,
                    held_args: bool = False, readout: bool = False) -> "Network":
        """The datapath of ``config``'s network (widths, Q formats, T, encoder, neuron, θ, leak).

        With ``update`` (on-chip training) the config's rule must be the one named; ``rule.output_update =
        "delta"`` (np, loco) gives ``output_delta``; ``loco`` takes K, N_ref, λ (quantised to the gram format),
        the norm guard and reciprocal bits from the config, ``lls`` its τ."""
        from loco_fpga.qformat import formats  # noqa: PLC0415

        if update is not None and config.rule.name != update:
            raise ValueError(f"rule.name = {config.rule.name!r}: the network was asked for update = {update!r}")
        fm = formats(config)
        spk = config.spiking
        lif = spk.neuron == "lif"
        return cls(arch=tuple(config.network.arch), lanes=lanes, formats=fm, encoder=spk.encoder,
                   threshold=fm.membrane.from_float(spk.threshold), neuron=spk.neuron,
                   leak_shift=spk.leak_shift if lif else 0, memory=memory, encoder_lanes=encoder_lanes,
                   update=update, rounding=config.fixed.update_rounding, mask=config.rule.mask,
                   clusters=config.rule.clusters, refresh=config.rule.refresh, ridge=fm.gram.from_float(config.rule.ridge),
                   norm_guard=config.fixed.norm_guard, recip_extra=config.fixed.recip_extra,
                   fb=int(fm.fb.from_float(1.0 / math.sqrt(config.network.arch[-1]))), cluster_units=cluster_units,
                   cluster_share=cluster_share, cluster_impl=cluster_impl,
                   tau_shift=-int(round(math.log2(config.rule.lls_temperature))) if update == "lls" else 1,
                   output_delta=update is not None and config.rule.output_update == "delta",
                   shared_update=shared_update, sparse_input=sparse_input, hold_spikes=hold_spikes,
                   micro_loss=micro_loss, held_args=held_args, readout=readout)

    arch = property(lambda self: self._arch)
    lanes = property(lambda self: self._lanes)
    formats = property(lambda self: self._formats)
    encoder = property(lambda self: self._encoder)
    n_layers = property(lambda self: len(self._arch) - 1)
    steps = property(lambda self: 1 << self._formats.log2_steps)
    #: the engines, layer order (read-only list copy): their ``lanes``, ``chunks``, ``weight_depth``
    engines = property(lambda self: list(self._engines))
    #: the input encoder (:class:`~.encoder.EncoderBank`): its ``lanes`` (inputs per cycle), ``step_cycles``
    bank = property(lambda self: self._bank)
    encoder_lanes = property(lambda self: self._bank.lanes)
    sample_layout = property(lambda self: self._sample_layout)
    output_layout = property(lambda self: self._output_layout)
    counts_layout = property(lambda self: self._engines[0].result_layout)
    word_layout = property(lambda self: self._word_layout)
    #: number of PRNG lanes behind ``seed_lane``: L noise lanes (+ n_0 encoder lanes, Bernoulli; + n_l rounding
    #: lanes per layer, stochastic update rounding)
    seed_lanes = property(lambda self: self._seed_lanes)
    #: (stream, index) of every seed lane, in ``seed_lane`` order (golden_model/prng.py)
    seed_map = property(lambda self: self._seed_map)
    update = property(lambda self: self._update)
    mask = property(lambda self: self._mask)
    #: the update engines, layer order (empty without ``update``); with ``shared_update`` one
    #: :class:`~.update.SharedUpdateEngine` that sweeps every layer
    updaters = property(lambda self: list(self._updaters))
    #: one update engine for all layers (NP only): fewer logic cells, Σ_l n_l·C_l sweep cycles instead of max_l
    shared_update = property(lambda self: self._shared)
    #: whether layer 0 reads only the weights of its active input chunks (``sparse_input``)
    sparse_input = property(lambda self: self._engines[0].sparse)
    #: whether the producer holds a sample's label and lr while it runs (``held_args``)
    held_args = property(lambda self: self._held_args)
    #: whether the engines work on their producers' spike vectors (``hold_spikes``)
    hold_spikes = property(lambda self: self._engines[0].hold_input)
    #: the loss (dl, g) runs on the first micro cluster block's program instead of a :class:`~.loss.LossUnit`
    micro_loss = property(lambda self: self._micro_loss)
    #: the micro block also computes the output layer, from the last hidden layer's counts (``readout``)
    readout = property(lambda self: self._readout)

    def input_activity(self, spikes) -> tuple:
        """Per step, layer 0's active chunks for the input spikes ``spikes`` (T × n_0, 0/1; the encoder's output,
        ``FixedNetwork.encode``): the ``active`` entry of one sample for :meth:`schedule`."""
        spikes = np.asarray(spikes)
        if spikes.shape != (self.steps, self._arch[0]):
            raise ValueError(f"spikes: expected shape {(self.steps, self._arch[0])}, got {spikes.shape}")
        return tuple(self._engines[0].active_chunks(row) for row in spikes)
    #: the LOCO cluster block of each layer, layer order (empty unless ``update = "loco"``; with ``cluster_share``
    #: S > 1 the layers of a group name the same block)
    cluster_blocks = property(lambda self: list(self._cluster_blocks))
    #: the layers of each cluster block, block order (``cluster_share``)
    cluster_groups = property(lambda self: self._cluster_groups)
    cluster_share = property(lambda self: self._share)
    #: ``"parallel"`` (:class:`~.clusters.ClusterBlock`) or ``"micro"`` (:class:`~.micro_clusters.MicroClusterBlock`)
    cluster_impl = property(lambda self: self._cluster_impl)

    @property
    def at_layout(self) -> data.StructLayout:
        """A word of a layer's prototype space on ``pw_at``/``pr_at``: ``what`` (:class:`~.clusters.PeekKind`),
        ``index``, ``col`` (LOCO only)."""
        return self._at_layout

    def proto_at(self, layer: int, addr: int) -> dict:
        """The ``pw_at``/``pr_at`` value of word ``addr`` of layer ``layer``'s prototype space (the host's linear
        map: K·N prototype words c_k[j] at k·N + j, the count, K r_k, K² H row-major): {what, index, col}."""
        K, dim = self._cluster_blocks[layer].clusters, self._dim(layer)
        if not isinstance(addr, int) or not 0 <= addr < self.proto_read_depth(layer):
            raise ValueError(f"addr = {addr!r}: layer {layer}'s prototype space has {self.proto_read_depth(layer)} "
                             "words")
        if addr < K * dim:
            return {"what": PeekKind.PROTO, "index": addr // dim, "col": addr % dim}
        addr -= K * dim
        if addr == 0:
            return {"what": PeekKind.COUNT, "index": 0, "col": 0}
        if addr <= K:
            return {"what": PeekKind.RECIP, "index": addr - 1, "col": 0}
        return {"what": PeekKind.H, "index": (addr - 1 - K) // K, "col": (addr - 1 - K) % K}

    def proto_write_depth(self, layer: int) -> int:
        """Words of layer ``layer``'s prototype space on ``pw_*``: K·N prototype words, then the count."""
        b = self._cluster_blocks[layer]
        return b.clusters * self._dim(layer) + 1

    def proto_read_depth(self, layer: int) -> int:
        """Words of layer ``layer``'s prototype space on ``pr_*``: K·N prototype words, the count, K r_k, K² H."""
        b = self._cluster_blocks[layer]
        return b.clusters * self._dim(layer) + 1 + b.clusters + b.clusters * b.clusters

    def _dim(self, layer: int) -> int:
        """Entries of layer ``layer``'s (u, v): its inputs and the bias (N of its prototypes)."""
        return self._engines[layer].n_in + 1

    #: N of layer ``layer``'s prototypes (its inputs and the bias): the row length of its prototype space
    proto_dim = _dim

    def _bank_cycles(self, layer: int, bank: int):
        """(output_cycles, tail_cycles) of layer ``layer``'s cluster block for its bank ``bank`` (a micro block's
        banks may differ in width)."""
        b = self._cluster_blocks[layer]
        if self._cluster_impl == "micro":
            return (lambda c, n: b.output_cycles(c, n, bank)), (lambda c, r: b.tail_cycles(c, r, bank))
        return b.output_cycles, b.tail_cycles

    def steady_clusters(self, samples: int) -> tuple:
        """``schedule``'s default ``clusters`` events: every layer's K clusters in use, no new one, the refresh on
        every N_ref-th sample (samples since refresh = 0 before the first sample, e.g. after a prototype load)."""
        return tuple(tuple((b.clusters, False, (n + 1) % b.refresh == 0) for b in self._cluster_blocks)
                     for n in range(samples))

    def schedule(self, samples: int = 8, clusters=None, active=None) -> Schedule:
        """The exact cycle schedule of ``samples`` back-to-back samples: a max-plus recurrence over the
        encoder bank's and the engines' FSMs (FILL → READ ⌈n_0/P⌉ once ``o`` is free → DONE hand-off; engine INPUT accept →
        n_out·C RUN → pipeline drain → EMIT [hidden] → INPUT; results; loss unit).

        ``loco``: the cluster blocks' cycles depend on their state, so ``clusters`` gives per sample, per layer
        (count after the selection, new cluster, refreshed after the update) — the arguments of
        :meth:`ClusterBlock.sample_cycles <loco_fpga.hdl.clusters.ClusterBlock.sample_cycles>`; default
        :meth:`steady_clusters`. The next sample starts when every block is idle again. A block shared by several layers
        (``cluster_share``) takes a further layer's pairs from its buffer from the cycle after it is idle again, but
        not before the second cycle after the buffer is complete.

        ``sparse_input``: layer 0's steps take cycles by the number of input chunks that spiked, so ``active`` gives
        them per sample, per step (:meth:`input_activity`); default every chunk (the most cycles)."""
        e0 = self._engines[0]
        if e0.sparse and active is not None:
            active = tuple(tuple(a) for a in active)
            if len(active) < samples or any(len(a) != self.steps for a in active[:samples]):
                raise ValueError(f"active = {active!r}: expected {samples} samples × {self.steps} steps")
        elif active is not None:
            raise ValueError("active: only a network with sparse_input = True has data-dependent steps")
        if self._cluster_blocks:
            clusters = self.steady_clusters(samples) if clusters is None else tuple(clusters)
            if len(clusters) < samples or any(len(ev) != self.n_layers for ev in clusters[:samples]):
                raise ValueError(f"clusters = {clusters!r}: expected {samples} samples × {self.n_layers} layers "
                                 "of (count, new, refreshed)")
        vperp_done, clusters_idle = [], []
        steps, bank, readout = self.steps, self._bank, self._readout
        # the engines that run the steps (readout: the hidden ones; the last one's spikes are always taken)
        engines = self._engines[:-1] if readout else self._engines
        hidden = len(engines) if readout else len(engines) - 1
        n0, words = self._arch[0], bank.words
        ninf = -(1 << 60)
        bank_free, o_accept, prev_start, prev_done = 0, ninf, ninf, ninf
        first_x, last_x, starts, accepts, counts_done, loss_done, update_done = [], [], [], [], [], [], []
        for n in range(samples):
            x0 = max(bank_free, prev_start + 1)           # x.ready: bank filling and no sample pending
            f = x0 + n0 - 1
            start = max(f + 1, prev_done + 1)
            ready = [start + 1 + e.noise_words for e in engines]
            accept = [[0] * steps for _ in engines]
            begin = [[0] * steps for _ in engines]       # the step starts (= accept, unless hold_spikes)
            emit = [[0] * steps for _ in engines]
            read = max(f + 1, o_accept)                   # READ of step 0: after the last rate, ``o`` free
            for t in range(steps):
                hand = read + words                       # DONE: the step is on ``o`` from the next cycle
                a0 = active[n][t] if active is not None else None
                for l, e in enumerate(engines):
                    # layer l > 0: layer l − 1's EMIT (step_latency after its start) offers the spikes
                    avail = hand + 1 if l == 0 else begin[l - 1][t] + (e0.step_latency(a0) if l == 1 else
                                                                       engines[l - 1].latency)
                    begin[l][t] = max(ready[l], avail)
                    # the transfer: at the start, or (hold_spikes) in the cycle of the step's last state write
                    accept[l][t] = begin[l][t] + ((e0.step_latency(a0) if l == 0 else e.latency) - 1
                                                  if e.hold_input else 0)
                    if l:
                        emit[l - 1][t] = accept[l][t]
                        ready[l - 1] = accept[l][t] + 1
                    if e.output:
                        ready[l] = begin[l][t] + (e.step_cycles(a0) if l == 0 else e.cycles_per_step)
                if readout:                               # the last engine's EMIT: taken at once
                    last = len(engines) - 1
                    emit[last][t] = begin[last][t] + (e0.step_latency(a0) if last == 0 else engines[last].latency)
                    ready[last] = emit[last][t] + 1
                o_accept = read = accept[0][t]            # taken: the next step's READ starts
            bank_free = hand + 1 + bank.count_cycles       # the input counts (update only) come first
            counts = tuple(emit[l][-1] + engines[l].result_cycles for l in range(hidden))
            if not readout:
                out = engines[-1]
                last_step = out.step_cycles(a0) if len(engines) == 1 else out.cycles_per_step
                r_last = begin[-1][-1] + last_step + out.result_cycles - 1    # the last output (always taken)
                loss = r_last + self._loss.final_latency
                done = max((loss,) + counts)
            if self._updaters:
                # v⊥ complete: the last count (input counts of the bank, or layer l − 1's) + 1 (NpSource) + 1
                # (the bias entry); g reaches every engine in the cycle after the loss unit's last transfer
                vdone = [hand + bank.count_cycles + 2] + [c + 2 for c in counts]
                if self._cluster_blocks:   # LOCO: v⊥ leaves the layer's cluster block, which then updates
                    ev, pairs_in, vdone, idle = clusters[n], vdone, list(vdone), [0] * len(vdone)
                    for group in self._cluster_groups:    # a block's layers in order, each after the one before
                        for s, l in enumerate(group):
                            (cnt, new, ref), (output_cycles, tail_cycles) = ev[l], self._bank_cycles(l, s)
                            last_in = (pairs_in[l] if s == 0       # its last pair in (straight, or from the buffer)
                                       else max(idle[group[s - 1]] + 1, pairs_in[l] + 2) + self._dim(l) - 1)
                            vdone[l] = last_in + output_cycles(cnt, new)
                            idle[l] = vdone[l] + tail_cycles(cnt, ref)
                    if readout:           # the loss run follows the last bank's update; then 3 cycles an output
                        loss = (idle[self._cluster_groups[0][-1]] + self._cluster_blocks[0].loss_cycles()
                                + 3 * self._arch[-1] - 1)
                        done = max((loss,) + counts)
                    elif self._micro_loss:  # the outputs wait for the block's last bank; 3 cycles each, then the run
                        n_out = self._arch[-1]
                        first = max(r_last - 2 * (n_out - 1), idle[self._cluster_groups[0][-1]] + 1) + 1
                        loss = first + 3 * (n_out - 1) + self._cluster_blocks[0].loss_cycles()
                        done = max((loss,) + counts)
                    vperp_done.append(tuple(vdone))
                    clusters_idle.append(tuple(idle))
                    done = max(done, max(idle))
                if self._update in _ERROR_RULES:  # e_out leaves the output error 1 cycle after y_k enters the loss unit
                    e_last = loss - self._loss.final_latency + 1
                    if self._local:  # LLS: a hidden layer's e leaves its unit a fixed time after its last count
                        edone = [c + u.cycles() for c, u in zip(counts, self._local)] + [e_last]
                    else:
                        edone = [e_last + f.done_cycles() for f in self._feedback] + [e_last]
                    writes = [max(v, e) + u.latency for v, e, u in zip(vdone, edone, self._updaters)]
                else:             # g reaches the engines the cycle after the loss unit's last transfer
                    edone = [loss + 1] * len(vdone)
                    if self._delta:   # the output layer's e: the output error's last transfer
                        edone[-1] = loss - self._loss.final_latency + 1
                    if self._shared:  # one sweep of every layer once all v⊥ and g are in
                        writes = [max(vdone + edone) + self._updaters[0].latency]
                    else:
                        writes = [max(v, e) + u.latency for v, e, u in zip(vdone, edone, self._updaters)]
                update_done.append(max(writes))
                done = max(done, max(writes))
            prev_start, prev_done = start, done
            first_x.append(x0)
            last_x.append(f)
            starts.append(start)
            accepts.append(tuple(tuple(a) for a in accept))
            counts_done.append(counts)
            loss_done.append(loss)
        period = starts[-1] - starts[-2] if samples > 1 else loss_done[0] + 1 - starts[0]
        return Schedule(tuple(first_x), tuple(last_x), tuple(starts), tuple(accepts), tuple(counts_done),
                        tuple(loss_done), period, tuple(update_done), tuple(vperp_done), tuple(clusters_idle))

    @property
    def cycles_per_sample(self) -> int:
        """Steady-state cycles from one sample's start to the next (both passes, all results delivered, the
        next sample's rates already streamed in), streams never stalling: :meth:`schedule` ``().period``."""
        return self.schedule().period

    def elaborate(self, platform):
        m = Module()
        engines, n_layers = self._engines, len(self._engines)
        for l, e in enumerate(engines):
            m.submodules[f"layer{l}"] = e
        m.submodules.bank = bank = self._bank
        loss = None if self._micro_loss else self._loss
        if loss is not None:
            m.submodules.loss = loss

        # -- sample sequencing: rates stream into the bank; one sample in the layers at a time ------------
        # ``pending``: the bank holds a complete sample (its label and lr wait here) that has not started.
        busy = Signal()
        pending = Signal()
        index = Signal(range(self._arch[0]))
        if self._held_args:
            label, lr = self.x.payload.label, self.x.payload.lr
        else:
            label, lr = Signal.like(self.x.payload.label), Signal.like(self.x.payload.lr)
            next_label, next_lr = Signal.like(self.x.payload.label), Signal.like(self.x.payload.lr)
        start = Signal()
        updaters = self._updaters
        for l, u in enumerate(updaters):
            m.submodules[f"update{l}"] = u
        blocks = self._cluster_blocks
        groups = self._cluster_groups
        for g in groups:
            m.submodules[f"clusters{g[0]}"] = blocks[g[0]]
        for l, buf in self._pair_buffers.items():
            m.submodules[f"pair_buffer{l}"] = buf
        updates_idle = Signal()
        m.d.comb += updates_idle.eq(Cat(*(u.idle for u in updaters), *(blocks[g[0]].idle for g in groups),
                                        *(buf.idle for buf in self._pair_buffers.values())).all()
                                    if updaters else 1)
        m.d.comb += [self.x.ready.eq(bank.x.ready & ~pending), bank.x.valid.eq(self.x.valid & ~pending),
                     bank.x.payload.x.eq(self.x.payload.x), start.eq(pending & ~busy & updates_idle)]
        with m.If(self.x.valid & self.x.ready):
            m.d.sync += index.eq(index + 1)
            with m.If(index == self._arch[0] - 1):
                m.d.sync += [index.eq(0), pending.eq(1)]
                if not self._held_args:
                    m.d.sync += [next_label.eq(self.x.payload.label), next_lr.eq(self.x.payload.lr)]
        with m.If(start):
            m.d.sync += [busy.eq(1), pending.eq(0)]
            if not self._held_args:
                m.d.sync += [label.eq(next_label), lr.eq(next_lr)]

        # -- PRNG lanes: noise per layer, seeds through one port ----------------------------------------
        for l, e in enumerate(engines):
            m.submodules[f"noise{l}"] = lane = Xorshift32()
            left = Signal(range(e.noise_words + 1), init=0)     # words still to give this sample
            m.d.comb += [lane.seed.eq(self.seed), lane.load.eq(self.seed_en & (self.seed_lane == l)),
                         e.noise.valid.eq(left != 0), e.noise.payload.word.eq(lane.word),
                         lane.en.eq(e.noise.valid & e.noise.ready)]
            if e.held_noise:   # one draw per sample, the next only after this sample's update: the state is the word
                m.d.comb += e.noise_state.eq(lane.state)
            with m.If(e.noise.valid & e.noise.ready):
                m.d.sync += left.eq(left - 1)
            with m.If(start):
                m.d.sync += left.eq(e.noise_words)
        base = n_layers
        if self._encoder == "bernoulli":
            m.d.comb += [bank.seed.eq(self.seed), bank.seed_index.eq(self.seed_lane - base),
                         bank.seed_en.eq(self.seed_en & at_least(self.seed_lane, base) &
                                         ~at_least(self.seed_lane, base + self._arch[0]))]
            base += self._arch[0]
        for u in updaters:
            if u.draws:
                m.d.comb += [u.seed.eq(self.seed), u.seed_index.eq(self.seed_lane - base),
                             u.seed_en.eq(self.seed_en & at_least(self.seed_lane, base) &
                                          ~at_least(self.seed_lane, base + u.n_out))]
                base += u.n_out
        for l, f in enumerate(self._feedback):
            m.submodules[f"feedback{l}"] = f
            m.d.comb += [f.seed.eq(self.seed), f.seed_en.eq(self.seed_en & (self.seed_lane == base + l))]

        # -- weights: host writes, or the update engine's read-modify-write (only between samples) ---------
        if self._shared:
            (u,) = updaters
            # one address and one word for every layer — the host's, or the sweep's while it writes — and an
            # enable per layer (each multiplexer once, not once per layer: iCE40 LUTs)
            w_addr, w_data = Signal.like(self.w_addr), Signal.like(self.w_data)
            m.d.comb += [w_addr.eq(Mux(u.wr_en, u.wr_addr, self.w_addr)),
                         w_data.eq(Mux(u.wr_en, u.wr_data, self.w_data))]
            for l, e in enumerate(engines):
                m.d.comb += [e.w_en.eq((self.w_en & (self.w_layer == l)) | (u.wr_en & (u.wr_layer == l))),
                             e.w_addr.eq(w_addr), e.w_data.eq(Cat(*(w_data[k] for k in range(e.lanes))))]
            # reads likewise: one address; the word of the layer named a cycle earlier (the sweep's while it
            # runs, else the host's read-back) goes to both the engine and ``rd_data``
            rd_layer = Signal.like(self.rd_layer)
            m.d.sync += rd_layer.eq(Mux(u.busy, u.rd_layer, self.rd_layer))
            rd_addr = Signal.like(self.rd_addr)
            m.d.comb += [rd_addr.eq(Mux(u.busy, u.rd_addr, self.rd_addr)), self.rd_data.eq(0)]
            for l, e in enumerate(engines):
                m.d.comb += [e.u_en.eq(u.busy | ~busy), e.u_addr.eq(rd_addr)]
                with m.If(rd_layer == l):
                    m.d.comb += self.rd_data.eq(e.u_data)
            masked = self._mask      # NP: the hidden layers' masks (the output layer's is all ones)
            m.d.comb += [u.rd_data.eq(self.rd_data), u.signs.eq(Cat(*(e.signs for e in engines))),
                         u.active.eq(Cat(*(e.active if masked else Const((1 << e.n_out) - 1, e.n_out)
                                           for e in engines)))]
        else:
            for l, e in enumerate(engines):
                m.d.comb += [e.w_en.eq(self.w_en & (self.w_layer == l)), e.w_addr.eq(self.w_addr),
                             e.w_data.eq(Cat(*(self.w_data[k] for k in range(e.lanes))))]
        if updaters and not self._shared:
            rd_layer = Signal.like(self.rd_layer)
            m.d.sync += rd_layer.eq(self.rd_layer)
            m.d.comb += self.rd_data.eq(0)
            for l, (e, u) in enumerate(zip(engines, updaters)):
                # the engine reads weights only in RUN, i.e. while ``busy``; otherwise the port is the update
                # engine's (sweeping) or the host's read-back
                m.d.comb += [e.u_en.eq(u.busy | ~busy), e.u_addr.eq(Mux(u.busy, u.rd_addr, self.rd_addr)),
                             u.rd_data.eq(e.u_data),
                             u.active.eq(e.active if self._mask and self._update not in _ERROR_RULES
                                         else (1 << e.n_out) - 1)]
                if not u.errors:
                    m.d.comb += u.signs.eq(e.signs)
                with m.If(u.wr_en):
                    m.d.comb += [e.w_en.eq(1), e.w_addr.eq(u.wr_addr), e.w_data.eq(u.wr_data)]
                with m.If(rd_layer == l):
                    m.d.comb += self.rd_data.eq(e.u_data)

        # -- spikes: encoder bank → layer 0 → … → layer L − 1 (both passes get the same input spikes) ----
        first = engines[0]
        m.d.comb += [first.i.valid.eq(bank.o.valid), first.i.payload.clean.eq(bank.o.payload.spikes),
                     first.i.payload.noisy.eq(bank.o.payload.spikes), bank.o.ready.eq(first.i.ready)]
        if first.input_memory:        # (its payload then goes unused)
            m.d.comb += [bank.sp_addr.eq(first.in_addr), first.in_bit.eq(bank.sp_data)]
        for l in range(n_layers - 1):
            if self._readout and l == n_layers - 2:      # the output layer runs on the micro block, from the counts
                m.d.comb += engines[l].o.ready.eq(1)
            else:
                wiring.connect(m, engines[l].o, engines[l + 1].i)

        # -- results ------------------------------------------------------------------------------------
        done = []
        sources = []
        if updaters and not blocks:  # NP: v⊥ of layer 0 = the input counts, of layer l = layer l − 1's noisy counts
            for l in range(n_layers):
                m.submodules[f"vperp{l}"] = src = NpSource(formats=self._formats)
                wiring.connect(m, src.o, updaters[0].vperp[l] if self._shared else updaters[l].vperp)
                sources.append(src)
            wiring.connect(m, bank.counts, sources[0].i)
        elif blocks:          # LOCO: (u, v) = (clean, noisy) input counts → cluster block → v⊥ → update engine
            for l in range(n_layers):
                m.submodules[f"pairs{l}"] = src = PairSource(formats=self._formats)
                sources.append(src)
            for g in groups:
                b = blocks[g[0]]
                if len(g) == 1:
                    wiring.connect(m, sources[g[0]].o, b.i)
                else:                 # the block's layers in turn: the first straight, the others from their buffers
                    feeds = [sources[g[0]].o]
                    for l in g[1:]:
                        wiring.connect(m, sources[l].o, self._pair_buffers[l].i)
                        feeds.append(self._pair_buffers[l].o)
                    turn = Signal(range(len(g)), name=f"turn{g[0]}")
                    m.d.comb += b.i.payload.bank.eq(turn)
                    with m.Switch(turn):
                        for s, feed in enumerate(feeds):
                            with m.Case(s):
                                m.d.comb += [b.i.valid.eq(feed.valid), b.i.payload.u.eq(feed.payload.u),
                                             b.i.payload.v.eq(feed.payload.v), b.i.payload.last.eq(feed.payload.last),
                                             feed.ready.eq(b.i.ready)]
                    with m.If(b.i.valid & b.i.ready & b.i.payload.last):
                        m.d.sync += turn.eq(Mux(turn == len(g) - 1, 0, turn + 1))
                for s, l in enumerate(g):
                    vp, tap = updaters[0].vperp[l] if self._shared else updaters[l].vperp, self.vperp_tap[l]
                    mine = b.o.payload.bank == s if len(g) > 1 else Const(1)
                    m.d.comb += [vp.valid.eq(b.o.valid & mine), vp.payload.v.eq(b.o.payload.v),
                                 tap.valid.eq(b.o.valid & b.o.ready & mine), tap.payload.v.eq(b.o.payload.v),
                                 tap.payload.k_star.eq(b.o.payload.k_star), tap.payload.last.eq(b.o.payload.last)]
                    with m.If(mine):
                        m.d.comb += b.o.ready.eq(vp.ready)
            bc, first_src = bank.counts, sources[0].i    # layer 0: u = v = the encoder's spike counts
            m.d.comb += [first_src.valid.eq(bc.valid), first_src.payload.u.eq(bc.payload.count),
                         first_src.payload.v.eq(bc.payload.count), first_src.payload.last.eq(bc.payload.last),
                         bc.ready.eq(first_src.ready)]
        for l in range(n_layers - 1):
            r, c = engines[l].r, self.counts[l]
            if updaters:      # a lossless fork: a result leaves the engine when both sinks take it
                src = sources[l + 1].i
                # NP/LOCO: v = the noisy counts; DFA, LLS and the delta readout's output layer: the clean ones
                clean_v = self._update in _ERROR_RULES or (self._delta and l + 1 == n_layers - 1)
                v = r.payload.count if clean_v else r.payload.count_noisy
                if blocks:
                    m.d.comb += [src.payload.u.eq(r.payload.count), src.payload.v.eq(v)]
                else:
                    m.d.comb += src.payload.count.eq(v)
                sinks = [c, src] + ([self._local[l].i] if self._local else [])
                if self._local:   # LLS: the clean counts also go into the layer's local error unit
                    m.d.comb += self._local[l].i.payload.count.eq(r.payload.count)
                m.d.comb += [c.payload.eq(r.payload), src.payload.last.eq(r.payload.last),
                             r.ready.eq(Cat(*(s_.ready for s_ in sinks)).all())]
                for s_ in sinks:
                    others = Cat(*(o_.ready for o_ in sinks if o_ is not s_)).all()
                    m.d.comb += s_.valid.eq(r.valid & others)
            else:
                wiring.connect(m, r, wiring.flipped(c))
            done.append(c.valid & c.ready & c.payload.last)
        out = engines[-1]
        y, y_noisy = Signal(shape(self._formats.out), name="y"), Signal(shape(self._formats.out), name="y_noisy")
        if loss is not None:
            m.d.comb += [loss.i.payload.eq(out.r.payload), loss.label.eq(label), loss.lr.eq(lr)]
        oe = self._output_error
        if self._readout:
            # the block computes the outputs (from the last hidden layer's pairs, which it keeps, and the weights
            # through its window) and the loss right after its last bank's update; then o carries y_k, ỹ_k read from
            # its data memory (LY + 2k, + 1; three cycles an output: address y_k, address ỹ_k while y_k is taken, offer)
            # and, on the last one, dl and g, which stay on o (``a``, the block's accumulator, holds them)
            blk = self._cluster_blocks[0]
            n_out = self._arch[-1]
            k_out = Signal(range(n_out))
            phase = Signal(range(3))
            emitting = blk.loss_o.valid
            lp = blk.loss_o.payload
            m.d.comb += [out.win_addr.eq(blk.win_addr), blk.win_data.eq(out.win_data), blk.signs.eq(out.noise_state),
                         blk.loss_label.eq(label), blk.loss_lr.eq(lr)]
            with m.If(emitting):
                with m.If(phase == 0):
                    m.d.sync += phase.eq(1)
                with m.Elif(phase == 1):
                    m.d.sync += [y.eq(blk.peek_data), phase.eq(2)]
                with m.Elif(self.o.ready):
                    m.d.sync += [phase.eq(0), k_out.eq(Mux(k_out == n_out - 1, 0, k_out + 1))]
            not_last = emitting & (k_out != n_out - 1)
            m.d.comb += [blk.out_en.eq(emitting | self.yr_en),
                         blk.out_index.eq(Mux(emitting, Cat(phase != 0, k_out), Cat(0, self.yr_index))),
                         self.o.valid.eq(emitting & (phase == 2)), blk.loss_o.ready.eq(self.o.ready & (phase == 2)
                                                                                       & ~not_last),
                         y_noisy.eq(blk.peek_data),
                         self.o.payload.y.eq(y), self.o.payload.y_noisy.eq(y_noisy),
                         self.o.payload.dy.eq(narrow(y_noisy - y, self._formats.weight.frac, self._formats.out)),
                         self.o.payload.dl.eq(Mux(not_last, 0, lp.dl)), self.o.payload.g.eq(Mux(not_last, 0, lp.g)),
                         self.o.payload.last.eq(~not_last), self.yr_data.eq(blk.peek_data), self.pred.eq(lp.pred)]
            g_value = lp.g
        elif loss is None:
            # micro_loss: the outputs go into the first cluster block, whose program computes dl and g; o carries
            # y_k one cycle after the block took it and, for the last output, once the program is done. Δy is
            # sat(ỹ − y) of the registered outputs (logic only a reader of o.dy keeps); ΔL_sum is not produced
            # (0). dl and g stay on o (``a``, the block's accumulator, holds them) until the block's next run
            blk = self._cluster_blocks[0]
            k_out = Signal(range(self._arch[-1]))
            early = Signal()                       # o offers y_k, k < n_L − 1
            took = blk.loss_i.valid & blk.loss_i.ready
            m.d.comb += [blk.loss_i.payload.y.eq(out.r.payload.y), blk.loss_i.payload.y_noisy.eq(out.r.payload.y_noisy),
                         blk.loss_label.eq(label), blk.loss_lr.eq(lr),
                         blk.loss_i.valid.eq(out.r.valid & ~early), out.r.ready.eq(blk.loss_i.ready & ~early)]
            with m.If(early & self.o.ready):
                m.d.sync += early.eq(0)
            with m.If(took):
                m.d.sync += [y.eq(out.r.payload.y), y_noisy.eq(out.r.payload.y_noisy), k_out.eq(k_out + 1)]
                with m.If(k_out == self._arch[-1] - 1):
                    m.d.sync += k_out.eq(0)
                with m.Else():
                    m.d.sync += early.eq(1)
            lp = blk.loss_o.payload
            m.d.comb += [self.o.valid.eq(early | blk.loss_o.valid), blk.loss_o.ready.eq(self.o.ready & ~early),
                         self.o.payload.y.eq(y), self.o.payload.y_noisy.eq(y_noisy),
                         self.o.payload.dy.eq(narrow(y_noisy - y, self._formats.weight.frac, self._formats.out)),
                         self.o.payload.dl.eq(Mux(early, 0, lp.dl)), self.o.payload.g.eq(Mux(early, 0, lp.g)),
                         self.o.payload.last.eq(~early)]
            g_value = self.o.payload.g
            m.d.comb += [blk.out_en.eq(self.yr_en), blk.out_index.eq(self.yr_index), self.yr_data.eq(blk.peek_data),
                         self.pred.eq(lp.pred)]
        elif oe is None:
            m.d.comb += [loss.i.valid.eq(out.r.valid), out.r.ready.eq(loss.i.ready)]
        else:                 # DFA: a lossless fork of the outputs into the loss unit and the output error
            m.submodules.output_error = oe
            m.d.comb += [loss.i.valid.eq(out.r.valid & oe.i.ready), oe.i.valid.eq(out.r.valid & loss.i.ready),
                         out.r.ready.eq(loss.i.ready & oe.i.ready), oe.i.payload.y.eq(out.r.payload.y),
                         oe.label.eq(label), oe.lr.eq(lr)]
            for l, unit in enumerate(self._local):   # LLS: hidden layer l's e from its local error unit
                m.submodules[f"local{l}"] = unit
                m.d.comb += [unit.label.eq(label), unit.lr.eq(lr)]
                wiring.connect(m, unit.o, updaters[l].e)
            # e_out → the output layer's update engine and every feedback unit (a lossless fork)
            sinks = [updaters[-1].e] + [f.err for f in self._feedback]
            m.d.comb += oe.o.ready.eq(Cat(*(s.ready for s in sinks)).all())
            for s_ in sinks:
                m.d.comb += [s_.valid.eq(oe.o.valid & oe.o.ready), s_.payload.e.eq(oe.o.payload.e)]
            # hidden layer l: δ from its feedback unit, masked by 1[0 < c_i < T] of its clean counts
            for l, f in enumerate(self._feedback):
                wiring.connect(m, f.o, updaters[l].e)
                r = engines[l].r
                idx = Signal(range(engines[l].n_out), name=f"mask_index{l}")
                # the bits known so far (all of them after the last count, until the next sample starts): the unit's
                # row i waits for bit i, which back-pressure on ``counts`` can hold past the output error
                whole = Signal(name=f"mask_whole{l}")
                m.d.comb += f.known.eq(Mux(whole, engines[l].n_out, idx))
                with m.If(start):
                    m.d.sync += whole.eq(0)
                with m.If(r.valid & r.ready):
                    m.d.sync += [f.active.bit_select(idx, 1).eq((r.payload.count != 0) & (r.payload.count != self.steps)),
                                 idx.eq(Mux(r.payload.last, 0, idx + 1))]
                    with m.If(r.payload.last):
                        m.d.sync += whole.eq(1)
        if loss is not None:
            with m.If(loss.i.valid & loss.i.ready):     # Δy_k leaves the loss unit after its y_k entered it
                m.d.sync += [y.eq(out.r.payload.y), y_noisy.eq(out.r.payload.y_noisy)]
            lp = loss.o.payload
            m.d.comb += [self.o.valid.eq(loss.o.valid), loss.o.ready.eq(self.o.ready),
                         self.o.payload.y.eq(y), self.o.payload.y_noisy.eq(y_noisy), self.o.payload.dy.eq(lp.dy),
                         self.o.payload.dl_sum.eq(lp.dl_sum), self.o.payload.dl.eq(lp.dl), self.o.payload.g.eq(lp.g),
                         self.o.payload.last.eq(lp.last)]
            g_value = lp.g
        done.append(self.o.valid & self.o.ready & self.o.payload.last)

        # -- g: broadcast to every layer's update engine at once (the depth-independent update) -----------
        g_users = [u for u in updaters if not u.errors]     # the delta readout's output layer takes e instead
        if g_users:
            # g itself stays in the loss unit's output register: it changes only with the next sample's first
            # output, and the next sample starts only when every update engine is idle again
            g_pending = Signal(len(g_users))
            with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                m.d.sync += g_pending.eq((1 << len(g_users)) - 1)
            for l, u in enumerate(g_users):
                m.d.comb += [u.g.valid.eq(g_pending[l]), u.g.payload.g.eq(g_value)]
                with m.If(u.g.valid & u.g.ready):
                    m.d.sync += g_pending[l].eq(0)
        if updaters:
            m.d.comb += self.busy.eq(busy | pending | ~updates_idle)

        # -- prototypes: host load (pw_*) and read-back (pr_*, one cycle), only while ~busy ----------------
        if blocks:
            pr_layer = Signal.like(self.pr_layer)
            m.d.sync += pr_layer.eq(self.pr_layer)
            m.d.comb += self.pr_data.eq(0)
            for g in groups:
                l, b = g[0], blocks[g[0]]

                def of_layers(layer, layers):
                    return Cat(*(layer == l_ for l_ in layers)).any()
                if len(g) > 1:        # the bank: the layer's place in its block
                    m.d.comb += [b.load.bank.eq(self.pw_layer - l), b.peek.bank.eq(self.pr_layer - l)]
                w_sel = of_layers(self.pw_layer, g)
                w_what = self.pw_at.what
                m.d.comb += [b.load_en.eq(self.pw_en & w_sel & ((w_what == PeekKind.PROTO)
                                                                | (w_what == PeekKind.COUNT))),
                             b.load.count.eq(w_what == PeekKind.COUNT), b.load.index.eq(self.pw_at.index),
                             b.load.col.eq(self.pw_at.col), b.load.value.eq(self.pw_data),
                             b.peek.what.eq(self.pr_at.what), b.peek.index.eq(self.pr_at.index),
                             b.peek.col.eq(self.pr_at.col)]
                with m.If(of_layers(pr_layer, g)):
                    m.d.comb += self.pr_data.eq(b.peek_data)

        # the sample is over when every result stream has delivered its last transfer
        seen = Signal(len(done))
        now = Cat(*done)
        with m.If(busy & ((seen | now) == (1 << len(done)) - 1)):
            m.d.sync += [busy.eq(0), seen.eq(0)]
        with m.Else():
            m.d.sync += seen.eq(seen | now)
        return m
