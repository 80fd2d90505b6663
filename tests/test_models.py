"""Models: metrics on hand-made cases, feature models on seeded synthetic tables, safe
model files, and a training run on the real archive (``archive_store``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch

from seismoflow.models import metrics as m
from seismoflow.models import registry
from seismoflow.models.sklearn_models import (
    FeatureModelConfig,
    anomaly_matrix,
    catalogued_f1,
    component_columns,
    feature_matrix,
    fit_feature_models,
    fit_kmeans,
    grouped_cv,
    site_cv,
    tsne_embedding,
)

CLASSES = ("earthquake", "explosion", "surface_event", "noise")


# --- metrics ---------------------------------------------------------------------------


def test_metrics_hand_made() -> None:
    truth = ["earthquake", "earthquake", "explosion", "explosion", "surface_event", "noise"]
    pred = ["earthquake", "explosion", "explosion", "explosion", "earthquake", "noise"]
    out = m.classification_metrics(truth, pred, CLASSES)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    eq, ex, su, no = (out["per_class"][c] for c in CLASSES)
    assert (eq["precision"], eq["recall"]) == (0.5, 0.5)
    assert ex["precision"] == pytest.approx(2 / 3, abs=1e-6) and ex["recall"] == 1.0
    assert ex["f1"] == pytest.approx(0.8, abs=1e-6)
    assert (su["precision"], su["recall"], su["f1"]) == (0.0, 0.0, 0.0)
    assert no["f1"] == 1.0
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0 + 1.0) / 4, abs=1e-6)
    assert out["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    json.dumps(out)
    # A class absent from the truth does not drag macro-F1 down.
    only = m.classification_metrics(
        ["earthquake", "explosion"], ["earthquake", "explosion"], CLASSES
    )
    assert only["macro_f1"] == 1.0
    assert m.restrict(out, CLASSES[:3])["macro_f1"] == pytest.approx(1.3 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="not among the classes"):
        m.classification_metrics(["quake"], ["earthquake"], CLASSES)


# Event A: two stations lean explosion weakly, one says earthquake strongly; event B one
# surface-event trace.
EVENT_A_B = np.array(
    [
        [0.40, 0.60, 0.0, 0.0],
        [0.45, 0.55, 0.0, 0.0],
        [0.95, 0.05, 0.0, 0.0],
        [0.10, 0.10, 0.8, 0.0],
    ]
)
EVENT_IDS = ("A", "A", "A", "B")


def test_event_level_is_mean_probability() -> None:
    # Event A: two stations lean explosion weakly, one says earthquake strongly: the mean
    # says earthquake, although a majority vote of traces would say explosion.
    probs, ids = EVENT_A_B.copy(), list(EVENT_IDS)
    events, p = m.event_probabilities(probs, ids)
    assert list(events) == ["A", "B"]
    np.testing.assert_allclose(p[0], [0.6, 0.4, 0.0, 0.0])
    out = m.evaluate(probs, ["earthquake"] * 3 + ["surface_event"], ids, CLASSES)
    assert out["trace"]["accuracy"] == 0.5
    assert out["event"]["accuracy"] == 1.0 and out["event"]["n"] == 2
    with pytest.raises(ValueError, match="different labels"):
        m.evaluate(probs, ["earthquake", "explosion", "earthquake", "noise"], ids, CLASSES)


def test_event_level_geometric_pooling() -> None:
    # The same event A: the normalised geometric mean multiplies the stations' evidence,
    # so the confident earthquake station outweighs the two undecided ones more strongly.
    probs, ids = EVENT_A_B.copy(), list(EVENT_IDS)
    events, p = m.event_probabilities(probs, ids, "geometric")
    assert list(events) == ["A", "B"]
    geo = np.exp(np.log(np.clip(probs[:3], 1e-9, 1)).mean(axis=0))
    np.testing.assert_allclose(p[0], geo / geo.sum())
    assert p[0, 0] > 0.6 > p[0, 1]  # sharper than the mean (0.6 / 0.4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[1].argmax() == 2
    # one trace: geometric == mean (up to the 1e-9 floor)
    _, single = m.event_probabilities(probs[3:], ["B"], "geometric")
    np.testing.assert_allclose(single[0], probs[3], atol=1e-8)
    with pytest.raises(ValueError, match="pooling"):
        m.event_probabilities(probs, ids, "median")


# --- feature models on seeded synthetic tables ------------------------------------------


def synthetic(n_per: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Three separable classes in 4 vertical features (+ horizontals), seeded."""
    rng = np.random.default_rng(seed)
    names = ["power", "ratio", "kurtosis", "flat_fraction"]
    centres = {"earthquake": [0, 0, 0], "explosion": [8, 0, 8], "surface_event": [0, 8, -8]}
    rows, labels = [], []
    for label, c in centres.items():
        for _ in range(n_per):
            v = {
                f"z_{k}": x
                for k, x in zip(names[:3], np.array(c) + rng.normal(size=3), strict=True)
            }
            v["z_flat_fraction"] = abs(rng.normal(0, 0.01))
            for comp in "ne":
                for k in names:
                    v[f"{comp}_{k}"] = v[f"z_{k}"] + rng.normal(0, 0.2)
            rows.append(v)
            labels.append(label)
    features = pd.DataFrame(rows)
    n = len(features)
    examples = pd.DataFrame(
        {
            "event_id": [
                f"ev{i // 3}" if lab != "noise" else f"n{i}" for i, lab in enumerate(labels)
            ],
            "label": labels,
            "has_z": np.ones(n, bool),
            "has_n": np.ones(n, bool),
            "has_e": np.ones(n, bool),
        }
    )
    # events keep one label: 3 consecutive rows share an event and a class (n_per % 3 == 0)
    return features, np.asarray(labels, dtype=object), examples


