"""Pseudo-3D head geometry: features live on an ellipsoid, the pose rotates it, we project.

A point of the face is given by its frontal position (x, y) in head half-heights (x right,
y down); it is lifted onto the head ellipsoid (radii ``face_w``, 1, ``face_depth``) plus an
optional extra height (the nose sticks out), rotated by roll·pitch·yaw and projected
orthographically into the frame. Features then slide and foreshorten with yaw and pitch as on
a real head, and the head outline is the exact silhouette of the rotated ellipsoid.
"""

from __future__ import annotations

import numpy as np

from midas_cli.synth.identity import Identity

HEAD_SCALE = 0.28  # head half-height as a fraction of the frame height, at scale 0
HEAD_Y = 0.44  # head centre, fraction of the frame height, at y 0


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix (degrees in): yaw turns right, pitch tilts down, roll clockwise."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


# Where the renderer draws the mouth, in head-local units (head half-heights; y down, z out of
# the face): on the head ellipsoid's surface half a half-height below its centre.
MOUTH_POINT = np.array([0.0, 0.5, 0.75])


def head_frame(x, y, scale, height: int, width: int):
    """Where a pose's head is drawn in a (height, width) frame: its centre (cx, cy) in pixels and
    S, the pixels per head half-height. The renderer, the mouth weight and the judges' face crops
    all place the head through this; floats, arrays and tensors alike."""
    return width * (0.5 + x), height * (HEAD_Y + y), HEAD_SCALE * height * (1.0 + scale)


def mouth_centre(pose: np.ndarray, height: int, width: int) -> tuple[float, float, float]:
    """(x, y, S) in pixels for one pose (6,) (`POSE_FIELDS`): the mouth's centre, and S, the
    pixels per head half-height (how big the face is drawn)."""
    yaw, pitch, roll, x, y, scale = (float(v) for v in pose)
    cx, cy, S = head_frame(x, y, scale, height, width)
    dx, dy = S * (rotation(yaw, pitch, roll) @ MOUTH_POINT)[:2]
    return cx + dx, cy + dy, S


class Projector:
    """Maps head-local points to pixel coordinates for one identity, pose and canvas size."""

    def __init__(self, ident: Identity, pose: np.ndarray, size: int):
        yaw, pitch, roll, x, y, scale = (float(v) for v in pose)
        self.ident = ident
        self.R = rotation(yaw, pitch, roll)
        cx, cy, self.S = head_frame(x, y, scale, size, size)  # S: pixels per head half-height
        self.size = size
        self.centre = np.array([cx, cy])
        self.base_centre = self.centre  # where the body hangs from (translation, no rotation)

    def lift(self, xy: np.ndarray, height: float | np.ndarray = 0.0) -> np.ndarray:
        """Frontal (N, 2) points onto the ellipsoid surface, plus ``height`` outward."""
        a, c = self.ident.face_w, self.ident.face_depth
        z = c * np.sqrt(np.clip(1.0 - (xy[:, 0] / a) ** 2 - xy[:, 1] ** 2, 0.0, None)) + height
        return np.column_stack([xy, z])

    def project(self, p3: np.ndarray) -> np.ndarray:
        """3D head-local (N, 3) -> pixel (N, 2)."""
        q = p3 @ self.R.T
        return self.centre + self.S * q[:, :2]

    def surface(self, xy: np.ndarray, height: float | np.ndarray = 0.0) -> np.ndarray:
        return self.project(self.lift(np.asarray(xy, dtype=np.float64), height))

    def up(self) -> np.ndarray:
        """Unit screen vector of the head's "up"."""
        v = (self.R @ np.array([0.0, -1.0, 0.0]))[:2]
        return v / max(np.linalg.norm(v), 1e-9)

    def silhouette(self, n: int = 64, inflate: float = 1.0) -> np.ndarray:
        """Outline of the rotated head ellipsoid (optionally inflated), pixels (n, 2).

        The projection of an ellipsoid x^T A x = 1 along z is the ellipse with matrix
        A_xy - A_xz A_zx / A_zz (Schur complement of the rotated quadric).
        """
        a, c = self.ident.face_w * inflate, self.ident.face_depth * inflate
        A = self.R @ np.diag([1 / a**2, 1 / inflate**2, 1 / c**2]) @ self.R.T
        M = A[:2, :2] - np.outer(A[:2, 2], A[2, :2]) / A[2, 2]
        lam, vec = np.linalg.eigh(M)
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = (vec @ np.stack([np.cos(th) / np.sqrt(lam[0]), np.sin(th) / np.sqrt(lam[1])])).T
        return self.centre + self.S * pts


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    """Points of an axis-aligned ellipse (n, 2) in whatever units cx, cy are in."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(th), cy + ry * np.sin(th)])
