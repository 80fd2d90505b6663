"""Streaming event and noise windows from the store into a model, chunk by chunk.

Windows are read as blocks of consecutive traces of ``{group}/waveform`` (one chunk per
trace in the store), preprocessed block by block and yielded one window at a time, so
memory is bounded by a few blocks whatever the size of the store.

Preprocessing (:func:`preprocess_block`), the same for every trace whatever its source:

1. the chosen components; a component with no recorded sample is *missing* (mask 0);
2. remove the mean and the linear trend over recorded samples; gaps (NaN) become 0;
3. cosine taper of ``taper`` of the window at each end;
4. decimate by an integer factor to ``sampling_rate`` (polyphase FIR anti-alias filter);
5. zero-phase Butterworth band-pass ``band`` (Hz);
6. divide by the trace's RMS over its recorded samples (all components together, so the
   Z/N/E amplitude ratios stay and the instrument gain does not leak);
7. optionally (``envelope_bands``), log10 RMS envelopes in sub-bands at ``envelope_rate``,
   less the trace's median: a time-frequency picture (like a coarse spectrogram) that keeps
   the envelope shape and spectral content that tell sources apart, and drops the gain.

The mask is per component, never per sample: which samples are missing reveals where a
recording came from (the archive's sources cut their windows differently).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, firwin, resample_poly, sosfilt_zi, sosfiltfilt
from scipy.signal.windows import tukey
from torch.utils.data import IterableDataset, get_worker_info

from seismoflow.models.blockfilters import decimate_buffer, decimation_input, sosfilt_rows
from seismoflow.storage.chunkread import read_rows

# Highest band-pass corner as a share of the model's Nyquist frequency.
MAX_CORNER_OF_NYQUIST = 0.9


@dataclass(frozen=True)
class Preprocess:
    """How a stored window becomes model input. Rates and corners in Hz."""

    sampling_rate: float
    band: tuple[float, float]
    components: tuple[str, ...] = ("Z",)
    taper: float = 0.05
    filter_order: int = 4
    envelope_bands: tuple[tuple[float, float], ...] = ()
    envelope_rate: float = 2.0
    envelope_smooth_s: float = 1.0

    @property
    def channel_components(self) -> list[str]:
        """The component of each model input channel (component-major)."""
        per = max(1, len(self.envelope_bands))
        return [c for c in self.components for _ in range(per)]

    def envelope_factor(self) -> int:
        q = int(round(self.sampling_rate / self.envelope_rate))
        if q < 1 or abs(self.sampling_rate / q - self.envelope_rate) > 1e-6 * self.envelope_rate:
            raise ValueError(
                f"envelope rate {self.envelope_rate} Hz must divide {self.sampling_rate} Hz"
            )
        for lo, hi in self.envelope_bands:
            if not self.band[0] <= lo < hi <= self.band[1]:
                raise ValueError(f"envelope band ({lo}, {hi}) Hz is outside band {self.band}")
        return q

    def factor(self, store_rate: float) -> int:
        """The integer decimation factor from ``store_rate``; refuse a non-integer one."""
        q = int(round(store_rate / self.sampling_rate))
        if q < 1 or abs(store_rate / q - self.sampling_rate) > 1e-6 * self.sampling_rate:
            raise ValueError(
                f"model rate {self.sampling_rate} Hz is not the store's window rate "
                f"{store_rate} Hz divided by an integer; choose a divisor of {store_rate} Hz"
            )
        low, high = self.band
        if not 0 < low < high <= MAX_CORNER_OF_NYQUIST * self.sampling_rate / 2:
            raise ValueError(
                f"band {self.band} Hz must satisfy 0 < low < high <= "
                f"{MAX_CORNER_OF_NYQUIST * self.sampling_rate / 2} Hz at {self.sampling_rate} Hz"
            )
        return q


def open_group(location: str, group: str) -> zarr.Group:
    """One group of a store, read-only (opening only that group, not the whole tree)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return zarr.open_group(
            location, mode="r", path=group, zarr_format=3, use_consolidated=False
        )


