"""Frames ⇄ DC-AE frame latents in safetensors (what `midas encode-ae` / `decode-ae` run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from midas_cli.devices import pick_device
from midas_cli.errors import MidasError

BATCH = 16


def _parse_size(size: str | None, ratio: int) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise MidasError(f"--size {size}: expected WIDTHxHEIGHT, e.g. 128x128") from None
    if w <= 0 or h <= 0 or w % ratio or h % ratio:
        raise MidasError(f"--size {size}: width and height must be positive multiples of {ratio}")
    return w, h


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def encode_frames(input: Path, out: Path, checkpoint: str | None = None, size: str | None = None,
                  device: str = "auto", report: bool = False) -> dict:
    """Encode a video, an image or a folder of images into `out` (safetensors). Returns metadata."""
    from safetensors.torch import save_file

    from midas_cli.console import progress_bar
    from midas_cli.media.video_in import probe_video, read_frames
    from midas_cli.model.autoencoder import images_to_tensor, tensor_to_images
    from midas_cli.model.checkpoint import load_model

    if out.suffix != ".safetensors":
        raise MidasError(f"{out}: the output must end in .safetensors")
    model = load_model(checkpoint, device=pick_device(device))
    ae, cfg = model.autoencoder, model.cfg
    w, h = _parse_size(size, ae.compression) or (cfg.autoencoder.width, cfg.autoencoder.height)
    fps = cfg.fps
    if input.is_file() and input.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        fps = probe_video(input).fps or fps
    latents, psnrs = [], []
    batch: list[np.ndarray] = []

    def flush():
        x = images_to_tensor(np.stack(batch), device=model.device, dtype=model.dtype)
        with torch.no_grad():
            z = ae.encode(x)
            latents.append(z.float().cpu())
            if report:
                rec = tensor_to_images(ae.decode(z, (h // ae.compression, w // ae.compression)))
                psnrs.extend(_psnr(a, b) for a, b in zip(batch, rec))
        batch.clear()

    with progress_bar() as bar:
        task = bar.add_task("encoding", total=None)
        for frame in read_frames(input, width=w, height=h):
            batch.append(frame)
            if len(batch) == BATCH:
                flush()
            bar.advance(task)
        if batch:
            flush()
    if not latents:
        raise MidasError(f"{input}: no frames found")
    z = torch.cat(latents)  # (T, N, C)
    meta = {"fps": str(fps), "width": str(w), "height": str(h), "grid": json.dumps([h // ae.compression, w // ae.compression]),
            "scaling_factor": str(ae.scaling_factor),
            "autoencoder": str(getattr(model, "checkpoint_path", checkpoint) or "demo"), "source": input.name}
    tmp = out.with_name(f".{out.name}.partial")
    try:
        save_file({"latents": z.contiguous()}, tmp, metadata=meta)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    result = {"frames": z.shape[0], "tokens_per_frame": z.shape[1], "channels": z.shape[2], **meta}
    if report:
        result["psnr_db"] = float(np.mean(psnrs))
    return result


def decode_latents(latents: Path, out: Path, checkpoint: str | None = None, device: str = "auto") -> int:
    from safetensors import safe_open

    from midas_cli.console import progress_bar
    from midas_cli.media.video_out import VideoWriter
    from midas_cli.model.autoencoder import tensor_to_images
    from midas_cli.model.checkpoint import load_model

    try:
        with safe_open(str(latents), "pt") as f:
            meta = f.metadata() or {}
            z = f.get_tensor("latents")
    except Exception as e:  # safetensors raises its own error types for bad files
        raise MidasError(f"{latents}: not a latents file from `midas encode-ae` ({type(e).__name__})") from None
    if z.dim() != 3 or "grid" not in meta:
        raise MidasError(f"{latents}: not a latents file from `midas encode-ae` (no grid metadata)")
    grid = tuple(json.loads(meta["grid"]))
    model = load_model(checkpoint, device=pick_device(device))
    w, h = int(meta["width"]), int(meta["height"])
    with VideoWriter(out, w, h, fps=float(meta.get("fps", model.cfg.fps))) as writer, progress_bar() as bar:
        task = bar.add_task("decoding", total=z.shape[0])
        for i in range(0, z.shape[0], BATCH):
            with torch.no_grad():
                imgs = tensor_to_images(model.autoencoder.decode(z[i:i + BATCH].to(model.device, model.dtype), grid))
            for img in imgs:
                writer.write(img)
            bar.advance(task, len(imgs))
    return z.shape[0]
