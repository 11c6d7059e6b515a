"""Head pose → one feature vector per video frame: velocities, plus the absolute pose.

Velocities (the paper's choice) make control relative to where the head is; the absolute
values anchor it, so small errors in integrating velocities cannot drift over minutes.
Both are scaled to roughly unit range: angles by 30°, translation and scale by 0.1.
"""

from __future__ import annotations

import numpy as np
import torch

from midas_cli.model.config import FPS

POSE_SCALE = np.array([30.0, 30.0, 30.0, 0.1, 0.1, 0.1], dtype=np.float32)
POSE_FEATURE_DIM = 12


def pose_features(pose: np.ndarray, fps: float = FPS) -> torch.Tensor:
    """pose (T, 6) from the clip's first frame → (T, 12) = [velocity per second, absolute] / scale.

    The first frame's velocity is measured from pose 0 (the reference photo).
    """
    pose = np.asarray(pose, dtype=np.float32).reshape(-1, 6)
    prev = np.concatenate([np.zeros((1, 6), np.float32), pose[:-1]])
    vel = (pose - prev) * (fps / 10.0)  # per 100 ms, so typical head motion stays O(1)
    return torch.from_numpy(np.concatenate([vel / POSE_SCALE, pose / POSE_SCALE], axis=1))


def neutral_pose(n_frames: int) -> np.ndarray:
    return np.zeros((n_frames, 6), dtype=np.float32)
