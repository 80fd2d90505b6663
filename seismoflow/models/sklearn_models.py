"""scikit-learn models on the physics features (``seismoflow.featurize``).

Classifiers (random forest; SVM on scaled features), K-Means clusters, Isolation Forest
anomaly scores and PCA / t-SNE maps. Every model is a ``Pipeline`` that starts with a
median imputer, so a feature missing for a trace (NaN: no horizontal components, too
little data; the P/S features are not missing for want of arrivals since ``physics-v2``,
whose windows fall back to a detected onset) never drops the trace. Infinite values (the
log power of a dead channel) become NaN in :func:`feature_matrix`, before any model sees
them; the anomaly model sees them as extreme instead (:func:`anomaly_matrix`), because a
dead channel is what it should find.

Nothing here reads the store or imports Prefect: inputs are arrays and data frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from seismoflow.errors import StoreError
from seismoflow.models.metrics import confusion_scores, evaluate, headline

CLASSIFIERS: tuple[str, ...] = ("random_forest", "svm", "logistic")
# The mean of the classifiers' probabilities (as ``seismoflow.models.predict``).
ENSEMBLE = "ensemble"
READINGS: tuple[str, ...] = ("3-class", "4-class")
VERTICAL_PREFIX = "z_"


@dataclass(frozen=True)
class FeatureModelConfig:
    """Hyper-parameters of the feature models (all seeded by ``seed``)."""

    n_estimators: int = 300
    svm_c: float = 3.0
    logistic_c: float = 0.3
    kmeans_k: int | None = None  # None: chosen by silhouette over ``kmeans_range``
    kmeans_range: tuple[int, int] = (2, 8)
    anomaly_estimators: int = 300
    tsne_perplexity: float = 30.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kmeans_range"] = list(self.kmeans_range)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureModelConfig:
        values = dict(values)
        if "kmeans_range" in values:
            values["kmeans_range"] = tuple(values["kmeans_range"])
        return cls(**values)


def vertical_features(names: Sequence[str]) -> list[str]:
    """The vertical-component features (``z_`` prefix): what every trace has."""
    return [n for n in names if n.startswith(VERTICAL_PREFIX)]


def feature_matrix(features: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """``features[names]`` as float64 with +-inf turned into NaN (imputed by the models)."""
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise KeyError(
            f"features {missing[:5]} are not in the feature table; "
            "run `seismoflow features` with the code version the model was trained with"
        )
    x = features.loc[:, list(names)].to_numpy(dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def anomaly_matrix(
    features: pd.DataFrame, names: Sequence[str], bounds: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Features for the anomaly model: +-inf become values far outside the finite range.

    A flat (dead) channel has no power in any band: log powers of -inf. Imputing those
    would hide the very traces the anomaly score must find, so they are set 10 ranges below
    the finite minimum (or above the maximum) seen when the model was fitted (``bounds``,
    returned so prediction uses the training range). NaN (not measured) stays NaN.
    """
    x: np.ndarray = np.array(features.loc[:, list(names)], dtype=np.float64)
    if bounds is None:
        finite: np.ndarray = np.where(np.isfinite(x), x, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
        lo, hi = np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=0.0)
        bounds = (lo, hi)
    lo, hi = np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)
    span: np.ndarray = np.maximum(hi - lo, 1.0)
    x = np.where(np.isneginf(x), lo - 10 * span, x)
    x = np.where(np.isposinf(x), hi + 10 * span, x)
    return x, bounds