def test_feature_models_fit_and_score() -> None:
    features, y, examples = synthetic()
    config = FeatureModelConfig(n_estimators=50, anomaly_estimators=100, seed=1)
    present = {f"{c}_": np.ones(len(y), bool) for c in "zne"}
    fm = fit_feature_models(features, y, np.ones(len(y), bool), present, config)
    assert fm.feature_names == ["z_power", "z_ratio", "z_kurtosis", "z_flat_fraction"]
    probs = fm.probabilities(features, CLASSES)
    for kind in ("random_forest", "svm"):
        p = probs[kind]
        assert p.shape == (len(y), 4)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(p[:, 3] == 0)  # noise never seen in training
        assert np.mean(np.asarray(CLASSES, dtype=object)[p.argmax(axis=1)] == y) > 0.9
    # K-Means chose k=3 for three blobs by silhouette.
    assert fm.kmeans[-1].n_clusters == 3
    assert max(fm.silhouette, key=lambda k: fm.silhouette[k]) == 3
    assert fm.pca_map(features).shape == (len(y), 2)
    # A dead horizontal (no power: -inf, all samples equal) is the most anomalous trace.
    bad = features.copy()
    bad.loc[5, ["e_power", "e_ratio"]] = -np.inf
    bad.loc[5, "e_flat_fraction"] = 1.0
    scores = fm.anomaly_scores(bad, present)
    assert int(np.argmax(scores)) == 5
    assert np.all(np.isfinite(scores))


def test_feature_matrix_and_anomaly_matrix() -> None:
    df = pd.DataFrame({"z_a": [1.0, -np.inf, 3.0, np.nan], "z_b": [0.0, 1.0, np.inf, 2.0]})
    x = feature_matrix(df, ["z_a", "z_b"])
    assert np.isnan(x[1, 0]) and np.isnan(x[2, 1]) and np.isnan(x[3, 0])
    xa, (lo, hi) = anomaly_matrix(df, ["z_a", "z_b"], None)
    assert xa[1, 0] == pytest.approx(1.0 - 10 * 2.0) and xa[2, 1] == pytest.approx(2.0 + 10 * 2.0)
    assert np.isnan(xa[3, 0])
    with pytest.raises(KeyError, match="z_c"):
        feature_matrix(df, ["z_c"])
    assert component_columns(["z_a", "n_a", "e_a", "z_b", "n_b"]) == {
        "z_": ["z_a", "z_b"],
        "n_": ["n_a", "n_b"],
    }


