"""`midas bench`: real-time factor, first-chunk latency, per-stage time and flatness."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from midas_cli.cli.common import console_err, console_out


def bench(
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Checkpoint folder or Hub id.")] = None,
    config: Annotated[str | None, typer.Option(help="A preset (tiny, demo, paper) with random weights instead.")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds of media to generate.")] = 60.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
    mux: Annotated[bool, typer.Option(help="Encode the frames with ffmpeg as generate does.")] = True,
    pipeline: Annotated[bool, typer.Option(help="Decode and mux on a worker thread while the next chunk is "
                                                "generated, as generate does (--no-pipeline: one after the other).")] = True,
    guidance: Annotated[float | None, typer.Option(
        help="The head's text guidance scale (default: the checkpoint's; s ≠ 1 runs a second head pass, timed too).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Time the streaming path (conditions → backbone → head → decode → mux) over a generated clip."""
    from midas_cli.bench.run import run_bench
    from midas_cli.cli.progress import progress_bar

    name = config if config is not None else checkpoint
    n_chunks = int(seconds * 12.5 / 6 + 0.999)
    with progress_bar() as bar:
        task = bar.add_task("bench", total=n_chunks)
        r = run_bench(name, seconds, device, dtype, mux=mux, pipeline=pipeline, guidance=guidance,
                      progress=lambda c: bar.update(task, completed=c))
    if json_out:
        print(json.dumps(r))
        return
    from rich.table import Table

    if r["random_weights"]:
        console_err.print(f"note: preset {name!r} runs with random weights (speed does not depend on them)")
    t = Table(title=f"midas bench: {r['name']} on {r['device']} ({r['dtype']}, {r['torch_threads']} threads)",
              show_header=False)
    t.add_row("media / wall", f"{r['seconds']:.1f} s / {r['wall_s']:.2f} s")
    t.add_row("real-time factor", f"{r['rtf']:.3f}")
    t.add_row("first chunk", f"{r['first_chunk_s'] * 1000:.0f} ms")
    for stage, s in r["stages"].items():
        t.add_row(f"stage {stage}", f"{s:.2f} s ({1000 * s / r['chunks']:.1f} ms/chunk)")
    t.add_row("chunk time last/first fifth", f"{r['chunk_time_ratio']:.3f}")
    t.add_row("memory last/first fifth", f"{r['rss_ratio']:.3f} ({r['memory_first_mb']:.0f} → {r['memory_last_mb']:.0f} MB)")
    console_out.print(t)
