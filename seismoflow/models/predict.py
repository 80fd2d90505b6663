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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seismoflow.models.metrics import event_probabilities
from seismoflow.models.registry import ModelBundle
from seismoflow.models.selection import apply_temperature
from seismoflow.models.sklearn_models import FeatureModelConfig, tsne_embedding
from seismoflow.storage.predictions import PredictionWriter, open_predictions
from seismoflow.storage.tables import read_table

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
    usable: np.ndarray | None = None  # rows an event's prediction uses (None: all)
    temperature: float = 1.0  # of the event probabilities (``calibration`` in model.json)
    pooling: str = "mean"  # how traces pool into events (``event_pooling`` in model.json)

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
    usable = usable_rows(examples)
    temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))
    pooling = str(meta.get("event_pooling", "mean"))  # models before pooling was chosen: mean
    return TracePredictions(
        examples.reset_index(drop=True), classes, probs, probability, cluster, anomaly, pca, emb,
        usable, temperature, pooling,
    )  # fmt: skip


def usable_rows(examples: pd.DataFrame) -> np.ndarray:
    """Rows a vertical-only model can score: a recorded vertical that is not flat."""
    for column in ("z_usable", "has_z"):
        if column in examples:
            return np.asarray(examples[column].to_numpy(dtype=bool))
    return np.ones(len(examples), dtype=bool)


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - (p1 - p2)`` per row, p1 and p2 the two largest class probabilities: 0 when one
    class takes everything, 1 when the top two tie."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[0] == 0:
        return np.zeros(0)
    if p.shape[1] < 2:
        return np.zeros(p.shape[0])
    top = np.sort(p, axis=1)[:, ::-1]
    return np.asarray(1.0 - (top[:, 0] - top[:, 1]))


NO_WINDOWS = "no event window in the store (no station recorded it)"
NO_VERTICAL = "no vertical component (horizontal channels only)"
FLAT_VERTICAL = "every vertical channel flagged flat (dead)"


def unpredicted_events(location: str, examples: pd.DataFrame) -> pd.DataFrame:
    """Catalogued events with no usable trace, and why (``event_id``, ``reason``,
    ``n_windows``): no window at all, no vertical, or every vertical flat."""
    catalog = read_table(location, "catalog")
    ids = catalog["event_id"].astype(str) if len(catalog) else pd.Series([], dtype=str)
    events = examples[examples["group"].astype(str) == "events"]
    usable = usable_rows(events)
    by_event = pd.DataFrame(
        {
            "event_id": events["event_id"].astype(str).to_numpy(),
            "usable": usable,
            "has_z": events["has_z"].to_numpy(dtype=bool) if "has_z" in events else usable,
        }
    ).groupby("event_id")
    n = by_event.size()
    any_usable = by_event["usable"].any()
    any_z = by_event["has_z"].any()
    rows = []
    for event in sorted(set(ids)):
        if event in any_usable.index and bool(any_usable[event]):
            continue
        windows = int(n.get(event, 0))
        if windows == 0:
            reason = NO_WINDOWS
        elif not bool(any_z[event]):
            reason = NO_VERTICAL
        else:
            reason = FLAT_VERTICAL
        rows.append({"event_id": event, "reason": reason, "n_windows": windows})
    return pd.DataFrame(rows, columns=["event_id", "reason", "n_windows"])


