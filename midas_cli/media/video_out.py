"""Video out: frames streamed into the ffmpeg binary that imageio-ffmpeg ships, or PNG files.

- `.mp4`: H.264 `yuv420p` (plays in any player), `+faststart` (starts before it is fully
  downloaded), AAC audio muxed in with `-shortest` when an audio file is given. Frames of odd
  width/height are padded (black, right/bottom) to even, as yuv420p requires. Frames go to
  ffmpeg one at a time, so memory does not grow with the clip; ffmpeg's stderr is drained in
  a thread (no pipe deadlock) and its last lines are put in the error when it fails.
- Any path without a video suffix (or `png_folder=True`): a folder of `000000.png`, ... for
  `midas decode-ae`.
- Nothing half-written is ever left at the target: output goes to `.NAME.partial.mp4` (or the
  folder `.NAME.partial`) beside it and is renamed onto it only when closed without error; on
  any exception or Ctrl-C, ffmpeg is killed, the temporary output removed, and whatever was
  at the target before is left as it was. ffmpeg runs in its own session, so a Ctrl-C in the
  terminal reaches Python (which cleans up) and not ffmpeg.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.media.files import check_input_file

VIDEO_SUFFIXES = (".mp4", ".m4v")
OTHER_VIDEO_SUFFIXES = (".mov", ".mkv", ".avi", ".webm", ".gif", ".wmv", ".flv")
_PNG_NAME = re.compile(r"\d{6,}\.png")


def as_fraction(fps) -> Fraction:
    """12.5, "25/2", "12.5" or Fraction(25, 2) → Fraction(25, 2) (NTSC-style rates kept exact)."""
    try:
        value = Fraction(fps) if isinstance(fps, (int, str, Fraction)) else Fraction(float(fps))
    except (ValueError, TypeError, ZeroDivisionError):
        raise MidasError(f"fps: {fps!r} is not a frame rate") from None
    value = value.limit_denominator(1001)
    if value <= 0:
        raise MidasError(f"fps: must be positive, got {fps!r}")
    return value


def _is_our_png_folder(path: Path) -> bool:
    """An empty folder or one holding only frames we write may be replaced; anything else is kept."""
    return path.is_dir() and all(p.is_file() and _PNG_NAME.fullmatch(p.name) for p in path.iterdir())


class VideoWriter:
    """Context manager writing uint8 (height, width, 3) frames to an mp4 or a PNG folder.

    >>> with VideoWriter("out.mp4", 640, 384, fps=12.5, audio_path="talk.wav") as w:
    ...     for frame in frames:
    ...         w.write(frame)
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float | str | Fraction = 12.5,
                 audio_path: str | os.PathLike | None = None, png_folder: bool | None = None, crf: int = 18,
                 preset: str = "veryfast"):
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {width}×{height}")
        self.fps = as_fraction(fps)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        suffix = self.path.suffix.lower()
        if png_folder is None:
            if suffix in OTHER_VIDEO_SUFFIXES:
                raise MidasError(f"{self.path}: only .mp4 video output is supported "
                                 f"(or a folder name for PNG frames)")
            png_folder = suffix not in VIDEO_SUFFIXES
        self.png = bool(png_folder)
        if self.png and self.audio_path is not None:
            raise MidasError(f"{self.path}: a folder of PNG frames cannot hold audio (write an .mp4)")
        self.crf, self.preset = int(crf), preset
        self.tmp = self.path.with_name(f".{self.path.name}.partial" + ("" if self.png else ".mp4"))
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._drain: threading.Thread | None = None
        self._stderr: deque[str] = deque(maxlen=50)
        self._state = "new"  # new → open → closed

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):  # a writer dropped without close(): do not leave ffmpeg or a temp file behind
        try:
            if self._state == "open":
                self.abort()
        except Exception:
            pass

    def _check_target(self) -> None:
        if not self.path.parent.is_dir():
            raise MidasError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.png:
            if self.path.exists() and not self.path.is_dir():
                raise MidasError(f"{self.path}: exists and is not a folder (PNG frames go into a folder)")
            if self.path.is_dir() and not _is_our_png_folder(self.path):
                raise MidasError(f"{self.path}: folder exists and holds other files; "
                                 f"choose a new or empty folder for the PNG frames")
        elif self.path.is_dir():
            raise MidasError(f"{self.path}: is a folder, not a video file name")

    def open(self) -> None:
        if self._state != "new":
            raise RuntimeError("VideoWriter.open() called twice")
        self._check_target()
        if self.audio_path is not None:
            check_input_file(self.audio_path, "an audio file")
        self._remove_tmp()  # a leftover of a run that was killed
        self._state = "open"
        if self.png:
            self.tmp.mkdir()
            return
        try:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except (OSError, RuntimeError) as e:
            self._state = "closed"
            raise MidasError(f"{self.path}: cannot start ffmpeg ({e})") from None
        self._drain = threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True)
        self._drain.start()

    def command(self) -> list[str]:
        """The ffmpeg command line (built with ffmpeg-python)."""
        import ffmpeg
        import imageio_ffmpeg

        pad_w, pad_h = self.width + self.width % 2, self.height + self.height % 2
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{self.width}x{self.height}",
                             framerate=f"{self.fps.numerator}/{self.fps.denominator}")
        if (pad_w, pad_h) != (self.width, self.height):
            video = video.filter("pad", pad_w, pad_h, 0, 0, color="black")
        streams = [video]
        kwargs = dict(vcodec="libx264", pix_fmt="yuv420p", crf=self.crf, preset=self.preset,
                      movflags="+faststart", loglevel="error", f="mp4")
        if self.audio_path is not None:
            streams.append(ffmpeg.input(str(self.audio_path)).audio)
            kwargs.update(acodec="aac", shortest=None)
        return (ffmpeg.output(*streams, str(self.tmp), **kwargs).overwrite_output()
                .compile(cmd=imageio_ffmpeg.get_ffmpeg_exe()))

    def _read_stderr(self) -> None:
        stream = self._proc.stderr
        try:
            for line in iter(stream.readline, b""):
                text = line.decode(errors="replace").strip()
                if text:
                    self._stderr.append(text)
        except (OSError, ValueError):  # the pipe was closed under us by abort()
            pass

    def _ffmpeg_error(self, what: str) -> MidasError:
        if self._drain is not None:
            self._drain.join(timeout=5)
        tail = list(self._stderr)[-4:]
        detail = " | ".join(tail).replace(str(self.tmp), self.path.name) if tail else "no message from ffmpeg"
        return MidasError(f"{self.path}: ffmpeg {what} ({detail})")

    # ---- writing ---------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 (height, width, 3) RGB frame."""
        if self._state != "open":
            raise RuntimeError(f"VideoWriter.write() on a writer that is {self._state}")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise TypeError(f"frames must be uint8, got {frame.dtype}")
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame.shape}, expected {(self.height, self.width, 3)}")
        if self.png:
            from PIL import Image

            Image.fromarray(frame).save(self.tmp / f"{self.frames_written:06d}.png", compress_level=4)
        else:
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame).data)
            except (BrokenPipeError, ValueError, OSError):  # ffmpeg exited (ValueError: pipe closed)
                self._proc.wait()
                raise self._ffmpeg_error(f"stopped after {self.frames_written} frames") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the output and move it onto the target path (replacing what was there)."""
        if self._state == "closed":
            return
        if self._state != "open":
            raise RuntimeError("VideoWriter.close() before open()")
        try:
            if self.frames_written == 0:
                raise MidasError(f"{self.path}: no frames were written")
            if not self.png:
                try:
                    self._proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass  # ffmpeg already exited; its return code says why
                rc = self._proc.wait()
                if self._drain is not None:
                    self._drain.join(timeout=5)
                if rc != 0:
                    raise self._ffmpeg_error(f"failed with exit code {rc}")
                os.replace(self.tmp, self.path)
            else:
                self._replace_folder()
            self._state = "closed"
        except BaseException:
            self.abort()
            raise

    def _replace_folder(self) -> None:
        if not self.path.exists():
            self.tmp.rename(self.path)
            return
        self._check_target()  # still only our frames, or empty
        old = self.path.with_name(f".{self.path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        self.path.rename(old)
        try:
            self.tmp.rename(self.path)
        except BaseException:
            old.rename(self.path)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Kill ffmpeg and remove the temporary output; the target path is left untouched."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self._drain is not None:
                self._drain.join(timeout=2)
            for pipe in (proc.stdin, proc.stderr):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
        self._remove_tmp()
        self._state = "closed"

    def _remove_tmp(self) -> None:
        if self.tmp.is_dir() and not self.tmp.is_symlink():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float | str | Fraction = 12.5,
                audio_path: str | os.PathLike | None = None, png_folder: bool | None = None) -> int:
    """Write an iterable of uint8 (H, W, 3) frames (size taken from the first); returns the count."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise MidasError(f"{path}: no frames to write")
    h, w = np.asarray(first).shape[:2]
    with VideoWriter(path, w, h, fps, audio_path, png_folder=png_folder) as writer:
        writer.write(first)
        for frame in it:
            writer.write(frame)
    return writer.frames_written
