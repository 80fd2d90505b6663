"""The end of every writing run: ledgers into arrays, tables compacted, metadata
consolidated."""

from __future__ import annotations

from seismoflow.storage.documents import run_documents
from seismoflow.storage.events import materialize_window_ledger
from seismoflow.storage.location import consolidate, open_root, store_lock
from seismoflow.storage.tables import compact_tables


def finalize_store(location: str) -> None:
    """Copy the window ledger into the window groups, fold tables of many parts into one,
    and consolidate metadata so xarray opens the whole store with one read."""
    with store_lock(location):
        root = open_root(location)
        materialize_window_ledger(location, root)
        compact_tables(location)
        consolidate(location, run_documents(location))
