"""The HTTP side: a threading server on 127.0.0.1 and the faults that act on connections."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from tests.fdsnws import hostile
from tests.fdsnws.auth import DigestAuth
from tests.fdsnws.faults import Faults, RequestLog, RequestRecord
from tests.fdsnws.service import (
    DATA_RESOURCES,
    Archive,
    Request,
    Response,
    error,
    retry_later,
    route,
)


class FDSNService:
    """A local FDSN web service (dataselect, station, event) over a data folder.

    ``root`` holds ``sds/``, ``stations.xml`` or ``stations.xml.gz`` and ``events.xml``;
    they are parsed once here. ``faults`` may be replaced while the service runs; random
    faults are drawn from one ``random.Random(seed)``, so one client thread sees the same
    faults in the same order on every run.
    """

    def __init__(
        self,
        root: Path,
        faults: Faults | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.archive = Archive(Path(root))
        self._faults = faults or Faults()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._log = RequestLog()
        self.auth = DigestAuth()
        self.stopping = threading.Event()
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the base URL for ``obspy.clients.fdsn.Client``."""
        if self._server is None:
            raise RuntimeError("the service is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults

    def reseed(self, seed: int) -> None:
        """Restart the fault draws from ``seed`` (a test's draws then never depend on how
        many draws earlier tests made on the same service)."""
        with self._lock:
            self._rng = random.Random(seed)

    def draw(self, service: str, resource: str) -> tuple[Faults, str | None]:
        """The current faults and the random fault for one request to ``service/resource``."""
        with self._lock:
            faults = self._faults
            if resource not in DATA_RESOURCES or service not in faults.services:
                return faults, None
            return faults, faults.draw(self._rng)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the log of every handled request, oldest first."""
        return self._log.snapshot()

    def record(self, record: RequestRecord) -> None:
        self._log.append(record)

    def count(
        self, service: str | None = "dataselect", fault: str | None = None, *,
        status: int | None = None,
    ) -> int:  # fmt: skip
        """Query requests (``query``, ``queryauth``, ``auth``) logged for ``service``.

        ``None`` matches anything: ``count(fault=None)`` counts faulted and clean requests;
        ``fault="none"`` counts only requests that were not faulted.
        """
        return sum(
            1
            for r in self._log.snapshot()
            if r.path.rsplit("/", 1)[-1] in DATA_RESOURCES
            and (service is None or r.service == service)
            and (fault is None or r.fault == fault or (fault == "none" and r.fault is None))
            and (status is None or r.status == status)
        )

    def reset_log(self) -> None:
        self._log.clear()

    def start(self) -> FDSNService:
        if self._server is not None:
            return self
        self.stopping.clear()
        self._server = _Server(self._address, _Handler)
        self._server.fdsn = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name=f"fdsnws-{self._server.server_address[1]}",
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()  # wakes answers waiting on a "slow" fault
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FDSNService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fdsn: FDSNService


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "tests.fdsnws/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the request log is FDSNService.requests

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        svc = self.server.fdsn
        split = urlsplit(self.path)
        body = self._read_body() if method == "POST" else b""
        target = route(split.path)
        service, resource = target or ("", "")
        faults, fault = svc.draw(service, resource)

        def log(status: int, sent: int, fault: str | None) -> None:
            svc.record(RequestRecord(service, method, split.path, status, sent, fault))

        if fault == "reset":
            log(0, 0, fault)
            self._reset()
            return
        if fault == "unavailable":
            response = retry_later(503, faults)
        elif fault == "too_many":
            response = retry_later(429, faults)
        else:
            if fault == "slow":
                svc.stopping.wait(faults.slow_seconds)
            response = self._answer(method, target, split.query, body, faults)
            fault = fault or response.fault
        truncate = fault == "truncate" and bool(response.body)
        if fault == "truncate" and not truncate:
            fault = None
        if fault in ("trickle", "huge", "gzip_bomb"):
            self._send_hostile(response, fault, faults, log)
            return
        # Logged before sending, so a client that has its answer finds it in the log.
        log(response.status, _body_bytes(response, truncate), fault)
        self._send(response, truncate)

    def _send_hostile(
        self, response: Response, fault: str, faults: Faults, log: Callable[[int, int, str], None]
    ) -> None:
        """A trickled, huge or gzip-bomb answer; sent until done or the client leaves."""
        headers = {"Content-Type": response.content_type}
        chunks: Iterable[bytes]
        if fault == "gzip_bomb":
            bomb = hostile.gzip_bomb(faults.gzip_bomb_bytes)
            headers["Content-Encoding"] = "gzip"
            size, chunks = len(bomb), [bomb]
        elif fault == "huge":
            size, chunks = faults.huge_bytes, hostile.huge_chunks(response.body, faults.huge_bytes)
        else:
            size = len(response.body)
            chunks = (response.body[i : i + 1] for i in range(size))
        log(response.status, size, fault)
        svc = self.server.fdsn
        if fault == "trickle" and faults.trickle_headers:
            self._trickle_headers(faults.trickle_seconds)
            return
        try:
            self.send_response(response.status)
            if fault == "huge":  # no length: the body ends when the connection closes
                headers["Connection"] = "close"
            else:
                headers["Content-Length"] = str(size)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            for chunk in chunks:
                if svc.stopping.is_set():
                    break
                self.wfile.write(chunk)
                if fault == "trickle":
                    self.wfile.flush()
                    time.sleep(faults.trickle_seconds)
            self.wfile.flush()
        except OSError:  # the client gave up (its deadline or size cap)
            pass
        self.close_connection = True

    def _trickle_headers(self, seconds: float) -> None:
        """A status line, then one header line that never ends, a byte per ``seconds``."""
        stopping = self.server.fdsn.stopping
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
            while not stopping.is_set():
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(seconds)
        except OSError:  # the client gave up (its deadline)
            pass
        self.close_connection = True

    def _answer(
        self, method: str, target: tuple[str, str] | None, query: str, body: bytes, faults: Faults
    ) -> Response:
        if target is None:
            return error(404, f"no FDSN resource at {urlsplit(self.path).path}")
        svc = self.server.fdsn
        request = Request(
            method=method,
            service=target[0],
            resource=target[1],
            uri=self.path,
            query=query,
            body=body,
            authorization=self.headers.get("Authorization"),
            base_url=f"http://{self.headers.get('Host') or svc.url.split('//', 1)[1]}",
        )
        try:
            return svc.archive.answer(request, faults, svc.auth)
        except Exception as exc:  # a bug here must reach the client as a 500, not a hang
            return error(500, f"{type(exc).__name__}: {exc}")

    def _send(self, response: Response, truncate: bool) -> None:
        """Send ``response``; with ``truncate`` only half the body, then close."""
        body = response.body
        try:
            self.send_response(response.status)
            if response.status != 204:
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            if truncate:
                body = body[: _body_bytes(response, truncate)]
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if response.status != 204:
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. its timeout passed during a slow answer)
            self.close_connection = True

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the kernel answers with RST instead of FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()


def _body_bytes(response: Response, truncate: bool) -> int:
    """Body bytes an answer carries: none for 204, half the body when truncated."""
    if response.status == 204:
        return 0
    return len(response.body) // 2 if truncate else len(response.body)
