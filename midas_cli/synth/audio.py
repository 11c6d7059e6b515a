"""Speech-like audio by source-filter synthesis, one voice per integer id.

Source: a Rosenberg glottal pulse train at the voice's pitch (with slow intonation, phrase
declination and a little jitter) plus aspiration noise. Filter: a cascade of three formant
resonators (F1, F2, F3) whose targets follow the vowel of each frame, scaled by the voice's
vocal-tract length. Silent frames (pauses, lip closures) are exactly silent apart from a
-70 dB room-noise floor; a plosive release adds a 6 ms noise burst at the start of the
following vowel. Gain ramps sit inside the voiced frames, so a closed-mouth frame never
carries speech energy and an open-mouth frame always does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from midas_cli.synth.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from midas_cli.synth.script import SILENT

N_VOICES = 1000

# Formant targets (Hz) of an adult male vocal tract (Peterson & Barney style averages).
FORMANTS = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (300.0, 2250.0, 3000.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (320.0, 900.0, 2240.0),
}
BANDWIDTHS = (80.0, 110.0, 160.0)
BLOCK = 160  # 10 ms: formants are updated per block
NOISE_FLOOR = 3e-4


@dataclass(frozen=True)
class Voice:
    """A speaker: pitch, vocal-tract scale, speaking rate and timbre."""

    id: int
    pitch_hz: float  # 80..300
    formant_scale: float  # 1.0 = adult male; shorter tracts have higher formants
    rate: float  # speaking rate factor (>1 faster)
    breathiness: float  # aspiration noise mix
    jitter: float  # cycle-to-cycle pitch perturbation (fraction)
    level: float  # peak amplitude of the voice
    open_quotient: float  # glottal open phase fraction (timbre)


@lru_cache(maxsize=4096)
def make_voice(voice_id: int) -> Voice:
    """Derive voice ``voice_id`` deterministically (ids with id % 10 == 9 are test voices)."""
    rng = np.random.default_rng(np.random.SeedSequence([0x70, int(voice_id)]))
    pitch = float(np.exp(rng.uniform(np.log(80.0), np.log(300.0))))
    # Higher voices tend to have shorter vocal tracts: correlate, with spread.
    scale = float(np.clip(0.95 + 0.25 * (np.log(pitch / 80.0) / np.log(300 / 80.0))
                          + rng.normal(0, 0.04), 0.88, 1.25))
    return Voice(id=int(voice_id), pitch_hz=pitch, formant_scale=scale,
                 rate=float(rng.uniform(0.7, 1.4)), breathiness=float(rng.uniform(0.0, 0.25)),
                 jitter=float(rng.uniform(0.002, 0.012)), level=float(rng.uniform(0.25, 0.5)),
                 open_quotient=float(rng.uniform(0.45, 0.7)))


def _glottal_source(rng: np.random.Generator, f0: np.ndarray, voice: Voice) -> np.ndarray:
    """Differentiated Rosenberg pulses at the per-sample pitch ``f0`` (Hz)."""
    f0 = f0 * (1.0 + voice.jitter * rng.standard_normal(len(f0)).cumsum()
               / np.sqrt(np.arange(1, len(f0) + 1)))
    phase = np.cumsum(f0 / SAMPLE_RATE) % 1.0
    tp, tn = voice.open_quotient * 0.7, voice.open_quotient * 0.3
    flow = np.where(phase < tp, 0.5 * (1 - np.cos(np.pi * phase / tp)),
                    np.where(phase < tp + tn, np.cos(0.5 * np.pi * (phase - tp) / tn), 0.0))
    return np.diff(flow, prepend=0.0) * 10.0


def _resonator(freq: float, bw: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bw / SAMPLE_RATE)
    a = np.array([1.0, -2.0 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r])
    return np.array([a.sum()]), a  # unity gain at DC


def _envelope(voiced: np.ndarray) -> np.ndarray:
    """Per-sample gain: 1 in voiced frames, 0 in silent ones; ramps stay inside voiced frames."""
    spf = SAMPLES_PER_FRAME
    env = np.repeat(voiced.astype(np.float64), spf)
    ramp_in = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 96))  # 6 ms
    ramp_out = 0.5 - 0.5 * np.cos(np.linspace(np.pi, 0, 160))  # 10 ms
    for f in np.flatnonzero(voiced):
        s = f * spf
        if f == 0 or not voiced[f - 1]:
            env[s:s + len(ramp_in)] *= ramp_in
        if f == len(voiced) - 1 or not voiced[f + 1]:
            env[s + spf - len(ramp_out):s + spf] *= ramp_out
    return env


def synthesize(rng: np.random.Generator, vowels: list[str], bursts: np.ndarray,
               voice: Voice) -> np.ndarray:
    """Audio (float32, 16 kHz, len(vowels) * 1280 samples) for a per-frame vowel plan."""
    n = len(vowels)
    n_samples = n * SAMPLES_PER_FRAME
    voiced = np.array([v != SILENT for v in vowels], dtype=bool)
    if not voiced.any():
        return (NOISE_FLOOR * rng.standard_normal(n_samples)).astype(np.float32)

    # Intonation: slow wander + declination that resets after each pause.
    t = np.arange(n_samples) / SAMPLE_RATE
    wander = 0.06 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi))
    since_pause = np.zeros(n)
    for f in range(1, n):
        since_pause[f] = since_pause[f - 1] + 1 if voiced[f] else 0
    decl = np.repeat(-0.012 * np.minimum(since_pause, 25), SAMPLES_PER_FRAME)
    f0 = voice.pitch_hz * (1.0 + wander + decl)
    source = _glottal_source(rng, f0, voice)
    source += voice.breathiness * 0.3 * rng.standard_normal(n_samples)

    # Formant targets per 10 ms block, smoothed so vowels glide into each other.
    blocks_per_frame = SAMPLES_PER_FRAME // BLOCK
    out = np.empty(n_samples)
    zi = [np.zeros(2) for _ in range(3)]
    current = np.array(FORMANTS["a"]) * voice.formant_scale
    for f in range(n):
        target = (np.array(FORMANTS[vowels[f]]) * voice.formant_scale
                  if voiced[f] else current)
        for b in range(blocks_per_frame):
            current = current + 0.45 * (target - current)
            s = f * SAMPLES_PER_FRAME + b * BLOCK
            y = source[s:s + BLOCK]
            for k in range(3):
                bcoef, acoef = _resonator(current[k], BANDWIDTHS[k] * voice.formant_scale)
                y, zi[k] = lfilter(bcoef, acoef, y, zi=zi[k])
            out[s:s + BLOCK] = y

    out *= _envelope(voiced)
    # Syllable stress: slow amplitude modulation of the voiced parts.
    out *= 0.8 + 0.2 * np.sin(2 * np.pi * rng.uniform(2.0, 4.0) * t + rng.uniform(0, 6.3))
    peak = np.percentile(np.abs(out[np.repeat(voiced, SAMPLES_PER_FRAME)]), 99.5)
    out *= voice.level / max(peak, 1e-9)

    burst_len = 96
    for f in np.flatnonzero(np.asarray(bursts) & voiced):
        s = f * SAMPLES_PER_FRAME
        noise = np.diff(rng.standard_normal(burst_len + 1))  # high-passed
        out[s:s + burst_len] += 0.5 * voice.level * noise * np.linspace(1, 0, burst_len)

    out += NOISE_FLOOR * rng.standard_normal(n_samples)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
