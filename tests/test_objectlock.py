"""The store lock on object storage (storage/objectlock.py), against moto's S3 server:
processes on "different machines" (separate processes, no shared file) exclude each other,
a killed holder's lock is taken over, and a lock is only ever deleted by its holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from seismoflow.storage.location import store_lock
from seismoflow.storage.objectlock import LEASE_ENV, LOCK_NAME, Holder, ObjectLock

from seismoflow.errors import StoreError

pytest_plugins = ["tests.s3server"]  # the moto server and bucket fixtures

pytestmark = pytest.mark.slow

# A writer in its own process: takes the store lock ROUNDS times, holding it HOLD seconds
# (longer than the lease: only the heartbeat keeps it), and records when it held it.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    from seismoflow.storage.location import store_lock
    location, out, rounds, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    spans = []
    for _ in range(rounds):
        with store_lock(location):
            t0 = time.time()
            print("held", flush=True)
            time.sleep(hold)
            spans.append((t0, time.time()))
    with open(out, "w") as fh:
        json.dump(spans, fh)
    """
)


def _writer(location: str, out: Path, rounds: int, hold: float, lease: float) -> subprocess.Popen:
    env = {**os.environ, LEASE_ENV: str(lease)}
    cmd = [sys.executable, "-c", WRITER, location, str(out), str(rounds), str(hold)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def _lock_object(location: str) -> dict[str, object] | None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(location)
    fs.invalidate_cache()
    path = f"{root}/{LOCK_NAME}"
    return json.loads(fs.cat_file(path)) if fs.exists(path) else None


def test_two_processes_exclude_each_other(s3_bucket: str, tmp_path: Path) -> None:
    """Two processes contend for one s3:// store's lock; their held spans never overlap,
    though each holds it longer than the lease (the heartbeat renews it)."""
    location = f"s3://{s3_bucket}/store.zarr"
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [_writer(location, out, rounds=3, hold=0.8, lease=0.6) for out in outs]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    spans = sorted(span for out in outs for span in json.loads(out.read_text()))
    assert len(spans) == 6
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two holders at once: {spans}"
    # both processes held it, interleaved or not, and nothing is left behind
    assert all(len(json.loads(out.read_text())) == 3 for out in outs)
    assert _lock_object(location) is None


def test_killed_holder_is_taken_over(s3_bucket: str) -> None:
    """A holder killed with SIGKILL leaves its lock object; a writer on the same host sees
    the process is gone and takes the lock over at once."""
    location = f"s3://{s3_bucket}/store.zarr"
    proc = _writer(location, Path(os.devnull), rounds=1, hold=600, lease=30)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    left = _lock_object(location)
    assert left is not None and left["pid"] == proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    t0 = time.monotonic()
    with store_lock(location):
        mine = _lock_object(location)
        assert mine is not None and mine["pid"] == os.getpid()
    assert time.monotonic() - t0 < 10  # not the 30 s lease
    assert _lock_object(location) is None


def test_silent_holder_elsewhere_is_taken_over_after_its_lease(s3_bucket: str) -> None:
    """A lock left by a holder on another machine (nothing to ask about its process) is
    taken over once it has not changed for a whole lease, and not before."""
    import fsspec

    location = f"s3://{s3_bucket}/store.zarr"
    fs, root = fsspec.core.url_to_fs(location)
    doc = {"host": "elsewhere.example", "pid": 1, "started": 0.0, "token": "theirs",
           "lease_s": 1.5, "expires": 0.0}  # fmt: skip
    fs.pipe_file(f"{root}/{LOCK_NAME}", json.dumps(doc).encode(), mode="create")
    t0 = time.monotonic()
    lock = ObjectLock(location, lease_s=5.0, poll_s=0.1)
    lock.acquire()
    waited = time.monotonic() - t0
    try:
        assert 1.5 <= waited < 10, waited
        holder = Holder.parse(fs.cat_file(f"{root}/{LOCK_NAME}"))
        assert holder is not None and holder.token == lock.token
    finally:
        lock.release()


def test_release_never_deletes_another_holders_lock(s3_bucket: str) -> None:
    """A holder whose lock was taken over (it stalled past its lease) does not delete the
    new holder's lock on release; it says the lock was lost."""
    import fsspec

    location = f"s3://{s3_bucket}/store.zarr"
    fs, root = fsspec.core.url_to_fs(location)
    stalled = ObjectLock(location, lease_s=600)
    stalled.acquire()
    etag = fs.info(f"{root}/{LOCK_NAME}")["ETag"]
    fs.pipe_file(f"{root}/{LOCK_NAME}", b'{"token": "new holder"}', IfMatch=etag)
    with pytest.raises(StoreError, match="taken over"):
        stalled.release()
    assert _lock_object(location) == {"token": "new holder"}


def test_timeout_names_the_store_and_holder(s3_bucket: str) -> None:
    location = f"s3://{s3_bucket}/store.zarr"
    first = ObjectLock(location, lease_s=60)
    first.acquire()
    try:
        with pytest.raises(StoreError, match=rf"{location}.*process {os.getpid()}"):
            ObjectLock(location, lease_s=60, timeout_s=0.5).acquire()
    finally:
        first.release()


def test_missing_bucket_says_what_to_do(s3_server: str) -> None:
    with pytest.raises(StoreError, match="bucket exists"):
        ObjectLock("s3://no-such-bucket-here/store.zarr").acquire()


def test_writing_into_a_missing_bucket_says_what_to_do(s3_server: str) -> None:
    from seismoflow.storage.location import open_root

    with pytest.raises(StoreError, match=r"s3://no-such-bucket-here/store.zarr.*create it"):
        open_root("s3://no-such-bucket-here/store.zarr", mode="a")
