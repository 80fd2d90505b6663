"""Classification metrics at trace level and event level, as JSON-serialisable dicts.

Event level: an event's class probabilities are pooled over its traces' probabilities (the
mean, or the normalised geometric mean: :func:`event_probabilities`; every station votes
with its full distribution), and its predicted class is the argmax.
Macro averages run over the classes that occur in the truth, so a class missing from a
held-out set does not count as an F1 of zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def confusion_scores(
    confusion: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, dict[str, float | int]], list[float]]:
    """Per-class precision/recall/F1/support/predicted from ``confusion`` (rows true,
    columns predicted, in the order of ``classes``), and the unrounded F1 of each class with
    support > 0. A class never predicted has precision 0 (not NaN), one with no examples
    recall 0."""
    per_class: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        predicted = int(confusion[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
            "predicted": predicted,
        }
        if support:
            f1s.append(f1)
    return per_class, f1s


def classification_metrics(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    classes: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts examples of true class ``classes[i]`` predicted as
    ``classes[j]``. Precision of a class never predicted is 0 (not NaN), likewise recall of a
    class with no examples; ``macro_f1`` averages F1 over classes with support > 0.
    """
    truth = np.asarray(y_true, dtype=object)
    pred = np.asarray(y_pred, dtype=object)
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.shape[0]} true labels but {pred.shape[0]} predictions")
    names = list(classes)
    unknown = sorted({str(c) for c in np.concatenate([truth, pred])} - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {names}")
    index = {c: i for i, c in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        confusion[index[t], index[p]] += 1
    per_class, f1s = confusion_scores(confusion, names)
    n = int(truth.shape[0])
    return {
        "n": n,
        "accuracy": round(float(np.trace(confusion)) / n, 6) if n else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 6) if f1s else 0.0,
        "classes": names,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


# How an event's class probabilities are pooled from its traces' (``event_probabilities``).
MEAN = "mean"  # arithmetic mean of the traces' probabilities
GEOMETRIC = "geometric"  # normalised geometric mean: mean log-probability, then softmax
POOLINGS: tuple[str, ...] = (MEAN, GEOMETRIC)
_LOG_FLOOR = 1e-9  # probabilities are clipped here before the log (a 0 would veto a class)


def event_probabilities(
    probabilities: np.ndarray, event_ids: Sequence[str] | np.ndarray, pooling: str = MEAN
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities per event pooled over its traces: (event ids sorted, (event,
    class)).

    ``pooling``: ``"mean"``, the mean of the traces' probabilities, or ``"geometric"``, the
    normalised geometric mean (``softmax`` of the mean log-probability, each probability
    clipped at 1e-9): the stations' evidence multiplied as if independent, so one confident
    station is not averaged away by several undecided ones (a product of experts)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    ids = np.asarray(event_ids, dtype=object)
    if probs.ndim != 2 or probs.shape[0] != ids.shape[0]:
        raise ValueError(f"probabilities {probs.shape} do not match {ids.shape[0]} event ids")
    if pooling not in POOLINGS:
        raise ValueError(f"event pooling {pooling!r} is not one of {POOLINGS}")
    if pooling == GEOMETRIC:
        logp = np.log(np.clip(probs, _LOG_FLOOR, 1.0))
        frame = pd.DataFrame(logp).groupby(ids.astype(str), sort=True).mean()
        z = frame.to_numpy(dtype=np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True)) if len(z) else z
        pooled = z / z.sum(axis=1, keepdims=True) if len(z) else z
        return frame.index.to_numpy(dtype=object), np.asarray(pooled, dtype=np.float64)
    frame = pd.DataFrame(probs).groupby(ids.astype(str), sort=True).mean()
    return frame.index.to_numpy(dtype=object), frame.to_numpy(dtype=np.float64)


def event_labels(
    labels: Sequence[str] | np.ndarray, event_ids: Sequence[str] | np.ndarray
) -> pd.Series:
    """One label per event (sorted by id); an event whose traces disagree is an error."""
    frame = pd.DataFrame({"event": np.asarray(event_ids, dtype=str), "label": labels})
    counts = frame.groupby("event")["label"].nunique()
    mixed = counts[counts > 1]
    if len(mixed):
        raise ValueError(f"events with traces of different labels: {list(mixed.index[:5])}")
    return frame.groupby("event", sort=True)["label"].first()


def evaluate(
    probabilities: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    event_ids: Sequence[str] | np.ndarray,
    classes: Sequence[str],
) -> dict[str, Any]:
    """Trace-level and event-level metrics of class probabilities ``(trace, class)``."""
    names = list(classes)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape[1:] != (len(names),):
        raise ValueError(f"probabilities {probs.shape} do not have one column per class {names}")
    trace_pred = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
    ids, event_probs = event_probabilities(probs, event_ids)
    truth = event_labels(labels, event_ids).reindex(ids)
    event_pred = np.asarray(names, dtype=object)[event_probs.argmax(axis=1)]
    return {
        "trace": classification_metrics(np.asarray(labels, dtype=object), trace_pred, names),
        "event": classification_metrics(truth.to_numpy(dtype=object), event_pred, names),
    }


def restrict(metrics: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """Macro-F1 over a subset of classes (e.g. the three event classes without noise)."""
    f1s = [metrics["per_class"][c]["f1"] for c in classes if metrics["per_class"][c]["support"]]
    return {
        "classes": list(classes),
        "macro_f1": round(float(np.mean(f1s)), 6) if f1s else 0.0,
    }


def headline(metrics: dict[str, Any], event_classes: Sequence[str], noise: str) -> dict[str, Any]:
    """The numbers a run reports from an :func:`evaluate` result: event-level macro-F1 over
    the event classes, explosion F1, trace-level macro-F1 and noise recall (trace level)."""
    trace, event = metrics["trace"], metrics["event"]
    noise_row = trace["per_class"].get(noise, {"support": 0})
    return {
        "event_macro_f1": restrict(event, event_classes)["macro_f1"],
        "event_macro_f1_all": event["macro_f1"],
        "explosion_f1": event["per_class"].get("explosion", {}).get("f1"),
        "trace_macro_f1": restrict(trace, event_classes)["macro_f1"],
        "trace_accuracy": trace["accuracy"],
        "noise_recall": noise_row["recall"] if noise_row["support"] else None,
        "n_traces": trace["n"],
        "n_events": event["n"],
    }


def split_metrics(
    probabilities: dict[str, np.ndarray],
    labels: Sequence[str] | np.ndarray,
    event_ids: Sequence[str] | np.ndarray,
    split: np.ndarray,
    classes: Sequence[str],
    splits: Sequence[str] = ("val", "test"),
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {split: evaluate(...)}}`` over the rows of each split (rows with NaN
    probabilities, e.g. windows without a vertical component, are not scored)."""
    y = np.asarray(labels, dtype=object)
    ids = np.asarray(event_ids, dtype=object)
    split = np.asarray(split, dtype=object)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, probs in probabilities.items():
        out[model] = {}
        for name in splits:
            rows = np.flatnonzero((split == name) & np.isfinite(probs).all(axis=1))
            if len(rows):
                out[model][name] = evaluate(probs[rows], y[rows], ids[rows], classes)
    return out


def choose_primary(
    metrics: dict[str, dict[str, dict[str, Any]]], split: str = "val"
) -> tuple[str, dict[str, float]]:
    """The model with the best event-level macro-F1 on ``split`` (ties: first by name)."""
    scores = {
        m: float(v[split]["event"]["macro_f1"]) for m, v in sorted(metrics.items()) if split in v
    }
    if not scores:
        raise ValueError(f"no model has metrics on the {split!r} split")
    return max(scores, key=lambda m: scores[m]), scores
