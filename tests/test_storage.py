"""Store schema, region writes, readers and tables (seeded synthetic counts)."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from seismoflow.storage.continuous import (
    ChannelArray,
    DayLedger,
    built_from,
    ledger_frame,
    open_channel,
    read_pieces,
)
from seismoflow.storage.events import TraceWriter, materialize_window_ledger, pending_traces
from seismoflow.storage.fsio import filesystem, read_bytes, read_many, write_bytes
from seismoflow.storage.location import consolidate, open_root, store_lock
from seismoflow.storage.schema import (
    EVENTS,
    NOISE_GROUP,
    ContinuousEncoding,
    ContinuousLayout,
    EventWindowLayout,
    SchemaError,
    append_traces,
    choose_codec,
    choose_encoding,
    create_continuous,
    create_events,
    day_index,
)
from seismoflow.storage.tables import (
    append_rows,
    compact_table,
    part_names,
    read_source_document,
    read_table,
    write_source_document,
    write_table,
)

from seismoflow.ids import ChannelId
from seismoflow.times import NAT, NS_PER_DAY, NS_PER_S, to_ns

CH = ChannelId("XX", "TEST", "00", "HHZ")
DAY = to_ns("2021-03-04")
RNG = np.random.default_rng(7)
SRC = {"path": "x.mseed", "size": 1, "mtime_ns": 1}


def _write(
    location: str, codec: str = "pcodec", fresh: bool = True
) -> tuple[ChannelArray, np.ndarray]:
    root = open_root(location)
    layout = ContinuousLayout(CH, 100.0, 360_000, codec)
    channel = ChannelArray(create_continuous(root, layout), layout)
    data = RNG.integers(-(2**30), 2**30, 500_000).astype(np.int32)
    mask = np.ones(data.size, bool)
    mask[1000:1100] = False  # a gap
    record = channel.write_day(
        DAY,
        t0_ns=DAY + 2_500_000,
        offset=350_000,
        data=data,
        mask=mask,
        flags=1,
        segments=[
            {
                "start_ns": DAY + 2_500_000 + 3500 * NS_PER_S,
                "index": 350_000,
                "npts": 1000,
                "residual_ns": 0,
                "source": "x",
            },
            {
                "start_ns": DAY + 2_500_000 + 3511 * NS_PER_S,
                "index": 351_100,
                "npts": 498_900,
                "residual_ns": 0,
                "source": "x",
            },
        ],
        quarantine=[],
        sources=[SRC],
        fresh=fresh,
    )
    append_rows(location, "channel_days", ledger_frame([record]))
    return channel, data


@pytest.mark.parametrize("codec", ["pcodec", "delta-zstd"])
def test_lossless_round_trip_and_xarray_view(tmp_path: Path, codec: str) -> None:
    location = str(tmp_path / "s.zarr")
    channel, data = _write(location, codec)
    rec = DayLedger(location).get(CH.nslc, DAY)
    assert rec is not None and rec.runs == [(350_000, 351_000), (351_100, 850_000)]
    assert built_from(rec.ingested_at_ns, rec.state, [SRC]) and built_from(
        rec.ingested_at_ns, rec.state, []
    )
    assert not built_from(rec.ingested_at_ns, rec.state, [{**SRC, "mtime_ns": 2}])
    ds = xr.open_zarr(location, group="continuous", consolidated=False)
    arr = ds[f"{CH.nslc}@100hz"]
    assert arr.dims == ("day", "sample_100hz")
    row = arr.sel(day=np.datetime64("2021-03-04")).values[350_000:850_000]
    assert row.dtype == np.int32
    assert np.array_equal(row[:1000], data[:1000]) and not row[1000:1100].any()
    assert np.array_equal(row[1100:], data[1100:])
    assert rec.starttime_ns == DAY + 2_500_000 and rec.n_samples == 499_900
    assert arr.attrs["sampling_rate"] == 100.0 and arr.attrs["codec"] == codec
    # one shard for the channel-day: the only object beside the array's document
    files = sorted(p.name for p in (Path(location) / channel.layout.path).iterdir())
    assert files == [f"c.{day_index(DAY)}.0", "zarr.json"]


def test_reader_splits_at_gaps_with_exact_times(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    _, data = _write(location)
    pieces = read_pieces(open_root(location, "r"), CH, DAY, DAY + 86400 * NS_PER_S)
    assert [p.data.size for p in pieces] == [1000, 498_900]
    assert pieces[0].start_ns == DAY + 2_500_000 + 3500 * NS_PER_S
    assert pieces[1].start_ns == DAY + 2_500_000 + 3511 * NS_PER_S
    assert np.array_equal(
        np.concatenate([p.data for p in pieces]), np.concatenate([data[:1000], data[1100:]])
    )


def test_misaligned_or_mistyped_writes_are_refused(tmp_path: Path) -> None:
    channel, _ = _write(str(tmp_path / "s.zarr"))
    ok = dict(t0_ns=DAY, offset=0, flags=0, segments=[], quarantine=[], sources=[SRC])
    with pytest.raises(SchemaError, match="int32"):
        channel.write_day(DAY, data=np.zeros(10, np.float64), mask=np.ones(10, bool), **ok)
    with pytest.raises(SchemaError, match="outside"):
        channel.write_day(
            DAY, data=np.zeros(10, np.int32), mask=np.ones(10, bool), **{**ok, "offset": 8_639_995}
        )
    with pytest.raises(SchemaError, match="UTC midnight"):
        channel.write_day(DAY + 5, data=np.zeros(1, np.int32), mask=np.ones(1, bool), **ok)


def test_rewrite_removes_stale_chunks(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    channel, _ = _write(location)
    small = np.arange(1, 11, dtype=np.int32)
    record = channel.write_day(
        DAY,
        t0_ns=DAY,
        offset=0,
        data=small,
        mask=np.ones(10, bool),
        flags=0,
        segments=[],
        quarantine=[],
        sources=[{**SRC, "size": 2}],
        fresh=False,
    )
    row = channel.read(DAY, 0, channel.samples_per_day)
    assert np.array_equal(row[:10], small) and not row[10:].any()
    assert record.n_samples == 10 and record.runs == [(0, 10)]


def test_rates_get_their_own_arrays_and_window_settings_conflict(tmp_path: Path) -> None:
    root = open_root(str(tmp_path / "s.zarr"))
    # another rate of the same channel is another array
    a = create_continuous(root, ContinuousLayout(CH, 100.0, 360_000))
    b = create_continuous(root, ContinuousLayout(CH, 50.0, 360_000))
    assert a.path == "continuous/XX.TEST.00.HHZ@100hz"
    assert b.path == "continuous/XX.TEST.00.HHZ@50hz"
    create_events(root, EventWindowLayout(100.0, 30.0, 90.0, "origin"))
    with pytest.raises(SchemaError, match="same window settings"):
        create_events(root, EventWindowLayout(50.0, 30.0, 90.0, "origin"))


def trace_rows(n: int) -> list[dict[str, object]]:
    """Coordinate rows of ``n`` traces of one event."""
    return [
        {
            "trace_key": f"k{i}",
            "event_id": "smi:x/1",
            "network": "XX",
            "station": "A",
            "location": "",
            "channel_set": "HH?",
            "channels": "HHZ,,",
            "station_latitude": 1.0,
            "station_longitude": 2.0,
            "station_elevation": 3.0,
            "distance_deg": 0.5,
            "origin_time": DAY,
            "reference_time": DAY,
            "window_start": DAY - 40 * NS_PER_S,
            "event_type": "earthquake",
            "magnitude": 2.0,
            "source_sampling_rate": 100.0,
            "flags": 0,
            "written_at": NAT,
        }
        for i in range(n)
    ]


def test_event_windows_have_exact_length(tmp_path: Path) -> None:
    root = open_root(str(tmp_path / "s.zarr"))
    layout = EventWindowLayout(40.0, 40.0, 90.0, "origin")
    group = create_events(root, layout)
    assert group["waveform"].shape == (0, 3, 5200)
    rows = trace_rows(3)
    assert append_traces(group, rows) == range(0, 3)
    assert group["waveform"].shape == (3, 3, 5200)
    ds = xr.open_zarr(str(tmp_path / "s.zarr"), group="events", consolidated=False)
    assert list(ds.component.values) == ["Z", "N", "E"]
    assert np.isnan(ds.waveform.values).all()
    assert ds.time.values[0] == -40.0


def test_window_ledger_and_materialized_flags(tmp_path: Path) -> None:
    """Traces count as written once the ledger has their row; finalizing copies the ledger
    into the group's ``flags`` and ``written_at``."""
    location = str(tmp_path / "s.zarr")
    layout = EventWindowLayout(40.0, 40.0, 90.0, "origin")
    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal((3, 5200)).astype(np.float32) for _ in range(2)]
    blocks[1][1:] = np.nan
    root = open_root(location)
    group = create_events(root, layout)
    append_traces(group, trace_rows(3))
    writer = TraceWriter(group)
    for i, block in enumerate(blocks):
        writer.write(i, block, [5, 0][i])
    assert pending_traces(location, group) == [0, 1, 2]  # not recorded yet
    writer.flush(location)
    assert pending_traces(location, group) == [2]
    materialize_window_ledger(location, root)
    ds = xr.open_zarr(location, group="events", consolidated=False)
    np.testing.assert_array_equal(ds.waveform.values[:2], np.stack(blocks))
    assert np.isnan(ds.waveform.values[2]).all()
    assert list(ds.flags.values) == [5, 0, 0]
    assert not np.isnat(ds.written_at.values[:2]).any() and np.isnat(ds.written_at.values[2])


