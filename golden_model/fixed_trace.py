"""Per-step integer traces of the fixed-point model, for the cocotb benches (``loco-fpga golden trace``).

``export_trace(config, samples, out_dir)`` trains the fixed-point model on the first ``samples`` samples of
the training stream (the same shuffled order and learning-rate schedule as ``train``) and writes:

- ``trace.npz`` — int64 arrays; leading axis = step (N) unless noted:
    ``x`` (N, n_0) quantised inputs, ``label`` (N,), ``lr_reg`` (N,) learning-rate register,
    ``spikes_in`` (N, n_0) input spike counts, ``y``/``y_noisy`` (N, n_L), ``dl``/``g`` (N,),
    per layer l (0-based, weights W_l of shape n_{l+1} × (n_l + 1)):
    ``L{l}.noise_sign`` (N, n_{l+1}) 1 → +σ, ``L{l}.counts_clean``/``L{l}.counts_noisy`` (N, n_{l+1})
    (hidden layers only), ``L{l}.k_star`` (N,) (−1 for np, dfa), ``L{l}.v_perp`` (N, n_l + 1),
    ``L{l}.e`` (N, n_{l+1}) the per-neuron error e_i of the update (g format), ``e_out`` (N, n_L) with
    ``output_update = "delta"`` or dfa,
    ``L{l}.weights`` (N, n_{l+1}, n_l + 1) after the step, ``L{l}.weights_initial`` (n_{l+1}, n_l + 1),
    and for loco ``L{l}.protos`` (N, K, n_l + 1), ``L{l}.recips`` (N, K), ``L{l}.h`` (N, K, K) (zero-padded
    to K × K while fewer than K prototypes exist) and ``L{l}.count`` (N,) prototypes in use;
    ``prng_seed`` () the config's seed.
- ``config.toml`` — the configuration that produced it (load with ``loco_fpga.config.load_config``).
- ``formats.json`` — the Q format of every quantity (``loco_fpga.qformat.describe``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import Config, save_config
from ..qformat import describe
from .datasets import Dataset, load_dataset
from .network import one_hot
from .train import build, learning_rate

__all__ = ["export_trace", "run_trace"]


def run_trace(config: Config, samples: int, dataset: Dataset | None = None) -> dict[str, np.ndarray]:
    """The trace arrays (see the module docstring) for ``samples`` training steps."""
    if not config.fixed.enabled or not config.spiking.enabled:
        config = config.replace(fixed={"enabled": True}, spiking={"enabled": True})
    if dataset is None:
        dataset = load_dataset(config.train.dataset, config.train.data_path, config.train.seed)
    net, rule, order_rng = build(config, dataset)
    n = len(dataset.x_train)
    total = n * config.train.epochs
    order = np.concatenate([order_rng.permutation(n) for _ in range((samples + n - 1) // n)])[:samples]
    targets = one_hot(dataset.y_train, dataset.n_classes)
    rec: dict[str, list] = {}

    def put(key, value):
        rec.setdefault(key, []).append(np.asarray(value, dtype=np.int64).copy())

    initial = [w.copy() for w in net.weights]
    k_cap = config.rule.clusters
    for step, idx in enumerate(order):
        lr_q = rule.lr_register(learning_rate(config.rule, step / total))
        x_q = net.fmts.input.from_float(dataset.x_train[idx])
        rule.step_q(x_q, int(np.argmax(targets[idx])), lr_q)
        last = rule.last
        put("x", x_q)
        put("label", dataset.y_train[idx])
        put("lr_reg", lr_q)
        for key in ("spikes_in", "y", "y_noisy", "dl", "g"):
            put(key, last[key])
        if last["e_out"] is not None:
            put("e_out", last["e_out"])
        for l, w in enumerate(net.weights):
            put(f"L{l}.noise_sign", last["noise_signs"][l])
            if l < net.n_layers - 1:
                put(f"L{l}.counts_clean", last["counts_clean"][l])
                put(f"L{l}.counts_noisy", last["counts_noisy"][l])
            put(f"L{l}.k_star", last["k_star"][l])
            put(f"L{l}.v_perp", last["v_perp"][l])
            put(f"L{l}.e", last["e"][l])
            put(f"L{l}.weights", w)
            if rule.clusters is not None:
                cl = rule.clusters[l]
                h = np.zeros((k_cap, k_cap), dtype=np.int64)
                h[: cl.count, : cl.count] = cl.h
                put(f"L{l}.protos", cl.protos)
                put(f"L{l}.recips", cl.recips)
                put(f"L{l}.h", h)
                put(f"L{l}.count", cl.count)
    out = {k: np.stack(v) for k, v in rec.items()}
    for l, w in enumerate(initial):
        out[f"L{l}.weights_initial"] = w
    out["prng_seed"] = np.array(config.train.seed, dtype=np.int64)
    out["_config"] = config  # type: ignore[assignment]  (removed before saving)
    return out


def export_trace(config: Config, samples: int, out_dir: str | Path, dataset: Dataset | None = None) -> Path:
    """Write trace.npz, config.toml and formats.json into ``out_dir``; returns the folder."""
    arrays = run_trace(config, samples, dataset)
    used = arrays.pop("_config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "trace.npz", **arrays)
    save_config(used, out / "config.toml")
    (out / "formats.json").write_text(json.dumps(describe(used), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return out
