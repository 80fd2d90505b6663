"""Reads of whole chunks of an unsharded array by the Zarr v3 specification.

The event and noise windows (``{group}/waveform``, ``storage.schema``) are stored one trace
per chunk, ``bytes`` then ``zstd``. zarr's public read of a few hundred of those chunks
costs more in its per-chunk machinery than the decompression itself (~0.7 ms against
~0.4 ms a window, issue 16), as much as the CNN's preprocessing. :func:`read_rows` reads
them as the specification says instead, from the array's public metadata
(``array.metadata.to_dict()``, its ``zarr.json``) and the store's objects:

1. the chunk of row ``r`` is the object ``c{sep}{r}{sep}0...`` (``default`` chunk key
   encoding) or ``{r}{sep}0...`` (``v2``); a missing object is a row of the fill value;
2. it is decoded by the codec chain of :mod:`storage.shardread`: the ``bytes`` serializer
   (either byte order) then any of ``zstd``/``blosc``/``crc32c``, straight into the result.

Handled configurations: zarr format 3, a regular chunk grid of one row per chunk
(``chunk_shape [1, *shape[1:]]``), a numeric data type, no filters, no storage
transformers, on a local folder. Anything else (sharding, other codecs, an object store,
where zarr's concurrent reads are the better path) returns ``None`` from
:func:`row_chunk_reader`, and :func:`read_rows` reads through zarr's public API.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from seismoflow.storage.shardread import (
    Objects,
    ShardError,
    _compressor,
    _Decoder,
    _endian,
    store_objects,
)
from zarr.storage import LocalStore

# Fill values as zarr.json spells the non-finite floats.
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _chunk_key(encoding: Mapping[str, Any], ndim: int) -> Callable[[int], str] | None:
    """The key of the chunk of row ``r`` (chunk ``(r, 0, ...)``) under a chunk key
    encoding."""
    name = encoding.get("name")
    sep = (encoding.get("configuration") or {}).get("separator")
    zeros = "".join("{sep}0" for _ in range(ndim - 1))
    if name == "default":
        sep = sep or "/"
        tail = zeros.format(sep=sep)
        return lambda row: f"c{sep}{row}{tail}"
    if name == "v2":
        sep = sep or "."
        tail = zeros.format(sep=sep)
        return lambda row: f"{row}{tail}"
    return None


def _fill(value: Any, dtype: np.dtype[Any]) -> Any | None:
    """The fill value of ``zarr.json`` as a number of ``dtype``, ``None`` if not a plain
    number (e.g. a hex bit pattern)."""
    if isinstance(value, str):
        value = _SPECIAL_FLOATS.get(value)
        if value is None or dtype.kind != "f":
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return dtype.type(value)


@dataclass(frozen=True)
class RowChunkReader:
    """Rows of an array stored one row per chunk, decoded by the specification."""

    objects: Objects
    key: Callable[[int], str]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]  # native byte order
    swap: bool  # stored in the other byte order
    decoders: tuple[_Decoder, ...]
    fill_value: Any

    def read(
        self, rows: Sequence[int] | np.ndarray, select: Sequence[int] | None = None
    ) -> np.ndarray:
        """``array[rows]`` for distinct or repeated row indices, in the given order; with
        ``select``, only those indices of the second axis (``array[rows][:, select]``).

        A selection still decodes whole chunks (a chunk is one compressed frame), into one
        scratch chunk that stays in cache, and copies out only what was asked for."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.shape[0]):
            raise IndexError(f"row index out of range for an array of {self.shape[0]} rows")
        if select is None:
            out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
            for i, row in enumerate(idx.tolist()):
                raw = self.objects.whole(self.key(row))
                if raw is None:
                    out[i] = self.fill_value
                else:
                    self._decode(raw, out[i])
            return out
        if len(self.shape) < 2:
            raise ValueError("a selection needs an array of at least two dimensions")
        sel = np.asarray(select, dtype=np.int64).reshape(-1)
        if len(sel) and (int(sel.min()) < 0 or int(sel.max()) >= self.shape[1]):
            raise IndexError(f"selection {sel.tolist()} outside an axis of {self.shape[1]}")
        out = np.empty((len(idx), len(sel), *self.shape[2:]), dtype=self.dtype)
        scratch = np.empty(self.shape[1:], dtype=self.dtype)
        for i, row in enumerate(idx.tolist()):
            raw = self.objects.whole(self.key(row))
            if raw is None:
                out[i] = self.fill_value
            else:
                self._decode(raw, scratch)
                np.take(scratch, sel, axis=0, out=out[i])
        return out

    def _decode(self, raw: bytes, out: np.ndarray) -> None:
        buf: Any = raw
        for step in self.decoders[:-1]:
            buf = step.decode(buf)
        if self.decoders:
            self.decoders[-1].decode(buf, out=out)
        else:
            if len(buf) != out.nbytes:
                raise ShardError(f"a chunk of {len(buf)} bytes for {out.nbytes} bytes of values")
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(buf, np.uint8)
        if self.swap:
            out.byteswap(inplace=True)


