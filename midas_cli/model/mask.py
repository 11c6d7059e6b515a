"""The chunk-causal attention mask and the token layout it is built from.

Every token belongs to a *block*: the reference frame (block 0), then per chunk its condition
tokens (one block) followed by one block per frame slot. A token sees every token of its own
block and of every earlier block, and nothing later: full attention inside a frame, causal
between frames, and condition tokens visible to everything after them.

Masks are additive floats (0 = may attend, dtype-min = may not), shape (B, 1, Q, K): the
`eager` kernel adds the mask to the scores, so a boolean mask would be silently wrong there,
while the float form gives the same result under `sdpa` and `eager`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

REF, COND, FRAME = 0, 1, 2


@dataclass(frozen=True)
class SequenceLayout:
    """Token positions of a teacher-forced training sequence: [ref] then `num_chunks` chunks."""

    tokens_per_frame: int  # N
    cond_tokens: int  # condition tokens per chunk
    frames_per_chunk: int  # F
    num_chunks: int

    @property
    def chunk_len(self) -> int:
        return self.cond_tokens + self.frames_per_chunk * self.tokens_per_frame

    @property
    def length(self) -> int:
        return self.tokens_per_frame + self.num_chunks * self.chunk_len

    def block_ids(self) -> torch.Tensor:
        """(T,) block index of every token; blocks are ordered in time."""
        n, f = self.tokens_per_frame, self.frames_per_chunk
        ids = [torch.zeros(n, dtype=torch.long)]
        for c in range(self.num_chunks):
            base = 1 + c * (f + 1)
            ids.append(torch.full((self.cond_tokens,), base, dtype=torch.long))
            ids.append((base + 1 + torch.arange(f)).repeat_interleave(n))
        return torch.cat(ids)

    def chunk_ids(self) -> torch.Tensor:
        """(T,) chunk index of every token, -1 for the reference frame."""
        return torch.cat([torch.full((self.tokens_per_frame,), -1, dtype=torch.long),
                          torch.arange(self.num_chunks).repeat_interleave(self.chunk_len)])

    def frame_slot_index(self) -> torch.Tensor:
        """(num_chunks * F * N,) indices of the frame-slot tokens, in frame order."""
        n, f = self.tokens_per_frame, self.frames_per_chunk
        starts = [n + c * self.chunk_len + self.cond_tokens for c in range(self.num_chunks)]
        return torch.cat([torch.arange(s, s + f * n) for s in starts])

    def cond_index(self) -> torch.Tensor:
        """(num_chunks * cond_tokens,) indices of the condition tokens."""
        n = self.tokens_per_frame
        starts = [n + c * self.chunk_len for c in range(self.num_chunks)]
        return torch.cat([torch.arange(s, s + self.cond_tokens) for s in starts])


def block_causal_allowed(block_q: torch.Tensor, block_k: torch.Tensor) -> torch.Tensor:
    """(Q, K) bool: query may attend to key iff the key's block is not later than the query's."""
    return block_k[None, :] <= block_q[:, None]


def to_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (…, Q, K) → additive float mask (B=1, 1, Q, K) in `dtype`."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    return mask


def chunk_causal_mask(layout: SequenceLayout, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """(1, 1, T, T) additive float mask of a whole training sequence."""
    blocks = layout.block_ids().to(device)
    return to_additive(block_causal_allowed(blocks, blocks), dtype)
