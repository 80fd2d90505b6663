"""The example index and its splits: labels from the class table, sites and events never on
both sides of a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from seismoflow.examples import EXAMPLE_COLUMNS, event_split, list_examples, site_cell, site_folds
from seismoflow.labels import CLASSES, event_class


def test_site_cell() -> None:
    assert site_cell(46.30, -121.70) == "46.25_-121.75"
    assert site_cell(46.0, -122.0) == "46.00_-122.00"
    assert site_cell(-0.01, 0.01) == "-0.25_0.00"
    assert site_cell(float("nan"), 1.0) == ""


def _synthetic(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(120):
        label = ["earthquake", "explosion", "surface_event", "noise"][e % 4]
        site = f"s{rng.integers(0, 30)}"
        rows += [{"event_id": f"e{e}", "site": site, "label": label}] * int(rng.integers(1, 6))
    return pd.DataFrame(rows)


def test_site_folds_keep_sites_apart_and_balance_classes() -> None:
    df = _synthetic()
    folds = site_folds(df, 5, seed=1)
    assert set(folds) == set(range(5))
    assert (df.assign(f=folds).groupby("site")["f"].nunique() == 1).all()
    counts = pd.crosstab(folds, df["label"])
    assert (counts > 0).all().all()
    np.testing.assert_array_equal(folds, site_folds(df, 5, seed=1))
    with pytest.raises(ValueError, match="sites"):
        site_folds(df.head(3), 5, seed=0)


def test_event_split_keeps_events_apart() -> None:
    df = _synthetic()
    for by_site in (False, True):
        split = event_split(df, (0.7, 0.15, 0.15), seed=2, by_site=by_site)
        assert set(split) == {"train", "val", "test"}
        key = "site" if by_site else "event_id"
        assert (df.assign(s=split).groupby(key)["s"].nunique() == 1).all()
        share = pd.Series(split).value_counts(normalize=True)
        assert share["train"] > share["val"] and share["train"] > share["test"]


@pytest.mark.data
@pytest.mark.slow
def test_list_examples_on_the_archive(archive_store: tuple[Path, dict[str, Any]]) -> None:
    import zarr

    store, _ = archive_store
    ex = list_examples(str(store))
    assert list(ex.columns) == list(EXAMPLE_COLUMNS)
    events = zarr.open_group(str(store), mode="r", path="events")
    types = np.asarray(events["event_type"][:]).astype(object)
    learnable = [i for i, t in enumerate(types) if event_class(str(t)) is not None]
    assert list(ex.loc[ex["group"] == "events", "trace"]) == learnable
    for row in ex.sample(200, random_state=0).itertuples(index=False):
        assert row.label == event_class(str(types[row.trace]))
    assert set(ex["label"].astype(str)) <= set(CLASSES)
    assert ex["has_z"].mean() > 0.95
    # Horizontal components only where the sources recorded them.
    assert ex.loc[ex["has_n"], "label"].astype(str).isin(["surface_event", "noise"]).mean() > 0.9
    # Sites are 0.25-degree cells of the event location; one event has one site.
    assert (ex.groupby("event_id")["site"].nunique() == 1).all()
    assert ex["site"].str.fullmatch(r"-?\d+\.\d\d_-?\d+\.\d\d").all()
    assert ex["origin_time"].notna().all()
    # The dead channels of the archive README are kept and flagged flat.
    flat = ex[(ex["flags"] & 32) != 0]
    assert sorted(flat["trace_key"]) == sorted(
        [
            "smi:local/esec/167|UW.YACT..HH?",
            "smi:local/esec/168|UW.YACT..HH?",
            "smi:local/pnsn/uw61777692|UW.VFP..EH?",
            "smi:local/pnsn/uw61779036|UW.VFP..EH?",
        ]
    )
    folds = site_folds(ex, 5, seed=0)
    assert (ex.assign(f=folds).groupby("site")["f"].nunique() == 1).all()
    assert (pd.crosstab(folds, ex["label"].astype(str)) > 0).all().all()
    split = event_split(ex, seed=0)
    assert (ex.assign(s=split).groupby("event_id")["s"].nunique() == 1).all()