def group_rate(group: zarr.Group) -> float:
    """The window sampling rate of a store group (Hz)."""
    rate = group.attrs.get("sampling_rate")
    if not isinstance(rate, int | float):
        raise ValueError(f"group {group.path!r} has no numeric sampling_rate attribute")
    return float(rate)


def group_components(group: zarr.Group) -> list[str]:
    comp = group["component"]
    assert isinstance(comp, zarr.Array)
    return [str(c) for c in np.asarray(comp[:]).tolist()]


def component_indices(store_components: Sequence[str], wanted: Sequence[str]) -> list[int]:
    index = {c: i for i, c in enumerate(store_components)}
    missing = [c for c in wanted if c not in index]
    if missing:
        raise ValueError(f"components {missing} are not in the store ({list(store_components)})")
    return [index[c] for c in wanted]


@functools.lru_cache(maxsize=64)
def _bandpass(order: int, band: tuple[float, float], fs: float) -> np.ndarray:
    """Butterworth band-pass second-order sections (designed once per band: the design
    costs more than filtering a block)."""
    # writable: scipy's sosfilt takes a writable buffer (it does not change it)
    return np.asarray(butter(order, band, btype="bandpass", fs=fs, output="sos"))


@functools.lru_cache(maxsize=64)
def _sos_zi(order: int, band: tuple[float, float], fs: float) -> np.ndarray:
    return np.asarray(sosfilt_zi(_bandpass(order, band, fs)))


def _filtfilt(
    order: int, band: tuple[float, float], fs: float, x: np.ndarray, skip_unpadded: bool = False
) -> np.ndarray:
    """``sosfiltfilt(sos, x, axis=-1, padlen=...)`` as the reference calls it (odd
    extension, initial conditions scaled by the first sample of each pass), with the filter
    and its steady-state initial conditions designed once instead of on every call, and
    both passes run as matrix products over all rows (:func:`blockfilters.sosfilt_rows`)."""
    sos = _bandpass(order, band, fs)
    edge = min(x.shape[-1] - 1, 3 * (2 * len(sos) + 1))
    if edge <= 0 and (skip_unpadded or x.shape[-1] == 0):
        return x
    zi = _sos_zi(order, band, fs).reshape(1, 2 * len(sos))
    ext = (
        x
        if edge <= 0
        else np.concatenate(
            (
                2 * x[..., :1] - x[..., edge:0:-1],
                x,
                2 * x[..., -1:] - x[..., -2 : -edge - 2 : -1],
            ),
            axis=-1,
        )
    )
    rows = ext.reshape(-1, ext.shape[-1])
    y = sosfilt_rows(sos, rows, zi * rows[:, :1])
    back = sosfilt_rows(sos, y, zi * y[:, -1:], reverse=True)  # in reversed time order
    n = back.shape[-1]
    return np.ascontiguousarray(back[:, n - 1 - edge : edge - 1 if edge else None : -1]).reshape(
        *x.shape[:-1], n - 2 * edge
    )


@functools.lru_cache(maxsize=16)
def _antialias(q: int) -> np.ndarray:
    """The FIR filter ``resample_poly(x, 1, q)`` designs (Kaiser window, beta 5), once."""
    h = np.asarray(firwin(2 * 10 * q + 1, 1.0 / q, window=("kaiser", 5.0)), dtype=np.float64)
    h.setflags(write=False)
    return h


@functools.lru_cache(maxsize=16)
def _taper(n_samples: int, alpha: float) -> np.ndarray:
    w = np.asarray(tukey(n_samples, alpha=alpha), dtype=np.float64)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=16)
