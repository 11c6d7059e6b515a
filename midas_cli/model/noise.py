"""Noise injection on context latents, against exposure bias (GameNGen; MIDAS follows it).

In training every context frame fed to the backbone gets Gaussian noise at a level drawn per
frame uniformly from `num_buckets` discrete levels in [0, sigma_max]; the bucket index is
embedded into that frame's input tokens, so the model knows how far to trust its context.
At inference, generated context frames get one chosen small level the same way, which keeps
small errors from compounding over minutes. Bucket 0 is σ = 0: exactly the clean input.
"""

from __future__ import annotations

import torch
from torch import nn

from midas_cli.model.config import NoiseConfig


class ContextNoise(nn.Module):
    def __init__(self, cfg: NoiseConfig, hidden_size: int):
        super().__init__()
        self.cfg = cfg
        self.bucket_embed = nn.Embedding(cfg.num_buckets, hidden_size)
        nn.init.normal_(self.bucket_embed.weight, std=0.02)
        self.register_buffer("levels", torch.linspace(0.0, cfg.sigma_max, cfg.num_buckets), persistent=False)

    def sample_buckets(self, shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training: a bucket per frame, uniform over all levels (all zero when sigma_max is 0)."""
        if self.cfg.sigma_max == 0:
            return torch.zeros(shape, dtype=torch.long, device=device)
        return torch.randint(0, self.cfg.num_buckets, shape, device=device, generator=generator)

    def bucket_for(self, sigma: float) -> int:
        """Inference: the bucket whose level is nearest to sigma."""
        if self.cfg.sigma_max == 0 or sigma <= 0:
            return 0
        return int(torch.argmin((self.levels - sigma).abs()).item())

    def corrupt(self, latents: torch.Tensor, buckets: torch.Tensor,
                generator: torch.Generator | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        """latents (..., N, C), buckets (...) → noisy latents; σ = 0 returns the input itself.
        eps: the unit noise to scale (drawn here when None), for callers that reuse one draw."""
        sigma = self.levels.to(latents.device, latents.dtype)[buckets]  # (...)
        if not bool((sigma > 0).any()):
            return latents
        if eps is None:
            eps = torch.randn(latents.shape, device=latents.device, generator=generator, dtype=latents.dtype)
        return latents + sigma[..., None, None] * eps

    def embed(self, buckets: torch.Tensor) -> torch.Tensor:
        """buckets (...) → (..., 1, H), added to every token of the frame."""
        return self.bucket_embed(buckets)[..., None, :]
