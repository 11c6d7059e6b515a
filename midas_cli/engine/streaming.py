"""The streaming engine: chunk-by-chunk generation with a windowed KV cache.

It owns the cache and the loop; the model knows nothing about caching (nanochat's split).

The cache holds the reference frame's tokens for the whole clip (an attention sink) and the
last `window_chunks` chunks. When a chunk leaves the window its keys and values are dropped and
the cached keys of the younger chunks are rotated back by one chunk's length, so every new
chunk sits at the same positions: ref at [0, N), window at [N, N + W·L), the current chunk
after. Positions never grow past what a training sequence of W + 1 chunks covered, and the
per-chunk cost and memory are the same at minute 4 as at second 1.

Semantics (what `reference_window_hidden` recomputes from scratch): a chunk attends to the
reference, to the previous W chunks in full and to itself chunk-causally, with the reference
seen at the distance it has in a window that starts right after it.

Per chunk: evict if the window is full; run the condition tokens together with the first frame
slot; sample that frame with the diffusion head; then one backbone step per further frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from midas_cli.model.flow import euler_sample
from midas_cli.model.mask import block_causal_allowed, to_additive
from midas_cli.model.midas import ChunkFeatures, MidasModel


class StreamingEngine:
    def __init__(self, model: MidasModel, window_chunks: int | None = None, context_sigma: float | None = None,
                 steps: int | None = None, seed: int = 0, record_hidden: bool = False,
                 guidance: float | None = None, temperature: float | None = None):
        cfg = model.cfg
        self.model = model
        self.window = window_chunks if window_chunks is not None else cfg.window_chunks
        sigma = cfg.noise.inference_sigma if context_sigma is None else context_sigma
        self.context_bucket = model.noise.bucket_for(sigma)
        self.steps = steps if steps is not None else cfg.head.steps
        # classifier-free guidance on the head's text input (`text_in_head`); None: the checkpoint's
        self.guidance = cfg.head.guidance if guidance is None else float(guidance)
        if self.guidance != 1.0 and model.head_text is None:
            raise ValueError("guidance needs a model with text_in_head (its head has no text input to guide)")
        # the head's starting noise scale (None: the checkpoint's head.temperature)
        self.temperature = cfg.head.temperature if temperature is None else float(temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        self.seed = seed
        self.record_hidden = record_hidden
        self.timings = {"backbone": 0.0, "head": 0.0}
        self.reset()

    # ---- cache bookkeeping (nanochat's reset / get_pos / advance) --------------------------
    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.chunk_lens: list[int] = []
        self.chunks_done = 0
        self.last_frame: torch.Tensor | None = None
        self.ref_tokens: torch.Tensor | None = None
        self.last_bucket = 0
        self.hidden_trace: list[torch.Tensor] = []  # per frame slot, when record_hidden
        self.context_trace: list[torch.Tensor] = []
        self.generator = torch.Generator(device=self.model.device).manual_seed(self.seed)

    def get_pos(self) -> int:
        return self.cache.get_seq_length()

    def _evict_oldest_chunk(self) -> None:
        n, drop = self.model.cfg.tokens_per_frame, self.chunk_lens.pop(0)
        for layer in self.cache.layers:
            keys, values = layer.keys, layer.values
            kept = self.model.backbone.rope_shift(keys[:, :, n + drop:], -drop)
            layer.keys = torch.cat([keys[:, :, :n], kept], dim=2)
            layer.values = torch.cat([values[:, :, :n], values[:, :, n + drop:]], dim=2)

    @contextmanager
    def _timed(self, stage: str):
        dev = self.model.device
        t0 = time.perf_counter()
        yield
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.timings[stage] += time.perf_counter() - t0

    def _step(self, embeds: torch.Tensor, blocks: torch.Tensor | None) -> torch.Tensor:
        """Run new tokens through the backbone; `blocks` orders them (None: one block)."""
        past, q = self.get_pos(), embeds.shape[1]
        allowed = torch.ones(q, past + q, dtype=torch.bool, device=embeds.device)
        if blocks is not None:
            allowed[:, past:] = block_causal_allowed(blocks, blocks)
        mask = to_additive(allowed, embeds.dtype)
        pos = torch.arange(past, past + q, device=embeds.device)[None].expand(embeds.shape[0], -1)
        with self._timed("backbone"):
            return self.model.backbone(embeds, mask=mask, position_ids=pos, cache=self.cache)

    def _sample(self, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Frame tokens from a slot's hidden state (B, N, H) and its chunk's text features (B, D)."""
        if self.record_hidden:
            self.hidden_trace.append(hidden.detach().clone())
        noise = torch.randn(hidden.shape[0], hidden.shape[1], self.model.cfg.latent_channels,
                            generator=self.generator, device=hidden.device, dtype=hidden.dtype)
        if self.temperature != 1.0:
            noise = noise * self.temperature
        with self._timed("head"):
            cond = self.model.head_condition(hidden[:, None], text[:, None])[:, 0]
            return euler_sample(self.model.head, cond, noise, self.steps, self.model.cfg.head.time_shift,
                                uncond=hidden, guidance=self.guidance)

    def _context(self, frame: torch.Tensor, bucket: int, frame_conds: torch.Tensor | None) -> torch.Tensor:
        """Embed a context frame (B, N, C) at a noise bucket → (B, N, H); frame_conds (B, 1, H):
        the conditions of the frame this slot predicts (None without `frame_conditions`)."""
        b = torch.full((frame.shape[0], 1), bucket, dtype=torch.long, device=frame.device)
        noisy = self.model.noise.corrupt(frame[:, None], b, self.generator)
        embeds = self.model.embed_frames(noisy, b, frame_conds, self.ref_tokens)[:, 0]
        if self.record_hidden:
            self.context_trace.append(embeds.detach().clone())
        return embeds

    # ---- generation --------------------------------------------------------------------------
    # inference mode, not just no_grad: no version counters or view tracking on the many small
    # tensors of a frame step (rtf 0.339 → 0.317 on 2 CPU cores, benchmarks/README.md)
    @torch.inference_mode()
    def start(self, ref_tokens: torch.Tensor) -> None:
        """Prefill the reference frame (B, N, C); it stays in the cache for the whole clip."""
        self.reset()
        ref_tokens = ref_tokens.to(self.model.device, self.model.dtype)
        self._step(self.model.embed_reference(ref_tokens), None)
        self.last_frame, self.last_bucket = ref_tokens, 0  # frame 0 is the reference, clean
        self.ref_tokens = ref_tokens

    @torch.inference_mode()
    def generate_chunk(self, feats: ChunkFeatures) -> torch.Tensor:
        """Features of one chunk (B, 1, F, ·) → its frames' latent tokens (B, F, N, C)."""
        model, f = self.model, self.model.cfg.frames_per_chunk
        if len(self.chunk_lens) > self.window:
            self._evict_oldest_chunk()
        feats = feats.to(model.device, model.dtype)
        cond = model.embed_conditions(feats)[:, 0]  # (B, Lc, H)
        per_frame = model.embed_frame_conditions(feats)  # (B, 1, F, H) or None

        def frame_conds(j: int):
            return None if per_frame is None else per_frame[:, 0, j:j + 1]

        lc = cond.shape[1]
        slot = self._context(self.last_frame, self.last_bucket, frame_conds(0))
        blocks = torch.cat([torch.zeros(lc, dtype=torch.long), torch.ones(slot.shape[1], dtype=torch.long)])
        hidden = self._step(torch.cat([cond, slot], dim=1), blocks.to(model.device))[:, lc:]
        text = feats.text[:, 0]
        frames = [self._sample(hidden, text)]
        for j in range(1, f):
            hidden = self._step(self._context(frames[-1], self.context_bucket, frame_conds(j)), None)
            frames.append(self._sample(hidden, text))
        self.chunk_lens.append(lc + f * slot.shape[1])
        self.last_frame, self.last_bucket = frames[-1], self.context_bucket
        self.chunks_done += 1
        return torch.stack(frames, dim=1)

    def stream(self, ref_tokens: torch.Tensor, chunks: Iterable[ChunkFeatures]) -> Iterator[torch.Tensor]:
        """Yield each chunk's frames (B, F, N, C) as soon as they exist; `chunks` may be live."""
        self.start(ref_tokens)
        for feats in chunks:
            yield self.generate_chunk(feats)