def test_kmeans_given_k_and_tsne() -> None:
    features, y, _ = synthetic(n_per=30)
    x = feature_matrix(features, ["z_power", "z_ratio", "z_kurtosis"])
    model, scores = fit_kmeans(x, FeatureModelConfig(kmeans_k=5))
    assert model[-1].n_clusters == 5 and list(scores) == [5]
    emb = tsne_embedding(x, FeatureModelConfig(seed=0))
    assert emb.shape == (len(y), 2) and np.all(np.isfinite(emb))
    np.testing.assert_allclose(emb, tsne_embedding(x, FeatureModelConfig(seed=0)))


def test_grouped_cv_keeps_folds_apart() -> None:
    features, y, examples = synthetic(n_per=30)
    x = feature_matrix(features, ["z_power", "z_ratio", "z_kurtosis"])
    folds = np.arange(len(y)) // 3 % 3  # whole events per fold
    out = grouped_cv(
        x, y, examples["event_id"].to_numpy(), folds, CLASSES, FeatureModelConfig(n_estimators=30)
    )
    for kind in ("random_forest", "svm", "logistic", "ensemble"):
        assert out[kind]["event"]["n"] == len(y) // 3
        assert out[kind]["event"]["macro_f1"] > 0.9


def test_site_cv_vertical_only_and_grouped_by_site() -> None:
    features, y, examples = synthetic(n_per=30)
    examples["site"] = [f"cell{i // 6}" for i in range(len(y))]  # two events per site
    examples.loc[:5, "has_z"] = False  # no vertical: left out of every reading
    config = FeatureModelConfig(n_estimators=20, seed=0)
    out = site_cv(examples, features, 3, 0, config, kinds=("random_forest", "logistic"))
    assert out["n_traces"] == len(y) - 6 and out["n_features"] == 4
    assert set(out) >= {"3-class", "4-class"}
    three = out["3-class"]
    assert set(three) == {"random_forest", "logistic", "ensemble"}
    for h in three.values():
        assert h["n_events"] == (len(y) - 6) // 3
        assert set(h["event_per_class_f1"]) == {"earthquake", "explosion", "surface_event"}
        assert h["event_macro_f1"] > 0.9 and h["noise_recall"] is None
    assert "noise" in out["4-class"]["logistic"]["event_per_class_f1"]


