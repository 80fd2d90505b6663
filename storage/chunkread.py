"""Reads of whole rows of an array stored one row per chunk, by the Zarr v3 specification.

The event and noise windows (``{group}/waveform``, ``storage.schema``) are stored one trace
per chunk, ``bytes`` then ``zstd``, either each chunk its own object or ``K`` traces to a
shard. zarr's public read of a few hundred of those chunks costs more in its per-chunk
machinery than the decompression itself (~0.7 ms against ~0.4 ms a window, issue 16), as
much as the CNN's preprocessing. :func:`read_rows` reads them as the specification says
instead, from the array's public metadata (``array.metadata.to_dict()``, its ``zarr.json``)
and the store's objects:

1. unsharded, the chunk of row ``r`` is the object ``c{sep}{r}{sep}0...`` (``default``
   chunk key encoding) or ``{r}{sep}0...`` (``v2``); a missing object is a row of the fill
   value;
2. sharded (``sharding_indexed``, shards of ``K`` rows), row ``r`` is inner chunk ``r % K``
   of the shard object of chunk ``(r // K, 0, ...)``, keyed as above. Each shard a read
   needs is read once, whole; its index, ``(offset, nbytes)`` uint64 pairs at the end or
   the start of the object (``index_location``) encoded by ``bytes`` and an optional
   ``crc32c`` (checked), locates the row's chunk; a missing shard or an entry of
   ``(2**64 - 1, 2**64 - 1)`` is a row of the fill value;
3. a chunk is decoded by the codec chain of :mod:`storage.shardread`: the ``bytes``
   serializer (either byte order) then any of ``zstd``/``blosc``/``crc32c``, straight into
   the result (a row asked for twice is decoded once and copied).

Handled configurations: zarr format 3, a regular chunk grid of one row per chunk
(``chunk_shape [1, *shape[1:]]``), or of shards of whole rows (``chunk_shape [K,
*shape[1:]]``, an edge shard included) holding inner chunks of one row (``[1,
*shape[1:]]``) under the codecs above, a numeric data type with a numeric fill value, no
filters, no storage transformers, on a local folder. Anything else (other codecs or index
codecs, inner chunks of several rows or of part of one, nested sharding, an object store,
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
    CRC_BYTES,
    EMPTY,
    ENTRY_BYTES,
    Objects,
    ShardError,
    _compressor,
    _crc_ok,
    _Decoder,
    _endian,
    _is_crc32c,
    decode_bytes_codecs,
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
        decode_bytes_codecs(raw, out, self.decoders, self.swap)


@dataclass(frozen=True)
class ShardedRowReader:
    """Rows of an array stored in shards of ``shard_rows`` rows, one row per inner chunk,
    decoded by the specification."""

    objects: Objects
    key: Callable[[int], str]  # of the shard of rows ``s * shard_rows`` onwards
    shape: tuple[int, ...]
    dtype: np.dtype[Any]  # native byte order
    swap: bool  # stored in the other byte order
    decoders: tuple[_Decoder, ...]
    fill_value: Any
    shard_rows: int  # K, inner chunks (rows) per shard
    index_at_end: bool
    index_order: str  # '<' or '>'
    index_crc: bool

    @property
    def index_bytes(self) -> int:
        return ENTRY_BYTES * self.shard_rows + (CRC_BYTES if self.index_crc else 0)

    def parse_index(self, shard: bytes, key: str) -> np.ndarray:
        """``(shard_rows, 2)`` offsets and sizes (uint64) from a whole shard's bytes."""
        if len(shard) < self.index_bytes:
            raise ShardError(f"shard {key} of {len(shard)} bytes is shorter than its index")
        at = len(shard) - self.index_bytes if self.index_at_end else 0
        raw = shard[at : at + self.index_bytes]
        if self.index_crc and not _crc_ok(raw):
            raise ShardError(f"the index of shard {key} fails its crc32c checksum")
        entries = np.frombuffer(raw, f"{self.index_order}u8", 2 * self.shard_rows)
        return entries.reshape(self.shard_rows, 2).astype(np.uint64, copy=False)

    def read(
        self, rows: Sequence[int] | np.ndarray, select: Sequence[int] | None = None
    ) -> np.ndarray:
        """``array[rows]`` for distinct or repeated row indices, in the given order; with
        ``select``, only those indices of the second axis (``array[rows][:, select]``).

        The rows are visited in sorted order, so each shard they touch is read once, whole,
        and a repeated row is decoded once; a selection decodes whole chunks into one
        scratch chunk and copies out only what was asked for."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.shape[0]):
            raise IndexError(f"row index out of range for an array of {self.shape[0]} rows")
        sel: np.ndarray | None = None
        if select is None:
            out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        else:
            if len(self.shape) < 2:
                raise ValueError("a selection needs an array of at least two dimensions")
            sel = np.asarray(select, dtype=np.int64).reshape(-1)
            if len(sel) and (int(sel.min()) < 0 or int(sel.max()) >= self.shape[1]):
                raise IndexError(f"selection {sel.tolist()} outside an axis of {self.shape[1]}")
            out = np.empty((len(idx), len(sel), *self.shape[2:]), dtype=self.dtype)
        scratch = None if sel is None else np.empty(self.shape[1:], dtype=self.dtype)
        values = idx.tolist()
        shard_no, shard, index = -1, b"", None
        last_row, last_i = -1, -1
        for i in np.argsort(idx, kind="stable").tolist():
            row = values[i]
            if row == last_row:
                out[i] = out[last_i]
                continue
            last_row, last_i = row, i
            if row // self.shard_rows != shard_no:
                shard_no = row // self.shard_rows
                key = self.key(shard_no)
                whole = self.objects.whole(key)
                shard = b"" if whole is None else whole
                index = None if whole is None else self.parse_index(shard, key)
            if index is None:
                out[i] = self.fill_value
                continue
            offset, nbytes = (int(v) for v in index[row % self.shard_rows])
            if offset == EMPTY and nbytes == EMPTY:
                out[i] = self.fill_value
                continue
            if offset + nbytes > len(shard):
                raise ShardError(
                    f"row {row} at bytes {offset}+{nbytes} outside its shard of {len(shard)}"
                )
            raw = memoryview(shard)[offset : offset + nbytes]
            if sel is None or scratch is None:
                decode_bytes_codecs(raw, out[i], self.decoders, self.swap)
            else:
                decode_bytes_codecs(raw, scratch, self.decoders, self.swap)
                np.take(scratch, sel, axis=0, out=out[i])
        return out


def _chain(
    codecs: Sequence[Mapping[str, Any]], dtype: np.dtype[Any]
) -> tuple[bool, tuple[_Decoder, ...]] | None:
    """Whether the values are stored byte-swapped, and the decoders of the bytes-to-bytes
    codecs in decoding order, for a codec chain of the ``bytes`` serializer (no filters)
    then ``zstd``/``blosc``/``crc32c``; ``None`` for any other chain."""
    if not codecs:
        return None
    order = _endian(codecs[0])  # no filters: the serializer comes first
    steps = [_compressor(c) for c in reversed(codecs[1:])]
    if order is None or any(s is None for s in steps):
        return None
    native = "<" if sys.byteorder == "little" else ">"
    return dtype.itemsize > 1 and order != native, tuple(s for s in steps if s is not None)


def reader_from_metadata(
    meta: Mapping[str, Any], objects: Objects
) -> RowChunkReader | ShardedRowReader | None:
    """A :class:`RowChunkReader` (one row per chunk) or :class:`ShardedRowReader` (shards
    of whole rows, one row per inner chunk) for an array of ``zarr.json`` document
    ``meta``, or ``None`` for a configuration this module does not handle."""
    shape = tuple(int(s) for s in meta.get("shape", ()))
    grid = meta.get("chunk_grid") or {}
    chunk_shape = list((grid.get("configuration") or {}).get("chunk_shape", ()))
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
        or not codecs
    ):
        return None
    key = _chunk_key(meta.get("chunk_key_encoding") or {}, len(shape))
    fill = _fill(meta.get("fill_value"), dtype)
    if key is None or fill is None:
        return None
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        return _sharded_reader(
            shape, chunk_shape, codecs[0].get("configuration") or {}, dtype, key, fill, objects
        )
    chain = _chain(codecs, dtype)
    if chunk_shape != [1, *shape[1:]] or chain is None:
        return None
    return RowChunkReader(
        objects=objects,
        key=key,
        shape=shape,
        dtype=dtype,
        swap=chain[0],
        decoders=chain[1],
        fill_value=fill,
    )


def _sharded_reader(
    shape: tuple[int, ...],
    shard_shape: list[Any],
    conf: Mapping[str, Any],
    dtype: np.dtype[Any],
    key: Callable[[int], str],
    fill: Any,
    objects: Objects,
) -> ShardedRowReader | None:
    """A :class:`ShardedRowReader` for shards of ``shard_shape`` (``[K, *shape[1:]]``)
    under the ``sharding_indexed`` configuration ``conf``, or ``None``."""
    rows = shard_shape[0] if shard_shape else None
    index_codecs = list(conf.get("index_codecs") or ())
    order = _endian(index_codecs[0]) if index_codecs else None
    crc = len(index_codecs) == 2 and _is_crc32c(index_codecs[1])
    location = conf.get("index_location", "end")
    chain = _chain(list(conf.get("codecs") or ()), dtype)
    if (
        not isinstance(rows, int)
        or isinstance(rows, bool)
        or rows < 1
        or shard_shape != [rows, *shape[1:]]
        or list(conf.get("chunk_shape") or ()) != [1, *shape[1:]]
        or order is None
        or not (crc or len(index_codecs) == 1)
        or location not in ("end", "start")
        or chain is None
    ):
        return None
    return ShardedRowReader(
        objects=objects,
        key=key,
        shape=shape,
        dtype=dtype,
        swap=chain[0],
        decoders=chain[1],
        fill_value=fill,
        shard_rows=rows,
        index_at_end=location == "end",
        index_order=order,
        index_crc=crc,
    )


def row_chunk_reader(array: zarr.Array) -> RowChunkReader | ShardedRowReader | None:
    """A :class:`RowChunkReader` or :class:`ShardedRowReader` of ``array`` from its
    metadata, or ``None`` where it is not a local array of one row per chunk (sharded or
    not) with codecs this module handles."""
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
    (:class:`RowChunkReader`), from one of shards of whole rows, one row per inner chunk,
    each needed shard once (:class:`ShardedRowReader`); any other array is read through
    zarr (one slice when the rows are consecutive). A missing chunk is the fill value.
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
