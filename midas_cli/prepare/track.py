"""Shots, the dominant face's track, and the stretches that cannot become clips (with why).

One pass over the 12.5 fps frames records, per frame: the shot (a new one at a scene cut),
the tracked face's landmarks, whether a second large face is in view, and whether the face
touches the frame edge. Stretches of one shot with one tracked face are then judged and cut
into clips of the configured length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from midas_cli.prepare.crop import SIDE_PER_FACE, Crop, clip_crop
from midas_cli.prepare.faces import Face

SCENE_CUT = 40.0  # mean absolute difference of 32×32 grey thumbnails (0..255) that starts a new shot
MAX_MISSES = 3  # frames the tracker carries a face on landmarks alone when the detector misses it
SECOND_FACE = 0.6  # another face at least this fraction of the tracked face's size counts as large
SECOND_FACE_SHARE = 0.25  # ... in this share of a stretch's frames rejects it
EDGE_MARGIN = 0.02  # landmarks this close to the frame edge (fraction of the short side) are cut off
EDGE_SHARE = 0.1
DETECT_LONG_SIDE = 640  # frames are detected at most this big (landmarks use the full frame)


@dataclass
class FrameInfo:
    shot: int
    track: int  # -1 without a face
    face: Face | None
    second_face: bool
    at_edge: bool


@dataclass
class Stretch:
    """Consecutive frames of one shot and one tracked face."""

    start: int
    stop: int  # exclusive
    faces: list[Face] = field(repr=False)
    second_face: float = 0.0
    at_edge: float = 0.0


@dataclass
class ClipPlan:
    start: int
    stop: int
    crop: Crop
    landmarks: np.ndarray  # (T, 68, 2) source pixels
    face_size: float  # median eye-to-mouth distance, source pixels
    meshes: np.ndarray | None = None  # (T, 468, 3) source pixels, from the mediapipe backend

    def pose(self) -> np.ndarray:
        """(T, 6) the clip's head pose relative to its first frame (the pose JSON's values)."""
        from midas_cli.prepare.headpose import clip_pose, mesh_clip_pose

        if self.meshes is not None:
            return mesh_clip_pose(self.meshes, self.crop.side)
        return clip_pose(self.landmarks, self.crop.side)


def _thumb(frame: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


class Tracker:
    """Feed frames in order with `step`; the dominant face is followed across frames."""

    def __init__(self, backend):
        self.backend = backend
        self.prev_thumb = None
        self.shot, self.track, self.misses = 0, -1, 0
        self.face: Face | None = None
        self.frames: list[FrameInfo] = []

    def step(self, frame: np.ndarray) -> FrameInfo:
        import cv2

        h, w = frame.shape[:2]
        thumb = _thumb(frame)
        if self.prev_thumb is not None and np.abs(thumb - self.prev_thumb).mean() > SCENE_CUT:
            self.shot += 1
            self.face = None  # a cut never continues a track
        self.prev_thumb = thumb

        k = min(1.0, DETECT_LONG_SIDE / max(h, w))
        small = frame if k == 1.0 else cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        upsample = 1 if max(small.shape[:2]) < 480 else 0  # small frames: find faces down to ~40 px
        found = [f.scaled(1 / k) for f in self.backend.detect(small, upsample)]

        face = None
        if found:
            if self.face is not None:
                near = min(found, key=lambda f: np.linalg.norm(f.centre - self.face.centre))
                if np.linalg.norm(near.centre - self.face.centre) < 0.5 * self.face.size * SIDE_PER_FACE / 2:
                    face = near
            if face is None:
                face = found[0]
                self.track += 1
            self.misses = 0
        elif self.face is not None and self.misses < MAX_MISSES:
            face = self.face  # carried on landmarks: refined below from the last position
            self.misses += 1
        if face is not None:
            face = self.backend.refine(frame, face)
        self.face = face
        others = [f for f in found if face is None or np.linalg.norm(f.centre - face.centre) > 0.5 * face.size]
        second = face is not None and any(f.size >= SECOND_FACE * face.size for f in others)
        at_edge = False
        if face is not None:
            m = EDGE_MARGIN * min(h, w)
            p = face.landmarks
            at_edge = bool(p[:, 0].min() < m or p[:, 1].min() < m or p[:, 0].max() > w - m or p[:, 1].max() > h - m)
        info = FrameInfo(self.shot, self.track if face is not None else -1, face, second, at_edge)
        self.frames.append(info)
        return info


def stretches(frames: list[FrameInfo]) -> list[Stretch]:
    """Maximal runs of frames with the same shot and track and a face."""
    out, i = [], 0
    while i < len(frames):
        if frames[i].face is None:
            i += 1
            continue
        j = i
        while j < len(frames) and frames[j].face is not None and (frames[j].shot, frames[j].track) == (
                frames[i].shot, frames[i].track):
            j += 1
        run = frames[i:j]
        out.append(Stretch(i, j, [f.face for f in run], float(np.mean([f.second_face for f in run])),
                           float(np.mean([f.at_edge for f in run]))))
        i = j
    return out


def face_free_spans(frames: list[FrameInfo]) -> list[tuple[int, int]]:
    """(start, stop) runs of frames without a tracked face, for the rejection record."""
    spans, i = [], 0
    while i < len(frames):
        if frames[i].face is not None:
            i += 1
            continue
        j = i
        while j < len(frames) and frames[j].face is None:
            j += 1
        spans.append((i, j))
        i = j
    return spans


def plan_clips(stretch: Stretch, width: int, height: int, clip_frames: int, min_frames: int,
               min_crop: float) -> tuple[list[ClipPlan], list[tuple[int, int, str, str]]]:
    """Clips cut from one stretch, and (start, stop, reason, detail) for what is rejected."""
    n = stretch.stop - stretch.start
    if stretch.second_face > SECOND_FACE_SHARE:
        return [], [(stretch.start, stretch.stop, "two large faces",
                     f"a second face in {stretch.second_face:.0%} of the frames")]
    if stretch.at_edge > EDGE_SHARE:
        return [], [(stretch.start, stretch.stop, "face cut off by the frame edge",
                     f"landmarks at the edge in {stretch.at_edge:.0%} of the frames")]
    if n < min_frames:
        return [], [(stretch.start, stretch.stop, "too short", f"{n / 12.5:.2f} s of one face < {min_frames / 12.5:g} s")]
    plans, rejected = [], []
    for a in range(0, n, clip_frames):
        b = min(a + clip_frames, n)
        if b - a < min_frames:
            rejected.append((stretch.start + a, stretch.start + b, "too short",
                             f"{(b - a) / 12.5:.2f} s left after the last clip < {min_frames / 12.5:g} s"))
            continue
        faces = stretch.faces[a:b]
        sizes = np.array([f.size for f in faces])
        centres = np.stack([f.centre for f in faces])
        if np.median(sizes) * SIDE_PER_FACE < min_crop:
            rejected.append((stretch.start + a, stretch.start + b, "face too small",
                             f"crop {np.median(sizes) * SIDE_PER_FACE:.0f} px < {min_crop:.0f} px"))
            continue
        crop = clip_crop(centres, sizes, width, height)
        if crop is None:
            rejected.append((stretch.start + a, stretch.start + b, "face cut off by the frame edge",
                             "the frame is too small for the face's crop (face too close)"))
            continue
        meshes = np.stack([f.mesh for f in faces]) if all(f.mesh is not None for f in faces) else None
        plans.append(ClipPlan(stretch.start + a, stretch.start + b, crop,
                              np.stack([f.landmarks for f in faces]), float(np.median(sizes)), meshes))
    return plans, rejected