@pytest.mark.parametrize("threads", [1, 4])
def test_sharded_traces_from_concurrent_writers(tmp_path: Path, threads: int) -> None:
    """Window traces sit 32 to a shard; two writers whose traces share shards (and overlap),
    flushing at once, leave every trace written, and shards byte for byte those of one zarr
    write of all the traces (a shard's layout does not depend on the order of writes), also
    when each writes its shards on threads."""
    layout = EventWindowLayout(40.0, 40.0, 90.0, "origin")
    rng = np.random.default_rng(8)
    n = 40  # a whole shard and an edge shard
    blocks = rng.standard_normal((n, 3, 5200)).astype(np.float32)
    blocks[7, 1:] = np.nan
    blocks[33] = np.nan  # no data: no inner chunk
    files = {}
    for name in ("writers", "zarr"):
        location = str(tmp_path / f"{name}.zarr")
        group = create_events(open_root(location), layout)
        append_traces(group, trace_rows(n))
        wave = group["waveform"]
        assert wave.shards == (32, 3, 5200) and wave.chunks == (1, 3, 5200)
        if name == "zarr":
            wave[:] = blocks
        else:
            parts = [list(range(0, 21)), list(range(15, n))]
            writers = [TraceWriter(open_root(location)["events"], threads) for _ in parts]
            for writer, part in zip(writers, parts, strict=True):
                for i in rng.permutation(part).tolist():
                    writer.write(i, blocks[i], i % 3)
            assert pending_traces(location, group) == list(range(n))  # kept, not written
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(TraceWriter.flush, writers, [location] * len(writers)))
            assert pending_traces(location, group) == []
        folder = Path(location) / "events" / "waveform"
        files[name] = {f.name: f.read_bytes() for f in folder.iterdir() if f.name != "zarr.json"}
        np.testing.assert_array_equal(
            xr.open_zarr(location, group="events", consolidated=False).waveform.values, blocks
        )
    assert sorted(files["writers"]) == ["c.0.0.0", "c.1.0.0"]
    assert files["writers"] == files["zarr"]


