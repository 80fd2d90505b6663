"""The Python API a notebook uses: ``seismoflow.ingest`` ... ``seismoflow.open_store``, the
same functions the command line calls."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import numpy as np
import obspy
import pytest

import seismoflow
from seismoflow import api
from seismoflow.errors import BadInputError, ModelError, StoreError
from seismoflow.settings import Settings

ENTRY_POINTS = ("ingest", "fetch", "features", "train", "predict", "open_store")
# One day of the real archive with a continuous record of five three-component stations.
DAY = "2020-03-28"
# Two days with catalogued events recorded by several stations (event windows).
EVENT_DAYS = ("2022-02-02T00:00:00", "2022-02-04T00:00:00")


def test_entry_points_stay_functions_whatever_is_imported() -> None:
    """No sub-module shadows an entry point: import every module, then look again."""
    for info in pkgutil.walk_packages(seismoflow.__path__, "seismoflow."):
        importlib.import_module(info.name)
    for name in ("storage", "tasks", "flows", "deployments"):
        importlib.import_module(f"seismoflow.{name}")
    for name in ENTRY_POINTS:
        assert getattr(seismoflow, name) is getattr(api, name), name
        assert callable(getattr(seismoflow, name))
    assert set(ENTRY_POINTS) <= set(seismoflow.__all__)


def test_bad_arguments_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="sds"):
        seismoflow.ingest(tmp_path / "missing", str(tmp_path / "s.zarr"))
    with pytest.raises(BadInputError, match="start"):
        seismoflow.ingest(tmp_path, str(tmp_path / "s.zarr"), start="not a time")
    with pytest.raises(StoreError, match="no seismoflow store"):
        seismoflow.open_store(tmp_path / "nothing.zarr")
    with pytest.raises(ModelError, match="not a model directory"):
        seismoflow.predict(str(tmp_path / "s.zarr"), tmp_path)


@pytest.mark.slow
@pytest.mark.data
def test_notebook_session(archive: Path, prefect_server: str, tmp_path: Path) -> None:
    path = str(tmp_path / "day.zarr")
    settings = Settings(store=path, max_workers=2)
    written = 0
    for start, end in ((f"{DAY}T00:00:00", f"{DAY}T23:59:59.999"), EVENT_DAYS):
        summary = seismoflow.ingest(
            archive / "sds", stations=archive / "stations.xml.gz", events=archive / "events.xml",
            start=start, end=end, settings=settings,
        )  # fmt: skip
        written += summary["samples_written"]
    assert summary["windows"]["written"] > 0  # the second range holds catalogued events

    store = seismoflow.open_store(path)
    assert store.info()["n_samples"] == written
    assert len(store.catalog) == summary["events"]
    assert set(store.channels.columns) >= {"network", "station", "channel", "latitude"}

    t0, t1 = obspy.UTCDateTime(f"{DAY}T12:00:00"), obspy.UTCDateTime(f"{DAY}T15:00:00")
    got = store.get_waveforms("GG", "LH0?", "10", "EH*", t0, t1)
    files = sorted((archive / "sds" / "2020" / "GG").glob("LH0?/EH?.D/GG.LH0?.10.EH?.D.2020.088"))
    expected = obspy.Stream()
    for f in files:
        expected += obspy.read(str(f))
    expected.trim(t0, t1, nearest_sample=False)
    assert len(files) == 12 and len(got) >= 12
    for tr in expected.merge(method=0):
        mine = got.select(id=tr.id).merge(method=0)
        assert len(mine) == 1, tr.id
        assert mine[0].stats.starttime == tr.stats.starttime, tr.id
        assert np.array_equal(mine[0].data, tr.data), tr.id  # sample-identical to ObsPy
    assert not store.get_waveforms("XX", "*", "*", "*", t0, t1)

    with pytest.raises(StoreError, match="seismoflow features --store"):
        seismoflow.train(path, tmp_path / "models", settings=settings)
    features = seismoflow.features(path, settings=settings)
    assert features["features"]["noise"]["traces"] > 0
    assert store.windows("noise").sizes["trace"] == features["features"]["noise"]["traces"]
    assert store.windows("events").sizes["trace"] == features["features"]["events"]["traces"]


# --- the read API (seismoflow.store) against ObsPy reading the same miniSEED files ---------


def _obspy(small_sds: Path, pattern: str, t0: obspy.UTCDateTime, t1: obspy.UTCDateTime):
    """ObsPy's reading of the day files matching ``pattern``, trimmed to ``[t0, t1]``."""
    st = obspy.Stream()
    for f in sorted(small_sds.rglob(pattern)):
        st += obspy.read(str(f))
    return st.trim(t0, t1, nearest_sample=False)


