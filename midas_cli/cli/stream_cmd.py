"""`midas stream URL`: the scripted live client (audio paced at 1×, chunks to an mp4, latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err


def stream_cmd(
    url: Annotated[str, typer.Argument(help="The address `midas serve` prints, e.g. http://127.0.0.1:8000.")],
    audio: Annotated[Path, typer.Option("--audio", "-a", help="The avatar's speech, sent as it would be spoken.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output mp4 of what came back.")] = Path("live.mp4"),
    listen_audio: Annotated[Path | None, typer.Option("--listen-audio", help="The other side of the conversation.")]
    = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Prompt timeline JSON, sent when each is due.")]
    = None,
    ref: Annotated[Path | None, typer.Option("--ref", "-r", help="Reference photo (default: the server's).")] = None,
    token: Annotated[str | None, typer.Option(envvar="MIDAS_TOKEN", help="The server's --token.")] = None,
    pace: Annotated[float, typer.Option(help="Send audio at this many times real time (1 = as spoken).")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Stream audio to a live server in real time and record the talking video it sends back."""
    from midas_cli.live.client import stream

    r = stream(url, audio, out, listen_audio=listen_audio, prompts=prompts, ref=ref, token=token, pace=pace)
    if json_out:
        print(json.dumps(r))
        return

    def ms(v):
        return "n/a" if v is None else f"{v:.0f} ms"

    console_err.print(f"wrote {out}: {r['frames']} frames ({r['seconds']:.2f} s); first frame after "
                      f"{r['first_frame_s']:.2f} s; chunk latency p50 {ms(r['latency_p50_ms'])}, "
                      f"p95 {ms(r['latency_p95_ms'])}; dropped chunks {r['dropped_chunks']}", highlight=False)
