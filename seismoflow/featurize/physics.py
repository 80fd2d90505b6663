"""Physics features of seismic windows: plain, typed NumPy over a batch of traces.

Every feature is computed in one band that every trace of a store supports (0.5-8 Hz: the
lowest native rate of the shared archive is 20 Hz, so nothing above ~8-9 Hz is real for
every trace), after per-trace normalisation, so instrument gain, sampling rate and band do
not leak into the values. Nothing is read from codes, rates, coordinates, depth or
magnitude; arrival times predicted from distance only place the P and S windows.

Every window with data has P and S anchors (:func:`arrival_anchors`): the predicted
arrivals where they are known and fall inside the window, else a P onset detected on the
vertical (:func:`detect_onset`, STA/LTA; the envelope onset when nothing triggers) and
S = P + (Vp/Vs - 1)(P - origin). Which rule placed a window's anchors is recorded per trace
in the ``arrival_anchor`` column (metadata: never a model input, it has no component
prefix), so the P/S features are never NaN for want of station coordinates, and "no
predicted arrival" (every noise window, ~10% of the catalogued body-wave events) is not
a missing value a model could learn the source collection from.

Windows are ``(n, 3, samples)`` float32 (components Z, N, E) at ``rate`` Hz with NaN where
there is no data; ``pre_s`` seconds precede the reference time (origin). Features of one
component are prefixed ``z_``, ``n_``, ``e_``: the vertical ones can be used alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import signal as sps
from scipy.ndimage import uniform_filter1d

BAND_HZ: tuple[float, float] = (0.5, 8.0)
WORK_RATE = 20.0  # Hz: the band-limited trace is decimated to this rate
OCTAVES: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0))
SEGMENT = 512  # samples at WORK_RATE (25.6 s) of one spectrum
STA_S, LTA_S = 1.0, 30.0
ENV_SMOOTH_S = 1.0
MIN_COVERAGE = 0.5  # a component with less data than this share of the window gets NaN
EPS = 1e-12
DEAD_RUN_S = 1.0  # equal consecutive samples for this long mark a dead stretch
COMPONENT_PREFIX: tuple[str, ...] = ("z", "n", "e")
FEATURE_SET = "physics-v2"  # bump when any value changes: old stores are re-extracted

# Onset detection (:func:`detect_onset`) and the S estimate (:func:`arrival_anchors`).
ONSET_ON = 4.0  # STA/LTA (STA_S / LTA_S) trigger level
ONSET_AIC_S: tuple[float, float] = (3.0, 0.5)  # the AIC pick searches trigger - 3 s .. + 0.5 s
ONSET_END_GUARD_S = 10.0  # no onset in the last 10 s (the S windows need room after it)
VP_VS = 3.0**0.5  # Poisson solid: S - P = (VP_VS - 1) * (P - origin)
SP_RANGE_S: tuple[float, float] = (1.0, 30.0)  # the S - P estimate is clipped to this
P_MARGIN_S = 0.5  # P windows start this long before P (``ARRIVAL_WINDOWS``, P/S ratios)
S_TAIL_S = 5.0  # the P/S ratios' S window ends this long after S


class Anchor:
    """Codes of the ``arrival_anchor`` column: which rule placed the P and S windows."""

    PREDICTED = 0.0  # taup P and S (station and event located, both inside the window)
    DETECTED = 1.0  # STA/LTA onset on the vertical; S from the fixed Vp/Vs ratio
    ENVELOPE = 2.0  # no STA/LTA trigger (e.g. pure noise): envelope onset; S as above


# Time windows of the arrival-window energies: (anchor, start s, end s after it) + meaning.
# Anchors: :func:`arrival_anchors` (predicted P and S, else the detected onset and the
# Vp/Vs estimate of S), so every window with data has them.
ARRIVAL_WINDOWS: dict[str, tuple[str, tuple[float, float], str]] = {
    "pre": ("window", (0.0, 35.0), "first 35 s of the window"),
    "p": ("p", (-0.5, 2.0), "P to P + 2 s"),
    "s": ("s", (-0.5, 3.0), "S to S + 3 s"),
    "s_coda": ("s", (3.0, 10.0), "S + 3 to S + 10 s"),
    "coda": ("s", (10.0, 30.0), "S + 10 to S + 30 s"),
    "late": ("s", (30.0, 60.0), "S + 30 to S + 60 s"),
}


@dataclass(frozen=True)
class Feature:
    """One feature of one component: name (without the component prefix), unit, meaning."""

    name: str
    unit: str
    description: str


# The features of one component, in column order.
COMPONENT_FEATURES: tuple[Feature, ...] = (
    *(
        Feature(
            f"log_power_{lo:g}_{hi:g}hz",
            "log10(1)",
            f"share of the signal segment's 0.5-8 Hz power in {lo:g}-{hi:g} Hz",
        )
        for lo, hi in OCTAVES
    ),
    *(
        Feature(
            f"log_snr_{lo:g}_{hi:g}hz",
            "log10(1)",
            f"signal over pre-event power in {lo:g}-{hi:g} Hz",
        )
        for lo, hi in OCTAVES
    ),
    Feature("log_hf_lf_ratio", "log10(1)", "signal power 2-8 Hz over 0.5-2 Hz"),
    Feature("log_coda_hf_lf_ratio", "log10(1)", "coda (after the peak) power 2-8 over 0.5-2 Hz"),
    Feature("dominant_freq", "Hz", "frequency of the largest smoothed spectral peak, signal"),
    Feature("centroid_freq", "Hz", "power-weighted mean frequency of the signal, 0.5-8 Hz"),
    Feature("coda_centroid_freq", "Hz", "power-weighted mean frequency of the coda, 0.5-8 Hz"),
    Feature("spectral_bandwidth", "Hz", "power-weighted spread about the centroid, signal"),
    Feature("log_ps_amp_ratio", "log10(1)", "peak |P| over peak |S|, 0.5-8 Hz"),
    Feature("log_ps_amp_ratio_hf", "log10(1)", "peak |P| over peak |S|, 4-8 Hz"),
    Feature("log_ps_amp_ratio_lf", "log10(1)", "peak |P| over peak |S|, 0.5-2 Hz"),
    Feature("rise_time", "s", "envelope onset to peak (onset: 20% of the way up in log)"),
    Feature("decay_time", "s", "envelope peak to its fall below the onset level"),
    Feature("log_rise_decay_ratio", "log10(1)", "rise time over decay time"),
    Feature("duration_above_noise", "s", "time the envelope exceeds twice the noise level"),
    Feature("kurtosis", "1", "excess kurtosis of the band-limited trace"),
    Feature("skewness", "1", "skewness of the band-limited trace"),
    Feature("env_kurtosis", "1", "excess kurtosis of the envelope"),
    Feature("env_skewness", "1", "skewness of the envelope"),
    Feature("log_peak_sta_lta", "log10(1)", "peak STA/LTA of energy (1 s / 30 s)"),
    Feature("log_snr", "log10(1)", "envelope peak over noise level (10th percentile)"),
    Feature("log_peak_to_rms", "log10(1)", "peak |amplitude| over RMS of the trace"),
    Feature("dead_fraction", "1", "share of samples in runs of >= 1 s of equal values"),
    *(
        Feature(
            f"log_energy_{lo:g}_{hi:g}hz_{w}",
            "log10(1)",
            f"mean energy in {lo:g}-{hi:g} Hz, {ARRIVAL_WINDOWS[w][2]}, over the trace's mean",
        )
        for lo, hi in OCTAVES
        for w in ARRIVAL_WINDOWS
    ),
)
N_COMPONENT_FEATURES = len(COMPONENT_FEATURES)
# Per-trace metadata columns after the component blocks: no component prefix, so the
# models (which take ``z_`` features) never see them.
TRACE_COLUMNS: tuple[Feature, ...] = (
    Feature(
        "arrival_anchor",
        "code",
        "what placed the P/S windows: 0 predicted (taup), 1 STA/LTA onset on the vertical, "
        "2 envelope onset (no trigger); S from Vp/Vs when not predicted (metadata, not a "
        "model input)",
    ),
)
FEATURES: tuple[Feature, ...] = (
    *(
        Feature(f"{p}_{f.name}", f.unit, f"{name} component: {f.description}")
        for p, name in zip(COMPONENT_PREFIX, ("vertical", "north", "east"), strict=True)
        for f in COMPONENT_FEATURES
    ),
    *TRACE_COLUMNS,
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_UNITS: tuple[str, ...] = tuple(f.unit for f in FEATURES)


def feature_table() -> list[dict[str, str]]:
    """``FEATURES`` as rows (name, unit, description), e.g. for a markdown artifact."""
    return [{"name": f.name, "unit": f.unit, "description": f.description} for f in FEATURES]


def band_limit(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band-limit and normalise ``(n, samples)`` traces; decimate to ``WORK_RATE``.

    Returns ``(y, valid, flat_fraction)``: ``y`` (n, samples') float64 with unit standard
    deviation (all zeros for a flat trace), ``valid`` where at least ``MIN_COVERAGE`` of
    the samples hold data, and the share of equal consecutive raw samples.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    valid = finite.mean(axis=1) >= MIN_COVERAGE
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(valid[:, None], x, 0.0), axis=1)
    x = np.where(finite, x - mean[:, None], 0.0)
    flat = dead_fraction(x, finite, max(2, round(DEAD_RUN_S * rate)))
    n = x.shape[1]
    taper = sps.windows.tukey(n, alpha=min(1.0, 2 * 5.0 * rate / n))
    lo, hi = BAND_HZ
    sos = sps.butter(4, [lo, min(hi, 0.45 * rate)], btype="band", fs=rate, output="sos")
    y = sps.sosfiltfilt(sos, x * taper, axis=1)
    step = Fraction(WORK_RATE / rate).limit_denominator(1000)
    if step.numerator == 1:  # already low-passed below WORK_RATE's Nyquist: keep every q-th
        y = y[:, :: step.denominator]
    else:
        y = sps.resample_poly(y, step.numerator, step.denominator, axis=1)
    scale = y.std(axis=1)
    dead = scale <= 1e-6 * (np.abs(mean) + 1.0)
    y = np.where(dead[:, None], 0.0, y / np.where(dead, 1.0, scale)[:, None])
    return y, valid, flat


def dead_fraction(x: np.ndarray, finite: np.ndarray, run: int) -> np.ndarray:
    """Share of recorded samples inside runs of at least ``run`` equal consecutive values.

    A dead channel scores 1; live data score 0 even when coarsely quantised (short runs of
    equal counts are an instrument trait, not a dead channel, and must not become a cue).
    """
    d = np.abs(np.diff(x, axis=1))
    tol = 1e-5 * (np.max(np.abs(x), axis=1, keepdims=True) + EPS)
    eq = ((d <= tol) & finite[:, 1:] & finite[:, :-1]).astype(np.int64)
    if eq.shape[1] < run:
        return np.zeros(x.shape[0])
    c = np.concatenate([np.zeros((eq.shape[0], 1), dtype=np.int64), np.cumsum(eq, axis=1)], axis=1)
    starts = (c[:, run:] - c[:, :-run]) == run  # a full run of equal steps starts here
    s = np.concatenate(
        [np.zeros((eq.shape[0], 1), dtype=np.int64), np.cumsum(starts, axis=1)], axis=1
    )
    idx = np.arange(eq.shape[1])
    hi = np.minimum(idx + 1, starts.shape[1])
    lo = np.maximum(idx - run + 1, 0)
    covered = (s[:, hi] - s[:, lo]) > 0
    return np.asarray(covered.sum(axis=1) / np.maximum(finite.sum(axis=1), 1))


def envelope(y: np.ndarray, rate: float = WORK_RATE) -> np.ndarray:
    """Smoothed amplitude envelope (|analytic signal|, ``ENV_SMOOTH_S`` moving mean)."""
    env = np.abs(sps.hilbert(y, axis=1))
    size = max(1, round(ENV_SMOOTH_S * rate))
    return np.asarray(uniform_filter1d(env, size=size, axis=1, mode="nearest"))


def sta_lta(y: np.ndarray, rate: float, sta_s: float = STA_S, lta_s: float = LTA_S) -> np.ndarray:
    """Classic trailing STA/LTA of energy, ``(n, samples)``; NaN before the LTA is full."""
    e = np.square(y)
    c = np.concatenate([np.zeros((e.shape[0], 1)), np.cumsum(e, axis=1)], axis=1)
    ns, nl = max(1, round(sta_s * rate)), max(2, round(lta_s * rate))
    out = np.full(e.shape, np.nan)
    if nl > e.shape[1]:
        return out
    idx = np.arange(nl - 1, e.shape[1])
    sta = (c[:, idx + 1] - c[:, idx + 1 - ns]) / ns
    lta = (c[:, idx + 1] - c[:, idx + 1 - nl]) / nl
    out[:, idx] = sta / (lta + EPS)
    return out


def moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(excess kurtosis, skewness) along axis 1; 0 for constant rows."""
    m = a.mean(axis=1, keepdims=True)
    d = a - m
    v = (d**2).mean(axis=1)
    ok = v > EPS
    vs = np.where(ok, v, 1.0)
    kurt = np.where(ok, (d**4).mean(axis=1) / vs**2 - 3.0, 0.0)
    skew = np.where(ok, (d**3).mean(axis=1) / vs**1.5, 0.0)
    return kurt, skew