def event_weights(y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Sample weights that give every event (``groups``: event id per row; an empty id is
    a window of its own, e.g. a noise window) one vote shared by its traces, and every class
    the same total; mean 1.

    Without ``groups`` every row is its own event: the weights are scikit-learn's
    ``class_weight="balanced"``. Why: the issue's metric is per event (mean probability
    over its traces), and a well-recorded event (the archive's earthquakes have ~12 traces
    each, its explosions ~6, its surface events ~5) otherwise outweighs several sparsely
    recorded ones of the same class. Measured in site-grouped CV (``bench/features.py
    --evaluate``, 3 seeds, BENCHMARKS.md): logistic 0.713 -> 0.736 macro-F1, explosion F1
    0.49 -> 0.54; random forest 0.57 -> 0.62, 0.07 -> 0.21.
    """
    y = np.asarray(y)
    if groups is None:
        inverse, counts = np.arange(len(y)), np.ones(len(y), dtype=np.int64)
    else:
        ids = np.asarray(groups, dtype=object).astype(str)
        ids = np.where(ids == "", np.char.add("\x00row", np.arange(len(y)).astype(str)), ids)
        _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse].astype(np.float64)
    for c in np.unique(y):
        rows = y == c
        w[rows] /= w[rows].sum()
    return np.asarray(w * len(y) / w.sum())


def _fit(model: Pipeline, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> Pipeline:
    """Fit ``model``; with ``groups`` (event ids) its final estimator gets
    :func:`event_weights` as sample weights (its ``class_weight`` is then ``None``)."""
    if groups is None:
        return model.fit(x, y)
    step = model.steps[-1][0]
    return model.fit(x, y, **{f"{step}__sample_weight": event_weights(y, groups)})


Fitter = Callable[[np.ndarray, np.ndarray, FeatureModelConfig, "np.ndarray | None"], Pipeline]


def fit_random_forest(
    x: np.ndarray, y: np.ndarray, config: FeatureModelConfig, groups: np.ndarray | None = None
) -> Pipeline:
    """Random forest: classes balanced per bootstrap sample, or, with ``groups`` (event
    ids), weighted by :func:`event_weights`."""
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        RandomForestClassifier(
            n_estimators=config.n_estimators,
            class_weight=None if groups is not None else "balanced_subsample",
            min_samples_leaf=2,
            random_state=config.seed,
            n_jobs=1,
        ),
    )
    return _fit(model, x, y, groups)


def fit_svm(
    x: np.ndarray, y: np.ndarray, config: FeatureModelConfig, groups: np.ndarray | None = None
) -> Pipeline:
    """RBF SVM on standardised features with calibrated probabilities; classes balanced,
    or, with ``groups`` (event ids), weighted by :func:`event_weights`.

    ``SVC(probability=True)`` is deprecated since scikit-learn 1.9; its replacement is
    ``CalibratedClassifierCV(SVC(), ensemble=False)`` (Platt scaling over internal folds).
    """
    counts = pd.Series(y).value_counts()
    # Platt scaling needs each class in every internal fold: a class with a single example
    # is left out of this SVM (its probability is 0, see class_probabilities).
    rare = set(counts[counts < 2].index)
    if rare:
        keep = ~pd.Series(y).isin(rare).to_numpy()
        x, y = x[keep], y[keep]
        groups = None if groups is None else np.asarray(groups)[keep]
        counts = counts.drop(list(rare))
    smallest = int(counts.min())
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        CalibratedClassifierCV(
            SVC(
                C=config.svm_c,
                gamma="scale",
                class_weight=None if groups is not None else "balanced",
                random_state=config.seed,
            ),
            ensemble=False,
            cv=max(2, min(3, smallest)),
        ),
    )
    return _fit(model, x, y, groups)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, config: FeatureModelConfig, groups: np.ndarray | None = None
) -> Pipeline:
    """Balanced multinomial logistic regression on standardised features: the linear
    baseline (in site-grouped CV on the archive it finds explosions where the forest and
    the SVM do not; ``bench/feature_models.py``). With ``groups`` (event ids) the rows are
    weighted by :func:`event_weights` instead of ``class_weight="balanced"``."""
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(
            C=config.logistic_c,
            class_weight=None if groups is not None else "balanced",
            max_iter=2000,
        ),
    )
    return _fit(model, x, y, groups)


FITTERS: dict[str, Fitter] = {
    "random_forest": fit_random_forest,
    "svm": fit_svm,
    "logistic": fit_logistic,
}


def class_probabilities(model: Pipeline, x: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``predict_proba`` with one column per ``classes`` (0 for a class unseen in training)."""
    probs = np.asarray(model.predict_proba(x), dtype=np.float64)
    out = np.zeros((x.shape[0], len(classes)), dtype=np.float64)
    known = [str(c) for c in model.classes_]
    for j, name in enumerate(classes):
        if name in known:
            out[:, j] = probs[:, known.index(name)]
    return out


