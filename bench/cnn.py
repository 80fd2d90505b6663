"""The CNN event classifier on a store: site-grouped cross-validation and throughput.

Cross-validation (``cnn_site_cv``): folds grouped by source site (0.25-degree cells of the
event location, ``seismoflow.examples.site_folds``), vertical components only, event-level
macro-F1 over earthquake / explosion / surface event, explosion F1, noise recall.
Throughput: windows per second through training (stream from the store, preprocess,
forward, backward, step) and inference (stream, preprocess, forward), on CPU by default and
on CUDA as well when a GPU is present (``--device``), measured in this one run.

    python bench/cnn.py --store archive.zarr [--folds 5] [--seed 0] [--config '{"epochs": 10}']
                        [--no-cv] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seismoflow.examples import list_examples, site_folds  # noqa: E402
from seismoflow.models.cnn import (  # noqa: E402
    CNNConfig,
    cnn_site_cv,
    predict_cnn,
    train_cnn,
)


def throughput(store: str, examples: Any, config: CNNConfig, device: str) -> dict[str, Any]:
    """Training and inference windows/s on ``device``: 2 epochs over 80% of the rows
    (the first streams from the store, the second reads the cache), then inference over
    every row, streamed (vertical components only)."""
    rng = np.random.default_rng(0)
    split = np.where(rng.random(len(examples)) < 0.8, "train", "test")
    cfg = CNNConfig.from_dict({**config.to_dict(), "epochs": 2, "patience": 99})
    run = train_cnn(store, examples, split, cfg, device=device)
    cold, warm = (h["train_windows_per_s"] for h in run.history)
    clock = time.perf_counter()
    predict_cnn(run.model, store, examples, cfg, device=device)
    infer_s = time.perf_counter() - clock
    return {
        "device": device,
        "train_windows_per_epoch": int(np.sum(split == "train")),
        # epoch 1 streams from the store and preprocesses; epoch 2 reuses the cached input
        "train_windows_per_s_streaming": round(cold, 1),
        "train_windows_per_s_cached": round(warm, 1),
        "inference_windows": len(examples),
        "inference_windows_per_s_streaming": round(len(examples) / infer_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="CNNConfig fields as JSON")
    parser.add_argument("--no-cv", action="store_true", help="throughput only")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). On a shared machine keep 1: with more "
        "threads than free cores torch's workers spin and training runs ~20x slower",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("seismoflow.models.cnn").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = CNNConfig.from_dict({**CNNConfig().to_dict(), **json.loads(args.config)})
    examples = list_examples(args.store)
    vertical = examples[examples["has_z"].to_numpy(dtype=bool)].reset_index(drop=True)
    result: dict[str, Any] = {
        "store": args.store,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 1) for v in os.getloadavg()],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "examples": {str(k): int(v) for k, v in examples["label"].value_counts().items()},
        "config": config.to_dict(),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result["throughput"] = [throughput(args.store, vertical, config, d) for d in devices]
    if not args.no_cv:
        folds = site_folds(examples, args.folds, args.seed)
        result["cv"] = cnn_site_cv(args.store, examples, folds, config)
    result["machine"]["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
