"""Physics features: numerics on synthetic signals; noise windows and features on the real
store through ``seismoflow features``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from seismoflow.features.physics import (
    COMPONENT_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    band_limit,
    component_features,
    moments,
    sta_lta,
    window_features,
)
from tests.conftest import copy_store, run_cli

RATE = 100.0
PRE = 40.0
N = 13_000
COL = {f.name: i for i, f in enumerate(COMPONENT_FEATURES)}


def _noise(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    return rng.standard_normal((n, N))


def _event(rng: np.random.Generator, f0: float, onset_s: float = 50.0) -> np.ndarray:
    """Noise plus a decaying sine burst at ``f0`` Hz starting ``onset_s`` into the window."""
    t = np.arange(N) / RATE
    burst = np.where(t >= onset_s, np.exp(-(t - onset_s) / 8.0), 0.0)
    return 0.05 * rng.standard_normal(N) + burst * np.sin(2 * np.pi * f0 * t)


def test_table_names_units_and_components() -> None:
    assert len(FEATURES) == 3 * len(COMPONENT_FEATURES) == len(set(FEATURE_NAMES))
    assert all(f.unit and f.description for f in FEATURES)
    assert [n[:2] for n in FEATURE_NAMES[: len(COMPONENT_FEATURES)]] == ["z_"] * len(
        COMPONENT_FEATURES
    )


@pytest.mark.parametrize("f0", [0.8, 1.5, 3.0, 6.0])
def test_dominant_and_centroid_frequency_of_a_sine(f0: float) -> None:
    x = _event(np.random.default_rng(1), f0)[None, :]
    feats = component_features(x, RATE, PRE)[0]
    assert abs(feats[COL["dominant_freq"]] - f0) < 0.15
    assert abs(feats[COL["centroid_freq"]] - f0) < 0.35 * f0


def test_band_power_ordering() -> None:
    rng = np.random.default_rng(2)
    low = component_features(_event(rng, 0.8)[None, :], RATE, PRE)[0]
    high = component_features(_event(rng, 6.0)[None, :], RATE, PRE)[0]
    assert low[COL["log_power_0.5_1hz"]] > low[COL["log_power_4_8hz"]]
    assert high[COL["log_power_4_8hz"]] > high[COL["log_power_0.5_1hz"]]
    assert high[COL["log_hf_lf_ratio"]] > 0 > low[COL["log_hf_lf_ratio"]]


def test_kurtosis_of_a_spike_and_of_noise() -> None:
    rng = np.random.default_rng(3)
    spike = np.zeros((1, 1000))
    spike[0, 500] = 1.0
    kurt, skew = moments(spike)
    assert kurt[0] > 900 and skew[0] > 30
    kurt, skew = moments(rng.standard_normal((1, 100_000)))
    assert abs(kurt[0]) < 0.1 and abs(skew[0]) < 0.05
    assert moments(np.ones((1, 10)))[0][0] == 0.0


def test_sta_lta_of_a_step() -> None:
    rng = np.random.default_rng(4)
    y = rng.standard_normal((1, 4000))
    y[0, 2000:] *= 10.0
    ratio = sta_lta(y, 20.0, sta_s=1.0, lta_s=30.0)
    assert np.isnan(ratio[0, :599]).all()
    assert np.nanmax(ratio[0, :2000]) < 3
    peak = int(np.nanargmax(ratio[0]))
    assert 2000 <= peak < 2040 and ratio[0, peak] > 10


def test_gain_and_offset_do_not_change_features() -> None:
    x = _event(np.random.default_rng(5), 2.0)[None, :]
    a = component_features(x, RATE, PRE)
    b = component_features(3000.0 * x + 12345.0, RATE, PRE)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_nan_handling_missing_partial_and_dead() -> None:
    rng = np.random.default_rng(6)
    w = np.stack([_event(rng, 2.0), _event(rng, 2.0), _event(rng, 2.0)])[None].repeat(3, 0)
    w[0, 1:] = np.nan  # vertical only
    w[1, 0, :3000] = np.nan  # a partial vertical component
    w[2, 0] = 517.0  # a dead (flat) vertical component
    f = window_features(w.astype(np.float32), RATE, PRE)
    nz = len(COMPONENT_FEATURES)
    assert f.shape == (3, len(FEATURES)) and f.dtype == np.float32
    no_ps = [i for i, c in enumerate(COMPONENT_FEATURES) if "_ps_" not in c.name]
    assert np.isfinite(f[0, :nz][no_ps]).all() and np.isnan(f[0, nz:]).all()
    assert np.isfinite(f[1, :nz][no_ps]).all()
    assert np.isnan(f[:, COL["log_ps_amp_ratio"]]).all()  # no arrivals given
    assert np.isfinite(f[2, :nz][no_ps]).all()
    assert f[2, COL["dead_fraction"]] > 0.99 and f[1, COL["dead_fraction"]] < 0.01
    mostly_missing = w[:1].copy()
    mostly_missing[0, 0, : N * 6 // 10] = np.nan
    assert np.isnan(window_features(mostly_missing.astype(np.float32), RATE, PRE)[0, :nz]).all()


def test_ps_ratio_sees_a_strong_p() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(N) / RATE - PRE
    x = 0.01 * rng.standard_normal(N)
    x += np.where((t > 5) & (t < 8), 1.0, 0.0) * np.sin(2 * np.pi * 5 * t)  # P at 5 s
    x += np.where((t > 9) & (t < 14), 0.1, 0.0) * np.sin(2 * np.pi * 3 * t)  # weak S at 9 s
    f = component_features(x[None], RATE, PRE, np.array([5.0]), np.array([9.0]))[0]
    assert f[COL["log_ps_amp_ratio"]] > 0.7


def test_band_limit_uses_only_the_common_band() -> None:
    t = np.arange(N) / RATE
    above = np.sin(2 * np.pi * 20.0 * t)[None]  # 20 Hz: outside every trace's common band
    inside = np.sin(2 * np.pi * 3.0 * t)[None]
    y, valid, _ = band_limit(above + inside, RATE)
    y_in, _, _ = band_limit(inside, RATE)
    assert valid[0]
    assert np.corrcoef(y[0, 200:-200], y_in[0, 200:-200])[0, 1] > 0.99


# --- real store -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def featured(
    archive_store: tuple[Path, dict[str, Any]],
    archive: Path,
    prefect_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], list[str]]:
    """A copy of the archive store after ``seismoflow features`` (4 noise windows per set)."""
    store = copy_store(archive_store[0], tmp_path_factory.mktemp("features") / "s.zarr")
    lists = [str(p) for p in sorted((archive / "sources" / "rocknet").glob("*_meta.csv"))]
    args = ["features", "--store", str(store), "--per-channel-set", "4", "--json"]
    for path in lists:
        args += ["--noise-label-list", path]
    proc = run_cli(args, prefect_server)
    return store, json.loads(proc.stdout), lists


@pytest.mark.data
@pytest.mark.slow
def test_noise_windows_are_far_from_events_and_screened(
    featured: tuple[Path, dict[str, Any], list[str]],
) -> None:
    from seismoflow.features.noise import read_label_windows, screen_statistic
    from seismoflow.settings import Settings
    from storage.tables import read_table

    store, summary, lists = featured
    s = Settings()
    assert summary["noise"]["written"] > 0
    group = zarr.open_group(str(store), mode="r", path="noise")
    events = zarr.open_group(str(store), mode="r", path="events")
    assert dict(group.attrs)["n_samples"] == dict(events.attrs)["n_samples"]
    starts = np.asarray(group["window_start"][:])
    n = len(starts)
    assert n == summary["noise"]["written"]
    length = round(s.window_pre_s + s.window_post_s) * 10**9
    origins = read_table(str(store), "catalog")["origin_time_ns"].to_numpy(dtype=np.int64)
    margin = round(s.noise_margin_s * 1e9)
    listed = read_label_windows(lists)
    for i in range(n):
        a, b = int(starts[i]), int(starts[i]) + length
        assert not ((origins > a - margin) & (origins < b + margin)).any()
        assert not any(w.start_ns <= b and w.end_ns >= a for w in listed)
        block = np.asarray(group["waveform"][i])
        present = np.isfinite(block).any(axis=1)
        assert present.any() and np.isfinite(block[present]).all()
        assert screen_statistic(block, s.window_sampling_rate) <= s.noise_screen_max_ratio
    labels = np.asarray(group["label"][:]).astype(object)
    assert set(labels) == {"noise"}
    assert set(np.asarray(group["event_id"][:]).astype(object)) == {""}
    # The O2.WILZ record holds earthquakes: the screen keeps (almost) all of it out.
    stations = np.asarray(group["station"][:]).astype(object)
    assert (stations == "WILZ").sum() <= 2


@pytest.mark.data
@pytest.mark.slow
def test_features_finite_where_data_exist_and_dead_channels_stand_out(
    featured: tuple[Path, dict[str, Any], list[str]],
) -> None:
    from seismoflow.examples import list_examples
    from seismoflow.features.extract import read_features

    store, summary, _ = featured
    examples = list_examples(str(store))
    feats = read_features(str(store), examples)
    assert list(feats["group"]) == list(examples["group"])
    assert list(feats["trace"]) == list(examples["trace"])
    assert {"events", "noise"} <= set(summary["features"])
    assert (examples["label"] == "noise").sum() == summary["noise"]["written"]
    no_ps = [n for n in FEATURE_NAMES if "_ps_" not in n]
    for comp, has in (("z", "has_z"), ("n", "has_n"), ("e", "has_e")):
        cols = [c for c in no_ps if c.startswith(comp + "_")]
        rows = examples[has].to_numpy()
        values = feats.loc[rows, cols].to_numpy()
        # A component listed but holding less than half a window of data gets NaN.
        finite = np.isfinite(values).all(axis=1)
        assert finite.mean() > 0.98, comp
        assert np.isnan(feats.loc[~examples[has].to_numpy(), cols].to_numpy()).all()
    ev = examples["group"] == "events"
    ps = feats.loc[ev & examples["has_z"], "z_log_ps_amp_ratio"]
    assert np.isfinite(ps).mean() > 0.5  # arrivals known where the station is located
    assert np.isnan(feats.loc[examples["group"] == "noise", "z_log_ps_amp_ratio"]).all()
    # Dead channels (archive README): UW.VFP..EHZ and UW.YACT..HHE.
    flat = (examples["flags"] & 32) != 0
    dead_z = flat & examples["trace_key"].str.endswith("|UW.VFP..EH?")
    dead_e = flat & examples["trace_key"].str.endswith("|UW.YACT..HH?")
    assert dead_z.sum() == 2 and dead_e.sum() == 2
    assert (feats.loc[dead_z, "z_dead_fraction"] > 0.99).all()
    assert (feats.loc[dead_e, "e_dead_fraction"] > 0.99).all()
    live = feats.loc[ev & ~dead_z & examples["has_z"], "z_dead_fraction"]
    assert (live < 0.5).mean() > 0.99
    attrs = dict(zarr.open_group(str(store), mode="r", path="features/events").attrs)
    assert attrs["status"] == "complete" and attrs["flow_run_id"] and attrs["code_version"]
    units = zarr.open_group(str(store), mode="r", path="features/events")["unit"]
    assert units.shape == (len(FEATURES),)


@pytest.mark.data
@pytest.mark.slow
def test_rerun_is_idempotent(featured: tuple[Path, dict[str, Any], list[str]]) -> None:
    from seismoflow.features import extract, noise
    from seismoflow.ingest import window_layout
    from seismoflow.settings import Settings

    store, summary, lists = featured
    loc = str(store)
    s = Settings()
    before = np.asarray(zarr.open_group(loc, mode="r")["features/noise/values"][:])
    keys = np.asarray(zarr.open_group(loc, mode="r")["noise/trace_key"][:]).astype(object)
    plan = noise.plan_store_noise(loc, window_layout(s), s.noise_margin_s, lists, s.noise_seed)
    counts = noise.cut_noise(
        loc, sorted(plan.candidates), plan, window_layout(s), 4, s.noise_screen_max_ratio
    )
    assert counts.get("written", 0) == 0
    assert counts["already_stored"] == summary["noise"]["written"]
    extract.extract_features(loc, groups=("noise",))
    root = zarr.open_group(loc, mode="r")
    np.testing.assert_array_equal(np.asarray(root["features/noise/values"][:]), before)
    assert list(np.asarray(root["noise/trace_key"][:]).astype(object)) == list(keys)
