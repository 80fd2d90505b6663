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

from seismoflow.errors import BadInputError

CodecName = Literal["auto", "pcodec", "delta-zstd"]
WindowReference = Literal["origin", "p"]

DEFAULT_CONFIG_FILE = Path("seismoflow.toml")


# Threads an ingest task waits on an object store with when ``store_threads`` is 0: its
# time there goes to request latency, not CPU (BENCHMARKS.md, "Object storage").
STORE_THREADS_REMOTE = 8


class Settings(BaseSettings):
    """Run configuration. Units: seconds, Hz, samples."""

    model_config = SettingsConfigDict(
        env_prefix="SEISMOFLOW_", extra="forbid", validate_default=True
    )

    toml_file: ClassVar[Path | None] = None

    store: str = Field("seismoflow.zarr", description="store location: a path or any fsspec URL")
    codec: CodecName = Field(
        "auto",
        description="lossless codec for counts: 'auto' picks pcodec for channels mostly "
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
    store_threads: int = Field(
        0,
        ge=0,
        description="threads one ingest task waits on the store with (shard writes, window "
        "cuts): 0 picks 1 for a local folder and STORE_THREADS_REMOTE for a URL, where the "
        "work waits on requests",
    )

    # FDSN fetch (issue 3). Credentials are never part of these fields' dumps: see
    # ``seismoflow.fdsn.credentials``.
    fdsn_url: list[str] = Field(
        default_factory=lambda: ["EARTHSCOPE"],
        description="FDSN providers: base URLs or ObsPy short names (EARTHSCOPE, GFZ, ...); "
        "the first answers event queries, each serves the stations it lists",
    )
    channel_priority: list[str] = Field(
        default_factory=lambda: ["HH?", "BH?", "EH?", "HN?", "SH?"],
        description="channel-set patterns, best first; one set per station is fetched",
    )
    max_distance_deg: float = Field(
        5.0, gt=0, le=180, description="stations up to this epicentral distance (degrees)"
    )
    fetch_concurrency: int = Field(
        3, ge=1, le=16, description="concurrent requests per provider (ObsPy mass downloader: 3)"
    )
    fetch_timeout_s: float = Field(60.0, gt=0, description="seconds before a request times out")
    fetch_attempts: int = Field(6, ge=1, description="tries per request before it fails")
    fetch_backoff_s: float = Field(1.0, ge=0, description="first retry delay (doubles)")
    fetch_backoff_cap_s: float = Field(60.0, ge=0, description="longest retry delay")
    fetch_deadline_s: float = Field(
        600.0,
        gt=0,
        description="total seconds one request may take (a service that trickles its answer "
        "is cut off and retried like a timeout; a stalled read can add up to fetch_timeout_s)",
    )
    fetch_answer_factor: float = Field(
        20.0,
        gt=0,
        description="a dataselect answer may hold this many times the bytes its lines are "
        "expected to need (usual band-code sampling rate x span x 2 bytes per sample)",
    )
    fetch_answer_floor_bytes: int = Field(
        32 << 20, gt=0, description="smallest size cap of a dataselect answer (bytes)"
    )
    fetch_document_max_bytes: int = Field(
        512 << 20,
        gt=0,
        description="size cap of a StationXML or QuakeML answer and of any other request "
        "(bytes, after gzip inflation)",
    )
    fetch_max_lines: int = Field(
        200, ge=1, description="request size cap: bulk lines per dataselect request"
    )
    fetch_events_per_task: int = Field(8, ge=1, description="events per waveform fetch task")
    fetch_cache: str | None = Field(
        None,
        description="local folder for fetched miniSEED and metadata (default: STORE.fetch "
        "beside a local store; required for remote stores)",
    )
    fdsn_token_file: str | None = Field(
        None, description="EIDA token file for restricted data (path; the token is not logged)"
    )
    fdsn_secret_block: str | None = Field(
        None, description="Prefect Secret block holding 'user:password' or a token"
    )

    # Features and noise examples (issue 4).
    noise_margin_s: float = Field(
        600.0, ge=0, description="noise windows keep this many seconds from any catalogued origin"
    )
    noise_per_channel_set: int = Field(
        40, ge=0, description="most noise windows drawn per station channel set"
    )
    noise_screen_max_ratio: float = Field(
        10.0,
        gt=1,
        description="noise screen: largest peak / median 2 s energy average (0.5-8 Hz) allowed",
    )
    noise_label_lists: list[str] = Field(
        default_factory=list,
        description="CSV lists of labelled signal windows (starttime, endtime) to keep out "
        "of noise, e.g. the archive's sources/rocknet/*_meta.csv",
    )
    noise_seed: int = Field(0, description="seed of the order noise candidates are tried in")
    feature_block_traces: int = Field(
        64, gt=0, description="traces per dask block of feature extraction"
    )

    # Archive batches on a Dask cluster (issue 5, ``archive-batch``).
    dask_address: str | None = Field(
        None, description="Dask scheduler to run archive batches on (tcp://host:8786); "
        "default: a LocalCluster of dask_workers processes"
    )
    dask_workers: int = Field(2, ge=1, description="worker processes of the LocalCluster")
    dask_threads_per_worker: int = Field(1, ge=1, description="threads per LocalCluster worker")
    dask_memory_limit: str = Field(
        "2GB", description="memory limit per LocalCluster worker (Dask pauses and restarts "
        "a worker past it)"
    )
    archive_station_days: int = Field(
        256, gt=0, description="most station-days per archive-batch task (batches are sized "
        "largest first and shrink towards the end so threads finish together; also capped "
        "by batch_bytes)"
    )
    archive_in_flight: int = Field(
        0, ge=0, description="archive-batch tasks submitted at once (0: twice the cluster's "
        "threads); bounds the flow's and the workers' memory"
    )

    def io_threads(self) -> int:
        """Threads an ingest task uses for the store's requests (``store_threads``, or the
        default for the kind of store)."""
        if self.store_threads:
            return self.store_threads
        local = "://" not in self.store or self.store.startswith("file://")
        return 1 if local else STORE_THREADS_REMOTE

    @field_validator("store")
    @classmethod
    def _store_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise BadInputError("store location is empty; pass --store PATH or an fsspec URL")
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
        raise BadInputError(f"config file {config} does not exist; check --config")
    toml_file = (
        config
        if config is not None
        else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    )
    cls = type("Settings", (Settings,), {"toml_file": toml_file})
    return cls(**{k: v for k, v in overrides.items() if v is not None})
