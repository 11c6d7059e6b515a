"""Flow matching: the training loss and the few-step Euler sampler (kept apart from the head).

x_t = (1 - t)·x_0 + t·ε, and the head predicts the velocity v = ε - x_0. Sampling integrates
from t = 1 (pure noise) to t = 0 in `steps` Euler steps (4 by default), on a time grid that
`shift` > 1 bends towards high noise, as in SD3 / diffusers' FlowMatchEulerDiscreteScheduler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def time_grid(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """(steps + 1,) times from 1 to 0."""
    t = torch.linspace(1.0, 0.0, steps + 1, device=device)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t


def flow_matching_loss(head, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """x0 (B, N, C) clean frame tokens, cond (B, N, H) → MSE between predicted and true velocity."""
    b = x0.shape[0]
    t = torch.rand(b, device=x0.device, generator=generator, dtype=torch.float32)
    eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    tt = t.to(x0.dtype)[:, None, None]
    x_t = (1 - tt) * x0 + tt * eps
    v = head(x_t, t, cond)
    return F.mse_loss(v.float(), (eps - x0).float(), reduction=reduction)


@torch.no_grad()
def euler_sample(head, cond: torch.Tensor, noise: torch.Tensor, steps: int = 4, shift: float = 1.0,
                 uncond: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """Integrate noise (B, N, C) to a frame, conditioned on cond (B, N, H).

    Classifier-free guidance: with `uncond` (B, N, H), the condition without the guided input,
    and `guidance` s ≠ 1, each step moves along v_u + s·(v_c − v_u), both velocities from one
    batched head pass; at s = 1 that is v_c, so only the conditional pass runs.
    """
    ts = time_grid(steps, shift, device=noise.device)
    guided = uncond is not None and guidance != 1.0
    c = torch.cat([cond, uncond]) if guided else cond
    if hasattr(head, "sampler"):  # time-only work batched over the steps (DiffusionHead)
        velocity = head.sampler(c, ts[:-1])
    else:
        def velocity(x_t, i):
            return head(x_t, ts[i].expand(x_t.shape[0]), c)
    dts = (ts[1:] - ts[:-1]).to(noise.dtype).tolist()
    x = noise
    for i in range(steps):
        if guided:
            v_c, v_u = velocity(torch.cat([x, x]), i).chunk(2)
            v = v_u + guidance * (v_c - v_u)
        else:
            v = velocity(x, i)
        x = x + dts[i] * v
    return x
