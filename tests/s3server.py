"""A real S3 API on 127.0.0.1 for the object-storage tests (moto's server mode).

Use it with ``pytest_plugins = ["tests.s3server"]`` (or import the fixtures): ``s3_server``
starts one server per session and points s3fs at it (``FSSPEC_S3_ENDPOINT_URL``, dummy
credentials, also in the environment that CLI subprocesses inherit); ``s3_bucket`` makes a
fresh bucket per test. The credentials are fixed dummy strings, so tests can check that
neither the store nor the logs ever contain them.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

ACCESS_KEY = "seismoflowtestaccesskey"
SECRET_KEY = "seismoflow-test-secret-d0n0tl0g"  # noqa: S105 - a dummy for moto

S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
          "FSSPEC_S3_ENDPOINT_URL")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """One moto S3 server for the session; its endpoint URL. s3fs (and CLI subprocesses)
    reach it through ``FSSPEC_S3_ENDPOINT_URL`` and dummy credentials in the environment."""
    pytest.importorskip("s3fs", reason="the s3 extra (s3fs) is not installed")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
        }
    )
    # fsspec read its FSSPEC_* environment when it was imported: set this process's too
    import fsspec.config

    old_conf = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {**(old_conf or {}), "endpoint_url": endpoint}
    s3fs_clear()
    try:
        yield endpoint
    finally:
        server.stop()
        if old_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = old_conf
        s3fs_clear()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3fs_clear() -> None:
    """Drop s3fs's cached filesystem instances (they cache listings across tests)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket for one test; its name (use ``s3://NAME/store.zarr``)."""
    import s3fs

    name = f"test-{secrets.token_hex(6)}"
    s3fs_clear()
    s3fs.S3FileSystem().mkdir(name)
    return name
