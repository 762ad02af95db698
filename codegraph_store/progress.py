"""Progress display for long CLI work (rich), driven by ``(phase, done, total)`` callbacks."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PHASES = {"scan": "scanning", "parse": "parsing", "resolve": "resolving references"}


class ProgressReporter:
    """A progress bar on stderr; silent when disabled or when stderr is not a terminal."""

    def __init__(self, enabled: bool = True):
        self._console = Console(file=sys.stderr)
        self._enabled = enabled and self._console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "ProgressReporter":
        if self._enabled:
            self._progress = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=self._console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, phase: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._progress.add_task(PHASES.get(phase, phase), total=total)
        self._progress.update(task, completed=done, total=total)
