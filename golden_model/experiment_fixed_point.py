"""Design-space study of the fixed-point model (``loco-fpga experiment fixed-point``).

Accuracy on the digits split of fixed-point spiking LOCO against the float spiking and float rate models.
One factor at a time around a baseline (the UP5K network 64-32-10, T = 16, σ = 2^-5, K = 8, deterministic
encoder, 16-bit weights with 12 fraction bits, stochastic update rounding, N_ref = 1):

- weight width 8/12/16/20/24 bits (fraction bits = width − 4, but 5 for 8 bits so that σ = 2^-5 is one LSB),
- T ∈ {8, 16, 32}, σ ∈ {2^-4, 2^-5, 2^-6}, K ∈ {4, 8, 16}, encoder, rounding mode, N_ref ∈ {1, 16, 64};

plus the two hardware presets (``config.PRESETS``: up5k, ecp5) trained for longer. Every run is a full
``train`` of the shared training loop (same seed, same shuffled order). Results are written after every
run (``fixed_point.json``) so an interrupted study keeps what it measured and resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import PRESETS, Config, preset
from .datasets import Dataset, load_dataset
from .train import train

__all__ = ["run_study", "study_points"]

BASE_ARCH = (64, 32, 10)


def _width_changes(bits: int) -> dict:
    frac = 5 if bits == 8 else bits - 4
    acc = max(24, bits + 8)
    return {"weight_bits": bits, "weight_frac": frac, "acc_bits": acc, "membrane_bits": acc,
            "out_bits": max(24, bits)}


def study_points(quick: bool) -> list[dict]:
    """(name, group, model, section changes, epochs) of every run, baseline first."""
    epochs = 2 if quick else 10
    base = {"network": {"arch": BASE_ARCH}, "spiking": {"enabled": True}, "train": {"epochs": epochs}}

    def point(group, label, model, epochs_=epochs, **changes):
        ch = json.loads(json.dumps(base))
        ch["train"]["epochs"] = epochs_
        for k, v in changes.items():
            ch.setdefault(k, {}).update(v)
        if model == "fixed":
            ch.setdefault("fixed", {})["enabled"] = True
        elif model == "rate":
            ch["spiking"]["enabled"] = False
        return {"name": f"{group}={label} [{model}]", "group": group, "label": label, "model": model,
                "changes": ch}

    pts = [point("baseline", "up5k-like", m) for m in ("fixed", "spiking", "rate")]
    if quick:
        pts += [point("weight_bits", "8", "fixed", fixed=_width_changes(8)),
                point("rounding", "half-up", "fixed", fixed={"update_rounding": "half-up"})]
        return pts
    for bits in (8, 12, 20, 24):
        pts.append(point("weight_bits", str(bits), "fixed", fixed=_width_changes(bits)))
    for t in (8, 32):
        for m in ("fixed", "spiking"):
            pts.append(point("T", str(t), m, spiking={"steps": t}))
    for e in (4, 6):
        for m in ("fixed", "spiking"):
            pts.append(point("sigma", f"2^-{e}", m, rule={"sigma": 2.0 ** -e}))
    for k in (4, 16):
        pts.append(point("K", str(k), "fixed", rule={"clusters": k}))
    for m in ("fixed", "spiking"):
        pts.append(point("encoder", "bernoulli", m, spiking={"encoder": "bernoulli"}))
    for mode in ("half-up", "trunc"):
        pts.append(point("rounding", mode, "fixed", fixed={"update_rounding": mode}))
    for n in (16, 64):
        pts.append(point("N_ref", str(n), "fixed", rule={"refresh": n}))
    return pts


def preset_points(quick: bool) -> list[dict]:
    """The presets (fixed point) and their float spiking twins, trained for 40 epochs (deep: 10)."""
    pts = []
    for name in PRESETS:
        epochs = 1 if quick else (40 if name == "up5k" else 10)
        for model in ("fixed", "spiking"):
            if quick and model == "spiking":
                continue
            ch = json.loads(json.dumps(PRESETS[name]))
            ch["train"] = {"epochs": epochs}
            if model == "spiking":
                ch["fixed"] = {"enabled": False}
            pts.append({"name": f"preset={name} [{model}]", "group": "preset", "label": name, "model": model,
                        "changes": ch, "preset": name})
    return pts


def _config(pt: dict) -> Config:
    if "preset" in pt:
        return preset(pt["preset"]).replace(**{k: v for k, v in pt["changes"].items()
                                               if k in ("train", "fixed")})
    return Config().replace(**pt["changes"])


def _subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    return Dataset(ds.name, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test[:n_test], ds.y_test[:n_test],
                   ds.n_classes)


def run_study(out_dir: str | Path, quick: bool = False, progress: bool = True) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "fixed_point.json"
    data = load_dataset("digits")
    if quick:
        data = _subset(data, 300, 120)
    results: dict = {}
    if json_path.exists() and not quick:
        try:
            previous = json.loads(json_path.read_text(encoding="utf-8"))
            results = {r["name"]: r for r in previous.get("runs", [])}
        except (json.JSONDecodeError, KeyError):
            results = {}
    points = preset_points(quick) + study_points(quick)   # the presets first: they carry the decision
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(points), unit="run", dynamic_ncols=True, desc="fixed-point study")
    try:
        for pt in points:
            if bar is not None:
                bar.set_postfix_str(pt["name"])
            if pt["name"] not in results:
                cfg = _config(pt)
                start = time.perf_counter()
                res = train(cfg, data)
                results[pt["name"]] = {
                    "name": pt["name"], "group": pt["group"], "label": pt["label"], "model": pt["model"],
                    "arch": cfg.network.arch_str, "epochs": cfg.train.epochs,
                    "final_test_acc": res.final_test_acc, "best_test_acc": max(res.test_acc),
                    "test_acc": res.test_acc, "wall_time_s": round(time.perf_counter() - start, 1),
                    "config": cfg.to_dict(),
                }
                _write_json(json_path, quick, results)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    _write_json(json_path, quick, results)
    md = out / "fixed_point.md"
    md.write_text(markdown_table(list(results.values())), encoding="utf-8")
    png = plot_study(list(results.values()), out / "fixed_point.png")
    return [json_path, md, png]


def _write_json(path: Path, quick: bool, results: dict) -> None:
    body = {"study": "fixed-point", "dataset": "digits", "quick": quick, "runs": list(results.values())}
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def markdown_table(runs: list[dict]) -> str:
    lines = ["| group | setting | model | arch | epochs | final test acc | best test acc | time (s) |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['group']} | {r['label']} | {r['model']} | {r['arch']} | {r['epochs']} | "
                     f"{r['final_test_acc']:.3f} | {r['best_test_acc']:.3f} | {r['wall_time_s']} |")
    return "\n".join(lines) + "\n"


#: the baseline's value of each swept factor
BASELINE_LABELS = {"weight_bits": "16", "T": "16", "sigma": "2^-5", "K": "8", "encoder": "deterministic",
                   "rounding": "stochastic", "N_ref": "1"}


def _sort_key(group: str, label: str):
    if group == "sigma":
        return -int(label.split("-")[1])
    return int(label) if label.isdigit() else label


def plot_study(runs: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("baseline", "weight_bits", "T", "sigma", "K", "encoder", "rounding", "N_ref", "preset")
              if any(r["group"] == g for r in runs)]
    fig, axes = plt.subplots(1, len(groups), figsize=(2.2 * len(groups) + 1, 3.6), dpi=110, sharey=True)
    if len(groups) == 1:
        axes = [axes]
    colours = {"fixed": "tab:blue", "spiking": "tab:orange", "rate": "tab:green"}
    for ax, g in zip(axes, groups):
        rs = [r for r in runs if r["group"] == g]
        if g in BASELINE_LABELS:   # the baseline is the reference point of every sweep
            rs += [dict(r, label=BASELINE_LABELS[g]) for r in runs if r["group"] == "baseline"]
            rs.sort(key=lambda r: _sort_key(g, r["label"]))
        labels = list(dict.fromkeys(r["label"] for r in rs))
        for r in rs:
            x = labels.index(r["label"]) + {"fixed": -0.2, "spiking": 0.0, "rate": 0.2}[r["model"]]
            ax.bar(x, r["final_test_acc"], width=0.2, color=colours[r["model"]])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, fontsize="small")
        ax.set_title(g, fontsize="small")
        ax.set_ylim(0.0, 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (digits)")
    from matplotlib.patches import Patch
    axes[-1].legend(handles=[Patch(color=c, label=m) for m, c in colours.items()], fontsize="small",
                    loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
