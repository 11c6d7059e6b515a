"""Held-out benchmark cases: inputs a generator gets, and the truth it is scored against.

Cases come from the TEST split (identities and voices training never sees) and from the
evaluation random stream (``PURPOSE_EVAL``), which no training data is drawn from. Every
case has an interlocutor stream, so listening behaviour is always scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midas_cli.synth.clip import make_clip
from midas_cli.synth.constants import DEFAULT_SIZE, FPS, SAMPLE_RATE
from midas_cli.synth.splits import PURPOSE_EVAL, stream


@dataclass
class EvalCase:
    """One held-out clip. Inputs: ref, audio, listen_audio, pose, prompts. Truth: the rest."""

    name: str
    identity: int
    ref: np.ndarray  # uint8 (H, W, 3): the reference photo (pose 0, neutral, mouth closed)
    audio: np.ndarray  # float32 (T * 1280,) at 16 kHz
    listen_audio: np.ndarray | None  # interlocutor stream, same length, or None
    pose: np.ndarray  # float32 (T, 6): yaw, pitch, roll, x, y, scale per frame (input + truth)
    pose_keyframes: list[dict]  # the same trajectory as pose-JSON keyframes
    prompts: list[tuple[float, str]]  # prompt timeline
    seconds: float
    frames: np.ndarray  # uint8 (T, H, W, 3): the true video
    mouth: np.ndarray  # int (T,)
    expression: np.ndarray  # int (T,)
    listening: np.ndarray  # bool (T,)
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])


def make_eval_cases(n: int = 8, seconds: float = 60.0, seed: int = 0,
                    size: int = DEFAULT_SIZE) -> list[EvalCase]:
    """``n`` test-split cases of ``seconds`` each, rendered at ``size``; deterministic in seed."""
    cases = []
    for i in range(n):
        clip = make_clip(stream(PURPOSE_EVAL, "test", seed, i), seconds, "test", listener=True)
        cases.append(EvalCase(
            name=f"eval-{seed}-{i:03d}", identity=clip.identity, ref=clip.reference(size),
            audio=clip.audio, listen_audio=clip.listen_audio, pose=clip.pose,
            pose_keyframes=clip.pose_keyframes, prompts=clip.prompts, seconds=clip.seconds,
            frames=clip.render(size), mouth=clip.mouth, expression=clip.expression,
            listening=clip.listening))
    return cases
