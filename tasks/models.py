"""Tasks of model training and prediction (thin wrappers over the plain functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from seismoflow.models import predict as p
from seismoflow.models import registry, training


@task(name="load-examples", cache_policy=NO_CACHE)
def load_inputs(location: str, unlabelled: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    return training.load_inputs(location, unlabelled=unlabelled)


@task(name="cross-validate", cache_policy=NO_CACHE)
def cross_validate(
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    options: training.TrainOptions,
) -> training.Selection:
    return training.cross_validate(location, examples, features, options)


@task(name="train-feature-models", cache_policy=NO_CACHE)
def train_feature_models(
    features: pd.DataFrame, examples: pd.DataFrame, options: training.TrainOptions
) -> Any:
    return training.train_feature_models(features, examples, options)


@task(name="train-cnn", cache_policy=NO_CACHE)
def train_cnn(location: str, examples: pd.DataFrame, options: training.TrainOptions) -> Any:
    return training.train_cnn_model(location, examples, options)


@task(name="write-model-dir", cache_policy=NO_CACHE)
def write_model_dir(
    models_dir: str,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: Any,
    cnn_run: Any,
    selection: training.Selection,
    options: training.TrainOptions,
    flow_run_id: str | None,
) -> Path:
    return training.write_model_dir(
        models_dir, location, examples, features, feature_models, cnn_run, selection,
        options, flow_run_id,
    )  # fmt: skip


@task(name="plot-training", cache_policy=NO_CACHE)
def plot_training(
    directory: Path,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: Any,
    selection: training.Selection,
    options: training.TrainOptions,
) -> dict[str, Path]:
    return training.plot_training(
        directory, location, examples, features, feature_models, selection, options
    )


@task(name="load-model", cache_policy=NO_CACHE)
def load_model(directory: str) -> registry.ModelBundle:
    return registry.load_bundle(directory)


@task(name="predict-windows", cache_policy=NO_CACHE)
def predict(
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    bundle: registry.ModelBundle,
    tsne: bool,
    device: str | None,
) -> p.TracePredictions:
    return p.predict_examples(location, examples, features, bundle, tsne=tsne, device=device)


@task(name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(location: str, preds: p.TracePredictions, attrs: dict[str, Any]) -> str:
    return p.write_predictions(location, preds, attrs)
