"""Is an input usable? Size, rate, durations and audio, or the one reason it is not.

A rejection is data, not an error: `prepare` records it in `rejected.jsonl` and goes on with
the next input. What is *accepted* and normalised later rather than rejected: any frame rate,
variable ones included (ffmpeg resamples by timestamp to 12.5 fps), any audio rate or channel
count (→ 16 kHz mono), portrait or rotated phone video (ffmpeg applies the rotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from midas_cli.errors import MidasError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")


class Rejected(Exception):
    """An input, or a stretch of one, that cannot become training clips; `reason` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Source:
    path: Path
    width: int
    height: int
    fps: float
    seconds: float
    audio_seconds: float


def probe_source(path: Path, min_seconds: float) -> Source:
    """The input's facts, or `Rejected` with one of: corrupt, no audio, too short."""
    from midas_cli.media.video_in import probe_video

    try:
        info = probe_video(path)
    except MidasError as e:
        raise Rejected("corrupt or not a video", str(e).split(": ", 1)[-1]) from None
    if not info.has_audio or not info.audio_duration:
        raise Rejected("no audio", "the file has no audio track" if not info.has_audio else "the audio track is empty")
    if info.n_frames < 1 or info.duration <= 0:
        raise Rejected("corrupt or not a video", "no video frames decode")
    seconds = min(info.duration, info.audio_duration)
    if seconds < min_seconds:
        raise Rejected("too short", f"{seconds:.2f} s of audio and video < {min_seconds:g} s")
    return Source(path, info.width, info.height, info.fps, seconds, info.audio_duration)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders searched recursively for video files; sorted, de-duplicated."""
    out = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.exists():
            out.append(p)
        else:
            raise MidasError(f"{p}: no such file or folder")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
