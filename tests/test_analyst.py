"""Analyst labels: import round trip, versions, overrides of the catalogue's classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from seismoflow.storage.tables import read_table, write_table

from seismoflow import analyst
from seismoflow.errors import BadInputError
from seismoflow.labels import CLASSES


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store holding only a three-event catalogue table."""
    location = str(tmp_path / "s.zarr")
    catalog = pd.DataFrame(
        {"event_id": ["e1", "e2", "e3"], "event_type": ["earthquake"] * 3,
         "latitude": [46.0, 46.1, 46.2], "longitude": [-121.0, -121.1, -121.2]}
    )  # fmt: skip
    write_table(location, "catalog", catalog)
    return location


def _csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=list(analyst.CSV_COLUMNS)).to_csv(path, index=False)
    return path


def test_import_round_trip_versions_and_override(store: str, tmp_path: Path) -> None:
    before = read_table(store, "catalog")
    first = _csv(tmp_path / "a.csv", [
        ("e1", "explosion", "ana", "2026-12-01T10:00:00Z"),
        ("e2", "surface_event", "ana", "2026-12-01T10:05:00Z"),
    ])  # fmt: skip
    out = analyst.import_labels(store, first)
    assert out["version"] == 1 and out["rows"] == 2
    second = _csv(tmp_path / "b.csv", [("e1", "earthquake", "bo", "2026-12-02 08:00:00")])
    assert analyst.import_labels(store, second)["version"] == 2
    # the catalogue is untouched; every version is kept; the latest one wins
    pd.testing.assert_frame_equal(read_table(store, "catalog"), before)
    table = read_table(store, analyst.TABLE)
    assert len(table) == 3 and sorted(table["version"].astype(int).unique()) == [1, 2]
    current = analyst.current_labels(store).set_index("event_id")
    assert current.loc["e1", "class"] == "earthquake" and current.loc["e1", "analyst"] == "bo"
    assert current.loc["e2", "class"] == "surface_event"
    assert current.loc["e1", "time"] == "2026-12-02T08:00:00.000000Z"
    examples = pd.DataFrame(
        {
            "group": ["events", "events", "events", "noise"],
            "event_id": ["e1", "e2", "e3", "noise:x"],
            "label": pd.Categorical(
                ["explosion", "earthquake", "earthquake", "noise"], categories=list(CLASSES)
            ),
        }
    )
    labelled = analyst.apply_analyst_labels(store, examples)
    assert list(labelled["label"].astype(str)) == [
        "earthquake", "surface_event", "earthquake", "noise"
    ]  # fmt: skip
    assert list(labelled["label_source"]) == ["analyst", "analyst", "catalogue", "noise"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("e1", "volcano", "ana", "2026-12-01T10:00:00Z")], "not among"),
        ([("e9", "explosion", "ana", "2026-12-01T10:00:00Z")], "not in the store"),
        ([("e1", "explosion", "ana", "yesterday")], "unreadable time"),
        (
            [("e1", "explosion", "a", "2026-12-01T10:00:00Z")] * 2,
            "labelled twice",
        ),
    ],
)
def test_import_refuses_bad_rows(
    store: str, tmp_path: Path, rows: list[tuple[str, str, str, str]], message: str
) -> None:
    with pytest.raises(BadInputError, match=message):
        analyst.import_labels(store, _csv(tmp_path / "bad.csv", rows))
    assert read_table(store, analyst.TABLE).empty