@pytest.mark.slow
@pytest.mark.data
def test_get_waveforms_equals_obspy(small_store: tuple[Path, dict], small_sds: Path) -> None:
    """Wildcards as in ObsPy's clients; every stretch sample-identical to ObsPy's reading,
    at the same start time (to 1 us), gaps and off-grid segments included."""
    store = seismoflow.open_store(str(small_store[0]))
    cases = [
        (("UW", "*", "", "EH?"), "UW.*..EH?.D.2020.103", "2020-04-12T19:00", "2020-04-12T23:30"),
        (("*", "R?S", "*", "*"), "*.R?S.*.D.2021.062", "2021-03-03T18:00", "2021-03-03T23:00"),
        # a 20 Hz record over midnight, read across it: one trace, as ObsPy's merge gives
        (("GR", "FUR", "*", "BH*"), "GR.FUR..BHN.D.2015.36?", "2015-12-27T23:00", "2015-12-28"),
    ]
    for codes, pattern, start, end in cases:
        t0, t1 = obspy.UTCDateTime(start), obspy.UTCDateTime(end)
        expected = _obspy(small_sds, pattern, t0, t1).merge(method=-1)
        got = store.get_waveforms(*codes, t0, t1)
        assert len(expected) >= 1 and len(got) == len(expected), (codes, got, expected)
        key = lambda tr: (tr.id, tr.stats.starttime.ns)  # noqa: E731
        for mine, tr in zip(sorted(got, key=key), sorted(expected, key=key), strict=True):
            assert mine.id == tr.id
            assert abs(mine.stats.starttime.ns - tr.stats.starttime.ns) <= 1_000, tr.id
            assert mine.stats.sampling_rate == tr.stats.sampling_rate
            assert mine.data.dtype == np.int32 and np.array_equal(mine.data, tr.data), tr.id
    t0, t1 = obspy.UTCDateTime("2020-04-12"), obspy.UTCDateTime("2020-04-13")
    assert not store.get_waveforms("XX", "*", "*", "*", t0, t1)
    assert not store.get_waveforms("UW", "AUG", "", "EHZ", t0 - 86400 * 30, t0 - 86400)
    with pytest.raises(BadInputError, match="after starttime"):
        store.get_waveforms("*", "*", "*", "*", t1, t0)


def _expected_grid(st: obspy.Stream, anchor: obspy.UTCDateTime, n: int, first: int) -> np.ndarray:
    """ObsPy's samples put on the grid ``anchor + k / rate`` (k from ``first``), each trace
    at its nearest index; NaN elsewhere."""
    out = np.full(n, np.nan)
    for tr in st:
        lo = round((tr.stats.starttime - anchor) * tr.stats.sampling_rate) - first
        out[lo : lo + tr.stats.npts] = tr.data
    return out


