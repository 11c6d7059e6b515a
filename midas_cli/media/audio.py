"""Audio in: any common file → 16 kHz mono float32 in [-1, 1]; and 16-bit WAV out.

libsndfile (soundfile) reads wav, flac, ogg and mp3 at any rate and bit depth (8- to 32-bit
int, float); anything it cannot read (m4a, opus in mp4, ...) is decoded by the ffmpeg binary
that imageio-ffmpeg ships. Channels are averaged; resampling is librosa's (soxr_hq).
Silence is a valid input; a file with no samples is not. Errors name the file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.media.files import check_input_file, last_line

SAMPLE_RATE = 16000


def _read_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # ints scaled to [-1, 1)
    return data.mean(axis=1, dtype=np.float32), int(rate)


def _read_with_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream to mono float32 at `sample_rate`; raises RuntimeError(reason)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
           "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(last_line(proc.stderr.decode(errors="replace"), "unknown format", path))
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at `sample_rate` (default 16 kHz)."""
    path = check_input_file(path, "an audio file")
    try:
        audio, rate = _read_with_soundfile(path)
    except Exception as sf_error:  # libsndfile can't read it: let ffmpeg try before giving up
        try:
            audio, rate = _read_with_ffmpeg(path, sample_rate), sample_rate
        except Exception as ff_error:
            sf_msg = str(sf_error).replace(f"Error opening {str(path)!r}: ", "").strip().rstrip(".")
            sf_msg = sf_msg or type(sf_error).__name__
            raise MidasError(f"{path}: not an audio file (soundfile: {sf_msg}; ffmpeg: {ff_error})") from None
    if audio.size == 0:
        raise MidasError(f"{path}: the audio has no samples (zero length)")
    if not np.isfinite(audio).all():
        raise MidasError(f"{path}: the audio contains NaN or infinite samples")
    if rate != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV (mono (n,) or (n, channels)) via a temporary file and a rename."""
    import soundfile as sf

    path = Path(path)
    if not path.parent.is_dir():
        raise MidasError(f"{path}: folder {path.parent} does not exist")
    audio = np.clip(np.nan_to_num(np.asarray(audio, np.float32)), -1.0, 1.0)
    tmp = path.with_name(f".{path.name}.partial.wav")
    try:
        sf.write(str(tmp), audio, int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise MidasError(f"{path}: cannot write ({getattr(e, 'strerror', None) or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
