"""One training run, as plain functions the ``train-models`` flow wires together.

Examples and features come from the store (``seismoflow.examples``,
``seismoflow.featurize``). Model selection is by cross-validation grouped by source site
(``seismoflow.examples.site_folds``: no site on both sides of a fold) over every labelled
window with a vertical component, repeated over fold seeds (:func:`cross_validate`): every
candidate (each feature classifier, the CNN when ``cnn_cv``, and ``ensemble``, the mean of
them) is scored by event-level macro-F1 over earthquake / explosion / surface event with a
95% bootstrap interval over events (``seismoflow.models.selection``), once per event
pooling (mean or normalised geometric mean of the traces' probabilities); the best mean is
the model's ``primary`` with its pooling, whose event probabilities are calibrated by a
temperature fitted on the out-of-fold probabilities. Then every model is refit on all those
windows. Every evaluation uses the vertical component only (the CNN's horizontals are
hidden, the classifiers only see ``z_`` features), because in the archive horizontals exist
only for surface events.
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
from seismoflow.labels import CLASSES, EVENT_CLASSES
from seismoflow.models import plots
from seismoflow.models.metrics import POOLINGS
from seismoflow.models.predict import CNN, ENSEMBLE, present_components
from seismoflow.models.registry import (
    CNN_DIR,
    code_version,
    create_model_dir,
    data_fingerprint,
    save_feature_models,
    write_metadata,
)
from seismoflow.models.selection import (
    choose_pooling,
    event_temperature,
    score_candidates,
    sites_disjoint,
)
from seismoflow.models.sklearn_models import (
    CLASSIFIERS,
    FeatureModelConfig,
    FeatureModels,
    feature_matrix,
    fit_feature_models,
    out_of_fold_probabilities,
    tsne_embedding,
    vertical_features,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """What a training run does. ``epochs`` overrides the CNN's default (``CNNConfig``).

    ``folds`` site-grouped folds, repeated for each of ``cv_seeds``; ``n_boot`` bootstrap
    draws over events for the intervals; ``cnn_cv``: cross-validate the CNN too (``folds`` x
    seeds CNN trainings), without which it is trained and saved but cannot be the primary
    nor an ensemble member."""

    seed: int = 0
    folds: int = 5
    cv_seeds: tuple[int, ...] = (0, 1, 2)
    n_boot: int = 1000
    cnn: bool = True
    cnn_cv: bool = False
    epochs: int | None = None
    device: str | None = None
    n_estimators: int = 300
    kmeans_k: int | None = None
    tsne: bool = True
    gallery_per_class: int = 4
    cnn_overrides: dict[str, Any] | None = None  # CNNConfig fields (benches)
    # Event poolings the CV scores every candidate with (``metrics.POOLINGS``); the best
    # (candidate, pooling) pair is chosen, ties to the earlier pooling.
    poolings: tuple[str, ...] = POOLINGS

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cv_seeds"] = list(self.cv_seeds)
        out["poolings"] = list(self.poolings)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainOptions:
        values = dict(values or {})
        values.pop("fractions", None)  # the train/val/test split of earlier versions
        if "cv_seeds" in values:
            values["cv_seeds"] = tuple(int(s) for s in values["cv_seeds"])
        if "poolings" in values:
            values["poolings"] = tuple(str(p) for p in values["poolings"])
        return cls(**values)

    def feature_config(self) -> FeatureModelConfig:
        return FeatureModelConfig(
            n_estimators=self.n_estimators, kmeans_k=self.kmeans_k, seed=self.seed
        )

    def cnn_config(self) -> Any:
        from seismoflow.models.cnn import CNNConfig

        values = {**CNNConfig(seed=self.seed).to_dict(), **(self.cnn_overrides or {})}
        if self.epochs is not None:
            values["epochs"] = self.epochs
        return CNNConfig.from_dict(values)


def load_inputs(
    location: str, analyst_labels: bool = True, unlabelled: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's examples and their features (row-aligned; features without the
    ``group``/``trace`` keys); with ``unlabelled``, events whose type has no class too (for
    prediction). With ``analyst_labels`` the store's analyst labels
    (``seismoflow.analyst``) replace the catalogue's classes of their events; the column
    ``label_source`` says which (``catalogue``, ``analyst`` or ``noise``)."""
    from seismoflow.analyst import apply_analyst_labels
    from seismoflow.examples import list_examples
    from seismoflow.featurize.extract import read_features

    examples = list_examples(location, unlabelled=unlabelled)
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
    if analyst_labels:
        examples = apply_analyst_labels(location, examples)
    return examples, features.reset_index(drop=True)


