"""Model selection by site-grouped cross-validation, bootstrap intervals and calibration.

Plain numerics (no store, no Prefect). Training (``seismoflow.models.training``) gets
out-of-fold class probabilities of every candidate classifier over folds grouped by source
site (``seismoflow.examples.site_folds``), repeated over fold seeds, and hands them here:

- :func:`score_candidates`: event-level macro-F1 over the catalogued event classes and each
  class's F1, mean over seeds and a 95% bootstrap interval over events;
- :func:`choose`: the candidate with the best mean CV macro-F1 (the primary), and
  :func:`choose_pooling` the best (event pooling, candidate) pair when the candidates were
  scored once per way of pooling traces into events;
- :func:`cross_fitted_temperature`: temperature scaling of event probabilities fitted inside
  the CV (the events of fold ``k`` are calibrated by a temperature fitted on the other
  folds' events), and the expected calibration error (:func:`expected_calibration_error`)
  before and after.

Event level everywhere: an event's class probabilities are pooled over its traces (the
mean, or the normalised geometric mean: ``seismoflow.models.metrics.POOLINGS``), its class
the argmax over all classes (noise included, so a catalogued event called noise is a
miss); only catalogued events are scored (a noise window is not an event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from seismoflow.models.metrics import MEAN, event_probabilities

ECE_BINS = 10
_EPS = 1e-12


@dataclass(frozen=True)
class EventSet:
    """The scored events of a CV run: ids (sorted), true class index and fold per event."""

    ids: np.ndarray
    truth: np.ndarray  # index into ``classes``
    fold: np.ndarray  # fold id of the event (its site's) in each seed: (seed, event)
    classes: tuple[str, ...]
    scored_classes: tuple[str, ...]


def event_frame(
    probabilities: np.ndarray,
    event_ids: np.ndarray,
    rows: np.ndarray | None = None,
    pooling: str = MEAN,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probability per event over the given rows, pooled as ``pooling`` says
    (:func:`seismoflow.models.metrics.event_probabilities`): (sorted ids, (event, class))."""
    probs = np.asarray(probabilities, dtype=np.float64)
    ids = np.asarray(event_ids, dtype=object).astype(str)
    if rows is not None:
        probs, ids = probs[rows], ids[rows]
    return event_probabilities(probs, ids, pooling)


