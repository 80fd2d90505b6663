"""``train-models``: learn from a store's windows; write a new model directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from seismoflow.tasks.pool import TaskPool

from seismoflow.errors import require_ml
from seismoflow.featurize.extract import require_features
from seismoflow.settings import Settings

if TYPE_CHECKING:
    from seismoflow.models.training import TrainOptions


@flow(name="train-models", log_prints=True)
def train_models(
    store: str,
    models_dir: str,
    options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the CNN and the feature models, evaluate on held-out events, write the model
    directory and its plots, publish the metrics; returns the summary.

    The store must hold features (``seismoflow features`` or the ``extract-features``
    flow); ``settings`` are the run's settings (its task runner comes from
    :func:`run_train`)."""
    require_ml("training")
    from seismoflow.tasks import models as t

    from seismoflow.models.training import TrainOptions, summary

    opts = TrainOptions.from_dict(options)
    logger = get_run_logger()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    require_features(store)
    examples, features = t.load_inputs(store)
    split = t.split(examples, opts)
    seconds["load"] = time.perf_counter() - clock
    logger.info(
        "%d windows (%s), split %s",
        len(examples),
        examples["label"].astype(str).value_counts().to_dict(),
        {s: int((split == s).sum()) for s in ("train", "val", "test")},
    )
    clock = time.perf_counter()
    # The feature models train on the pool while the CNN trains in the flow's thread.
    with TaskPool(Settings(**(settings or {})).max_workers) as pool:
        fm_future = pool.submit(t.train_feature_models, features, examples, split, opts)
        cnn_run = t.train_cnn(store, examples, split, opts) if opts.cnn else None
        feature_models = fm_future.result()
    seconds["train"] = time.perf_counter() - clock
    clock = time.perf_counter()
    evaluation = t.evaluate(store, examples, features, split, feature_models, cnn_run, opts)
    run_id = str(flow_run.id) if flow_run.id else None
    directory = t.write_model_dir(
        models_dir, store, examples, features, split, feature_models, cnn_run, evaluation,
        opts, run_id,
    )  # fmt: skip
    made = t.plot_training(directory, store, examples, features, feature_models, evaluation, opts)
    seconds["evaluate_write_plot"] = time.perf_counter() - clock
    out = summary(directory, evaluation, examples, split)
    out["plots"] = {k: str(v) for k, v in made.items()}
    out["flow_run_id"] = run_id
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    _publish(out, evaluation.metrics, made)
    logger.info(
        "train: %d windows, primary %s, model %s (%s)", len(examples), out["primary"],
        directory.name, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
    )  # fmt: skip
    return out


def _publish(
    out: dict[str, Any], metrics: dict[str, dict[str, dict[str, Any]]], made: dict[str, Path]
) -> None:
    from seismoflow.models import plots

    lines = [
        f"# Model {out['model_id']}",
        "",
        f"Directory `{out['model_dir']}`; chosen classifier **{out['primary']}** (best "
        "event-level macro-F1 on the validation events). Held-out test events, vertical "
        "component only:",
        "",
        "| model | event macro-F1 (eq/ex/su) | explosion F1 | trace macro-F1 | noise recall "
        "| val event macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for model, h in sorted(out["test"].items()):
        lines.append(
            f"| {model} | {h['event_macro_f1']:.3f} | {_num(h['explosion_f1'])} | "
            f"{h['trace_macro_f1']:.3f} | {_num(h['noise_recall'])} | "
            f"{_num(out['val_event_macro_f1'].get(model))} |"
        )
    lines += ["", f"Windows: {out['labels']}; split (traces): {out['splits']}"]
    create_markdown_artifact(
        "\n".join(lines), key="train-summary", description="metrics of a training run"
    )
    rows = []
    for model, by_split in sorted(metrics.items()):
        for level in ("event", "trace"):
            block = by_split.get("test", {}).get(level)
            if not block:
                continue
            for name, m in block["per_class"].items():
                rows.append({"model": model, "level": level, "class": name, **m})
    if rows:
        create_table_artifact(rows, key="train-per-class", description="per-class test metrics")
    images = [f"## {name}\n\n![{name}]({plots.data_uri(path)})" for name, path in made.items()]
    if images:
        create_markdown_artifact(
            "# Plots\n\n" + "\n\n".join(images), key="train-plots", description="training plots"
        )


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def run_train(settings: Settings, models_dir: str, options: TrainOptions) -> dict[str, Any]:
    """Run the flow with a thread pool (feature models train beside the CNN)."""
    return train_models(
        store=settings.store,
        models_dir=models_dir,
        options=options.to_dict(),
        settings=settings.model_dump(),
    )
