"""Video out: frames streamed into the ffmpeg binary that imageio-ffmpeg ships.

H.264 `yuv420p` (plays in any player; odd sizes are padded to even), `+faststart`, AAC audio
muxed in with `-shortest`. Frames go to ffmpeg as they are written, so memory does not grow
with the clip. Output goes to a temporary file beside the target and is renamed onto it only
when everything succeeded; on any error or Ctrl-C ffmpeg is killed, the temporary file is
removed and a file already at the target is left as it was. A path without `.mp4` (or
`png_folder=True`) writes a folder of PNG frames under the same rule.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError


class VideoWriter:
    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 12.5,
                 audio_path: str | os.PathLike | None = None, png_folder: bool | None = None, crf: int = 18):
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.png = png_folder if png_folder is not None else self.path.suffix.lower() != ".mp4"
        self.crf = crf
        self.frames_written = 0
        self._proc = None
        self._stderr: deque[str] = deque(maxlen=20)
        suffix = "" if self.png else ".mp4"
        self.tmp = self.path.with_name(f".{self.path.name}.partial{suffix}")

    # ---- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        if not self.path.parent.exists():
            raise MidasError(f"{self.path}: folder {self.path.parent} does not exist")
        self._cleanup_tmp()
        if self.png:
            self.tmp.mkdir(parents=True)
            return
        import ffmpeg
        import imageio_ffmpeg

        pad_w, pad_h = self.width + self.width % 2, self.height + self.height % 2
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{self.width}x{self.height}",
                             framerate=f"{self.fps.numerator}/{self.fps.denominator}")
        if (pad_w, pad_h) != (self.width, self.height):
            video = video.filter("pad", pad_w, pad_h, 0, 0)
        streams = [video]
        kwargs = dict(vcodec="libx264", pix_fmt="yuv420p", crf=self.crf, preset="veryfast", movflags="+faststart",
                      loglevel="error", f="mp4")
        if self.audio_path is not None:
            streams.append(ffmpeg.input(str(self.audio_path)).audio)
            kwargs.update(acodec="aac", shortest=None)
        cmd = ffmpeg.output(*streams, str(self.tmp), **kwargs).overwrite_output().compile(
            cmd=imageio_ffmpeg.get_ffmpeg_exe())
        import subprocess

        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in iter(self._proc.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _ffmpeg_error(self, what: str) -> MidasError:
        detail = " | ".join(x for x in self._stderr if x) or "no message"
        return MidasError(f"{self.path}: ffmpeg {what} ({detail})")

    # ---- writing -------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame.shape}, expected {(self.height, self.width, 3)}")
        if self.png:
            from PIL import Image

            Image.fromarray(frame).save(self.tmp / f"{self.frames_written:06d}.png")
        else:
            try:
                self._proc.stdin.write(frame.tobytes())
            except (BrokenPipeError, OSError):
                self._proc.wait()
                self._drain.join(timeout=5)
                raise self._ffmpeg_error("stopped while writing") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        try:
            if not self.png:
                self._proc.stdin.close()
                rc = self._proc.wait()
                self._drain.join(timeout=5)
                if rc != 0:
                    raise self._ffmpeg_error(f"failed with exit code {rc}")
                if self.frames_written == 0:
                    raise MidasError(f"{self.path}: no frames were written")
            if self.png and self.path.exists():
                old = self.path.with_name(f".{self.path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                self.path.rename(old)
                self.tmp.rename(self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, self.path)
        except BaseException:
            self._cleanup_tmp()
            raise

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial output; the target is untouched."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


def write_video(path, frames, fps: float = 12.5, audio_path=None) -> int:
    frames = list(frames)
    if not frames:
        raise MidasError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps, audio_path) as writer:
        for f in frames:
            writer.write(f)
    return writer.frames_written
