"""Shared machinery of the ``loco-fpga experiment`` commands (compare, depth, continual, lr, spiking).

An experiment is a list of *points* (a name, display labels, and the config sections it changes from
:class:`Config` defaults) run over several seeds. :func:`run_grid` trains every (point, seed) pair with the
shared training loop (or a caller-supplied runner), shows one progress bar over the runs, writes the JSON
file after every run (so an interrupted full-size experiment resumes where it stopped; ``--quick`` never
resumes) and returns the run records. :func:`summarise` turns the runs into mean ± std rows per point,
:func:`markdown_table` and :func:`write_markdown` write the table, :func:`new_figure` / :func:`save_figure`
the PNG.

Every run record holds the full config (``Config.to_dict()``), the seed, the per-epoch test accuracy and the
number of samples seen at each evaluation, so every number in docs/results.md can be traced to a config.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Config
from .datasets import Dataset
from .train import train

__all__ = ["Point", "run_grid", "summarise", "markdown_table", "write_markdown", "write_json", "samples_to",
           "subset", "mean_std", "fmt_mean_std", "new_figure", "save_figure", "digits_subset"]


@dataclass
class Point:
    """One setting of an experiment: ``changes`` are :meth:`Config.replace` sections; ``labels`` are for
    tables and plots (e.g. ``{"rule": "loco", "hidden": 12}``)."""

    name: str
    changes: dict
    labels: dict = field(default_factory=dict)

    def config(self, seed: int) -> Config:
        ch = json.loads(json.dumps(self.changes))   # deep copy; tuples become lists (parse_arch accepts them)
        ch.setdefault("train", {})["seed"] = seed
        return Config().replace(**ch)


def subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    """The first n_train / n_test samples (the digits split is stratified and already shuffled)."""
    return Dataset(ds.name, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test[:n_test],
                   ds.y_test[:n_test], ds.n_classes)


def digits_subset(quick: bool) -> Dataset:
    """The digits split, or its first 300 training / 120 test samples for ``--quick``."""
    from .datasets import load_digits
    data = load_digits()
    return subset(data, 300, 120) if quick else data


def samples_to(test_acc: list[float], samples_seen: list[int], threshold: float) -> int | None:
    """Training samples seen at the first evaluation (end of an epoch) with test accuracy ≥ threshold."""
    for acc, seen in zip(test_acc, samples_seen):
        if acc >= threshold:
            return int(seen)
    return None


def _train_runner(cfg: Config, data: Dataset) -> dict:
    res = train(cfg, data)
    return {"test_acc": [float(a) for a in res.test_acc], "train_acc": [float(a) for a in res.train_acc],
            "samples_seen": list(res.samples_seen), "final_test_acc": float(res.final_test_acc),
            "best_test_acc": float(max(res.test_acc)), "diverged": bool(res.diverged),
            "samples_per_s": round(res.samples_per_s, 1)}


def write_json(path: Path, body: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=1, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def run_grid(experiment: str, points: list[Point], seeds: list[int], data: Dataset, json_path: Path, *,
             quick: bool, settings: dict, progress: bool = True,
             runner: Callable[[Config, Dataset], dict] | None = None, threshold: float = 0.9,
             jobs: int = 1) -> list[dict]:
    """Train every (point, seed); returns run records (point-major, seed-minor) and keeps ``json_path`` up to date.

    A record from an existing JSON file is reused (not retrained) when its point name, seed and full config
    match — unless ``quick``. ``runner(cfg, data)`` returns at least ``final_test_acc``; the default trains
    with :func:`train` and also records the per-epoch curves. ``jobs`` > 1 trains that many runs at once in
    forked worker processes (each single-threaded; the results do not depend on ``jobs``, only wall times do).
    """
    runner = runner or _train_runner
    done: dict = {}
    if json_path.exists() and not quick:
        try:
            for r in json.loads(json_path.read_text(encoding="utf-8")).get("runs", []):
                done[(r["name"], r["seed"])] = r
        except (json.JSONDecodeError, KeyError, TypeError):
            done = {}
    tasks = [(pt, seed, pt.config(seed)) for pt in points for seed in seeds]
    records: dict[int, dict] = {}
    body = {"experiment": experiment, "dataset": data.name, "n_train": len(data.x_train),
            "n_test": len(data.x_test), "quick": quick, "seeds": list(seeds), "settings": settings, "runs": []}

    def finish(i: int, rec: dict) -> None:
        records[i] = rec
        body["runs"] = [records[j] for j in sorted(records)]
        write_json(json_path, body)

    def record(pt: Point, seed: int, cfg: Config, out: dict, wall: float) -> dict:
        rec = {"name": pt.name, "seed": seed, **pt.labels, **out, "wall_time_s": round(wall, 2),
               "config": cfg.to_dict()}
        if "test_acc" in out and "samples_seen" in out:
            rec["samples_to_90"] = samples_to(out["test_acc"], out["samples_seen"], threshold)
        return rec

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), unit="run", dynamic_ncols=True, desc=experiment)
    pending = []
    for i, (pt, seed, cfg) in enumerate(tasks):
        prev = done.get((pt.name, seed))
        if prev is not None and prev.get("config") == cfg.to_dict():
            records[i] = prev
            if bar is not None:
                bar.update(1)
        else:
            pending.append(i)
    try:
        if jobs <= 1 or len(pending) <= 1:
            for i in pending:
                pt, seed, cfg = tasks[i]
                if bar is not None:
                    bar.set_postfix_str(f"{pt.name} seed={seed}")
                out, wall = _timed_run(runner, cfg, data)
                finish(i, record(pt, seed, cfg, out, wall))
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed
            # fork: the workers inherit the runner and the data set (no pickling of a large MNIST array)
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=ctx,
                                     initializer=_worker_init, initargs=(runner, data)) as pool:
                futures = {pool.submit(_worker_run, tasks[i][2]): i for i in pending}
                for fut in as_completed(futures):
                    i = futures[fut]
                    pt, seed, cfg = tasks[i]
                    out, wall = fut.result()
                    finish(i, record(pt, seed, cfg, out, wall))
                    if bar is not None:
                        bar.set_postfix_str(f"{pt.name} seed={seed} done")
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    body["runs"] = [records[j] for j in sorted(records)]
    write_json(json_path, body)
    return body["runs"]


def _timed_run(runner, cfg: Config, data: Dataset) -> tuple[dict, float]:
    start = time.perf_counter()
    out = runner(cfg, data)
    return out, time.perf_counter() - start


_WORKER: dict = {}


def _worker_init(runner, data) -> None:
    _WORKER["runner"], _WORKER["data"] = runner, data


def _worker_run(cfg: Config) -> tuple[dict, float]:
    return _timed_run(_WORKER["runner"], cfg, _WORKER["data"])


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals))


def fmt_mean_std(values: list, digits: int = 3) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def summarise(runs: list[dict], keys: list[str], metrics: list[str]) -> list[dict]:
    """One row per point (in first-seen order): the label ``keys``, n seeds, and mean/std of each metric
    (``<metric>_mean``, ``<metric>_std``, plus ``<metric>_values``). Missing values (None) are skipped."""
    rows: dict = {}
    for r in runs:
        rows.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in rows.items():
        row = {"name": name, **{k: rs[0].get(k) for k in keys}, "seeds": len(rs)}
        for m in metrics:
            vals = [r.get(m) for r in rs]
            row[f"{m}_values"] = vals
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(vals)
        out.append(row)
    return out


def markdown_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, title: str, settings_text: str, table: str) -> Path:
    path.write_text(f"## {title}\n\n{settings_text.strip()}\n\n{table}", encoding="utf-8")
    return path


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=100, squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