def _segments(y: np.ndarray, start: np.ndarray, length: int = SEGMENT) -> np.ndarray:
    """Rows ``y[i, start[i]:start[i]+length]``, starts clipped into the trace."""
    s = np.clip(start, 0, max(0, y.shape[1] - length)).astype(np.int64)
    idx = s[:, None] + np.arange(min(length, y.shape[1]))[None, :]
    return np.take_along_axis(y, idx, axis=1)


def power_spectrum(seg: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies Hz, Hann-windowed power) of segments ``(n, length)``."""
    win = np.hanning(seg.shape[1])
    spec = np.abs(np.fft.rfft(seg * win, axis=1)) ** 2
    return np.fft.rfftfreq(seg.shape[1], 1.0 / rate), spec


def band_power(freq: np.ndarray, spec: np.ndarray, lo: float, hi: float) -> np.ndarray:
    sel = (freq >= lo) & (freq < hi)
    return np.asarray(spec[:, sel].sum(axis=1))


def _centroid(freq: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sel = (freq >= BAND_HZ[0]) & (freq <= BAND_HZ[1])
    f, p = freq[sel], spec[:, sel] + EPS
    c = (p * f).sum(axis=1) / p.sum(axis=1)
    bw = np.sqrt((p * (f[None, :] - c[:, None]) ** 2).sum(axis=1) / p.sum(axis=1))
    return c, bw


def dominant_frequency(freq: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Frequency of the largest peak of the spectrum smoothed over ~0.25 Hz, in the band."""
    df = freq[1] - freq[0]
    smooth = uniform_filter1d(spec, size=max(1, round(0.25 / df)), axis=1, mode="nearest")
    sel = (freq >= BAND_HZ[0]) & (freq <= BAND_HZ[1])
    return np.asarray(freq[sel][np.argmax(smooth[:, sel], axis=1)])


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.log10((a + EPS) / (b + EPS)))


