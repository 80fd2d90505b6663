"""Event-window planning and cutting around the origin or the predicted P arrival."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.signal import butter, sosfiltfilt
from seismoflow.storage.documents import run_documents
from seismoflow.storage.events import events_group
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import EventWindowLayout, Flag

from seismoflow.archive.ingest import (
    _specs,
    cut_batch,
    ingest_batch,
    plan_ingest,
    prepare_store,
    prepare_windows,
    record_continuous,
)
from seismoflow.archive.metadata import MetadataIndex
from seismoflow.archive.windows import p_travel_time_s, plan_windows
from seismoflow.settings import Settings
from seismoflow.times import NAT, NS_PER_S, to_ns
from tests.conftest import link_sds

ORIGIN = to_ns("2021-06-01T12:00:00")


def _catalog() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "event_id": "smi:test/1",
                "origin_time_ns": ORIGIN,
                "latitude": 46.0,
                "longitude": -122.0,
                "depth_km": 10.0,
                "magnitude": 2.5,
                "event_type": "earthquake",
            }
        ]
    )


def _days(*channels: str) -> pd.DataFrame:
    day = (ORIGIN // (86400 * NS_PER_S)) * 86400 * NS_PER_S
    return pd.DataFrame(
        [
            {
                "channel": c,
                "day_ns": day,
                "n_samples": 8_640_000,
                "sampling_rate": 100.0,
                "first_ns": day,
                "last_ns": day + 86399 * NS_PER_S,
            }
            for c in channels
        ]
    )


def _metadata() -> MetadataIndex:
    return MetadataIndex(
        pd.DataFrame(
            [
                {
                    "network": "XX",
                    "station": "NEAR",
                    "location": "",
                    "channel": "",
                    "start_ns": NAT,
                    "end_ns": NAT,
                    "latitude": 46.5,
                    "longitude": -122.0,
                    "elevation_m": 100.0,
                    "sampling_rate": np.nan,
                }
            ]
        )
    )


def test_channels_group_into_three_component_traces() -> None:
    layout = EventWindowLayout(50.0, 30.0, 60.0, "origin")
    specs = plan_windows(
        _catalog(),
        _days(
            "XX.NEAR..HHZ",
            "XX.NEAR..HH1",
            "XX.NEAR..HH2",
            "XX.NEAR..LHZ",
            "XX.FAR..EHZ",
            "XX.NEAR..HDF",
        ),
        _metadata(),
        layout,
    )
    by_key = {s.trace_key: s for s in specs}
    near = by_key["smi:test/1|XX.NEAR..HH?"]
    assert near.channels == "HHZ,HH1,HH2" and not near.flags & Flag.MISSING_COMPONENTS
    assert near.window_start == ORIGIN - 30 * NS_PER_S
    assert abs(near.distance_deg - 0.5) < 1e-6
    far = by_key["smi:test/1|XX.FAR..EH?"]
    assert far.flags & Flag.MISSING_COMPONENTS and far.flags & Flag.NO_COORDINATES
    assert np.isnan(far.distance_deg)
    assert "smi:test/1|XX.NEAR..HD?" not in by_key  # no Z/N/E orientation code
    assert layout.n_samples == 4500


def test_p_reference_uses_taup() -> None:
    layout = EventWindowLayout(50.0, 10.0, 60.0, "p")
    specs = plan_windows(_catalog(), _days("XX.NEAR..HHZ", "XX.FAR..EHZ"), _metadata(), layout)
    near = next(s for s in specs if s.station == "NEAR")
    tt = p_travel_time_s(0.5, 10.0)
    assert tt is not None and 5 < tt < 15  # ~55 km: a P wave takes ~8-9 s
    assert near.reference_time == ORIGIN + round(tt * NS_PER_S)
    assert near.window_start == near.reference_time - 10 * NS_PER_S
    far = next(s for s in specs if s.station == "FAR")  # no coordinates: falls back to origin
    assert far.reference_time == ORIGIN and far.flags & Flag.NO_COORDINATES


@pytest.mark.data
@pytest.mark.slow
def test_real_windows_around_predicted_p(archive: Path, tmp_path: Path) -> None:
    sds = link_sds(archive, ("2022",), tmp_path / "sds")
    location = str(tmp_path / "store.zarr")
    settings = Settings(
        store=location,
        window_reference="p",
        window_sampling_rate=40.0,
        window_pre_s=20.0,
        window_post_s=40.0,
    )
    plan = plan_ingest(sds, archive / "stations.xml.gz", archive / "events.xml")
    plan = prepare_store(location, plan, settings)
    record_continuous(location, ingest_batch(location, plan.units, settings))
    pending = prepare_windows(location, settings)
    # The run keeps the specs it appended, as the store holds them; the cuts take them there.
    run = run_documents(location)
    kept = run.specs("events", pending) if run is not None else None
    stored = _specs(events_group(open_root(location, "r")), pending)
    assert kept is not None and len(kept) == len(pending)
    assert pd.DataFrame([k.as_row() for k in kept]).equals(
        pd.DataFrame([s.as_row() for s in stored])
    )
    assert run is not None and run.specs("events", [len(pending) + 5]) is None
    counts = cut_batch(location, pending, settings)
    assert counts["written"] == len(pending) > 50
    ds = xr.open_zarr(location, group="events", consolidated=False)  # not finalized
    assert ds.sizes["sample"] == 2400 and ds.attrs["reference"] == "p"
    known = np.isfinite(ds.distance_deg.values)
    lag = (ds.reference_time.values - ds.origin_time.values) / np.timedelta64(1, "s")
    assert (lag[known] > 0).all() and (lag[~known] == 0).all()
    # Regional distances: P arrives within a few minutes.
    assert lag[known].max() < 240
    # The P arrival sits 20 s into the window: energy after it exceeds energy before it.
    z = ds.waveform.values[known, 0, :]
    ok = ~np.isnan(z[:, 100:1600]).any(axis=1)  # 17.5 s before P to 20 s after
    assert ok.sum() >= 10
    sos = butter(4, [2.0, 8.0], btype="band", fs=40.0, output="sos")
    z = sosfiltfilt(sos, z[ok, 100:1600], axis=1)
    z = np.concatenate([np.zeros((z.shape[0], 100)), z], axis=1)
    before = np.abs(z[:, 100:700]).mean(axis=1)
    after = np.abs(z[:, 800:1600]).mean(axis=1)
    assert np.median(after / before) > 1.5
    # A second planning pass adds nothing.
    assert prepare_windows(location, settings) == []