@pytest.mark.slow
@pytest.mark.data
def test_dataarray_is_obspy_on_a_time_axis(small_store: tuple[Path, dict], small_sds: Path) -> None:
    """A time-indexed view: datetime64[ns] axis at the channel's rate, stored counts at
    their exact times, NaN in gaps; the off-grid second segment of UW.AUG..EHZ (133 us
    off) is moved to the nearest sample, dropped or refused as asked."""
    store = seismoflow.open_store(str(small_store[0]))

    # Across midnight, on one grid: every sample at its exact time.
    t0, t1 = obspy.UTCDateTime("2015-12-27T23:59:00"), obspy.UTCDateTime("2015-12-28T00:01")
    da = store.get_dataarray("GR.FUR..BHN", t0, t1)
    st = _obspy(small_sds, "GR.FUR..BHN.D.2015.36?", t0, t1).merge(method=-1)
    assert len(st) == 1 and da.dtype == np.float64 and da.time.dtype == "datetime64[ns]"
    assert da.attrs["sampling_rate"] == 20.0 and da.attrs["shifted_pieces"] == 0
    assert da.time.values[0] == np.datetime64(st[0].stats.starttime.ns, "ns")
    assert np.all(np.diff(da.time.values) == np.timedelta64(50_000_000, "ns"))
    # 00:00:11.67 is the record's end: the rest of the range is NaN
    assert np.array_equal(da.values[: st[0].stats.npts], st[0].data)
    assert np.isnan(da.values[st[0].stats.npts :]).all() and da.time.values[-1] <= np.datetime64(
        t1.ns, "ns"
    )

    # A day with two event records, the second off the first's grid.
    t0, t1 = obspy.UTCDateTime("2020-04-12T19:30"), obspy.UTCDateTime("2020-04-12T23:00")
    st = _obspy(small_sds, "UW.AUG..EHZ.D.2020.103", t0, t1)
    assert len(st) == 2
    da = store.get_dataarray("UW.AUG..EHZ", t0, t1)
    anchor = st[0].stats.starttime
    first = -int((anchor - t0) * 100)  # the axis starts at the first grid time >= t0
    assert da.time.values[-first] == np.datetime64(anchor.ns, "ns")
    assert da.time.values[0] >= np.datetime64(t0.ns, "ns")
    expected = _expected_grid(st, anchor, da.size, first)
    assert np.array_equal(np.isnan(da.values), np.isnan(expected))
    assert np.array_equal(da.values[~np.isnan(da.values)], expected[~np.isnan(expected)])
    assert int((~np.isnan(da.values)).sum()) == sum(tr.stats.npts for tr in st)
    assert da.attrs["shifted_pieces"] == 1 and 100_000 < da.attrs["max_shift_ns"] < 5_000_000

    dropped = store.get_dataarray("UW.AUG..EHZ", t0, t1, off_grid="drop")
    assert int((~np.isnan(dropped.values)).sum()) == st[0].stats.npts
    with pytest.raises(BadInputError, match="off the time axis"):
        store.get_dataarray("UW.AUG..EHZ", t0, t1, off_grid="raise")

    # No samples in the range: NaN at the channel's rate from starttime.
    empty = store.get_dataarray("UW.AUG..EHZ", "2020-04-12T01:00", "2020-04-12T01:00:01")
    assert empty.size == 101 and np.isnan(empty.values).all()
    with pytest.raises(BadInputError, match="no stored samples"):
        store.get_dataarray("XX.NONE..HHZ", t0, t1)


@pytest.mark.slow
@pytest.mark.data
def test_events_and_inventory_from_the_stored_documents(
    small_store: tuple[Path, dict], archive: Path
) -> None:
    """``get_events`` (ObsPy Catalog) holds the catalogue table's events, parsed from the kept
    QuakeML; ``inventory`` is the kept StationXML, as ObsPy reads the source file."""
    store = seismoflow.open_store(str(small_store[0]))
    table = store.catalog
    events = store.get_events()
    assert len(events) == len(table) > 0
    assert {str(e.resource_id.id) for e in events} == set(table["event_id"])
    source = {str(e.resource_id.id): e for e in obspy.read_events(str(archive / "events.xml"))}
    for event in events:
        assert event == source[str(event.resource_id.id)]

    inventory = store.inventory
    expected = obspy.read_inventory(str(archive / "stations.xml.gz"))
    assert inventory.get_contents()["channels"] == expected.get_contents()["channels"]
    assert set(store.channels["network"]) <= {n.code for n in inventory}
    fur = store.get_stations("GR", "FUR", "*", "BH?")
    assert [c.code for c in fur[0][0]] == [
        c.code for c in expected.select("GR", "FUR", channel="BH?")[0][0]
    ]
    assert fur[0][0].channels[0].response is not None


@pytest.mark.parametrize("rate", [100.0, 120.0, 40.0, 20.0, 0.1, 1 / 3])
def test_time_axis_arithmetic_is_exact(rate: float) -> None:
    """The DataArray's axis: sample ``k`` at ``round(k * 1e9 / rate)`` ns, exactly, over a
    decade of samples (no float accumulation), and nearest/ceil/floor indices agree."""
    from fractions import Fraction

    from seismoflow.store import _ceil_index, _floor_index, _nearest_index, _offsets_ns
    from seismoflow.times import rate_fraction

    fr = rate_fraction(rate)
    k = np.array([0, 1, 7, 12_345, 10 * 365 * 86_400 * int(np.ceil(rate)), -3])
    exact = [round(Fraction(int(i) * 1_000_000_000) / fr) for i in k]
    assert _offsets_ns(k, rate).tolist() == exact
    for i, t in zip(k.tolist(), exact, strict=True):
        assert _nearest_index(t, rate) == (i, 0)
        assert _nearest_index(t + 1_000, rate) == (i, 1_000)
        # times are rounded to whole ns (120 Hz): bounds allow 1 us, as get_dataarray does
        assert _ceil_index(t - 1_000, rate) == i == _floor_index(t + 1_000, rate)
        assert _ceil_index(t + 1_000, rate) == i + 1 and _floor_index(t - 1_000, rate) == i - 1
