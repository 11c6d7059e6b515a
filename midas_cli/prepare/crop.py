"""One fixed square crop per clip, framed the way the synthetic training faces are framed.

Framing is set by two landmark measures that barely move when the head turns: the face
centre (midway between the eyes and the mouth) and the eye-to-mouth distance. On the synth
world's references (34 identities dlib detects, 256 px) the frame is 5.78 ± 0.26 eye-to-mouth
distances wide with the face centre at (0.497, 0.501) of it; real heads have nearly the same
proportions (eye-to-mouth ≈ 0.29 of the head's height vs 0.275 for the synth heads), so a
real clip cropped this way looks to a checkpoint like its training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE_PER_FACE = 5.8  # crop side ÷ eye-to-mouth distance
CENTRE = (0.5, 0.5)  # where the face centre sits in the crop (fractions)
MAX_SHRINK = 0.75  # a crop may shrink to fit the frame down to this fraction of its ideal side


@dataclass(frozen=True)
class Crop:
    x0: float
    y0: float
    side: float

    def box(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    def apply(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The crop of `frame` resized to size × size (area-averaged when shrinking)."""
        import cv2

        s = size / self.side
        M = np.array([[s, 0, -self.x0 * s], [0, s, -self.y0 * s]])
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
        if s < 1:  # INTER_AREA only averages in cv2.resize: crop first, then resize
            x0, y0 = int(round(self.x0)), int(round(self.y0))
            side = int(round(self.side))
            sub = frame[max(y0, 0):y0 + side, max(x0, 0):x0 + side]
            if sub.shape[0] == side and sub.shape[1] == side:
                return cv2.resize(np.ascontiguousarray(sub), (size, size), interpolation=interp)
        return cv2.warpAffine(np.ascontiguousarray(frame), M, (size, size), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REPLICATE)


def ideal_crop(centre: np.ndarray, face_size: float) -> Crop:
    side = SIDE_PER_FACE * face_size
    return Crop(float(centre[0] - CENTRE[0] * side), float(centre[1] - CENTRE[1] * side), float(side))


def fit_inside(crop: Crop, width: int, height: int) -> Crop | None:
    """The crop shrunk (not below MAX_SHRINK) and moved to lie inside the frame; None if it cannot."""
    side = crop.side
    if side > min(width, height):
        if min(width, height) < MAX_SHRINK * side:
            return None
        cx, cy = crop.x0 + side / 2, crop.y0 + side / 2
        side = float(min(width, height))
        crop = Crop(cx - side / 2, cy - side / 2, side)
    x0 = float(np.clip(crop.x0, 0, width - side))
    y0 = float(np.clip(crop.y0, 0, height - side))
    return Crop(x0, y0, side)


def clip_crop(centres: np.ndarray, sizes: np.ndarray, width: int, height: int) -> Crop | None:
    """One crop for a whole clip: the median face centre and size, so the head moves inside it."""
    return fit_inside(ideal_crop(np.median(centres, axis=0), float(np.median(sizes))), width, height)
