"""A synthetic clip: its random draw (identity, voices, script, pose, prompts) and its truth.

``make_clip`` draws everything from one numpy Generator; ``SynthClip.render`` then produces
the one true video from the per-frame truth via ``render_clip`` (no randomness involved).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midas_cli.synth.audio import N_VOICES, make_voice, synthesize
from midas_cli.synth.constants import DEFAULT_SIZE, FPS, SAMPLE_RATE, n_frames
from midas_cli.synth.expressions import expression_per_frame, random_prompt_timeline
from midas_cli.synth.identity import N_IDENTITIES
from midas_cli.synth.pose import interpolate_keyframes, random_pose_keyframes
from midas_cli.synth.render import render_clip, render_reference
from midas_cli.synth.script import make_script
from midas_cli.synth.splits import check_split, draw_id


@dataclass
class SynthClip:
    """Inputs and per-frame ground truth of one clip (T frames, T * 1280 audio samples)."""

    split: str
    identity: int
    voice: int
    listen_voice: int | None
    audio: np.ndarray  # float32 (T * 1280,), 16 kHz
    listen_audio: np.ndarray | None  # interlocutor stream, same length, or None
    pose_keyframes: list[dict]  # as written to the pose JSON
    prompts: list[tuple[float, str]]  # prompt timeline (t, text)
    mouth: np.ndarray  # int64 (T,)
    expression: np.ndarray  # int64 (T,)
    listening: np.ndarray  # bool (T,)
    pose: np.ndarray  # float32 (T, 6): the keyframes interpolated at the frame times

    @property
    def n_frames(self) -> int:
        return len(self.mouth)

    @property
    def seconds(self) -> float:
        return self.n_frames / FPS

    def render(self, size: int = DEFAULT_SIZE) -> np.ndarray:
        """The true video, uint8 (T, size, size, 3)."""
        return render_clip(self.identity, self.mouth, self.pose, self.expression,
                           self.listening, size)

    def reference(self, size: int = DEFAULT_SIZE) -> np.ndarray:
        return render_reference(self.identity, size)

    def truth_json(self) -> dict:
        """Per-frame ground truth as stored in ``truth.json`` (docs/formats.md)."""
        return {
            "version": 1, "fps": FPS, "identity": self.identity, "voice": self.voice,
            "listen_voice": self.listen_voice,
            "mouth": self.mouth.tolist(), "expression": self.expression.tolist(),
            "listening": self.listening.tolist(),
            "pose": np.round(self.pose.astype(np.float64), 5).tolist(),
        }


def make_clip(rng: np.random.Generator, seconds: float, split: str = "train",
              listener: bool | None = None, listener_prob: float = 0.7) -> SynthClip:
    """Draw one clip of ``split``: identity and voices from that split, script, pose, prompts.

    ``listener`` forces a clip with (True) or without (False) an interlocutor stream; None
    draws it with probability ``listener_prob``.
    """
    check_split(split)
    T = n_frames(seconds)
    identity = draw_id(rng, split, N_IDENTITIES)
    voice = make_voice(draw_id(rng, split, N_VOICES))
    with_listener = bool(rng.random() < listener_prob) if listener is None else bool(listener)
    other = None
    if with_listener:
        other_id = draw_id(rng, split, N_VOICES)
        while other_id == voice.id:
            other_id = draw_id(rng, split, N_VOICES)
        other = make_voice(other_id)
    script = make_script(rng, T, voice.rate, other.rate if other else 1.0, with_listener)
    audio = synthesize(rng, script.avatar, script.avatar_burst, voice)
    listen_audio = synthesize(rng, script.other, script.other_burst, other) if other else None
    keyframes = random_pose_keyframes(rng, T)
    prompts = random_prompt_timeline(rng, T / FPS)
    assert len(audio) == T * SAMPLE_RATE / FPS
    return SynthClip(
        split=split, identity=identity, voice=voice.id,
        listen_voice=other.id if other else None, audio=audio, listen_audio=listen_audio,
        pose_keyframes=keyframes, prompts=prompts, mouth=script.mouth,
        expression=expression_per_frame(prompts, T), listening=script.listening,
        pose=interpolate_keyframes(keyframes, T))
