"""Does the CNN earn a place? The CNN under the same site-grouped CV as model selection.

Runs ``seismoflow.models.training.cross_validate`` with the CNN cross-validated too
(``cnn_cv``: for each fold, test on it, stop early on the next fold, train on the others),
then scores, from the same out-of-fold probabilities, the CNN alone, each feature
classifier, the mean of the feature classifiers (what ``ensemble`` is without the CNN), that
mean with the CNN, and the logistic regression with the CNN. Event level, catalogued
events, vertical components only; mean over fold seeds and a 95% bootstrap interval over
events (``seismoflow.models.selection.score_candidates``). The issue's bar: the CNN matches
the best feature model, or adding it raises the ensemble's CV macro-F1 by >= 0.03.

    python bench/cnn_selection.py --store S [--folds 5] [--seeds 0] [--config '{...}']
                                   [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seismoflow.labels import CLASSES, EVENT_CLASSES  # noqa: E402
from seismoflow.models.cnn import CNNConfig  # noqa: E402
from seismoflow.models.selection import score_candidates  # noqa: E402
from seismoflow.models.sklearn_models import CLASSIFIERS  # noqa: E402
from seismoflow.models.training import TrainOptions, cross_validate, load_inputs  # noqa: E402


def combinations(oof: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """The candidates to compare, from each seed's out-of-fold probabilities."""
    seeds = range(len(oof["logistic"]))
    features = [k for k in CLASSIFIERS if k in oof]

    def mean(names: list[str]) -> list[np.ndarray]:
        return [np.mean([oof[n][i] for n in names], axis=0) for i in seeds]

    out = {k: oof[k] for k in [*features, "cnn"] if k in oof}
    out["features_mean"] = mean(features)
    if "cnn" in oof:
        out["features_mean+cnn"] = mean([*features, "cnn"])
        out["logistic+cnn"] = mean(["logistic", "cnn"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0", help="fold seeds, comma-separated")
    parser.add_argument("--config", default="{}", help="CNNConfig fields as JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    config = CNNConfig.from_dict({**CNNConfig().to_dict(), **json.loads(args.config)})
    seeds = tuple(int(s) for s in args.seeds.split(","))
    options = TrainOptions(
        folds=args.folds, cv_seeds=seeds, cnn=True, cnn_cv=True,
        cnn_overrides=json.loads(args.config),
    )  # fmt: skip
    examples, features = load_inputs(args.store)
    clock = time.perf_counter()
    sel = cross_validate(args.store, examples, features, options)
    scores = score_candidates(
        combinations(sel.candidates_oof), sel.labels, sel.event_ids, sel.fold_ids,
        list(CLASSES), EVENT_CLASSES, n_boot=1000,
    )  # fmt: skip
    result: dict[str, Any] = {
        "store": args.store,
        "folds": sel.folds,
        "seeds": list(seeds),
        "cnn_config": config.to_dict(),
        "load_average": [round(v, 1) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - clock, 1),
        "cnn_folds": sel.cnn_folds,
        "scores": {
            k: {
                "event_macro_f1": v["macro_f1"],
                "event_f1": v["per_class_f1"],
                "per_seed": v["per_seed_macro_f1"],
                "event_confusion": v["event_confusion"],
                "ece": v["ece"],
                "ece_calibrated": v["ece_calibrated"],
            }
            for k, v in scores.items()
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
