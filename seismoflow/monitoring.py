"""Run monitoring: stage clocks and the Prefect artifacts a run page shows.

The markdown and table builders are plain functions (tested without Prefect); the
``publish_*`` helpers are the thin layer that hands them to Prefect. Artifact keys must be
lowercase letters, digits and dashes (Prefect's rule); images are embedded in markdown as
``data:image/png;base64,...`` URIs so the run page shows them without a file server.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_KEY = re.compile(r"^[a-z0-9-]+$")


class StageClock:
    """Seconds per named stage of a run, in the order the stages ran."""

    def __init__(self, on_stage: Callable[[str], object] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        clock = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - clock
        if self.on_stage is not None:
            self.on_stage(name)

    def rounded(self, digits: int = 2) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}


def check_key(key: str) -> str:
    """``key`` if Prefect accepts it as an artifact key; a clear error otherwise."""
    if not _KEY.match(key):
        raise ValueError(f"artifact key {key!r} must be lowercase letters, digits and dashes")
    return key


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (columns: the first row's keys)."""
    if not rows:
        return "_none_"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(
    title: str,
    counts: Mapping[str, Any],
    seconds: Mapping[str, float],
    notes: Sequence[str] = (),
) -> str:
    """A run summary: counts, seconds per stage (with their total) and notes."""
    lines = [f"# {title}", "", "## Counts", ""]
    lines.append(markdown_table([{"what": k, "count": v} for k, v in counts.items()]))
    lines += ["", "## Seconds per stage", ""]
    stage_rows: list[dict[str, Any]] = [{"stage": k, "s": round(v, 2)} for k, v in seconds.items()]
    stage_rows.append({"stage": "**total**", "s": round(sum(seconds.values()), 2)})
    lines.append(markdown_table(stage_rows))
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


def png_data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def images_markdown(title: str, images: Mapping[str, Path]) -> str:
    """A markdown page with each PNG embedded under its own heading."""
    parts = [f"# {title}"]
    for name, path in images.items():
        parts.append(f"## {name}\n\n![{name}]({png_data_uri(path)})")
    return "\n\n".join(parts)


# --- publishing (needs a Prefect run context; outside one Prefect logs and moves on) -------


def publish_markdown(key: str, markdown: str, description: str) -> Any:
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(markdown, key=check_key(key), description=description)


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> Any:
    """A table artifact of ``rows``; nothing for no rows (an empty table says nothing)."""
    if not rows:
        return None
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(
        [dict(r) for r in rows], key=check_key(key), description=description
    )


def publish_images(key: str, title: str, images: Mapping[str, Path], description: str) -> Any:
    """Embed PNGs in one markdown artifact; nothing when there are none."""
    present = {k: Path(v) for k, v in images.items() if Path(v).is_file()}
    if not present:
        return None
    return publish_markdown(key, images_markdown(title, present), description)


class ProgressArtifact:
    """A progress artifact (percent done) updated as work completes."""

    def __init__(self, key: str, total: int, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total = max(int(total), 1)
        self.done = 0
        self.description = description
        self.id: Any = create_progress_artifact(0.0, key=check_key(key), description=description)

    def advance(self, n: int = 1) -> float:
        from prefect.artifacts import update_progress_artifact

        self.done = min(self.done + n, self.total)
        percent = round(100.0 * self.done / self.total, 1)
        update_progress_artifact(self.id, percent, description=self.description)
        return percent

    def finish(self) -> None:
        """Mark the work done (stages that were skipped count as done)."""
        self.advance(self.total - self.done)


# --- tables and plots of a store ----------------------------------------------------------


def quarantine_rows(location: str) -> list[dict[str, Any]]:
    """Quarantine reasons of a store with their counts, most frequent first."""
    from seismoflow.storage.tables import read_table

    table = read_table(location, "quarantine")
    if table.empty:
        return []
    counts = table["reason"].astype(str).value_counts()
    return [{"reason": str(k), "count": int(v)} for k, v in counts.items()]


def coverage_rows(location: str) -> list[dict[str, Any]]:
    """Per-station coverage of continuous data: channel-days, days, samples, flags."""
    from seismoflow.storage.tables import read_table

    days = read_table(location, "channel_days")
    if days.empty:
        return []
    station = days["channel"].astype(str).str.split(".").str[:2].str.join(".")
    flagged = days["flag_names"].astype(str).str.len() > 0 if "flag_names" in days else False
    frame = days.assign(station=station, flagged=flagged)
    rows = []
    for name, g in frame.groupby("station", sort=True):
        rows.append(
            {
                "station": str(name),
                "channels": int(g["channel"].nunique()),
                "channel_days": len(g),
                "days": int(g["day_ns"].nunique()),
                "samples": int(g["n_samples"].sum()),
                "flagged_channel_days": int(g["flagged"].sum()),
            }
        )
    return rows


def availability_png(location: str, path: Path) -> Path | None:
    """Data availability: one row per channel, a mark per stored channel-day (UTC)."""
    from seismoflow.storage.tables import read_table

    days = read_table(location, "channel_days")
    if days.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    channels = sorted(days["channel"].astype(str).unique())
    row = {c: i for i, c in enumerate(channels)}
    y = np.array([row[str(c)] for c in days["channel"]])
    x = days["day_ns"].to_numpy().astype("datetime64[ns]")
    fig, ax = plt.subplots(figsize=(9, max(2.5, min(12.0, 0.12 * len(channels)))))
    ax.scatter(x, y, s=6, marker="s", color="tab:blue")
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel(f"channel ({len(channels)})")
    if len(channels) <= 40:
        ax.set_yticks(range(len(channels)), channels, fontsize=6)
    else:
        ax.set_yticks([])
    ax.set_title(f"continuous data: {len(days)} channel-days")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def events_map_png(events: Any, path: Path) -> Path | None:
    """Map of events (``longitude``, ``latitude``) coloured by ``predicted_class``."""
    if events is None or len(events) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, g in events.groupby("predicted_class", sort=True):
        ax.scatter(g["longitude"], g["latitude"], s=18, label=f"{name} ({len(g)})")
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title("events by predicted class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
