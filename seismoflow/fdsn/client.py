"""An ObsPy FDSN client that retries politely and counts what it did.

:class:`PoliteClient` is ObsPy's own :class:`obspy.clients.fdsn.Client` (URL building,
service discovery, parameter checks, digest authentication and EIDA tokens stay ObsPy's);
only its single download method is replaced, so that it

- shares a per-provider limit of concurrent requests (ObsPy's mass downloader uses 3),
- sees the HTTP headers, so a 429 or 503 ``Retry-After`` is honoured,
- recognises truncated bodies (fewer bytes than ``Content-Length``, or a gzip stream cut
  short) and connection resets as transient,
- retries transient failures with capped exponential backoff and full jitter,
- treats an answer as input: follows no redirect to another origin (host, port) or from
  https to http (:class:`RedirectRefused`), ends a request at its total deadline
  (``deadline_s``, retried like a timeout), streams the body to an unnamed temporary file
  with a size cap and inflates gzip with the same cap (:class:`AnswerTooLarge`), so memory
  stays bounded by the cap whatever the service sends.

Final answers are not retried: 204/404 (no data) and 400 (bad request) are raised at once
as ObsPy's exceptions; 413 is raised as :class:`RequestTooLarge` for the caller to split.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar
from urllib.parse import urlparse

from obspy.clients.fdsn import Client
from obspy.clients.fdsn.client import raise_on_error
from obspy.clients.fdsn.header import (
    URL_MAPPINGS,
    FDSNBadRequestException,
    FDSNException,
    FDSNNoDataException,
    FDSNRequestTooLargeException,
    FDSNTimeoutException,
)

from seismoflow.errors import BadInputError
from seismoflow.fdsn.guard import (
    CHUNK,
    AnswerTooLarge,
    Deadline,
    RedirectRefused,
    SameOriginRedirects,
    TrackedHTTPHandler,
    TrackedHTTPSHandler,
    TransientError,
    gunzip,
    redirect_allowed,
    too_large,
    where,
)

__all__ = [
    "AnswerTooLarge",
    "FetchStats",
    "PoliteClient",
    "RedirectRefused",
    "RequestTooLarge",
    "RetryPolicy",
    "TransientError",
    "is_transient",
    "redirect_allowed",
    "resolve_provider",
    "with_retries",
]

T = TypeVar("T")

#: HTTP statuses that are worth asking again.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RequestTooLarge(FDSNRequestTooLargeException):
    """HTTP 413: the caller splits the request and goes on."""


def resolve_provider(name: str) -> str:
    """Base URL of a provider given as a URL or an ObsPy short name (``EARTHSCOPE``, ``GFZ``)."""
    key = name.strip()
    if key.upper() in URL_MAPPINGS:
        return str(URL_MAPPINGS[key.upper()]).rstrip("/")
    parsed = urlparse(key)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return key.rstrip("/")
    known = ", ".join(sorted(URL_MAPPINGS))
    raise BadInputError(
        f"FDSN provider {name!r} is neither an http(s) base URL nor one of ObsPy's short names "
        f"({known}); pass e.g. --fdsn-url https://service.earthscope.org"
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; ``Retry-After`` is a lower bound."""

    attempts: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        backoff = min(self.cap_s, self.base_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
        return backoff if retry_after is None else max(backoff, retry_after)


@dataclass
class FetchStats:
    """Thread-safe counters of a fetch run (what the run summary reports)."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def provider_slots(base_url: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore limiting concurrent requests to one provider."""
    host = urlparse(base_url).netloc or base_url
    with _SLOTS_LOCK:
        key = f"{host}#{limit}"
        if key not in _SLOTS:
            _SLOTS[key] = threading.BoundedSemaphore(limit)
        return _SLOTS[key]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class PoliteClient(Client):  # type: ignore[misc]  # ObsPy is untyped
    """ObsPy's FDSN client with a concurrency limit, header-aware errors and counters.

    Retries are not done here but by :func:`with_retries` around whole requests, so a
    request is one counted unit whatever ObsPy does inside.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 3,
        stats: FetchStats | None = None,
        deadline_s: float | None = None,
        max_answer_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.stats = stats or FetchStats()
        self.problems: list[str] = []  # what was refused in the answers (named, with reasons)
        self._slots = provider_slots(base_url, concurrency)
        self.deadline_s = deadline_s
        self.max_answer_bytes = max_answer_bytes
        self._limits = threading.local()
        super().__init__(base_url, **kwargs)

    def _set_opener(self, user: str | None, password: str | None) -> None:
        # ObsPy builds its opener here (again when credentials change); ours refuses
        # redirects that leave the origin before ObsPy's handler would follow them.
        super()._set_opener(user, password)
        for handler in (SameOriginRedirects(), TrackedHTTPHandler(), TrackedHTTPSHandler()):
            self._url_opener.add_handler(handler)

    @contextlib.contextmanager
    def answer_limit(self, max_bytes: int) -> Iterator[None]:
        """Requests made inside (in this thread) accept at most ``max_bytes`` of answer."""
        previous = getattr(self._limits, "max_bytes", None)
        self._limits.max_bytes = max_bytes
        try:
            yield
        finally:
            self._limits.max_bytes = previous

    def _cap(self) -> int | None:
        cap = getattr(self._limits, "max_bytes", None)
        return cap if cap is not None else self.max_answer_bytes

    def __repr__(self) -> str:  # never show credentials
        return f"PoliteClient({self.base_url!r})"

    def _download(
        self,
        url: str,
        return_string: bool = False,
        data: bytes | None = None,
        use_gzip: bool | None = None,
        content_type: str | None = None,
    ) -> Any:
        if use_gzip is None:
            use_gzip = self.use_gzip
        headers = dict(self.request_headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url=url, headers=headers)
        if use_gzip:
            request.add_header("Accept-encoding", "gzip")
        service = _service_of(url)
        with self._slots:
            self.stats.add("requests")
            self.stats.add(f"requests_{service}")
            body = self._open(request, data)
        self.stats.add("bytes", len(body))
        self.stats.add(f"bytes_{service}", len(body))
        return body if return_string else io.BytesIO(body)

    def _open(self, request: urllib.request.Request, data: bytes | None) -> bytes:
        """The body of one request, within its deadline (then retried like a timeout)."""
        with Deadline(self.deadline_s) as deadline:
            try:
                body = self._answer(request, data)
            except Exception as exc:
                if deadline.expired:
                    raise FDSNTimeoutException(self._past_deadline(request)) from exc
                raise
            if deadline.expired:  # the sockets were shut: the body may be cut short
                raise FDSNTimeoutException(self._past_deadline(request))
            return body

    def _past_deadline(self, request: urllib.request.Request) -> str:
        return (
            f"deadline of {self.deadline_s:g} s passed at {where(request.full_url)} "
            "(setting fetch_deadline_s)"
        )

    def _answer(self, request: urllib.request.Request, data: bytes | None) -> bytes:
        url = request.full_url
        started = time.monotonic()
        timeout = self.timeout if self.deadline_s is None else min(self.timeout, self.deadline_s)
        try:
            response = self._url_opener.open(request, timeout=timeout, data=data)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            try:
                detail = exc.read(CHUNK)  # an error page is read no further
            except Exception:  # noqa: BLE001 - a broken error body is still an error
                detail = b""
            if status in TRANSIENT_STATUS:
                raise TransientError(
                    f"HTTP {status} from {where(url)}", status, _retry_after(exc.headers)
                ) from None
            if status == 413:
                raise RequestTooLarge(f"HTTP 413 (request too large) from {where(url)}") from None
            if status == 404:
                raise FDSNNoDataException(f"no data (HTTP 404) at {where(url)}") from None
            raise_on_error(status, detail)
            raise FDSNException(f"HTTP {status} from {where(url)}") from None
        except TimeoutError as exc:
            raise FDSNTimeoutException(self._timed_out(timeout, url)) from exc
        except (ConnectionError, http.client.HTTPException, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise FDSNTimeoutException(self._timed_out(timeout, url)) from exc
            raise TransientError(f"connection failed at {where(url)} ({reason!r})") from exc
        with response, tempfile.TemporaryFile() as spool:
            status = int(response.status)
            expected = response.headers.get("Content-Length")
            encoding = (response.headers.get("Content-Encoding") or "").lower()
            cap = self._cap()
            announced = int(expected) if expected is not None and expected.isdigit() else None
            if cap is not None and announced is not None and announced > cap:
                raise AnswerTooLarge(too_large(url, cap, f"announces {expected} bytes"))
            size = self._spool(response, spool, url, started, cap)
            if expected is not None and expected.isdigit() and size < int(expected):
                raise TransientError(
                    f"truncated body from {where(url)}: {size} of {expected} bytes"
                )
            if status == 204:
                raise FDSNNoDataException(f"no data (HTTP 204) at {where(url)}")
            spool.seek(0)
            if encoding == "gzip":
                return gunzip(spool, url, cap)
            return spool.read()

    def _timed_out(self, timeout: float, url: str) -> str:
        if timeout < self.timeout:
            at = where(url)
            return f"no answer within the deadline of {timeout:g} s at {at} (fetch_deadline_s)"
        return f"timed out after {timeout:g} s at {where(url)}"

    def _spool(
        self, response: Any, spool: IO[bytes], url: str, started: float, cap: int | None
    ) -> int:
        """Copy the body to ``spool`` in chunks; the deadline and the cap end it early."""
        size = 0
        while True:
            if self.deadline_s is not None and time.monotonic() - started > self.deadline_s:
                raise FDSNTimeoutException(
                    f"deadline of {self.deadline_s:g} s passed at {where(url)} after {size} bytes "
                    "(setting fetch_deadline_s)"
                )
            try:
                chunk = response.read1(CHUNK)
            except http.client.IncompleteRead as exc:
                raise TransientError(
                    f"truncated body from {where(url)}: {size + len(exc.partial)} bytes"
                ) from exc
            except TimeoutError as exc:
                raise FDSNTimeoutException(f"read timed out at {where(url)}") from exc
            except (ConnectionError, http.client.HTTPException) as exc:
                raise TransientError(
                    f"connection lost while reading {where(url)} ({exc!r})"
                ) from exc
            if not chunk:
                return size
            size += len(chunk)
            if cap is not None and size > cap:
                raise AnswerTooLarge(too_large(url, cap, f"sent more than {cap} bytes"))
            spool.write(chunk)


def _service_of(url: str) -> str:
    """``dataselect``/``station``/``event`` for queries; ``discovery`` for WADLs, versions."""
    path = urlparse(url).path
    for service in ("dataselect", "station", "event"):
        if f"/{service}/" in path and path.rsplit("/", 1)[-1] in ("query", "queryauth"):
            return service
    return "discovery"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, resets, truncation, 429/5xx; not 204/404/400/413/401/403."""
    if isinstance(exc, (TransientError, FDSNTimeoutException)):
        return True
    if isinstance(exc, (FDSNNoDataException, FDSNBadRequestException, RequestTooLarge)):
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout))


def with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    stats: FetchStats,
    what: str,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> T:
    """Run ``call``; retry transient failures per ``policy``; re-raise final ones."""
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or attempt >= policy.attempts:
                if is_transient(exc):
                    stats.add("failed_after_retries")
                raise
            retry_after = getattr(exc, "retry_after", None)
            wait = policy.delay(attempt, retry_after, rng)
            stats.add("retried")
            status = getattr(exc, "status", None)
            stats.add(f"retried_{status or type(exc).__name__}")
            if log is not None:
                log(f"{what}: {exc}; try {attempt + 1} of {policy.attempts} in {wait:.1f} s")
            sleep(wait)
            attempt += 1
