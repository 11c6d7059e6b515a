"""Render one clip from files: load the media, run `pipeline.render`, write the mp4.

`generate_video` is what `midas generate` and `midas batch` call; the server uses the same
pipeline pieces live (`midas_cli.live`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from midas_cli.devices import pick_device, pick_dtype
from midas_cli.errors import MidasError


def generate_video(audio: Path, ref: Path, out: Path, *, listen_audio: Path | None = None, pose: Path | None = None,
                   prompt: str | None = None, prompts: Path | None = None, checkpoint: str | None = None,
                   seed: int = 0, steps: int | None = None, device: str = "auto", dtype: str = "auto",
                   duration: float | None = None, context_noise: float | None = None, guidance: float | None = None,
                   temperature: float | None = None, model=None, progress=True):
    """Render one clip to `out` (written to a temporary file, renamed when complete). Returns RenderStats."""
    from midas_cli.media.audio import SAMPLE_RATE, load_audio, write_wav
    from midas_cli.media.pose import load_pose
    from midas_cli.media.prompts import load_prompts, prompts_from_text
    from midas_cli.media.video_out import VideoWriter
    from midas_cli.model.checkpoint import load_model
    from midas_cli.pipeline import RenderInputs, check_guidance, n_frames_for, render

    if steps is not None and steps < 1:
        raise MidasError(f"--steps {steps}: must be at least 1")
    if temperature is not None and temperature < 0:
        raise MidasError(f"--temperature {temperature:g}: must be ≥ 0 (1 = the head's full noise)")
    if duration is not None and duration <= 0:
        raise MidasError(f"--duration {duration}: must be positive")
    if prompt is not None and prompts is not None:
        raise MidasError("--prompt and --prompts: give one or the other")
    if out.suffix.lower() != ".mp4":
        raise MidasError(f"{out}: the output must be an .mp4 file")
    if out.parent and not out.parent.exists():
        raise MidasError(f"{out}: folder {out.parent} does not exist")
    wav = load_audio(audio)
    seconds = duration if duration is not None else len(wav) / SAMPLE_RATE
    if seconds <= 0:
        raise MidasError(f"{audio}: the audio is empty")
    n_frames = n_frames_for(seconds)
    wav = np.pad(wav, (0, max(0, int(seconds * SAMPLE_RATE) - len(wav))))[: int(seconds * SAMPLE_RATE)]
    listen = None
    if listen_audio is not None:
        listen = load_audio(listen_audio)
        listen = np.pad(listen, (0, max(0, len(wav) - len(listen))))[: len(wav)]
    timeline = []
    if prompts is not None:
        timeline = [(p.t, p.text) for p in load_prompts(prompts, duration=seconds)]
    elif prompt is not None:
        timeline = [(p.t, p.text) for p in prompts_from_text(prompt)]
    pose_arr = load_pose(pose, n_frames, duration=seconds) if pose is not None else None

    if model is None:
        dev = pick_device(device)
        model = load_model(checkpoint, device=dev, dtype=pick_dtype(dtype, dev))
    cfg = model.cfg
    check_guidance(model, guidance, checkpoint)
    ref_img = reference_for(model, ref, checkpoint)
    inputs = RenderInputs(ref=ref_img, audio=wav, n_frames=n_frames, listen_audio=listen, pose=pose_arr,
                          prompts=timeline)
    with tempfile.TemporaryDirectory() as tmp:
        mux_audio = Path(tmp) / "audio.wav"
        write_wav(mux_audio, wav, SAMPLE_RATE)  # exactly the clip's length, whatever the input format
        with VideoWriter(out, cfg.autoencoder.width, cfg.autoencoder.height, fps=cfg.fps, audio_path=mux_audio) as w:
            if progress:
                from midas_cli.console import progress_bar

                with progress_bar() as bar:
                    task = bar.add_task("generating", total=n_frames)
                    stats = render(model, inputs, w.write, seed=seed, steps=steps, context_sigma=context_noise,
                                   guidance=guidance, temperature=temperature, on_chunk=lambda c, n: bar.update(task, completed=min(c * cfg.frames_per_chunk, n_frames)))
            else:
                stats = render(model, inputs, w.write, seed=seed, steps=steps, context_sigma=context_noise,
                               guidance=guidance, temperature=temperature)
    return stats


def reference_for(model, ref: Path, checkpoint: str | None = None) -> np.ndarray:
    """The photo framed like the training faces (`frame_reference`), with one line on stderr when
    the checkpoint's autoencoder cannot represent it (`domain_warning`)."""
    from midas_cli.console import console_err
    from midas_cli.media.framing import domain_warning, frame_reference

    cfg = model.cfg.autoencoder
    ref_img = frame_reference(ref, cfg.width, cfg.height)
    warning = domain_warning(model, ref_img, checkpoint)
    if warning:
        console_err.print(warning, highlight=False, soft_wrap=True)
    return ref_img
