"""``catalog-reprocess`` / ``seismoflow run``: parameters, decisions, monitoring helpers, and
the README's main job end to end against the local FDSN service over the real archive."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError
from seismoflow.flows.reprocess import (
    DEFAULT_STEPS,
    ReprocessParams,
    acquisition_counts,
    new_data_written,
    per_class_rows,
    run_reprocess,
)
from seismoflow.storage.predictions import list_versions, open_predictions
from seismoflow.storage.tables import read_table

from seismoflow import monitoring as mon
from tests.conftest import run_cli
from tests.fdsnws import FDSNService

# --- parameters ----------------------------------------------------------------------------


def test_params_validate_what_a_run_needs(tmp_path: Path) -> None:
    store = str(tmp_path / "s.zarr")
    p = ReprocessParams(store=store, start="2021-01-01", end="2021-01-02T12:00")
    assert p.steps == list(DEFAULT_STEPS)
    assert p.time_range_ns() == (1_609_459_200_000_000_000, 1_609_588_800_000_000_000)
    assert p.export_path() == str(tmp_path / "s-predictions.csv")
    bad: list[dict[str, Any]] = [
        {"start": "2021-01-02", "end": "2021-01-01"},
        {"last_days": 1, "start": "2021-01-01"},
        {},  # fetching needs a time range or an archive
        {"start": "2021-01-01", "end": "2021-01-02", "region": {"minlat": 1.0}},
        {"start": "2021-01-01", "end": "2021-01-02", "steps": ["download"]},
        {"start": "2021-01-01", "end": "2021-01-02", "train_options": {"epoch": 1}},
        {"start": "2021-01-01", "end": "2021-01-02", "settings": {"max_workers": 0}},
        {"start": "2021-01-01", "end": "2021-01-02", "unknown": 1},
    ]
    for values in bad:
        with pytest.raises(ValidationError):
            ReprocessParams(store=store, **values)
    # An archive needs no time range; predict-only runs need neither.
    ReprocessParams(store=store, archive={"sds": str(tmp_path)})
    ReprocessParams(store=store, steps=["predict", "export"])


def test_last_days_counts_back_from_now() -> None:
    p = ReprocessParams(last_days=1.5)
    now = dt.datetime(2024, 3, 2, 12, tzinfo=dt.UTC)
    start, end = p.time_range_ns(now)
    assert start is not None and end is not None
    assert end == int(now.timestamp()) * 10**9
    assert end - start == int(1.5 * 86400) * 10**9
    sel = p.selection_dict(start, end)
    assert sel["start_ns"] == start and sel["continuous"] is False


def test_new_data_and_counts_from_summaries() -> None:
    ingest = {"files": 4, "units_written": 0, "units_skipped": 4, "quarantined": 1,
              "windows": {"written": 0}}  # fmt: skip
    assert not new_data_written(ingest)
    assert new_data_written({**ingest, "windows": {"written": 3}})
    fetch = {"events": 2, "traces": 9, "lines_skipped_done": 5,
             "ingest": {**ingest, "units_written": 2}}  # fmt: skip
    assert new_data_written(fetch)
    assert not new_data_written({"events": 0, "traces": 0, "ingest": {}})
    counts = acquisition_counts(fetch)
    assert counts == {
        "events": 2, "fetched": 9, "converted_channel_days": 2, "converted_windows": 0,
        "skipped_already_stored": 9, "quarantined": 1,
    }  # fmt: skip


def test_per_class_rows_from_model_metrics() -> None:
    metrics = {
        "rf": {"event_f1": {"earthquake": {"mean": 0.667, "low": 0.5, "high": 0.8}}},
        "svm": {},
    }  # fmt: skip
    assert per_class_rows(metrics) == [
        {"model": "rf", "class": "earthquake", "f1": 0.667, "f1_low": 0.5, "f1_high": 0.8}
    ]


# --- monitoring helpers ----------------------------------------------------------------------


def test_summary_markdown_and_tables() -> None:
    text = mon.summary_markdown(
        "Run", {"fetched": 3, "quarantined": 1}, {"fetch": 1.25, "predict": 0.5}, ["a note"]
    )
    assert "| fetched | 3 |" in text and "| fetch | 1.25 |" in text
    assert "| **total** | 1.75 |" in text and "- a note" in text
    assert mon.markdown_table([]) == "_none_"
    assert mon.markdown_table([{"a": "x|y", "b": 0.123456}]).splitlines()[2] == "| x\\|y | 0.123 |"
    assert mon.check_key("reprocess-summary") == "reprocess-summary"
    with pytest.raises(ValueError, match="lowercase"):
        mon.check_key("Reprocess_Summary")


def test_images_are_embedded_as_data_uris(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    text = mon.images_markdown("Plots", {"line": tmp_path / "p.png"})
    assert "## line" in text and "](data:image/png;base64,iVBORw0KGgo" in text


def test_stage_clock_sums_repeated_stages() -> None:
    clock = mon.StageClock()
    for _ in range(2):
        with clock.stage("a"):
            pass
    with clock.stage("b"):
        pass
    assert list(clock.seconds) == ["a", "b"] and all(v >= 0 for v in clock.seconds.values())


# --- the README's main job against the local FDSN service -------------------------------------

# Two years of the archive (earthquakes, explosions and surface events) keep the run short;
# the CNN is left out, the CV runs one fold seed and few noise windows are drawn so that
# training stays fast. Every station of the archive lies within 0.5 degrees of its events:
# the default radius (5 degrees) asks the same 684 traces with four times the request lines
# (2,681 of them answered "no data"), a third of the run's time for nothing.
START, END = "2020-01-01", "2022-01-01"
MAX_DISTANCE = 0.6
FAST = ("--no-cnn", "--trees", "40", "--no-tsne", "--cv-seeds", "0",
        "--max-distance", str(MAX_DISTANCE))  # fmt: skip
FAST_ENV = {"SEISMOFLOW_NOISE_PER_CHANNEL_SET": "8"}


@pytest.fixture(scope="module")
def service(archive: Path) -> Iterator[FDSNService]:
    with FDSNService(archive) as svc:
        yield svc


def run_args(service: FDSNService, base: Path) -> list[str]:
    return [
        "run", "--fdsn-url", service.url, "--start", START, "--end", END,
        "--store", str(base / "store.zarr"), "--models-dir", str(base / "models"),
        "--json", *FAST,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(
    service: FDSNService, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("reprocess")
    out = json.loads(run_cli(run_args(service, base), prefect_server, **FAST_ENV).stdout)
    return base, out


@pytest.mark.slow
def test_run_fetches_trains_predicts_and_exports(
    first_run: tuple[Path, dict[str, Any]], prefect_server: str
) -> None:
    base, out = first_run
    store = str(base / "store.zarr")
    assert set(out["steps"]) == {"fetch", "features", "train", "predict", "export"}
    assert out["steps"]["train"].startswith("trained (no model")
    counts = out["counts"]
    assert counts["events"] > 20 and counts["fetched"] > 100
    assert counts["converted_windows"] > 100 and counts["predicted_windows"] > 100
    assert set(out["seconds"]) >= {"fetch", "features", "train", "predict", "export", "report"}
    # Predictions are in the store, made by the model trained in this run ...
    versions = list_versions(store)
    assert len(versions) == 1 and out["predict"]["version"] == versions[0]
    ds = open_predictions(store)
    assert ds.attrs["model_id"] == Path(out["model_dir"]).name
    assert ds.sizes["trace"] == counts["predicted_windows"]
    # ... and exported: one row per predicted event, i.e. every event with stored windows.
    from seismoflow.examples import list_examples

    table = pd.read_csv(out["export"]["path"], keep_default_na=False)
    # one row per catalogued event: predicted, or listed with the reason it could not be
    predicted = table[table["reason"] == ""]
    assert len(predicted) == out["predict"]["n_events"]
    assert (table.loc[table["reason"] != "", "predicted_class"] == "").all()
    assert len(table) == out["export"]["events"]
    examples = list_examples(store)
    with_windows = set(examples.loc[examples["group"] == "events", "event_id"].astype(str))
    catalog = set(read_table(store, "catalog")["event_id"].astype(str))
    assert with_windows <= catalog and len(with_windows) > 0.9 * len(catalog)
    assert with_windows <= set(table["event_id"].astype(str))
    assert set(predicted["event_id"].astype(str)) <= with_windows
    assert {"earthquake", "explosion", "surface_event"} & set(table["predicted_class"])
    _check_artifacts(out["flow_run_id"], prefect_server)


def _check_artifacts(flow_run_id: str, prefect_server: str) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        assert str(client.api_url).rstrip("/") == prefect_server.rstrip("/")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    by_key = {str(a.key): a for a in artifacts}
    expected = ("reprocess-summary", "reprocess-stages", "reprocess-predicted-classes",
                "reprocess-per-class-metrics", "reprocess-coverage", "reprocess-plots")  # fmt: skip
    for key in expected:
        assert key in by_key, f"artifact {key} missing; have {sorted(by_key)}"
    summary = str(by_key["reprocess-summary"].data)
    assert "Seconds per stage" in summary and "predicted_windows" in summary
    assert "data:image/png;base64," in str(by_key["reprocess-plots"].data)


@pytest.mark.slow
def test_rerun_touches_nothing(
    first_run: tuple[Path, dict[str, Any]], service: FDSNService, prefect_server: str
) -> None:
    base, first = first_run
    store = str(base / "store.zarr")
    days_before = read_table(store, "channel_days")
    features_before = _feature_stamps(store)
    service.reset_log()
    # The same run in this process (the first run proved the command): the flow function
    # with the parameters `seismoflow run` builds from run_args and FAST_ENV.
    params = ReprocessParams(
        store=store, start=START, end=END, providers=[service.url],
        models_dir=str(base / "models"), train_options={"cnn": False, "tsne": False,
        "n_estimators": 40, "cv_seeds": [0]}, tsne=False,
        settings={"noise_per_channel_set": 8, "max_distance_deg": MAX_DISTANCE},
    )  # fmt: skip
    out = run_reprocess(params)
    assert service.count(service="dataselect") == 0
    assert out["counts"]["converted_channel_days"] == 0 and out["counts"]["converted_windows"] == 0
    assert out["steps"]["features"].startswith("skipped")
    assert "train" not in out["steps"] and out["model_dir"] == first["model_dir"]
    assert out["steps"]["predict"].startswith("skipped")
    assert list_versions(store) == [first["predict"]["version"]]
    days_after = read_table(store, "channel_days")
    pd.testing.assert_frame_equal(days_before, days_after)
    assert _feature_stamps(store) == features_before
    assert len(pd.read_csv(out["export"]["path"])) == first["export"]["events"]


def _feature_stamps(store: str) -> dict[str, str]:
    """``computed_at`` of each feature table (a rewrite changes it)."""
    import zarr
    from seismoflow.storage.location import open_root

    root = open_root(store, mode="r")
    features = root["features"]
    assert isinstance(features, zarr.Group)
    stamps = {name: str(node.attrs.get("computed_at")) for name, node in features.groups()}
    assert stamps, f"no feature tables in {store}"
    return stamps
