"""Checks every media reader makes before it opens a file, so each fails with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

from midas_cli.errors import MidasError


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """Return `path` as a Path if it is a readable, non-empty file; else a MidasError naming it.

    `what` completes "is a folder, not ..." (e.g. "an audio file").
    """
    path = Path(path)
    if not path.exists():
        raise MidasError(f"{path}: no such file")
    if path.is_dir():
        raise MidasError(f"{path}: is a folder, not {what}")
    if not path.is_file():
        raise MidasError(f"{path}: not a regular file (expected {what})")
    if not os.access(path, os.R_OK):
        raise MidasError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise MidasError(f"{path}: empty file (0 bytes)")
    return path


def last_line(text: str, default: str = "no message", path: str | os.PathLike | None = None) -> str:
    """The last non-blank line of a tool's report, without the file's own name repeated in it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else default
    if path is not None:
        line = line.replace(f"{path}: ", "").replace(str(path), Path(path).name)
    return line
