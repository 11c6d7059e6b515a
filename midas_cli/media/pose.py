"""Head-pose keyframes (docs/formats.md) → one pose per video frame."""

from __future__ import annotations

import os

import numpy as np

from midas_cli.media.jsonfile import check_times, read_validated

POSE_FIELDS = ("yaw", "pitch", "roll", "x", "y", "scale")


def load_pose(path: str | os.PathLike, n_frames: int, fps: float = 12.5, duration: float | None = None) -> np.ndarray:
    """(n_frames, 6) float32, keyframes interpolated linearly at t = i / fps, held at the ends."""
    data = read_validated(path, "pose")
    keys = data["keyframes"]
    check_times(path, keys, "keyframes", duration)
    times = np.array([k["t"] for k in keys], dtype=np.float64)
    values = np.array([[float(k.get(f, 0.0)) for f in POSE_FIELDS] for k in keys], dtype=np.float64)
    t = np.arange(n_frames) / fps
    return np.stack([np.interp(t, times, values[:, j]) for j in range(len(POSE_FIELDS))], axis=1).astype(np.float32)


def pose_to_json(pose: np.ndarray, fps: float = 12.5) -> dict:
    """One keyframe per frame, for writers."""
    return {"version": 1, "keyframes": [
        {"t": round(i / fps, 6), **{f: round(float(v), 6) for f, v in zip(POSE_FIELDS, row)}}
        for i, row in enumerate(np.asarray(pose))]}
