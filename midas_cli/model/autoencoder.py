"""Frames ⇄ tokens through a deep-compression autoencoder (diffusers `AutoencoderDC`).

A frame (B, 3, H, W) in [-1, 1] becomes a latent (B, C, H/r, W/r), multiplied by the config's
`scaling_factor` so it has roughly unit variance, then cut into p × p patches (`patch_size`, 1 by
default) and flattened row-major into N = (H/rp)(W/rp) tokens of C·p² channels. Decoding is frame by frame (no temporal layers), which is what lets the
streaming engine hand each frame to ffmpeg as soon as it exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from midas_cli.model.config import AutoencoderConfig


def build_dcae(cfg: AutoencoderConfig, pretrained_path: str | None = None, **load_kwargs):
    """An `AutoencoderDC` from a diffusers folder / Hub id, or built from `cfg.architecture`.

    A local folder is checked first (`check_dcae_folder`), so a corrupt one is a MidasError naming
    the file; whatever else the load raises is a MidasError naming the folder or Hub id.
    """
    from diffusers import AutoencoderDC

    from midas_cli.errors import MidasError
    from midas_cli.model.weights import HINT, quiet_hf_logs, reason

    if pretrained_path is not None:
        if Path(pretrained_path).is_dir():
            check_dcae_folder(pretrained_path)
        # low_cpu_mem_usage needs `accelerate`; without it diffusers prints a warning on every load
        load_kwargs.setdefault("low_cpu_mem_usage", False)
        try:
            with quiet_hf_logs():
                return AutoencoderDC.from_pretrained(pretrained_path, **load_kwargs)
        except MidasError:
            raise
        except Exception as e:
            raise MidasError(f"{pretrained_path}: cannot load the autoencoder ({reason(e)}); {HINT}") from e
    return AutoencoderDC(**cfg.architecture)


def check_dcae_folder(folder: str | Path) -> None:
    """A local diffusers AutoencoderDC folder: config.json builds an AutoencoderDC (on the meta device,
    no memory), and the weights file holds exactly its tensors with their shapes. Reads headers only."""
    from diffusers import AutoencoderDC

    from midas_cli.errors import MidasError
    from midas_cli.model.weights import HINT, check_shapes, read_json_object, reason, safetensors_shapes

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise MidasError(f"{folder}: not an autoencoder folder (no config.json); {HINT}")
    config = read_json_object(config_path)
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in AutoencoderDC.from_config(config).state_dict().items()}
    except Exception as e:
        raise MidasError(f"{config_path}: not an AutoencoderDC config ({reason(e)}); {HINT}") from None
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise MidasError(f"{folder}: diffusion_pytorch_model.safetensors is missing; {HINT}")
    found: dict = {}
    for f in files:
        found.update(safetensors_shapes(f))
    check_shapes(files[0] if len(files) == 1 else folder, found, expected, config_path.name)


class FrameAutoencoder(nn.Module):
    """Wraps an `AutoencoderDC`: images ⇄ scaled frame tokens."""

    def __init__(self, dcae: nn.Module, patch_size: int = 1):
        super().__init__()
        self.dcae = dcae
        self.patch_size = patch_size

    @property
    def scaling_factor(self) -> float:
        return float(self.dcae.config.scaling_factor)

    @property
    def compression(self) -> int:
        """Pixels per token side."""
        return int(self.dcae.spatial_compression_ratio) * self.patch_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → tokens (B, N, C), scaled."""
        latent = self.dcae.encode(images, return_dict=False)[0] * self.scaling_factor  # (B, C, h, w)
        if self.patch_size > 1:
            latent = F.pixel_unshuffle(latent, self.patch_size)  # (B, C·p², h/p, w/p)
        return latent.flatten(2).transpose(1, 2).contiguous()  # (B, N, C·p²)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, N, C) → images (B, 3, H, W) in [-1, 1] (not clamped)."""
        return self.dcae.decode(self.tokens_to_latent(tokens, grid), return_dict=False)[0]

    def tokens_to_latent(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, N, C) → the DC-AE's own latent (B, C', h, w), unscaled (`encode`'s inverse)."""
        h, w = grid
        latent = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
        if self.patch_size > 1:
            latent = F.pixel_shuffle(latent, self.patch_size)
        return latent / self.scaling_factor


def images_to_tensor(frames_uint8, device=None, dtype=torch.float32) -> torch.Tensor:
    """uint8 (B, H, W, 3) numpy/tensor → float (B, 3, H, W) in [-1, 1]."""
    if isinstance(frames_uint8, np.ndarray) and not frames_uint8.flags.writeable:
        frames_uint8 = frames_uint8.copy()  # read-only (np.frombuffer, PIL): torch would warn
    x = torch.as_tensor(frames_uint8, device=device)
    return (x.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0).contiguous()


def tensor_to_images(x: torch.Tensor):
    """float (B, 3, H, W) in [-1, 1] → uint8 numpy (B, H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
