"""Training loop of the float golden model: seeded, reproducible, with per-epoch accuracy.

Randomness: one ``numpy.random.Generator`` seeded with ``train.seed`` initialises the weights, a child
stream drives the rule's perturbations, another one shuffles each epoch. Same config → same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from ..config import Config, ConfigError, RuleConfig
from .datasets import Dataset, load_dataset
from .network import RateNetwork, one_hot
from .rules import make_rule

__all__ = ["TrainResult", "train", "learning_rate", "build", "check_arch"]


def learning_rate(rule: RuleConfig, progress: float) -> float:
    """η at training progress ∈ [0, 1): constant, cosine decay to lr·lr_final, or ×0.1 steps at 50 %/75 %."""
    if rule.lr_schedule == "constant":
        return rule.lr
    if rule.lr_schedule == "cosine":
        f = rule.lr_final
        return rule.lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return rule.lr * (0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0)


@dataclass
class TrainResult:
    config: dict
    dataset: str
    train_acc: list = field(default_factory=list)   # after each epoch
    test_acc: list = field(default_factory=list)
    running_acc: list = field(default_factory=list)  # clean-pass accuracy on the samples while training
    samples_seen: list = field(default_factory=list)
    diverged: bool = False
    wall_time_s: float = 0.0
    samples_per_s: float = 0.0

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "dataset": self.dataset,
            "epochs_run": len(self.test_acc),
            "train_acc": self.train_acc,
            "test_acc": self.test_acc,
            "running_acc": self.running_acc,
            "samples_seen": self.samples_seen,
            "final_test_acc": self.final_test_acc,
            "diverged": self.diverged,
            "wall_time_s": round(self.wall_time_s, 3),
            "samples_per_s": round(self.samples_per_s, 1),
        }


def check_arch(config: Config, dataset: Dataset) -> None:
    """The network's input and output widths must match the data set's."""
    arch = config.network.arch
    if arch[0] != dataset.n_inputs or arch[-1] != dataset.n_classes:
        raise ConfigError(
            f"network.arch = {config.network.arch_str!r}: {dataset.name} needs {dataset.n_inputs} inputs and "
            f"{dataset.n_classes} outputs (e.g. {dataset.n_inputs}-100-100-{dataset.n_classes})")


def build(config: Config, dataset: Dataset):
    """Network and rule for a config, seeded from ``train.seed``; checks the arch against the data."""
    check_arch(config, dataset)
    root = np.random.default_rng(config.train.seed)
    init_rng, rule_rng, order_rng = root.spawn(3)
    if config.fixed.enabled:       # the fixed-point spiking model (bit-exact contract with the HDL)
        from .fixed import FixedNetwork, make_fixed_rule
        net = FixedNetwork(config, init_rng)
        return net, make_fixed_rule(net, config), order_rng
    if config.spiking.enabled:     # the float spiking model (SPEC §3)
        from .spiking import SpikingNetwork, make_spiking_rule
        net = SpikingNetwork(config.network, config.spiking, init_rng)
        return net, make_spiking_rule(net, config.rule, rule_rng), order_rng
    net = RateNetwork(config.network, init_rng)
    rule = make_rule(net, config.rule, rule_rng)
    return net, rule, order_rng


def train(config: Config, dataset: Dataset | None = None, progress: bool = False,
          on_epoch=None) -> TrainResult:
    """Train per the config; ``progress`` shows a tqdm bar; ``on_epoch(result)`` is called after each epoch."""
    if dataset is None:
        dataset = load_dataset(config.train.dataset, config.train.data_path, config.train.seed)
    net, rule, order_rng = build(config, dataset)
    targets = one_hot(dataset.y_train, dataset.n_classes)
    n = len(dataset.x_train)
    epochs = config.train.epochs
    total = n * epochs
    result = TrainResult(config=config.to_dict(), dataset=dataset.name)

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="sample", unit_scale=True, dynamic_ncols=True,
                   desc=f"{config.rule.name} {config.network.arch_str}")
    start = time.perf_counter()
    seen = 0
    bs = rule.batch_size
    try:
        # One BLAS thread: per-sample updates are far too small to gain from threads, and on a loaded
        # 2-core machine a multi-threaded OpenBLAS made training ~15× slower (measured).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                threadpool_limits(limits=1, user_api="blas"):
            for epoch in range(epochs):
                order = order_rng.permutation(n)
                correct = 0
                for i in range(0, n, bs):
                    idx = order[i:i + bs]
                    lr = learning_rate(config.rule, seen / total)
                    preds = rule.train_batch(dataset.x_train[idx], targets[idx], lr)
                    correct += int(np.sum(preds == dataset.y_train[idx]))
                    seen += len(idx)
                    if bar is not None and (i // bs) % 64 == 0:
                        bar.update(seen - bar.n)
                        bar.set_postfix(epoch=epoch + 1, run_acc=f"{correct / (i + len(idx)):.3f}",
                                        refresh=False)
                result.running_acc.append(correct / n)
                result.samples_seen.append(seen)
                # A diverged network (weights inf/NaN or beyond 1e6) is still measured and reported,
                # and training stops.
                result.train_acc.append(net.accuracy(dataset.x_train, dataset.y_train))
                result.test_acc.append(net.accuracy(dataset.x_test, dataset.y_test))
                if net.is_diverged():
                    result.diverged = True
                    break
                if bar is not None:
                    bar.update(seen - bar.n)
                    bar.set_postfix(epoch=epoch + 1, run_acc=f"{correct / n:.3f}",
                                    test_acc=f"{result.test_acc[-1]:.3f}")
                if on_epoch is not None:
                    on_epoch(result)
    finally:
        if bar is not None:
            bar.close()
    result.wall_time_s = time.perf_counter() - start
    result.samples_per_s = seen / result.wall_time_s if result.wall_time_s > 0 else 0.0
    result.network = net  # not serialised; handy for callers
    return result
