"""Predictions written back into the store: round trip through xarray and CSV, versions,
and the plain pieces (event aggregation, schema checks) on small synthetic inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from seismoflow.storage.predictions import latest_version, list_versions, open_predictions
from seismoflow.storage.schema import SCHEMA_VERSION, SchemaError
from seismoflow.storage.tables import read_table

import seismoflow
from seismoflow.errors import StoreError
from seismoflow.models.predict import (
    TracePredictions,
    event_table,
    export_table,
    review_table,
    uncertainty,
    write_predictions,
)
from tests.conftest import copy_store, run_cli

CLASSES = ("earthquake", "explosion", "surface_event", "noise")


def tiny_predictions() -> TracePredictions:
    examples = pd.DataFrame(
        {
            "group": ["events", "events", "events", "noise"],
            "trace": [0, 1, 2, 0],
            "trace_key": ["A|X.S1..HH?", "A|X.S2..HH?", "B|X.S1..HH?", "noise|X.S1..HH?|t"],
            "event_id": ["A", "A", "B", "noise:noise|X.S1..HH?|t"],
            "network": ["X"] * 4,
            "station": ["S1", "S2", "S1", "S1"],
            "location": [""] * 4,
            "channel_set": ["HH?"] * 4,
        }
    )
    p = np.array(
        [[0.2, 0.7, 0.1, 0.0], [0.9, 0.05, 0.05, 0.0], [0.1, 0.1, 0.8, 0.0], [0, 0, 0.1, 0.9]]
    )
    return TracePredictions(
        examples,
        CLASSES,
        {"random_forest": p},
        p,
        np.array([1, 0, 2, 2], dtype=np.int32),
        np.array([0.4, 0.6, 0.5, 0.3]),
        np.arange(8, dtype=float).reshape(4, 2),
        np.full((4, 2), np.nan),
    )


def test_event_table_aggregates_traces() -> None:
    events = event_table(tiny_predictions())
    a = events.set_index("event_id").loc["A"]
    np.testing.assert_allclose(events.attrs["probability"][0], [0.55, 0.375, 0.075, 0.0])
    assert a["event_class"] == "earthquake"  # mean over stations, not a trace vote
    assert a["event_n_traces"] == 2 and a["event_cluster"] == 0  # tie: the lowest cluster
    assert a["event_anomaly_score"] == pytest.approx(0.5)


def test_event_table_pools_as_the_model_says() -> None:
    preds = tiny_predictions()
    preds.pooling = "geometric"  # model.json's event_pooling
    events = event_table(preds)
    geo = np.sqrt(np.clip([[0.2, 0.7, 0.1, 0.0]], 1e-9, 1) * [[0.9, 0.05, 0.05, 1e-9]])[0]
    np.testing.assert_allclose(events.attrs["probability"][0], geo / geo.sum())
    # the confident earthquake station against the explosion-leaning one: geometric mean
    # 0.424 / 0.187 for earthquake / explosion before normalising (the mean: 0.55 / 0.375)
    assert events.set_index("event_id").loc["A", "event_class"] == "earthquake"


def test_uncertainty_is_one_minus_the_top_two_margin() -> None:
    p = np.array([[1.0, 0, 0, 0], [0.4, 0.4, 0.2, 0], [0.5, 0.2, 0.3, 0.0]])
    np.testing.assert_allclose(uncertainty(p), [0.0, 1.0, 0.8])
    assert uncertainty(np.zeros((0, 4))).shape == (0,)


def test_event_table_uses_usable_traces_and_the_temperature() -> None:
    preds = tiny_predictions()
    preds.usable = np.array([True, False, True, True])  # S2's vertical is dead
    events = event_table(preds).set_index("event_id")
    assert events.loc["A", "event_class"] == "explosion" and events.loc["A", "event_n_traces"] == 1
    preds.temperature = 2.0
    soft = event_table(preds)
    p = soft.attrs["probability"][list(soft["event_id"]).index("A")]
    assert p.argmax() == 1 and p.max() < 0.7 and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(soft["uncertainty"], uncertainty(soft.attrs["probability"]))
    review = review_table(preds, n=2)
    assert len(review) == 2 and review["uncertainty"].is_monotonic_decreasing
    assert set(review.columns) >= {"class_1", "class_2", "stations", "group", "trace"}


def test_write_and_read_versions(tmp_path: Path) -> None:
    store = str(tmp_path / "s.zarr")
    zarr.open_group(store, mode="w", zarr_format=3).attrs["seismoflow_schema"] = SCHEMA_VERSION
    attrs = {
        "model_id": "m1", "code_version": "x", "flow_run_id": "r1", "created_at": "t",
        "unpredicted_events": [{"event_id": "C", "reason": "no vertical", "n_windows": 1}],
    }  # fmt: skip
    first = write_predictions(store, tiny_predictions(), attrs)
    second = write_predictions(store, tiny_predictions(), {**attrs, "model_id": "m2"})
    assert list_versions(store) == [first, second] and latest_version(store) == second
    ds = xr.open_zarr(store, group=f"predictions/{first}")
    assert ds.attrs["model_id"] == "m1" and ds.attrs["status"] == "complete"
    assert [str(c) for c in ds["class"].values] == list(CLASSES)
    table = export_table(store, version=first)
    assert list(table.columns) == [
        "event_id",
        "predicted_class",
        "probability",
        "uncertainty",
        "cluster",
        "anomaly_score",
        "reason",
    ]
    assert table.set_index("event_id").loc["A", "probability"] == pytest.approx(0.55)
    assert table.set_index("event_id").loc["A", "uncertainty"] == pytest.approx(0.825)
    c = table.set_index("event_id").loc["C"]
    assert c["predicted_class"] == "" and c["reason"] == "no vertical"
    with pytest.raises(SchemaError, match="provenance"):
        write_predictions(store, tiny_predictions(), {"model_id": "m3"})
    with pytest.raises(StoreError, match="not a complete version"):
        open_predictions(store, "nope")


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.timeout(2400)  # the first one may build the session chain
def test_predict_round_trip(
    trained_model: tuple[Path, Path, dict[str, object]],
    prefect_server: str,
    tmp_path: Path,
) -> None:
    """Predict and export in this process (the API the CLI calls); one ``seismoflow export
    predictions`` proves the command (``test_cli_errors`` runs ``seismoflow predict``, the
    reprocess test the whole job through ``seismoflow run``)."""
    store, model, _ = trained_model
    # a private copy: the session's featured store is read by other tests, maybe at once
    s = str(copy_store(store, tmp_path / "store.zarr"))
    out = seismoflow.predict(s, model, workers=2)
    json.dumps(out)  # what `seismoflow predict --json` prints
    first = out["version"]

    # the latest, with xarray alone (the STORE.md one-liner)
    latest = xr.open_zarr(s, group="predictions").attrs["latest"]
    assert latest == first
    ds = xr.open_zarr(s, group=f"predictions/{latest}")
    assert ds.attrs["model_id"] == model.name and ds.attrs["flow_run_id"] == out["flow_run_id"]
    assert ds.attrs["code_version"]["seismoflow"] and ds.attrs["created_at"]
    n = ds.sizes["trace"]
    assert n == out["n_traces"] and ds.sizes["event"] == out["n_events"]
    prob = ds["probability"].values
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-4)
    names = np.array([str(c) for c in ds["class"].values], dtype=object)
    assert [str(v) for v in ds["predicted_class"].values] == list(names[prob.argmax(axis=1)])
    assert np.all(np.isfinite(ds["anomaly_score"].values))
    assert np.isfinite(ds["pca_x"].values).all() and np.isfinite(ds["tsne_y"].values).all()
    assert (ds["cluster"].values >= 0).all()
    # traces point back at their windows
    events = xr.open_zarr(s, group="events")
    keys = [str(k) for k in events["trace_key"].values]
    for g, i, k in zip(
        ds["group"].values[:50],
        ds["trace_index"].values[:50],
        ds["trace_key"].values[:50],
        strict=True,
    ):
        if str(g) == "events":
            assert keys[int(i)] == str(k)

    # exported CSV matches the store
    csv = tmp_path / "events.csv"
    export_table(s).to_csv(csv, index=False)  # what `seismoflow export predictions` writes
    table = pd.read_csv(csv, keep_default_na=False)
    assert list(table.columns) == [
        "event_id",
        "predicted_class",
        "probability",
        "uncertainty",
        "cluster",
        "anomaly_score",
        "reason",
    ]
    # every catalogued event is a row: predicted, or listed with the reason it is not
    missing = out["unpredicted_events"]
    assert isinstance(missing, list)
    catalog = read_table(s, "catalog")
    events_rows = table[~table["event_id"].str.startswith("noise:")]
    assert set(events_rows["event_id"]) == set(catalog["event_id"].astype(str))
    assert (table["reason"] != "").sum() == len(missing)
    predicted = table[table["reason"] == ""]
    assert predicted["event_id"].tolist() == [str(e) for e in ds["event"].values]
    assert predicted["predicted_class"].tolist() == [str(c) for c in ds["event_class"].values]
    np.testing.assert_allclose(
        predicted["probability"].astype(float), ds["event_probability"].values.max(axis=1),
        rtol=1e-6,
    )  # fmt: skip
    np.testing.assert_array_equal(predicted["cluster"], ds["event_cluster"].values)
    np.testing.assert_allclose(
        predicted["anomaly_score"].astype(float), ds["event_anomaly_score"].values, rtol=1e-6
    )
    per_trace = tmp_path / "traces.csv"
    export_table(s, per_trace=True).to_csv(per_trace, index=False)
    traces = pd.read_csv(per_trace, keep_default_na=False, dtype={"location": str})
    assert len(traces) == n
    assert traces["trace_key"].tolist() == [str(k) for k in ds["trace_key"].values]
    assert traces["station"].tolist() == [str(k) for k in ds["station"].values]
    np.testing.assert_allclose(traces["anomaly_score"], ds["anomaly_score"].values, rtol=1e-6)
    before = {v: ds[v].values.copy() for v in ("probability", "cluster", "anomaly_score", "tsne_x")}

    # a second run adds a version and leaves the first untouched
    again = seismoflow.predict(s, model, tsne=False, workers=2)
    assert again["version"] != first
    assert list_versions(s) == [first, again["version"]] and latest_version(s) == again["version"]
    old = xr.open_zarr(s, group=f"predictions/{first}")
    for name, values in before.items():
        np.testing.assert_array_equal(old[name].values, values)
    new = open_predictions(s)
    np.testing.assert_allclose(new["probability"].values, before["probability"], atol=1e-6)
    assert np.isnan(new["tsne_x"].values).all()
    # the command: an older version by name, the same rows as the first export
    old_csv = tmp_path / "old.csv"
    run_cli(
        ["export", "predictions", "--store", s, "--out", str(old_csv), "--version", first],
        prefect_server,
    )
    pd.testing.assert_frame_equal(pd.read_csv(old_csv, keep_default_na=False), table)
