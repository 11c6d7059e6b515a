"""`midas generate`: audio + one photo (+ pose, prompts, the other side's voice) → an mp4."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err
from midas_cli.render import generate_video  # noqa: F401  (importable from here, as before)


def generate(
    audio: Annotated[Path, typer.Option("--audio", "-a", help="Speech to lip-sync: wav, flac, mp3 or ogg, any rate.")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="One photo of the face: png, jpg or webp.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output mp4 (H.264 + AAC).")] = Path("out.mp4"),
    listen_audio: Annotated[Path | None, typer.Option(
        "--listen-audio", help="The other party's voice, for duplex conversation: the avatar listens while it speaks.")] = None,
    pose: Annotated[Path | None, typer.Option("--pose", help="Head-pose keyframes JSON (see docs/formats.md).")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One text prompt for the whole clip.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Prompt timeline JSON (see docs/formats.md).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", "-c", envvar="MIDAS_CHECKPOINT",
        help="Checkpoint folder or Hub id. Default: the demo checkpoint shipped in the package.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same video.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Diffusion-head Euler steps per frame (default: the checkpoint's, 4).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32 or bfloat16.")] = "auto",
    duration: Annotated[float | None, typer.Option(help="Seconds to render (default: the audio's length).")] = None,
    context_noise: Annotated[float | None, typer.Option(
        help="Noise level σ given to generated context frames (default: the checkpoint's; 0 = off).")] = None,
    guidance: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale on the prompt in the diffusion head (1 = none; default: "
             "the checkpoint's). Needs a checkpoint with text_in_head; s ≠ 1 costs a second head pass.")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="Scale of the diffusion head's starting noise (1 = full noise, 0 = deterministic; "
             "default: the checkpoint's, 0.4 for the demo). Lower trades variety for fidelity.")] = None,
):
    """Render a talking-head video from speech and one photo."""
    stats = generate_video(audio, ref, out, listen_audio=listen_audio, pose=pose, prompt=prompt, prompts=prompts,
                           checkpoint=checkpoint, seed=seed, steps=steps, device=device, dtype=dtype,
                           duration=duration, context_noise=context_noise, guidance=guidance,
                           temperature=temperature)
    console_err.print(f"wrote {out}: {stats.frames} frames, {stats.seconds:.2f} s of video in {stats.wall_s:.2f} s "
                      f"(real-time factor {stats.rtf:.2f})", highlight=False)
