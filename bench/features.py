"""Feature extraction throughput: dask over the store's chunks against a per-trace loop.

In one run, over the ``events/`` windows of a store (traces per second, best of
``--repeat``):

1. **per-trace loop**: the plain script a researcher writes: for each trace, read its
   window from zarr and call ``window_features`` on that one trace, serially;
2. **dask, one thread** (``scheduler="synchronous"``): ``seismoflow.features.extract``'s
   graph, blocks of ``--block`` traces, isolating the gain from batching;
3. **dask, threads** (the default local scheduler, all cores): what ``seismoflow features``
   runs without ``--dask-address``.

The P/S arrival offsets are computed once, outside the timed part, for all three.
``--evaluate`` adds the site-grouped cross-validation of a random forest on the ``z_``
features (event level: mean class probability over an event's traces), reported, not
asserted. Run from the repository root on an ingested store (with ``seismoflow features``
run first for ``--evaluate``):

    .venv/bin/python bench/features.py --store /tmp/dev-archive.zarr --json /tmp/bench_features.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import zarr

from seismoflow.features.extract import _open_windows, arrival_offsets, feature_graph
from seismoflow.features.physics import window_features


def _per_trace(location: str, tp: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
    group = zarr.open_group(location, mode="r", path="events", use_consolidated=False)
    wave = group["waveform"]
    assert isinstance(wave, zarr.Array)
    rate, pre = float(group.attrs["sampling_rate"]), float(group.attrs["pre_s"])  # type: ignore[arg-type]
    out = [
        window_features(np.asarray(wave[i])[None], rate, pre, tp[i : i + 1], ts[i : i + 1])
        for i in range(n)
    ]
    return np.concatenate(out)


def _timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    best_wall, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, result


def throughput(location: str, n: int | None, block: int, repeat: int) -> dict[str, Any]:
    ds = _open_windows(location, "events", block)
    total = ds.sizes["trace"]
    n = min(n or total, total)
    tp, ts = arrival_offsets(location, ds)
    graph = feature_graph(location, "events", block)[:n]
    results: dict[str, Any] = {"traces": n, "block_traces": block}
    runs = {
        "per_trace_loop": lambda: _per_trace(location, tp, ts, n),
        "dask_synchronous": lambda: np.asarray(graph.compute(scheduler="synchronous")),
        "dask_threads": lambda: np.asarray(graph.compute(scheduler="threads")),
    }
    values = {}
    for name, fn in runs.items():
        wall, cpu, values[name] = _timed(fn, repeat)
        results[name] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "traces_per_s": round(n / wall, 1),
        }
    base = results["per_trace_loop"]["traces_per_s"]
    for name in ("dask_synchronous", "dask_threads"):
        results[name]["speedup_vs_loop"] = round(results[name]["traces_per_s"] / base, 2)
    same = np.allclose(
        values["per_trace_loop"], values["dask_threads"], rtol=1e-4, atol=1e-4, equal_nan=True
    )
    results["same_values"] = bool(same)
    return results


def evaluate(location: str, seeds: int = 3, trees: int = 500) -> dict[str, Any]:
    """Site-grouped 5-fold CV of a random forest on the ``z_`` features, event level."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score, recall_score

    from seismoflow.examples import list_examples, site_folds
    from seismoflow.features.extract import read_features

    ex = list_examples(location)
    feats = read_features(location, ex)
    cols = [c for c in feats.columns if c.startswith("z_")]
    keep = ex["has_z"].to_numpy() & np.isfinite(feats[cols].to_numpy()).any(axis=1)
    ex, x = ex[keep].reset_index(drop=True), feats.loc[keep, cols].reset_index(drop=True)
    x = x.fillna(-9.0)  # NaN P/S ratios (no arrivals): a value outside every feature's range
    y = ex["label"].astype(str).to_numpy()
    quake = ["earthquake", "explosion", "surface_event"]
    out: dict[str, list[float]] = {"macro_f1": [], "explosion_f1": [], "noise_recall": []}
    for seed in range(seeds):
        folds = site_folds(ex, 5, seed)
        proba = np.zeros((len(ex), len(np.unique(y))))
        classes = None
        for k in range(5):
            rf = RandomForestClassifier(
                trees, class_weight="balanced", min_samples_leaf=2, random_state=seed, n_jobs=2
            )
            rf.fit(x[folds != k], y[folds != k])
            proba[folds == k] = rf.predict_proba(x[folds == k])
            classes = list(rf.classes_)
        assert classes is not None
        df = pd.DataFrame(proba, columns=classes).assign(event=ex["event_id"], y=y)
        ev = df.groupby("event").agg({**{c: "mean" for c in classes}, "y": "first"})
        pred = ev[classes].idxmax(axis=1)
        quakes = ev["y"].isin(quake)
        f1 = f1_score(ev.y[quakes], pred[quakes], labels=quake, average=None)
        out["macro_f1"].append(float(np.mean(f1)))
        out["explosion_f1"].append(float(f1[1]))
        out["noise_recall"].append(
            float(recall_score(ev.y, pred, labels=["noise"], average="macro"))
        )
    return {
        "features": len(cols),
        "events": int(ex["event_id"].nunique()),
        "traces": len(ex),
        **{k: round(float(np.mean(v)), 3) for k, v in out.items()},
        "per_seed": {k: [round(v, 3) for v in vs] for k, vs in out.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="an ingested store")
    parser.add_argument("--traces", type=int, default=None, help="first N traces (default all)")
    parser.add_argument("--block", type=int, default=64, help="traces per dask block")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--evaluate", action="store_true", help="random forest CV on z_ features")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "throughput": throughput(args.store, args.traces, args.block, args.repeat),
    }
    if args.evaluate:
        results["random_forest_z"] = evaluate(args.store)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
