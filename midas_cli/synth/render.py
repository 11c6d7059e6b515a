"""The procedural renderer: identity + mouth + expression + pose -> an RGB frame.

Pure numpy + Pillow and fully deterministic: the same inputs give the same bytes. Frames are
drawn at 2x and box-downsampled (anti-aliasing). Draw order, back to front: background,
shoulders, long hair, neck, ears, head, hair cap, cheeks, eyes, brows, nose, mouth.

``render_clip`` is the one true video for a clip's per-frame truth: it adds the listening
nod (``pose.nod_offsets``) to the pitch of listening frames and draws every frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from midas_cli.errors import MidasError
from midas_cli.synth.constants import DEFAULT_SIZE, N_MOUTH
from midas_cli.synth.geometry import Projector, ellipse
from midas_cli.synth.identity import Identity, as_identity
from midas_cli.synth.pose import nod_offsets
from midas_cli.synth.shapes import EXPRESSION_SHAPES, MOUTH_SHAPES, ExpressionShape

SUPERSAMPLE = 2
_EYE_WHITE = (238, 238, 232)
_MOUTH_DARK = (70, 22, 30)
_TEETH = (242, 240, 232)


def _flat(pts: np.ndarray) -> list[float]:
    return pts.ravel().tolist()


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


def check_size(size: int) -> int:
    """Validate a frame size (even for H.264 yuv420p, big enough to draw a face)."""
    if int(size) < 32 or int(size) % 2:
        raise MidasError(f"--size {size}: frame size must be an even number >= 32")
    return int(size)


@lru_cache(maxsize=64)
def _background(ident: Identity, size: int) -> Image.Image:
    """Vertical (or diagonal) two-colour gradient with a soft vignette."""
    r = np.linspace(0.0, 1.0, size, dtype=np.float32)
    yy, xx = r[:, None], r[None, :]
    t = (0.6 * yy + 0.4 * xx) if ident.bg_diagonal else np.broadcast_to(yy, (size, size))
    top = np.array(ident.bg_top, np.float32)
    bot = np.array(ident.bg_bottom, np.float32)
    vignette = 1.0 - 0.18 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
    img = (top + (bot - top) * t[..., None]) * vignette[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _draw_body(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    cx, S = P.centre[0], P.S
    sy = P.centre[1] + 1.30 * S  # top of the shoulders
    d.polygon(_flat(ellipse(cx, sy + 1.05 * S, 1.55 * S, 1.05 * S, 48)), fill=ident.clothes)
    collar = np.array([[cx - 0.42 * S, sy - 0.02 * S], [cx + 0.42 * S, sy - 0.02 * S],
                       [cx, sy + 0.50 * S]])
    d.polygon(_flat(collar), fill=ident.collar)
    neckline = collar + [[0.1 * S, 0], [-0.1 * S, 0], [0, -0.14 * S]]  # skin V in the collar
    d.polygon(_flat(neckline), fill=ident.skin)


def _draw_long_hair(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    w = ident.face_w * ident.hair_volume + 0.06
    y = np.linspace(-0.4, 1.25, 12)
    right = np.column_stack([w + 0.05 * y, y, np.full_like(y, -0.3)])
    th = np.linspace(0, np.pi, 9)[1:-1]  # rounded ends at the bottom
    tip = np.column_stack([right[-1, 0] * np.cos(th), 1.25 + 0.15 * np.sin(th), np.full(7, -0.3)])
    right = np.vstack([right, tip])
    left = right[:12][::-1] * [-1, 1, 1]
    d.polygon(_flat(P.project(np.vstack([right, left]))), fill=_mix(ident.hair, (0, 0, 0), 0.15))


def _draw_neck(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    top = P.project(np.array([[-0.30, 0.55, -0.15], [0.30, 0.55, -0.15]]))
    cx, S = P.centre[0], P.S
    by = P.centre[1] + 1.45 * S  # the neck ends under the collar, where the body is
    bottom = np.array([[cx + 0.33 * S, by], [cx - 0.33 * S, by]])
    d.polygon(_flat(np.vstack([top, bottom])), fill=_mix(ident.skin, (0, 0, 0), 0.12))


def _draw_head(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    ear_col = _mix(ident.skin, (0, 0, 0), 0.08)
    for s in (-1, 1):
        ear = ellipse(s * (ident.face_w + 0.02), ident.eye_y + 0.12, 0.09, 0.17, 16)
        d.polygon(_flat(P.project(np.column_stack([ear, np.full(len(ear), -0.05)]))), fill=ear_col)
    d.polygon(_flat(P.silhouette(64)), fill=ident.skin)


def _hair_cap(ident: Identity, P: Projector) -> np.ndarray | None:
    """Polygon of the hair over the skull: the hairline on the face, closed by the outline."""
    if ident.hair_style == "bald":
        return None
    y0, yt = ident.hairline, ident.eye_y - 0.12  # crown fringe and temple heights
    u = np.linspace(-1, 1, 25)
    x = u * ident.face_w * np.sqrt(1 - yt**2) * 0.995
    y = y0 + (yt - y0) * np.abs(u) ** 3 + ident.fringe_tilt * 0.15 * u
    if ident.hair_style == "side":  # a swept fringe on one side
        y = y + 0.14 * np.exp(-((u - 0.35 * np.sign(ident.fringe_tilt or 1)) / 0.35) ** 2)
    line = P.surface(np.column_stack([x, y]))
    n = 72
    blob = P.silhouette(n, inflate=ident.hair_volume)
    if ident.hair_style == "curly":
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        blob = P.centre + (blob - P.centre) * (1 + 0.05 * np.sin(14 * th))[:, None]
    e1, e2 = line[0], line[-1]
    chord = e2 - e1
    up = P.up()
    up_side = np.sign(chord[0] * up[1] - chord[1] * up[0])
    rel = blob - e1
    keep = np.sign(chord[0] * rel[:, 1] - chord[1] * rel[:, 0]) == up_side
    if not keep.any() or keep.all():
        return line
    start = int(np.flatnonzero(~keep)[0])
    blob, keep = np.roll(blob, -start, axis=0), np.roll(keep, -start)
    arc = blob[keep]
    if np.linalg.norm(arc[0] - e2) > np.linalg.norm(arc[-1] - e2):
        arc = arc[::-1]
    return np.vstack([line, arc])


def _draw_hair(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    if ident.hair_style == "bun":
        c = P.project(np.array([[0.0, -1.05, -0.25]]))[0]
        r = 0.30 * P.S
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=_mix(ident.hair, (0, 0, 0), 0.1))
    cap = _hair_cap(ident, P)
    if cap is not None:
        d.polygon(_flat(cap), fill=ident.hair)


def _draw_eyes(d: ImageDraw.ImageDraw, ident: Identity, P: Projector, ex: ExpressionShape) -> None:
    u = np.linspace(-1, 1, 15)
    ew, eh = ident.eye_w, ident.eye_h * ex.eye_open
    lash = max(1, int(round(0.022 * P.S)))
    th = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    for s in (-1, 1):
        cx, cy = s * ident.eye_x, ident.eye_y
        upper = cy - eh * (1 - u**2) ** 0.7
        lower = cy + 0.85 * eh * (1 - u**2) ** 0.9
        almond = np.vstack([np.column_stack([cx + ew * u, upper]),
                            np.column_stack([cx + ew * u, lower])[::-1]])
        d.polygon(_flat(P.surface(almond)), fill=_EYE_WHITE)
        for radius, colour in ((0.52 * ew, ident.eye_colour), (0.24 * ew, (15, 12, 12))):
            px, py = cx + radius * np.cos(th), cy + radius * np.sin(th)
            uu = (px - cx) / ew
            py = np.clip(py, cy - eh * (1 - uu**2) ** 0.7, cy + 0.85 * eh * (1 - uu**2) ** 0.9)
            d.polygon(_flat(P.surface(np.column_stack([px, py]), 0.005)), fill=colour)
        d.line(_flat(P.surface(np.column_stack([cx + ew * u, upper]), 0.01)),
               fill=(30, 22, 20), width=lash, joint="curve")


def _draw_brows(d: ImageDraw.ImageDraw, ident: Identity, P: Projector, ex: ExpressionShape) -> None:
    colour = tuple(min(int(h * 0.5), int(k * 0.35)) for h, k in zip(ident.hair, ident.skin))
    t = np.linspace(0, 1, 9)  # inner -> outer
    half = ident.brow_thickness * (1 - 0.4 * t) / 2
    for s in (-1, 1):
        x = s * (ident.eye_x - ident.eye_w * 0.9 + t * ident.eye_w * 2.1)
        y = (ident.eye_y - ident.brow_gap - ex.brow_raise + ex.brow_inner * (1 - t)
             - ex.brow_arch * np.sin(np.pi * t))
        band = np.vstack([np.column_stack([x, y - half]), np.column_stack([x, y + half])[::-1]])
        d.polygon(_flat(P.surface(band, 0.01)), fill=colour)


def _draw_nose(d: ImageDraw.ImageDraw, ident: Identity, P: Projector) -> None:
    top = ident.eye_y + 0.04
    tip = ident.eye_y + 0.05 + ident.nose_len
    w = ident.nose_w
    pts = np.array([[-0.025, top], [-w, tip], [0.0, tip + 0.035], [w, tip], [0.025, top]])
    lift = np.array([0.02, 0.05, 0.12, 0.05, 0.02])
    d.polygon(_flat(P.surface(pts, lift)), fill=_mix(ident.skin, (0, 0, 0), 0.14))
    tip_pts = np.array([[-0.6 * w, tip], [0.0, tip + 0.035], [0.6 * w, tip]])
    d.line(_flat(P.surface(tip_pts, np.array([0.07, 0.13, 0.07]))),
           fill=_mix(ident.skin, (0, 0, 0), 0.4), width=max(1, int(0.02 * P.S)))


def _draw_mouth(d: ImageDraw.ImageDraw, ident: Identity, P: Projector, mouth: int,
                ex: ExpressionShape) -> None:
    m = MOUTH_SHAPES[mouth]
    width_mult = ex.mouth_width if mouth == 0 else m.width * (1 + 0.5 * (ex.mouth_width - 1))
    hw = ident.mouth_w * width_mult
    u = np.linspace(-1, 1, 17)
    x = hw * u
    bulge = np.sqrt(1 - u**2)
    curve = ident.mouth_y + ex.corner * u**2
    up_in, lo_in = curve - m.open_up * bulge, curve + m.open_lo * bulge
    lip = ident.lip_t * m.lip_scale
    up_out = up_in - lip * (1 - u**2) ** 0.4
    lo_out = lo_in + 1.2 * lip * (1 - u**2) ** 0.4
    outer = np.vstack([np.column_stack([x, up_out]), np.column_stack([x, lo_out])[::-1]])
    d.polygon(_flat(P.surface(outer, 0.02)), fill=ident.lips)
    if m.open_up + m.open_lo == 0:
        d.line(_flat(P.surface(np.column_stack([x, curve]), 0.025)),
               fill=_mix(ident.lips, (0, 0, 0), 0.55), width=max(1, int(0.028 * P.S)),
               joint="curve")
        return
    inner = np.vstack([np.column_stack([x, up_in]), np.column_stack([x, lo_in])[::-1]])
    d.polygon(_flat(P.surface(inner, 0.02)), fill=_MOUTH_DARK)
    if m.teeth > 0:
        teeth_lo = np.minimum(up_in + m.teeth * bulge, lo_in)
        teeth = np.vstack([np.column_stack([x, up_in]), np.column_stack([x, teeth_lo])[::-1]])
        d.polygon(_flat(P.surface(teeth, 0.021)), fill=_TEETH)


def _draw_cheeks(d: ImageDraw.ImageDraw, ident: Identity, P: Projector,
                 ex: ExpressionShape) -> None:
    if ex.blush <= 0:
        return
    colour = _mix(ident.skin, (225, 95, 100), ex.blush)
    for s in (-1, 1):
        d.polygon(_flat(P.surface(ellipse(s * 0.44, ident.mouth_y - 0.25, 0.11, 0.07, 16), 0.01)),
                  fill=colour)


def render_frame(identity: int | Identity, mouth: int = 0, expression: int = 0,
                 pose: np.ndarray | None = None, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One frame, uint8 (size, size, 3). ``pose`` is (yaw, pitch, roll, x, y, scale)."""
    ident = as_identity(identity)
    size = check_size(size)
    if not 0 <= int(mouth) < N_MOUTH or int(expression) not in EXPRESSION_SHAPES:
        raise ValueError(f"mouth {mouth} / expression {expression} out of range")
    big = size * SUPERSAMPLE
    pose = np.zeros(6) if pose is None else np.asarray(pose, dtype=np.float64)
    P = Projector(ident, pose, big)
    ex = EXPRESSION_SHAPES[int(expression)]
    img = _background(ident, big).copy()
    d = ImageDraw.Draw(img)
    _draw_body(d, ident, P)
    if ident.hair_style == "long":
        _draw_long_hair(d, ident, P)
    _draw_neck(d, ident, P)
    _draw_head(d, ident, P)
    _draw_hair(d, ident, P)
    _draw_cheeks(d, ident, P, ex)
    _draw_eyes(d, ident, P, ex)
    _draw_brows(d, ident, P, ex)
    _draw_nose(d, ident, P)
    _draw_mouth(d, ident, P, int(mouth), ex)
    return np.asarray(img.reduce(SUPERSAMPLE))


