"""No process outlives the command that started it (issue 13, "Processes left behind").

A driver process (or the real ``seismoflow ingest`` with Prefect's temporary server) is
killed with SIGKILL at seeded random moments; every process it had started, found through
the process tree and through the token in their environment, must be gone soon after.
Only processes this test started are signalled, by PID.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from seismoflow import reaper
from tests.conftest import ARCHIVE, ingest_args, link_sds

LIMIT_S = 60.0  # only to keep a broken run from hanging: the asserts count survivors


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def carrying(token: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if reaper.carries(proc.environ(), token):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def token_of(procs: list[psutil.Process]) -> str | None:
    """The command's own token (the last one) from a descendant's environment."""
    for proc in procs:
        try:
            value = proc.environ().get(reaper.TOKEN_VAR)
        except psutil.Error:
            continue
        if value:
            return value.split(",")[-1]
    return None


def survivors(procs: dict[int, psutil.Process]) -> list[psutil.Process]:
    """Poll until none of ``procs`` runs (or LIMIT_S passed); those still running."""
    stop = time.monotonic() + LIMIT_S
    left = [p for p in procs.values() if alive(p)]
    while left and time.monotonic() < stop:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left


def track(cli: psutil.Process, until: Callable[[dict[int, psutil.Process]], bool]) -> dict[
    int, psutil.Process
]:  # fmt: skip
    """Descendants of ``cli`` noted every 0.05 s until ``until(seen)`` holds or it ends."""
    seen: dict[int, psutil.Process] = {}
    while alive(cli) and not until(seen):
        try:
            seen.update({p.pid: p for p in cli.children(recursive=True)})
        except psutil.Error:
            break
        time.sleep(0.05)
    return seen


def kill_and_count(popen: subprocess.Popen[str], seen: dict[int, psutil.Process]) -> list[str]:
    """SIGKILL the command; the command lines of what it left running."""
    token = token_of(list(seen.values()))
    os.kill(popen.pid, signal.SIGKILL)
    popen.wait()
    if token is not None:  # orphans reparented before we saw them, but carrying the token
        seen.update({p.pid: p for p in carrying(token)})
    return [" ".join(p.cmdline()[:4]) for p in survivors(seen)]


DRIVER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from seismoflow import reaper

    reaper.start()
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    nest = "import subprocess, sys, time; subprocess.Popen(%r); time.sleep(600)" % (sleep,)
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", nest])                   # a child with a child
    subprocess.Popen(sleep, start_new_session=True)                  # its own session
    subprocess.run([sys.executable, "-c", "import subprocess; subprocess.Popen(%r)" % (sleep,)])
    subprocess.Popen([sys.executable, "-c", deaf])                   # ignores SIGTERM
    print("ready", flush=True)
    while True:  # and more, until killed: the kill lands while children start
        subprocess.Popen(sleep)
        time.sleep(0.05)
    """
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_leaves_no_process(seed: int, tmp_path: Path) -> None:
    """Children, grandchildren, a child in its own session, an orphan adopted by init, one
    that ignores SIGTERM and children started moments before the kill all end."""
    delay = random.Random(seed).uniform(0.1, 1.5)
    popen = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    cli = psutil.Process(popen.pid)
    assert popen.stdout is not None and popen.stdout.readline().strip() == "ready"
    stop = time.monotonic() + delay
    seen = track(cli, lambda _: time.monotonic() > stop)
    token = token_of(list(seen.values()))
    assert token is not None
    # The orphan and the one in its own session are no descendants: found by the token.
    assert len(carrying(token)) >= 6
    assert kill_and_count(popen, seen) == []
    assert [p.pid for p in carrying(token) if alive(p)] == []


def test_reaper_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(reaper.DISABLE_VAR, "1")
    assert reaper.start() is None


def test_tokens_nest() -> None:
    assert reaper.carries({reaper.TOKEN_VAR: "outer,inner"}, "outer")
    assert reaper.carries({reaper.TOKEN_VAR: "outer,inner"}, "inner")
    assert not reaper.carries({reaper.TOKEN_VAR: "outer,inner"}, "out")
    assert not reaper.carries({}, "outer")


def _uvicorn(seen: dict[int, psutil.Process]) -> bool:
    for proc in list(seen.values()):
        try:
            if "uvicorn" in proc.cmdline():
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("moment", ["early", "server", "server"])
def test_kill_9_of_ingest_leaves_no_prefect_server(
    archive: Path, tmp_path: Path, moment: str, request: pytest.FixtureRequest
) -> None:
    """``seismoflow ingest`` of one year without ``PREFECT_API_URL`` (so Prefect starts its
    temporary ``uvicorn`` server), SIGKILLed at a seeded random moment: early (while it
    starts), or after the temporary server is up; nothing it started survives."""
    rng = random.Random(request.node.name)
    sds = link_sds(archive, ("2010",), tmp_path / "sds")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",  # a busy CI machine
    )
    args = ingest_args(ARCHIVE, sds, tmp_path / "store.zarr")
    popen = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    cli = psutil.Process(popen.pid)
    if moment == "early":
        stop = time.monotonic() + rng.uniform(0.5, 4.0)
        seen = track(cli, lambda _: time.monotonic() > stop)
    else:
        seen = track(cli, _uvicorn)
        assert _uvicorn(seen), "the ingest ended before Prefect's temporary server started"
        stop = time.monotonic() + rng.uniform(0.0, 3.0)
        seen.update(track(cli, lambda _: time.monotonic() > stop))
    assert popen.poll() is None, "the ingest ended before the kill"
    assert kill_and_count(popen, seen) == []
