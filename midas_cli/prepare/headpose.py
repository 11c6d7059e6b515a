"""Head pose per frame: from 68 landmarks, a clip fitted to a generic 3D face refined for the
person (`clip_pose`); from 3D face meshes, a rigid alignment of each frame to the clip's mean
mesh (`mesh_clip_pose`).

Output follows the pose JSON (docs/formats.md) and the synthetic world's conventions
(midas_cli/synth/geometry.py): yaw turns the face toward the image's right, pitch tilts it
down, roll turns it clockwise on screen (degrees); x, y move the head centre right / down as
a fraction of the crop side; scale is the relative change of apparent size. Every value is
relative to the clip's first frame, which is pose 0 like the reference.

Each landmark is weighted by how far dlib's point strays from rigid head motion (measured on
synth clips, whose true pose is known, with speech and expressions): the eyes' contours are
the steady ones; the nose, mouth corners and chin move with speech (dlib lifts the whole lower
face when the mouth opens) and count little, so a talking mouth does not read as a nod.

A clip is fitted as a whole (`fit_clip`): the landmarks' 3D positions are refined for the
person, regularised toward the generic face, jointly with every frame's pose, and the angles
carry a weak temporal prior. A generic face's depths do not match a given head, and that
mismatch showed as yaw read up to twice too large. The model is in units of
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
    37: (-175.0, -193.0, -115.0),  # eyelids: a third and two thirds along each eye, on the eyeball
    38: (-125.0, -192.0, -110.0),
    40: (-125.0, -147.0, -110.0),
    41: (-175.0, -148.0, -115.0),
    43: (125.0, -192.0, -110.0),
    44: (175.0, -193.0, -115.0),
    46: (175.0, -148.0, -115.0),
    47: (125.0, -147.0, -110.0),
    48: (-150.0, 150.0, -125.0),  # mouth corners (move with smiles; kept for pitch)
    54: (150.0, 150.0, -125.0),
    8: (0.0, 330.0, -65.0),  # chin (moves with the jaw; weak weight by being one point)
}
# rms distance (fraction of the eye-to-mouth distance) of each dlib point from the best rigid
# motion of one 3D point, on synth clips with speech and expressions (seeds 0-2), eyelids 0.022;
# with LOCALISATION_NOISE (dlib's scatter on a real face, where a photo moved in-plane shows it)
# added in quadrature, this is the noise each landmark is weighted by (1 for the steadiest)
_NOISE = {27: 0.045, 28: 0.07, 29: 0.10, 30: 0.14, 31: 0.16, 33: 0.17, 35: 0.16, 21: 0.06, 22: 0.055,
          48: 0.26, 54: 0.26, 8: 0.35, 39: 0.017, 42: 0.017, 36: 0.02, 45: 0.02}
LOCALISATION_NOISE = 0.03
HEAD_CENTRE = np.array([0.0, -120.0, -560.0])  # behind the eyes, where the synth head rotates
INDICES = np.array(sorted(_MODEL))
MODEL_POINTS = np.array([_MODEL[i] for i in INDICES]) - HEAD_CENTRE
_SIGMA = np.hypot([_NOISE.get(i, 0.022) for i in INDICES], LOCALISATION_NOISE)
WEIGHTS = _SIGMA.min() / _SIGMA
SMOOTH_SIGMA = 1.0  # frames; landmark jitter is frame to frame, head motion is slower
SHAPE_PRIOR = 0.1  # pull of the refined 3D face toward the generic one (per unit of face height)
TEMPORAL_PRIOR = 0.2  # pull of each frame's angles toward its neighbours' mean, per degree, at sigma 1
ROUNDS = 12  # alternations of (every frame's pose) and (the clip's 3D face)


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


def _rotations(a: np.ndarray):
    """(T, 3, 3) rotations of (T, 3) degrees, as `rotation`, and their (T, 3, 3, 3) derivatives per radian."""
    y, p, r = np.deg2rad(a).T
    c, s, z, o = np.cos, np.sin, np.zeros(len(a)), np.ones(len(a))

    def m(*rows):
        return np.stack([np.stack(row, -1) for row in rows], 1)

    ry, dry = m((c(y), z, s(y)), (z, o, z), (-s(y), z, c(y))), m((-s(y), z, c(y)), (z, z, z), (-c(y), z, -s(y)))
    rx, drx = m((o, z, z), (z, c(p), s(p)), (z, -s(p), c(p))), m((z, z, z), (z, -s(p), c(p)), (z, -c(p), -s(p)))
    rz, drz = m((c(r), -s(r), z), (s(r), c(r), z), (z, z, o)), m((-s(r), -c(r), z), (c(r), -s(r), z), (z, z, z))
    return rz @ rx @ ry, np.stack([rz @ rx @ dry, rz @ drx @ ry, drz @ rx @ ry], 1)


def _pose_steps(obs, shape, fits, target, prior, steps=3):
    """Gauss-Newton on every frame's (yaw, pitch, roll, s, tx, ty) at once, the 3D face fixed.

    Residuals: WEIGHTS · (projection - landmarks) per frame, and `prior` · (angles - `target`)
    in degrees (the temporal prior; `target` is the neighbours' mean).
    """
    T, K = obs.shape[:2]
    w = WEIGHTS[None, :, None]
    for _ in range(steps):
        R, dR = _rotations(fits[:, :3])
        q = np.einsum("tij,kj->tki", R[:, :2], shape)  # (T, K, 2) rotated, unscaled
        r = w * (fits[:, None, 3:4] * q + fits[:, None, 4:6] - obs)  # (T, K, 2)
        J = np.zeros((T, K, 2, 6))
        J[..., :3] = np.deg2rad(1.0) * fits[:, None, None, 3:4] * np.einsum("taij,kj->tkia", dR[:, :, :2], shape)
        J[..., 3] = q
        J[..., 0, 4] = J[..., 1, 5] = 1.0
        J = w[..., None] * J
        J, r = J.reshape(T, 2 * K, 6), r.reshape(T, 2 * K)
        H = np.einsum("tni,tnj->tij", J, J) + 1e-9 * np.eye(6)
        g = np.einsum("tni,tn->ti", J, r)
        H[:, :3, :3] += prior ** 2 * np.eye(3)
        g[:, :3] += prior ** 2 * (fits[:, :3] - target)
        step = -np.linalg.solve(H, g[..., None])[..., 0]
        step[:, :3] = np.clip(step[:, :3], -15.0, 15.0)  # degrees: far from a solution, go a bounded way
        fits = fits + step
    return fits


def _shape_step(obs, fits, scale):
    """The clip's 3D face given every frame's pose: per landmark, linear least squares pulled
    toward the generic face (SHAPE_PRIOR per face height, residuals in units of `scale` pixels)."""
    R, _ = _rotations(fits[:, :3])
    A = fits[:, 3, None, None] * R[:, :2]  # (T, 2, 3)
    lam = (SHAPE_PRIOR * scale / np.ptp(MODEL_POINTS[:, 1])) ** 2 / WEIGHTS ** 2  # per landmark
    H = np.einsum("tai,taj->ij", A, A)[None] + lam[:, None, None] * np.eye(3)
    b = np.einsum("tai,tka->ki", A, obs - fits[:, None, 4:6]) + lam[:, None] * MODEL_POINTS
    return np.linalg.solve(H, b[..., None])[..., 0]


def fit_clip(landmarks: np.ndarray, temporal: float = TEMPORAL_PRIOR, rounds: int | None = None):
    """(T, 6) absolute (yaw, pitch, roll, s, tx, ty) of a clip, and the (K, 3) face refined for it.

    Alternates every frame's pose (Gauss-Newton, the face fixed) with the face (linear, poses
    fixed): a bundle adjustment under the scaled-orthographic camera. The face starts generic
    and is pulled toward it, so a clip without head motion keeps the generic depths.

    A scaled-orthographic camera, like the synth renderer's: a face is far from the camera
    compared to its depth, and a full perspective solve (cv2.solvePnP) against a generic face
    was seen to jump between two yaw solutions ±9° apart on the same photo shifted by a few
    pixels. `tx, ty` is where the head centre (the model's origin) appears.
    """
    obs = np.asarray(landmarks, np.float64)[:, INDICES]
    T = len(obs)
    fits = np.zeros((T, 6))
    for t in range(T):  # in-plane start per frame (no error carries over from a neighbour)
        s, roll, c = _similarity(MODEL_POINTS[:, :2], obs[t])
        fits[t] = (0.0, 0.0, roll, s, c[0], c[1])
    shape = MODEL_POINTS
    fits = _pose_steps(obs, shape, fits, fits[:, :3], 0.0, steps=8)  # each frame on its own first
    scale = float(np.median(fits[:, 3])) * np.ptp(MODEL_POINTS[:, 1])  # the face's height in pixels
    prior = temporal * 0.02 * scale  # per degree: `temporal` × 2 % of the face height in pixels
    for _ in range(ROUNDS if rounds is None else rounds):
        shape = _shape_step(obs, fits, scale)
        target = fits[:, :3].copy()
        if T > 2 and temporal > 0:
            target[1:-1] = 0.5 * (fits[:-2, :3] + fits[2:, :3])
        fits = _pose_steps(obs, shape, fits, target, prior if T > 2 else 0.0)
    return fits, shape


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
    fits, _ = fit_clip(landmarks, temporal=TEMPORAL_PRIOR * min(sigma, 1.0) if sigma > 0 else 0.0)
    return _relative_to_first(fits, crop_side, sigma)


def _relative_to_first(fits: np.ndarray, crop_side: float, sigma: float) -> np.ndarray:
    """Absolute (yaw, pitch, roll, s, tx, ty) per frame → the pose JSON's values relative to frame 0."""
    T = len(fits)
    fits = fits.copy()
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


# ---- from 3D face meshes (the mediapipe backend) ---------------------------------------------
MESH_ROUNDS = 3  # rounds of aligning every frame to the clip's mean mesh and re-averaging it
# the head centre (the point whose screen motion is x, y), in units of the outer-eye-corner
# distance: below the eye line and behind it, as HEAD_CENTRE sits in the 68-point model above
PIVOT_DOWN, PIVOT_BACK = 50.0 / 450.0, 425.0 / 450.0


def rigid_mesh_points(mean_mesh: np.ndarray) -> np.ndarray:
    """Indices of the mesh points that move with the head alone: not the lips, and nothing below
    the mouth corners (the jaw opens with speech)."""
    from midas_cli.prepare.mesh_faces import LIP_POINTS, MOUTH_CORNERS

    mouth_y = mean_mesh[list(MOUTH_CORNERS), 1].mean()
    keep = np.ones(len(mean_mesh), bool)
    keep[list(LIP_POINTS)] = False
    keep &= mean_mesh[:, 1] < mouth_y
    return np.flatnonzero(keep)


def _similarity_3d(src: np.ndarray, dst: np.ndarray):
    """s, R, t with dst ≈ s R src + t (Umeyama), for (K, 3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / (a ** 2).sum())
    return s, R, mu_d - s * R @ mu_s


def mesh_clip_pose(meshes: np.ndarray, crop_side: float, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """(T, 6) float32 pose of a clip relative to its first frame, from (T, 468, 3) face meshes
    in source pixels (z toward the viewer).

    The clip's mean mesh is found by aligning every frame to it and re-averaging (a generalised
    Procrustes fit); each frame's pose is then the similarity taking the mean to it. The mean,
    not the first frame, is the template, so one frame's mesh error does not shift the whole clip.
    """
    from midas_cli.prepare.mesh_faces import EYE_CORNERS

    meshes = np.asarray(meshes, np.float64)
    mean = meshes[0]
    for _ in range(MESH_ROUNDS):
        rigid = rigid_mesh_points(mean)
        aligned = []
        for m in meshes:
            s, R, t = _similarity_3d(m[rigid], mean[rigid])
            aligned.append(s * m @ R.T + t)
        mean = np.mean(aligned, 0)
    rigid = rigid_mesh_points(mean)
    eyes = mean[list(EYE_CORNERS)]
    eye_dist = float(np.linalg.norm(eyes[1] - eyes[0]))
    pivot = eyes.mean(0) + np.array([0.0, PIVOT_DOWN * eye_dist, -PIVOT_BACK * eye_dist])
    fits = np.zeros((len(meshes), 6))
    for i, m in enumerate(meshes):
        s, R, t = _similarity_3d(mean[rigid], m[rigid])
        centre = s * R @ pivot + t
        fits[i] = (*angles(R), s, centre[0], centre[1])
    return _relative_to_first(fits, crop_side, sigma)
