"""``loco-fpga experiment continual``: class-incremental digits, 5 tasks × 2 classes, one pass each.

Task j holds the classes (2j, 2j+1). The network (64-100-100-10, one shared 10-way readout — no task
label at test time) sees the training samples of task 1 once (shuffled), then task 2, … task 5; the rule
never learns where tasks begin. After every task the test accuracy on every task's test samples is
measured (10-way argmax), giving the accuracy matrix A[i, j] = accuracy on task j after training task i.

- **average accuracy** = mean_j A[5, j] (after the last task),
- **forgetting** of task j < 5 = max_{i<5} A[i, j] − A[5, j].

Rules ``loco``, ``np``, ``bp`` (plain per-sample SGD) and ``owm``, plus ``loco+delta`` / ``np+delta`` (the
output layer learns by its local delta rule, ``rule.output_update = "delta"``) and ``loco``/``np``/``bp`` at
lr 0.04 (``@0.04``); constant learning rate (each rule's
default, ``config.default_lr``, unless ``@lr``) since a schedule would need to know the task boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config, default_lr
from .datasets import Dataset
from .experiment_common import (Point, digits_subset, fmt_mean_std, markdown_table, new_figure, run_grid,
                                save_figure, summarise, write_markdown)
from .network import one_hot
from .train import build

__all__ = ["run_continual", "continual_points", "train_continual", "TASKS"]

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
RULES = ("loco", "np", "bp", "owm", "loco+delta", "np+delta", "loco@0.04", "np@0.04", "bp@0.04")
#: labelled variants: ``+delta`` = the output layer learns by its local delta rule (``rule.output_update``).
_VARIANTS = {"loco+delta": {"name": "loco", "output_update": "delta"},
             "np+delta": {"name": "np", "output_update": "delta"},
             # lr 0.04: where LOCO learns fastest on digits (experiment lr); np and bp at the same lr.
             "loco@0.04": {"name": "loco", "lr": 0.04}, "np@0.04": {"name": "np", "lr": 0.04},
             "bp@0.04": {"name": "bp", "lr": 0.04}}


def train_continual(cfg: Config, data: Dataset, tasks=TASKS) -> dict:
    """Train task after task (``train.epochs`` passes each); returns the accuracy matrix and summary numbers."""
    net, rule, order_rng = build(cfg, data)
    acc = np.zeros((len(tasks), len(tasks)))
    test_masks = [np.isin(data.y_test, t) for t in tasks]
    lr = cfg.rule.lr
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i, task in enumerate(tasks):
            idx = np.flatnonzero(np.isin(data.y_train, task))
            x, y = data.x_train[idx], data.y_train[idx]
            targets = one_hot(y, data.n_classes)
            for _ in range(cfg.train.epochs):
                order = order_rng.permutation(len(idx))
                for s in range(0, len(order), rule.batch_size):
                    b = order[s:s + rule.batch_size]
                    rule.train_batch(x[b], targets[b], lr)
            for j, m in enumerate(test_masks):
                acc[i, j] = net.accuracy(data.x_test[m], data.y_test[m])
    final = acc[-1]
    forgetting = [float(acc[:-1, j].max() - final[j]) for j in range(len(tasks) - 1)]
    return {"acc_matrix": acc.tolist(), "final_task_acc": final.tolist(),
            "avg_acc": float(final.mean()), "forgetting": forgetting,
            "mean_forgetting": float(np.mean(forgetting)), "final_test_acc": float(final.mean()),
            "diverged": bool(net.is_diverged())}


def continual_points(quick: bool, rules: list[str] | None = None) -> list[Point]:
    pts = []
    for r in rules or (RULES[:4] if quick else RULES):
        rule = dict(_VARIANTS.get(r, {"name": r}))
        rule.setdefault("lr", default_lr(rule["name"]))
        rule["lr_schedule"] = "constant"
        ch = {"network": {"arch": (64, 100, 100, 10)}, "rule": rule, "train": {"epochs": 1}}
        pts.append(Point(f"continual/{r}", ch, {"rule": r}))
    return pts


def run_continual(out_dir: str | Path, quick: bool = False, seeds: int | None = None, rules=None,
                  progress: bool = True, jobs: int = 1) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = continual_points(quick, rules)
    n_seeds = seeds or (1 if quick else 5)
    data = digits_subset(quick)
    json_path = out / "continual.json"
    settings = {"tasks": TASKS, "passes_per_task": 1, "arch": [64, 100, 100, 10], "schedule": "constant",
                "lr": {p.labels["rule"]: p.changes["rule"]["lr"] for p in pts}}
    runs = run_grid("continual", pts, list(range(n_seeds)), data, json_path, quick=quick, settings=settings,
                    progress=progress, runner=train_continual, jobs=jobs)
    rows = summarise(runs, ["rule"], ["avg_acc", "mean_forgetting"])
    table_rows = []
    for row in rows:
        rs = [r for r in runs if r["name"] == row["name"]]
        forget = np.array([r["forgetting"] for r in rs])
        final = np.array([r["final_task_acc"] for r in rs])
        table_rows.append([row["rule"], rs[0]["config"]["rule"]["lr"], fmt_mean_std(row["avg_acc_values"]),
                           " / ".join(f"{v:.2f}" for v in final.mean(0)),
                           " / ".join(f"{v:.2f}" for v in forget.mean(0)),
                           fmt_mean_std(row["mean_forgetting_values"])])
    table = markdown_table(["rule", "lr", "avg acc after task 5", "final acc per task 1–5",
                            "forgetting per task 1–4", "mean forgetting"], table_rows, "lrrrrr")
    md = write_markdown(out / "continual.md", "continual: class-incremental digits (5 tasks × 2 classes)",
                        f"One pass per task, constant lr, 64-100-100-10, single 10-way head, seeds: {n_seeds}. "
                        "Forgetting = best accuracy on the task before the last one minus the final accuracy.",
                        table)
    fig, axes = new_figure(2, 11.0, 4.0)
    for row in rows:
        rs = [r for r in runs if r["name"] == row["name"]]
        mats = np.array([r["acc_matrix"] for r in rs])
        avg_after = [mats[:, i, :i + 1].mean() for i in range(len(TASKS))]   # avg over tasks seen so far
        axes[0].plot(range(1, len(TASKS) + 1), avg_after, marker="o", label=f"{row['rule']}")
        axes[1].plot(range(1, len(TASKS) + 1), mats[:, -1, :].mean(0), marker="o", label=row["rule"])
    axes[0].set_xlabel("tasks trained")
    axes[0].set_ylabel("avg test acc over tasks seen so far")
    axes[1].set_xlabel("task")
    axes[1].set_ylabel("test acc after the last task")
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    png = save_figure(fig, out / "continual.png")
    return [json_path, md, png]