def training_rows(examples: pd.DataFrame) -> np.ndarray:
    """The rows every model learns from and is scored on: windows with a usable vertical
    (``z_usable``: recorded and not flat) and a class."""
    column = "z_usable" if "z_usable" in examples else "has_z"
    return np.asarray(examples[column].to_numpy(dtype=bool) & examples["label"].notna().to_numpy())


@dataclass
class Selection:
    """Site-grouped CV of every candidate and the choice it makes.

    ``scores``: :func:`seismoflow.models.selection.score_candidates` per candidate, with
    event probabilities pooled as ``pooling`` (the chosen pooling); ``pooling_scores``: the
    mean CV macro-F1 and explosion F1 of every (pooling, candidate) pair the choice was
    made among; ``oof``: the primary's out-of-fold trace probabilities of the first fold
    seed over all rows of the examples (NaN on rows not trained on)."""

    scores: dict[str, dict[str, Any]]
    primary: str
    members: list[str]
    temperature: float
    folds: int
    seeds: tuple[int, ...]
    n_rows: int
    n_events: int
    oof: np.ndarray
    cnn_folds: list[list[dict[str, Any]]] = field(default_factory=list)
    seconds: float = 0.0
    # Every candidate's out-of-fold probabilities per fold seed over the training rows, with
    # those rows' labels, event ids and folds (for benches that score other combinations).
    candidates_oof: dict[str, list[np.ndarray]] = field(default_factory=dict)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    event_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    fold_ids: list[np.ndarray] = field(default_factory=list)
    pooling: str = "mean"
    pooling_scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def headline(self, name: str) -> dict[str, Any]:
        s = self.scores[name]
        return {
            "event_macro_f1": s["macro_f1"],
            "event_f1": s["per_class_f1"],
            "per_seed_event_macro_f1": s["per_seed_macro_f1"],
            "ece": s["ece"],
            "ece_calibrated": s["ece_calibrated"],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "cross-validation grouped by source site (0.25-degree cells), "
            f"{self.folds} folds, fold seeds {list(self.seeds)}; event level (class "
            "probabilities pooled over an event's vertical traces as event_pooling says, "
            "argmax over all classes) scored on the catalogued events; 95% interval: "
            "bootstrap over events",
            "folds": self.folds,
            "seeds": list(self.seeds),
            "n_windows": self.n_rows,
            "n_events": self.n_events,
            "primary": self.primary,
            "event_pooling": self.pooling,
            "pooling_candidates": self.pooling_scores,
            "candidates": {k: self.headline(k) for k in sorted(self.scores)},
            "seconds": round(self.seconds, 2),
        }


