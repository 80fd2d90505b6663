"""Site-grouped cross-validation of the feature classifiers (random forest, SVM, logistic).

Vertical-component features only; folds grouped by source site (0.25-degree cells of the
event location, ``seismoflow.examples.site_folds``), so no site is on both sides. Event
level: an event's probability is the mean over its traces (the loop is
``seismoflow.models.sklearn_models.site_cv``, shared with ``bench/features.py``; ``ensemble``
is the mean of the classifiers, as in training). Two readings:

- ``4-class``: trained on earthquake / explosion / surface event / noise, argmax over all
  four (a catalogued event called noise counts as an error); noise recall reported;
- ``3-class``: trained and scored on the three event classes only (which class is a
  catalogued event?).

Training rows are weighted by event (``sklearn_models.event_weights``: each event one
vote shared by its traces, classes balanced by event); ``--per-row-weights`` gives the
earlier reading (classes balanced per row).

Usage (a store with features: ``seismoflow features --store S`` first)::

    python bench/feature_models.py --store S [--folds 5] [--seed 0] [--trees 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from seismoflow.models.predict import present_components
from seismoflow.models.sklearn_models import FeatureModelConfig, fit_feature_models, site_cv
from seismoflow.models.training import load_inputs


def run(
    store: str, folds: int, seed: int, trees: int, weight_by_event: bool = True
) -> dict[str, Any]:
    examples, features = load_inputs(store)
    config = FeatureModelConfig(n_estimators=trees, seed=seed)
    clock = time.perf_counter()
    cv = site_cv(examples, features, folds, seed, config, weight_by_event=weight_by_event)
    out: dict[str, Any] = {"store": store, **cv}
    out["seconds"] = round(time.perf_counter() - clock, 2)
    out["anomaly"] = dead_channel_ranks(store, config)
    return out


def dead_channel_ranks(store: str, config: FeatureModelConfig) -> dict[str, Any]:
    """Anomaly rank (1 = most anomalous) of every window flagged ``flat`` (a dead channel),
    with the anomaly model fitted on all windows of the store."""
    from seismoflow.storage.schema import Flag

    examples, features = load_inputs(store)
    present = present_components(examples)
    labels = examples["label"].astype(str).to_numpy(dtype=object)
    fm = fit_feature_models(features, labels, np.ones(len(labels), dtype=bool), present, config)
    scores = fm.anomaly_scores(features, present)
    rank = (-scores).argsort().argsort() + 1
    flat = (examples["flags"].to_numpy().astype(np.int64) & int(Flag.FLAT)) != 0
    return {
        "n_windows": len(scores),
        "flat_windows": {
            str(k): int(r) for k, r in zip(examples["trace_key"][flat], rank[flat], strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument(
        "--per-row-weights", action="store_true", help="classes balanced per row, not by event"
    )
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    out = run(args.store, args.folds, args.seed, args.trees, not args.per_row_weights)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