def _trend_terms(n_samples: int, alpha: float, q: int) -> tuple[np.ndarray, int, np.ndarray]:
    """For windows of ``n_samples``: the vector whose product with a demeaned window is its
    least-squares slope (per sample, about the window's centre), how many samples at each
    end the taper changes, and the taper times the centred time decimated by ``q`` (what a
    unit slope becomes)."""
    t = np.arange(n_samples, dtype=np.float64)
    dt = t - t.mean()
    slope_of = dt / max(float(dt @ dt), 1e-12)
    w = _taper(n_samples, alpha)
    changed = np.flatnonzero(w[: (n_samples + 1) // 2] != 1.0)
    edge = int(changed[-1]) + 1 if len(changed) else 0
    tilted = w * dt
    if q > 1:
        tilted = resample_poly(tilted, 1, q, window=_antialias(q))
    for a in (slope_of, tilted):
        a.setflags(write=False)
    return slope_of, edge, tilted


def preprocess_block(
    block: np.ndarray,
    store_rate: float,
    prep: Preprocess,
    store_components: Sequence[str] = ("Z", "N", "E"),
) -> tuple[np.ndarray, np.ndarray]:
    """Stored windows ``(n, components, samples)`` (counts, NaN = no data) to model input.

    Returns ``x`` float32 ``(n, len(prep.components), samples // factor)`` and the component
    mask, bool ``(n, len(prep.components))``, True where the component has data.

    The same numbers as :func:`preprocess_block_reference` (to float rounding), computed for
    the whole block at once: the filters designed once, the decimation and the IIR passes
    as matrix products over all traces (:mod:`seismoflow.models.blockfilters`), the trend
    removed after the (linear) taper and decimation, and a shortcut for traces without
    gaps; most of the time of streaming windows to the CNN is spent here.
    """
    q = prep.factor(store_rate)
    stored = np.asarray(block)[:, component_indices(store_components, prep.components)]
    lead, n_samples = stored.shape[:-1], stored.shape[-1]
    rows = int(np.prod(lead))
    finite = np.isfinite(stored)
    present = finite.any(axis=-1)
    full = finite.all(axis=-1)  # (n, components): traces without a gap, the usual case
    gapless = bool(full.all())
    buf: np.ndarray | None = None
    if q > 1:  # the samples go straight into the decimation's zero-padded input
        buf, x = decimation_input(rows, n_samples, q)
        x[...] = stored.reshape(rows, n_samples)
    else:
        x = stored.reshape(rows, n_samples).astype(np.float64)
    gappy = ~full.reshape(rows)
    if not gapless:
        fg = finite.reshape(rows, n_samples)[gappy]  # the traces with gaps
        xg = x[gappy]
        count = np.maximum(fg.sum(axis=-1, keepdims=True), 1)
        xg[~fg] = 0.0
        xg -= xg.sum(axis=-1, keepdims=True) / count
        xg[~fg] = 0.0
        if n_samples > 1:
            xg = _detrend(xg, fg, count)
        x[gappy] = xg
    # The trend is removed after the taper and the decimation, which are linear:
    # decimate(w (x - b t)) = decimate(w x) - b decimate(w t). The mean is removed first, so
    # that a flat trace is exactly 0 as in the reference; the taper touches only the
    # window's ends (it is 1 between them). Traces with gaps are already detrended.
    mean = x.mean(axis=-1, keepdims=True) if n_samples else np.zeros((rows, 1))
    mean[gappy] = 0.0
    x -= mean
    slope: np.ndarray | None = None
    if n_samples > 1:
        slope_of, edge, tilted = _trend_terms(n_samples, min(1.0, 2 * prep.taper), q)
        slope = x @ slope_of
        slope[gappy] = 0.0
        w = _taper(n_samples, min(1.0, 2 * prep.taper))
        if 2 * edge < n_samples:
            x[:, :edge] *= w[:edge]
            x[:, n_samples - edge :] *= w[n_samples - edge :]
        else:
            x *= w
    if buf is not None:
        x = decimate_buffer(buf, n_samples, _antialias(q), q)
    if slope is not None:
        x -= slope[:, None] * tilted
    x = x.reshape(*lead, x.shape[-1])
    recorded = finite[..., ::q][..., : x.shape[-1]]
    band = (float(prep.band[0]), float(prep.band[1]))
    x = np.ascontiguousarray(_filtfilt(prep.filter_order, band, float(prep.sampling_rate), x, True))
    if not gapless:
        x[~recorded] = 0.0
    n_recorded = recorded.sum(axis=(1, 2))
    rms = np.sqrt(np.einsum("ijk,ijk->i", x, x) / np.maximum(n_recorded, 1))
    scale = np.where(rms > 0, rms, 1.0)
    x /= scale[:, None, None]
    if prep.envelope_bands:
        x, recorded = _log_envelopes_fast(x, recorded, prep, gapless)
        present = np.repeat(present, len(prep.envelope_bands), axis=1)
        if not gapless or not present.all():
            x[~recorded | ~present[..., None]] = 0.0
    return x.astype(np.float32), present


def _log_envelopes_fast(
    x: np.ndarray, recorded: np.ndarray, prep: Preprocess, gapless: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_envelopes` with the band filters designed once and the median of each
    trace taken by one sort of the block."""
    q = prep.envelope_factor()
    width = max(1, int(round(prep.envelope_smooth_s * prep.sampling_rate)))
    n, c, _ = x.shape
    nb = len(prep.envelope_bands)
    t = len(range(0, x.shape[-1], q))
    bands: np.ndarray = np.empty((n, c, nb, t), dtype=np.float64)
    for b, (lo, hi) in enumerate(prep.envelope_bands):
        xb = _filtfilt(prep.filter_order, (float(lo), float(hi)), float(prep.sampling_rate), x)
        power = uniform_filter1d(xb * xb, size=width, axis=-1)[..., ::q]
        bands[:, :, b] = 0.5 * np.log10(power + 1e-12)
    env: np.ndarray = bands.reshape(n, c * nb, t)
    rec = np.ascontiguousarray(
        np.broadcast_to(recorded[..., ::q][:, :, None, :], (n, c, nb, t))
    ).reshape(n, c * nb, t)
    flat = env.reshape(n, -1)
    if gapless:
        median = np.median(flat, axis=1)
    else:
        # nanmedian over the recorded values of each trace: sort (NaN last), take the middle
        valid = np.sort(np.where(rec.reshape(n, -1), flat, np.nan), axis=1)
        k = np.isfinite(valid).sum(axis=1)
        rows = np.arange(n)
        lo_i, hi_i = np.maximum((k - 1) // 2, 0), np.maximum(k // 2, 0)
        median = np.where(k > 0, 0.5 * (valid[rows, lo_i] + valid[rows, hi_i]), 0.0)
    median = np.where(np.isfinite(median), median, 0.0)
    if gapless:
        env -= median[:, None, None]
        return env, rec
    return np.where(rec, env - median[:, None, None], 0.0), rec


def preprocess_block_reference(
    block: np.ndarray,
    store_rate: float,
    prep: Preprocess,
    store_components: Sequence[str] = ("Z", "N", "E"),
) -> tuple[np.ndarray, np.ndarray]:
    """The original, straightforward :func:`preprocess_block` (filters designed on every
    call, every step masked): the reference the fast path is tested and benchmarked
    against (``bench/cnn.py``)."""
    q = prep.factor(store_rate)
    x = np.asarray(block)[:, component_indices(store_components, prep.components)]
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    present = finite.any(axis=-1)
    count = np.maximum(finite.sum(axis=-1, keepdims=True), 1)
    mean = np.where(finite, x, 0.0).sum(axis=-1, keepdims=True) / count
    x = np.where(finite, x - mean, 0.0)
    n_samples = x.shape[-1]
    if n_samples > 1:
        x = _detrend(x, finite, count)
        x *= tukey(n_samples, alpha=min(1.0, 2 * prep.taper))
    if q > 1:
        x = resample_poly(x, 1, q, axis=-1)
    recorded = finite[..., ::q][..., : x.shape[-1]]
    sos = butter(
        prep.filter_order, prep.band, btype="bandpass", fs=prep.sampling_rate, output="sos"
    )
    padlen = min(x.shape[-1] - 1, 3 * (2 * len(sos) + 1))
    if padlen > 0:
        x = sosfiltfilt(sos, x, axis=-1, padlen=padlen)
    x = np.ascontiguousarray(x)
    x[~recorded] = 0.0
    n_recorded = recorded.sum(axis=(1, 2))
    rms = np.sqrt((x**2).sum(axis=(1, 2)) / np.maximum(n_recorded, 1))
    scale = np.where(rms > 0, rms, 1.0)
    x /= scale[:, None, None]
    if prep.envelope_bands:
        x, recorded = log_envelopes(x, recorded, prep)
        present = np.repeat(present, len(prep.envelope_bands), axis=1)
        x[~recorded | ~present[..., None]] = 0.0
    return x.astype(np.float32), present


def log_envelopes(
    x: np.ndarray, recorded: np.ndarray, prep: Preprocess
) -> tuple[np.ndarray, np.ndarray]:
    """Log10 RMS amplitude in each of ``prep.envelope_bands`` at ``prep.envelope_rate``.

    ``x`` is ``(n, components, samples)`` at ``prep.sampling_rate``; returns
    ``(n, components * bands, samples // factor)`` (component-major) and where it was
    recorded. Each trace's median over its recorded values is subtracted, so a gain is an
    offset that disappears and the spectral shape over time stays.
    """
    q = prep.envelope_factor()
    width = max(1, int(round(prep.envelope_smooth_s * prep.sampling_rate)))
    bands = []
    for lo, hi in prep.envelope_bands:
        sos = butter(
            prep.filter_order, (lo, hi), btype="bandpass", fs=prep.sampling_rate, output="sos"
        )
        padlen = min(x.shape[-1] - 1, 3 * (2 * len(sos) + 1))
        xb = sosfiltfilt(sos, x, axis=-1, padlen=padlen)
        power = uniform_filter1d(xb**2, size=width, axis=-1)[..., ::q]
        bands.append(0.5 * np.log10(power + 1e-12))
    env = np.stack(bands, axis=2)  # (n, components, bands, t)
    rec = np.broadcast_to(recorded[..., ::q][:, :, None, :], env.shape)
    n, c, b, t = env.shape
    env = env.reshape(n, c * b, t)
    rec = np.ascontiguousarray(rec).reshape(n, c * b, t)
    valid = np.where(rec, env, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(valid.reshape(n, -1), axis=1)
    median = np.where(np.isfinite(median), median, 0.0)
    return np.where(rec, env - median[:, None, None], 0.0), rec


def _detrend(x: np.ndarray, finite: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Remove the least-squares line fitted to the recorded samples (``x`` is demeaned and
    0 at gaps); gaps stay 0."""
    t = np.arange(x.shape[-1], dtype=np.float64)
    t_mean = np.where(finite, t, 0.0).sum(axis=-1, keepdims=True) / count
    dt = np.where(finite, t - t_mean, 0.0)
    slope = (dt * x).sum(axis=-1, keepdims=True) / np.maximum(
        (dt**2).sum(axis=-1, keepdims=True), 1e-12
    )
    return np.where(finite, x - slope * dt, 0.0)


def drop_components(
    x: np.ndarray, mask: np.ndarray, components: Sequence[str], drop: Sequence[str]
) -> None:
    """Zero the data and mask of the components named in ``drop`` (in place)."""
    for i, c in enumerate(components):
        if c in drop:
            x[..., i, :] = 0.0
            mask[..., i] = False


def block_order(
    groups: Sequence[str], traces: Sequence[int] | np.ndarray, block_size: int
) -> list[np.ndarray]:
    """Row positions in blocks of at most ``block_size`` consecutive stored traces.

    Rows are taken in store order (group, then trace index); a block never spans two groups.
    """
    g = np.asarray(groups, dtype=object)
    t = np.asarray(traces, dtype=np.int64)
    order = sorted(range(len(t)), key=lambda i: (str(g[i]), int(t[i])))
    blocks: list[np.ndarray] = []
    current: list[int] = []
    for pos in order:
        if current and (len(current) == block_size or g[current[-1]] != g[pos]):
            blocks.append(np.array(current, dtype=np.int64))
            current = []
        current.append(pos)
    if current:
        blocks.append(np.array(current, dtype=np.int64))
    return blocks


Item = tuple[np.ndarray, np.ndarray, int, int]


def tilt_jitter(x: np.ndarray, n_bands: int, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Log envelopes ``(windows, components * n_bands, samples)`` with a random spectral
    tilt across each component's ``n_bands`` bands plus a random offset per band (std
    ``tilt`` and ``tilt / 2``, log10 units); zeros (missing input) stay zero."""
    n, ch, _ = x.shape
    slope = rng.normal(0.0, tilt, (n, ch // n_bands, 1)) * np.linspace(-1, 1, n_bands)[None, None]
    offset = slope.reshape(n, ch) + rng.normal(0.0, tilt / 2, (n, ch))
    return np.where(x != 0, x + offset[..., None].astype(np.float32), x)


class StoreWindows(IterableDataset[Item]):
    """Windows of ``(group, trace)`` rows streamed from a store, block by block.

    Yields ``(x, mask, label, position)``: ``x`` float32 ``(components, samples)``, ``mask``
    float32 ``(components,)``, the row's label index (-1 if none) and its position in the
    input rows. Unshuffled, rows come in store order. Shuffled, the order of blocks and the
    rows within a buffer of about ``shuffle_buffer`` windows are permuted by a generator
    seeded with ``(seed, epoch)``: call :meth:`set_epoch` before each epoch. Consecutive
    traces mostly belong to one event, so the buffer must span many blocks for batches to
    mix classes (with one block per buffer, training does not converge).
    ``component_dropout`` (training only) removes each horizontal component of a window
    with that probability, so a model cannot rely on horizontals being present; ``crop``
    (samples) cuts a random piece of each window and ``tilt`` jitters log envelopes
    (:meth:`jitter`). Preprocessed blocks are kept for later epochs while they fit in
    ``cache_bytes`` (model input is small: 6 KB per window for 6 envelopes at 2 Hz against
    156 KB stored); beyond that, blocks are read again, so memory stays bounded.
    """

    def __init__(
        self,
        location: str,
        groups: Sequence[str],
        traces: Sequence[int] | np.ndarray,
        prep: Preprocess,
        labels: Sequence[int] | np.ndarray | None = None,
        *,
        block_size: int = 32,
        shuffle: bool = False,
        shuffle_buffer: int = 512,
        seed: int = 0,
        component_dropout: float = 0.0,
        drop: Sequence[str] = (),
        crop: int = 0,
        tilt: float = 0.0,
        cache_bytes: int = 0,
        noise_bank: np.ndarray | None = None,
        noise_mix: float = 0.0,
        noise_level: tuple[float, float] = (-1.0, 0.5),
        noise_label: int = -1,
    ) -> None:
        super().__init__()
        if len(groups) != len(traces):
            raise ValueError(f"{len(groups)} groups for {len(traces)} traces")
        self.location = location
        self.prep = prep
        self.groups = [str(g) for g in groups]
        self.traces = np.asarray(traces, dtype=np.int64)
        self.labels = (
            np.full(len(self.traces), -1, dtype=np.int64)
            if labels is None
            else np.asarray(labels, dtype=np.int64)
        )
        self.blocks = block_order(self.groups, self.traces, block_size)
        self.shuffle = shuffle
        self.shuffle_blocks = max(1, shuffle_buffer // max(1, block_size))
        self.seed = seed
        self.component_dropout = component_dropout
        self.drop = tuple(drop)
        self.crop = crop
        self.tilt = tilt
        self.cache_bytes = cache_bytes
        self.noise_bank = noise_bank
        self.noise_mix = noise_mix
        self.noise_level = noise_level
        self.noise_label = noise_label
        self._cache: dict[int, tuple[np.ndarray, ...]] = {}
        self._cached = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.traces)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def read_block(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Stored windows of one block, preprocessed: ``(x, mask)``."""
        group = open_group(self.location, self.groups[positions[0]])
        wave = group["waveform"]
        assert isinstance(wave, zarr.Array)
        idx = self.traces[positions]
        # block_order sorts a block's traces; read each distinct one once
        unique, inverse = np.unique(idx, return_inverse=True)
        # only the components the model reads are kept (a vertical-only model: a third)
        comps = list(self.prep.components)
        raw = read_rows(wave, unique, component_indices(group_components(group), comps))
        if len(unique) != len(idx) or not np.array_equal(unique, idx):
            raw = raw[inverse.reshape(-1)]
        x, mask = preprocess_block(raw, group_rate(group), self.prep, comps)
        if self.drop:
            drop_components(x, mask, self.prep.channel_components, self.drop)
        return x, mask

    def jitter(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Training only, log envelopes: a random spectral tilt across each component's bands
        plus a random offset per band (std ``tilt`` and ``tilt / 2``, log10 units), so the
        model cannot key on an instrument's response shape."""
        return tilt_jitter(x, max(1, len(self.prep.envelope_bands)), self.tilt, rng)

    def mix_noise(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Training only, log envelopes: with probability ``noise_mix`` an event window
        (label >= 0 and not ``noise_label``) gets a real noise window of
        ``noise_bank`` added at a random level. Envelopes are log10 RMS less the trace's
        median, so powers add: ``0.5 log10(10^(2 s) + 10^(2 (n + level)))``, ``level``
        uniform in ``noise_level`` (log10 units against the event's median: 0 puts the noise
        at the event window's median envelope), then the median is removed again."""
        bank = self.noise_bank
        if bank is None or not len(bank) or self.noise_mix <= 0:
            return x
        hit = (rng.random(len(x)) < self.noise_mix) & (labels >= 0) & (labels != self.noise_label)
        if not hit.any():
            return x
        out = x.copy()
        pick = bank[rng.integers(0, len(bank), int(hit.sum()))]
        level = rng.uniform(*self.noise_level, (len(pick), 1, 1))
        signal = out[hit]
        live = signal != 0
        mixed = 0.5 * np.log10(10 ** (2 * signal) + 10 ** (2 * (pick + level)))
        mixed -= np.median(mixed, axis=-1, keepdims=True)
        out[hit] = np.where(live, mixed, signal).astype(np.float32)
        return out

    def preprocessed(self, b: int) -> tuple[np.ndarray, ...]:
        """Block ``b`` preprocessed, from the cache while it holds at most ``cache_bytes``."""
        if b in self._cache:
            return self._cache[b]
        x, mask = self.read_block(self.blocks[b])
        if self._cached + x.nbytes + mask.nbytes <= self.cache_bytes:
            self._cache[b] = (x, mask)
            self._cached += x.nbytes + mask.nbytes
        return x, mask

    def iter_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Unshuffled and without augmentation: ``(x, mask, positions)`` a block at a time
        (inference, without a Python step per window); the rows :meth:`__iter__` yields
        without ``shuffle``, ``component_dropout``, noise mixing, ``tilt`` or ``crop``."""
        if self.shuffle or self.component_dropout > 0 or self.tilt > 0 or self.crop:
            raise ValueError("iter_blocks is for unshuffled, unaugmented streams (inference)")
        if self.noise_bank is not None and self.noise_mix > 0:
            raise ValueError("iter_blocks is for unshuffled, unaugmented streams (inference)")
        for b in range(len(self.blocks)):
            x, mask = self.preprocessed(b)
            yield x, mask, self.blocks[b]

    def __iter__(self) -> Iterator[Item]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order_of_blocks = (
            rng.permutation(len(self.blocks)) if self.shuffle else range(len(self.blocks))
        )
        blocks = list(order_of_blocks)
        info = get_worker_info()
        if info is not None:
            blocks = blocks[info.id :: info.num_workers]
        step = self.shuffle_blocks if self.shuffle else 1
        channels = self.prep.channel_components
        for start in range(0, len(blocks), step):
            chunk = blocks[start : start + step]
            read = [self.preprocessed(int(b)) for b in chunk]
            positions = np.concatenate([self.blocks[int(b)] for b in chunk])
            x = np.concatenate([r[0] for r in read])
            mask = np.concatenate([r[1] for r in read])
            order = rng.permutation(len(positions)) if self.shuffle else np.arange(len(positions))
            horizontals = [c for c in self.prep.components if c != "Z"]
            if self.component_dropout > 0 and horizontals:
                drop = rng.random((len(positions), len(horizontals))) < self.component_dropout
                for j, comp in enumerate(horizontals):
                    for ci in (i for i, c in enumerate(channels) if c == comp):
                        x[drop[:, j], ci] = 0.0
                        mask[drop[:, j], ci] = False
            if self.noise_bank is not None and self.noise_mix > 0:
                x = self.mix_noise(x, self.labels[positions], rng)
            if self.tilt > 0:
                x = self.jitter(x, rng)
            if self.crop and self.crop < x.shape[-1]:
                starts = rng.integers(0, x.shape[-1] - self.crop + 1, len(positions))
                x = np.stack([w[:, s : s + self.crop] for w, s in zip(x, starts, strict=True)])
            for k in order:
                pos = int(positions[k])
                yield x[k], mask[k].astype(np.float32), int(self.labels[pos]), pos


def collate_windows(items: Sequence[Item]) -> dict[str, torch.Tensor]:
    """Stack windows into a batch; windows of unequal length are cut to the shortest."""
    n = min(item[0].shape[-1] for item in items)
    return {
        "x": torch.from_numpy(np.stack([item[0][..., :n] for item in items])),
        "mask": torch.from_numpy(np.stack([item[1] for item in items])),
        "label": torch.tensor([item[2] for item in items], dtype=torch.int64),
        "position": torch.tensor([item[3] for item in items], dtype=torch.int64),
    }


def read_windows(
    location: str, group: str, traces: Sequence[int], prep: Preprocess
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed windows of ``traces`` of ``group`` read directly (for checks and tests)."""
    g = open_group(location, group)
    wave = g["waveform"]
    assert isinstance(wave, zarr.Array)
    raw = np.stack([np.asarray(wave[int(t)]) for t in traces])
    return preprocess_block(raw, group_rate(g), prep, group_components(g))


def describe(prep: Preprocess) -> dict[str, Any]:
    """The preprocessing as JSON-ready metadata (what a model directory records)."""
    return {
        "sampling_rate": prep.sampling_rate,
        "band": list(prep.band),
        "components": list(prep.components),
        "taper": prep.taper,
        "filter_order": prep.filter_order,
        "envelope_bands": [list(b) for b in prep.envelope_bands],
        "envelope_rate": prep.envelope_rate if prep.envelope_bands else None,
        "envelope_smooth_s": prep.envelope_smooth_s if prep.envelope_bands else None,
        "channels": len(prep.channel_components),
        "mask": "per component (1 = recorded samples exist)",
        "normalisation": (
            "divide by RMS over recorded samples of all components"
            + ("; log10 envelopes less the trace's median" if prep.envelope_bands else "")
        ),
    }
