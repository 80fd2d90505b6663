"""Predicted P and S arrivals (iasp91, ``obspy.taup``) that place the P/S feature windows.

Distance and depth only position windows; they are never features. An unknown distance
gives NaN, and the P/S windows of that trace are then anchored on the onset detected on
its vertical (``physics.arrival_anchors``; ``arrival_anchor`` records which rule was
used); an unknown depth counts as 0 km (surface sources, which carry no depth in the
catalogue, would otherwise be told apart by a NaN).
"""

from __future__ import annotations

import functools

import numpy as np

P_PHASES = ["P", "p", "Pn", "Pg", "Pdiff"]
S_PHASES = ["S", "s", "Sn", "Sg", "Sdiff"]


@functools.lru_cache(maxsize=1)
def _model() -> object:
    from obspy.taup import TauPyModel

    return TauPyModel(model="iasp91")


@functools.lru_cache(maxsize=65536)
def _first(distance_deg: float, depth_km: float) -> tuple[float, float]:
    model = _model()
    out = []
    for phases in (P_PHASES, S_PHASES):
        arr = model.get_travel_times(  # type: ignore[attr-defined]
            source_depth_in_km=depth_km, distance_in_degree=distance_deg, phase_list=phases
        )
        out.append(float(min(a.time for a in arr)) if arr else np.nan)
    return out[0], out[1]


GRID_DEG = 0.05  # travel times are interpolated linearly between nodes this far apart
GRID_KM = 2.0  # depths are rounded to this step


def travel_times(distance_deg: np.ndarray, depth_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First P and S travel times (s) per trace; NaN where the distance is unknown.

    Rays are traced only at the nodes of a 0.05-degree grid next to the data, at depths
    rounded to 2 km, and interpolated linearly between nodes (errors well under 0.1 s at
    local distances), so thousands of traces cost a few dozen ray computations.
    """
    dist = np.asarray(distance_deg, dtype=float)
    depth = np.nan_to_num(np.asarray(depth_km, dtype=float), nan=0.0)
    depth = np.maximum(0.0, np.round(depth / GRID_KM) * GRID_KM)
    tp = np.full(dist.shape, np.nan)
    ts = np.full(dist.shape, np.nan)
    ok = np.isfinite(dist) & (dist >= 0) & (dist <= 180)
    for i in np.flatnonzero(ok):
        lo = np.floor(dist[i] / GRID_DEG)
        w = dist[i] / GRID_DEG - lo
        a = _first(round(lo * GRID_DEG, 4), float(depth[i]))
        b = _first(round(min(180.0, (lo + 1) * GRID_DEG), 4), float(depth[i]))
        tp[i] = (1 - w) * a[0] + w * b[0]
        ts[i] = (1 - w) * a[1] + w * b[1]
    return tp, ts
