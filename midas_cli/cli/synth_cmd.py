"""`midas synth`: write a synthetic talking-head dataset (a thin layer over write_dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; gets manifest.jsonl, "
                                      "clips/ and refs/ (docs/formats.md).")] = Path("synth_data"),
    clips: Annotated[int, typer.Option("--clips", min=1, help="Number of clips to write.")] = 16,
    seconds: Annotated[float, typer.Option("--seconds", min=0.08,
                                           help="Length of each clip in seconds.")] = 8.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed, split and "
                                      "clip index always give the same clip.")] = 0,
    split: Annotated[str, typer.Option("--split", help="'train' or 'test': test uses "
                                       "identities, voices and random streams that train never "
                                       "sees.")] = "train",
    size: Annotated[int, typer.Option("--size", help="Frame width and height in pixels (even, "
                                      ">= 32).")] = 128,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Processes drawing and "
                                         "writing clips; the files are the same for any count.")] = 1,
) -> None:
    """Render synthetic talking-head clips with per-frame ground truth (faces, speech-like
    audio, head pose, expression prompts, listening turns)."""
    from midas_cli.synth.dataset import write_dataset

    manifest = write_dataset(out, clips=clips, seconds=seconds, seed=seed, split=split,
                             size=size, progress=True, workers=workers)
    typer.echo(str(manifest))
