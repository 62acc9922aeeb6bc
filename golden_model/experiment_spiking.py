"""``loco-fpga experiment spiking``: spiking LOCO (SPEC §3) accuracy vs time steps T and perturbation σ.

The float spiking model (IF neurons, θ = 1, soft reset, deterministic sigma-delta input encoder, output =
time-averaged current), trained with streaming LOCO (K = 8, pre-activation ±σ current, lr 0.02, cosine),
64-100-100-10 on digits, for T ∈ {8, 16, 32, 64} and σ ∈ {2^-4, 2^-5, 2^-6, 2^-7}. Accuracy is measured
with the spiking forward pass at the same T.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .experiment_common import (Point, digits_subset, fmt_mean_std, markdown_table, new_figure, run_grid,
                                save_figure, summarise, write_markdown)

__all__ = ["run_spiking", "spiking_points", "STEPS", "SIGMA_EXPONENTS"]

STEPS = (8, 16, 32, 64)
SIGMA_EXPONENTS = (4, 5, 6, 7)


def spiking_points(quick: bool, steps=None, sigma_exponents=None, epochs: int | None = None) -> list[Point]:
    steps = steps or ((8, 16) if quick else STEPS)
    exps = sigma_exponents or ((5,) if quick else SIGMA_EXPONENTS)
    ep = epochs or (1 if quick else 10)
    return [Point(f"T={t}/sigma=2^-{e}", {"network": {"arch": (64, 100, 100, 10)},
                                          "rule": {"name": "loco", "sigma": 2.0 ** -e},
                                          "spiking": {"enabled": True, "steps": t}, "train": {"epochs": ep}},
                  {"T": t, "sigma_exp": e}) for t in steps for e in exps]


def run_spiking(out_dir: str | Path, quick: bool = False, seeds: int | None = None, epochs: int | None = None,
                steps=None, sigma_exponents=None, progress: bool = True, jobs: int = 1) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = spiking_points(quick, steps, sigma_exponents, epochs)
    n_seeds = seeds or 1
    data = digits_subset(quick)
    json_path = out / "spiking.json"
    settings = {"arch": [64, 100, 100, 10], "epochs": pts[0].changes["train"]["epochs"], "rule": "loco",
                "lr": 0.02, "schedule": "cosine", "encoder": "deterministic", "neuron": "if"}
    runs = run_grid("spiking", pts, list(range(n_seeds)), data, json_path, quick=quick, settings=settings,
                    progress=progress, jobs=jobs)
    rows = summarise(runs, ["T", "sigma_exp"], ["final_test_acc", "best_test_acc"])
    ts = sorted({r["T"] for r in rows})
    es = sorted({r["sigma_exp"] for r in rows})
    cell = {(r["T"], r["sigma_exp"]): r for r in rows}

    def text(t, e):
        if (t, e) not in cell:
            return "–"
        rs = [r for r in runs if r["name"] == cell[(t, e)]["name"]]
        div = sum(bool(r["diverged"]) for r in rs)
        return fmt_mean_std(cell[(t, e)]["final_test_acc_values"]) + (" (diverged)" if div else "")

    table = markdown_table(["T"] + [f"σ = 2^-{e}" for e in es], [[t] + [text(t, e) for e in es] for t in ts],
                           "r" * (1 + len(es)))
    md = write_markdown(out / "spiking.md", "spiking: spiking LOCO test accuracy vs T and σ (digits)",
                        f"64-100-100-10, IF neurons, deterministic encoder, lr 0.02 cosine, K = 8, "
                        f"{settings['epochs']} epochs, seeds: {n_seeds}.", table)
    fig, (ax,) = new_figure(1, 6.0, 4.0)
    for e in es:
        tt = [t for t in ts if (t, e) in cell]
        ax.errorbar(tt, [cell[(t, e)]["final_test_acc_mean"] for t in tt],
                    yerr=[cell[(t, e)]["final_test_acc_std"] for t in tt], marker="o", ms=4, capsize=2,
                    label=f"σ = 2^-{e}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts)
    ax.set_xticklabels([str(t) for t in ts])
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("final test accuracy (spiking, digits)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    png = save_figure(fig, out / "spiking.png")
    return [json_path, md, png]
