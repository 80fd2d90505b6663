"""The shard reader (``storage.shardread``) returns what zarr's own ``array[row, lo:hi]``
returns: both codecs, dense and sparse days, missing and empty shards, ranges across inner
chunk boundaries, other sharding configurations, a real day-long file of the archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import obspy
import pytest
import zarr
from seismoflow.storage import shardread
from seismoflow.storage.continuous import (
    SHARD_OVERHEAD_BYTES,
    ChannelArray,
    ContinuousReader,
    open_channel,
    shard_bound,
)
from seismoflow.storage.location import open_root
from seismoflow.storage.schema import (
    ContinuousLayout,
    continuous_path,
    create_continuous,
    day_index,
)
from seismoflow.storage.shardread import WHOLE_READ_BYTES, ShardError, ShardReader, shard_reader
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.codecs.numcodecs import Delta

from seismoflow.archive.ingest import ingest_batch, plan_ingest, prepare_store, record_continuous
from seismoflow.ids import ChannelId
from seismoflow.settings import Settings
from seismoflow.times import NS_PER_DAY, to_ns
from tests.conftest import link_day_files

CH = ChannelId("XX", "SHRD", "00", "HHZ")
DAY = to_ns("2021-03-04")
CHUNK = 8192  # 1 Hz: 86 400 samples a day in 11 inner chunks, the last one padded
SRC = {"path": "x.mseed", "size": 1, "mtime_ns": 1}
# A real day-long record: 20 Hz, 1 728 000 samples (also in tests/conftest.py's subset)
DAY_LONG = "GR.FUR..BHN.D.2015.361"

pytest_plugins = ["tests.s3server"]  # the moto server and bucket fixtures


def _write_day(channel: ChannelArray, day_ns: int, offset: int, data: np.ndarray) -> None:
    channel.write_day(
        day_ns, t0_ns=day_ns, offset=offset, data=data, mask=np.ones(data.size, bool),
        flags=0, segments=[], quarantine=[], sources=[SRC], fresh=True,
    )  # fmt: skip


def _ranges(width: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Whole rows, single values, spans across inner chunk boundaries, random spans."""
    fixed = [
        (0, width), (0, 1), (width - 1, width), (CHUNK - 3, CHUNK + 3), (CHUNK, 2 * CHUNK),
        (CHUNK - 1, 3 * CHUNK + 1), (5, width - 5), (4 * CHUNK + 100, 4 * CHUNK + 100),
    ]  # fmt: skip
    spans = [tuple(sorted(rng.integers(0, width + 1, 2))) for _ in range(40)]
    return fixed + [(int(a), int(b)) for a, b in spans]


def _same_as_zarr(reader: ShardReader, array: zarr.Array, rows: list[int]) -> None:
    rng = np.random.default_rng(3)
    for row in rows:
        for lo, hi in _ranges(int(array.shape[1]), rng):
            got = reader.read(row, lo, hi)
            assert got.dtype == np.int32
            assert np.array_equal(got, array[row, lo:hi]), (row, lo, hi)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("codec", ["pcodec", "delta-zstd"])
