"""``loco-fpga experiment lr``: final test accuracy vs learning rate on digits.

LOCO's claim: the projection reduces the variance of the node-perturbation step, so LOCO learns at step
sizes where plain NP stays at chance or diverges. ``loco`` and ``np`` (identical settings: σ = 2^-5,
Rademacher pre-activation noise, no mask, K = 8) and ``bp`` as the reference, 64-100-100-10, cosine schedule,
learning rates 0.0025 … 0.08 (×2 steps). A run whose weights blow up (inf/NaN or |w| > 1e6) is marked
diverged and reported with the accuracy it had when it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .experiment_common import (Point, digits_subset, fmt_mean_std, markdown_table, new_figure, run_grid,
                                save_figure, summarise, write_markdown)

__all__ = ["run_lr", "lr_points", "LRS"]

LRS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)
RULES = ("loco", "np", "bp")


def lr_points(quick: bool, lrs=None, rules=None, epochs: int | None = None) -> list[Point]:
    lrs = lrs or ((0.01, 0.08) if quick else LRS)
    rules = rules or (("loco", "np") if quick else RULES)
    ep = epochs or (1 if quick else 20)
    return [Point(f"{r}/lr={lr:g}", {"network": {"arch": (64, 100, 100, 10)}, "rule": {"name": r, "lr": lr},
                                     "train": {"epochs": ep}}, {"rule": r, "lr": lr})
            for r in rules for lr in lrs]


def run_lr(out_dir: str | Path, quick: bool = False, seeds: int | None = None, epochs: int | None = None,
           lrs=None, rules=None, progress: bool = True, jobs: int = 1) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = lr_points(quick, lrs, rules, epochs)
    n_seeds = seeds or (1 if quick else 2)
    data = digits_subset(quick)
    json_path = out / "lr.json"
    settings = {"arch": [64, 100, 100, 10], "epochs": pts[0].changes["train"]["epochs"], "schedule": "cosine"}
    runs = run_grid("lr", pts, list(range(n_seeds)), data, json_path, quick=quick, settings=settings,
                    progress=progress, jobs=jobs)
    rows = summarise(runs, ["rule", "lr"], ["final_test_acc", "best_test_acc"])
    rules_seen = list(dict.fromkeys(r["rule"] for r in rows))
    lrs_seen = sorted({r["lr"] for r in rows})
    cell = {(r["rule"], r["lr"]): r for r in rows}

    def text(rule, lr):
        if (rule, lr) not in cell:
            return "–"
        rs = [r for r in runs if r["name"] == cell[(rule, lr)]["name"]]
        div = sum(bool(r["diverged"]) for r in rs)
        return fmt_mean_std(cell[(rule, lr)]["final_test_acc_values"]) + (f" (diverged {div}/{len(rs)})" if div else "")

    table = markdown_table(["lr"] + rules_seen, [[f"{lr:g}"] + [text(r, lr) for r in rules_seen] for lr in lrs_seen],
                           "r" * (1 + len(rules_seen)))
    md = write_markdown(out / "lr.md", "lr: final test accuracy vs learning rate (digits, 64-100-100-10)",
                        f"{settings['epochs']} epochs, cosine schedule to 0.05·lr, σ = 2^-5, K = 8, seeds: {n_seeds}.",
                        table)
    fig, (ax,) = new_figure(1, 6.0, 4.0)
    for rule in rules_seen:
        ls = [lr for lr in lrs_seen if (rule, lr) in cell]
        m = np.array([cell[(rule, lr)]["final_test_acc_mean"] for lr in ls])
        s = np.array([cell[(rule, lr)]["final_test_acc_std"] for lr in ls])
        line = ax.errorbar(ls, m, yerr=s, marker="o", ms=4, capsize=2, label=rule)
        div = [lr for lr in ls if any(r["diverged"] for r in runs if r["name"] == cell[(rule, lr)]["name"])]
        if div:
            ax.plot(div, [cell[(rule, lr)]["final_test_acc_mean"] for lr in div], "x", ms=10,
                    color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (× = a seed diverged)")
    ax.set_ylabel("final test accuracy (digits)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    png = save_figure(fig, out / "lr.png")
    return [json_path, md, png]
