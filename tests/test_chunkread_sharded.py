"""The row chunk reader (``storage.chunkread``) on sharded window arrays (shards of ``K``
traces, one trace per inner chunk) returns what zarr's own ``array[rows]`` returns: rows of
missing shards and of empty index entries as the fill value, a partly written shard, an
edge shard, the index at either end of the shard, rows in any order and repeated; sharded
layouts it does not handle give no reader and are read through zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from seismoflow.storage import chunkread
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

K = 4
N = 500
ROWS = 22  # five full shards and an edge shard of two rows
KEYS: dict[str, Any] = {"name": "default", "configuration": {"separator": "."}}
ZSTD = ZstdCodec(level=3)


def _data() -> np.ndarray:
    data = np.random.default_rng(7).normal(0, 1e3, (ROWS, 3, N)).astype(np.float32)
    data[5, 1, 100:300] = np.nan  # a trace partly NaN
    data[6, :, :] = np.nan  # a trace all NaN: its inner chunk is not stored
    return data


# Rows written: shard 0 whole, shard 1 partly (row 6 all NaN), shard 2 (rows 8-11) never
# written (no object), shard 3 only row 13, shard 4 whole, the edge shard (rows 20-21) only
# row 21.
WRITTEN = [0, 1, 2, 3, 4, 5, 6, 13, 16, 17, 18, 19, 21]


def _written(path: Path, wave: zarr.Array) -> zarr.Array:
    """``wave`` with the ``WRITTEN`` rows written one by one, as ingestion does, then
    opened again read-only from ``path``."""
    data = _data()
    for row in WRITTEN:
        wave[row] = data[row]
    again = zarr.open_group(str(path), mode="r")["waveform"]
    assert isinstance(again, zarr.Array)
    return again


def _sharded(
    tmp_path: Path, name: str, codecs: dict[str, Any], chunks: tuple[int, ...] = (1, 3, N)
) -> zarr.Array:
    """A window array of shards of ``K`` traces, written row by row as ingestion does, then
    opened again read-only."""
    path = tmp_path / f"{name}.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    wave = root.create_array(
        "waveform",
        shape=(ROWS, 3, N),
        dtype="float32",
        chunks=chunks,
        shards=(K, 3, N),
        fill_value=np.nan,
        chunk_key_encoding=KEYS,
        **codecs,
    )
    return _written(path, wave)


def _index_at_start(tmp_path: Path) -> zarr.Array:
    """The same array through an explicit ShardingCodec with its index at the start."""
    path = tmp_path / "start.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    sharding = ShardingCodec(
        chunk_shape=(1, 3, N),
        codecs=[BytesCodec(), ZSTD],
        index_codecs=[BytesCodec(), Crc32cCodec()],
        index_location="start",
    )
    wave = root.create_array(
        "waveform",
        shape=(ROWS, 3, N),
        dtype="float32",
        chunks=(K, 3, N),
        serializer=sharding,
        compressors=None,
        filters=None,
        fill_value=np.nan,
        chunk_key_encoding=KEYS,
    )
    return _written(path, wave)


# name: (create_array keywords) of sharded layouts the direct reader handles
HANDLED: dict[str, dict[str, Any]] = {
    "zstd": {"compressors": ZSTD},
    "zstd_crc32c": {"compressors": [ZSTD, Crc32cCodec()]},
    "blosc": {"compressors": BloscCodec()},
    "big_endian": {"serializer": BytesCodec(endian="big"), "compressors": None},
}


def _check(arr: zarr.Array) -> None:
    expected = np.asarray(arr[:])
    unwritten = sorted(set(range(ROWS)) - set(WRITTEN))
    assert np.isnan(expected[unwritten]).all() and np.isnan(expected[6]).all()
    assert np.isnan(expected[5, 1, 100:300]).all() and not np.isnan(expected[5, 0]).any()
    rng = np.random.default_rng(3)
    fixed: list[list[int]] = [
        [0, 1, 2, 3],
        [21, 20, 0],
        [9, 8, 10],
        [6, 5, 5, 13, 6, 21, 0],
        list(range(ROWS)),
        list(reversed(range(ROWS))),
        [],
    ]
    drawn = [rng.integers(0, ROWS, int(rng.integers(1, 30))).tolist() for _ in range(20)]
    for idx in fixed + drawn:
        rows = np.array(idx, dtype=np.int64)
        got = chunkread.read_rows(arr, rows)
        assert got.dtype == np.float32 and got.shape == (len(idx), 3, N)
        np.testing.assert_array_equal(got, expected[idx])
        np.testing.assert_array_equal(got, np.asarray(arr.get_orthogonal_selection((rows,))))
        for select in ([0], [2, 0], [1, 1, 2], []):
            part = chunkread.read_rows(arr, rows, select)
            np.testing.assert_array_equal(part, expected[idx][:, select])
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([ROWS]))
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([-1]))
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([1]), [3])


@pytest.mark.parametrize("name", sorted(HANDLED))
def test_sharded_read_rows_matches_zarr(tmp_path: Path, name: str) -> None:
    arr = _sharded(tmp_path, name, HANDLED[name])
    reader = chunkread.row_chunk_reader(arr)
    assert isinstance(reader, chunkread.ShardedRowReader)
    assert reader.shard_rows == K and reader.index_at_end
    # The layout the test means: shard 2 has no object, the edge shard has one.
    folder = Path(str(arr.store.root)) / arr.path  # type: ignore[attr-defined]
    assert not (folder / "c.2.0.0").exists() and (folder / "c.5.0.0").exists()
    _check(arr)


def test_sharded_index_at_start_matches_zarr(tmp_path: Path) -> None:
    arr = _index_at_start(tmp_path)
    meta: Any = arr.metadata.to_dict()
    assert meta["codecs"][0]["configuration"]["index_location"] == "start"
    reader = chunkread.row_chunk_reader(arr)
    assert isinstance(reader, chunkread.ShardedRowReader) and not reader.index_at_end
    _check(arr)


def test_sharded_inner_chunks_of_two_rows_read_through_zarr(tmp_path: Path) -> None:
    arr = _sharded(tmp_path, "two_rows", {"compressors": ZSTD}, chunks=(2, 3, N))
    assert chunkread.row_chunk_reader(arr) is None
    _check(arr)


def test_damaged_shard_index_raises(tmp_path: Path) -> None:
    arr = _sharded(tmp_path, "damaged", {"compressors": ZSTD})
    folder = Path(str(arr.store.root)) / arr.path  # type: ignore[attr-defined]
    shard = folder / "c.0.0.0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # a byte of the index (at the end)
    shard.write_bytes(bytes(raw))
    with pytest.raises(chunkread.ShardError):
        chunkread.read_rows(arr, np.array([1]))
    np.testing.assert_array_equal(
        chunkread.read_rows(arr, np.array([4])), np.asarray(arr[4:5])
    )  # other shards still read


def test_sharded_reader_refuses_what_it_does_not_handle() -> None:
    """Sharded configurations outside the module's scope give no reader."""
    sharding: dict[str, Any] = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [1, 3, 10],
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"},
            ],
            "index_location": "end",
        },
    }
    base: dict[str, Any] = {
        "zarr_format": 3,
        "shape": [10, 3, 10],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 3, 10]}},
        "chunk_key_encoding": KEYS,
        "codecs": [sharding],
        "fill_value": "NaN",
    }
    objects: Any = object()
    assert isinstance(chunkread.reader_from_metadata(base, objects), chunkread.ShardedRowReader)
    conf = sharding["configuration"]
    changes: list[dict[str, Any]] = [
        {"chunk_shape": [2, 3, 10]},
        {"chunk_shape": [1, 3, 5]},
        {"chunk_shape": [1, 1, 10]},
        {"index_codecs": [{"name": "bytes"}, {"name": "zstd"}]},
        {"index_codecs": [{"name": "crc32c"}]},
        {"index_codecs": []},
        {"index_location": "middle"},
        {"codecs": [{"name": "bytes"}, {"name": "gzip", "configuration": {"level": 5}}]},
        {"codecs": [{"name": "sharding_indexed", "configuration": dict(conf)}]},
    ]
    for change in changes:
        meta = {**base, "codecs": [{**sharding, "configuration": {**conf, **change}}]}
        assert chunkread.reader_from_metadata(meta, objects) is None, change
    for grid in ([4, 3, 5], [4, 1, 10], [0, 3, 10]):
        meta = {**base, "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}}}
        assert chunkread.reader_from_metadata(meta, objects) is None, grid
    two_codecs = {**base, "codecs": [sharding, {"name": "zstd"}]}
    assert chunkread.reader_from_metadata(two_codecs, objects) is None
    assert chunkread.reader_from_metadata({**base, "fill_value": "0x7fc00000"}, objects) is None
