"""Clock and sizes of the synthetic world, shared by every module that draws or sounds it.

The model runs at 12.5 video frames/s and 16 kHz audio (docs/formats.md), so one video frame
is exactly 80 ms = 1280 audio samples: frame ``t`` covers ``[t * 0.08, (t + 1) * 0.08)`` s.
Keeping the two clocks commensurate is what lets the ground truth say "the audio in frame
t's window determines its mouth shape" without any rounding.
"""

FPS = 12.5
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = 1280  # SAMPLE_RATE / FPS
FRAME_SECONDS = 1.0 / FPS  # 0.08
CHUNK_FRAMES = 6  # 480 ms chunks: prompt changes are placed on chunk starts
DEFAULT_SIZE = 128

MOUTH_NAMES = ("closed", "open", "round", "wide")  # classes 0..3
N_MOUTH = len(MOUTH_NAMES)


def n_frames(seconds: float) -> int:
    """Number of video frames in a clip of ``seconds`` (rounded to the nearest frame)."""
    return max(1, int(round(seconds * FPS)))