def fit_kmeans(x: np.ndarray, config: FeatureModelConfig) -> tuple[Pipeline, dict[int, float]]:
    """K-Means on standardised features: ``k`` given, or the best silhouette over the range.

    Returns the fitted pipeline and the silhouette of every ``k`` tried (scored on at most
    2000 points, seeded).
    """

    def pipeline(k: int) -> Pipeline:
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            KMeans(n_clusters=k, n_init=10, random_state=config.seed),
        )

    n = x.shape[0]
    lo, hi = config.kmeans_range
    ks = [config.kmeans_k] if config.kmeans_k else list(range(lo, min(hi, n - 1) + 1))
    if not ks or min(ks) < 2 or max(ks) >= n:
        raise ValueError(f"cannot cluster {n} examples into {ks} clusters")
    scores: dict[int, float] = {}
    models: dict[int, Pipeline] = {}
    rng = np.random.default_rng(config.seed)
    sample = rng.choice(n, size=min(n, 2000), replace=False)
    for k in ks:
        models[k] = pipeline(k).fit(x)
        z = models[k][:-1].transform(x[sample])
        labels = models[k][-1].labels_[sample]
        scores[k] = float(silhouette_score(z, labels)) if len(set(labels)) > 1 else -1.0
    best = max(ks, key=lambda k: scores[k])
    return models[best], scores


def fit_anomaly(x: np.ndarray, config: FeatureModelConfig) -> Pipeline:
    """Isolation Forest on whitened principal components (``x`` from :func:`anomaly_matrix`).

    Many features are near-duplicates (four band powers, four band SNRs); an Isolation
    Forest draws the feature of each split at random, so redundant features would dominate
    its splits. Standardising, then PCA whitened to 95% of the variance, gives it
    decorrelated directions of equal spread. Measured on the archive store with its noise
    windows (``bench/feature_models.py``): the four dead-channel windows rank 7th-11th of
    1735 (three seeds) against 26th-37th on the raw features or with robust scaling.
    """
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        PCA(n_components=0.95, whiten=True, random_state=config.seed),
        IsolationForest(n_estimators=config.anomaly_estimators, random_state=config.seed, n_jobs=1),
    )
    return model.fit(x)


def anomaly_scores(model: Pipeline, x: np.ndarray) -> np.ndarray:
    """Anomaly score per row: higher = more anomalous (negated ``score_samples``, in (0, 1])."""
    return -np.asarray(model.score_samples(x), dtype=np.float64)


def fit_pca(x: np.ndarray, config: FeatureModelConfig) -> Pipeline:
    """PCA to two components of the standardised features."""
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        PCA(n_components=2, random_state=config.seed),
    )
    return model.fit(x)


