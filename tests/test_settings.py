"""Settings precedence: CLI flags > SEISMOFLOW_ environment > TOML file > defaults."""

from pathlib import Path

import pytest

from seismoflow.errors import BadInputError
from seismoflow.settings import STORE_THREADS_REMOTE, Settings, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "seismoflow.toml"
    cfg.write_text('codec = "delta-zstd"\nchunk_samples = 1000\nwindow_pre_s = 5.0\n')
    monkeypatch.delenv("SEISMOFLOW_CHUNK_SAMPLES", raising=False)
    s = load_settings(cfg)
    assert (s.codec, s.chunk_samples, s.window_pre_s) == ("delta-zstd", 1000, 5.0)
    monkeypatch.setenv("SEISMOFLOW_CHUNK_SAMPLES", "2000")
    s = load_settings(cfg)
    assert s.chunk_samples == 2000 and s.codec == "delta-zstd"
    s = load_settings(cfg, chunk_samples=3000, codec=None)  # None = flag not given
    assert s.chunk_samples == 3000 and s.codec == "delta-zstd"
    assert s.window_post_s == 90.0  # default


def test_default_file_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seismoflow.toml").write_text('store = "here.zarr"\n')
    assert load_settings().store == "here.zarr"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('codec = "gzip"\n')
    with pytest.raises(ValueError, match="codec"):
        load_settings(cfg)
    with pytest.raises(BadInputError, match="--config"):
        load_settings(tmp_path / "missing.toml")


def test_store_threads_default_by_kind_of_store() -> None:
    """Object stores get threads for their requests by default; a folder keeps one."""
    assert Settings(store="a.zarr").io_threads() == 1
    assert Settings(store="file:///tmp/a.zarr").io_threads() == 1
    assert Settings(store="s3://bucket/a.zarr").io_threads() == STORE_THREADS_REMOTE > 1
    assert Settings(store="s3://bucket/a.zarr", store_threads=3).io_threads() == 3
