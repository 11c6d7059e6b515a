"""Where the library talks to people: messages and progress bars on stderr, results on stdout.

Kept out of `midas_cli.cli` so library functions (`generate_video`, `run_batch`, ...) can show
progress without importing the command line.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console_err = Console(stderr=True)
console_out = Console()


def progress_bar() -> Progress:
    """A transient rich progress bar on stderr (stdout stays free for --json)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console_err, transient=True)