def _peak_in(a: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    mask = (t[None, :] >= lo[:, None]) & (t[None, :] < hi[:, None])
    return np.asarray(np.where(mask, np.abs(a), 0.0).max(axis=1))


def envelope_onset(env: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(onset, peak) sample indices of envelopes ``(n, samples)``: the peak is the maximum;
    the onset is the last sample before it below ``noise * (peak / noise) ** 0.2`` (20% of
    the way up in log, noise = 10th percentile), or 0."""
    noise = np.percentile(env, 10, axis=1) + EPS
    peak = env.max(axis=1) + EPS
    i_peak = env.argmax(axis=1)
    thr = noise * (peak / noise) ** 0.2
    idx = np.arange(env.shape[1])[None, :]
    before = (env < thr[:, None]) & (idx < i_peak[:, None])
    last = env.shape[1] - 1 - np.argmax(before[:, ::-1], axis=1)
    return np.where(before.any(axis=1), last, 0), i_peak


def aic_pick(y: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    """Sample index of the AIC minimum (Maeda, 1985) in ``y[i, start[i]:start[i]+length]``:
    the split of the segment into two stationary parts, before and after the onset,
    ``AIC(k) = k log var(x[:k]) + (L - k - 1) log var(x[k:])``."""
    n, m = y.shape
    length = min(length, m)
    a = np.clip(np.asarray(start, dtype=np.int64), 0, m - length)
    x = np.take_along_axis(y, a[:, None] + np.arange(length)[None, :], axis=1)
    k = np.arange(2, length - 2)
    if not len(k):
        return a
    c1, c2 = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    s1, s2 = c1[:, k - 1], c2[:, k - 1]
    r1, r2, nk = c1[:, -1:] - s1, c2[:, -1:] - s2, length - k
    v1 = s2 / k - (s1 / k) ** 2
    v2 = r2 / nk - (r1 / nk) ** 2
    aic = k * np.log(np.maximum(v1, EPS)) + (nk - 1) * np.log(np.maximum(v2, EPS))
    return np.asarray(a + k[np.argmin(aic, axis=1)])


def detect_onset(
    y: np.ndarray,
    rate: float,
    on: float = ONSET_ON,
    sta_s: float = STA_S,
    lta_s: float = LTA_S,
    end_guard_s: float = ONSET_END_GUARD_S,
    aic_s: tuple[float, float] = ONSET_AIC_S,
) -> np.ndarray:
    """Onset of the first STA/LTA trigger per trace, in seconds after the trace's first
    sample; NaN where nothing triggers.

    ``y`` is ``(n, samples)`` at ``rate`` Hz (band-limited, e.g. :func:`band_limit`'s
    output). The trigger is the first sample where the trailing STA/LTA of energy
    (:func:`sta_lta`, ``sta_s`` / ``lta_s``) reaches ``on``, searched from the first full
    LTA to ``end_guard_s`` before the end. The onset is then picked by :func:`aic_pick`
    between ``aic_s[0]`` s before and ``aic_s[1]`` s after the trigger (the trigger lags
    the onset by up to the STA length; the AIC split finds the change of variance: on
    synthetic bursts with amplitude SNR 10-100 it is within 0.1 s, at SNR 3 within 0.7 s).

    The *first* trigger is taken, not the largest ratio, because the largest is usually S
    or the surface waves; a transient before the event is picked instead of P (the price of
    a plain detector). Outcome on pure noise: stationary Gaussian noise stays well below
    ``on`` = 4 with a 1 s / 30 s ratio (peaks of ~2-3 over minutes), so the result is NaN;
    the caller decides what to anchor on then (:func:`arrival_anchors`). A flat trace
    gives NaN. Measured on the shared archive's vertical event traces that also have a
    predicted P inside the window (1321): a trigger on 80%, onset minus predicted P median
    +0.8 s, within 2 s of it for 34% (48% where the peak ratio exceeds 8; the predicted
    times carry catalogue, station and iasp91 errors too, and many traces are weak).
    """
    y = np.asarray(y, dtype=np.float64)
    n, m = y.shape
    out = np.full(n, np.nan)
    if m == 0:
        return out
    r = np.nan_to_num(sta_lta(y, rate, sta_s, lta_s), nan=0.0)
    first = min(m, max(2, round(lta_s * rate)) - 1)
    last = m - round(end_guard_s * rate)  # no trigger at or after this sample
    idx = np.arange(m)[None, :]
    hit = (r >= on) & (idx >= first) & (idx < last)
    found = hit.any(axis=1)
    if not found.any():
        return out
    trig = np.argmax(hit, axis=1)
    before, after = round(aic_s[0] * rate), round(aic_s[1] * rate)
    pick = aic_pick(y[found], trig[found] - before, before + after)
    out[found] = pick / rate
    return out


def _placeable(tp: np.ndarray, ts: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rows whose P (``tp``) and S (``ts``) times can place the P/S windows: both finite, S
    after P, P at least ``P_MARGIN_S`` after the trace's start and S at least ``S_TAIL_S``
    before its end (``t``: the trace's times)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(
            np.isfinite(tp)
            & np.isfinite(ts)
            & (ts > tp)
            & (tp - P_MARGIN_S >= t[0])
            & (ts + S_TAIL_S <= t[-1])
        )


def arrival_anchors(
    y: np.ndarray,
    env: np.ndarray,
    t: np.ndarray,
    p_s: np.ndarray | None = None,
    s_s: np.ndarray | None = None,
    rate: float = WORK_RATE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P and S anchors of the arrival windows, seconds after the reference time, and the
    rule that placed them (:class:`Anchor` codes), per trace.

    ``y``/``env``: the band-limited trace the onset is detected on (the vertical) and its
    envelope, on the time grid ``t`` (s after the reference time, the origin for event
    windows); ``p_s``/``s_s``: predicted arrivals (NaN where unknown).

    - ``PREDICTED``: both predicted arrivals known, S after P, and the P and S windows
      inside the trace: they are used as they are;
    - ``DETECTED``: else P = :func:`detect_onset`;
    - ``ENVELOPE``: no trigger either: P = the envelope onset (:func:`envelope_onset`),
      which every trace has (on noise: the rise before its largest transient);
    - S, when not predicted: S - P = (Vp/Vs - 1)(P - origin) with Vp/Vs = sqrt(3) (a
      Poisson solid; from travel times t_S = (Vp/Vs) t_P at the same distance), clipped to
      1-30 s. On the archive's event traces whose detected P is within 2 s of the predicted
      one, this S is within 2 s of the predicted S for 80% (|error| median 0.9 s), where
      the next STA/LTA maximum after P gets 49% and the envelope maximum 27-34%. For noise
      windows the "origin" is the window's reference time, so their S - P is arbitrary,
      like everything else about an anchor in noise;
    - detected anchors are kept inside the trace: P at least ``P_MARGIN_S`` after its
      start, S at most ``S_TAIL_S`` before its end.
    """
    n = y.shape[0]
    p_s = np.full(n, np.nan) if p_s is None else np.asarray(p_s, dtype=np.float64)
    s_s = np.full(n, np.nan) if s_s is None else np.asarray(s_s, dtype=np.float64)
    predicted = _placeable(p_s, s_s, t)
    onset = detect_onset(y, rate)
    i_env, _ = envelope_onset(env)
    detected = np.isfinite(onset)
    p = np.where(detected, t[0] + np.nan_to_num(onset), t[i_env])
    p = np.maximum(p, t[0] + P_MARGIN_S)
    s = p + np.clip((VP_VS - 1.0) * p, *SP_RANGE_S)
    s = np.minimum(s, t[-1] - S_TAIL_S)
    p = np.minimum(p, s - SP_RANGE_S[0])
    code = np.where(detected, Anchor.DETECTED, Anchor.ENVELOPE)
    return (
        np.where(predicted, p_s, p),
        np.where(predicted, s_s, s),
        np.where(predicted, Anchor.PREDICTED, code),
    )


def _block(
    y: np.ndarray,
    valid: np.ndarray,
    flat: np.ndarray,
    env: np.ndarray,
    t: np.ndarray,
    tp: np.ndarray,
    ts: np.ndarray,
) -> np.ndarray:
    """The ``COMPONENT_FEATURES`` of band-limited traces with their anchors ``tp``/``ts``."""
    n = y.shape[0]
    fs = WORK_RATE
    noise = np.percentile(env, 10, axis=1) + EPS
    peak = env.max(axis=1) + EPS
    i_on, i_peak = envelope_onset(env)
    idx = np.arange(env.shape[1])[None, :]
    thr = noise * (peak / noise) ** 0.2
    after = (env < thr[:, None]) & (idx > i_peak[:, None])
    i_end = np.where(after.any(axis=1), np.argmax(after, axis=1), env.shape[1] - 1)
    rise = (i_peak - i_on) / fs
    decay = (i_end - i_peak) / fs
    above = (env > 2 * noise[:, None]).sum(axis=1) / fs

    # Spectra: the signal from 1 s before onset, the coda from 5 s after the peak, and the
    # pre-event noise from the window's start (all SEGMENT samples).
    sig = _segments(y, i_on - round(1.0 * fs))
    coda = _segments(y, i_peak + round(5.0 * fs))
    pre = _segments(y, np.zeros(n, dtype=np.int64))
    freq, p_sig = power_spectrum(sig, fs)
    _, p_coda = power_spectrum(coda, fs)
    _, p_pre = power_spectrum(pre, fs)
    total = band_power(freq, p_sig, *BAND_HZ)
    cols: list[np.ndarray] = [
        _log_ratio(band_power(freq, p_sig, lo, hi), total) for lo, hi in OCTAVES
    ]
    cols += [
        _log_ratio(band_power(freq, p_sig, lo, hi), band_power(freq, p_pre, lo, hi))
        for lo, hi in OCTAVES
    ]
    cols.append(_log_ratio(band_power(freq, p_sig, 2, 8), band_power(freq, p_sig, 0.5, 2)))
    cols.append(_log_ratio(band_power(freq, p_coda, 2, 8), band_power(freq, p_coda, 0.5, 2)))
    c_sig, bw_sig = _centroid(freq, p_sig)
    c_coda, _ = _centroid(freq, p_coda)
    cols += [dominant_frequency(freq, p_sig), c_sig, c_coda, bw_sig]

    # P/S amplitude ratios in windows placed by the anchors (predicted or detected).
    inside = _placeable(tp, ts, t)
    a_p = np.where(inside, tp, 0.0)
    a_s = np.where(inside, ts, 1.0)
    p_len = np.clip(0.8 * (a_s - a_p), 1.0, 5.0)
    sos_hf = sps.butter(4, [4.0, 8.0], btype="band", fs=fs, output="sos")
    sos_lf = sps.butter(4, [0.5, 2.0], btype="band", fs=fs, output="sos")
    for a in (y, sps.sosfiltfilt(sos_hf, y, axis=1), sps.sosfiltfilt(sos_lf, y, axis=1)):
        ratio = _log_ratio(
            _peak_in(a, t, a_p - P_MARGIN_S, a_p + p_len),
            _peak_in(a, t, a_s - P_MARGIN_S, a_s + S_TAIL_S),
        )
        cols.append(np.where(inside, ratio, np.nan))

    kurt, skew = moments(y)
    env_kurt, env_skew = moments(env)
    stalta = np.nanmax(np.nan_to_num(sta_lta(y, fs), nan=0.0), axis=1)
    rms = np.sqrt((y**2).mean(axis=1))
    cols += [
        rise,
        decay,
        _log_ratio(rise, decay),
        above,
        kurt,
        skew,
        env_kurt,
        env_skew,
        np.log10(np.maximum(stalta, EPS) + EPS),
        np.log10(peak / noise),
        _log_ratio(np.abs(y).max(axis=1), rms),
        flat,
    ]
    anchors = {"window": np.full(n, t[0]), "p": np.nan_to_num(tp), "s": np.nan_to_num(ts)}
    mean_energy = np.square(y).mean(axis=1)
    for lo, hi in OCTAVES:
        sos = sps.butter(4, [lo, hi], btype="band", fs=fs, output="sos")
        c = np.concatenate(
            [np.zeros((n, 1)), np.cumsum(np.square(sps.sosfiltfilt(sos, y, axis=1)), axis=1)],
            axis=1,
        )
        for anchor, (a, b), _ in ARRIVAL_WINDOWS.values():
            i0 = np.clip(np.round((anchors[anchor] + a - t[0]) * fs), 0, len(t) - 1).astype(int)
            i1 = np.clip(np.round((anchors[anchor] + b - t[0]) * fs), 0, len(t)).astype(int)
            i1 = np.maximum(i1, i0 + 1)
            e = (c[np.arange(n), i1] - c[np.arange(n), i0]) / (i1 - i0)
            cols.append(_log_ratio(e, mean_energy))
    out = np.stack(cols, axis=1).astype(np.float32)
    out[~valid] = np.nan
    return out


def _time_grid(samples: int, pre_s: float) -> np.ndarray:
    return np.asarray(np.arange(samples) / WORK_RATE - pre_s)


def component_features(
    x: np.ndarray,
    rate: float,
    pre_s: float,
    p_s: np.ndarray | None = None,
    s_s: np.ndarray | None = None,
) -> np.ndarray:
    """Features of one component: ``(n, samples)`` -> ``(n, N_COMPONENT_FEATURES)`` float32.

    ``p_s``/``s_s``: predicted P and S arrival times in seconds after the reference time
    (NaN where unknown); the anchors come from :func:`arrival_anchors` on this component
    (:func:`window_features` detects on the vertical for all three). Rows without enough
    data are all NaN.
    """
    y, valid, flat = band_limit(x, rate)
    env = envelope(y, WORK_RATE)
    t = _time_grid(y.shape[1], pre_s)
    tp, ts, _ = arrival_anchors(y, env, t, p_s, s_s)
    return _block(y, valid, flat, env, t, tp, ts)


def window_features(
    windows: np.ndarray,
    rate: float,
    pre_s: float,
    p_s: np.ndarray | None = None,
    s_s: np.ndarray | None = None,
) -> np.ndarray:
    """Features of a batch of windows ``(n, 3, samples)`` -> ``(n, len(FEATURES))`` float32,
    in the order of :data:`FEATURES` (Z block, then N, then E, then ``TRACE_COLUMNS``).

    The P and S anchors of all three components are those of the vertical
    (:func:`arrival_anchors`; of the first horizontal with data where the vertical has
    none); ``arrival_anchor`` is NaN where no component has data."""
    if windows.ndim != 3 or windows.shape[1] != len(COMPONENT_PREFIX):
        raise ValueError(f"windows of shape {windows.shape}; expected (n, 3, samples) Z, N, E")
    if windows.shape[0] == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    limited = [band_limit(windows[:, c, :], rate) for c in range(len(COMPONENT_PREFIX))]
    envs = [envelope(y, WORK_RATE) for y, _, _ in limited]
    t = _time_grid(limited[0][0].shape[1], pre_s)
    y_ref, env_ref = limited[-1][0], envs[-1]
    for (y, valid, _), env in zip(limited[-2::-1], envs[-2::-1], strict=True):  # N, then Z
        y_ref = np.where(valid[:, None], y, y_ref)
        env_ref = np.where(valid[:, None], env, env_ref)
    tp, ts, code = arrival_anchors(y_ref, env_ref, t, p_s, s_s)
    any_valid = np.any([v for _, v, _ in limited], axis=0)
    blocks = [
        _block(y, valid, flat, env, t, tp, ts)
        for (y, valid, flat), env in zip(limited, envs, strict=True)
    ]
    blocks.append(np.where(any_valid, code, np.nan)[:, None].astype(np.float32))
    return np.concatenate(blocks, axis=1)
