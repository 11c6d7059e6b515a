"""Audio in: any common file → 16 kHz mono float32, and WAV out.

libsndfile (soundfile) reads wav, flac, ogg and mp3 at any bit depth; anything it cannot read
is decoded through the ffmpeg binary that imageio-ffmpeg ships. Resampling is librosa's
(soxr). Errors name the file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError

SAMPLE_RATE = 16000


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MidasError(f"{path}: no such file")
    if path.is_dir():
        raise MidasError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise MidasError(f"{path}: empty file")
    if not os.access(path, os.R_OK):
        raise MidasError(f"{path}: not readable (permission denied)")


def _decode_with_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
           "-ar", str(sample_rate), "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["unknown format"])[-1]
        raise MidasError(f"{path}: not an audio file ({last})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at `sample_rate`; silence is fine, no samples is not."""
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        audio, rate = _decode_with_ffmpeg(path, sample_rate), sample_rate
    if audio.size == 0:
        raise MidasError(f"{path}: the audio has no samples")
    if not np.isfinite(audio).all():
        raise MidasError(f"{path}: the audio contains NaN or infinite samples")
    if rate != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written to a temporary file and renamed."""
    import soundfile as sf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial.wav")
    try:
        sf.write(str(tmp), np.clip(np.asarray(audio, np.float32), -1, 1), sample_rate, subtype="PCM_16")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