def cross_validate(
    location: str, examples: pd.DataFrame, features: pd.DataFrame, options: TrainOptions
) -> Selection:
    """Out-of-fold probabilities of every candidate over ``options.folds`` site-grouped
    folds for each of ``options.cv_seeds``; scores, the choice and its temperature."""
    from seismoflow.examples import site_folds

    clock = time.perf_counter()
    rows = training_rows(examples)
    ex = examples[rows].reset_index(drop=True)
    names = vertical_features(list(features.columns))
    x = feature_matrix(features[rows].reset_index(drop=True), names)
    y = ex["label"].astype(str).to_numpy(dtype=object)
    ids = ex["event_id"].astype(str).to_numpy(dtype=object)
    n_sites = int(ex["site"].nunique())
    n_folds = min(options.folds, n_sites)
    if n_folds < 2:
        raise StoreError(
            f"{location}: the windows with a vertical come from {n_sites} source site(s); "
            "cross-validation grouped by site needs at least 2"
        )
    config = options.feature_config()
    classes = list(CLASSES)
    oof: dict[str, list[np.ndarray]] = {k: [] for k in CLASSIFIERS}
    folds_used: list[np.ndarray] = []
    cnn_folds: list[list[dict[str, Any]]] = []
    for seed in options.cv_seeds:
        fold = site_folds(ex, n_folds, seed)
        if not sites_disjoint(ex["site"].to_numpy(), fold):
            raise AssertionError("a source site is in two folds")
        folds_used.append(fold)
        for kind in CLASSIFIERS:
            oof[kind].append(
                out_of_fold_probabilities(x, y, fold, classes, kind, config, ids)
            )
        if options.cnn and options.cnn_cv:
            from seismoflow.models.cnn import cnn_out_of_fold

            p, details = cnn_out_of_fold(location, ex, fold, options.cnn_config(), options.device)
            oof.setdefault(CNN, []).append(np.asarray(p, dtype=np.float64))
            cnn_folds.append(details)
        log.info("CV fold seed %s done (%.1f s)", seed, time.perf_counter() - clock)
    members = sorted(oof)
    oof[ENSEMBLE] = [
        np.mean([oof[m][i] for m in members], axis=0) for i in range(len(folds_used))
    ]
    by_pooling = {
        p: score_candidates(
            oof, y, ids, folds_used, classes, EVENT_CLASSES, options.n_boot, options.seed, p
        )
        for p in options.poolings
    }
    pooling, primary = choose_pooling(by_pooling, options.poolings)
    scores = by_pooling[pooling]
    pooling_scores = {
        p: {
            k: {
                "event_macro_f1": float(v["macro_f1"]["mean"]),
                "explosion_f1": float(v["per_class_f1"].get("explosion", {}).get("mean", 0.0)),
            }
            for k, v in sorted(s.items())
        }
        for p, s in by_pooling.items()
    }
    temperature = event_temperature(oof[primary], y, ids, classes, EVENT_CLASSES, pooling)
    full = np.full((len(examples), len(classes)), np.nan)
    full[rows] = oof[primary][0]
    n_events = int(pd.Series(ids[np.isin(y, list(EVENT_CLASSES))]).nunique())
    return Selection(
        scores, primary, members, temperature, n_folds, tuple(options.cv_seeds), len(ex),
        n_events, full, cnn_folds, time.perf_counter() - clock, oof, y, ids, folds_used,
        pooling, pooling_scores,
    )  # fmt: skip


def train_feature_models(
    features: pd.DataFrame, examples: pd.DataFrame, options: TrainOptions
) -> FeatureModels:
    """The feature models refit on every training row (rows weighted by event: one vote
    per event shared by its traces, as in the CV)."""
    labels = examples["label"].astype(str).to_numpy(dtype=object)
    events = examples["event_id"].astype(str).to_numpy(dtype=object)
    return fit_feature_models(
        features, labels, training_rows(examples), present_components(examples),
        options.feature_config(), event_ids=events,
    )  # fmt: skip


def train_cnn_model(location: str, examples: pd.DataFrame, options: TrainOptions) -> Any:
    """The CNN refit on every training row for ``epochs`` (no early stopping: no rows are
    held out), or None if disabled."""
    if not options.cnn:
        return None
    from seismoflow.models.cnn import train_cnn

    split = np.where(training_rows(examples), "train", "unused")
    return train_cnn(
        location, examples, split, options.cnn_config(), classes=CLASSES,
        device=options.device,
    )  # fmt: skip


def window_attrs(location: str) -> dict[str, Any]:
    """The store's event-window setting (rate, length, reference) the model learned from."""
    from seismoflow.storage.location import open_root

    root = open_root(location, mode="r")
    attrs = dict(root["events"].attrs)
    keys = ("sampling_rate", "pre_s", "post_s", "n_samples", "reference")
    return {k: attrs.get(k) for k in keys}


def label_counts(examples: pd.DataFrame) -> dict[str, Any]:
    """Training windows per label, events per label, and where the labels came from."""
    rows = examples[training_rows(examples)]
    events = rows.drop_duplicates("event_id")
    source = (
        events["label_source"].astype(str).value_counts().to_dict()
        if "label_source" in events
        else {}
    )
    return {
        "windows": rows["label"].astype(str).value_counts().to_dict(),
        "events": events["label"].astype(str).value_counts().to_dict(),
        "event_label_sources": source,
        "analyst_labelled_events": int(source.get("analyst", 0)),
    }


