"""`midas encode-ae` / `midas decode-ae`: frames ⇄ DC-AE frame latents in safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err
from midas_cli.latents import decode_latents, encode_frames  # noqa: F401  (importable from here, as before)


def encode_ae(
    input: Annotated[Path, typer.Argument(help="A video file, an image, or a folder of images.", exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors with the frame latents.")],
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Checkpoint whose autoencoder to use.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT to fit frames to (default: the model's).")] = None,
    report: Annotated[bool, typer.Option(help="Also decode and report the round-trip PSNR.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
):
    """Encode frames into DC-AE latents (safetensors with fps, size and autoencoder metadata)."""
    r = encode_frames(input, out, checkpoint, size, device, report)
    msg = f"wrote {out}: {r['frames']} frames × {r['tokens_per_frame']} tokens × {r['channels']} channels"
    if report:
        msg += f", round-trip PSNR {r['psnr_db']:.2f} dB"
    console_err.print(msg, highlight=False, markup=False)


def decode_ae(
    latents: Annotated[Path, typer.Argument(help="Latents from `midas encode-ae`.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .mp4, or a folder for PNG frames.")],
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Checkpoint whose autoencoder to use.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
):
    """Decode frame latents back to a video (or a folder of PNGs)."""
    n = decode_latents(latents, out, checkpoint, device)
    console_err.print(f"wrote {out}: {n} frames", highlight=False)
