"""Progress of long work, driven by ``(phase, done, total)`` callbacks: a rich bar for the
CLI on a terminal, timestamped lines for runs whose output goes to a log."""

from __future__ import annotations

import sys
import time

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


class ProgressLog:
    """The same ``(phase, done, total)`` callbacks as timestamped lines on stderr, for
    long runs whose output goes to a log file: a line per phase at most every
    ``interval`` seconds and one when it completes, with the rate and the time left."""

    def __init__(self, interval: float = 10.0, stream=None):
        self._interval = interval
        self._stream = stream
        self._phases: dict[str, tuple[float, float]] = {}  # phase -> (started, last line)

    def update(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        started, last = self._phases.setdefault(phase, (now, now))
        finished = total > 0 and done >= total
        if not finished and now - last < self._interval:
            return
        self._phases[phase] = (started, now)
        elapsed = now - started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"{PHASES.get(phase, phase)}: {done:,}/{total:,}"
        if total > 0:
            line += f" ({100 * done / total:.0f}%)"
        if elapsed > 0:  # a phase done in its first call has no rate to show
            line += f", {rate:,.0f}/s, {elapsed:.0f} s"
        if not finished and rate > 0 and total > done:
            line += f", ~{(total - done) / rate:.0f} s left"
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self._stream or sys.stderr, flush=True)
        if finished:
            del self._phases[phase]
