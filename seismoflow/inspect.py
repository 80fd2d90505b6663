"""Read-only views of a store: the ``info`` summary and waveform export."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import xarray as xr

from seismoflow.errors import BadInputError
from seismoflow.ids import ChannelId
from seismoflow.storage.continuous import read_pieces, stored_channels
from seismoflow.storage.location import (
    FINAL,
    UNFINISHED,
    node_location,
    open_root,
    store_state,
)
from seismoflow.storage.schema import EVENTS, describe_flags
from seismoflow.storage.tables import read_table
from seismoflow.times import NS_PER_S, from_ns


def store_info(location: str) -> dict[str, Any]:
    """Counts that describe a store (see ``STORE.md``), also a partial or unfinished one
    (``state``, see :func:`~seismoflow.storage.location.store_state`): what its tables hold.
    """
    catalog = read_table(location, "catalog")
    days = read_table(location, "channel_days")
    quarantine = read_table(location, "quarantine")
    state = store_state(location)
    n_traces = 0
    window_flags: dict[str, int] = {}
    root = open_root(location, mode="r") if state in (UNFINISHED, FINAL) else None
    if root is not None and EVENTS in root:
        flags = np.asarray(root[f"{EVENTS}/flags"][:])  # type: ignore[index]
        n_traces = int(flags.size)
        for value in flags.tolist():
            for name in describe_flags(int(value)):
                window_flags[name] = window_flags.get(name, 0) + 1
    stored = days[days["n_samples"].astype("int64") > 0] if len(days) else days
    day_flags: dict[str, int] = {}
    for names in stored.get("flag_names", []):
        for name in filter(None, str(names).split(",")):
            day_flags[name] = day_flags.get(name, 0) + 1
    channels = sorted(set(stored["channel"])) if len(stored) else []
    types = catalog["event_type"].replace("", "unknown").value_counts() if len(catalog) else {}
    return {
        "store": location,
        "state": state,
        "n_events": int(len(catalog)),
        "n_stations": len({c.rsplit(".", 2)[0] for c in channels}),
        "n_channels": len(channels),
        "n_channel_days": int(len(stored)),
        "n_traces": n_traces,
        "n_samples": int(stored["n_samples"].astype("int64").sum()) if len(stored) else 0,
        "n_quarantined": int(len(quarantine)),
        "events_per_type": {str(k): int(v) for k, v in dict(types).items()},
        "channel_day_flags": dict(sorted(day_flags.items())),
        "window_flags": dict(sorted(window_flags.items())),
    }


def pieces_to_stream(pieces: list[Any]) -> obspy.Stream:
    """Stored pieces as an ObsPy Stream: int32 counts, one trace per piece, exact starts."""
    st = obspy.Stream()
    for p in pieces:
        header = {
            "network": p.channel.network,
            "station": p.channel.station,
            "location": p.channel.location,
            "channel": p.channel.channel,
            "sampling_rate": p.sampling_rate,
            "starttime": from_ns(p.start_ns),
        }
        st += obspy.Trace(np.ascontiguousarray(p.data, dtype=np.int32), header=header)
    return st


def read_channel_pieces(
    location: str, channel: ChannelId, start_ns: int, end_ns: int
) -> obspy.Stream:
    """The stored samples of one channel in ``[start_ns, end_ns]``, a trace per stretch."""
    return pieces_to_stream(read_pieces(open_root(location, mode="r"), channel, start_ns, end_ns))


def export_station(location: str, station: str, start_ns: int, end_ns: int) -> obspy.Stream:
    """All stored channels of ``NET.STA`` with samples in ``[start_ns, end_ns]``."""
    root = open_root(location, mode="r")
    net, sta = station.split(".", 1)
    st = obspy.Stream()
    for name in stored_channels(location):
        ch = ChannelId.parse(name)
        if ch.network == net and ch.station == sta:
            st += pieces_to_stream(read_pieces(root, ch, start_ns, end_ns))
    return st


def export_event(location: str, event_id: str) -> obspy.Stream:
    """Native-rate samples of every channel with a window of ``event_id``, over the window."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(node_location(location, EVENTS), consolidated=False, decode_times=False)
    sel = np.flatnonzero(ds["event_id"].values.astype(object) == event_id)
    if sel.size == 0:
        raise BadInputError(
            f"event {event_id!r} has no windows in {location}; check "
            "`seismoflow info` and the catalogue's event ids"
        )
    root = open_root(location, mode="r")
    duration = round(int(ds.attrs["n_samples"]) * NS_PER_S / float(ds.attrs["sampling_rate"]))
    st = obspy.Stream()
    for i in sel.tolist():
        start = int(ds["window_start"].values[i])
        net, sta, loc = (str(ds[k].values[i]) for k in ("network", "station", "location"))
        for code in filter(None, str(ds["channels"].values[i]).split(",")):
            st += pieces_to_stream(
                read_pieces(root, ChannelId(net, sta, loc, code), start, start + duration)
            )
    return st


def write_mseed(stream: obspy.Stream, out: Path) -> None:
    """Write miniSEED (Steim-2, 4096-byte records; plain int32 where Steim-2 cannot hold it)."""
    if not len(stream):
        raise BadInputError("nothing to export for this selection; check the codes and times")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        stream.write(str(out), format="MSEED", encoding="STEIM2", reclen=4096)
    except Exception:  # noqa: BLE001 - differences too large for Steim-2
        stream.write(str(out), format="MSEED", encoding="INT32", reclen=4096)
