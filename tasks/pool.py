"""The thread pool a flow runs its tasks on, sized by the run's settings.

A flow's decorator fixes its task runner when the module is imported, and Prefect's default
thread pool is unbounded: a flow run from a deployment, a notebook or another flow would
take it. Flows therefore map their tasks through a :class:`TaskPool` opened in the flow body
from ``Settings.max_workers``, so the setting holds however the flow is started.
"""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import Any

from prefect.futures import PrefectFuture, PrefectFutureList
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task

from seismoflow.settings import Settings


class TaskPool:
    """At most ``max_workers`` task runs of the current flow run at a time.

    ``pool.map(task, *args)`` and ``pool.submit(task, *args)`` take the task's arguments as
    ``task.map`` and ``task.submit`` do (``unmapped`` included)."""

    def __init__(self, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers}: a task pool needs at least one thread")
        self.max_workers = max_workers
        self._runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=max_workers)

    @classmethod
    def of(cls, settings: Settings) -> TaskPool:
        return cls(settings.max_workers)

    def __enter__(self) -> TaskPool:
        self._runner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._runner.__exit__(exc_type, exc, tb)

    def map(self, task: Task[Any, Any], *args: Any, **kwargs: Any) -> PrefectFutureList[Any]:
        return self._runner.map(task, _parameters(task, args, kwargs))

    def submit(self, task: Task[Any, Any], *args: Any, **kwargs: Any) -> PrefectFuture[Any]:
        return self._runner.submit(task, _parameters(task, args, kwargs))


def _parameters(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict:
    return dict(inspect.signature(task.fn).bind_partial(*args, **kwargs).arguments)
