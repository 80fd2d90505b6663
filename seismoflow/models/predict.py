"""Apply a trained model directory to a store's windows and write the results back.

Plain functions (the ``predict`` flow wires them): :func:`predict_examples` computes, for
every window of ``events/`` and ``noise/``, the class probabilities of each classifier of
the model, the model's chosen probability (its ``primary`` classifier, or the mean of its
``ensemble``), the K-Means cluster, the anomaly score and the PCA and t-SNE coordinates;
:func:`event_table` aggregates per event; :func:`write_predictions` writes a new version
through :class:`storage.predictions.PredictionWriter`; :func:`export_table` reads one back
as the CSV rows of ``seismoflow export predictions``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from seismoflow.models.metrics import event_probabilities
from seismoflow.models.registry import ModelBundle
from seismoflow.models.sklearn_models import FeatureModelConfig, tsne_embedding
from seismoflow.storage.predictions import PredictionWriter, open_predictions

CNN = "cnn"
ENSEMBLE = "ensemble"


def present_components(examples: pd.DataFrame) -> dict[str, np.ndarray]:
    """Which traces have each component (feature prefix -> bool per row)."""
    return {
        f"{c}_": examples[f"has_{c}"].to_numpy(dtype=bool)
        if f"has_{c}" in examples
        else np.ones(len(examples), dtype=bool)
        for c in ("z", "n", "e")
    }


def combine(
    probabilities: Mapping[str, np.ndarray], primary: str, members: Sequence[str]
) -> np.ndarray:
    """The model's probability: its primary classifier's, or the mean over ``members``."""
    if primary == ENSEMBLE:
        missing = [m for m in members if m not in probabilities]
        if missing or not members:
            raise KeyError(f"ensemble members {list(members)} missing: {missing}")
        return np.mean([probabilities[m] for m in members], axis=0)
    if primary not in probabilities:
        raise KeyError(f"primary classifier {primary!r} gave no probabilities")
    return np.asarray(probabilities[primary], dtype=np.float64)


@dataclass
class TracePredictions:
    """What a model says about each row of ``examples`` (in row order)."""

    examples: pd.DataFrame
    classes: tuple[str, ...]
    probabilities: dict[str, np.ndarray]  # per classifier, (trace, class)
    probability: np.ndarray  # the model's: primary or ensemble
    cluster: np.ndarray
    anomaly: np.ndarray
    pca: np.ndarray  # (trace, 2)
    tsne: np.ndarray  # (trace, 2)

    @property
    def predicted_class(self) -> np.ndarray:
        names = np.asarray(self.classes, dtype=object)
        return names[self.probability.argmax(axis=1)] if len(self.probability) else names[:0]


def predict_examples(
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    bundle: ModelBundle,
    *,
    tsne: bool = True,
    device: str | None = None,
) -> TracePredictions:
    """Every output of ``bundle`` for the rows of ``examples`` (``features`` aligned).

    t-SNE has no transform for new points: it is recomputed over exactly these rows (its
    coordinates compare within one prediction run, PCA's across runs).
    """
    if len(features) != len(examples):
        raise ValueError(f"{len(features)} feature rows for {len(examples)} examples")
    classes = bundle.classes
    probs: dict[str, np.ndarray] = {}
    fm = bundle.features
    n = len(examples)
    if fm is not None:
        probs.update(fm.probabilities(features, classes))
        cluster = fm.clusters(features)
        anomaly = fm.anomaly_scores(features, present_components(examples))
        pca = fm.pca_map(features)
        config = fm.config
    else:
        cluster = np.full(n, -1, dtype=np.int32)
        anomaly = np.full(n, np.nan)
        pca = np.full((n, 2), np.nan)
        config = FeatureModelConfig()
    if bundle.cnn is not None:
        from seismoflow.models.cnn import predict_cnn

        model, cnn_config, cnn_classes = bundle.cnn
        p = predict_cnn(model, location, examples, cnn_config, device=device)
        assert isinstance(p, np.ndarray)
        probs[CNN] = _reorder(p, cnn_classes, classes)
    meta = bundle.metadata
    probability = combine(probs, str(meta["primary"]), list(meta.get("ensemble", [])))
    emb = np.full((n, 2), np.nan)
    if tsne and fm is not None and n >= 4:
        from seismoflow.models.sklearn_models import feature_matrix

        emb = tsne_embedding(feature_matrix(features, fm.feature_names), config)
    return TracePredictions(
        examples.reset_index(drop=True), classes, probs, probability, cluster, anomaly, pca, emb
    )


def _reorder(p: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    out = np.zeros((p.shape[0], len(want)), dtype=np.float64)
    for j, name in enumerate(want):
        if name in have:
            out[:, j] = p[:, list(have).index(name)]
    return out


def event_table(preds: TracePredictions) -> pd.DataFrame:
    """One row per event: mean class probability over its traces, argmax class, most
    common cluster (ties: the lowest), mean anomaly score, number of traces."""
    ids = preds.examples["event_id"].astype(str).to_numpy()
    events, probs = event_probabilities(preds.probability, ids)
    names = np.asarray(preds.classes, dtype=object)
    frame = pd.DataFrame({"event": ids, "cluster": preds.cluster, "anomaly": preds.anomaly})
    grouped = frame.groupby("event", sort=True)
    cluster = grouped["cluster"].agg(lambda s: int(s.value_counts().sort_index().idxmax()))
    out = pd.DataFrame(
        {
            "event_id": events,
            "event_class": names[probs.argmax(axis=1)] if len(probs) else names[:0],
            "event_cluster": cluster.reindex(events).to_numpy(dtype=np.int32),
            "event_anomaly_score": grouped["anomaly"].mean().reindex(events).to_numpy(),
            "event_n_traces": grouped.size().reindex(events).to_numpy(dtype=np.int32),
        }
    )
    out.attrs["probability"] = probs
    return out


def write_predictions(location: str, preds: TracePredictions, attrs: Mapping[str, Any]) -> str:
    """Write ``preds`` as a new prediction version of the store; return its id."""
    ex = preds.examples
    events = event_table(preds)
    models = sorted(preds.probabilities)
    with PredictionWriter(location, len(ex), len(events), preds.classes, models, attrs) as writer:
        writer.write("group", ex["group"].astype(str).to_numpy(dtype=object))
        writer.write("trace_index", ex["trace"].to_numpy(dtype=np.int64))
        for name in ("trace_key", "event_id", "network", "station", "location", "channel_set"):
            writer.write(name, ex[name].astype(str).to_numpy(dtype=object))
        writer.write("probability", preds.probability)
        for model in models:
            writer.write(f"probability_{model}", preds.probabilities[model])
        writer.write("predicted_class", preds.predicted_class)
        writer.write("cluster", preds.cluster)
        writer.write("anomaly_score", preds.anomaly)
        writer.write("pca_x", preds.pca[:, 0])
        writer.write("pca_y", preds.pca[:, 1])
        writer.write("tsne_x", preds.tsne[:, 0])
        writer.write("tsne_y", preds.tsne[:, 1])
        writer.write("event", events["event_id"].to_numpy(dtype=object))
        writer.write("event_probability", events.attrs["probability"])
        for name in ("event_class", "event_cluster", "event_anomaly_score", "event_n_traces"):
            writer.write(name, events[name].to_numpy())
    return writer.version


EVENT_COLUMNS = ("event_id", "predicted_class", "probability", "cluster", "anomaly_score")
TRACE_COLUMNS = (
    "event_id",
    "trace_key",
    "network",
    "station",
    "location",
    "channel_set",
    "predicted_class",
    "probability",
    "cluster",
    "anomaly_score",
)


def export_table(
    location: str, per_trace: bool = False, version: str | None = None
) -> pd.DataFrame:
    """A prediction version as rows: one per event (``event_id, predicted_class,
    probability, cluster, anomaly_score``) or, ``per_trace``, one per trace with its codes.
    ``probability`` is that of the predicted class."""
    ds = open_predictions(location, version)
    if per_trace:
        prob = ds["probability"].values
        out = pd.DataFrame(
            {
                **{c: _strings(ds[c].values) for c in TRACE_COLUMNS[:6]},
                "predicted_class": _strings(ds["predicted_class"].values),
                "probability": prob.max(axis=1) if len(prob) else prob[:, 0],
                "cluster": ds["cluster"].values,
                "anomaly_score": ds["anomaly_score"].values,
            }
        )
        return out[list(TRACE_COLUMNS)]
    prob = ds["event_probability"].values
    return pd.DataFrame(
        {
            "event_id": _strings(ds["event"].values),
            "predicted_class": _strings(ds["event_class"].values),
            "probability": prob.max(axis=1) if len(prob) else prob[:, 0],
            "cluster": ds["event_cluster"].values,
            "anomaly_score": ds["event_anomaly_score"].values,
        }
    )[list(EVENT_COLUMNS)]


def _strings(values: np.ndarray) -> np.ndarray:
    """Stored strings (numpy StringDType or object) as an object array of ``str``."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)
