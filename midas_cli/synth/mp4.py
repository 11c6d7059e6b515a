"""Write uint8 frames to an H.264 mp4 with the ffmpeg binary that imageio-ffmpeg ships.

Kept inside ``synth`` so the data generator does not depend on the media package's output
path (which muxes audio and streams from the engine); here we only need a near-lossless
video track (crf 12, yuv420p, even sizes) at exactly 12.5 fps.
"""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np

from midas_cli.errors import MidasError
from midas_cli.synth.constants import FPS


def write_mp4(path: Path, frames: np.ndarray, fps: float = FPS, crf: int = 12) -> None:
    """Encode frames (T, H, W, 3) uint8 as H.264 yuv420p at ``fps``."""
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise MidasError(f"{path}: H.264 yuv420p needs even frame sizes, got {W}x{H}")
    # a float: imageio-ffmpeg 0.5 (the oldest the package allows) asserts one, and later
    # versions turn it back into the same exact fraction (12.5 -> -r 25/2)
    writer = imageio_ffmpeg.write_frames(
        str(path), (W, H), fps=float(fps), codec="libx264",
        pix_fmt_out="yuv420p", quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart"])
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        writer.close()
