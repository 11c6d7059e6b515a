"""Who speaks when, and which vowel sounds in every frame: the clip's hidden "script".

The script is per video frame. Each frame of a speaker is either silent (pause or lip
closure such as m/b/p) or carries one vowel; the avatar's mouth class for the frame follows
from it (``MOUTH_OF_VOWEL``). Because the audio of frame t is synthesised from exactly this
entry, the mouth truth is a function of the sound inside the frame's 80 ms window: a model
has to hear it.

Turn taking (duplex): the clip alternates avatar turns and, optionally, listen turns in which
only the interlocutor speaks; during those frames the avatar is silent, keeps its mouth
closed and nods (``listening`` = True).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midas_cli.synth.constants import FPS

VOWELS = ("a", "e", "i", "o", "u")
VOWEL_P = (0.34, 0.17, 0.16, 0.17, 0.16)  # balances the three open mouth classes
SILENT = ""
MOUTH_OF_VOWEL = {SILENT: 0, "a": 1, "o": 2, "u": 2, "i": 3, "e": 3}


@dataclass(frozen=True)
class TurnConfig:
    """Turn lengths in seconds, and the silent gap between turns in frames."""

    avatar_turn_s: tuple[float, float] = (3.0, 9.0)
    listen_turn_s: tuple[float, float] = (1.5, 4.0)
    gap_frames: tuple[int, int] = (2, 6)
    lead_in_frames: tuple[int, int] = (1, 4)  # silence before the first word: frame 0 ~ ref


@dataclass
class Script:
    """Per-frame plan of both streams."""

    avatar: list[str]  # vowel or "" per frame
    avatar_burst: np.ndarray  # bool: plosive release at the start of this frame
    other: list[str]  # interlocutor vowel or "" per frame
    other_burst: np.ndarray
    listening: np.ndarray  # bool: inside a listen turn

    @property
    def mouth(self) -> np.ndarray:
        return np.array([MOUTH_OF_VOWEL[v] for v in self.avatar], dtype=np.int64)


def speak(rng: np.random.Generator, n: int, rate: float) -> tuple[list[str], np.ndarray]:
    """``n`` frames of speech: words of 1-4 syllables, closures, short and phrase pauses.

    ``rate`` > 1 means faster speech (shorter vowels, fewer long pauses).
    """
    frames: list[str] = []
    burst = np.zeros(n, dtype=bool)
    p_long = np.clip(np.array([0.45, 0.4, 0.15]) * [rate, 1.0, 1.0 / rate], 0.01, None)
    p_long = p_long / p_long.sum()
    words_in_phrase = int(rng.integers(3, 9))
    while len(frames) < n:
        for _ in range(int(rng.integers(1, 5))):  # syllables of one word
            closure = bool(rng.random() < 0.3 and frames and frames[-1] != SILENT)
            if closure:  # m/b/p: lips shut, no sound, released with a burst
                frames.append(SILENT)
            vowel = str(rng.choice(VOWELS, p=VOWEL_P))
            start = len(frames)
            frames.extend([vowel] * int(rng.choice([1, 2, 3], p=p_long)))
            if closure and start < n:
                burst[start] = True
        words_in_phrase -= 1
        if words_in_phrase <= 0:  # end of phrase: breath pause
            frames.extend([SILENT] * int(rng.integers(2, 7)))
            words_in_phrase = int(rng.integers(3, 9))
        elif rng.random() < 0.3:  # short pause between words
            frames.extend([SILENT] * int(rng.integers(1, 3)))
    frames = frames[:n]
    if frames:
        frames[-1] = SILENT  # turns end in silence
    return frames, burst


def make_script(rng: np.random.Generator, n_frames: int, rate: float, other_rate: float,
                with_listener: bool, cfg: TurnConfig = TurnConfig()) -> Script:
    """Plan a clip: lead-in silence, then avatar turns alternating with listen turns."""
    avatar = [SILENT] * n_frames
    other = [SILENT] * n_frames
    a_burst = np.zeros(n_frames, dtype=bool)
    o_burst = np.zeros(n_frames, dtype=bool)
    listening = np.zeros(n_frames, dtype=bool)
    f = int(rng.integers(*cfg.lead_in_frames, endpoint=True))
    avatar_turn = (not with_listener) or rng.random() < 0.7
    # Short clips get shorter turns (at most a third of the clip) so they still take turns.
    cap_s = max(1.0, n_frames / FPS / 3)
    while f < n_frames:
        lo, hi = cfg.avatar_turn_s if avatar_turn else cfg.listen_turn_s
        hi = min(hi, cap_s)
        lo = min(lo, hi)
        length = min(int(rng.uniform(lo, hi) * FPS), n_frames - f)
        words, burst = speak(rng, length, rate if avatar_turn else other_rate)
        if avatar_turn:
            avatar[f:f + length] = words
            a_burst[f:f + length] = burst
        else:
            other[f:f + length] = words
            o_burst[f:f + length] = burst
            listening[f:f + length] = True
        f += length + int(rng.integers(*cfg.gap_frames, endpoint=True))
        avatar_turn = (not with_listener) or (not avatar_turn)
    return Script(avatar, a_burst, other, o_burst, listening)
