"""An FDSN answer is input: guards against a hostile or broken data centre.

- :class:`SameOriginRedirects` refuses a redirect to another scheme, host or port before
  ObsPy's redirect handler would follow it (and re-send a POST body there).
- :class:`Deadline` bounds a whole request (connect, headers, body) in time: at the deadline
  it shuts the request's sockets down, so even a service that trickles its headers a byte
  at a time is cut off; the caller retries it like a timeout.
- :func:`gunzip` inflates a body under a size cap (a gzip bomb fails at the cap).

The sockets are found through :class:`TrackedHTTPHandler` / :class:`TrackedHTTPSHandler`,
urllib's own handlers with the connection recorded for the request in progress (per thread).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlparse

from obspy.clients.fdsn.header import FDSNException

#: Bytes read from the socket (or inflated) per step.
CHUNK = 1 << 16


def where(url: str) -> str:
    """The URL without its query string (queries can be long; they hold no secrets)."""
    return url.split("?", 1)[0]


class TransientError(FDSNException):
    """A failure that may go away when asked again (with the server's ``Retry-After``)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RedirectRefused(FDSNException):
    """A redirect to another origin or scheme: refused (final), the target named."""


class AnswerTooLarge(FDSNException):
    """An answer (or its inflated gzip body) beyond the request's size cap: final."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlparse(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def redirect_allowed(source: str, target: str) -> bool:
    """A redirect stays on the same scheme, host and port (no other host, no downgrade)."""
    return _origin(source) == _origin(target)


class SameOriginRedirects(urllib.request.BaseHandler):
    """Refuses, before ObsPy's redirect handler runs, a redirect that leaves the origin."""

    handler_order = 100  # before urllib's and ObsPy's redirect handlers (500)

    def _check(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> None:
        location = headers.get("Location") or headers.get("URI")
        if location is None:
            return None
        target = urllib.parse.urljoin(req.full_url, location)
        if not redirect_allowed(req.full_url, target):
            with contextlib.suppress(Exception):
                fp.close()
            raise RedirectRefused(
                f"HTTP {code} redirect from {where(req.full_url)} to another host or scheme "
                f"({where(target)}) refused; if that host is the provider, pass it as "
                "--fdsn-url"
            )
        return None  # same origin: urllib/ObsPy follow it

    http_error_301 = http_error_302 = http_error_303 = _check
    http_error_307 = http_error_308 = _check


_CURRENT = threading.local()  # .connections: the list of the request in progress, or None


def _tracked(factory: Callable[..., http.client.HTTPConnection]) -> Callable[..., Any]:
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = factory(host, **kwargs)
        connections = getattr(_CURRENT, "connections", None)
        if connections is not None:
            connections.append(conn)
        return conn

    return make


class TrackedHTTPHandler(urllib.request.HTTPHandler):
    """urllib's HTTP handler; the connection is recorded for :class:`Deadline`."""

    handler_order = 400  # before the default handler (500), which then never runs

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracked(http.client.HTTPConnection), req)


class TrackedHTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's HTTPS handler (default TLS context); the connection is recorded too."""

    handler_order = 400

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracked(http.client.HTTPSConnection), req)


class Deadline:
    """``with Deadline(seconds):`` shuts the sockets of requests made inside (in this
    thread) down once ``seconds`` have passed; ``expired`` says whether it did."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._connections: list[http.client.HTTPConnection] = []
        self._fired = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def expired(self) -> bool:
        return self._fired.is_set()

    def _expire(self) -> None:
        self._fired.set()
        for conn in list(self._connections):
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        _CURRENT.connections = self._connections
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _CURRENT.connections = None


def too_large(url: str, cap: int, what: str) -> str:
    return (
        f"answer from {where(url)} too large: it {what}, the cap of this request is {cap} bytes "
        "(settings fetch_answer_factor, fetch_answer_floor_bytes, fetch_document_max_bytes); "
        "ask for less per request or raise the cap"
    )


def gunzip(spool: IO[bytes], url: str, cap: int | None) -> bytes:
    """Inflate a gzip body (one or more members) from ``spool``, never past ``cap`` bytes.

    A gzip bomb (a small body that inflates to gigabytes) fails at the cap; memory holds
    at most ``cap`` inflated bytes plus one chunk.
    """
    out = bytearray()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = spool.read(CHUNK)
    if not pending:
        return b""
    try:
        while pending:
            if inflater.eof:  # the next gzip member
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            room = CHUNK if cap is None else max(1, min(CHUNK, cap - len(out) + 1))
            out += inflater.decompress(pending, room)
            if cap is not None and len(out) > cap:
                raise AnswerTooLarge(
                    too_large(url, cap, f"inflates (gzip) to more than {cap} bytes")
                )
            pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if not pending:
                pending = spool.read(CHUNK)
    except zlib.error as exc:
        raise TransientError(f"truncated gzip body from {where(url)} ({exc})") from exc
    if not inflater.eof:
        raise TransientError(f"truncated gzip body from {where(url)}")
    return bytes(out)
