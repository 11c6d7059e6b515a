"""What the teacher-forced probes (`audio_probe.py`, `text_probe.py`) share: a checkpoint and one
batch of training windows read from the latent shards training reads, every frame of a window
sampled by the head from a given context, and the shipped judges' reading of decoded latents."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def add_probe_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped demo)")
    ap.add_argument("--data", type=Path, default=Path("data/synth-train"), help="a manifest folder")
    ap.add_argument("--clips", type=int, default=12, help="clips to load from it")
    ap.add_argument("--sequences", type=int, default=16, help="training windows to probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")


def load_windows(checkpoint: str | None, data_dir: Path, clips: int, sequences: int, seed: int):
    """The model (eval mode) and one batch `(ref, frames, prev, feats, texts)` of windows of
    window_chunks + 1 chunks, as `midas train` samples them."""
    from midas_cli.model.checkpoint import load_model
    from midas_cli.training.shards import encode_dataset, window_loader

    model = load_model(checkpoint).eval()
    shards = encode_dataset(model, data_dir, max_clips=clips)  # the shards training reads (made once)
    batches = window_loader(shards, chunks=model.cfg.window_chunks + 1, frames_per_chunk=model.cfg.frames_per_chunk,
                            batch_size=sequences, seed=seed, steps=1, num_workers=0)
    return model, next(iter(batches))


def sample_frames(model, ref: torch.Tensor, context: torch.Tensor, feats, buckets: torch.Tensor,
                  seed: int) -> torch.Tensor:
    """Every frame slot's frame (B, T, N, C) drawn by the head, each slot given its (already
    noised) context frame at `buckets`; the head's noise is drawn from `seed`."""
    from midas_cli.model.flow import euler_sample

    hidden = model.slot_hidden(ref, context, feats, buckets)
    cond = model.head_condition(hidden, model.slot_texts(feats))
    noise = torch.randn(context.flatten(0, 1).shape, generator=torch.Generator().manual_seed(seed))
    x = euler_sample(model.head, cond.flatten(0, 1), noise, model.cfg.head.steps, model.cfg.head.time_shift,
                     uncond=hidden.flatten(0, 1), guidance=model.cfg.head.guidance)
    return x.view_as(context)


def judge_latents(model, judges, latents: torch.Tensor, what: str) -> np.ndarray:
    """One judge's reading (`mouth` or `expression`) of latents (B, T, N, C), decoded; (B*T,)."""
    from midas_cli.model.autoencoder import tensor_to_images

    images = tensor_to_images(model.autoencoder.decode(latents.flatten(0, 1), model.cfg.latent_grid))
    return np.asarray(judges.predict(images)[what])
