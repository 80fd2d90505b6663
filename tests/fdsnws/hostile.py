"""Answers of a hostile or broken data centre: codes that are paths, redirects to another
host, answers trickled a byte at a time, huge answers and gzip bombs.

The switches live in :class:`tests.fdsnws.faults.Faults` (``hostile_stations``,
``redirect``, ``trickle_seconds``, ``huge_bytes``, ``gzip_bomb_bytes``, ``targets``); this
module builds the bodies. Big bodies are produced lazily, a chunk at a time, so the service
itself stays small in memory while it sends hundreds of megabytes.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator

CHUNK = 1 << 16
_STATION = slice(8, 13)  # miniSEED 2 fixed header: station code, 5 ASCII characters


def rename_records(body: bytes, record_lengths: list[int], names: dict[str, str]) -> bytes:
    """``body`` (whole records) with station codes renamed per ``names`` where they fit."""
    out = bytearray(body)
    offset = 0
    for length in record_lengths:
        code = bytes(out[offset + _STATION.start : offset + _STATION.stop]).decode().strip()
        new = names.get(code)
        if new is not None and len(new) <= 5:
            out[offset + _STATION.start : offset + _STATION.stop] = new.ljust(5).encode()
        offset += length
    return bytes(out)


def huge_chunks(body: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes: ``body`` (whole records) over and over, then zero bytes."""
    sent = 0
    block = body * max(1, CHUNK // max(1, len(body))) if body else bytes(CHUNK)
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated: int) -> bytes:
    """A gzip member of ``inflated`` zero bytes (about 1/1000 of that compressed)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = []
    left = inflated
    while left > 0:
        step = min(left, len(zeros))
        parts.append(packer.compress(zeros[:step]))
        left -= step
    parts.append(packer.flush())
    return b"".join(parts)
