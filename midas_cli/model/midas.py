"""The MIDAS model (arXiv 2508.19320), composed top to bottom in the order data meets it.

    ref image ─► DC-AE ─► N tokens (opens the sequence; kept for the whole clip)
    audio / listen / pose / text features ─► ConditionProjector ─► condition tokens of a chunk
    [ref] [cond c0][slot 1]…[slot 6] [cond c1][slot 7]… ─► Qwen2 backbone (chunk-causal mask)
    hidden state at slot t (input: frame t-1, noised) ─► diffusion head ─► frame t's tokens

Design choices:
- Slot t's input is frame t-1's latent (frame 0 is the reference), so the hidden state at
  slot t has seen everything before frame t and nothing after; teacher forcing trains all
  slots at once, generation runs them one by one (`engine/streaming.py`).
- Context latents are noised per frame from discrete buckets, the bucket embedded (noise.py).
- The backbone has no token vocabulary: every token comes in through `inputs_embeds`.
- The autoencoder and frozen encoders (Whisper, T5) are members, so the model moves between
  devices as one, but they are saved in their own sub-folders (checkpoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from midas_cli.conditions.audio import audio_feature_dim, build_audio_features
from midas_cli.conditions.pose import POSE_FEATURE_DIM
from midas_cli.conditions.projector import ConditionProjector
from midas_cli.conditions.text import build_text_encoder, text_feature_dim
from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae
from midas_cli.model.backbone import Backbone
from midas_cli.model.config import MidasConfig
from midas_cli.model.diffusion_head import build_head
from midas_cli.model.mask import SequenceLayout, chunk_causal_mask
from midas_cli.model.noise import ContextNoise

REF_TYPE, FRAME_TYPE = 0, 1

# sub-modules whose weights live in their own folders, not in model.safetensors
EXTERNAL_PREFIXES = ("autoencoder.", "audio_features.encoder.", "text_encoder.model.")


@dataclass
class ChunkFeatures:
    """Condition features of K chunks: audio/listen (B, K, F, A), pose (B, K, F, P), text (B, K, D)."""

    audio: torch.Tensor
    pose: torch.Tensor
    text: torch.Tensor
    listen: torch.Tensor | None = None

    def chunk(self, k: int) -> "ChunkFeatures":
        return ChunkFeatures(self.audio[:, k:k + 1], self.pose[:, k:k + 1], self.text[:, k:k + 1],
                             None if self.listen is None else self.listen[:, k:k + 1])

    def select(self, rows: torch.Tensor) -> "ChunkFeatures":
        """The batch rows picked by a boolean or index tensor."""
        return ChunkFeatures(self.audio[rows], self.pose[rows], self.text[rows],
                             None if self.listen is None else self.listen[rows])

    def to(self, device, dtype=None) -> "ChunkFeatures":
        def mv(x):
            return None if x is None else x.to(device=device, dtype=dtype or x.dtype)

        return ChunkFeatures(mv(self.audio), mv(self.pose), mv(self.text), mv(self.listen))


class MidasModel(nn.Module):
    def __init__(self, cfg: MidasConfig, tokenizer=None, components: dict | None = None):
        """`components` may hold ready-made "autoencoder", "audio_features", "text_encoder" modules
        (loaded from a checkpoint's sub-folders); missing ones are built from the config."""
        super().__init__()
        components = components or {}
        self.cfg = cfg
        h, c, n = cfg.backbone.hidden_size, cfg.latent_channels, cfg.tokens_per_frame

        # media → tokens
        self.autoencoder = components.get("autoencoder") or FrameAutoencoder(
            build_dcae(cfg.autoencoder), cfg.autoencoder.patch_size)
        self.audio_features = components.get("audio_features") or build_audio_features(cfg.audio)
        self.text_encoder = components.get("text_encoder") or build_text_encoder(cfg.text, tokenizer)
        self.projector = ConditionProjector(audio_feature_dim(cfg.audio), POSE_FEATURE_DIM, text_feature_dim(cfg.text),
                                            h, cfg.frames_per_chunk, cfg.audio.duplex, cfg.frame_conditions,
                                            cfg.text_in_slots)
        self.frame_in = nn.Linear(c, h)
        self.frame_pos = nn.Parameter(torch.randn(n, h) * 0.02)  # which latent position (row-major)
        self.type_embed = nn.Embedding(2, h)  # reference frame vs generated-frame slot
        nn.init.normal_(self.type_embed.weight, std=0.02)
        self.noise = ContextNoise(cfg.noise, h)
        # zero-initialised: a checkpoint trained without it starts out unchanged (`reference_in_slots`)
        self.ref_in = nn.Linear(c, h) if cfg.reference_in_slots else None
        if self.ref_in is not None:
            nn.init.zeros_(self.ref_in.weight)
            nn.init.zeros_(self.ref_in.bias)

        # sequence model and renderer
        self.backbone = Backbone(cfg.backbone)
        self.head = build_head(cfg.head, c, h, n)
        # zero-initialised like ref_in: a checkpoint trained without it starts out unchanged
        self.head_text = nn.Linear(text_feature_dim(cfg.text), h) if cfg.text_in_head else None
        if self.head_text is not None:
            nn.init.zeros_(self.head_text.weight)
            nn.init.zeros_(self.head_text.bias)

    # ---- embeddings -----------------------------------------------------------------------
    def embed_reference(self, ref_tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N, H)."""
        return self.frame_in(ref_tokens) + self.frame_pos + self.type_embed.weight[REF_TYPE]

    def embed_frames(self, latents: torch.Tensor, buckets: torch.Tensor,
                     frame_conds: torch.Tensor | None = None, ref_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Context frames (B, T, N, C) already noised at `buckets` (B, T) → (B, T, N, H).

        frame_conds (B, T, H): the conditions of the frame each slot predicts (`frame_conditions`).
        ref_tokens (B, N, C): the clean reference, added to every slot (`reference_in_slots`).
        """
        x = (self.frame_in(latents) + self.frame_pos + self.type_embed.weight[FRAME_TYPE]
             + self.noise.embed(buckets).to(latents.dtype))
        if self.ref_in is not None:
            if ref_tokens is None:
                raise ValueError("a reference_in_slots model needs the reference tokens for its slots")
            x = x + self.ref_in(ref_tokens)[:, None]
        return x if frame_conds is None else x + frame_conds[:, :, None]

    def embed_frame_conditions(self, feats: ChunkFeatures) -> torch.Tensor | None:
        """→ (B, K, F, H) per-frame conditions, or None when the config has no such path."""
        if not self.cfg.frame_conditions:
            return None
        feats = feats.to(self.device, self.dtype)
        return self.projector.per_frame(feats.audio, feats.pose, feats.listen, feats.text)

    def embed_conditions(self, feats: ChunkFeatures) -> torch.Tensor:
        """→ (B, K, Lc, H)."""
        feats = feats.to(self.device, self.dtype)
        return self.projector(feats.audio, feats.pose, feats.text, feats.listen)

    # ---- the teacher-forced sequence --------------------------------------------------------
    def layout(self, num_chunks: int) -> SequenceLayout:
        cfg = self.cfg
        return SequenceLayout(cfg.tokens_per_frame, cfg.cond_tokens_per_chunk, cfg.frames_per_chunk, num_chunks)

    def sequence_hidden(self, ref_tokens: torch.Tensor, context: torch.Tensor, feats: ChunkFeatures,
                        buckets: torch.Tensor) -> tuple[torch.Tensor, SequenceLayout]:
        """Backbone hidden states of a whole sequence.

        ref_tokens (B, N, C); context (B, K*F, N, C): slot t's input, i.e. frame t-1 (already
        noised); buckets (B, K*F). Returns hidden (B, T, H) and the layout.
        """
        b, t_frames, n, _ = context.shape
        k, f = feats.audio.shape[1], self.cfg.frames_per_chunk
        assert t_frames == k * f, f"{t_frames} context frames for {k} chunks of {f}"
        layout = self.layout(k)
        cond = self.embed_conditions(feats)  # (B, K, Lc, H)
        frame_conds = self.embed_frame_conditions(feats)
        if frame_conds is not None:
            frame_conds = frame_conds.flatten(1, 2)  # (B, K*F, H)
        slots = self.embed_frames(context, buckets, frame_conds, ref_tokens).reshape(b, k, f * n, -1)  # (B, K, F*N, H)
        seq = torch.cat([self.embed_reference(ref_tokens), torch.cat([cond, slots], dim=2).flatten(1, 2)], dim=1)
        mask = chunk_causal_mask(layout, dtype=seq.dtype, device=seq.device)
        pos = torch.arange(layout.length, device=seq.device)[None].expand(b, -1)
        return self.backbone(seq, mask=mask, position_ids=pos), layout

    def slot_hidden(self, ref_tokens, context, feats, buckets) -> torch.Tensor:
        """Hidden states at the frame slots: (B, K*F, N, H)."""
        hidden, layout = self.sequence_hidden(ref_tokens, context, feats, buckets)
        b, n = hidden.shape[0], self.cfg.tokens_per_frame
        return hidden[:, layout.frame_slot_index().to(hidden.device)].reshape(b, -1, n, hidden.shape[-1])

    def slot_texts(self, feats: ChunkFeatures) -> torch.Tensor:
        """(B, K, D) chunk texts → (B, K·F, D): each frame slot's (a chunk's prompt is its frames')."""
        return feats.text.repeat_interleave(self.cfg.frames_per_chunk, dim=1)

    def head_condition(self, hidden: torch.Tensor, text: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The diffusion head's condition: the hidden state at a frame slot, plus the text through
        `head_text` (`text_in_head`; otherwise the hidden state as it is).

        hidden (B, T, N, H); text (B, T, D): each slot's text features; keep (B, T): 0 leaves a
        slot's text out (training's `head_text_dropout`; the unguided branch of guidance).
        """
        if self.head_text is None:
            return hidden
        add = self.head_text(text.to(hidden.dtype))
        if keep is not None:
            add = add * keep[..., None].to(add.dtype)
        return hidden + add[..., None, :]

    # ---- text --------------------------------------------------------------------------------
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.text_encoder(texts)

    @property
    def device(self) -> torch.device:
        return self.frame_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.frame_in.weight.dtype

    def trainable_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(EXTERNAL_PREFIXES)}
