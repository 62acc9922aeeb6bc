"""``loco-fpga experiment depth``: test accuracy vs number of hidden layers (width 64) on digits.

Rules ``loco``, ``np``, ``dfa``, ``bp`` at 1…12 hidden layers of 64 neurons, all with the same network
initialisation (W ~ U(±√6/√n): with gain 1 the activity vanishes and even BP fails from 8 hidden layers,
SPEC §2). ``loco`` and ``np`` share every setting (lr 0.01, σ = 2^-5, derivative mask, the output layer
trained by its local delta rule — ``rule.output_update = "delta"``), so the only difference between them is
the orthogonal projection. The settings are :data:`DEPTH_RULES`; their
derivation (the depth study) is in docs/results.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .experiment_common import (Point, digits_subset, fmt_mean_std, markdown_table, new_figure, run_grid,
                                save_figure, summarise, write_markdown)

__all__ = ["run_depth", "depth_points", "DEPTH_RULES", "INIT_GAIN", "WIDTH"]

WIDTH = 64
INIT_GAIN = math.sqrt(6.0)
#: rule-section settings per rule (loco and np identical apart from the name).
_PERTURB = {"lr": 0.01, "mask": True, "output_update": "delta"}
#: hidden-layer counts of the default sweep (1…12; odd depths above 1 left out to keep the suite ≤ 30 min).
DEFAULT_DEPTHS = (1, 2, 4, 6, 8, 10, 12)
DEPTH_RULES = {
    "loco": {"name": "loco", **_PERTURB},
    "np": {"name": "np", **_PERTURB},
    "dfa": {"name": "dfa", "lr": 0.02},
    "bp": {"name": "bp", "lr": 0.02},
}


def depth_points(quick: bool, depths: list[int] | None = None, rules: list[str] | None = None,
                 epochs: int | None = None) -> list[Point]:
    depths = depths or ([1, 3] if quick else list(DEFAULT_DEPTHS))
    rules = rules or list(DEPTH_RULES)
    ep = epochs or (1 if quick else 40)
    pts = []
    for rule in rules:
        for d in depths:
            arch = (64,) + (WIDTH,) * d + (10,)
            ch = {"network": {"arch": arch, "init_gain": INIT_GAIN}, "rule": dict(DEPTH_RULES[rule]),
                  "train": {"epochs": ep}}
            pts.append(Point(f"{rule}/L{d}", ch, {"rule": rule, "hidden": d}))
    return pts


def run_depth(out_dir: str | Path, quick: bool = False, depths: list[int] | None = None,
              rules: list[str] | None = None, seeds: int | None = None, epochs: int | None = None,
              progress: bool = True, jobs: int = 1) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = depth_points(quick, depths, rules, epochs)
    n_seeds = seeds or 1
    data = digits_subset(quick)
    settings = {"width": WIDTH, "init_gain": INIT_GAIN, "epochs": pts[0].changes["train"]["epochs"],
                "rules": {r: DEPTH_RULES[r] for r in dict.fromkeys(p.labels["rule"] for p in pts)},
                "schedule": "cosine"}
    json_path = out / "depth.json"
    runs = run_grid("depth", pts, list(range(n_seeds)), data, json_path, quick=quick, settings=settings,
                    progress=progress, jobs=jobs)
    rows = summarise(runs, ["rule", "hidden"], ["final_test_acc", "best_test_acc"])
    rules_seen = list(dict.fromkeys(r["rule"] for r in rows))
    depths_seen = sorted({r["hidden"] for r in rows})
    cell = {(r["rule"], r["hidden"]): r for r in rows}
    table_rows = []
    for d in depths_seen:
        table_rows.append([d] + [fmt_mean_std(cell[(rule, d)]["final_test_acc_values"]) if (rule, d) in cell
                                 else "–" for rule in rules_seen])
    table = markdown_table(["hidden layers"] + rules_seen, table_rows, "r" * (1 + len(rules_seen)))
    rule_text = "; ".join(f"{r}: " + ", ".join(f"{k}={v}" for k, v in DEPTH_RULES[r].items() if k != "name")
                          for r in rules_seen)
    md = write_markdown(out / "depth.md", "depth: final test accuracy vs hidden layers (width 64, digits)",
                        f"Init gain √6, {settings['epochs']} epochs, cosine schedule, seeds: {n_seeds}. "
                        f"{rule_text}.", table)
    fig, (ax,) = new_figure(1, 6.0, 4.0)
    for rule in rules_seen:
        ds = [d for d in depths_seen if (rule, d) in cell]
        m = np.array([cell[(rule, d)]["final_test_acc_mean"] for d in ds])
        s = np.array([cell[(rule, d)]["final_test_acc_std"] for d in ds])
        ax.errorbar(ds, m, yerr=s, marker="o", ms=4, capsize=2, label=rule)
    ax.axhline(0.85, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("hidden layers (width 64)")
    ax.set_ylabel("final test accuracy (digits)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    png = save_figure(fig, out / "depth.png")
    return [json_path, md, png]
