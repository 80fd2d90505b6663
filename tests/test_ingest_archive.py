"""The whole shared real archive through ``seismoflow ingest`` (a Prefect flow on the test
server), checked sample by sample against ObsPy's reading of the source."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import obspy
import obspy.clients.filesystem.sds
import pandas as pd
import pytest
import xarray as xr
from seismoflow.storage.continuous import ContinuousReader
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import Flag
from seismoflow.storage.tables import read_table

from seismoflow.ids import ChannelId
from seismoflow.times import NS_PER_S, to_ns
from tests.conftest import ingest, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.data]


def data_digest(store: Path) -> dict[str, str]:
    """sha256 of every chunk and metadata file of the waveform groups."""
    out = {}
    for group in ("continuous", "events"):
        for path in sorted((store / group).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(store))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_every_channel_day_matches_obspy(archive: Path, archive_store: tuple[Path, dict]) -> None:
    store, summary = archive_store
    assert summary["units"] == 2517 and summary.get("units_failed", 0) == 0
    reader = ContinuousReader(open_root(str(store), "r"))
    n_traces = n_samples = 0
    for path in sorted((archive / "sds").rglob("*.D.*")):
        for tr in obspy.read(str(path)):
            s = tr.stats
            ch = ChannelId(s.network, s.station, s.location, s.channel)
            start, end = to_ns(s.starttime), to_ns(s.endtime)
            pieces = reader.pieces(ch, start, end)
            got = np.concatenate([p.data for p in pieces]) if pieces else np.array([])
            assert np.array_equal(got, tr.data), f"{path.name} {tr.id} {s.starttime}"
            assert pieces[0].start_ns == start, f"{path.name} {tr.id} start time"
            assert all(p.sampling_rate == s.sampling_rate for p in pieces)
            n_traces += 1
            n_samples += int(s.npts)
    assert n_samples == 49_264_641 and n_traces >= 2682 - 9  # README: 2713 traces in day files


def test_info_counts(archive: Path, archive_store: tuple[Path, dict], prefect_server: str) -> None:
    store, _ = archive_store
    info = json.loads(run_cli(["info", "--store", str(store), "--json"], prefect_server).stdout)
    labels = pd.read_csv(archive / "labels.csv", dtype=str, keep_default_na=False)
    assert info["n_events"] == len(labels) == 214
    assert info["n_stations"] == 454 and info["n_channels"] == 971
    assert info["n_samples"] == 49_264_641
    assert info["n_quarantined"] == 0  # the archive's defects are flagged, not rejected
    cat = obspy.read_events(str(archive / "events.xml"))
    types: dict[str, int] = {}
    for ev in cat:
        types[str(ev.event_type)] = types.get(str(ev.event_type), 0) + 1
    assert info["events_per_type"] == types
    windows = xr.open_zarr(str(store), group="events")
    assert info["n_traces"] == windows.sizes["trace"] > 0


def _day_flags(store: Path) -> pd.DataFrame:
    days = read_table(str(store), "channel_days")
    days["flags"] = days["flags"].astype(int)
    return days


def test_known_defects_are_flagged(archive_store: tuple[Path, dict]) -> None:
    """Every defect listed in the archive README shows up as a flag."""
    days = _day_flags(archive_store[0])

    def flagged(channel: str, flag: Flag) -> bool:
        rows = days[days.channel == channel]
        return bool(len(rows)) and bool((rows["flags"] & int(flag)).any())

    for ch in ("UW.VFP..EHZ", "UW.YACT..HHE"):
        assert flagged(ch, Flag.FLAT), ch
    for ch in ("MN.BNI..BHZ", "MN.TUE..BHN", "OX.AGOR..HHE"):
        assert flagged(ch, Flag.RATE_MISMATCH_METADATA), ch
    for ch in ("O2.WILZ..EHZ", "GG.LH01.10.EHE", "ZS.D112..HHN", "CC.CARB..BHZ"):
        assert flagged(ch, Flag.NO_METADATA), ch
    assert not flagged("CI.CCA..BHN", Flag.NO_METADATA)
    # README: 9 day files hold windows that are not sample-aligned with each other.
    assert int(((days["flags"] & int(Flag.TIMING_SHIFT)) > 0).sum()) == 9
    assert int(((days["flags"] & int(Flag.GAPS)) > 0).sum()) >= 9
    # Real clipping at a 12-bit digitizer's limits (2047 / -2048 counts), and nothing else.
    clipped = days[(days["flags"] & int(Flag.CLIPPED)) > 0]
    # (UW.RCS's clipped window shares its day with unclipped ones, below clip_fraction.)
    assert set(clipped.channel) <= {"UW.JCW..EHZ", "UW.RCS..EHZ"}
    assert (clipped.channel == "UW.JCW..EHZ").sum() == 2
    flat = days[(days["flags"] & int(Flag.FLAT)) > 0]
    assert set(flat.channel) == {"UW.VFP..EHZ", "UW.YACT..HHE"} and len(flat) == 4


def test_event_windows(archive: Path, archive_store: tuple[Path, dict]) -> None:
    store, summary = archive_store
    ds = xr.open_zarr(str(store), group="events")
    assert ds.waveform.dims == ("trace", "component", "sample")
    assert ds.sizes["sample"] == round((40 + 90) * 100) and ds.attrs["sampling_rate"] == 100.0
    assert not pd.isna(ds.written_at.values).any()
    labels = pd.read_csv(archive / "labels.csv", dtype=str, keep_default_na=False)
    assert set(ds.event_id.values.astype(object)) <= set(labels.event_id)
    assert len(set(ds.event_id.values.astype(object))) >= 200
    keys = ds.trace_key.values.astype(object)
    assert len(set(keys)) == len(keys)  # no duplicates
    # Coordinates: where the station is known, distance and coordinates are finite.
    known = ~np.isnan(ds.station_latitude.values)
    assert known.sum() > 0.8 * ds.sizes["trace"]
    assert np.isfinite(ds.distance_deg.values[known]).all()
    # Window start = origin - pre exactly; labels carried over from the catalogue.
    assert (ds.window_start.values == ds.origin_time.values - np.timedelta64(40, "s")).all()
    types = dict(
        zip(ds.event_id.values.astype(object), ds.event_type.values.astype(object), strict=True)
    )
    assert types["smi:local/pnsn/uw61377746"] == "earthquake"
    # Traces lacking components are flagged; a missing component is NaN, never zeros.
    flags = ds.flags.values.astype(int)
    assert ((flags & Flag.MISSING_COMPONENTS) > 0).any()
    wave = ds.waveform.values
    codes = np.array([str(c).split(",") for c in ds.channels.values])
    missing = codes == ""
    assert (((flags & Flag.MISSING_COMPONENTS) > 0) == missing.any(axis=1)).all()
    assert np.isnan(wave[missing]).all()
    assert not (wave == 0).all(axis=-1).any()


def test_window_matches_the_native_samples(archive_store: tuple[Path, dict]) -> None:
    """A 100 Hz vertical resampled onto the 100 Hz window grid is the recorded trace."""
    store, _ = archive_store
    ds = xr.open_zarr(str(store), group="events")
    idx = int(
        np.flatnonzero(
            (ds.source_sampling_rate.values == 100.0)
            & ((ds.flags.values.astype(int) & Flag.PARTIAL_WINDOW) == 0)
        )[0]
    )
    row = ds.isel(trace=idx)
    ch = ChannelId(
        str(row.network.values),
        str(row.station.values),
        str(row.location.values),
        str(row.channels.values).split(",")[0],
    )
    start = int(row.window_start.values.astype("datetime64[ns]").astype(np.int64))
    pieces = ContinuousReader(open_root(str(store), "r")).pieces(
        ch, start - 5 * NS_PER_S, start + 140 * NS_PER_S
    )
    native = obspy.Trace(
        pieces[0].data.astype(float),
        header={"sampling_rate": 100.0, "starttime": obspy.UTCDateTime(ns=pieces[0].start_ns)},
    )
    native.interpolate(
        100.0, method="lanczos", a=12, starttime=obspy.UTCDateTime(ns=start), npts=13000
    )
    z = row.waveform.values[0]
    assert np.corrcoef(z, native.data)[0, 1] > 0.999


def test_rerun_changes_nothing(
    archive: Path, archive_store: tuple[Path, dict], prefect_server: str
) -> None:
    store, _ = archive_store
    before = data_digest(store)
    tables = {n: read_table(str(store), n) for n in ("catalog", "channel_days", "quarantine")}
    summary = ingest(archive, store, prefect_server)
    assert summary["units_skipped"] == 2517 and summary.get("units_written", 0) == 0
    assert summary["windows"].get("written", 0) == 0
    assert data_digest(store) == before
    for name, table in tables.items():
        pd.testing.assert_frame_equal(read_table(str(store), name), table)


def test_export_is_sample_identical(
    archive: Path, archive_store: tuple[Path, dict], prefect_server: str, tmp_path: Path
) -> None:
    store, _ = archive_store
    out = tmp_path / "cca.mseed"
    run_cli(
        [
            "export",
            "waveforms",
            "--store",
            str(store),
            "--station",
            "CI.CCA",
            "--start",
            "2022-01-02T00:00:00",
            "--end",
            "2022-01-03T00:00:00",
            "--out",
            str(out),
        ],
        prefect_server,
    )
    source = obspy.read(str(archive / "sds/2022/CI/CCA/BHN.D/CI.CCA..BHN.D.2022.002"))
    exported = obspy.read(str(out))
    assert len(exported) == len(source) == 1
    assert np.array_equal(exported[0].data, source[0].data)
    assert exported[0].stats.starttime == source[0].stats.starttime
    assert exported[0].id == source[0].id and exported[0].stats.sampling_rate == 40.0

    event = "smi:local/esec/167"  # a surface event with 3-component stations
    out = tmp_path / "event.mseed"
    run_cli(
        ["export", "waveforms", "--store", str(store), "--event", event, "--out", str(out)],
        prefect_server,
    )
    exported = obspy.read(str(out))
    assert len(exported) >= 3
    client = obspy.clients.filesystem.sds.Client(str(archive / "sds"))
    for tr in exported:
        s = tr.stats
        src = client.get_waveforms(
            s.network, s.station, s.location, s.channel, s.starttime, s.endtime
        )
        assert len(src) == 1, tr.id
        src.trim(s.starttime, s.endtime, nearest_sample=False)
        assert np.array_equal(src[0].data, tr.data), tr.id
        assert src[0].stats.starttime == s.starttime


def test_store_opens_as_datatree(archive_store: tuple[Path, dict]) -> None:
    store, _ = archive_store
    tree = xr.open_datatree(str(store), engine="zarr")
    assert "continuous" in tree.children and "events" in tree.children
    cca = tree["continuous"].to_dataset()["CI.CCA..BHN@40hz"]
    day = cca.sel(day=np.datetime64("2022-01-02"))
    days = read_table(str(store), "channel_days").set_index(["channel", "day_ns"])
    row = days.loc[("CI.CCA..BHN", int(np.datetime64("2022-01-02", "ns").astype("int64")))]
    assert int(row["n_samples"]) == 3_456_000
    runs = json.loads(row["runs"])
    assert sum(b - a for a, b in runs) == 3_456_000
    assert int(np.count_nonzero(day.values[runs[0][0] : runs[0][1]])) > 3_000_000
    assert len(read_table(str(store), "catalog")) == 214
    assert os.path.isfile(store / "zarr.json")


def test_codec_by_coverage_and_exact_extents(archive_store: tuple[Path, dict]) -> None:
    """Day-long records get pcodec, event snippets delta-zstd; ``first_ns``..``last_ns`` of
    every channel-day holds exactly its recorded samples, off-grid segments included."""
    store, _ = archive_store
    root = open_root(str(store), "r")
    assert root["continuous/CI.CCA..BHN@40hz"].attrs["codec"] == "pcodec"  # type: ignore[index]
    assert root["continuous/CN.WSLR..HHE@100hz"].attrs["codec"] == "delta-zstd"  # type: ignore[index]
    days = _day_flags(store)
    reader = ContinuousReader(root)
    for row in days[(days["flags"] & int(Flag.TIMING_SHIFT | Flag.GAPS)) > 0].itertuples():
        pieces = reader.pieces(ChannelId.parse(row.channel), int(row.first_ns), int(row.last_ns))
        assert sum(p.data.size for p in pieces) == int(row.n_samples), row.channel
