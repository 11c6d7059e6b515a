"""Rich progress bars on stderr (stdout stays free for --json); the library's, re-exported."""

from midas_cli.console import progress_bar  # noqa: F401