def f1_scores(
    truth: np.ndarray, predicted: np.ndarray, n_classes: int, scored: Sequence[int]
) -> np.ndarray:
    """F1 of each class in ``scored`` (class indices) from integer labels; a class never
    predicted or absent scores 0."""
    confusion = np.bincount(
        truth * n_classes + predicted, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    called = confusion.sum(axis=0).astype(np.float64)
    denom = support + called
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return np.asarray(f1[list(scored)])


def bootstrap_f1(
    truth: np.ndarray,
    predicted: np.ndarray,
    n_classes: int,
    scored: Sequence[int],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean over seeds and a ``level`` bootstrap interval over events of the macro-F1 over
    ``scored`` classes and of each scored class's F1.

    ``truth``: (event,) class index; ``predicted``: (seed, event) class index, one row per
    fold seed (every event predicted out of fold in every seed). Each bootstrap draw
    resamples events with replacement and averages the scores over the seeds.
    """
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.atleast_2d(np.asarray(predicted, dtype=np.int64))
    n = truth.shape[0]

    def scores(index: np.ndarray) -> np.ndarray:
        per_seed = [f1_scores(truth[index], p[index], n_classes, scored) for p in predicted]
        return np.asarray(np.mean(per_seed, axis=0))

    point = scores(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = None
    if n:
        index = np.asarray(rng.integers(0, n, size=(n_boot, n)))
        draws = np.array([scores(i) for i in index])
    alpha = (1 - level) / 2

    def block(j: int | None) -> dict[str, float]:
        value = float(point.mean()) if j is None else float(point[j])
        if draws is None:
            return {"mean": value, "low": value, "high": value}
        col = draws.mean(axis=1) if j is None else draws[:, j]
        lo, hi = np.quantile(col, [alpha, 1 - alpha])
        return {"mean": round(value, 4), "low": round(float(lo), 4), "high": round(float(hi), 4)}

    return {
        "macro_f1": block(None),
        "per_class_f1": {int(c): block(j) for j, c in enumerate(scored)},
        "per_seed_macro_f1": [
            round(float(f1_scores(truth, p, n_classes, scored).mean()), 4) for p in predicted
        ],
        "n_events": n,
        "n_seeds": int(predicted.shape[0]),
        "n_boot": n_boot,
        "level": level,
    }


def expected_calibration_error(
    probabilities: np.ndarray, truth: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label expected calibration error: the mean over equal-width confidence bins of
    |accuracy - mean confidence|, weighted by the share of rows in the bin."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape[0] == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(truth)).astype(np.float64)
    bins = np.clip((confidence * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            total += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total)


def reliability(
    probabilities: np.ndarray, truth: np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: its range, count, mean confidence and accuracy (the reliability
    diagram's points)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == np.asarray(truth) if len(probs) else np.zeros(0, bool)
    bins = np.clip((confidence * n_bins).astype(np.int64), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            out.append(
                {
                    "low": b / n_bins,
                    "high": (b + 1) / n_bins,
                    "n": int(rows.sum()),
                    "confidence": round(float(confidence[rows].mean()), 4),
                    "accuracy": round(float(correct[rows].mean()), 4),
                }
            )
    return out


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` per row: T > 1 softens, T < 1 sharpens; the argmax (and so
    every F1) is unchanged."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0))
    z = logp / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def fit_temperature(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``truth`` (bounded search
    over log T in [-3, 3])."""
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(truth, dtype=np.int64)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        p = apply_temperature(probs, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))))

    result = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(result.x))


def cross_fitted_temperature(
    event_probs: np.ndarray, truth: np.ndarray, fold: np.ndarray
) -> tuple[np.ndarray, dict[int, float]]:
    """Calibrated event probabilities where each fold's events get the temperature fitted on
    the other folds' events (out-of-fold probabilities from the same CV), and those
    temperatures per fold."""
    out = np.empty_like(np.asarray(event_probs, dtype=np.float64))
    temps: dict[int, float] = {}
    for k in np.unique(fold):
        test = fold == k
        temps[int(k)] = fit_temperature(event_probs[~test], truth[~test])
        out[test] = apply_temperature(event_probs[test], temps[int(k)])
    return out, temps


def score_candidates(
    oof: Mapping[str, Sequence[np.ndarray]],
    labels: np.ndarray,
    event_ids: np.ndarray,
    folds: Sequence[np.ndarray],
    classes: Sequence[str],
    scored_classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    pooling: str = MEAN,
) -> dict[str, dict[str, Any]]:
    """CV scores of each candidate from its out-of-fold trace probabilities (one array per
    fold seed; rows with NaN probabilities are not scored) over the events whose label is in
    ``scored_classes``: :func:`bootstrap_f1` (by class name), the summed event confusion
    over seeds, and ECE before and after cross-fitted temperature scaling. Event
    probabilities are pooled over traces as ``pooling`` says (:func:`event_frame`)."""
    names = list(classes)
    y = np.asarray(labels, dtype=object).astype(str)
    ids = np.asarray(event_ids, dtype=object).astype(str)
    scored_idx = [names.index(c) for c in scored_classes]
    out: dict[str, dict[str, Any]] = {}
    for name, per_seed in oof.items():
        preds, confusion, raw_ece, cal_ece = [], np.zeros((len(names),) * 2, np.int64), [], []
        temps: list[dict[int, float]] = []
        raw_all, cal_all = [], []
        truth_ev = np.zeros(0, dtype=np.int64)
        for probs, fold in zip(per_seed, folds, strict=True):
            rows = np.isfinite(probs).all(axis=1) & np.isin(y, list(scored_classes))
            ev, p = event_frame(probs, ids, np.flatnonzero(rows), pooling)
            truth_ev = event_truth(y[rows], ids[rows], ev, names)
            fold_ev = pd.Series(np.asarray(fold)[rows]).groupby(ids[rows]).first()
            fold_ev = fold_ev.reindex(ev).to_numpy()
            predicted = p.argmax(axis=1)
            preds.append(predicted)
            np.add.at(confusion, (truth_ev, predicted), 1)
            calibrated, t = cross_fitted_temperature(p, truth_ev, fold_ev)
            temps.append(t)
            raw_ece.append(expected_calibration_error(p, truth_ev))
            cal_ece.append(expected_calibration_error(calibrated, truth_ev))
            raw_all.append(p)
            cal_all.append(calibrated)
        boot = bootstrap_f1(truth_ev, np.array(preds), len(names), scored_idx, n_boot, seed)
        boot["per_class_f1"] = {names[k]: v for k, v in boot["per_class_f1"].items()}
        out[name] = {
            **boot,
            "event_confusion": confusion.tolist(),
            "ece": round(float(np.mean(raw_ece)), 4),
            "ece_calibrated": round(float(np.mean(cal_ece)), 4),
            "fold_temperatures": [{str(k): round(v, 4) for k, v in t.items()} for t in temps],
            "reliability": reliability(np.concatenate(raw_all), np.tile(truth_ev, len(preds))),
            "reliability_calibrated": reliability(
                np.concatenate(cal_all), np.tile(truth_ev, len(preds))
            ),
        }
    return out


