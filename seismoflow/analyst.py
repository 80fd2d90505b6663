"""Analyst labels: class overrides of catalogued events, kept in the store, versioned.

``seismoflow labels import --store PATH --csv FILE`` appends one *version* of labels to the
store table :data:`TABLE` (key :data:`KEY`: ``event_id``, ``version``); nothing is ever
replaced, and the source catalogue (``tables/catalog``) is not touched. An event's analyst
label is the row of its highest version (the latest import that names it). Training
(``seismoflow.models.training.load_inputs``) uses it over the class of the catalogue's
event type, and the model directory records how many events it relabelled.

CSV columns: ``event_id``, ``class`` (one of :data:`seismoflow.labels.CLASSES` less
``noise``), ``analyst``, ``time`` (when the analyst decided, ISO 8601, UTC).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from seismoflow.errors import BadInputError
from seismoflow.labels import CLASSES, EVENT_CLASSES
from seismoflow.storage.location import store_lock
from seismoflow.storage.tables import read_table, write_table

TABLE = "analyst_labels"
KEY: tuple[str, ...] = ("event_id", "version")
CSV_COLUMNS: tuple[str, ...] = ("event_id", "class", "analyst", "time")


def read_csv(path: str | Path) -> pd.DataFrame:
    """The analyst CSV, checked: the four columns, a known event class per row, a parseable
    UTC time, one row per event."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BadInputError(f"cannot read analyst labels from {path}: {exc}") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise BadInputError(f"{path} lacks the columns {missing} (needs {list(CSV_COLUMNS)})")
    df = df[list(CSV_COLUMNS)].apply(lambda s: s.str.strip())
    bad = sorted(set(df["class"]) - set(EVENT_CLASSES))
    if bad:
        raise BadInputError(f"{path}: classes {bad} are not among {list(EVENT_CLASSES)}")
    if (df["event_id"] == "").any():
        raise BadInputError(f"{path}: rows without an event_id")
    times = pd.to_datetime(df["time"], utc=True, errors="coerce")
    if times.isna().any():
        rows = list(df.index[times.isna()][:5] + 2)
        raise BadInputError(f"{path}: unreadable time on lines {rows} (ISO 8601, UTC)")
    dup = df["event_id"][df["event_id"].duplicated()]
    if len(dup):
        raise BadInputError(f"{path}: events labelled twice: {sorted(set(dup))[:5]}")
    return df.assign(time=times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def import_labels(location: str, path: str | Path) -> dict[str, object]:
    """Append the CSV at ``path`` as a new version of the store's analyst labels; return a
    summary (version, rows, events unknown to the catalogue, class counts)."""
    df = read_csv(path)
    catalog = read_table(location, "catalog")
    known = set(catalog["event_id"].astype(str)) if len(catalog) else set()
    unknown = sorted(set(df["event_id"]) - known)
    if unknown:
        raise BadInputError(
            f"{path}: events not in the store's catalogue: {unknown[:5]}"
            + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    with store_lock(location):
        old = read_table(location, TABLE)
        version = int(old["version"].astype(np.int64).max()) + 1 if len(old) else 1
        rows = df.assign(
            version=np.int64(version),
            imported_at=dt.datetime.now(dt.UTC).isoformat(),
            source_file=str(Path(path).name),
        )
        write_table(location, TABLE, rows, replace_keys=KEY)
    return {
        "table": TABLE,
        "version": version,
        "rows": len(rows),
        "classes": rows["class"].value_counts().to_dict(),
    }


def current_labels(location: str) -> pd.DataFrame:
    """The latest analyst label of every event that has one (columns of the CSV plus
    ``version``); empty when the store has none."""
    table = read_table(location, TABLE)
    if table.empty or "class" not in table.columns:
        return pd.DataFrame(columns=[*CSV_COLUMNS, "version"])
    table = table.assign(version=table["version"].astype(np.int64))
    latest = table.sort_values("version").drop_duplicates("event_id", keep="last")
    return latest[[*CSV_COLUMNS, "version"]].reset_index(drop=True)


def apply_analyst_labels(location: str, examples: pd.DataFrame) -> pd.DataFrame:
    """``examples`` with the analyst class of each relabelled event in ``label`` and the
    column ``label_source``: ``analyst``, ``catalogue`` or ``noise``."""
    labels = current_labels(location)
    out = examples.copy()
    is_noise = out["group"].astype(str).to_numpy() == "noise"
    source = np.where(is_noise, "noise", "catalogue").astype(object)
    if len(labels):
        by_event = dict(zip(labels["event_id"], labels["class"], strict=True))
        ids = out["event_id"].astype(str)
        hit = ids.isin(by_event.keys()).to_numpy() & ~is_noise
        if hit.any():
            label = out["label"].astype(str).to_numpy(dtype=object)
            label[hit] = [by_event[e] for e in ids[hit]]
            out["label"] = pd.Categorical(label, categories=list(CLASSES))
            source[hit] = "analyst"
    out["label_source"] = source
    return out
