"""Frame metrics: PSNR and SSIM per frame, and their per-second averages.

PSNR is capped at ``PSNR_CAP`` = 50 dB (identical frames would be infinite), so means and
the drift (first fifth minus last fifth) stay finite and are not dominated by the few frames a
generator happens to get exactly right (a held pose in a pause): a perfect generator scores
50 dB, drift 0.
SSIM is the standard Gaussian-window SSIM (11 x 11, sigma 1.5, K1 0.01, K2 0.03) per RGB
channel on [0, 1], averaged over channels and valid window positions; it matches
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=2)`` (checked: 0.943552 vs 0.943553).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from midas_cli.synth.constants import FPS

PSNR_CAP = 50.0  # dB; beyond this frames are indistinguishable, and means stay meaningful


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 (T, H, W, 3) videos, capped at PSNR_CAP."""
    diff = a.astype(np.float32) - b.astype(np.float32)
    mse = (diff**2).reshape(len(a), -1).mean(1) / 255.0**2
    with np.errstate(divide="ignore"):
        psnr = -10.0 * np.log10(np.maximum(mse, 0.0))
    return np.minimum(psnr, PSNR_CAP)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2).float() ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


@torch.no_grad()
def ssim_frames(a: np.ndarray, b: np.ndarray, batch: int = 64) -> np.ndarray:
    """Per-frame SSIM of uint8 (T, H, W, 3) videos."""
    win = _gaussian_window()
    c1, c2 = 0.01**2, 0.03**2
    out = []
    for i in range(0, len(a), batch):
        x = torch.tensor(np.asarray(a[i:i + batch])).permute(0, 3, 1, 2).float() / 255
        y = torch.tensor(np.asarray(b[i:i + batch])).permute(0, 3, 1, 2).float() / 255

        def blur(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, win, groups=3)

        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out.append(s.mean((1, 2, 3)))
    return torch.cat(out).numpy() if out else np.zeros(0)


def per_second(values: np.ndarray, fps: float = FPS) -> list[float]:
    """Mean of per-frame ``values`` over each second (frame t is in second floor(t / fps))."""
    sec = np.floor(np.arange(len(values)) / fps).astype(int)
    if not len(values):
        return []
    return [float(values[sec == s].mean()) for s in range(int(sec.max()) + 1)]
