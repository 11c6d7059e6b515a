"""Self-resampled history (Resampling Forcing, arXiv 2512.15702): train on the model's own frames.

Teacher forcing only ever shows the model true context frames, where copying the previous
frame is almost free; a rollout feeds it its own, slightly wrong frames, and the error
compounds (exposure bias). Here the history of a training sequence is re-made by the model
before the loss: each true frame is noised to a level t_s ~ LogitNormal(0, 1) bent by `shift`
(< 1 favours light noise), then denoised by the current model conditioned on the history it
re-made so far, with gradients detached. The plain flow loss then applies on the true targets,
so the model learns to pull a drifting history back to the frame the conditions call for.

A chunk-causal model re-makes all frames of a sequence in one pass given a history, so the
autoregressive re-making is done in `passes` parallel passes: after p passes the first p frames
are exactly what frame-by-frame resampling would give, and later frames carry p generations of
the model's error (a rollout's errors compound the same way). The re-made context gets the
inference noise bucket, as generated context does at inference.
"""

from __future__ import annotations

import torch

from midas_cli.model.midas import ChunkFeatures, MidasModel


def resample_levels(shape, shift: float, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """t_s per frame: sigmoid(N(0, 1)), then SD3's shift t' = s·t / (1 + (s − 1)·t)."""
    t = torch.sigmoid(torch.randn(shape, device=device, generator=generator))
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def resample_history(model: MidasModel, ref_tokens: torch.Tensor, frames: torch.Tensor, previous: torch.Tensor,
                     feats: ChunkFeatures, passes: int = 2, shift: float = 0.6,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The context frames of a sequence, re-made by the model itself.

    frames (B, T, N, C): the true frames; previous (B, T, N, C): slot t's true input (frame t−1;
    slot 0's is the reference or the frame before the window, kept as it is). Returns a new
    `previous` whose slots 1..T−1 hold the model's re-made frames 0..T−2.
    """
    was_training = model.training
    model.eval()
    b, t = frames.shape[:2]
    steps = model.cfg.head.steps
    bucket = model.noise.bucket_for(model.cfg.noise.inference_sigma)
    buckets = torch.full((b, t), bucket, dtype=torch.long, device=frames.device)
    buckets[:, 0] = 0  # slot 0 keeps its true input, clean
    x0 = frames.flatten(0, 1)  # (B*T, N, C)
    # every draw is made once, so each pass re-makes a frame from the same noise and the
    # passes converge to the frame-by-frame result instead of re-rolling every frame
    context_eps = torch.randn(previous.shape, device=frames.device, generator=generator, dtype=frames.dtype)
    t_s = resample_levels((b * t,), shift, frames.device, generator).to(x0.dtype)
    eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    start = (1 - t_s)[:, None, None] * x0 + t_s[:, None, None] * eps
    context = previous
    for _ in range(passes):
        noisy = model.noise.corrupt(context, buckets, eps=context_eps)
        cond = model.slot_hidden(ref_tokens, noisy, feats, buckets)
        cond = model.head_condition(cond, model.slot_texts(feats)).flatten(0, 1)
        x = start
        for i in range(steps):  # Euler from t_s to 0 in the head's inference step count
            x = x - (t_s / steps)[:, None, None] * model.head(x, t_s * (1 - i / steps), cond.to(x0.dtype))
        context = torch.cat([previous[:, :1], x.view_as(frames)[:, :-1]], dim=1)
    model.train(was_training)
    return context