@pytest.mark.parametrize("threads", [1, 4])
def test_trace_writer_leaves_unwritten_traces_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """A shard write that fails raises from flush; its traces get no ledger row (a re-run
    cuts them again), those of the other shards written (before it, or beside it on
    threads) do."""
    location = str(tmp_path / "s.zarr")
    group = create_events(open_root(location), EventWindowLayout(40.0, 40.0, 90.0, "origin"))
    append_traces(group, trace_rows(40))
    writer = TraceWriter(group, threads)
    block = np.ones((3, 5200), np.float32)
    for i in (1, 2, 35):
        writer.write(i, block, 0)
    wave = writer._wave
    real = type(wave).__setitem__
    calls: list[object] = []

    def failing(self: zarr.Array, key: object, value: object) -> None:
        calls.append(key)
        if isinstance(key, slice) and key.start == 35:  # the second shard's write
            raise OSError("the store went away")
        real(self, key, value)

    monkeypatch.setattr(type(wave), "__setitem__", failing)
    with pytest.raises(OSError, match="went away"):
        writer.flush(location)
    assert len(calls) == 2
    assert pending_traces(location, group) == [i for i in range(40) if i not in (1, 2)]


def test_tables_merge_by_key_and_documents_verbatim(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    open_root(location)
    write_table(
        location, "catalog", pd.DataFrame({"event_id": ["a", "b"], "magnitude": [1.0, 2.0]})
    )
    write_table(
        location, "catalog", pd.DataFrame({"event_id": ["b", "c"], "magnitude": [2.5, 3.0]})
    )
    table = read_table(location, "catalog")
    assert list(table.event_id) == ["a", "b", "c"] and list(table.magnitude) == [1.0, 2.5, 3.0]
    # append-only: two parts, folded into one once there are more than COMPACT_AFTER
    assert len(part_names(location, "catalog")) == 2
    for i in range(4):
        write_table(location, "catalog", pd.DataFrame({"event_id": ["a"], "magnitude": [i]}))
    assert compact_table(location, "catalog") == 6
    assert len(part_names(location, "catalog")) == 1
    table = read_table(location, "catalog")
    assert list(table.event_id) == ["a", "b", "c"] and list(table.magnitude) == [3.0, 2.5, 3.0]
    content = b"<?xml version='1.0'?><FDSNStationXML/>\n\x00\xff"
    root = open_root(location)
    path = write_source_document(root, "stationxml", content, "s.xml", "application/xml")
    assert write_source_document(root, "stationxml", content, "s.xml", "application/xml") == path
    assert read_source_document(root, path) == content


def test_read_many_reports_missing_objects_and_raises_on_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects read at once on an object store: a missing one is ``None`` (as
    ``read_bytes`` gives), any other failure raises instead of passing for missing (a
    table part or a node document silently left out would drop its rows or its node)."""
    location = "memory://seismoflow-read-many/store.zarr"
    write_bytes(location, "tables/t/part-1.parquet", b"one")
    keys = ["tables/t/part-1.parquet", "tables/t/part-2.parquet"]
    assert read_many(location, keys) == [b"one", None]
    fs, _ = filesystem(location)
    monkeypatch.setattr(
        type(fs),
        "cat",
        lambda self, paths, on_error="raise": {p: OSError("timed out") for p in paths},
    )
    with pytest.raises(OSError, match="timed out"):
        read_many(location, keys)


def test_any_fsspec_url(tmp_path: Path) -> None:
    year, data = _write("memory://seismoflow-test/store.zarr")
    pieces = read_pieces(
        open_root("memory://seismoflow-test/store.zarr", "r"), CH, DAY, DAY + 86400 * NS_PER_S
    )
    assert sum(p.data.size for p in pieces) == 499_900


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    order: list[str] = []

    def hold() -> None:
        with store_lock(location):
            order.append("b")

    with store_lock(location):
        t = threading.Thread(target=hold)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # blocked while we hold the lock
        order.append("a")
    t.join(5)
    assert order == ["a", "b"]
    with store_lock(location), store_lock(location):  # re-entrant in the holding thread
        order.append("c")
    assert order == ["a", "b", "c"]


def test_consolidated_metadata_as_zarr_writes_it_and_dropped_by_writers(tmp_path: Path) -> None:
    """The local consolidation writes the document zarr's ``consolidate_metadata`` writes;
    a writer opening the store drops it (it would go stale), and memory:// works too."""
    location = str(tmp_path / "s.zarr")
    _write(location)
    create_events(open_root(location), EventWindowLayout(40.0, 40.0, 90.0, "origin"))
    write_table(location, "catalog", pd.DataFrame({"event_id": ["a"], "magnitude": [1.0]}))
    consolidate(location)
    ours = json.loads((tmp_path / "s.zarr" / "zarr.json").read_bytes())
    zarr.consolidate_metadata(location, zarr_format=3)
    theirs = json.loads((tmp_path / "s.zarr" / "zarr.json").read_bytes())
    assert ours == theirs and len(ours["consolidated_metadata"]["metadata"]) > 10
    tree = xr.open_datatree(location, engine="zarr", consolidated=True)
    assert tree["events"].dataset.sizes["sample"] == 5200
    open_root(location, "r")
    assert "consolidated_metadata" in json.loads((tmp_path / "s.zarr" / "zarr.json").read_bytes())
    open_root(location)
    assert "consolidated_metadata" not in json.loads(
        (tmp_path / "s.zarr" / "zarr.json").read_bytes()
    )
    remote = "memory://seismoflow-consolidate/store.zarr"
    _write(remote)
    create_events(open_root(remote), EventWindowLayout(40.0, 40.0, 90.0, "origin"))
    consolidate(remote)  # listed and read through fsspec, not walked
    ours = json.loads(read_bytes(remote, "zarr.json") or b"{}")
    zarr.consolidate_metadata(remote, zarr_format=3)
    assert ours == json.loads(read_bytes(remote, "zarr.json") or b"{}")
    assert len(ours["consolidated_metadata"]["metadata"]) > 10
    consolidate(remote)
    assert zarr.open_group(remote, mode="r").metadata.consolidated_metadata is not None
    assert open_root(remote).metadata.consolidated_metadata is None
    assert zarr.open_group(remote, mode="r").metadata.consolidated_metadata is None


def test_codec_choice_by_coverage() -> None:
    assert choose_codec("auto", 0.9) == "pcodec"
    assert choose_codec("auto", 0.01) == "delta-zstd"
    assert choose_codec("pcodec", 0.01) == "pcodec"


def test_segments_json_is_stored(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    _write(location)
    days = read_table(location, "channel_days")
    assert len(json.loads(days["segments"].iloc[0])) == 2
    assert json.loads(days["runs"].iloc[0]) == [[350_000, 351_000], [351_100, 850_000]]


def test_encoding_by_occupancy() -> None:
    whole = choose_encoding("auto", 360_000, 8_640_000, 8_640_000)
    assert whole == ContinuousEncoding("pcodec", 360_000, 360_000)
    hours = choose_encoding("auto", 360_000, 720_000, 8_640_000)
    assert hours == ContinuousEncoding("pcodec", 360_000, 16_384)
    snippet = choose_encoding("auto", 360_000, 15_000, 8_640_000)
    # at most 64 inner chunks per shard (the shard index is 16 bytes per inner chunk)
    assert snippet.codec == "delta-zstd" and snippet.chunk_samples == 135_000
    forty = choose_encoding("auto", 360_000, 3_456_000, 3_456_000)
    assert forty.chunk_samples == 384_000 and 3_456_000 % forty.chunk_samples == 0


def test_sparse_chunks_round_trip_and_reopen(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    root = open_root(location)
    layout = ContinuousLayout(CH, 100.0, 8192, "delta-zstd")
    create_continuous(root, layout)
    channel = open_channel(root, CH, 100.0)
    assert channel is not None and channel.chunk_samples == 8192 and channel.layout == layout
    data = RNG.integers(-500, 500, 15_000).astype(np.int32)
    seg = {"start_ns": DAY + 100 * NS_PER_S, "index": 10_000, "npts": 15_000}
    record = channel.write_day(
        DAY,
        t0_ns=DAY,
        offset=10_000,
        data=data,
        mask=np.ones(data.size, bool),
        flags=0,
        segments=[{**seg, "residual_ns": 0, "source": "x"}],
        quarantine=[],
        sources=[SRC],
        fresh=True,
    )
    append_rows(location, "channel_days", ledger_frame([record]))
    pieces = read_pieces(open_root(location, "r"), CH, DAY, DAY + 86400 * NS_PER_S - 1)
    assert len(pieces) == 1 and pieces[0].start_ns == DAY + 100 * NS_PER_S
    assert np.array_equal(pieces[0].data, data)
    # one object for the day, holding only the inner chunks with samples
    shard = Path(location) / layout.path / f"c.{day_index(DAY)}.0"
    assert shard.is_file() and shard.stat().st_size < 40_000


@pytest.mark.parametrize(("codec", "page"), [("pcodec", 16_384), ("delta-zstd", 16_384)])
def test_day_long_rows_round_trip_with_a_padded_last_chunk(
    tmp_path: Path, codec: str, page: int
) -> None:
    """A 40 Hz day (3 456 000 samples) in 360 000-sample inner chunks: the row is padded to
    whole chunks, the padding is never stored, every read range comes back exactly."""
    location = str(tmp_path / "s.zarr")
    root = open_root(location)
    layout = ContinuousLayout(CH, 40.0, 360_000, codec, pcodec_page=page)
    channel = ChannelArray(create_continuous(root, layout), layout)
    spd = channel.samples_per_day
    assert channel.width == 3_600_000 and spd == 3_456_000
    assert layout.sample_dim == "sample_40hz_3600000"  # padded rows name their length
    data = np.cumsum(RNG.integers(-900, 900, spd)).astype(np.int32)
    mask = np.ones(spd, bool)
    mask[700_000:1_100_000] = False
    data[~mask] = 0
    rec = channel.write_day(
        DAY, t0_ns=DAY, offset=0, data=data, mask=mask, flags=1, segments=[],
        quarantine=[], sources=[SRC], fresh=True,
    )
    assert rec.runs == [(0, 700_000), (1_100_000, spd)]
    for lo, hi in ((0, spd), (5, 6), (359_999, 720_001), (spd - 7, spd)):
        assert np.array_equal(channel.read(DAY, lo, hi), data[lo:hi])


@pytest.mark.parametrize("codec", ["pcodec", "delta-zstd"])
def test_day_shard_written_as_zarr_writes_it(tmp_path: Path, codec: str) -> None:
    """A channel-day's shard, encoded in memory and put as one object, has the bytes zarr's
    own write into the array gives, and a row of nothing but fill values removes it."""
    root = open_root(str(tmp_path / "s.zarr"))
    arr = create_continuous(
        root, ContinuousLayout(ChannelId.parse("XX.STA..HHZ"), 50.0, 345_600, codec)
    )
    ca = ChannelArray(arr)
    data = (np.random.default_rng(1).normal(size=30_000) * 100).astype(np.int32)
    day = 19_000 * NS_PER_DAY
    ca.write_day(day, t0_ns=day, offset=1_000_000, data=data, mask=np.ones(30_000, bool),
                 flags=0, segments=[], quarantine=[], sources=[], fresh=True)  # fmt: skip
    lo, hi = 691_200, 1_036_800
    block = np.zeros(hi - lo, np.int32)
    block[1_000_000 - lo : 1_030_000 - lo] = data
    arr[19_001, lo:hi] = block
    folder = tmp_path / "s.zarr" / arr.path
    assert (folder / "c.19000.0").read_bytes() == (folder / "c.19001.0").read_bytes()
    assert np.array_equal(ca.read(day, 1_000_000, 1_030_000), data)
    ca.write_day(day, t0_ns=day, offset=0, data=np.zeros(10, np.int32), mask=np.zeros(10, bool),
                 flags=0, segments=[], quarantine=[], sources=[])  # fmt: skip
    assert not (folder / "c.19000.0").exists()


def test_window_group_made_in_memory_is_what_zarr_makes_in_the_store(tmp_path: Path) -> None:
    """``create_events`` puts the objects of a group zarr made in memory: byte for byte the
    files zarr writes making the same group in the store itself, for both window groups;
    a second call finds the group and writes nothing."""
    from seismoflow.storage.schema import _fill_window_group

    layout = EventWindowLayout(40.0, 30.0, 90.0, "origin")
    zarr_made, ours = tmp_path / "zarr.zarr", tmp_path / "ours.zarr"
    for name in (EVENTS, NOISE_GROUP):
        direct = open_root(str(zarr_made))
        _fill_window_group(direct.require_group(name), layout, name)
        create_events(open_root(str(ours)), layout, name)
        create_events(open_root(str(ours)), layout, name)

    def files(folder: Path) -> dict[str, bytes]:
        found = [p for p in folder.rglob("*") if p.is_file()]
        return {str(p.relative_to(folder)): p.read_bytes() for p in found}

    assert files(zarr_made) == files(ours)
    assert len(files(ours)) > 40
