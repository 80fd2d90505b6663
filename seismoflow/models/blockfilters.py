"""Filters of many equal-length signals as matrix products (BLAS over all rows at once).

:func:`decimate_rows` is ``scipy.signal.resample_poly(x, 1, q, axis=-1, window=h)``: each
output sample is ``sum_k h[k] x[m q - half + k]`` (``h`` symmetric, ``2 half + 1`` taps,
zeros outside the window), computed ``B`` outputs at a time as one product of the
``B q``-sample pieces of the input with a ``(B q, 3 B)`` matrix: a piece's own outputs and
the tails of its neighbours' (the filter reaches ``half <= B q`` samples across).
``upfirdn``, which ``resample_poly`` runs, does the same multiply-adds one at a time.

:func:`sosfilt_rows` is ``scipy.signal.sosfilt``.

``sosfilt`` runs one sample at a time, section by section (a chain of dependent
multiply-adds: ~3.4 ns per section and sample here, whatever the number of signals). A
linear filter of state ``z`` (``sosfilt``'s ``zi``, ``2 * sections`` values) maps a piece of
``L`` input samples and the state before it to the piece's output and the state after it,
linearly:

    y = T x + H z        z' = G x + A z

with ``T`` the ``L x L`` lower-triangular Toeplitz matrix of the impulse response. The four
matrices are measured once per filter by running ``sosfilt`` itself on unit inputs and
unit states, so the state means exactly what ``sosfilt``'s ``zi`` means. A signal is then
cut into pieces of ``L``: one product gives each piece's contribution to the next state,
a short loop over the pieces (a ``(signals, k) @ (k, k)`` product each) carries the state
along, and one product gives every output sample. The multiply-adds run in BLAS over all
signals at once; the result equals ``sosfilt``'s to float64 rounding (relative ~1e-13,
tests/test_cnn.py).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import sosfilt

# Outputs per piece of the decimation: 16 is ~1.6x faster than resample_poly at q = 5
# (10 and 32 are slower; measured on 256 x 13000 samples).
DECIMATION_PIECE = 16

# Samples per piece: longer pieces cost more multiply-adds (L per sample), shorter ones
# more steps of the state loop; 32-64 are equally fast (measured on 256 x 2654 samples).
PIECE = 48


@functools.lru_cache(maxsize=64)
def _matrices(sos_bytes: bytes, n_sections: int, piece: int) -> tuple[np.ndarray, ...]:
    """``(G^T, A^T, [T^T; H^T])`` of the filter of second-order sections ``sos_bytes``."""
    sos = np.frombuffer(sos_bytes, dtype=np.float64).reshape(n_sections, 6).copy()
    k = 2 * n_sections
    t = np.empty((piece, piece))
    g = np.empty((k, piece))
    for j in range(piece):
        unit = np.zeros(piece)
        unit[j] = 1.0
        y, zf = sosfilt(sos, unit, zi=np.zeros((n_sections, 2)))
        t[:, j], g[:, j] = y, zf.ravel()
    h = np.empty((piece, k))
    a = np.empty((k, k))
    for i in range(k):
        state = np.zeros(k)
        state[i] = 1.0
        y, zf = sosfilt(sos, np.zeros(piece), zi=state.reshape(n_sections, 2))
        h[:, i], a[:, i] = y, zf.ravel()
    out = (np.ascontiguousarray(g.T), np.ascontiguousarray(a.T), np.vstack([t.T, h.T]))
    for m in out:
        m.setflags(write=False)
    return out


def sosfilt_rows(
    sos: np.ndarray, x: np.ndarray, zi: np.ndarray, reverse: bool = False, piece: int = PIECE
) -> np.ndarray:
    """``sosfilt(sos, x, axis=-1, zi=zi)[0]`` for ``x`` of shape ``(m, n)`` (float64) and
    ``zi`` of shape ``(m, 2 * len(sos))`` (each row ``sosfilt``'s ``(sections, 2)`` state,
    flattened). With ``reverse`` the rows are filtered back to front (``x[:, ::-1]``) and
    the output is returned in that reversed order."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    gt, at, w = _matrices(sos.tobytes(), len(sos), piece)
    k = at.shape[0]
    m, n = x.shape
    c = -(-n // piece)
    buf = np.empty((m, c, piece + k))
    data = buf[:, :, :piece]
    src = x[:, ::-1] if reverse else x
    whole = n // piece
    data[:, :whole] = src[:, : whole * piece].reshape(m, whole, piece)
    if whole < c:
        data[:, -1, : n - whole * piece] = src[:, whole * piece :]
        data[:, -1, n - whole * piece :] = 0.0
    carry = data @ gt  # (m, c, k): each piece's part of the state after it
    state = np.asarray(zi, dtype=np.float64)
    for i in range(c):
        buf[:, i, piece:] = state
        state = carry[:, i] + state @ at
    return (buf.reshape(m * c, piece + k) @ w).reshape(m, c * piece)[:, :n]


@functools.lru_cache(maxsize=16)
def _decimation_matrix(h_bytes: bytes, q: int, piece: int) -> np.ndarray:
    """``(piece * q, 3 * piece)``: a piece's contribution to the outputs of the piece before
    it, its own and the one after it."""
    h = np.frombuffer(h_bytes, dtype=np.float64)
    half = (len(h) - 1) // 2
    span = piece * q
    if half > span:
        raise ValueError(f"a filter of {len(h)} taps reaches beyond one piece of {span}")
    m = np.zeros((span, 3, piece))
    local = np.arange(span)[:, None]
    for d in (-1, 0, 1):
        k = local + d * span - np.arange(piece)[None, :] * q + half
        inside = (k >= 0) & (k < len(h))
        m[:, d + 1][inside] = h[k[inside]]
    out = m.reshape(span, 3 * piece)
    out.setflags(write=False)
    return out


def decimation_input(
    rows: int, n_samples: int, q: int, piece: int = DECIMATION_PIECE
) -> tuple[np.ndarray, np.ndarray]:
    """A zeroed float64 buffer for :func:`decimate_buffer` of ``rows`` signals of
    ``n_samples``, and the ``(rows, n_samples)`` view of it where the samples go (so the
    caller writes them once, with no copy for the padding)."""
    span = piece * q
    n_out = -(-n_samples // q)
    n_pieces = -(-n_out // piece)
    buf = np.empty((rows, (n_pieces + 2) * span))
    buf[:, :span] = 0.0  # only the padding is zeroed: the caller fills the rest
    buf[:, span + n_samples :] = 0.0
    return buf, buf[:, span : span + n_samples]


def decimate_buffer(
    buf: np.ndarray, n_samples: int, h: np.ndarray, q: int, piece: int = DECIMATION_PIECE
) -> np.ndarray:
    """``resample_poly(x, 1, q, axis=-1, window=h)`` of the signals in ``buf`` (from
    :func:`decimation_input`): ``(rows, ceil(n_samples / q))``."""
    span = piece * q
    rows = buf.shape[0]
    n_pieces = buf.shape[1] // span - 2
    mat = _decimation_matrix(np.ascontiguousarray(h, dtype=np.float64).tobytes(), q, piece)
    p = (buf.reshape(-1, span) @ mat).reshape(rows, n_pieces + 2, 3 * piece)
    y = p[:, :-2, :piece] + p[:, 1:-1, piece : 2 * piece]
    y += p[:, 2:, 2 * piece :]
    return y.reshape(rows, n_pieces * piece)[:, : -(-n_samples // q)]


def decimate_rows(x: np.ndarray, h: np.ndarray, q: int) -> np.ndarray:
    """``resample_poly(x, 1, q, axis=-1, window=h)`` for ``x`` of shape ``(rows, n)``."""
    buf, view = decimation_input(x.shape[0], x.shape[1], q)
    view[...] = x
    return decimate_buffer(buf, x.shape[1], h, q)
