"""Errors users can act on, through the command line: one line naming the input and what to
do, the exit code of the error's class, a traceback only with ``--debug``."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from seismoflow.errors import EXIT_CODES, BadInputError, FetchError, ModelError, StoreError
from tests.conftest import cli_env, seismoflow_cmd


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*seismoflow_cmd(), *args], capture_output=True, text=True, timeout=600, env=env
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_exit_codes_are_documented_per_class() -> None:
    assert EXIT_CODES == {"BadInputError": 2, "StoreError": 3, "FetchError": 4, "ModelError": 5}
    shown = _run(["--help"]).stdout
    for name, code in EXIT_CODES.items():
        assert f"{code} {name}" in " ".join(shown.split()), shown


def test_bad_input_names_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-archive"
    proc = _run(["ingest", "--sds", str(missing), "--store", str(tmp_path / "s.zarr")])
    _one_line_error(proc, BadInputError.exit_code, "--sds", str(missing), "does not exist")
    proc = _run(["export", "waveforms", "--store", str(tmp_path / "s.zarr"),
                 "--station", "CN.SYMB", "--start", "yesterday-ish", "--end", "2022-01-02",
                 "--out", str(tmp_path / "x.mseed")])  # fmt: skip
    _one_line_error(proc, BadInputError.exit_code, "--start", "yesterday-ish")


def test_missing_store_says_what_to_run(tmp_path: Path) -> None:
    store = tmp_path / "nothing.zarr"
    line = _one_line_error(_run(["info", "--store", str(store)]), StoreError.exit_code, str(store))
    assert "seismoflow ingest" in line
    assert not store.exists()  # reading never creates a store


def test_model_error_names_the_directory(tmp_path: Path) -> None:
    model = tmp_path / "not-a-model"
    model.mkdir()
    proc = _run(["predict", "--model", str(model), "--store", str(tmp_path / "s.zarr")])
    _one_line_error(proc, ModelError.exit_code, str(model), "seismoflow train")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = _run(["--debug", "info", "--store", str(tmp_path / "nothing.zarr")])
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "StoreError" in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_fetch_error_names_the_data_centre(prefect_server: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    env = cli_env(prefect_server, SEISMOFLOW_FETCH_ATTEMPTS="1", SEISMOFLOW_FETCH_TIMEOUT_S="5")
    proc = _run(["fetch", "--fdsn-url", url, "--start", "2022-01-01", "--end", "2022-01-02",
                 "--store", str(tmp_path / "f.zarr")], env)  # fmt: skip
    _one_line_error(proc, FetchError.exit_code, "127.0.0.1")


@pytest.mark.parametrize("cls", [BadInputError, StoreError, FetchError, ModelError])
def test_every_class_is_a_seismoflow_error(cls: type[Exception]) -> None:
    from seismoflow.errors import SeismoflowError

    assert issubclass(cls, SeismoflowError)
