"""``scipy.signal.sosfilt`` of many equal-length signals as matrix products.

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
