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
    """Choose the model by site-grouped cross-validation, refit the CNN and the feature
    models on every window, write the model directory and its plots, publish the metrics;
    returns the summary.

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
    seconds["load"] = time.perf_counter() - clock
    logger.info(
        "%d windows (%s); %d-fold site-grouped CV over fold seeds %s",
        len(examples), examples["label"].astype(str).value_counts().to_dict(), opts.folds,
        list(opts.cv_seeds),
    )  # fmt: skip
    clock = time.perf_counter()
    selection = t.cross_validate(store, examples, features, opts)
    seconds["cross_validate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # Refit on every window: the feature models on the pool, the CNN in the flow's thread.
    with TaskPool(Settings(**(settings or {})).max_workers) as pool:
        fm_future = pool.submit(t.train_feature_models, features, examples, opts)
        cnn_run = t.train_cnn(store, examples, opts) if opts.cnn else None
        feature_models = fm_future.result()
    seconds["refit"] = time.perf_counter() - clock
    clock = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    directory = t.write_model_dir(
        models_dir, store, examples, features, feature_models, cnn_run, selection, opts, run_id
    )
    made = t.plot_training(directory, store, examples, features, feature_models, selection, opts)
    seconds["write_plot"] = time.perf_counter() - clock
    out = summary(directory, selection, examples)
    out["plots"] = {k: str(v) for k, v in made.items()}
    out["flow_run_id"] = run_id
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    _publish(out, selection, made)
    logger.info(
        "train: %d windows, primary %s, model %s (%s)", len(examples), out["primary"],
        directory.name, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
    )  # fmt: skip
    return out


def _interval(block: dict[str, Any]) -> str:
    return f"{block['mean']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"


def _publish(out: dict[str, Any], selection: Any, made: dict[str, Path]) -> None:
    from seismoflow.models import plots

    sel = out["selection"]
    lines = [
        f"# Model {out['model_id']}",
        "",
        f"Directory `{out['model_dir']}`; chosen classifier **{out['primary']}**: the best "
        f"mean event-level macro-F1 in {sel['folds']}-fold cross-validation grouped by source "
        f"site, fold seeds {sel['seeds']} ({sel['n_events']} catalogued events, "
        f"{sel['n_windows']} vertical windows), then refit on all of them. Event "
        f"probabilities: the **{out.get('event_pooling', 'mean')}** of the traces' "
        "(the pooling chosen by the same CV). Mean over seeds [95% bootstrap interval over "
        "events]:",
        "",
        "| model | event macro-F1 (eq/ex/su) | earthquake F1 | explosion F1 | surface event F1 "
        "| ECE | ECE, calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, h in sorted(out["cv"].items()):
        f1 = h["event_f1"]
        lines.append(
            f"| {model} | {_interval(h['event_macro_f1'])} | {_interval(f1['earthquake'])} | "
            f"{_interval(f1['explosion'])} | {_interval(f1['surface_event'])} | "
            f"{h['ece']:.3f} | {h['ece_calibrated']:.3f} |"
        )
    cal = out["calibration"]
    lines += [
        "",
        f"Calibration: temperature {cal['temperature']:.3f} on event probabilities; CV ECE "
        f"{cal['cv_ece_uncalibrated']:.3f} -> {cal['cv_ece']:.3f}.",
        "",
        f"Labels: {out['labels']}",
    ]
    create_markdown_artifact(
        "\n".join(lines), key="train-summary", description="metrics of a training run"
    )
    rows = []
    for model, h in sorted(out["cv"].items()):
        for name, block in h["event_f1"].items():
            rows.append({"model": model, "level": "event", "class": name, "f1": block["mean"],
                         "f1_low": block["low"], "f1_high": block["high"]})  # fmt: skip
    if rows:
        create_table_artifact(rows, key="train-per-class", description="per-class CV F1")
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
