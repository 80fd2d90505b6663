"""Reads of a channel array's rows by the Zarr v3 sharding specification.

zarr's public read of a sharded array (``array[d, lo:hi]``) costs more than decoding the
samples it returns (BENCHMARKS.md, issue 14). :func:`shard_reader` does what the
specification says instead, from nothing but the array's public metadata (its
``zarr.json``, ``array.metadata``) and the store's objects, read through fsspec (a local
folder, or any fsspec URL such as ``s3://``):

1. the shard of a row is one object, ``c.{row}.0`` (the chunk key encoding's separator); a
   missing object is a row of the fill value;
2. its index is one ``(offset, nbytes)`` pair of uint64 per inner chunk, in C order, at the
   end or the start of the object (``index_location``), encoded by ``index_codecs``:
   ``bytes`` then an optional ``crc32c`` (checked); ``(2**64 - 1, 2**64 - 1)`` marks an inner
   chunk that is not stored (the fill value);
3. the inner chunks a range touches are read (the whole object when every inner chunk is
   needed, or on an object store when the caller's bound on the shard's size is at most
   :data:`WHOLE_READ_BYTES`; else the index then one byte range spanning the needed chunks)
   and decoded with pcodec or numcodecs directly, into the result where a chunk is wholly
   inside the range.

Handled configurations (what ``storage.schema`` writes, and a little more): a 2-D array of
``int32`` with a numeric fill value, one shard per row (``chunk_shape [1, width]``), inner
chunks ``[1, n]`` dividing the row, chunk keys ``default`` or ``v2``, index codecs ``bytes``
(+ ``crc32c``), and inner codecs either ``numcodecs.pcodec`` alone or any
``numcodecs.delta`` (int32) filters, ``bytes``, then ``blosc``/``zstd``/``crc32c``
compressors. For anything else (other codecs, dtypes or chunk grids, a store that is neither
a local folder nor an fsspec store) :func:`shard_reader` returns ``None`` and the caller
reads through zarr's public API (``array[row, lo:hi]``).

A shard is replaced whole (a local file renamed over it, one PUT on an object store). On a
local folder the index and the chunks are read from one open file, so a read never mixes
two versions of a shard; on an object store a small shard is one request, a large one's
index and chunk bytes are two, as in zarr's own read.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import google_crc32c
import numcodecs
import numpy as np
import zarr
from pcodec import standalone
from seismoflow.storage import fsio
from zarr.storage import FsspecStore, LocalStore

from seismoflow.errors import StoreError

EMPTY = 2**64 - 1  # offset and nbytes of an inner chunk that is not stored
ENTRY_BYTES = 16  # (offset, nbytes), two uint64 per inner chunk
CRC_BYTES = 4
DTYPE = np.dtype("int32")
# On an object store, a shard known to be at most this large is read whole, one GET, rather
# than its index and then its chunks' byte range (two GETs, one after the other): each
# request costs a round trip, and a megabyte more moves in about the time of one.
WHOLE_READ_BYTES = 1 << 20

# Whole inner chunks of one read are decoded on up to this many threads (no more than the
# cores this process may run on): pcodec, blosc and zstd release the GIL while they decode,
# and so does numpy's cumulative sum (measured: a second Python thread runs all through a
# 290 ms pcodec decode). It shortens a day-long read's wall time, not its CPU time.
DECODE_THREADS = 4
_POOL: ThreadPoolExecutor | None = None
_POOL_GUARD = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_GUARD:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(DECODE_THREADS - 1, thread_name_prefix="shard-decode")
        return _POOL


def decode_threads() -> int:
    """Threads a read decodes its whole inner chunks on: the cores this process may use
    (its CPU affinity, checked at each read), at most :data:`DECODE_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        cores = os.cpu_count() or 1
    return max(1, min(DECODE_THREADS, cores))


# Fills ``out`` (one whole inner chunk, C-contiguous) from the chunk's stored bytes.
Decode = Callable[[bytes, np.ndarray], None]
# Fills ``out`` with values ``start:stop`` of the chunk, ``scratch`` (a whole chunk) at hand.
DecodeRange = Callable[[bytes, int, int, np.ndarray, np.ndarray], None]


# One inner chunk to decode: its stored bytes, where its values go, and which of them
# (``start:stop`` of the chunk; ``0:n`` is the whole chunk).
_Job = tuple[bytes, np.ndarray, int, int]


class ShardError(StoreError):
    """A shard whose index or chunk does not match the array's metadata (a damaged object)."""


class _Decoder(Protocol):
    def decode(self, buf: Any, out: Any = None) -> Any: ...


class _Crc32c:
    """The ``crc32c`` bytes-to-bytes codec: checks and strips the trailing checksum."""

    def decode(self, buf: Any, out: Any = None) -> Any:
        raw = bytes(buf)
        if not _crc_ok(raw):
            raise ShardError("an inner chunk fails its crc32c checksum")
        if out is None:
            return raw[:-CRC_BYTES]
        out.view(np.uint8)[:] = np.frombuffer(raw, np.uint8, len(raw) - CRC_BYTES)
        return out


def _crc_ok(raw: bytes) -> bool:
    """Whether ``raw`` ends with the crc32c (little-endian uint32) of what precedes it."""
    return bool(google_crc32c.value(raw[:-CRC_BYTES]) == int.from_bytes(raw[-CRC_BYTES:], "little"))


def _is_crc32c(step: Mapping[str, Any]) -> bool:
    return step.get("name") == "crc32c" and not step.get("configuration")


def _compressor(step: Mapping[str, Any]) -> _Decoder | None:
    name = step.get("name")
    if name in ("blosc", "numcodecs.blosc"):
        return numcodecs.Blosc()  # blosc frames describe themselves: no configuration needed
    if name in ("zstd", "numcodecs.zstd"):
        return numcodecs.Zstd()
    if _is_crc32c(step):
        return _Crc32c()
    return None


def _endian(step: Mapping[str, Any]) -> str | None:
    """``'<'`` or ``'>'`` for a ``bytes`` codec, ``None`` for any other."""
    if step.get("name") != "bytes":
        return None
    endian = (step.get("configuration") or {}).get("endian", "little")
    return {"little": "<", "big": ">"}.get(endian)


def _is_delta(step: Mapping[str, Any]) -> bool:
    """Whether ``step`` is numcodecs' Delta on int32 (stored as int32)."""
    conf = step.get("configuration") or {}
    if step.get("name") != "numcodecs.delta" or "dtype" not in conf:
        return False
    try:
        return np.dtype(conf["dtype"]) == DTYPE and np.dtype(conf.get("astype") or DTYPE) == DTYPE
    except TypeError:
        return False


def decode_bytes_codecs(
    raw: bytes | memoryview, out: np.ndarray, decoders: Sequence[_Decoder], swap: bool
) -> None:
    """Undo a chunk's bytes-to-bytes codecs (``decoders``, outermost first) and its
    ``bytes`` serializer (its byte order undone by ``swap``) into ``out``, a whole chunk,
    C-contiguous."""
    buf: Any = raw
    for step in decoders[:-1]:
        buf = step.decode(buf)
    if decoders:
        decoders[-1].decode(buf, out=out)
    else:
        if len(buf) != out.nbytes:
            raise ShardError(f"a chunk of {len(buf)} bytes for {out.nbytes} bytes of values")
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(buf, np.uint8)
    if swap:
        out.byteswap(inplace=True)


def inner_decoder(codecs: Sequence[Mapping[str, Any]]) -> tuple[Decode, DecodeRange] | None:
    """The decoders of an inner chunk stored through ``codecs`` (their ``zarr.json`` form),
    of the whole chunk and of a range of it, or ``None`` for a chain this module does not
    handle."""
    if len(codecs) == 1 and codecs[0].get("name") == "numcodecs.pcodec":

        def pcodec(raw: bytes, out: np.ndarray) -> None:
            progress = standalone.simple_decompress_into(raw, out)
            if progress.n_processed != out.size or not progress.finished:
                raise ShardError(f"a pcodec chunk holds other than {out.size} values")

        def pcodec_range(
            raw: bytes, start: int, stop: int, scratch: np.ndarray, out: np.ndarray
        ) -> None:
            # pcodec decodes a chunk from its start and can stop anywhere: values after
            # ``stop`` (a record that ends inside the chunk) are never decoded.
            place = out if start == 0 else scratch[:stop]
            progress = standalone.simple_decompress_into(raw, place)
            if progress.n_processed != stop:
                raise ShardError(f"a pcodec chunk holds fewer than {stop} values")
            if start:
                out[:] = scratch[start:stop]

        return pcodec, pcodec_range
    serializer = next((i for i, c in enumerate(codecs) if _endian(c) is not None), None)
    if serializer is None:
        return None
    filters, compressors = codecs[:serializer], codecs[serializer + 1 :]
    if not all(_is_delta(f) for f in filters):
        return None
    steps = [_compressor(c) for c in reversed(compressors)]
    if any(s is None for s in steps):
        return None
    decoders: list[_Decoder] = [s for s in steps if s is not None]
    swap = _endian(codecs[serializer]) != ("<" if sys.byteorder == "little" else ">")
    n_delta = len(filters)

    def serialized(raw: bytes, out: np.ndarray) -> None:
        """The bytes codecs undone: ``out`` holds the values before the filters."""
        decode_bytes_codecs(raw, out, decoders, swap)

    def chain(raw: bytes, out: np.ndarray) -> None:
        serialized(raw, out)
        for _ in range(n_delta):
            np.cumsum(out, out=out)

    def chain_range(
        raw: bytes, start: int, stop: int, scratch: np.ndarray, out: np.ndarray
    ) -> None:
        # A snippet in a mostly empty chunk: the running sum up to ``start`` is one sum
        # (int32 wraps as the cumulative sum does), and nothing after ``stop`` is summed.
        serialized(raw, scratch)
        if n_delta == 1:
            np.cumsum(scratch[start:stop], out=out)
            if start:
                out += scratch[:start].sum(dtype=DTYPE)
            return
        for _ in range(n_delta):
            np.cumsum(scratch[:stop], out=scratch[:stop])
        out[:] = scratch[start:stop]

    return chain, chain_range


class Objects(Protocol):
    """Whole objects and byte ranges of them; ``None`` where the object does not exist."""

    def whole(self, key: str) -> bytes | None: ...

    def read_whole_below(self) -> int:
        """Shards at most this large (bytes) are read whole even for a part of them."""
        ...

    def index_and_span(
        self, key: str, index_bytes: int, at_end: bool, span: Callable[[bytes], tuple[int, int]]
    ) -> tuple[bytes, bytes, int] | None: ...


class _LocalObjects:
    """Objects of a local folder, the index and the chunks read from one open file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read_whole_below(self) -> int:
        return 0  # two preads of one open file cost less than reading the rest

    def whole(self, key: str) -> bytes | None:
        try:
            return (self.folder / key).read_bytes()
        except FileNotFoundError:
            return None

    def index_and_span(
        self, key: str, index_bytes: int, at_end: bool, span: Callable[[bytes], tuple[int, int]]
    ) -> tuple[bytes, bytes, int] | None:
        try:
            fd = os.open(self.folder / key, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < index_bytes:
                raise ShardError(f"shard {key} of {size} bytes is shorter than its index")
            index = os.pread(fd, index_bytes, size - index_bytes if at_end else 0)
            start, stop = span(index)
            return index, os.pread(fd, stop - start, start) if stop > start else b"", start
        finally:
            os.close(fd)


class _FsspecObjects:
    """Objects under an fsspec URL (``s3://…``): a suffix range for the index, one range for
    the chunks."""

    def __init__(self, location: str) -> None:
        self.fs, self.base = fsio.filesystem(location)

    def read_whole_below(self) -> int:
        return WHOLE_READ_BYTES

    def whole(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(fsio.join(self.base, key)))
        except FileNotFoundError:
            return None

    def index_and_span(
        self, key: str, index_bytes: int, at_end: bool, span: Callable[[bytes], tuple[int, int]]
    ) -> tuple[bytes, bytes, int] | None:
        path = fsio.join(self.base, key)
        try:
            if at_end:
                index = bytes(self.fs.cat_file(path, start=-index_bytes))
            else:
                index = bytes(self.fs.cat_file(path, start=0, end=index_bytes))
        except FileNotFoundError:
            return None
        start, stop = span(index)
        chunks = bytes(self.fs.cat_file(path, start=start, end=stop)) if stop > start else b""
        return index, chunks, start


def store_objects(store: Any, path: str) -> Objects | None:
    """The objects of node ``path`` of a zarr store (a local folder or an fsspec store),
    ``None`` for a store of any other kind."""
    if isinstance(store, LocalStore):
        return _LocalObjects(Path(store.root) / path)
    if isinstance(store, FsspecStore):
        location = str(store.fs.unstrip_protocol(store.path))
        return _FsspecObjects(fsio.join(location, path))
    return None


def read_document(objects: Objects) -> dict[str, Any] | None:
    """The node's ``zarr.json`` (``None`` if the node does not exist)."""
    raw = objects.whole("zarr.json")
    return None if raw is None else dict(json.loads(raw))


def _chunk_key(encoding: Mapping[str, Any]) -> Callable[[int], str] | None:
    """The key of the shard of row ``r`` (chunk ``(r, 0)``) under a chunk key encoding."""
    name = encoding.get("name")
    sep = (encoding.get("configuration") or {}).get("separator")
    if name == "default":
        sep = sep or "/"
        return lambda row: f"c{sep}{row}{sep}0"
    if name == "v2":
        sep = sep or "."
        return lambda row: f"{row}{sep}0"
    return None


@dataclass(frozen=True)
class ShardReader:
    """Rows of one sharded 2-D array (one shard per row), decoded by the specification."""

    objects: Objects
    key: Callable[[int], str]
    shape: tuple[int, int]
    inner: int  # samples per inner chunk
    n_inner: int  # inner chunks per shard
    index_at_end: bool
    index_order: str  # '<' or '>'
    index_crc: bool
    decode: Decode
    decode_range: DecodeRange
    fill_value: int

    @property
    def index_bytes(self) -> int:
        return ENTRY_BYTES * self.n_inner + (CRC_BYTES if self.index_crc else 0)

    def parse_index(self, raw: bytes) -> np.ndarray:
        """``(n_inner, 2)`` offsets and sizes (uint64) from the index's stored bytes."""
        if len(raw) != self.index_bytes:
            raise ShardError(f"a shard index of {len(raw)} bytes, expected {self.index_bytes}")
        if self.index_crc and not _crc_ok(raw):
            raise ShardError("a shard index fails its crc32c checksum")
        entries = np.frombuffer(raw, f"{self.index_order}u8", 2 * self.n_inner)
        return entries.reshape(self.n_inner, 2).astype(np.uint64, copy=False)

    def read(self, row: int, lo: int, hi: int, max_bytes: int | None = None) -> np.ndarray:
        """Values ``lo:hi`` of row ``row`` (the fill value where nothing is stored).

        ``max_bytes``: a bound on the size of the row's shard, if the caller knows one (e.g.
        from the ledger's sample count); a shard that small is read whole on an object store.
        """
        width = self.shape[1]
        if not (0 <= row < self.shape[0] and 0 <= lo <= hi <= width):
            raise IndexError(f"row {row}, values {lo}:{hi} outside an array of {self.shape}")
        out = np.empty(hi - lo, DTYPE)
        if hi == lo:
            return out
        first, last = lo // self.inner, (hi - 1) // self.inner
        key = self.key(row)
        below = self.objects.read_whole_below()
        small = below > 0 and max_bytes is not None and max_bytes <= below
        if small or (first == 0 and last == self.n_inner - 1):
            shard = self.objects.whole(key)
            if shard is None:
                out.fill(self.fill_value)
                return out
            self._fill_from_shard(out, lo, hi, shard, key)
            return out

        def span(raw: bytes) -> tuple[int, int]:
            needed = self.parse_index(raw)[first : last + 1]
            stored = needed[needed[:, 0] != EMPTY]
            if not len(stored):
                return 0, 0
            return int(stored[:, 0].min()), int((stored[:, 0] + stored[:, 1]).max())

        found = self.objects.index_and_span(key, self.index_bytes, self.index_at_end, span)
        if found is None:
            out.fill(self.fill_value)
            return out
        raw_index, chunks, base = found
        self._fill(out, lo, hi, self.parse_index(raw_index), chunks, base)
        return out

    def read_shard(self, shard: bytes, lo: int, hi: int) -> np.ndarray:
        """Values ``lo:hi`` of a row from its shard's bytes, ``shard``, already at hand."""
        if not 0 <= lo <= hi <= self.shape[1]:
            raise IndexError(f"values {lo}:{hi} outside a row of {self.shape[1]}")
        out = np.empty(hi - lo, DTYPE)
        if hi > lo:
            self._fill_from_shard(out, lo, hi, shard, "at hand")
        return out

    def _fill_from_shard(self, out: np.ndarray, lo: int, hi: int, shard: bytes, key: str) -> None:
        if len(shard) < self.index_bytes:
            raise ShardError(f"shard {key} of {len(shard)} bytes is shorter than its index")
        at = len(shard) - self.index_bytes if self.index_at_end else 0
        index = self.parse_index(shard[at : at + self.index_bytes])
        self._fill(out, lo, hi, index, shard, 0)

    def _fill(
        self, out: np.ndarray, lo: int, hi: int, index: np.ndarray, data: bytes, base: int
    ) -> None:
        """Decode the inner chunks of ``lo:hi`` into ``out``; ``data`` holds the shard's
        bytes from offset ``base`` on."""
        n = self.inner
        jobs: list[_Job] = []  # decoded after the loop, on threads
        for j in range(lo // n, (hi - 1) // n + 1):
            a, b = max(lo, j * n), min(hi, (j + 1) * n)
            offset, nbytes = (int(v) for v in index[j])
            if offset == EMPTY and nbytes == EMPTY:
                out[a - lo : b - lo] = self.fill_value
                continue
            start = offset - base
            if start < 0 or start + nbytes > len(data):
                raise ShardError(f"inner chunk {j} at bytes {offset}+{nbytes} outside its shard")
            jobs.append((data[start : start + nbytes], out[a - lo : b - lo], a - j * n, b - j * n))
        self._decode_jobs(jobs)

    def _decode_jobs(self, jobs: list[_Job]) -> None:
        """Decode inner chunks (whole, or the part a read needs) into their places, on
        :func:`decode_threads` threads (this one and the pool's) when there are several."""
        n = self.inner

        def some(part: list[_Job]) -> None:
            scratch: np.ndarray | None = None
            for raw, place, start, stop in part:
                if start == 0 and stop == n:
                    self.decode(raw, place)
                    continue
                if scratch is None:
                    scratch = np.empty(n, DTYPE)
                self.decode_range(raw, start, stop, scratch, place)

        k = min(decode_threads(), len(jobs))
        if k <= 1:
            some(jobs)
            return
        parts = [jobs[i::k] for i in range(k)]
        pool = _decode_pool()
        futures = [pool.submit(some, part) for part in parts[1:]]
        some(parts[0])
        for future in futures:
            future.result()


def shard_reader(array: zarr.Array) -> ShardReader | None:
    """A :class:`ShardReader` of ``array`` from its metadata, or ``None`` where its
    configuration is not one this module handles (then read through ``array[...]``)."""
    objects = store_objects(array.store, array.path)
    if objects is None:
        return None
    meta = array.metadata.to_dict()
    return reader_from_metadata(meta, objects)


def reader_from_metadata(meta: Mapping[str, Any], objects: Objects) -> ShardReader | None:
    """A :class:`ShardReader` for an array of ``zarr.json`` document ``meta``, or ``None``."""
    shape = tuple(int(s) for s in meta.get("shape", ()))
    grid = meta.get("chunk_grid") or {}
    codecs = meta.get("codecs") or []
    fill = meta.get("fill_value")
    if (
        meta.get("zarr_format") != 3
        or len(shape) != 2
        or meta.get("data_type") != "int32"
        or meta.get("storage_transformers")
        or not isinstance(fill, int)
        or isinstance(fill, bool)
        or grid.get("name") != "regular"
        or list((grid.get("configuration") or {}).get("chunk_shape", ())) != [1, shape[1]]
        or len(codecs) != 1
        or codecs[0].get("name") != "sharding_indexed"
    ):
        return None
    conf = codecs[0].get("configuration") or {}
    inner_shape = list(conf.get("chunk_shape", ()))
    if len(inner_shape) != 2 or inner_shape[0] != 1 or inner_shape[1] <= 0:
        return None
    inner = int(inner_shape[1])
    index_codecs = list(conf.get("index_codecs", ()))
    location = conf.get("index_location", "end")
    key = _chunk_key(meta.get("chunk_key_encoding") or {})
    decoders = inner_decoder(list(conf.get("codecs", ())))
    order = _endian(index_codecs[0]) if index_codecs else None
    crc = len(index_codecs) == 2 and _is_crc32c(index_codecs[1])
    if (
        shape[1] % inner
        or location not in ("end", "start")
        or key is None
        or decoders is None
        or order is None
        or not (crc or len(index_codecs) == 1)
    ):
        return None
    return ShardReader(
        objects=objects,
        key=key,
        shape=(shape[0], shape[1]),
        inner=inner,
        n_inner=shape[1] // inner,
        index_at_end=location == "end",
        index_order=order,
        index_crc=crc,
        decode=decoders[0],
        decode_range=decoders[1],
        fill_value=int(fill),
    )
