"""Per-frame head pose from 68 landmarks, fitted to a small generic 3D face.

Output follows the pose JSON (docs/formats.md) and the synthetic world's conventions
(midas_cli/synth/geometry.py): yaw turns the face toward the image's right, pitch tilts it
down, roll turns it clockwise on screen (degrees); x, y move the head centre right / down as
a fraction of the crop side; scale is the relative change of apparent size. Every value is
relative to the clip's first frame, which is pose 0 like the reference.

Only landmarks that speech and expressions hardly move are fitted (eye corners, nose,
brows' inner ends), so a talking mouth does not read as a nod. The model is in units of
0.2 mm, head-local like the synth renderer (x right, y down, z toward the viewer), with its
origin at the head's centre: the point whose screen motion the synth world calls x, y.
"""

from __future__ import annotations

import numpy as np

from midas_cli.synth.geometry import rotation  # the synth renderer's convention: poses out match poses in

# iBUG index → generic 3D position (x right, y down, z toward the viewer; nose tip z = 0 before
# the shift to the head centre). After the widely used six-point model (nose tip, chin, eye and
# mouth corners), plus points along the nose and the inner eye corners.
_MODEL = {
    27: (0.0, -170.0, -60.0),  # nose bridge, between the eyes
    28: (0.0, -115.0, -40.0),
    29: (0.0, -60.0, -20.0),
    30: (0.0, 0.0, 0.0),  # nose tip
    31: (-60.0, 30.0, -70.0),  # nostrils
    33: (0.0, 40.0, -50.0),
    35: (60.0, 30.0, -70.0),
    36: (-225.0, -170.0, -135.0),  # outer eye corner, image left
    39: (-75.0, -165.0, -120.0),  # inner eye corners
    42: (75.0, -165.0, -120.0),
    45: (225.0, -170.0, -135.0),
    21: (-55.0, -250.0, -95.0),  # inner brow ends
    22: (55.0, -250.0, -95.0),
    48: (-150.0, 150.0, -125.0),  # mouth corners (move with smiles; kept for pitch)
    54: (150.0, 150.0, -125.0),
    8: (0.0, 330.0, -65.0),  # chin (moves with the jaw; weak weight by being one point)
}
HEAD_CENTRE = np.array([0.0, -120.0, -560.0])  # behind the eyes, where the synth head rotates
INDICES = np.array(sorted(_MODEL))
MODEL_POINTS = np.array([_MODEL[i] for i in INDICES]) - HEAD_CENTRE
SMOOTH_SIGMA = 1.0  # frames; landmark jitter is frame to frame, head motion is slower


def angles(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Rz(roll) Rx(pitch) Ry(yaw), the inverse of `rotation`."""
    pitch = np.arcsin(np.clip(-R[2, 1], -1.0, 1.0))
    yaw = np.arctan2(-R[2, 0], R[2, 2])
    roll = np.arctan2(-R[0, 1], R[1, 1])
    return tuple(float(v) for v in np.rad2deg([yaw, pitch, roll]))


def _similarity(src: np.ndarray, dst: np.ndarray):
    """Least-squares 2D similarity dst ≈ s·Rot(θ)·src + t (Umeyama): the in-plane start of a fit."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, sign]) @ vt
    s = (d[0] + sign * d[1]) / (a ** 2).sum(1).mean()
    return s, float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))), md - s * rot @ ms


def solve_frame(landmarks: np.ndarray, start=None):
    """One frame's (yaw, pitch, roll, s, tx, ty): landmarks ≈ s·(R·model)[x, y] + t.

    A scaled-orthographic camera, like the synth renderer's: a face is far from the camera
    compared to its depth, and a full perspective solve (cv2.solvePnP) against a generic face
    was seen to jump between two yaw solutions ±9° apart on the same photo shifted by a few
    pixels; this fit does not. `t` is where the head centre (the model's origin) appears.
    """
    from scipy.optimize import least_squares

    image = np.asarray(landmarks[INDICES], np.float64)
    if start is None:
        s, roll, t = _similarity(MODEL_POINTS[:, :2], image)
        start = np.array([0.0, 0.0, roll, s, t[0], t[1]])

    def residual(p):
        proj = p[3] * (MODEL_POINTS @ rotation(p[0], p[1], p[2]).T)[:, :2] + p[4:6]
        return (proj - image).ravel()

    return least_squares(residual, start, method="lm").x


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time with mirrored ends (so the first frame is not pulled to 0)."""
    if sigma <= 0 or len(x) < 3:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="reflect" if len(x) > r else "edge")
    return np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(x.shape[1])], 1)


def clip_pose(landmarks: np.ndarray, crop_side: float, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """(T, 6) float32 yaw, pitch, roll, x, y, scale of a clip relative to its first frame.

    `landmarks` is (T, 68, 2) in source-frame pixels; x, y are fractions of `crop_side` (the
    clip's square crop, which is the training frame).
    """
    T = len(landmarks)
    fits = np.zeros((T, 6))
    for t in range(T):  # each frame from its own start: an error never carries over
        fits[t] = solve_frame(landmarks[t])
    fits[:, :3] = np.rad2deg(np.unwrap(np.deg2rad(fits[:, :3]), axis=0))
    fits[:, 3] = np.log(np.maximum(fits[:, 3], 1e-9))
    fits = _smooth(fits, sigma)  # smooth the absolute parameters, then take each frame relative to the first
    R0 = rotation(*fits[0, :3])
    out = np.zeros((T, 6), np.float64)
    for t in range(T):
        out[t, :3] = angles(rotation(*fits[t, :3]) @ R0.T)
    out[:, 3:5] = (fits[:, 4:6] - fits[0, 4:6]) / crop_side
    out[:, 5] = np.exp(fits[:, 3] - fits[0, 3]) - 1.0
    out[0] = 0.0  # exactly, not to rounding: the first frame is the reference's pose
    return out.astype(np.float32)
