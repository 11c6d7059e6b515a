"""Video in: frames from a video file, an image, or a folder of images; and a probe.

`read_frames` yields uint8 (H, W, 3) RGB frames, optionally resampled to a frame rate (videos)
and fitted to a size the same way as the reference photo (centre crop, then Lanczos). No
ffprobe ships with imageio-ffmpeg, so `probe_video` parses `ffmpeg -i`'s report and counts
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
from midas_cli.media.files import check_input_file, last_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # 0.0 when the file does not say
    n_frames: int
    duration: float  # seconds of video
    has_audio: bool
    audio_duration: float | None  # seconds of the first audio stream, None without audio
    video_codec: str  # "h264", ...
    audio_codec: str | None  # "aac", ...
    pix_fmt: str  # "yuv420p", ...


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _split_top(text: str) -> list[str]:
    """Split an ffmpeg stream description at commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*parts, cur.strip()]


_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio): (.*)$", re.MULTILINE)


def _media_duration(path: Path, stream: str) -> float | None:
    """Seconds of decoded media in `stream` ("a:0", "v:0"), from ffmpeg's -progress report."""
    proc = subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{stream}",
                           "-f", "null", "-progress", "pipe:1", "-"], capture_output=True, stdin=subprocess.DEVNULL)
    times = re.findall(r"out_time_us=(\d+)", proc.stdout.decode(errors="replace"))
    return int(times[-1]) / 1e6 if times else None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, rate, frame count, durations, codecs and pixel format of a video file."""
    import imageio_ffmpeg

    path = check_input_file(path, "a video file")
    report = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            stdin=subprocess.DEVNULL).stderr.decode(errors="replace")
    video = audio = None
    for kind, desc in _STREAM.findall(report):
        if kind == "Video" and video is None and "attached pic" not in desc:
            video = _split_top(desc)
        elif kind == "Audio" and audio is None:
            audio = _split_top(desc)
    if "Input #0" not in report:
        raise MidasError(f"{path}: not a video file (ffmpeg: {last_line(report, 'unknown format', path)})")
    if video is None:
        raise MidasError(f"{path}: not a video file (no video stream)")
    size = next((m for m in (re.search(r"\b(\d+)x(\d+)\b", p) for p in video[1:]) if m), None)
    if size is None:
        raise MidasError(f"{path}: not a video file (ffmpeg reports no frame size)")
    rate = next((m for m in (re.search(r"^([\d.]+)(k?) (?:fps|tbr)$", p) for p in video) if m), None)
    fps = float(rate.group(1)) * (1000 if rate and rate.group(2) else 1) if rate else 0.0
    try:
        n_frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, ValueError) as e:
        raise MidasError(f"{path}: cannot read the video frames ({last_line(str(e), 'no frames', path)})") from None
    return VideoInfo(width=int(size.group(1)), height=int(size.group(2)), fps=fps, n_frames=int(n_frames),
                     duration=float(secs), has_audio=audio is not None,
                     audio_duration=_media_duration(path, "a:0") if audio is not None else None,
                     video_codec=video[0].split()[0], audio_codec=audio[0].split()[0] if audio else None,
                     pix_fmt=video[1].split("(")[0].strip() if len(video) > 1 else "")


def _natural_key(p: Path):
    return [(0, int(s), "") if s.isdigit() else (1, 0, s.lower()) for s in re.split(r"(\d+)", p.name) if s]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The images in a folder, in natural name order (frame2 before frame10); hidden files skipped."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=_natural_key)


def read_frames(path: str | os.PathLike, width: int | None = None, height: int | None = None,
                fps: float | None = None) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) frames from a video file, an image file (one frame) or a folder of images.

    With `width` and `height` every frame is fitted to that size (centre crop + Lanczos, as
    `load_reference`); without them a folder's frames take the first image's size. `fps`
    resamples a video (frames dropped or repeated by ffmpeg); it is ignored for images.
    Problems with the input (missing, not a video, ...) raise a MidasError at the call.
    """
    if (width is None) != (height is None):
        raise ValueError("give both width and height, or neither")
    path = Path(path)
    if not path.exists():
        raise MidasError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise MidasError(f"{path}: no images in the folder ({', '.join(IMAGE_SUFFIXES)})")
        return _read_images(files, width, height)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_images([path], width, height)
    return _read_video(path, width, height, fps)


def _read_images(files: list[Path], width, height) -> Iterator[np.ndarray]:
    from midas_cli.media.image import fit_to, open_rgb

    first = open_rgb(files[0])  # fail at the call, not at the first frame
    if width is None:
        width, height = first.size

    def frames():
        yield np.asarray(fit_to(first, width, height), dtype=np.uint8)
        for f in files[1:]:
            yield np.asarray(fit_to(open_rgb(f), width, height), dtype=np.uint8)

    return frames()


def _read_video(path: Path, width, height, fps) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    from midas_cli.media.image import fit_array

    check_input_file(path, "a video file")
    params = []
    if fps is not None:
        from midas_cli.media.video_out import as_fraction

        rate = as_fraction(fps)
        params = ["-r", f"{rate.numerator}/{rate.denominator}"]
    reader = imageio_ffmpeg.read_frames(str(path), output_params=params)
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        reader.close()
        raise MidasError(f"{path}: not a readable video ({_reason(e, path)})") from None
    w, h = meta["size"]

    def frames():
        try:
            for raw in reader:
                frame = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
                yield frame if width is None else fit_array(frame, width, height)
        except (RuntimeError, OSError, ValueError) as e:
            raise MidasError(f"{path}: error while decoding the video ({_reason(e, path)})") from None
        finally:
            reader.close()

    return frames()


def _reason(e: BaseException, path: Path) -> str:
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("===")]
    # ffmpeg's report ends with its error; imageio adds its own first line
    useful = [ln for ln in lines if "Invalid data" in ln or "Error" in ln or "error" in ln]
    return last_line("\n".join(useful or lines), "no frames", path)