def tsne_embedding(x: np.ndarray, config: FeatureModelConfig) -> np.ndarray:
    """t-SNE map (2-D) of the standardised features of exactly these rows.

    t-SNE is transductive: it places the points it is given and has no transform for new
    ones, so prediction recomputes it over the predicted set (the coordinates of two runs
    are not comparable; PCA's are).
    """
    z = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()
    ).fit_transform(x)
    n = z.shape[0]
    if n < 4:
        return np.full((n, 2), np.nan)
    perplexity = float(min(config.tsne_perplexity, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=config.seed)
    return np.asarray(tsne.fit_transform(z), dtype=np.float64)


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    classes: Sequence[str],
    kind: str,
    config: FeatureModelConfig,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities of every row from the model fitted on the other folds (rows
    weighted by event when ``groups`` are given: :func:`event_weights`)."""
    fitter = FITTERS[kind]
    probs = np.full((x.shape[0], len(classes)), np.nan)
    for fold in np.unique(folds):
        test = folds == fold
        train_groups = None if groups is None else np.asarray(groups)[~test]
        model = fitter(x[~test], y[~test], config, train_groups)
        probs[test] = class_probabilities(model, x[test], classes)
    return probs


def grouped_cv(
    x: np.ndarray,
    y: np.ndarray,
    event_ids: np.ndarray,
    folds: np.ndarray,
    classes: Sequence[str],
    config: FeatureModelConfig,
    kinds: Sequence[str] = CLASSIFIERS,
    weight_by_event: bool = True,
) -> dict[str, dict[str, Any]]:
    """Cross-validated trace- and event-level metrics of each classifier over ``folds``
    (e.g. grouped by source site, so no site is on both sides of a split), and of
    ``ensemble``, the mean of their probabilities, when there is more than one. Training
    rows are weighted by event (:func:`event_weights` over ``event_ids``) unless
    ``weight_by_event`` is false (classes balanced per row)."""
    out: dict[str, dict[str, Any]] = {}
    members: list[np.ndarray] = []
    groups = event_ids if weight_by_event else None
    for kind in kinds:
        probs = out_of_fold_probabilities(x, y, folds, classes, kind, config, groups)
        members.append(probs)
        out[kind] = evaluate(probs, y, event_ids, classes)
    if len(members) > 1:  # what training's ``ensemble`` does: the mean of the classifiers
        out[ENSEMBLE] = evaluate(np.mean(members, axis=0), y, event_ids, classes)
    return out


def site_cv(
    examples: pd.DataFrame,
    features: pd.DataFrame,
    n_folds: int,
    seed: int,
    config: FeatureModelConfig,
    kinds: Sequence[str] = CLASSIFIERS,
    readings: Sequence[str] = READINGS,
    weight_by_event: bool = True,
) -> dict[str, Any]:
    """The issue-4 reading of the feature classifiers: vertical-component features only
    (windows without a vertical left out), ``n_folds`` folds grouped by source site
    (:func:`seismoflow.examples.site_folds`), event level = argmax of the mean class
    probability over an event's traces.

    ``readings``: ``"3-class"`` trains and scores on the catalogued events (which class is
    this event?); ``"4-class"`` trains with the noise windows too and scores argmax over
    all four classes (noise recall reported, trace level). Per reading and classifier
    (and ``ensemble``, their mean): :func:`seismoflow.models.metrics.headline`, the
    event-level F1 per class and the event confusion matrix (rows true, columns predicted).
    ``weight_by_event``: training rows weighted by event (:func:`event_weights`), as
    :func:`fit_feature_models` does when given the event ids.
    """
    from seismoflow.examples import site_folds
    from seismoflow.labels import CLASSES, EVENT_CLASSES, NOISE

    keep = examples["has_z"].to_numpy(dtype=bool)
    examples = examples[keep].reset_index(drop=True)
    features = features[keep].reset_index(drop=True)
    names = vertical_features(list(features.columns))
    x = feature_matrix(features, names)
    y = examples["label"].astype(str).to_numpy(dtype=object)
    ids = examples["event_id"].astype(str).to_numpy(dtype=object)
    fold = site_folds(examples, n_folds, seed)
    out: dict[str, Any] = {
        "folds": n_folds,
        "seed": seed,
        "n_traces": len(y),
        "n_features": len(names),
        "labels": {c: int(np.sum(y == c)) for c in CLASSES},
        "weight_by_event": weight_by_event,
    }
    setups = {"4-class": (y == y, tuple(CLASSES)), "3-class": (y != NOISE, tuple(EVENT_CLASSES))}
    for tag in readings:
        rows, classes = setups[tag]
        cv = grouped_cv(
            x[rows], y[rows], ids[rows], fold[rows], classes, config, kinds, weight_by_event
        )
        out[tag] = {
            kind: {
                **headline(m, EVENT_CLASSES, NOISE),
                "event_per_class_f1": {c: m["event"]["per_class"][c]["f1"] for c in classes},
                "event_confusion": m["event"]["confusion"],
                **catalogued_f1(m["event"]["confusion"], classes, EVENT_CLASSES),
            }
            for kind, m in cv.items()
        }
    return out


def catalogued_f1(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], event_classes: Sequence[str]
) -> dict[str, Any]:
    """Event-level F1 over ``event_classes`` scored on the catalogued events only: the rows
    of other true classes (noise windows, each its own "event") are dropped, so a noise
    window called an earthquake is not counted against the earthquakes' precision, while an
    event called noise still counts as missed. The reading of issue 4's baseline."""
    c = np.array(confusion, dtype=np.int64)
    c[[name not in event_classes for name in classes]] = 0  # true catalogued classes only
    per_class, _ = confusion_scores(c, classes)
    f1 = {e: float(per_class[e]["f1"]) for e in event_classes}
    return {
        "catalogued_event_macro_f1": round(float(np.mean(list(f1.values()))), 6),
        "catalogued_event_f1": f1,
    }


COMPONENT_PREFIXES: tuple[str, ...] = ("z_", "n_", "e_")


def component_columns(names: Sequence[str]) -> dict[str, list[str]]:
    """Per component prefix, the columns of the features every component shares.

    The anomaly model scores each component of a trace with one component-agnostic model
    (a dead horizontal is as anomalous as a dead vertical), so only feature suffixes that
    exist for the vertical are used, in the vertical's order.
    """
    base = [n[len(VERTICAL_PREFIX) :] for n in names if n.startswith(VERTICAL_PREFIX)]
    out: dict[str, list[str]] = {}
    for prefix in COMPONENT_PREFIXES:
        cols = [prefix + b for b in base]
        if all(c in names for c in cols):
            out[prefix] = cols
    return out


def component_rows(
    features: pd.DataFrame, names: Sequence[str], present: Mapping[str, np.ndarray]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Stack each trace's components as rows (suffix columns); return them and the trace
    position of each row. ``present[prefix]`` says which traces have that component."""
    groups = component_columns(names)
    frames, owners = [], []
    for prefix, cols in groups.items():
        mask = np.asarray(present.get(prefix, np.ones(len(features), dtype=bool)), dtype=bool)
        part = features.loc[mask, cols]
        part.columns = [c[len(prefix) :] for c in cols]
        frames.append(part.reset_index(drop=True))
        owners.append(np.flatnonzero(mask))
    if not frames:
        raise KeyError("no vertical (z_) features: cannot score anomalies")
    return pd.concat(frames, ignore_index=True), np.concatenate(owners)


@dataclass
class FeatureModels:
    """The fitted feature models of one training run."""

    feature_names: list[str]  # classifier / cluster / map inputs (vertical only)
    anomaly_names: list[str]  # per-component feature suffixes of the anomaly model
    classifiers: dict[str, Pipeline]
    kmeans: Pipeline
    silhouette: dict[int, float]
    anomaly: Pipeline
    anomaly_bounds: tuple[np.ndarray, np.ndarray]
    pca: Pipeline
    config: FeatureModelConfig

    def probabilities(
        self, features: pd.DataFrame, classes: Sequence[str]
    ) -> dict[str, np.ndarray]:
        x = feature_matrix(features, self.feature_names)
        return {k: class_probabilities(m, x, classes) for k, m in self.classifiers.items()}

    def clusters(self, features: pd.DataFrame) -> np.ndarray:
        x = feature_matrix(features, self.feature_names)
        return np.asarray(self.kmeans.predict(x), dtype=np.int32)

    def pca_map(self, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.pca.transform(feature_matrix(features, self.feature_names)))

    def anomaly_scores(
        self, features: pd.DataFrame, present: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Per trace: the highest anomaly score over its recorded components."""
        names = [p + n for p in COMPONENT_PREFIXES for n in self.anomaly_names]
        rows, owner = component_rows(features, [n for n in names if n in features], present)
        x, _ = anomaly_matrix(rows, self.anomaly_names, self.anomaly_bounds)
        scores = anomaly_scores(self.anomaly, x)
        out = np.full(len(features), np.nan)
        frame = pd.Series(scores).groupby(owner).max()
        out[frame.index.to_numpy()] = frame.to_numpy()
        return out


def fit_feature_models(
    features: pd.DataFrame,
    labels: np.ndarray,
    train: np.ndarray,
    present: Mapping[str, np.ndarray],
    config: FeatureModelConfig,
    event_ids: np.ndarray | None = None,
) -> FeatureModels:
    """Fit every feature model: classifiers on the ``train`` rows (vertical features),
    K-Means, PCA and the anomaly model on all ``train`` rows (labels unused).

    ``event_ids`` (one per row; empty for noise windows): the classifiers' rows are then
    weighted by event (:func:`event_weights`, what ``bench/feature_models.py`` measures);
    without them classes are balanced per row."""
    names = vertical_features(list(features.columns))
    if not names:
        raise StoreError(
            "the feature table has no vertical (z_) features; run `seismoflow features`"
        )
    x = feature_matrix(features, names)
    y = np.asarray(labels, dtype=object).astype(str)
    tr = np.asarray(train, dtype=bool)
    groups = None if event_ids is None else np.asarray(event_ids, dtype=object)[tr]
    classifiers = {kind: FITTERS[kind](x[tr], y[tr], config, groups) for kind in CLASSIFIERS}
    kmeans, silhouette = fit_kmeans(x[tr], config)
    pca = fit_pca(x[tr], config)
    rows, _ = component_rows(
        features.loc[tr].reset_index(drop=True),
        list(features.columns),
        {k: np.asarray(v, dtype=bool)[tr] for k, v in present.items()},
    )
    suffixes = list(rows.columns)
    xa, bounds = anomaly_matrix(rows, suffixes, None)
    anomaly = fit_anomaly(xa, config)
    return FeatureModels(
        names, suffixes, classifiers, kmeans, silhouette, anomaly, bounds, pca, config
    )