def test_catalogued_f1_ignores_noise_rows() -> None:
    # rows true, columns predicted: earthquake, explosion, surface_event, noise
    confusion = [[4, 0, 0, 1], [1, 1, 0, 0], [0, 0, 3, 0], [5, 0, 0, 0]]
    out = catalogued_f1(confusion, CLASSES, CLASSES[:3])
    # earthquake: tp 4, predicted 5 (the noise row is dropped), support 5 -> F1 0.8
    assert out["catalogued_event_f1"] == {"earthquake": 0.8, "explosion": 0.666667,
                                          "surface_event": 1.0}  # fmt: skip
    assert out["catalogued_event_macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3, abs=1e-6)


# --- model files: never unpickled ------------------------------------------------------


class Payload:
    """Unpickling this runs code (the classic pickle attack)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("payload ran",))


def test_skops_round_trip_and_refusals(tmp_path: Path) -> None:
    features, y, _ = synthetic(n_per=15)
    present = {f"{c}_": np.ones(len(y), bool) for c in "zne"}
    fm = fit_feature_models(
        features,
        y,
        np.ones(len(y), bool),
        present,
        FeatureModelConfig(n_estimators=10, anomaly_estimators=10),
    )
    path = tmp_path / "rf.skops"
    registry.save_sklearn(fm.classifiers["random_forest"], path)
    back = registry.load_sklearn(path)
    x = feature_matrix(features, fm.feature_names)
    np.testing.assert_array_equal(
        back.predict_proba(x), fm.classifiers["random_forest"].predict_proba(x)
    )
    # a plain pickle where a model file should be
    crafted = tmp_path / "pickled.skops"
    crafted.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(registry.UnsafeModelError, match="not a skops model file"):
        registry.load_sklearn(crafted)
    # a skops file holding an object of an untrusted type
    evil = tmp_path / "evil.skops"
    sio.dump({"model": Payload()}, evil)
    with pytest.raises(registry.UnsafeModelError, match="Payload"):
        registry.load_sklearn(evil)


def test_model_directory_refuses_pickles(tmp_path: Path) -> None:
    features, y, _ = synthetic(n_per=15)
    present = {f"{c}_": np.ones(len(y), bool) for c in "zne"}
    config = FeatureModelConfig(n_estimators=10, anomaly_estimators=10)
    fm = fit_feature_models(features, y, np.ones(len(y), bool), present, config)
    directory = registry.create_model_dir(tmp_path / "models", "abc")
    assert directory.parent == tmp_path / "models"
    meta = {
        "classes": list(CLASSES),
        "primary": "random_forest",
        "ensemble": [],
        "feature_models": registry.save_feature_models(directory, fm),
    }
    registry.write_metadata(directory, meta)
    bundle = registry.load_bundle(directory)
    assert bundle.model_id == directory.name and bundle.features is not None
    assert registry.create_model_dir(tmp_path / "models", "abc") != directory
    # swap a model file for a pickle: the recorded sha256 no longer matches
    target = directory / "features" / "svm.skops"
    target.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(registry.ModelDirectoryError, match="differs"):
        registry.load_bundle(directory)
    # ... and with the metadata forged to match, the file itself is refused
    doc = json.loads((directory / "model.json").read_text())
    doc["files"]["features/svm.skops"] = registry.sha256_file(target)
    (directory / "model.json").write_text(json.dumps(doc))
    with pytest.raises(registry.UnsafeModelError):
        registry.load_bundle(directory)


def test_cnn_weights_with_pickled_object_refused(tmp_path: Path) -> None:
    from seismoflow.models.cnn import CNNConfig, CNNRun, build_model, load_cnn, save_cnn

    config = CNNConfig(widths=(4, 4), hidden=4)
    run = CNNRun(build_model(config, 4), config, CLASSES)
    save_cnn(run, tmp_path / "cnn")
    model, _, classes = load_cnn(tmp_path / "cnn")
    assert classes == CLASSES
    torch.save({"weights": Payload()}, tmp_path / "cnn" / "cnn.pt")
    with pytest.raises(ValueError, match="refusing"):
        load_cnn(tmp_path / "cnn")


# --- a training run on the real archive --------------------------------------------------


@pytest.fixture
def trained(
    trained_model: tuple[Path, Path, dict[str, object]],
) -> tuple[Path, Path, dict[str, object]]:
    """The session's training run on the featured archive store (``conftest.trained_model``)."""
    return trained_model


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.timeout(2400)  # the first one may build the session chain
def test_train_writes_model_directory(trained: tuple[Path, Path, dict[str, object]]) -> None:
    store, directory, out = trained
    assert directory.parent.name == "models" and directory.name == out["model_id"]
    meta = registry.read_metadata(directory)
    assert meta["classes"] == list(CLASSES)
    assert meta["primary"] in ("cnn", "random_forest", "svm", "logistic", "ensemble")
    assert meta["window"]["sampling_rate"] == 100.0 and meta["window_length_s"] == 130.0
    assert meta["sampling_rate"] == meta["cnn"]["config"]["sampling_rate"]
    assert meta["normalisation"]["cnn"]["normalisation"]
    assert all(n.startswith("z_") for n in meta["feature_names"])  # vertical only
    assert len(meta["training_data"]["fingerprint"]) == 64
    assert meta["code_version"]["seismoflow"]
    assert meta["flow_run_id"] == out["flow_run_id"]
    # the choice is the best mean of a site-grouped CV over fold seeds, with intervals
    selection = meta["selection"]
    candidates = selection["candidates"]
    assert {"random_forest", "svm", "logistic", "ensemble"} <= set(candidates)
    assert "cnn" not in candidates  # not cross-validated unless --cnn-cv
    best = max(candidates, key=lambda m: candidates[m]["event_macro_f1"]["mean"])
    assert meta["primary"] == best == out["primary"]
    for block in candidates.values():
        m = block["event_macro_f1"]
        assert 0 <= m["low"] <= m["mean"] <= m["high"] <= 1
        assert set(block["event_f1"]) == {"earthquake", "explosion", "surface_event"}
    assert selection["n_events"] >= 200 and meta["calibration"]["temperature"] > 0
    assert out["cv"] == meta["headline"]
    # the event pooling is chosen by the same CV: the primary's score is the best of all
    # (pooling, candidate) pairs, and prediction pools events the same way
    assert meta["event_pooling"] == selection["event_pooling"] == out["event_pooling"]
    pairs = selection["pooling_candidates"]
    assert set(pairs) == {"mean", "geometric"}
    top = max(v["event_macro_f1"] for by in pairs.values() for v in by.values())
    assert pairs[meta["event_pooling"]][meta["primary"]]["event_macro_f1"] == top
    assert meta["training_data"]["labels"]["analyst_labelled_events"] == 0
    # every model file is listed with its sha256, and nothing in it is a pickle
    for rel in meta["files"]:
        assert (directory / rel).is_file()
        assert not rel.endswith((".pkl", ".pickle", ".joblib"))
    for name in ("confusion_event", "reliability", "pca_class", "pca_cluster", "tsne_class"):
        assert (directory / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (directory / "plots" / "gallery.png").is_file()
    bundle = registry.load_bundle(directory)
    assert bundle.features is not None and bundle.cnn is not None


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.timeout(2400)  # the first one may build the session chain
def test_dead_channels_rank_among_most_anomalous(
    trained: tuple[Path, Path, dict[str, object]],
) -> None:
    """The archive README's flat channels (UW.VFP..EHZ in two PNSN events, UW.YACT..HHE in
    ESEC events 167 and 168) are among the top 2% of anomaly scores."""
    from seismoflow.models.predict import present_components
    from seismoflow.models.training import load_inputs

    store, directory, _ = trained
    bundle = registry.load_bundle(directory)
    assert bundle.features is not None
    examples, features = load_inputs(str(store))
    scores = bundle.features.anomaly_scores(features, present_components(examples))
    rank = pd.Series(scores).rank(ascending=False, method="max").to_numpy()
    dead = [
        "smi:local/pnsn/uw61777692|UW.VFP..EH?",
        "smi:local/pnsn/uw61779036|UW.VFP..EH?",
        "smi:local/esec/167|UW.YACT..HH?",
        "smi:local/esec/168|UW.YACT..HH?",
    ]
    keys = examples["trace_key"].to_numpy()
    ranks = {k: int(rank[keys == k][0]) for k in dead}
    assert max(ranks.values()) <= 0.02 * len(examples), ranks


def test_train_options_round_trip_the_poolings() -> None:
    from seismoflow.models.metrics import POOLINGS
    from seismoflow.models.training import TrainOptions

    options = TrainOptions()
    assert options.poolings == POOLINGS == ("mean", "geometric")
    values = json.loads(json.dumps(options.to_dict()))  # as a flow parameter travels
    assert TrainOptions.from_dict(values) == options
    only_mean = TrainOptions.from_dict({**values, "poolings": ["mean"]})
    assert only_mean.poolings == ("mean",)
