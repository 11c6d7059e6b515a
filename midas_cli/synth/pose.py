"""Head-pose trajectories: smooth random motion written as pose-JSON keyframes.

Columns follow docs/formats.md: ``yaw, pitch, roll`` (degrees), ``x, y`` (fraction of the
frame, x right, y down), ``scale`` (relative size change). Sign conventions used by the
renderer: positive yaw turns the face toward the image's right, positive pitch tilts it
down, positive roll rotates it clockwise on screen.

A trajectory is a few random anchor poses joined by cosine easing (smooth velocity), sampled
as keyframes every few frames. The per-frame truth is the *linear interpolation of the
written (rounded) keyframes* at the frame times, exactly what a pose-JSON loader computes, so
the truth and the model's input can never disagree. Clips start at pose 0 (the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midas_cli.synth.constants import FPS

POSE_FIELDS = ("yaw", "pitch", "roll", "x", "y", "scale")


@dataclass(frozen=True)
class PoseRanges:
    """Half-ranges of the random anchors (degrees / fractions); trajectories stay inside."""

    yaw: float = 30.0
    pitch: float = 15.0
    roll: float = 12.0
    x: float = 0.08
    y: float = 0.05
    scale: float = 0.12

    def as_array(self) -> np.ndarray:
        return np.array([self.yaw, self.pitch, self.roll, self.x, self.y, self.scale])


@dataclass(frozen=True)
class PoseTrajectoryConfig:
    ranges: PoseRanges = PoseRanges()
    anchor_every_s: tuple[float, float] = (0.8, 3.0)  # time between anchor poses
    keyframe_every: int = 3  # frames between written keyframes
    still_prob: float = 0.25  # chance that an anchor repeats the previous pose (a hold)


def random_pose_keyframes(rng: np.random.Generator, n_frames: int,
                          cfg: PoseTrajectoryConfig = PoseTrajectoryConfig()) -> list[dict]:
    """Keyframes (pose-JSON dicts) of a smooth random trajectory starting at pose 0."""
    half = cfg.ranges.as_array()
    duration = (n_frames - 1) / FPS
    times, poses = [0.0], [np.zeros(6)]
    while times[-1] < duration:
        times.append(times[-1] + rng.uniform(*cfg.anchor_every_s))
        if rng.random() < cfg.still_prob:
            poses.append(poses[-1].copy())
        else:
            # Pull toward the centre a little so motion stays mostly in range.
            poses.append(np.clip(0.5 * poses[-1] + rng.uniform(-1, 1, 6) * half, -half, half))
    anchor_t, anchor_p = np.array(times), np.stack(poses)

    frame_idx = list(range(0, n_frames, cfg.keyframe_every))
    if frame_idx[-1] != n_frames - 1:
        frame_idx.append(n_frames - 1)
    keyframes = []
    for f in frame_idx:
        t = f / FPS
        k = min(int(np.searchsorted(anchor_t, t, side="right")) - 1, len(anchor_t) - 2)
        w = (t - anchor_t[k]) / (anchor_t[k + 1] - anchor_t[k])
        w = 0.5 - 0.5 * np.cos(np.pi * np.clip(w, 0.0, 1.0))  # cosine ease
        p = (1 - w) * anchor_p[k] + w * anchor_p[k + 1]
        kf = {"t": round(t, 4)}
        for name, v, nd in zip(POSE_FIELDS, p, (2, 2, 2, 4, 4, 4)):
            kf[name] = round(float(v), nd) + 0.0  # +0.0 turns -0.0 into 0.0
        keyframes.append(kf)
    return keyframes


def interpolate_keyframes(keyframes: list[dict], n_frames: int, fps: float = FPS) -> np.ndarray:
    """Per-frame pose (n_frames, 6): linear interpolation at t = f / fps, held at the ends."""
    times = np.array([float(k["t"]) for k in keyframes])
    frame_t = np.arange(n_frames) / fps
    cols = [np.interp(frame_t, times, [float(k.get(name, 0.0)) for k in keyframes])
            for name in POSE_FIELDS]
    return np.stack(cols, axis=1).astype(np.float32)


def pose_json(keyframes: list[dict]) -> dict:
    """The trajectory as the pose JSON object of docs/formats.md."""
    return {"version": 1, "keyframes": keyframes}


def nod_offsets(listening: np.ndarray, amplitude_deg: float = 3.0,
                period_frames: int = 10) -> np.ndarray:
    """Pitch added while listening: a nod that starts at 0 at the start of each listening run.

    Deterministic in ``listening`` (no hidden state), so the true video stays a function of
    the inputs; the model has to infer it from the interlocutor audio.
    """
    out = np.zeros(len(listening), dtype=np.float32)
    run = 0
    for f, on in enumerate(np.asarray(listening, dtype=bool)):
        run = run + 1 if on else 0
        if on:
            out[f] = amplitude_deg * np.sin(2 * np.pi * (run - 1) / period_frames)
    return out
