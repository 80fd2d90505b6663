"""Every process a seismoflow command starts ends when the command ends, however it ends.

A command may start processes that do not end with it: Prefect's temporary API server
(``uvicorn``, started when no ``PREFECT_API_URL`` is set, and stopped only by an ``atexit``
hook), Dask's local cluster, their own children. After ``kill -9`` of the command no
``atexit`` hook runs and they are left running, adopted by init; a nightly cron job would
pile them up.

:func:`start` (called by the CLI before any command runs) marks the command's environment
with a fresh token, which every process it starts inherits, and starts a small watcher
process in its own session (so a Ctrl-C or a kill of the command's process group does not
reach it). The watcher checks every ``POLL_S`` seconds whether the command is still alive
and notes its descendants. Once the command has ended (normally, by an exception, or
killed), it ends every process that carries the token in its environment or that it saw
as a descendant and that still runs: SIGTERM first, SIGKILL ``GRACE_S`` seconds later. The
token is what makes this safe and complete: only processes started by this command carry
it, including one started in the last moment before the kill, after their parent died,
or reparented to init. The watcher then exits.

``SEISMOFLOW_NO_REAPER=1`` turns it off (e.g. under a supervisor that already owns the
process tree, such as a container runtime or systemd).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time

import psutil

TOKEN_VAR = "SEISMOFLOW_PROCESS_TREE"  # comma-separated tokens of the commands above
DISABLE_VAR = "SEISMOFLOW_NO_REAPER"
POLL_S = 0.2  # how often the watcher checks the command
SNAPSHOT_EVERY = 5  # polls between two notes of the command's descendants
GRACE_S = 3.0  # seconds between SIGTERM and SIGKILL


def start() -> subprocess.Popen[bytes] | None:
    """Mark this process's environment and start its watcher; None when turned off."""
    if os.environ.get(DISABLE_VAR, "") not in ("", "0", "false"):
        return None
    token = secrets.token_hex(8)
    inherited = os.environ.get(TOKEN_VAR, "")
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "seismoflow.reaper", str(os.getpid()), token],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    # Set after the watcher started: it must not carry the token it looks for.
    os.environ[TOKEN_VAR] = f"{inherited},{token}" if inherited else token
    return watcher


def carries(environ: dict[str, str], token: str) -> bool:
    """Whether a process environment holds ``token`` (its command's or an outer one's)."""
    return token in environ.get(TOKEN_VAR, "").split(",")


def watch(pid: int, token: str) -> int:
    """Wait for process ``pid`` to end, then end what it left behind; the count ended."""
    try:
        command: psutil.Process | None = psutil.Process(pid)
    except psutil.NoSuchProcess:
        command = None
    seen: dict[int, psutil.Process] = {}
    polls = 0
    while command is not None and _alive(command):
        if polls % SNAPSHOT_EVERY == 0:
            with contextlib.suppress(psutil.Error):
                seen.update({p.pid: p for p in command.children(recursive=True)})
        polls += 1
        time.sleep(POLL_S)
    return _end(_left_behind(list(seen.values()), token))


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a killed command stays a zombie until its parent reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _left_behind(seen: list[psutil.Process], token: str) -> list[psutil.Process]:
    """Processes seen as descendants (and theirs) or carrying ``token`` that still run.

    ``is_running`` compares creation times, so a seen PID reused by another process is
    not touched.
    """
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    for proc in seen:
        if _alive(proc):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in proc.children(recursive=True)})
    for proc in psutil.process_iter():
        if proc.pid == me or proc.pid in found:
            continue
        try:
            if carries(proc.environ(), token):
                found[proc.pid] = proc
        except psutil.Error:  # gone, or another user's (never ours)
            continue
    return [p for pid, p in found.items() if pid != me]


def _end(procs: list[psutil.Process]) -> int:
    """SIGTERM, then SIGKILL after ``GRACE_S`` for those still running; the count signalled."""
    alive: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            alive.append(proc)
    _, left = psutil.wait_procs(alive, timeout=GRACE_S)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=GRACE_S)
    return len(alive)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m seismoflow.reaper PID TOKEN", file=sys.stderr)
        return 2
    watch(int(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
