"""`midas prepare`: talking-head videos → a training folder (a thin layer over `midas_cli.prepare.prepare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err


def prepare_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Video files or folders of them (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (manifest.jsonl + clips); resumable.")],
    clip_seconds: Annotated[float, typer.Option(help="Length the face tracks are cut into.")] = 8.0,
    min_seconds: Annotated[float, typer.Option(help="Shortest clip kept (a track's tail, a short shot).")] = 2.0,
    size: Annotated[int, typer.Option(help="Output frames are SIZE × SIZE (the checkpoint's frame size).")] = 128,
    prompt: Annotated[str | None, typer.Option(help="A text prompt written for every clip.")] = None,
    face_backend: Annotated[str, typer.Option(
        help="Face detector + landmarks: mediapipe (a 3D face mesh: pose with pitch; the [mediapipe] "
             "extra), dlib (68 points; the [prepare] extra), or auto (mediapipe when installed).")] = "auto",
    preview: Annotated[bool, typer.Option("--preview", help="Also write OUT/preview.png, a contact sheet of the crops.")] = False,
    test_fraction: Annotated[float, typer.Option(help="Share of sources (by a stable hash) put in the test split.")] = 0.05,
):
    """Turn talking-head videos into a training folder that `midas train` reads (docs/prepare.md).

    Under torchrun (or with RANK and WORLD_SIZE set) each rank prepares its share of the inputs
    and rank 0 writes the report.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from midas_cli.prepare.run import PrepareOptions, prepare, summary_lines

    opts = PrepareOptions(clip_seconds=clip_seconds, min_seconds=min_seconds, size=size, prompt=prompt,
                          face_backend=face_backend, test_fraction=test_fraction, preview=preview)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console_err, transient=True) as bar:
        task = {}

        def progress(event, path=None, frames=0):
            if event == "source":
                if "id" in task:
                    bar.remove_task(task["id"])
                task["id"] = bar.add_task(f"{path.name} (frames, 2 passes)", total=frames)
            elif "id" in task:
                bar.advance(task["id"])

        report = prepare(inputs, out, opts, progress=progress)
    if report is None:
        return  # not rank 0: that rank writes the summary
    for line in summary_lines(report):
        console_err.print(line, highlight=False)
    console_err.print(f"wrote {out / 'manifest.jsonl'} ({report['clips']} clips), {out / 'prepare_report.json'}, "
                      f"{out / 'rejected.jsonl'}" + (f", {out / 'preview.png'}" if preview else ""), highlight=False)
