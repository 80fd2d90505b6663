"""A lock object inside an S3 store: mutual exclusion for writers on different machines.

The lock is one small object, ``{store}/.seismoflow.lock``, that names its holder (host,
process id and start time, a random token) and its lease. Every change to it is a
conditional request, so two writers can never both believe they hold it:

- acquire: ``PUT`` with ``If-None-Match: *`` (created only if absent);
- renew (a heartbeat thread, every third of the lease): ``PUT`` with ``If-Match: <our ETag>``;
- release: ``DELETE`` with ``If-Match: <our ETag>`` (never deletes another holder's lock);
- take over a dead holder's lock: ``PUT`` with ``If-Match: <its ETag>``.

A holder is dead when its lock object did not change (same ETag) for a whole lease, as
watched by the waiter's own monotonic clock: no clocks are compared across machines. A holder
on the waiter's own host whose process is gone is taken over at once. The lease is
``SEISMOFLOW_LOCK_LEASE_S`` seconds (default 30), read when a lock is taken.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from seismoflow.errors import StoreError

LOCK_NAME = ".seismoflow.lock"
DEFAULT_LEASE_S = 30.0
LEASE_ENV = "SEISMOFLOW_LOCK_LEASE_S"


def lease_seconds() -> float:
    """The lease of new locks: ``SEISMOFLOW_LOCK_LEASE_S`` or 30 s (read at call time)."""
    raw = os.environ.get(LEASE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        raise StoreError(f"{LEASE_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise StoreError(f"{LEASE_ENV}={raw!r} must be a positive number of seconds")
    return value


def _precondition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's 412 (or 409, a concurrent conditional write) for our request.

    s3fs maps the 412 of ``If-None-Match`` to FileExistsError and that of ``If-Match`` to
    an OSError; the botocore error it came from carries the status."""
    seen: BaseException | None = exc
    while seen is not None:
        response: Any = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return True
        if isinstance(seen, FileExistsError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "pre-condition" in str(exc) or "precondition" in str(exc).lower()


def _process_started(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in the lock object."""

    host: str
    pid: int
    started: float  # the process's start time (s since the epoch): tells a reused pid apart
    token: str
    lease_s: float
    expires: float  # the holder's clock; for people reading the object, not for decisions

    @classmethod
    def parse(cls, raw: bytes) -> Holder | None:
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["host"]), int(doc["pid"]), float(doc["started"]), str(doc["token"]),
                float(doc["lease_s"]), float(doc["expires"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None

    def dead_here(self) -> bool:
        """Whether this holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        started = _process_started(self.pid)
        return started is None or abs(started - self.started) > 1.0

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


class ObjectLock:
    """The lock object of the store at ``location`` (an ``s3://`` URL); see the module."""

    def __init__(
        self, location: str, lease_s: float | None = None, poll_s: float = 0.25,
        timeout_s: float | None = None,
    ) -> None:  # fmt: skip
        import fsspec

        self.location = location
        self.fs, root = fsspec.core.url_to_fs(location)
        self.path = f"{root.rstrip('/')}/{LOCK_NAME}"
        self.lease_s = lease_seconds() if lease_s is None else lease_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.token = secrets.token_hex(16)
        self._etag: str | None = None
        self._renewals = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._guard = threading.Lock()  # the heartbeat and release never send at once
        self.lost: str | None = None  # why the lock was lost while held, if it was

    # --- requests ------------------------------------------------------------------------

    def _body(self) -> bytes:
        me = psutil.Process()
        return json.dumps(
            {
                "host": socket.gethostname(), "pid": me.pid, "started": me.create_time(),
                "token": self.token, "lease_s": self.lease_s,
                "expires": time.time() + self.lease_s, "renewals": self._renewals,
            }
        ).encode()  # fmt: skip

    def _put(self, **condition: str) -> str:
        """Write our body under ``condition``; our new ETag. Raises on a failed condition."""
        if "IfNoneMatch" in condition:
            out = self.fs.pipe_file(self.path, self._body(), mode="create")
        else:
            out = self.fs.pipe_file(self.path, self._body(), **condition)
        return str(out["ETag"])

    def _current(self) -> str | None:
        """The lock object's ETag, or None when there is none."""
        self.fs.invalidate_cache(self.path)
        try:
            return str(self.fs.info(self.path)["ETag"])
        except FileNotFoundError:
            return None

    def _holder(self) -> Holder | None:
        try:
            return Holder.parse(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"cannot {what} the lock of {self.location} ({self.path}): {exc}; check that the "
            "store's bucket exists and that these credentials may read, write and delete in it"
        )

    # --- acquire, renew, release ---------------------------------------------------------

    def acquire(self) -> None:
        """Block until this lock is ours (or ``timeout_s`` passes: a StoreError)."""
        began = time.monotonic()
        watched: tuple[str, float] | None = None  # (ETag, when first seen unchanged)
        holder: Holder | None = None
        while True:
            try:
                self._etag = self._put(IfNoneMatch="*")
                break
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise self._error("create", exc) from exc
            try:
                etag = self._current()
            except Exception as exc:
                raise self._error("read", exc) from exc
            if etag is None:
                continue  # released between our two requests: try again at once
            now = time.monotonic()
            if watched is None or watched[0] != etag:
                watched = (etag, now)
                holder = self._holder()
            stale = now - watched[1] > (holder.lease_s if holder else self.lease_s)
            if stale or (holder is not None and holder.dead_here()):
                try:
                    self._etag = self._put(IfMatch=etag)
                    break
                except Exception as exc:
                    if not _precondition_failed(exc):
                        raise self._error("take over", exc) from exc
                    watched = None  # someone else renewed or took it: watch again
                    continue
            if self.timeout_s is not None and now - began > self.timeout_s:
                who = holder.describe() if holder else "another writer"
                raise StoreError(
                    f"the store {self.location} stayed locked by {who} for "
                    f"{self.timeout_s:.0f} s; wait for that run to finish, or if it is gone "
                    f"its lease ends {self.lease_s:.0f} s after its last renewal"
                )
            time.sleep(self.poll_s)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="seismoflow-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._guard:
                if self._stop.is_set() or self._etag is None:
                    return
                self._renewals += 1
                try:
                    self._etag = self._put(IfMatch=self._etag)
                except Exception as exc:
                    if isinstance(exc, FileNotFoundError) or _precondition_failed(exc):
                        self.lost = (
                            f"the lock of {self.location} was taken over while this run held "
                            "it (it did not renew within its lease)"
                        )
                        self._etag = None
                        return
                    # a transient failure: the next beat tries again within the lease

    def release(self) -> None:
        """Stop renewing and delete the lock object if it is still ours."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        with self._guard:
            etag, self._etag = self._etag, None
        if etag is None:
            if self.lost:
                raise StoreError(f"{self.lost}; rerun the command to check the store")
            return
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        except Exception as exc:
            if _precondition_failed(exc):
                raise StoreError(
                    f"the lock of {self.location} was taken over while this run held it; "
                    "rerun the command to check the store"
                ) from exc
            raise self._error("delete", exc) from exc
        finally:
            self.fs.invalidate_cache(self.path)
