"""A run's channel documents (``storage.documents``): arrays created in the run are opened
from the documents written, others read once; what is read and consolidated is the same as
without them; readers outside a run never use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from seismoflow.storage import continuous
from seismoflow.storage.continuous import open_channel
from seismoflow.storage.documents import begin_run, end_run, run_documents
from seismoflow.storage.fsio import read_bytes
from seismoflow.storage.location import consolidate, open_root
from seismoflow.storage.schema import ContinuousLayout, continuous_path, create_continuous_many

from seismoflow.ids import ChannelId
from seismoflow.times import to_ns

CH = ChannelId("XX", "DOCS", "00", "HHZ")
OTHER = ChannelId("XX", "DOCS", "00", "HHN")
DAY = to_ns("2021-03-04")
SRC = {"path": "x.mseed", "size": 1, "mtime_ns": 1}


@pytest.mark.parametrize("kind", ["memory", "folder"])
def test_run_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    name = tmp_path.name
    location = f"memory://docs-{name}/s.zarr" if kind == "memory" else str(tmp_path / "s.zarr")
    root = open_root(location)
    create_continuous_many(root, [ContinuousLayout(OTHER, 1.0, 8192, "pcodec")])  # before
    run = begin_run(location)
    assert run_documents(location) is run and len(run) == 0
    layout = ContinuousLayout(CH, 1.0, 8192, "pcodec")
    create_continuous_many(root, [layout])
    path = continuous_path(CH, 1.0)
    assert run.get(path) == json.loads(read_bytes(location, f"{path}/zarr.json") or b"")

    reads: list[object] = []
    real = continuous.read_document

    def counted(objects: object) -> object:
        reads.append(objects)
        return real(objects)  # type: ignore[arg-type]

    monkeypatch.setattr(continuous, "read_document", counted)
    channel = open_channel(root, CH, 1.0, run)
    assert channel is not None and reads == []  # created in the run: nothing read
    data = np.arange(30_000, dtype=np.int32)
    channel.write_day(
        DAY, t0_ns=DAY, offset=100, data=data, mask=np.ones(data.size, bool), flags=0,
        segments=[], quarantine=[], sources=[SRC], fresh=True,
    )  # fmt: skip
    # the array zarr opened from the document is the one in the store
    assert channel.array.metadata.to_dict() == root[path].metadata.to_dict()
    assert np.array_equal(channel.read(DAY, 100, 30_100), data)
    other = open_channel(root, OTHER, 1.0, run)
    again = open_channel(root, OTHER, 1.0, run)
    assert other is not None and again is not None and len(reads) == 1  # read once
    plain = open_channel(open_root(location, "r"), CH, 1.0)
    assert plain is not None and len(reads) == 2  # outside a run: read from the store
    assert np.array_equal(plain.read(DAY, 100, 30_100), data)

    consolidate(location, run)
    with_run = read_bytes(location, "zarr.json")
    consolidate(location)
    assert with_run == read_bytes(location, "zarr.json")
    end_run(location)
    assert run_documents(location) is None


def test_run_keeps_window_days_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a store other than a local folder, a run keeps the shards it writes of days its
    windows read, and reads them back without a request, only for the ledger record they
    were written for; other days, and local folders, are read from the store."""
    location = "memory://docs-kept/s.zarr"
    root = open_root(location)
    run = begin_run(location)
    run.keep_window_days([DAY])
    create_continuous_many(root, [ContinuousLayout(CH, 1.0, 8192, "pcodec")])
    channel = open_channel(root, CH, 1.0, run)
    assert channel is not None and channel.shards is not None
    data = np.arange(30_000, dtype=np.int32)

    def write(day: int) -> continuous.DayRecord:
        return channel.write_day(
            day, t0_ns=day, offset=100, data=data, mask=np.ones(data.size, bool), flags=0,
            segments=[], quarantine=[], sources=[SRC], fresh=True,
        )  # fmt: skip

    kept = write(DAY)
    other_day = write(DAY + 86_400 * 10**9)  # not a window day: not kept
    objects = channel.shards.objects
    store_reads: list[str] = []
    real_whole = objects.whole

    def whole(key: str) -> bytes | None:
        store_reads.append(key)
        return real_whole(key)

    monkeypatch.setattr(objects, "whole", whole)
    assert np.array_equal(channel.read(DAY, 100, 30_100, None, kept.ingested_at_ns), data)
    assert store_reads == []
    (piece,) = channel.pieces(kept, DAY, DAY + 40_000 * 10**9)  # the window's reader
    assert piece.start_ns == DAY + 100 * 10**9 and np.array_equal(piece.data, data)
    assert store_reads == []
    # another record of the day (rewritten since): the store's shard
    assert np.array_equal(channel.read(DAY, 0, 8192, 1 << 16, kept.ingested_at_ns + 1)[100:],
                          data[: 8192 - 100])  # fmt: skip
    assert len(store_reads) == 1
    assert np.array_equal(
        channel.read(other_day.day_ns, 0, 8192, 1 << 16, other_day.ingested_at_ns)[100:],
        data[: 8192 - 100],
    )
    assert len(store_reads) == 2
    end_run(location)