def render_reference(identity: int | Identity, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The identity's neutral reference image: pose 0, mouth closed, neutral, not listening."""
    return render_frame(identity, 0, 0, None, size)


def render_clip(identity: int | Identity, mouth: np.ndarray, pose: np.ndarray,
                expression: np.ndarray, listening: np.ndarray | None = None,
                size: int = DEFAULT_SIZE) -> np.ndarray:
    """The true video (T, size, size, 3) uint8 for per-frame truth arrays of length T.

    ``pose`` is (T, 6) as in the pose JSON; listening frames get the nod added to pitch.
    """
    mouth = np.asarray(mouth, dtype=np.int64)
    expression = np.asarray(expression, dtype=np.int64)
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 6)
    T = len(mouth)
    listening = np.zeros(T, bool) if listening is None else np.asarray(listening, dtype=bool)
    if not (len(pose) == len(expression) == len(listening) == T):
        raise ValueError("mouth, pose, expression and listening must have the same length")
    drawn_pose = pose.copy()
    drawn_pose[:, 1] += nod_offsets(listening)
    size = check_size(size)
    out = np.empty((T, size, size, 3), dtype=np.uint8)
    ident = as_identity(identity)
    for t in range(T):
        out[t] = render_frame(ident, int(mouth[t]), int(expression[t]), drawn_pose[t], size)
    return out
