"""The model's own latents for the decoder phase (`decoder.rollout_share`).

The decoder learns on the encoder's latents of true frames, but what it decodes at inference
is the model's rollout, which sits off those latents in ways of its own (a mouth a little open
where the truth's is closed, a blurred brow). Here each training clip is rolled out once by the
finished model, exactly as `midas generate` would make it (the clip's reference, audio, listen
audio, pose and prompts; the checkpoint's context noise and head steps), and its latents are
kept on disk next to the run: one `<clip id>.safetensors` (tokens (T, N, C), float32) per clip.
The decoder phase then decodes a share of its frames from these against the clip's true
frames, so it learns to draw what the model's latents mean, not only what the encoder's do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from midas_cli.errors import MidasError


def rollout_tokens(model, clip, seed: int) -> torch.Tensor:
    """One clip's rollout by `model`: its latent tokens (T, N, C) on the CPU, float32 — the
    tokens `midas_cli.pipeline.render` decodes for the same inputs and seed."""
    from midas_cli.engine.streaming import StreamingEngine
    from midas_cli.pipeline import RenderInputs, chunk_conditions, encode_reference

    inputs = RenderInputs(ref=clip.ref, audio=clip.audio, n_frames=len(clip.frames), listen_audio=clip.listen,
                          pose=clip.pose, prompts=list(clip.prompts))
    torch.manual_seed(seed)  # as render() does
    engine = StreamingEngine(model, seed=seed)
    engine.start(encode_reference(model, inputs.ref))
    chunks = [engine.generate_chunk(feats)[0] for feats in chunk_conditions(model, inputs)]
    return torch.cat(chunks)[:inputs.n_frames].float().cpu()


def write_rollouts(model, data_dir: Path, folder: Path, *, seed: int, rank: int = 0, world: int = 1,
                   max_clips: int | None = None, progress=None, log=print) -> Path:
    """Roll out every clip of the manifest folder `data_dir` (this rank's share: clip i goes to
    rank i % world) into `folder`; a clip already there is kept, so an interrupted run resumes.
    Clip i is rolled out with seed (seed, i): the same tokens for any rank count or resume.
    `progress(done, total)` is called after each clip."""
    from safetensors.torch import save_file

    from midas_cli.training.data import load_clip, read_manifest

    folder.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(data_dir)[:max_clips]
    mine = [(i, e) for i, e in enumerate(entries) if i % world == rank]
    ae = model.cfg.autoencoder
    was_training = model.training
    model.eval()
    made = 0
    try:
        for done, (i, entry) in enumerate(mine, 1):
            path = folder / f"{entry['id']}.safetensors"
            if not path.exists():
                clip = load_clip(data_dir, entry, ae.width, ae.height)
                tokens = rollout_tokens(model, clip, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                tmp = path.with_suffix(".tmp")
                save_file({"tokens": tokens.contiguous()}, str(tmp))
                os.replace(tmp, path)
                made += 1
            if progress is not None:
                progress(done, len(mine))
    finally:
        model.train(was_training)
    log(f"rollouts: {made} clips rolled out by the model, {len(mine) - made} already in {folder}")
    return folder


def load_rollout(folder: Path, clip_id: str, n_frames: int) -> np.ndarray:
    """A clip's rollout tokens (n_frames, N, C) from `write_rollouts`' folder."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(folder) / f"{clip_id}.safetensors"
    try:
        tokens = load_file(str(path))["tokens"]
    except (OSError, SafetensorError, KeyError) as e:
        raise MidasError(f"{path}: not a readable rollout ({type(e).__name__}: {e})") from None
    if len(tokens) < n_frames:
        raise MidasError(f"{path}: {len(tokens)} frames of rollout for a clip of {n_frames}")
    return tokens[:n_frames]
