"""`midas serve`: load a model once and serve live sessions (WebSocket) and the browser page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err


def serve_cmd(
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", "-c", envvar="MIDAS_CHECKPOINT",
        help="Checkpoint folder or Hub id. Default: the demo checkpoint shipped in the package.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but localhost is reachable by others.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_sessions: Annotated[int, typer.Option(help="Sessions served at once; more are refused with a reason.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    ref: Annotated[Path | None, typer.Option(
        "--ref", "-r", help="Default reference photo (clients may send their own). Default: a synthetic face.")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="MIDAS_TOKEN", help="Require this token from clients (?token=… or in the hello).")] = None,
):
    """Serve live sessions: audio in over a WebSocket, each 480 ms of frames + audio out; page at /."""
    from midas_cli.live.server import serve

    serve(checkpoint, host=host, port=port, max_sessions=max_sessions, device=device,
          ref=str(ref) if ref is not None else None, token=token,
          log=lambda m: console_err.print(m, highlight=False, soft_wrap=True))