def reader_from_metadata(meta: Mapping[str, Any], objects: Objects) -> RowChunkReader | None:
    """A :class:`RowChunkReader` for an array of ``zarr.json`` document ``meta``, or
    ``None`` for a configuration this module does not handle."""
    shape = tuple(int(s) for s in meta.get("shape", ()))
    grid = meta.get("chunk_grid") or {}
    codecs = list(meta.get("codecs") or [])
    try:
        dtype = np.dtype(str(meta.get("data_type")))
    except TypeError:
        return None
    if (
        meta.get("zarr_format") != 3
        or len(shape) < 1
        or dtype.kind not in "fiu"
        or meta.get("storage_transformers")
        or grid.get("name") != "regular"
        or list((grid.get("configuration") or {}).get("chunk_shape", ())) != [1, *shape[1:]]
        or not codecs
    ):
        return None
    order = _endian(codecs[0])  # no filters: the serializer comes first
    steps = [_compressor(c) for c in reversed(codecs[1:])]
    key = _chunk_key(meta.get("chunk_key_encoding") or {}, len(shape))
    fill = _fill(meta.get("fill_value"), dtype)
    if order is None or any(s is None for s in steps) or key is None or fill is None:
        return None
    native = "<" if sys.byteorder == "little" else ">"
    return RowChunkReader(
        objects=objects,
        key=key,
        shape=shape,
        dtype=dtype,
        swap=dtype.itemsize > 1 and order != native,
        decoders=tuple(s for s in steps if s is not None),
        fill_value=fill,
    )


def row_chunk_reader(array: zarr.Array) -> RowChunkReader | None:
    """A :class:`RowChunkReader` of ``array`` from its metadata, or ``None`` where it is
    not a local array of one row per chunk with a codec chain this module handles."""
    if not isinstance(array.store, LocalStore):
        return None
    objects = store_objects(array.store, array.path)
    if objects is None:
        return None
    return reader_from_metadata(array.metadata.to_dict(), objects)


def read_rows(
    array: zarr.Array, rows: Sequence[int] | np.ndarray, select: Sequence[int] | None = None
) -> np.ndarray:
    """``array[rows]`` (rows sorted and distinct read fastest; any order works), with
    ``select`` only those indices of the second axis (``array[rows][:, select]``).

    From a local array of one chunk per row the chunk objects are read and decoded directly
    (:class:`RowChunkReader`); any other array is read through zarr (one slice when the
    rows are consecutive). A missing chunk is the fill value.
    """
    idx = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= array.shape[0]):
        raise IndexError(f"row index out of range for {array.path} of {array.shape[0]} rows")
    reader = row_chunk_reader(array) if len(idx) else None
    if reader is not None:
        return reader.read(idx, select)
    rest: tuple[Any, ...] = (slice(None),) * (array.ndim - 1)
    if select is not None:
        sel = np.asarray(select, dtype=np.int64).reshape(-1)
        if len(sel) and (int(sel.min()) < 0 or int(sel.max()) >= array.shape[1]):
            raise IndexError(f"selection {sel.tolist()} outside an axis of {array.shape[1]}")
        rest = (sel, *rest[1:])
    lo, hi = (int(idx.min()), int(idx.max()) + 1) if len(idx) else (0, 0)
    if hi - lo == len(idx) and (not len(idx) or bool(np.all(np.diff(idx) == 1))):
        whole = np.asarray(array[lo:hi])
        return whole if select is None else whole[:, rest[0]]
    return np.asarray(array.get_orthogonal_selection((idx, *rest)))
