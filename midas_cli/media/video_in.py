"""Video in: frames from a video file, an image, or a folder of images; and a probe.

No ffprobe ships with imageio-ffmpeg, so `probe_video` parses `ffmpeg -i`'s report and counts
frames with `imageio_ffmpeg.count_frames_and_secs`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    n_frames: int
    duration: float
    has_audio: bool
    audio_duration: float | None
    video_codec: str
    audio_codec: str | None
    pix_fmt: str


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise MidasError(f"{path}: no such file")
    report = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True).stderr.decode(
        errors="replace")
    v = re.search(r"Stream #\S+.*?: Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)", report)
    if v is None:
        raise MidasError(f"{path}: not a video file (ffmpeg found no video stream)")
    fps_m = re.search(r"([\d.]+) fps", report)
    a = re.search(r"Stream #\S+.*?: Audio: (\w+)", report)
    try:
        n_frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except RuntimeError as e:
        raise MidasError(f"{path}: cannot count frames ({e})") from None
    audio_duration = None
    if a is not None:
        out = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
                             capture_output=True).stderr.decode(errors="replace")
        times = re.findall(r"time=(\d+):(\d+):([\d.]+)", out)
        if times:
            h, m, s = times[-1]
            audio_duration = int(h) * 3600 + int(m) * 60 + float(s)
    return VideoInfo(width=int(v.group(3)), height=int(v.group(4)), fps=float(fps_m.group(1)) if fps_m else 0.0,
                     n_frames=int(n_frames), duration=float(secs), has_audio=a is not None,
                     audio_duration=audio_duration, video_codec=v.group(1), audio_codec=a.group(1) if a else None,
                     pix_fmt=v.group(2))


def _fit(frame: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    if width is None or height is None or frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    from midas_cli.media.image import fit_to

    return np.asarray(fit_to(Image.fromarray(frame), width, height), dtype=np.uint8)


def read_frames(path: str | os.PathLike, width: int | None = None, height: int | None = None,
                fps: float | None = None) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) frames, fitted to width×height (centre crop + resize) when both are given."""
    path = Path(path)
    if not path.exists():
        raise MidasError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MidasError(f"{path}: no images in the folder")
        yield from _read_images(files, width, height)
        return
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield from _read_images([path], width, height)
        return
    yield from _read_video(path, width, height, fps)


def _read_images(files, width, height):
    from midas_cli.media.image import load_reference

    for f in files:
        if width is None or height is None:
            from PIL import Image

            with Image.open(f) as img:
                w, h = img.size
            yield load_reference(f, w, h)
        else:
            yield load_reference(f, width, height)


def _read_video(path: Path, width, height, fps):
    import imageio_ffmpeg

    if path.stat().st_size == 0:
        raise MidasError(f"{path}: empty file")
    params = ["-r", str(fps)] if fps else None
    try:
        reader = imageio_ffmpeg.read_frames(str(path), output_params=params)
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        raise MidasError(f"{path}: not a readable video ({str(e).strip().splitlines()[-1] if str(e) else 'no frames'})") from None
    w, h = meta["size"]
    for raw in reader:
        frame = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
        yield _fit(frame, width, height)
