"""The flow-matching diffusion head: renders one frame's N latent tokens from noise.

Written the DiT way: a timestep embedder, blocks whose LayerNorms are modulated by the flow
time (adaLN: shift, scale, gate), and `initialize_weights()` zeroing every modulation and the
output layer ("adaLN-Zero"), so each new block starts as the identity and the head starts by
predicting zero velocity. Each position's backbone hidden state is added to its noisy token,
which is how the autoregressive context reaches the frame ("each head refines its frame
independently": a head never looks at other frames).

`DiffusionHead` is the PixArt-α-like transformer over a frame's tokens; `MLPHead` is MAR's
cheaper per-token MLP for the smallest configs. Both map (x_t, t, cond) → velocity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from midas_cli.model.config import HeadConfig

#################################################################################
#                Embedding layers for flow time                                  #
#################################################################################


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow time t ∈ [0, 1] (scaled to 0…1000 like DiT's timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Flow time → vector, through a sinusoidal table and a 2-layer MLP."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


#################################################################################
#                              Transformer head                                  #
#################################################################################


class HeadBlock(nn.Module):
    """DiT block: self-attention over the frame's tokens and an MLP, both adaLN-Zero gated."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def attention(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))

    def forward(self, x, mod):
        """x (B, N, W) with this block's modulation (·, 1, 6W), computed from the time by the head."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        x = x + gate_msa * self.attention(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x, c):
        """c (B, N, W): a condition per token (MLPHead)."""
        return self.modulated(x, self.adaLN_modulation(c))

    def modulated(self, x, mod):
        shift, scale = mod.chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiffusionHead(nn.Module):
    """Transformer over one frame's tokens: (x_t (B,N,C), t (B,), cond (B,N,H)) → velocity (B,N,C)."""

    def __init__(self, cfg: HeadConfig, latent_channels: int, cond_dim: int, tokens_per_frame: int):
        super().__init__()
        w = cfg.width
        self.x_embed = nn.Linear(latent_channels, w)
        self.cond_embed = nn.Linear(cond_dim, w)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens_per_frame, w))
        self.t_embedder = TimestepEmbedder(w)
        self.blocks = nn.ModuleList([HeadBlock(w, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(w, latent_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mods, final = self._time_modulations(self.t_embedder(t))  # t (B,) → (B, 1, ·)
        return self._velocity(x_t, self.cond_embed(cond), mods, final)  # (B, N, C)

    def sampler(self, cond: torch.Tensor, times: torch.Tensor):
        """`velocity(x_t, i)` at `times[i]` for one frame's sampling, same result as `forward`.

        Everything that depends only on the time (its embedding, every adaLN modulation) is
        computed for all steps in one batched pass, and the condition is embedded once, so a
        4-step sample runs about half the small ops of four `forward` calls; with a frame of
        only tens of tokens those ops, not FLOPs, are the cost.
        """
        mods, final = self._time_modulations(self.t_embedder(times))  # (S, 1, ·); [i] broadcasts over B
        cond_embedded = self.cond_embed(cond)

        def velocity(x_t: torch.Tensor, i: int) -> torch.Tensor:
            return self._velocity(x_t, cond_embedded, [m[i] for m in mods], final[i])

        return velocity

    def _time_modulations(self, c: torch.Tensor):
        """Time embedding (·, W) → each block's modulation and the final layer's, (·, 1, 6W / 2W)."""
        return [block.adaLN_modulation(c)[:, None] for block in self.blocks], self.final_layer.adaLN_modulation(c)[:, None]

    def _velocity(self, x_t, cond_embedded, mods, final):
        x = self.x_embed(x_t) + cond_embedded + self.pos_embed  # (B, N, W)
        for block, mod in zip(self.blocks, mods):
            x = block(x, mod)
        return self.final_layer.modulated(x, final)


#################################################################################
#                              Per-token MLP head                                #
#################################################################################


class ResBlock(nn.Module):
    """MAR's residual MLP block, modulated per token by (time + backbone hidden)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x, c):
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class MLPHead(nn.Module):
    """Per-token MLP: each token denoised on its own, conditioned on its hidden state and t."""

    def __init__(self, cfg: HeadConfig, latent_channels: int, cond_dim: int, tokens_per_frame: int):
        super().__init__()
        w = cfg.width
        self.x_embed = nn.Linear(latent_channels, w)
        self.cond_embed = nn.Linear(cond_dim, w)
        self.t_embedder = TimestepEmbedder(w)
        self.blocks = nn.ModuleList([ResBlock(w) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(w, latent_channels)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x_t, t, cond):
        c = self.t_embedder(t)[:, None] + self.cond_embed(cond)  # (B, N, W)
        x = self.x_embed(x_t)
        for block in self.blocks:
            x = block(x, c)
        return self.final_layer(x, c)


def build_head(cfg: HeadConfig, latent_channels: int, cond_dim: int, tokens_per_frame: int) -> nn.Module:
    cls = DiffusionHead if cfg.kind == "transformer" else MLPHead
    return cls(cfg, latent_channels, cond_dim, tokens_per_frame)
