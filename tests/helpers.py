"""Random inputs of the right shapes for a model (tests only)."""

import torch

from midas_cli.model.midas import ChunkFeatures


def random_features(model, batch: int, chunks: int, seed: int = 0) -> ChunkFeatures:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    f, a = cfg.frames_per_chunk, model.audio_features.dim
    text_dim = model.projector.text[0].in_features
    return ChunkFeatures(
        audio=torch.randn(batch, chunks, f, a, generator=g),
        pose=torch.randn(batch, chunks, f, cfg.pose_dim, generator=g),
        text=torch.randn(batch, chunks, text_dim, generator=g),
        listen=torch.randn(batch, chunks, f, a, generator=g) if cfg.audio.duplex else None,
    )


def random_latents(model, batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, model.cfg.tokens_per_frame, model.cfg.latent_channels, generator=g)
