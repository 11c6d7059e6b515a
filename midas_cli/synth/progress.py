"""Progress bars for long library loops (dataset writing, evaluation): rich, on stderr.

Stdout stays free for results (``midas eval --json``). ``progress_bar(False)`` returns a
stand-in with the same methods, so loops need no branches.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass


def progress_bar(enabled: bool = True) -> Progress | _NoBar:
    """A rich Progress on stderr, or a silent stand-in when ``enabled`` is False."""
    if not enabled:
        return _NoBar()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
