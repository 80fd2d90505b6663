"""One training run, as plain functions the ``train-models`` flow wires together.

Examples and features come from the store (``seismoflow.examples``,
``seismoflow.featurize``); rows are split by event (and by source site where there are
enough sites), never one event on two sides. The CNN (``seismoflow.models.cnn``) and the
feature models (``seismoflow.models.sklearn_models``) train on the ``train`` rows; the
model's chosen classifier (``primary``: one of them or the mean of all, the ``ensemble``)
is picked by event-level macro-F1 on ``val``; ``test`` gives the reported metrics. Every
evaluation uses the vertical component only (the CNN's horizontals are hidden, the
classifiers only see ``z_`` features), because in the archive horizontals exist only for
surface events.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seismoflow.errors import StoreError
from seismoflow.featurize.extract import features_missing
from seismoflow.labels import CLASSES, EVENT_CLASSES, NOISE
from seismoflow.models import plots
from seismoflow.models.metrics import choose_primary, headline, split_metrics
from seismoflow.models.predict import CNN, ENSEMBLE, present_components
from seismoflow.models.registry import (
    CNN_DIR,
    code_version,
    create_model_dir,
    data_fingerprint,
    save_feature_models,
    write_metadata,
)
from seismoflow.models.sklearn_models import (
    FeatureModelConfig,
    FeatureModels,
    feature_matrix,
    fit_feature_models,
    tsne_embedding,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """What a training run does. ``epochs`` overrides the CNN's default (``CNNConfig``)."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    cnn: bool = True
    epochs: int | None = None
    device: str | None = None
    n_estimators: int = 300
    kmeans_k: int | None = None
    tsne: bool = True
    gallery_per_class: int = 4

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fractions"] = list(self.fractions)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainOptions:
        values = dict(values or {})
        if "fractions" in values:
            values["fractions"] = tuple(float(f) for f in values["fractions"])
        return cls(**values)

    def feature_config(self) -> FeatureModelConfig:
        return FeatureModelConfig(
            n_estimators=self.n_estimators, kmeans_k=self.kmeans_k, seed=self.seed
        )

    def cnn_config(self) -> Any:
        from seismoflow.models.cnn import CNNConfig

        base = CNNConfig(seed=self.seed)
        if self.epochs is not None:
            base = CNNConfig.from_dict({**base.to_dict(), "epochs": self.epochs})
        return base


