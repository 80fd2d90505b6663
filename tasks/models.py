"""Tasks of model training and prediction (thin wrappers over the plain functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from seismoflow.models import predict as p
from seismoflow.models import registry, training


@task(name="load-examples", cache_policy=NO_CACHE)
def load_inputs(location: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return training.load_inputs(location)


@task(name="split-by-event", cache_policy=NO_CACHE)
def split(examples: pd.DataFrame, options: training.TrainOptions) -> np.ndarray:
    return training.split_examples(examples, options)


@task(name="train-feature-models", cache_policy=NO_CACHE)
def train_feature_models(
    features: pd.DataFrame,
    examples: pd.DataFrame,
    split: np.ndarray,
    options: training.TrainOptions,
) -> Any:
    return training.train_feature_models(features, examples, split, options)


@task(name="train-cnn", cache_policy=NO_CACHE)
def train_cnn(
    location: str, examples: pd.DataFrame, split: np.ndarray, options: training.TrainOptions
) -> Any:
    return training.train_cnn_model(location, examples, split, options)


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate(
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    split: np.ndarray,
    feature_models: Any,
    cnn_run: Any,
    options: training.TrainOptions,
) -> training.Evaluation:
    return training.evaluate_models(
        location, examples, features, split, feature_models, cnn_run, options
    )


@task(name="write-model-dir", cache_policy=NO_CACHE)
def write_model_dir(
    models_dir: str,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    split: np.ndarray,
    feature_models: Any,
    cnn_run: Any,
    evaluation: training.Evaluation,
    options: training.TrainOptions,
    flow_run_id: str | None,
) -> Path:
    return training.write_model_dir(
        models_dir, location, examples, features, split, feature_models, cnn_run, evaluation,
        options, flow_run_id,
    )  # fmt: skip


@task(name="plot-training", cache_policy=NO_CACHE)
def plot_training(
    directory: Path,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: Any,
    evaluation: training.Evaluation,
    options: training.TrainOptions,
) -> dict[str, Path]:
    return training.plot_training(
        directory, location, examples, features, feature_models, evaluation, options
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
