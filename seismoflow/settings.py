"""One settings object for every command.

Precedence, highest first: CLI flags (passed as keyword arguments), ``SEISMOFLOW_``
environment variables, the TOML config file, the defaults below. Settings are read once at
the edge (the CLI or a flow's parameters) and passed down; nothing here reads the
environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CodecName = Literal["auto", "pcodec", "delta-zstd"]
WindowReference = Literal["origin", "p"]

DEFAULT_CONFIG_FILE = Path("seismoflow.toml")


class Settings(BaseSettings):
    """Run configuration. Units: seconds, Hz, samples."""

    model_config = SettingsConfigDict(
        env_prefix="SEISMOFLOW_", extra="forbid", validate_default=True
    )

    toml_file: ClassVar[Path | None] = None

    store: str = Field("seismoflow.zarr", description="store location: a path or any fsspec URL")
    codec: CodecName = Field(
        "auto",
        description="lossless codec for counts: 'auto' picks pcodec for channel-years mostly "
        "covered by data and delta-zstd for sparse ones (event snippets); see BENCHMARKS.md",
    )
    codec_level: int = Field(6, ge=0, le=12, description="pcodec level (zstd level capped at 9)")
    chunk_samples: int = Field(
        360_000, gt=0, description="samples per chunk of continuous data (time axis)"
    )
    window_sampling_rate: float = Field(100.0, gt=0, description="common rate of event windows")
    window_pre_s: float = Field(40.0, ge=0, description="seconds before the reference time")
    window_post_s: float = Field(90.0, gt=0, description="seconds after the reference time")
    window_reference: WindowReference = Field(
        "origin", description="'origin' time, or predicted 'p' arrival (obspy.taup, iasp91)"
    )
    clip_fraction: float = Field(
        1e-3, gt=0, lt=1, description="share of samples at the extremes that flags clipping"
    )
    batch_bytes: int = Field(
        32 << 20, gt=0, description="target source bytes per ingest task (batches of station-days)"
    )
    window_batch: int = Field(256, gt=0, description="event-window traces per task")
    max_workers: int = Field(2, ge=1, description="threads of the local task runner")

    @field_validator("store")
    @classmethod
    def _store_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("store location is empty; pass --store PATH or an fsspec URL")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = cls.toml_file
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file, the environment and explicit overrides.

    ``overrides`` with value ``None`` are ignored so CLI options left unset fall through to
    the environment, the file and the defaults. A missing explicit ``config`` is an error; the
    default ``seismoflow.toml`` in the working directory is used only when it exists.
    """
    if config is not None and not config.is_file():
        raise FileNotFoundError(f"config file {config} does not exist; check --config")
    toml_file = (
        config
        if config is not None
        else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    )
    cls = type("Settings", (Settings,), {"toml_file": toml_file})
    return cls(**{k: v for k, v in overrides.items() if v is not None})