def test_channel_arrays_read_as_zarr_reads_them(
    tmp_path: Path, codec: str, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the whole inner chunks of a read decoded on one thread, or three."""
    monkeypatch.setattr(shardread, "decode_threads", lambda: threads)
    location = str(tmp_path / "s.zarr")
    root = open_root(location)
    layout = ContinuousLayout(CH, 1.0, CHUNK, codec)
    array = create_continuous(root, layout)
    channel = ChannelArray(array, layout)
    rng = np.random.default_rng(11)
    spd = layout.samples_per_day
    dense = np.cumsum(rng.integers(-900, 900, spd)).astype(np.int32)
    _write_day(channel, DAY, 0, dense)
    # sparse: two snippets, inner chunks 0, 2, 3 and 5.. not stored
    _write_day(channel, DAY + NS_PER_DAY, CHUNK + 17, dense[:500])
    _write_day(channel, DAY + NS_PER_DAY, 4 * CHUNK - 3, dense[:10])
    # a day written with zeros only: zarr stores no shard at all
    channel.write_day(
        DAY + 2 * NS_PER_DAY, t0_ns=DAY, offset=0, data=np.zeros(spd, np.int32),
        mask=np.ones(spd, bool), flags=0, segments=[], quarantine=[], sources=[SRC],
    )  # fmt: skip
    folder = Path(location) / layout.path
    assert not (folder / f"c.{day_index(DAY) + 2}.0").exists()
    reader = shard_reader(array)
    assert reader is not None and reader.n_inner == 11 and reader.index_at_end
    d = day_index(DAY)
    # the day after the zero-day was never written (no shard): fill values
    _same_as_zarr(reader, array, [d, d + 1, d + 2, d + 3])
    # ChannelArray reads through it, opened from its zarr.json alone
    opened = open_channel(open_root(location, "r"), CH, 1.0)
    assert opened is not None and opened.shards is not None
    assert np.array_equal(opened.read(DAY, 3, spd), dense[3:])
    assert opened.layout == layout and opened.width == layout.width


def test_empty_index_and_damaged_shards(tmp_path: Path) -> None:
    location = str(tmp_path / "s.zarr")
    root = open_root(location)
    layout = ContinuousLayout(CH, 1.0, CHUNK, "pcodec")
    array = create_continuous(root, layout)
    reader = shard_reader(array)
    assert reader is not None
    d = day_index(DAY)
    shard = Path(location) / layout.path / f"c.{d}.0"
    # a shard whose index marks every inner chunk as not stored (zarr never writes one,
    # the specification allows it)
    index = np.full(2 * reader.n_inner, 2**64 - 1, "<u8").tobytes()
    shard.write_bytes(index + google_crc32c.value(index).to_bytes(4, "little"))
    _same_as_zarr(reader, array, [d])
    shard.write_bytes(index + b"\0\0\0\0")
    with pytest.raises(ShardError, match="crc32c"):
        reader.read(d, 0, 10)
    shard.write_bytes(b"short")
    with pytest.raises(ShardError):
        reader.read(d, 0, layout.width)
    with pytest.raises(ShardError):
        reader.read(d, 0, 10)


@pytest.mark.parametrize(
    "codecs",
    [
        [BytesCodec(endian="big"), ZstdCodec(), Crc32cCodec()],
        [Delta(dtype="int32"), BytesCodec(), BloscCodec(cname="lz4")],
        [BytesCodec()],
        [Delta(dtype="int32"), Delta(dtype="int32"), BytesCodec(), ZstdCodec()],
    ],
    ids=["big-endian-zstd-crc", "delta-lz4", "raw", "delta-delta-zstd"],
)
@pytest.mark.parametrize("index_location", ["start", "end"])
def test_other_sharding_configurations(
    tmp_path: Path, codecs: list[object], index_location: str
) -> None:
    """Index at the start, index without checksum, '/' chunk keys, other inner codecs."""
    root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    array = root.create_array(
        "a", shape=(3, 1000), chunks=(1, 1000), dtype="int32", fill_value=-7,
        serializer=ShardingCodec(
            chunk_shape=(1, 100), codecs=codecs, index_location=index_location,
            index_codecs=[BytesCodec(endian="big")],
        ),
        compressors=None,
    )  # fmt: skip
    data = np.random.default_rng(5).integers(-(2**31), 2**31 - 1, 1000).astype(np.int32)
    array[0, :] = data
    array[1, 250:420] = data[:170]
    reader = shard_reader(array)
    assert reader is not None and not reader.index_crc
    assert reader.index_at_end == (index_location == "end")
    rng = np.random.default_rng(1)
    for row in (0, 1, 2):
        for lo, hi in [(0, 1000), (99, 101), (250, 420), (0, 0), (999, 1000)] + [
            tuple(sorted(rng.integers(0, 1001, 2))) for _ in range(20)
        ]:
            assert np.array_equal(reader.read(row, int(lo), int(hi)), array[row, lo:hi])


def test_unhandled_encodings_read_through_zarr(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    gzip = root.create_array(
        "gzip", shape=(2, 100), chunks=(1, 10), shards=(1, 100), dtype="int32",
        compressors=[GzipCodec()],
    )  # fmt: skip
    unsharded = root.create_array("plain", shape=(2, 100), chunks=(1, 10), dtype="int32")
    floats = root.create_array("f", shape=(2, 100), chunks=(1, 10), shards=(1, 100), dtype="f4")
    assert shard_reader(gzip) is None
    assert shard_reader(unsharded) is None
    assert shard_reader(floats) is None
    # a channel array of an unhandled codec falls back on zarr's read
    layout = ContinuousLayout(CH, 1.0, CHUNK, "pcodec")
    array = root.create_array(
        "c", shape=(2, layout.width), chunks=(1, CHUNK), shards=(1, layout.width),
        dtype="int32", compressors=[GzipCodec()], attributes=layout.attrs(),
    )  # fmt: skip
    channel = ChannelArray(array)
    assert channel.shards is None
    array[1, 5:10] = np.arange(5)
    assert np.array_equal(channel.read(NS_PER_DAY, 4, 11), [0, 0, 1, 2, 3, 4, 0])


@pytest.mark.data
def test_real_day_long_file(archive: Path, tmp_path: Path) -> None:
    """A day-long miniSEED file ingested: the shard reader equals zarr's read over the
    whole row and ranges, and the reader's pieces hold ObsPy's samples."""
    sds = link_day_files(archive, (DAY_LONG,), tmp_path / "sds")
    location = str(tmp_path / "s.zarr")
    s = Settings.model_validate({"store": location})
    plan = plan_ingest(sds, None, None)
    prepare_store(location, plan, s)
    results = [r for b in plan.batches(s.batch_bytes) for r in ingest_batch(location, b, s)]
    record_continuous(location, results)
    (row,) = [r.row for r in results if r.status == "written"]
    root = open_root(location, "r")
    channel = ChannelId.parse(row["channel"])
    array = root[continuous_path(channel, row["sampling_rate"])]
    assert isinstance(array, zarr.Array)
    reader = shard_reader(array)
    assert reader is not None
    d = day_index(row["day_ns"])
    rng = np.random.default_rng(2)
    spans = [(0, reader.shape[1]), (0, 1), (reader.inner - 1, 2 * reader.inner + 1)]
    spans += [
        tuple(sorted(int(x) for x in rng.integers(0, reader.shape[1] + 1, 2))) for _ in range(10)
    ]
    for lo, hi in spans:
        assert np.array_equal(reader.read(d, lo, hi), array[d, lo:hi]), (lo, hi)
    pieces = ContinuousReader(root).pieces(channel, row["first_ns"], row["last_ns"])
    (path,) = list(sds.rglob(DAY_LONG))
    expected = np.concatenate([tr.data for tr in obspy.read(str(path))]).astype(np.int32)
    assert np.array_equal(np.concatenate([p.data for p in pieces]), expected)


def _s3_day(
    location: str, seed: int
) -> tuple[ContinuousLayout, zarr.Array, ChannelArray, np.ndarray]:
    """A pcodec channel at ``location`` with 30,000 samples written into DAY from inner chunk
    3 on: (layout, array, channel, the samples)."""
    layout = ContinuousLayout(CH, 1.0, CHUNK, "pcodec")
    array = create_continuous(open_root(location), layout)
    channel = ChannelArray(array, layout)
    data = np.cumsum(np.random.default_rng(seed).integers(-50, 50, 30_000)).astype(np.int32)
    _write_day(channel, DAY, 3 * CHUNK + 5, data)
    return layout, array, channel, data


def test_object_store(s3_bucket: str) -> None:
    """On ``s3://`` (moto): the index by a suffix range, the chunks by one range."""
    location = f"s3://{s3_bucket}/s.zarr"
    layout, array, _, data = _s3_day(location, seed=4)
    reader = shard_reader(array)
    assert reader is not None and "Fsspec" in type(reader.objects).__name__
    d = day_index(DAY)
    for lo, hi in [(0, layout.width), (3 * CHUNK, 3 * CHUNK + 9), (CHUNK, 5 * CHUNK + 1)]:
        assert np.array_equal(reader.read(d, lo, hi), array[d, lo:hi])
    assert not reader.read(d + 1, 0, layout.width).any()
    opened = open_channel(open_root(location, "r"), CH, 1.0)
    assert opened is not None and opened.shards is not None
    assert np.array_equal(opened.read(DAY, 3 * CHUNK + 5, 3 * CHUNK + 5 + data.size), data)


def test_object_store_small_shard_read_whole(s3_bucket: str) -> None:
    """On ``s3://``, a part of a shard known to be small (``max_bytes``) is read with one
    request for the whole object, and returns what zarr's read returns; without the bound,
    or above ``WHOLE_READ_BYTES``, the index and then the chunks (two requests)."""
    location = f"s3://{s3_bucket}/w.zarr"
    layout, array, channel, data = _s3_day(location, seed=5)
    reader = shard_reader(array)
    assert reader is not None
    calls: list[str] = []
    objects = reader.objects
    whole, ranged = objects.whole, objects.index_and_span

    def counted_whole(key: str) -> bytes | None:
        calls.append("whole")
        return whole(key)

    def counted_ranged(*args: Any) -> Any:
        calls.append("index+span")
        return ranged(*args)

    objects.whole = counted_whole  # type: ignore[method-assign]
    objects.index_and_span = counted_ranged  # type: ignore[method-assign]
    d = day_index(DAY)
    small = 4 * data.size + SHARD_OVERHEAD_BYTES
    rng = np.random.default_rng(6)
    for lo, hi in _ranges(layout.width, rng):
        calls.clear()
        assert np.array_equal(reader.read(d, lo, hi, small), array[d, lo:hi]), (lo, hi)
        assert calls in ([], ["whole"]), (lo, hi)
    calls.clear()
    part = (3 * CHUNK, 3 * CHUNK + 9)
    assert np.array_equal(reader.read(d, *part), array[d, slice(*part)])
    assert np.array_equal(reader.read(d, *part, WHOLE_READ_BYTES + 1), array[d, slice(*part)])
    assert calls == ["index+span", "index+span"]
    # a missing shard read whole is the fill value, as before
    assert not reader.read(d + 1, 5, 50, small).any()
    # a day's pieces pass the ledger's bound (its recorded samples): one whole read
    rec = channel.write_day(
        DAY, t0_ns=DAY, offset=3 * CHUNK + 5, data=data, mask=np.ones(data.size, bool),
        flags=0, segments=[], quarantine=[], sources=[SRC], fresh=True,
    )  # fmt: skip
    assert shard_bound(rec) == small
    assert channel.shards is not None
    channel.shards.objects.whole = counted_whole  # type: ignore[method-assign]
    channel.shards.objects.index_and_span = counted_ranged  # type: ignore[method-assign]
    calls.clear()
    (piece,) = channel.pieces(rec, DAY, DAY + NS_PER_DAY)
    assert np.array_equal(piece.data, data) and calls == ["whole"]