# ---- the same thing, recomputed without a cache (for tests and debugging) ----------------------


@torch.no_grad()
def reference_window_hidden(model: MidasModel, ref_tokens: torch.Tensor, chunk_feats: list[ChunkFeatures],
                            context_embeds: list[torch.Tensor], window: int) -> torch.Tensor:
    """Hidden states of every frame slot, recomputed from scratch with the engine's semantics.

    context_embeds[k]: (B, F, N, H) embedded slot inputs of chunk k (as the engine fed them).
    Each chunk gets its own copy of the reference, placed right before the first chunk of its
    window and visible to that chunk only, so one full forward pass reproduces what the cache
    saw. Returns (B, K*F, N, H).
    """
    cfg = model.cfg
    n, f = cfg.tokens_per_frame, cfg.frames_per_chunk
    b = ref_tokens.shape[0]
    ref = model.embed_reference(ref_tokens.to(model.dtype))
    pieces, pos, owner, chunk_of, block = [], [], [], [], []
    for k, feats in enumerate(chunk_feats):
        cond = model.embed_conditions(feats)[:, 0]
        lc = cond.shape[1]
        chunk_len = lc + f * n
        first = max(0, k - window)
        pieces.append(ref)
        pos.append(first * chunk_len + torch.arange(n))
        owner += [k] * n
        chunk_of += [-1] * n
        block += [0] * n
        pieces.append(torch.cat([cond, context_embeds[k].flatten(1, 2)], dim=1))
        pos.append(n + k * chunk_len + torch.arange(chunk_len))
        owner += [k] * chunk_len
        chunk_of += [k] * chunk_len
        block += [0] * lc + [1 + j for j in range(f) for _ in range(n)]
    seq = torch.cat(pieces, dim=1)
    pos = torch.cat(pos)[None].expand(b, -1).to(seq.device)
    owner, chunk_of, block = (torch.tensor(x, device=seq.device) for x in (owner, chunk_of, block))
    is_ref = chunk_of < 0
    cq, ck = chunk_of[:, None], chunk_of[None, :]
    sees_ref_copy = is_ref[None, :] & (owner[None, :] == owner[:, None])
    in_window = ~is_ref[:, None] & ~is_ref[None, :] & (ck >= cq - window) & (
        (ck < cq) | ((ck == cq) & (block[None, :] <= block[:, None])))
    mask = to_additive(sees_ref_copy | in_window, seq.dtype)
    hidden = model.backbone(seq, mask=mask, position_ids=pos)
    slots = (~is_ref) & (block > 0)
    return hidden[:, slots].reshape(b, -1, n, hidden.shape[-1])