def write_model_dir(
    models_dir: str,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: FeatureModels,
    cnn_run: Any,
    selection: Selection,
    options: TrainOptions,
    flow_run_id: str | None,
) -> Path:
    """A new model directory with every model and ``model.json``."""
    rows = training_rows(examples)
    fingerprint = data_fingerprint(location, examples[rows], features[rows])
    directory = create_model_dir(models_dir, fingerprint)
    fm_meta = save_feature_models(directory, feature_models)
    cnn_meta: dict[str, Any] | None = None
    if cnn_run is not None:
        from seismoflow.models.cnn import save_cnn

        cnn_meta = save_cnn(cnn_run, directory / CNN_DIR)
    window = window_attrs(location)
    primary = selection.scores[selection.primary]
    metadata = {
        "classes": list(CLASSES),
        "primary": selection.primary,
        "ensemble": selection.members,
        "event_pooling": selection.pooling,
        "selection": selection.to_dict(),
        "calibration": {
            "method": "temperature",
            "level": "event (applied to the class probabilities pooled over an event's "
            "traces as event_pooling says)",
            "temperature": round(selection.temperature, 6),
            "cv_ece": primary["ece_calibrated"],
            "cv_ece_uncalibrated": primary["ece"],
            "fitted_on": "the primary's out-of-fold event probabilities of every fold seed; "
            "the CV's ECE uses, for each fold, a temperature fitted on the other folds",
            "reliability": primary["reliability_calibrated"],
        },
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
            "n_training_windows": int(rows.sum()),
            "labels": label_counts(examples),
        },
        "headline": {k: selection.headline(k) for k in sorted(selection.scores)},
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


def cv_confusion(selection: Selection) -> dict[str, Any]:
    """The primary's event confusion summed over the fold seeds, as a metrics block."""
    s = selection.scores[selection.primary]
    counts = np.asarray(s["event_confusion"])
    return {
        "classes": list(CLASSES),
        "confusion": counts.tolist(),
        "macro_f1": s["macro_f1"]["mean"],
        "accuracy": float(np.trace(counts) / max(counts.sum(), 1)),
    }


def plot_training(
    directory: Path,
    location: str,
    examples: pd.DataFrame,
    features: pd.DataFrame,
    feature_models: FeatureModels,
    selection: Selection,
    options: TrainOptions,
) -> dict[str, Path]:
    """The run's PNGs under ``directory/plots``: the chosen classifier's cross-validated
    event confusion matrix (summed over fold seeds) and reliability diagram (before and
    after calibration), PCA and t-SNE maps by class and by cluster, and a gallery of
    vertical waveforms per out-of-fold predicted class."""
    out = directory / "plots"
    made: dict[str, Path] = {}
    primary = selection.scores[selection.primary]
    n_seeds = len(selection.seeds)
    made["confusion_event"] = plots.confusion_png(
        cv_confusion(selection),
        f"{selection.primary}, site-grouped CV, events x {n_seeds} fold seeds",
        out / "confusion_event.png",
    )
    made["reliability"] = plots.reliability_png(
        {
            f"uncalibrated (ECE {primary['ece']:.3f})": primary["reliability"],
            f"temperature (ECE {primary['ece_calibrated']:.3f})": primary[
                "reliability_calibrated"
            ],
        },
        f"{selection.primary}, site-grouped CV, event level",
        out / "reliability.png",
    )
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
    probs = selection.oof
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


def summary(directory: Path, selection: Selection, examples: pd.DataFrame) -> dict[str, Any]:
    """The run summary (what ``seismoflow train --json`` prints)."""
    return {
        "model_id": directory.name,
        "model_dir": str(directory),
        "primary": selection.primary,
        "ensemble": selection.members,
        "event_pooling": selection.pooling,
        "n_examples": len(examples),
        "labels": label_counts(examples),
        "cv": {k: selection.headline(k) for k in sorted(selection.scores)},
        "selection": {
            "folds": selection.folds,
            "seeds": list(selection.seeds),
            "n_windows": selection.n_rows,
            "n_events": selection.n_events,
        },
        "calibration": {
            "method": "temperature",
            "temperature": round(selection.temperature, 6),
            "cv_ece": selection.scores[selection.primary]["ece_calibrated"],
            "cv_ece_uncalibrated": selection.scores[selection.primary]["ece"],
        },
    }
