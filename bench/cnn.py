"""The CNN event classifier on a store: site-grouped cross-validation and throughput.

Cross-validation (``cnn_site_cv``): folds grouped by source site (0.25-degree cells of the
event location, ``seismoflow.examples.site_folds``), vertical components only, event-level
macro-F1 over earthquake / explosion / surface event, explosion F1, noise recall.
Throughput: windows per second through training (stream from the store, preprocess,
forward, backward, step) and inference (stream, preprocess, forward), on CPU and on CUDA as
well when a GPU is present, measured in this one run. Inference is timed for the shipped
path (``predict_cnn``) and for the reference path it replaced (zarr reads of 32 traces,
:func:`preprocess_block_reference`, ``no_grad``), in wall seconds and in seconds of this
process's CPU time (``time.process_time``: all its threads; robust to other jobs' load),
and the two paths' probabilities are compared.

    python bench/cnn.py --store archive.zarr [--folds 5] [--seed 0] [--config '{"epochs": 10}']
                        [--no-cv] [--throughput-epochs 2] [--threads N] [--json out.json]
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
from seismoflow.models import windows as win  # noqa: E402
from seismoflow.models.cnn import (  # noqa: E402
    CNNConfig,
    _predict,
    _windows,
    cnn_site_cv,
    pick_device,
    predict_cnn,
    train_cnn,
)


class ReferenceWindows(win.StoreWindows):
    """The inference input path before issue 16: blocks read through zarr, preprocessed
    by :func:`preprocess_block_reference` (filters designed on every block)."""

    def read_block(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        group = win.open_group(self.location, self.groups[positions[0]])
        wave = group["waveform"]
        idx = self.traces[positions]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo == len(idx):
            raw = np.asarray(wave[lo:hi])[idx - lo]
        else:
            raw = np.asarray(wave.get_orthogonal_selection((idx, slice(None), slice(None))))
        x, mask = win.preprocess_block_reference(
            raw, win.group_rate(group), self.prep, win.group_components(group)
        )
        return x, mask


def reference_predict(model: Any, store: str, examples: Any, cfg: CNNConfig, device: str) -> Any:
    dataset = _windows(store, examples, cfg, None)
    dataset.__class__ = ReferenceWindows
    dev = pick_device(device)
    with torch.no_grad():  # _predict's inference_mode is the newer path; keep the old cost
        probs, _ = _predict(model, dataset, dev, 4 * cfg.batch_size, False)
    return probs


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def throughput(
    store: str, examples: Any, config: CNNConfig, device: str, epochs: int = 2
) -> dict[str, Any]:
    """Training and inference windows/s on ``device``: ``epochs`` epochs over 80% of the
    rows (the first streams from the store, later ones read the cache), then inference
    over every row, streamed (vertical components only), by the reference path and by the
    shipped one, per wall second and per second of process CPU time."""
    rng = np.random.default_rng(0)
    split = np.where(rng.random(len(examples)) < 0.8, "train", "test")
    cfg = CNNConfig.from_dict({**config.to_dict(), "epochs": epochs, "patience": 99})
    cpu = time.process_time()
    run = train_cnn(store, examples, split, cfg, device=device)
    train_cpu = time.process_time() - cpu
    n_train = int(np.sum(split == "train"))
    speeds = [h["train_windows_per_s"] for h in run.history]
    n = len(examples)
    ref, ref_wall, ref_cpu = timed(
        lambda: reference_predict(run.model, store, examples, cfg, device)
    )
    new, new_wall, new_cpu = timed(
        lambda: predict_cnn(run.model, store, examples, cfg, device=device)
    )
    assert isinstance(new, np.ndarray)
    return {
        "device": device,
        "train_windows_per_epoch": n_train,
        "train_epochs": len(speeds),
        # epoch 1 streams from the store and preprocesses; later epochs reuse the cached input
        "train_windows_per_s_streaming": round(speeds[0], 1),
        "train_windows_per_s_cached": round(speeds[1], 1) if len(speeds) > 1 else None,
        "train_windows_per_cpu_s_all_epochs": round(n_train * len(speeds) / train_cpu, 1),
        "inference_windows": n,
        "inference_windows_per_s_streaming": round(n / new_wall, 1),
        "inference_windows_per_cpu_s_streaming": round(n / new_cpu, 1),
        "reference_inference_windows_per_s_streaming": round(n / ref_wall, 1),
        "reference_inference_windows_per_cpu_s_streaming": round(n / ref_cpu, 1),
        "inference_max_abs_prob_diff_vs_reference": float(np.max(np.abs(new - ref), initial=0)),
        "inference_same_argmax_as_reference": bool(
            np.array_equal(new.argmax(axis=1), ref.argmax(axis=1))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="CNNConfig fields as JSON")
    parser.add_argument("--no-cv", action="store_true", help="throughput only")
    parser.add_argument(
        "--throughput-epochs",
        type=int,
        default=2,
        help="training epochs of the throughput measurement (1: streaming only, quicker)",
    )
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
    result["throughput"] = [
        throughput(args.store, vertical, config, d, args.throughput_epochs) for d in devices
    ]
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
