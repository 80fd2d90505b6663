"""The class table: complete over QuakeML 1.2, documented, and in agreement with labels.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from obspy import read_events
from obspy.core.event.header import EventType

from seismoflow.labels import (
    CLASSES,
    EVENT_TYPE_CLASS,
    QUAKEML_EVENT_TYPES,
    class_table_markdown,
    event_class,
)

REPO = Path(__file__).resolve().parents[1]


def test_every_quakeml_event_type_has_a_class_or_none() -> None:
    standard = list(EventType.keys())  # type: ignore[attr-defined]
    assert len(standard) == 44
    assert list(QUAKEML_EVENT_TYPES) == standard
    for name in standard:
        assert event_class(name) in (*CLASSES[:3], None), name
    assert "noise" not in EVENT_TYPE_CLASS.values()


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("earthquake", "earthquake"),
        ("induced or triggered event", "earthquake"),
        ("quarry blast", "explosion"),
        ("Nuclear Explosion", "explosion"),
        ("  mining   explosion ", "explosion"),
        ("snow avalanche", "surface_event"),
        ("rockslide", "surface_event"),
        ("rock fall", "surface_event"),
        ("mudslide", "surface_event"),
        ("sonic boom", None),
        ("not existing", None),
        ("", None),
    ],
)
def test_event_class(event_type: str, expected: str | None) -> None:
    assert event_class(event_type) == expected


def test_unknown_type_names_itself() -> None:
    with pytest.raises(KeyError, match="tornado"):
        event_class("tornado")


def test_table_is_documented_in_store_md() -> None:
    text = (REPO / "STORE.md").read_text()
    assert class_table_markdown() in text


@pytest.mark.data
def test_labels_csv_agrees_with_the_table(archive: Path) -> None:
    labels = pd.read_csv(archive / "labels.csv", dtype=str, keep_default_na=False)
    types = {str(ev.resource_id): str(ev.event_type) for ev in read_events(archive / "events.xml")}
    assert set(labels["event_id"]) == set(types)
    for row in labels.itertuples(index=False):
        assert event_class(types[row.event_id]) == row[1], (row.event_id, types[row.event_id])
