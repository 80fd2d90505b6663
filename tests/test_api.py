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
