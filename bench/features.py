"""Feature extraction throughput: dask over the store's chunks against a per-trace loop.

In one run, over the ``events/`` windows of a store (traces per second, best of
``--repeat``):

1. **per-trace loop**: the plain script a researcher writes: for each trace, read its
   window from zarr and call ``window_features`` on that one trace, serially;
2. **dask, one thread** (``scheduler="synchronous"``): ``seismoflow.featurize.extract``'s
   graph, blocks of ``--block`` traces, isolating the gain from batching;
3. **dask, threads** (the default local scheduler, all cores): what ``seismoflow features``
   runs without ``--dask-address``.

The P/S arrival offsets are computed once, outside the timed part, for all three.
``--evaluate`` adds the site-grouped cross-validation of the random forest and the
logistic regression on the ``z_`` features (event level: mean class probability over an
event's traces; the loop shared with ``bench/feature_models.py``), reported, not
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

from seismoflow.featurize.extract import _open_windows, arrival_offsets, feature_graph
from seismoflow.featurize.physics import window_features


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


def evaluate(
    location: str, seeds: int = 3, trees: int = 500, weight_by_event: bool = True
) -> dict[str, Any]:
    """Site-grouped 5-fold CV of the feature classifiers on the ``z_`` features, event level,
    trained on events and noise (4-class), over ``seeds`` fold assignments: the loop of
    ``bench/feature_models.py`` (``seismoflow.models.sklearn_models.site_cv``). Macro-F1
    and explosion F1 are scored on the catalogued events (``catalogued_f1``); the macro-F1
    with the noise windows counted as events is reported beside it. Training rows are
    weighted by event unless ``weight_by_event`` is false (``sklearn_models.event_weights``)."""
    from seismoflow.models.sklearn_models import FeatureModelConfig, site_cv
    from seismoflow.models.training import load_inputs

    examples, features = load_inputs(location)
    kinds = ("random_forest", "logistic")
    per_seed: dict[str, dict[str, list[float | None]]] = {}
    info: dict[str, Any] = {}
    for seed in range(seeds):
        config = FeatureModelConfig(n_estimators=trees, seed=seed)
        cv = site_cv(
            examples,
            features,
            5,
            seed,
            config,
            kinds,
            readings=("4-class",),
            weight_by_event=weight_by_event,
        )
        info = {k: cv[k] for k in ("n_traces", "n_features", "labels")}
        for kind, h in cv["4-class"].items():
            rec = per_seed.setdefault(
                kind,
                {
                    "macro_f1": [],
                    "explosion_f1": [],
                    "macro_f1_with_noise_windows": [],
                    "noise_recall": [],
                },
            )
            rec["macro_f1"].append(h["catalogued_event_macro_f1"])
            rec["explosion_f1"].append(h["catalogued_event_f1"]["explosion"])
            rec["macro_f1_with_noise_windows"].append(h["event_macro_f1"])
            rec["noise_recall"].append(h["noise_recall"])
    out: dict[str, Any] = {
        **info,
        "reading": "4-class (events and noise)",
        "weight_by_event": weight_by_event,
    }
    for kind, rec in per_seed.items():
        out[kind] = {
            **{
                k: round(float(np.mean([v for v in vs if v is not None])), 3)
                for k, vs in rec.items()
                if any(v is not None for v in vs)
            },
            "per_seed": rec,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="an ingested store")
    parser.add_argument("--traces", type=int, default=None, help="first N traces (default all)")
    parser.add_argument("--block", type=int, default=64, help="traces per dask block")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--evaluate", action="store_true", help="site-grouped CV on z_ features")
    parser.add_argument(
        "--per-row-weights",
        action="store_true",
        help="--evaluate with classes balanced per row, not by event",
    )
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
        results["site_cv_z"] = evaluate(args.store, weight_by_event=not args.per_row_weights)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
