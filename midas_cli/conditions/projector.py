"""Condition features → backbone-width tokens, one type embedding per modality.

Per chunk of F frames: F audio tokens, F listen tokens (the interlocutor, when duplex), F pose
tokens and one text token. Audio and listen share the audio MLP (the sound-to-meaning map is
the same); their type embeddings say whose voice it is. With `frame_conditions`, `per_frame`
also gives each frame slot its own frame's features.
"""

from __future__ import annotations

import torch
from torch import nn

AUDIO, LISTEN, POSE, TEXT = range(4)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(approximate="tanh"), nn.Linear(d_out, d_out))


class ConditionProjector(nn.Module):
    def __init__(self, audio_dim: int, pose_dim: int, text_dim: int, hidden: int, frames_per_chunk: int,
                 duplex: bool, frame_conditions: bool = False, text_in_slots: bool = False):
        super().__init__()
        self.duplex = duplex
        self.audio = _mlp(audio_dim, hidden)
        self.pose = _mlp(pose_dim, hidden)
        self.text = _mlp(text_dim, hidden)
        self.type_embed = nn.Embedding(4, hidden)
        self.slot_embed = nn.Embedding(frames_per_chunk, hidden)  # which frame of the chunk
        nn.init.normal_(self.type_embed.weight, std=0.02)
        nn.init.normal_(self.slot_embed.weight, std=0.02)
        # per-frame path (`MidasConfig.frame_conditions`): one linear mix of the projected features
        self.frame_mix = nn.Linear((3 if duplex else 2) * hidden, hidden) if frame_conditions else None
        # the chunk's text in every slot (`MidasConfig.text_in_slots`); zero-initialised, so a
        # checkpoint trained without it starts out unchanged
        self.text_frame = nn.Linear(hidden, hidden) if text_in_slots else None
        if self.text_frame is not None:
            nn.init.zeros_(self.text_frame.weight)
            nn.init.zeros_(self.text_frame.bias)

    def forward(self, audio, pose, text, listen=None) -> torch.Tensor:
        """audio, listen (…, F, A), pose (…, F, P), text (…, D) → tokens (…, Lc, H)."""
        slots = self.slot_embed.weight  # (F, H)
        parts = [self.audio(audio) + self.type_embed.weight[AUDIO] + slots]
        if self._needs_listen(listen):
            parts.append(self.audio(listen) + self.type_embed.weight[LISTEN] + slots)
        parts.append(self.pose(pose) + self.type_embed.weight[POSE] + slots)
        parts.append((self.text(text) + self.type_embed.weight[TEXT]).unsqueeze(-2))
        return torch.cat(parts, dim=-2)

    def per_frame(self, audio, pose, listen=None, text=None) -> torch.Tensor:
        """audio, listen (…, F, A), pose (…, F, P), text (…, D) → (…, F, H): each frame's own
        conditions, added to the input of the slot that predicts that frame."""
        parts = [self.audio(audio), self.pose(pose)]
        if self._needs_listen(listen):
            parts.append(self.audio(listen))
        out = self.frame_mix(torch.cat(parts, dim=-1))
        if self.text_frame is not None:
            if text is None:
                raise ValueError("a text_in_slots model needs the chunk's text features")
            out = out + self.text_frame(self.text(text)).unsqueeze(-2)
        return out

    def _needs_listen(self, listen) -> bool:
        if self.duplex and listen is None:
            raise ValueError("duplex model needs listen-audio features (silence when absent)")
        return self.duplex
