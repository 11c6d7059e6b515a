"""Head-pose keyframes (docs/formats.md) → one pose per video frame.

Keyframes are linearly interpolated at the frame times t = i / fps and held constant before
the first and after the last; missing fields are 0 (the reference photo's pose). The schema
`schemas/pose.schema.json` checks types and ranges; times increasing and inside the clip are
checked here.
"""

from __future__ import annotations

import os

import numpy as np

from midas_cli.media.jsonfile import check_times, read_validated

POSE_FIELDS = ("yaw", "pitch", "roll", "x", "y", "scale")


def load_pose(path: str | os.PathLike, n_frames: int, fps: float = 12.5,
              duration: float | None = None) -> np.ndarray:
    """(n_frames, 6) float32 with columns `POSE_FIELDS`; `duration` (s) bounds the keyframe times."""
    if n_frames < 0 or fps <= 0:
        raise ValueError(f"n_frames must be >= 0 and fps > 0, got {n_frames} and {fps}")
    data = read_validated(path, "pose")
    keys = data["keyframes"]
    check_times(path, keys, "keyframes", duration)
    times = np.array([k["t"] for k in keys], dtype=np.float64)
    values = np.array([[float(k.get(f, 0.0)) for f in POSE_FIELDS] for k in keys], dtype=np.float64)
    t = np.arange(n_frames, dtype=np.float64) / fps
    out = np.empty((n_frames, len(POSE_FIELDS)), dtype=np.float32)
    for j in range(len(POSE_FIELDS)):  # np.interp holds the end values outside [times[0], times[-1]]
        out[:, j] = np.interp(t, times, values[:, j])
    return out


def pose_to_json(pose: np.ndarray, fps: float = 12.5) -> dict:
    """The inverse for writers: one keyframe per frame at t = i / fps (values rounded to 1e-6)."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != len(POSE_FIELDS):
        raise ValueError(f"pose must be (n_frames, {len(POSE_FIELDS)}), got {pose.shape}")
    return {"version": 1, "keyframes": [
        {"t": round(i / fps, 6), **{f: round(float(v), 6) + 0.0 for f, v in zip(POSE_FIELDS, row)}}
        for i, row in enumerate(pose)]}
