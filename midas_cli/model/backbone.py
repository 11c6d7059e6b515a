"""The causal LLM backbone: transformers `Qwen2Model` on `inputs_embeds`.

The token vocabulary is not used (every input is a projected latent or condition), so the
model is built with a one-entry embedding table; starting from pretrained Qwen2.5 weights
copies every other tensor. Attention masks come in as additive float 4D tensors (see
`mask.py`) and are passed through unchanged by transformers.
"""

from __future__ import annotations

import torch
from torch import nn

from midas_cli.model.config import BackboneConfig


def _cache_kwarg() -> str:
    # transformers 5.2x renamed `past_key_values` to `cache` (the old name warns until 5.40)
    import inspect

    from transformers import Qwen2Model

    return "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"


_CACHE_KWARG = _cache_kwarg()


def qwen2_config(cfg: BackboneConfig):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=1,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attn_implementation=cfg.attn_implementation,
        use_cache=True,
        tie_word_embeddings=False,
    )


class Backbone(nn.Module):
    """Qwen2 decoder stack over embeddings: (B, T, H) → hidden states (B, T, H)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        from transformers import Qwen2Model

        self.cfg = cfg
        self.qwen = Qwen2Model(qwen2_config(cfg))

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    def load_pretrained(self, name_or_path: str) -> None:
        """Copy weights from a Qwen2/Qwen2.5 checkpoint with the same dimensions."""
        from transformers import Qwen2Model

        src = Qwen2Model.from_pretrained(name_or_path, dtype=torch.float32).state_dict()
        src = {k: v for k, v in src.items() if not k.startswith("embed_tokens")}
        missing, unexpected = self.qwen.load_state_dict(src, strict=False)
        missing = [k for k in missing if not k.startswith("embed_tokens")]
        if missing or unexpected:
            raise ValueError(f"{name_or_path}: backbone mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        out = self.qwen(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                        use_cache=cache is not None, **{_CACHE_KWARG: cache})
        return out.last_hidden_state

    def rope_shift(self, keys: torch.Tensor, shift: int) -> torch.Tensor:
        """Move RoPE-rotated keys (B, kv_heads, T, hd) by `shift` positions (negative = earlier).

        Rotations compose, so rotating a cached key by -L gives exactly the key that position
        p - L would have produced; this is how the streaming window re-anchors its positions.
        """
        rotary = self.qwen.rotary_emb
        pos = torch.tensor([[abs(shift)]], device=keys.device)
        cos, sin = rotary(keys.float(), pos)  # (1, 1, hd), already × attention_scaling
        scale = getattr(rotary, "attention_scaling", 1.0)
        cos, sin = (cos / scale)[:, None], (sin / scale)[:, None]
        if shift < 0:
            sin = -sin
        k = keys.float()
        half = k.shape[-1] // 2
        rot = torch.cat((-k[..., half:], k[..., :half]), dim=-1)
        return (k * cos + rot * sin).to(keys.dtype)