def _reorder(p: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    out = np.zeros((p.shape[0], len(want)), dtype=np.float64)
    for j, name in enumerate(want):
        if name in have:
            out[:, j] = p[:, list(have).index(name)]
    return out


def event_table(preds: TracePredictions) -> pd.DataFrame:
    """One row per event with a usable trace: class probabilities pooled over its usable
    traces as the model's ``event_pooling`` says (mean or normalised geometric mean),
    calibrated by the model's temperature, argmax class, its ``uncertainty``, most
    common cluster (ties: the lowest), mean anomaly score, number of traces used."""
    usable = np.ones(len(preds.examples), bool) if preds.usable is None else preds.usable
    rows = np.flatnonzero(usable)
    ids = preds.examples["event_id"].astype(str).to_numpy()[rows]
    events, probs = event_probabilities(preds.probability[rows], ids, preds.pooling)
    if len(probs) and preds.temperature != 1.0:
        probs = apply_temperature(probs, preds.temperature)
    names = np.asarray(preds.classes, dtype=object)
    frame = pd.DataFrame(
        {"event": ids, "cluster": preds.cluster[rows], "anomaly": preds.anomaly[rows]}
    )
    grouped = frame.groupby("event", sort=True)
    cluster = grouped["cluster"].agg(lambda s: int(s.value_counts().sort_index().idxmax()))
    out = pd.DataFrame(
        {
            "event_id": events,
            "event_class": names[probs.argmax(axis=1)] if len(probs) else names[:0],
            "event_cluster": cluster.reindex(events).to_numpy(dtype=np.int32),
            "event_anomaly_score": grouped["anomaly"].mean().reindex(events).to_numpy(),
            "event_n_traces": grouped.size().reindex(events).to_numpy(dtype=np.int32),
            "uncertainty": uncertainty(probs),
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


EVENT_COLUMNS = (
    "event_id",
    "predicted_class",
    "probability",
    "uncertainty",
    "cluster",
    "anomaly_score",
    "reason",
)
TRACE_COLUMNS = (
    "event_id",
    "trace_key",
    "network",
    "station",
    "location",
    "channel_set",
    "predicted_class",
    "probability",
    "uncertainty",
    "cluster",
    "anomaly_score",
)


def export_table(
    location: str, per_trace: bool = False, version: str | None = None
) -> pd.DataFrame:
    """A prediction version as rows: one per event (``event_id, predicted_class,
    probability, uncertainty, cluster, anomaly_score, reason``) or, ``per_trace``, one per
    trace with its codes. ``probability`` is that of the predicted class, ``uncertainty``
    1 minus the margin between the two most probable classes. Events that got no prediction
    (no usable trace) are rows with an empty class and the ``reason``."""
    ds = open_predictions(location, version)
    if per_trace:
        prob = ds["probability"].values
        out = pd.DataFrame(
            {
                **{c: _strings(ds[c].values) for c in TRACE_COLUMNS[:6]},
                "predicted_class": _strings(ds["predicted_class"].values),
                "probability": prob.max(axis=1) if len(prob) else prob[:, 0],
                "uncertainty": uncertainty(prob),
                "cluster": ds["cluster"].values,
                "anomaly_score": ds["anomaly_score"].values,
            }
        )
        return out[list(TRACE_COLUMNS)]
    prob = ds["event_probability"].values
    out = pd.DataFrame(
        {
            "event_id": _strings(ds["event"].values),
            "predicted_class": _strings(ds["event_class"].values),
            "probability": prob.max(axis=1) if len(prob) else prob[:, 0],
            "uncertainty": uncertainty(prob),
            "cluster": ds["event_cluster"].values,
            "anomaly_score": ds["event_anomaly_score"].values,
            "reason": "",
        }
    )
    missing = pd.DataFrame(list(ds.attrs.get("unpredicted_events") or []))
    if len(missing):
        missing = missing.assign(predicted_class="", probability=np.nan, uncertainty=np.nan,
                                 cluster=-1, anomaly_score=np.nan)  # fmt: skip
        out = pd.concat([out, missing[list(EVENT_COLUMNS)]], ignore_index=True)
    return out[list(EVENT_COLUMNS)]


def _strings(values: np.ndarray) -> np.ndarray:
    """Stored strings (numpy StringDType or object) as an object array of ``str``."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def review_table(preds: TracePredictions, n: int = 20) -> pd.DataFrame:
    """The ``n`` least certain events (largest ``uncertainty``): top two classes with their
    probabilities, the stations of the traces used and the trace whose waveform stands for
    the event (the first usable one, for a thumbnail)."""
    events = event_table(preds)
    if events.empty:
        return pd.DataFrame()
    probs = events.attrs["probability"]
    order = np.argsort(-probs, axis=1)
    names = np.asarray(preds.classes, dtype=object)
    usable = np.ones(len(preds.examples), bool) if preds.usable is None else preds.usable
    ex = preds.examples[usable]
    stations = ex.groupby(ex["event_id"].astype(str)).apply(
        lambda g: ", ".join(sorted(set(g["network"].astype(str) + "." + g["station"].astype(str))))
    )
    first = ex.groupby(ex["event_id"].astype(str))[["group", "trace"]].first()
    rows = np.arange(len(events))
    out = pd.DataFrame(
        {
            "event_id": events["event_id"].to_numpy(),
            "class_1": names[order[:, 0]],
            "probability_1": probs[rows, order[:, 0]],
            "class_2": names[order[:, 1]],
            "probability_2": probs[rows, order[:, 1]],
            "uncertainty": events["uncertainty"].to_numpy(),
            "n_traces": events["event_n_traces"].to_numpy(),
        }
    )
    out["stations"] = stations.reindex(out["event_id"]).to_numpy()
    out["group"] = first["group"].reindex(out["event_id"]).to_numpy()
    out["trace"] = first["trace"].reindex(out["event_id"]).to_numpy()
    return out.sort_values("uncertainty", ascending=False, kind="stable").head(n)


def review_markdown(location: str, review: pd.DataFrame, workdir: Path) -> str:
    """The review table as markdown, each event with a waveform thumbnail of its first
    usable vertical (1-8 Hz, 20 Hz) as a ``data:image/png;base64`` URI."""
    from seismoflow.models import plots
    from seismoflow.models.windows import Preprocess, read_windows

    prep = Preprocess(20.0, (1.0, 8.0), ("Z",))
    lines = [
        "| event | class 1 | p | class 2 | p | uncertainty | stations | waveform (Z) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(review.itertuples(index=False)):
        image = ""
        try:
            x, _ = read_windows(location, str(row.group), [int(row.trace)], prep)
            path = plots.thumbnail_png(x[0, 0], workdir / f"thumb{i}.png")
            image = f"![waveform]({plots.data_uri(path)})"
        except (KeyError, ValueError, IndexError) as exc:
            image = f"(no thumbnail: {type(exc).__name__})"
        lines.append(
            f"| {row.event_id} | {row.class_1} | {row.probability_1:.2f} | {row.class_2} | "
            f"{row.probability_2:.2f} | {row.uncertainty:.2f} | {row.stations} | {image} |"
        )
    return "\n".join(lines)
