"""Fault switches of the test service and the log of what it answered."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

# Random faults, in the order their fractions are stacked on one uniform draw.
RANDOM_FAULTS = ("reset", "unavailable", "too_many", "slow", "truncate")


@dataclass(frozen=True)
class Faults:
    """What the service does wrong, and how often (fractions of faultable requests, 0..1).

    Random faults hit only the query resources (``query``, ``queryauth``, ``auth``) of
    ``services``; discovery documents (``application.wadl``, ``version``, ``catalogs``,
    ``contributors``) are never faulted. One uniform draw per request picks at most one
    random fault, so the fractions must sum to at most 1.
    """

    unavailable: float = 0.0  # 503 with Retry-After: ceil(retry_after)
    too_many: float = 0.0  # 429 with Retry-After: ceil(retry_after)
    retry_after: float = 1.0  # seconds
    slow: float = 0.0  # the normal answer, sent after slow_seconds
    slow_seconds: float = 30.0
    truncate: float = 0.0  # Content-Length of the full body, half of it sent, connection closed
    reset: float = 0.0  # request read, then the connection reset (SO_LINGER 0) without answer
    max_bulk_lines: int | None = None  # POST dataselect with more request lines -> 413
    restricted: tuple[str, ...] = ()  # network codes that need credentials
    user: str = "user"
    password: str = "secret"
    token: str | None = None  # EIDA token accepted by dataselect/1/auth (None: none is)
    services: tuple[str, ...] = ("dataselect",)  # services the random faults hit
    # A hostile data centre (tests/fdsnws/hostile.py). These act on every matching answer,
    # not on a random share: ``targets`` names the stations whose dataselect answers are
    # trickled, huge or gzip bombs (empty: every dataselect answer with data).
    hostile_stations: tuple[tuple[str, str], ...] = ()  # (real code, code it is renamed to)
    redirect: str | None = None  # dataselect queries answered 307 to this base URL
    trickle_seconds: float = 0.0  # > 0: the answer is sent one byte per this many seconds
    trickle_headers: bool = False  # with trickle_seconds: an endless header line instead
    huge_bytes: int = 0  # > 0: this many bytes (records repeated), no Content-Length
    gzip_bomb_bytes: int = 0  # > 0: a gzip body (Content-Encoding) inflating to this much
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        fractions = [getattr(self, name) for name in RANDOM_FAULTS]
        if any(not 0.0 <= f <= 1.0 for f in fractions) or sum(fractions) > 1.0 + 1e-9:
            raise ValueError(f"fault fractions must lie in [0, 1] and sum to <= 1: {fractions}")
        hostile = [self.trickle_seconds > 0, self.huge_bytes > 0, self.gzip_bomb_bytes > 0]
        if sum(hostile) > 1:
            raise ValueError("choose one of trickle_seconds, huge_bytes, gzip_bomb_bytes")
        unknown = set(self.services) - {"dataselect", "station", "event"}
        if unknown:
            raise ValueError(f"unknown services in Faults.services: {sorted(unknown)}")

    def hostile_answer(self) -> str | None:
        """The fault that acts on targeted dataselect answers, if any."""
        if self.trickle_seconds > 0:
            return "trickle"
        if self.huge_bytes > 0:
            return "huge"
        if self.gzip_bomb_bytes > 0:
            return "gzip_bomb"
        return None

    def draw(self, rng: random.Random) -> str | None:
        """The random fault for one request (one draw from ``rng``), or None."""
        u = rng.random()
        edge = 0.0
        for name in RANDOM_FAULTS:
            edge += getattr(self, name)
            if u < edge:
                return name
        return None


@dataclass(frozen=True)
class RequestRecord:
    """One handled request: ``fault`` names the injected fault (a RANDOM_FAULTS name or
    ``"too_large"`` for a 413), None when none was; ``status`` 0 for a reset connection."""

    service: str
    method: str
    path: str
    status: int
    bytes_sent: int
    fault: str | None


class RequestLog:
    """A thread-safe list of RequestRecord."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
