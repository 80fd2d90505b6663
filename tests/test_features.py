"""Physics features: numerics on synthetic signals; noise windows and features on the real
store through ``seismoflow features``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from seismoflow.featurize.physics import (
    COMPONENT_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    TRACE_COLUMNS,
    VP_VS,
    WORK_RATE,
    Anchor,
    arrival_anchors,
    band_limit,
    component_features,
    detect_onset,
    envelope,
    moments,
    sta_lta,
    window_features,
)

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
    from seismoflow.models.sklearn_models import vertical_features

    n = len(COMPONENT_FEATURES)
    assert len(FEATURES) == 3 * n + len(TRACE_COLUMNS) == len(set(FEATURE_NAMES))
    assert all(f.unit and f.description for f in FEATURES)
    assert [name[:2] for name in FEATURE_NAMES[:n]] == ["z_"] * n
    # Per-trace metadata (the arrival anchor) is never a model input.
    assert FEATURE_NAMES[3 * n :] == ("arrival_anchor",)
    assert vertical_features(FEATURE_NAMES) == list(FEATURE_NAMES[:n])


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
    # No arrivals given: the P/S features come from detected anchors, never NaN.
    assert np.isfinite(f[0, :nz]).all() and np.isnan(f[0, nz : 3 * nz]).all()
    assert np.isfinite(f[1, :nz]).all()
    assert np.isfinite(f[2, :nz]).all()
    assert f[2, COL["dead_fraction"]] > 0.99 and f[1, COL["dead_fraction"]] < 0.01
    assert f[0, -1] == Anchor.DETECTED and f[2, -1] == Anchor.ENVELOPE  # flat: no trigger
    mostly_missing = w[:1].copy()
    mostly_missing[0, 0, : N * 6 // 10] = np.nan
    assert np.isnan(window_features(mostly_missing.astype(np.float32), RATE, PRE)).all()
    mostly_missing = w[1:2].copy()  # with horizontals: anchored on the north
    mostly_missing[0, 0, : N * 6 // 10] = np.nan
    g = window_features(mostly_missing.astype(np.float32), RATE, PRE)[0]
    assert np.isnan(g[:nz]).all() and np.isfinite(g[nz:]).all() and g[-1] == Anchor.DETECTED
    nothing = np.full((1, 3, N), np.nan, dtype=np.float32)
    assert np.isnan(window_features(nothing, RATE, PRE)).all()


def test_ps_ratio_sees_a_strong_p() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(N) / RATE - PRE
    x = 0.01 * rng.standard_normal(N)
    x += np.where((t > 5) & (t < 8), 1.0, 0.0) * np.sin(2 * np.pi * 5 * t)  # P at 5 s
    x += np.where((t > 9) & (t < 14), 0.1, 0.0) * np.sin(2 * np.pi * 3 * t)  # weak S at 9 s
    f = component_features(x[None], RATE, PRE, np.array([5.0]), np.array([9.0]))[0]
    assert f[COL["log_ps_amp_ratio"]] > 0.7


def _onset_trace(rng: np.random.Generator, onset_s: float, snr: float, n: int = 2600) -> np.ndarray:
    """20 Hz unit noise plus, from ``onset_s``, a 3 Hz burst ``snr`` times the noise
    amplitude decaying over 10 s."""
    t = np.arange(n) / WORK_RATE
    burst = np.where(t >= onset_s, snr * np.exp(-(t - onset_s) / 10.0), 0.0)
    return rng.standard_normal(n) + burst * np.sin(2 * np.pi * 3.0 * (t - onset_s))


@pytest.mark.parametrize("onset_s", [35.0, 52.5, 80.0, 110.0])
@pytest.mark.parametrize("snr", [5.0, 10.0, 100.0])
def test_detect_onset_finds_a_synthetic_onset(onset_s: float, snr: float) -> None:
    rng = np.random.default_rng(int(onset_s * 10 + snr))
    y = np.stack([_onset_trace(rng, onset_s, snr) for _ in range(5)])
    found = detect_onset(y, WORK_RATE)
    assert np.isfinite(found).all()
    assert np.abs(found - onset_s).max() <= (0.5 if snr < 10 else 0.15), found


def test_detect_onset_after_band_limiting_raw_data() -> None:
    """The same at 100 Hz through :func:`band_limit` (filter, decimate, normalise)."""
    rng = np.random.default_rng(11)
    t = np.arange(N) / RATE
    x = 0.05 * rng.standard_normal((4, N))
    x += np.where(t >= 70.0, np.exp(-(t - 70.0) / 8.0), 0.0) * np.sin(2 * np.pi * 2.0 * t)
    y, _, _ = band_limit(x, RATE)
    found = detect_onset(y, WORK_RATE)
    # The zero-phase (acausal) 0.5-8 Hz filter spreads a little energy before the onset.
    assert np.abs(found - 70.0).max() <= 0.75, found


def test_detect_onset_on_pure_noise_and_flat_traces_is_nan() -> None:
    """The documented outcome: nothing triggers (STA/LTA of stationary noise stays far
    below ``ONSET_ON``), so the detector returns NaN and the caller falls back."""
    rng = np.random.default_rng(12)
    y = np.concatenate([rng.standard_normal((20, 2600)), np.zeros((1, 2600))])
    assert np.isnan(detect_onset(y, WORK_RATE)).all()
    x, _, _ = band_limit(rng.standard_normal((5, N)), RATE)  # band-limited noise too
    assert np.isnan(detect_onset(x, WORK_RATE)).all()


def test_detect_onset_takes_the_first_trigger_and_skips_the_edges() -> None:
    rng = np.random.default_rng(13)
    y = _onset_trace(rng, 50.0, 10.0) + _onset_trace(rng, 90.0, 100.0)  # weaker P first
    assert abs(detect_onset(y[None], WORK_RATE)[0] - 50.0) <= 0.5
    late = _onset_trace(rng, 125.0, 100.0)[None]  # in the last 10 s: no room for S windows
    assert np.isnan(detect_onset(late, WORK_RATE)).all()
    early = _onset_trace(rng, 10.0, 100.0)[None]  # before the first full LTA: not seen
    assert np.isnan(detect_onset(early, WORK_RATE)).all()


def test_arrival_anchors_predicted_detected_and_envelope() -> None:
    rng = np.random.default_rng(14)
    pre = 40.0
    y = np.stack([_onset_trace(rng, pre + 12.0, 20.0) for _ in range(4)])
    y[3] = rng.standard_normal(y.shape[1])  # noise only
    env = envelope(y)
    t = np.arange(y.shape[1]) / WORK_RATE - pre
    p_pred = np.array([12.3, np.nan, 12.3, np.nan])
    s_pred = np.array([21.0, np.nan, 200.0, np.nan])  # row 2: S outside the window
    tp, ts, code = arrival_anchors(y, env, t, p_pred, s_pred)
    assert list(code) == [Anchor.PREDICTED, Anchor.DETECTED, Anchor.DETECTED, Anchor.ENVELOPE]
    assert tp[0] == 12.3 and ts[0] == 21.0
    for i in (1, 2):  # detected P at 12 s after the origin, S from Vp/Vs
        assert abs(tp[i] - 12.0) <= 0.5
        assert ts[i] == pytest.approx(tp[i] + (VP_VS - 1) * tp[i])
    assert t[0] + 0.5 <= tp[3] < ts[3] <= t[-1] - 5.0
    assert 1.0 <= ts[3] - tp[3] <= 30.0


def test_missing_arrivals_give_the_same_features_as_detected_ones() -> None:
    """A window without predicted arrivals is measured, not left NaN: P on the detected
    onset, S from Vp/Vs, and a strong P is seen as with the predicted arrivals."""
    rng = np.random.default_rng(15)
    t = np.arange(N) / RATE - PRE
    tp, ts = 10.0, 10.0 * VP_VS
    x = 0.05 * rng.standard_normal(N)
    x += np.where((t > tp) & (t < tp + 3), 1.0, 0.0) * np.sin(2 * np.pi * 5 * (t - tp))
    x += np.where((t > ts) & (t < ts + 5), 0.1, 0.0) * np.sin(2 * np.pi * 3 * (t - ts))
    w = np.stack([x, x, x])[None].astype(np.float32)
    f = window_features(w, RATE, PRE)[0]
    assert f[-1] == Anchor.DETECTED
    assert np.isfinite(f[:-1]).all() and f[COL["log_ps_amp_ratio"]] > 0.7
    known = window_features(w, RATE, PRE, np.array([tp]), np.array([ts]))[0]
    assert known[-1] == Anchor.PREDICTED
    assert abs(known[COL["log_ps_amp_ratio"]] - f[COL["log_ps_amp_ratio"]]) < 0.2


def test_event_weights_give_each_event_one_vote_and_classes_equal_totals() -> None:
    """``sklearn_models.event_weights`` (the feature models' training weights; here beside
    the features they are measured with)."""
    from sklearn.utils.class_weight import compute_sample_weight

    from seismoflow.models.sklearn_models import event_weights

    y = np.array(["eq", "eq", "eq", "ex", "ex", "noise", "noise"])
    ids = np.array(["e1", "e1", "e2", "e3", "e3", "", ""], dtype=object)
    w = event_weights(y, ids)
    assert w.mean() == pytest.approx(1.0)
    assert w[0] == w[1] == pytest.approx(w[2] / 2)  # e1's two traces share one vote
    totals = [w[y == c].sum() for c in ("eq", "ex", "noise")]
    np.testing.assert_allclose(totals, totals[0])
    assert w[5] == w[6]  # empty ids (noise windows): one window, one event
    np.testing.assert_allclose(event_weights(y, None), compute_sample_weight("balanced", y))


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
    featured_store: tuple[Path, dict[str, Any], list[str]],
) -> tuple[Path, dict[str, Any], list[str]]:
    """The session's featured copy of the archive store (4 noise windows per set)."""
    return featured_store


@pytest.mark.data
@pytest.mark.slow
def test_noise_windows_are_far_from_events_and_screened(
    featured: tuple[Path, dict[str, Any], list[str]],
) -> None:
    from seismoflow.storage.tables import read_table

    from seismoflow.featurize.noise import read_label_windows, screen_statistic
    from seismoflow.settings import Settings

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
    from seismoflow.featurize.extract import read_features

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
    # P/S windows anchored on predicted arrivals or, without them (every noise window), on
    # the detected onset: never NaN where the vertical has data.
    anchor = feats["arrival_anchor"].to_numpy()
    assert (anchor[ev.to_numpy()] == 0).mean() > 0.5  # predicted where the station is located
    assert (anchor[~ev.to_numpy()] != 0).all()
    has_z = examples["has_z"].to_numpy()
    assert np.isfinite(feats.loc[has_z, "z_log_ps_amp_ratio"]).mean() > 0.98
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
    from seismoflow.archive.ingest import window_layout
    from seismoflow.featurize import extract, noise
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
