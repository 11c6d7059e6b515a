"""What every command shares: consoles (progress and messages on stderr, results on stdout),
device and dtype choice. Both live in the library; they are re-exported here for the commands."""

from __future__ import annotations

from midas_cli.console import console_err, console_out  # noqa: F401
from midas_cli.devices import pick_device, pick_dtype  # noqa: F401
