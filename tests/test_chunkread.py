"""The row chunk reader (``storage.chunkread``) returns what zarr's own ``array[rows]``
returns: missing chunks as the fill value, rows in any order, both byte orders, the codec
chains it handles, and zarr's own read for every layout it does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from seismoflow.storage import chunkread
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

DATA = np.random.default_rng(1).normal(0, 1e3, (12, 3, 500)).astype(np.float32)
UNWRITTEN = [3, 7]  # chunks never written: read as the fill value

# name: (create_array keywords, whether the direct reader handles it)
LAYOUTS: dict[str, tuple[dict[str, Any], bool]] = {
    "zstd": ({"chunks": (1, 3, 500), "compressors": ZstdCodec(level=3)}, True),
    "blosc": ({"chunks": (1, 3, 500), "compressors": BloscCodec()}, True),
    "zstd_crc32c": (
        {"chunks": (1, 3, 500), "compressors": [ZstdCodec(level=3), Crc32cCodec()]},
        True,
    ),
    "big_endian": (
        {"chunks": (1, 3, 500), "serializer": BytesCodec(endian="big"), "compressors": None},
        True,
    ),
    "v2_keys": (
        {"chunks": (1, 3, 500), "compressors": ZstdCodec(), "chunk_key_encoding": ("v2", ".")},
        True,
    ),
    "gzip": ({"chunks": (1, 3, 500), "compressors": GzipCodec()}, False),
    "chunks_of_4": ({"chunks": (4, 3, 500), "compressors": ZstdCodec(level=3)}, False),
    "sharded": ({"chunks": (1, 3, 500), "shards": (4, 3, 500)}, True),
}


def _array(tmp_path: Path, name: str, kw: dict[str, Any]) -> zarr.Array:
    kw = dict(kw)
    if "chunk_key_encoding" in kw:
        enc, sep = kw.pop("chunk_key_encoding")
        kw["chunk_key_encoding"] = {"name": enc, "separator": sep}
    root = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="w", zarr_format=3)
    wave = root.create_array("waveform", shape=DATA.shape, dtype="float32", fill_value=np.nan, **kw)
    for i in range(len(DATA)):
        if i not in UNWRITTEN:
            wave[i] = DATA[i]
    again = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")["waveform"]
    assert isinstance(again, zarr.Array)
    return again


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_read_rows_matches_zarr_on_every_layout(tmp_path: Path, name: str) -> None:
    kw, direct = LAYOUTS[name]
    arr = _array(tmp_path, name, kw)
    assert (chunkread.row_chunk_reader(arr) is not None) == direct
    expected = np.asarray(arr[:])
    assert np.isnan(expected[UNWRITTEN]).all()
    for idx in ([0, 1, 2], [1, 3, 4, 9, 11], [7], list(range(12)), [9, 2, 2, 5], []):
        got = chunkread.read_rows(arr, np.array(idx, dtype=np.int64))
        assert got.dtype == np.float32 and got.shape == (len(idx), 3, 500)
        np.testing.assert_array_equal(got, expected[idx])
        for select in ([0], [2, 0], [1, 1, 2], []):
            part = chunkread.read_rows(arr, np.array(idx, dtype=np.int64), select)
            np.testing.assert_array_equal(part, expected[idx][:, select])
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([12]))
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([1]), [3])
    with pytest.raises(IndexError):
        chunkread.read_rows(arr, np.array([-1]))


def test_reader_refuses_what_it_does_not_handle() -> None:
    """Configurations outside the module's scope give no reader (zarr reads them)."""
    base: dict[str, Any] = {
        "zarr_format": 3,
        "shape": [4, 3, 10],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 3, 10]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
        "fill_value": "NaN",
    }
    objects: Any = object()
    assert chunkread.reader_from_metadata(base, objects) is not None
    for change in (
        {"zarr_format": 2},
        {"data_type": "bool"},
        {"fill_value": "0x7fc00000"},
        {"storage_transformers": [{"name": "x"}]},
        {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3, 10]}}},
        {"chunk_key_encoding": {"name": "other"}},
        {"codecs": [{"name": "transpose", "configuration": {"order": [0, 2, 1]}}]},
        {"codecs": [{"name": "bytes"}, {"name": "gzip", "configuration": {"level": 5}}]},
    ):
        assert chunkread.reader_from_metadata({**base, **change}, objects) is None, change
