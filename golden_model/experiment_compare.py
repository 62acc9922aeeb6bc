"""``loco-fpga experiment compare``: every learning rule on the same data with the same budget.

Digits (always) and MNIST (when a data file is given). Per rule: final test accuracy, training samples
until the test accuracy (evaluated after every epoch) first reaches 90 %, and wall time; mean ± std over
seeds. Every rule trains with its default learning rate (``config.default_lr``) and the default cosine
schedule; network 64-100-100-10 on digits, the LOCO code's 784-500-500-10 on MNIST (rules ``loco``,
``np``, ``dfa``, ``bp``). On MNIST the perturbation rules use the energy-normalised step
(``rule.step_norm = "energy"``, η = 1) and the delta readout (``rule.output_update = "delta"``): with a plain
step, LOCO's useful η shrinks with the 784-wide input (SPEC §2) and 3 epochs at η = 0.002 reach only 0.885.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RULES, default_lr
from .datasets import load_mnist
from .experiment_common import (Point, digits_subset, fmt_mean_std, markdown_table, new_figure, run_grid,
                                save_figure, subset, summarise, write_markdown)

__all__ = ["run_compare", "compare_points"]

MNIST_RULES = ("loco", "np", "dfa", "bp")
#: learning rates on MNIST; loco and np also take MNIST_PERTURB (their step is normalised by ‖u‖², so η = 1).
MNIST_LR = {"loco": 1.0, "np": 1.0, "dfa": 0.02, "bp": 0.02}
MNIST_PERTURB = {"step_norm": "energy", "output_update": "delta"}


def compare_points(dataset: str, quick: bool, epochs: int | None, data_path: str | None = None) -> list[Point]:
    if dataset == "digits":
        rules = ("bp", "np", "loco") if quick else RULES
        arch, ep = (64, 100, 100, 10), epochs or (1 if quick else 20)
        lrs = {r: default_lr(r) for r in rules}
    else:
        rules = ("loco", "bp") if quick else MNIST_RULES
        arch, ep = (784, 500, 500, 10), epochs or (1 if quick else 3)
        lrs = MNIST_LR
    pts = []
    for r in rules:
        rule = {"name": r, "lr": lrs[r]}
        if dataset == "mnist" and r in ("loco", "np"):
            rule.update(MNIST_PERTURB)
        ch = {"network": {"arch": arch}, "rule": rule, "train": {"epochs": ep, "dataset": dataset}}
        if data_path:
            ch["train"]["data_path"] = str(data_path)
        pts.append(Point(f"{dataset}/{r}", ch, {"rule": r, "dataset": dataset}))
    return pts


def run_compare(out_dir: str | Path, quick: bool = False, data_path: str | None = None, seeds: int | None = None,
                epochs: int | None = None, progress: bool = True, jobs: int = 1,
                digits: bool = True) -> list[Path]:
    """``digits = False`` (with a ``data_path``) runs MNIST only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds or (1 if quick else 3)
    sets = [("digits", digits_subset(quick), None)] if digits or not data_path else []
    if data_path:
        mnist = load_mnist(data_path)
        if quick:
            mnist = subset(mnist, 1000, 500)
        sets.append(("mnist", mnist, data_path))
    all_runs, paths = [], []
    for name, data, path in sets:
        pts = compare_points(name, quick, epochs, path)
        settings = {"epochs": pts[0].changes["train"]["epochs"], "arch": list(pts[0].changes["network"]["arch"]),
                    "lr": {p.labels["rule"]: p.changes["rule"]["lr"] for p in pts}, "schedule": "cosine"}
        json_path = out / f"compare_{name}.json"
        all_runs += run_grid(f"compare {name}", pts, list(range(n_seeds)), data, json_path, quick=quick,
                             settings=settings, progress=progress, jobs=jobs)
        paths.append(json_path)
    rows = summarise(all_runs, ["rule", "dataset"], ["final_test_acc", "samples_to_90", "wall_time_s",
                                                     "samples_per_s"])
    table_rows = []
    for row in rows:
        rs = [r for r in all_runs if r["name"] == row["name"]]
        reached = [r["samples_to_90"] for r in rs if r["samples_to_90"] is not None]
        s90 = (f"{fmt_mean_std(reached, 0)} ({len(reached)}/{len(rs)})" if reached else f"never (0/{len(rs)})")
        table_rows.append([row["dataset"], row["rule"], rs[0]["config"]["rule"]["lr"], rs[0]["config"]["train"]["epochs"],
                           fmt_mean_std(row["final_test_acc_values"]), s90,
                           fmt_mean_std(row["wall_time_s_values"], 1)])
    table = markdown_table(["data", "rule", "lr", "epochs", "final test acc", "samples to 90 % (seeds reaching)",
                            "wall time (s)"], table_rows, "llrrrrr")
    md = write_markdown(out / "compare.md", "compare: every rule, same data and budget",
                        f"Seeds: {n_seeds}. Test accuracy evaluated after every epoch; digits 64-100-100-10, "
                        "MNIST 784-500-500-10; cosine schedule to 0.05·lr.", table)
    png = plot_compare(all_runs, out / "compare.png")
    return paths + [md, png]


def plot_compare(runs: list[dict], path: Path) -> Path:
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = new_figure(len(datasets), 6.0 * len(datasets), 4.0)
    for ax, ds in zip(axes, datasets):
        rules = list(dict.fromkeys(r["rule"] for r in runs if r["dataset"] == ds))
        for rule in rules:
            rs = [r for r in runs if r["dataset"] == ds and r["rule"] == rule]
            n = min(len(r["test_acc"]) for r in rs)
            xs = rs[0]["samples_seen"][:n]
            import numpy as np
            mean = np.mean([r["test_acc"][:n] for r in rs], axis=0)
            ax.plot(xs, mean, marker="o" if n < 4 else None, ms=3, label=f"{rule} ({mean[-1]:.3f})")
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("training samples")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.set_ylim(0, 1)
        ax.set_title(f"compare: {ds}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower right", ncol=2)
    return save_figure(fig, path)