def load_inputs(location: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's examples and their features (row-aligned; features without the
    ``group``/``trace`` keys)."""
    from seismoflow.examples import list_examples
    from seismoflow.featurize.extract import read_features

    examples = list_examples(location)
    if examples.empty:
        raise StoreError(
            f"{location} holds no labelled windows; ingest with --events (and run "
            "`seismoflow features` for noise windows) first"
        )
    missing = features_missing(location)
    if missing:
        raise ValueError(
            f"{location} has no features for {missing}; run `seismoflow features --store "
            f"{location}` first"
        )
    features = read_features(location, examples)
    features = features.drop(columns=[c for c in ("group", "trace") if c in features.columns])
    return examples, features.reset_index(drop=True)


def split_examples(examples: pd.DataFrame, options: TrainOptions) -> np.ndarray:
    """train/val/test per row, by event (and site), checked: no event on two sides."""
    from seismoflow.examples import event_split

    split = np.asarray(event_split(examples, options.fractions, options.seed), dtype=object)
    sides = pd.DataFrame({"event": examples["event_id"].astype(str), "split": split})
    shared = sides.groupby("event")["split"].nunique()
    if (shared > 1).any():
        raise AssertionError(f"events on two sides of the split: {list(shared[shared > 1].index)}")
    return split


def train_feature_models(
    features: pd.DataFrame, examples: pd.DataFrame, split: np.ndarray, options: TrainOptions
) -> FeatureModels:
    labels = examples["label"].astype(str).to_numpy(dtype=object)
    # One vote per event, shared by its traces (the metric is per event): event weights.
    events = examples["event_id"].astype(str).to_numpy(dtype=object)
    return fit_feature_models(
        features, labels, np.asarray(split) == "train", present_components(examples),
        options.feature_config(), event_ids=events,
    )  # fmt: skip


def train_cnn_model(
    location: str, examples: pd.DataFrame, split: np.ndarray, options: TrainOptions
) -> Any:
    """The CNN trained on ``train`` (early stopping on ``val``), or None if disabled."""
    if not options.cnn:
        return None
    from seismoflow.models.cnn import train_cnn

    return train_cnn(
        location, examples, np.asarray(split), options.cnn_config(), classes=CLASSES,
        device=options.device,
    )  # fmt: skip


@dataclass
class Evaluation:
    """Probabilities of every classifier on every row (vertical only; NaN where a row has
    no vertical component), their metrics per split, and the chosen classifier."""

    probabilities: dict[str, np.ndarray]
    metrics: dict[str, dict[str, dict[str, Any]]]
    primary: str
    ensemble: list[str]
    val_scores: dict[str, float]
    headline: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def probability(self) -> np.ndarray:
        return self.probabilities[self.primary]


def evaluate_models(
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    split: np.ndarray,
    feature_models: FeatureModels,
    cnn_run: Any,
    options: TrainOptions,
) -> Evaluation:
    """Score every classifier (and their mean) on all rows; metrics on val and test."""
    clock = time.perf_counter()
    classes = list(CLASSES)
    probs = feature_models.probabilities(features, classes)
    if cnn_run is not None:
        from seismoflow.models.cnn import predict_cnn

        horizontals = tuple(c for c in cnn_run.config.components if c != "Z")
        p = predict_cnn(
            cnn_run.model, location, examples, cnn_run.config, device=options.device,
            drop_components=horizontals,
        )  # fmt: skip
        assert isinstance(p, np.ndarray)
        probs[CNN] = np.asarray(p, dtype=np.float64)
    members = sorted(probs)
    probs[ENSEMBLE] = np.mean([probs[m] for m in members], axis=0)
    no_z = ~examples["has_z"].to_numpy(dtype=bool)
    for v in probs.values():
        v[no_z] = np.nan
    labels = examples["label"].astype(str).to_numpy(dtype=object)
    ids = examples["event_id"].astype(str).to_numpy(dtype=object)
    metrics = split_metrics(probs, labels, ids, np.asarray(split), classes)
    primary, scores = choose_primary(metrics, "val")
    heads = {
        m: headline(v["test"], EVENT_CLASSES, NOISE) for m, v in metrics.items() if "test" in v
    }
    return Evaluation(probs, metrics, primary, members, scores, heads, time.perf_counter() - clock)


def window_attrs(location: str) -> dict[str, Any]:
    """The store's event-window setting (rate, length, reference) the model learned from."""
    from seismoflow.storage.location import open_root

    root = open_root(location, mode="r")
    attrs = dict(root["events"].attrs)
    keys = ("sampling_rate", "pre_s", "post_s", "n_samples", "reference")
    return {k: attrs.get(k) for k in keys}


SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_counts(examples: pd.DataFrame, split: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per split: traces, events and traces per label (``model.json`` and the summary)."""
    split_arr = np.asarray(split, dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        rows = examples.loc[split_arr == name]
        out[name] = {
            "traces": len(rows),
            "events": int(rows["event_id"].nunique()),
            "labels": rows["label"].astype(str).value_counts().to_dict(),
        }
    return out


def write_model_dir(
    models_dir: str,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    split: np.ndarray,
    feature_models: FeatureModels,
    cnn_run: Any,
    evaluation: Evaluation,
    options: TrainOptions,
    flow_run_id: str | None,
) -> Path:
    """A new model directory with every model and ``model.json``."""
    train = np.asarray(split) == "train"
    fingerprint = data_fingerprint(location, examples[train], features[train])
    directory = create_model_dir(models_dir, fingerprint)
    fm_meta = save_feature_models(directory, feature_models)
    cnn_meta: dict[str, Any] | None = None
    if cnn_run is not None:
        from seismoflow.models.cnn import save_cnn

        cnn_meta = save_cnn(cnn_run, directory / CNN_DIR)
    counts = split_counts(examples, split)
    window = window_attrs(location)
    metadata = {
        "classes": list(CLASSES),
        "primary": evaluation.primary,
        "ensemble": evaluation.ensemble,
        "val_event_macro_f1": evaluation.val_scores,
        "window": window,
        "sampling_rate": (
            cnn_meta["preprocessing"]["sampling_rate"] if cnn_meta else window["sampling_rate"]
        ),
        "window_length_s": (window["pre_s"] or 0) + (window["post_s"] or 0),
        "normalisation": {
            "cnn": cnn_meta["preprocessing"] if cnn_meta else None,
            "features": "features of per-trace normalised, 0.5-8 Hz windows "
            "(seismoflow.featurize); median imputation, then StandardScaler for SVM, "
            "K-Means, PCA and the anomaly model",
        },
        "feature_names": feature_models.feature_names,
        "feature_models": fm_meta,
        "cnn": (
            {k: cnn_meta[k] for k in ("config", "classes", "architecture", "best_epoch", "seconds")}
            if cnn_meta
            else None
        ),
        "training_data": {
            "store": location,
            "fingerprint": fingerprint,
            "n_examples": len(examples),
            "splits": counts,
        },
        "metrics": evaluation.metrics,
        "headline": evaluation.headline,
        "code_version": code_version(),
        "flow_run_id": flow_run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "options": options.to_dict(),
    }
    write_metadata(directory, json.loads(json.dumps(metadata, default=_plain)))
    return directory


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def plot_training(
    directory: Path,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: FeatureModels,
    evaluation: Evaluation,
    options: TrainOptions,
) -> dict[str, Path]:
    """The run's PNGs under ``directory/plots``: test confusion matrices (event and trace
    level, chosen classifier), PCA and t-SNE maps by class and by cluster, and a gallery
    of vertical waveforms per predicted class."""
    out = directory / "plots"
    made: dict[str, Path] = {}
    test = evaluation.metrics[evaluation.primary].get("test")
    if test:
        for level in ("event", "trace"):
            made[f"confusion_{level}"] = plots.confusion_png(
                test[level], f"{evaluation.primary}, held-out events, {level} level",
                out / f"confusion_{level}.png",
            )  # fmt: skip
    labels = examples["label"].astype(str).to_numpy()
    clusters = feature_models.clusters(features)
    maps = {"pca": feature_models.pca_map(features)}
    if options.tsne and len(features) >= 4:
        x = feature_matrix(features, feature_models.feature_names)
        maps["tsne"] = tsne_embedding(x, feature_models.config)
    for name, xy in maps.items():
        made[f"{name}_class"] = plots.embedding_png(
            xy, labels, f"{name.upper()} of vertical features, by class", out / f"{name}_class.png"
        )
        made[f"{name}_cluster"] = plots.embedding_png(
            xy, clusters, f"{name.upper()} of vertical features, by K-Means cluster",
            out / f"{name}_cluster.png", legend="cluster",
        )  # fmt: skip
    probs = evaluation.probability
    scored = np.isfinite(probs).all(axis=1)
    predicted = np.where(
        scored, np.asarray(CLASSES, dtype=object)[np.nan_to_num(probs).argmax(axis=1)], ""
    )
    made["gallery"] = gallery(
        location, examples, predicted, out / "gallery.png", options.gallery_per_class, options.seed
    )
    return made


def gallery(
    location: str,
    examples: pd.DataFrame,
    predicted: np.ndarray,
    path: Path,
    per_class: int,
    seed: int,
) -> Path:
    """Waveform gallery of rows per predicted class (vertical, 1-8 Hz, 20 Hz, unit RMS)."""
    from seismoflow.models.windows import Preprocess, read_windows

    prep = Preprocess(20.0, (1.0, 8.0), ("Z",))
    chosen = plots.pick_gallery(examples, predicted, CLASSES, per_class, seed)
    windows: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, rows in chosen.items():
        windows[name] = []
        for row in rows.itertuples(index=False):
            x, _ = read_windows(location, str(row.group), [int(row.trace)], prep)
            caption = f"{row.network}.{row.station} true={row.label}"
            windows[name].append((caption, x[0, 0]))
    return plots.gallery_png(windows, prep.sampling_rate, path)


def summary(
    directory: Path, evaluation: Evaluation, examples: pd.DataFrame, split: np.ndarray
) -> dict[str, Any]:
    """The run summary (what ``seismoflow train --json`` prints)."""
    return {
        "model_id": directory.name,
        "model_dir": str(directory),
        "primary": evaluation.primary,
        "n_examples": len(examples),
        "labels": examples["label"].astype(str).value_counts().to_dict(),
        "splits": {s: c["traces"] for s, c in split_counts(examples, split).items()},
        "val_event_macro_f1": evaluation.val_scores,
        "test": evaluation.headline,
    }