def event_truth(
    labels: np.ndarray, event_ids: np.ndarray, events: np.ndarray, classes: Sequence[str]
) -> np.ndarray:
    """Class index of each of ``events`` (one label per event, as its traces say)."""
    first = pd.Series(np.asarray(labels, dtype=object)).groupby(np.asarray(event_ids)).first()
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(first[e])] for e in events], dtype=np.int64)


def event_temperature(
    per_seed: Sequence[np.ndarray],
    labels: np.ndarray,
    event_ids: np.ndarray,
    classes: Sequence[str],
    scored_classes: Sequence[str],
    pooling: str = MEAN,
) -> float:
    """The temperature for the refit model: fitted on every seed's out-of-fold event
    probabilities (pooled as ``pooling`` says) together (each event once per seed)."""
    y = np.asarray(labels, dtype=object).astype(str)
    ids = np.asarray(event_ids, dtype=object).astype(str)
    ps, ts = [], []
    for probs in per_seed:
        rows = np.isfinite(probs).all(axis=1) & np.isin(y, list(scored_classes))
        ev, p = event_frame(probs, ids, np.flatnonzero(rows), pooling)
        ps.append(p)
        ts.append(event_truth(y[rows], ids[rows], ev, list(classes)))
    return fit_temperature(np.concatenate(ps), np.concatenate(ts))


def choose(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The candidate with the best mean CV macro-F1 (ties: the first by name)."""
    if not scores:
        raise ValueError("no candidates were cross-validated")
    return max(sorted(scores), key=lambda m: float(scores[m]["macro_f1"]["mean"]))


def choose_pooling(
    by_pooling: Mapping[str, Mapping[str, Mapping[str, Any]]], order: Sequence[str]
) -> tuple[str, str]:
    """The (pooling, candidate) pair with the best mean CV macro-F1 from
    :func:`score_candidates` run once per event pooling (``by_pooling[pooling]``); ties go
    to the candidate :func:`choose` prefers, then to the earlier pooling of ``order``."""
    order = [p for p in order if p in by_pooling]
    if not order:
        raise ValueError("no event pooling was scored")
    best = {p: choose(by_pooling[p]) for p in order}
    pooling = max(
        order,
        key=lambda p: (float(by_pooling[p][best[p]]["macro_f1"]["mean"]), -order.index(p)),
    )
    return pooling, best[pooling]


def sites_disjoint(sites: np.ndarray, folds: np.ndarray) -> bool:
    """True when no site has rows in two folds."""
    frame = pd.DataFrame({"site": np.asarray(sites).astype(str), "fold": folds})
    return bool((frame.groupby("site")["fold"].nunique() <= 1).all())
