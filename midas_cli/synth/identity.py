"""Identities: every visual trait of a synthetic person, derived from one integer id.

The id seeds its own random stream, so identity 421 looks the same on every machine and in
every run, and 10,000 ids give 10,000 different people (continuous face proportions and
colours on top of a handful of discrete hair styles). Ids with ``id % 10 == 9`` are the test
split (see ``splits``).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from midas_cli.errors import MidasError

N_IDENTITIES = 10_000

# Hair styles; each is drawn by render.py from the same few primitives.
HAIR_STYLES = ("bald", "short", "long", "bun", "curly", "side")
_HAIR_STYLE_P = (0.08, 0.28, 0.22, 0.12, 0.15, 0.15)

_SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 158), (224, 172, 130), (198, 134, 96),
     (161, 102, 68), (120, 76, 50), (88, 56, 38), (236, 206, 180)], dtype=np.float64)
_HAIR_COLOURS = np.array(
    [(25, 20, 18), (60, 38, 25), (105, 70, 40), (170, 130, 80), (220, 190, 120),
     (150, 60, 30), (190, 190, 195), (240, 240, 240), (60, 80, 170), (180, 60, 140)],
    dtype=np.float64)
_EYE_COLOURS = np.array(
    [(70, 45, 25), (110, 75, 40), (60, 110, 170), (80, 140, 90), (120, 130, 140), (40, 30, 25)],
    dtype=np.float64)

RGB = tuple[int, int, int]


def _rgb(x: np.ndarray) -> RGB:
    c = np.clip(np.round(x), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return _rgb(np.array([r, g, b]) * 255)


@dataclass(frozen=True)
class Identity:
    """Everything the renderer needs to draw one person; lengths in head half-heights."""

    id: int
    face_w: float  # head half-width / half-height
    face_depth: float  # head depth radius (how far features move with yaw/pitch)
    skin: RGB
    lips: RGB
    hair: RGB
    hair_style: str
    hairline: float  # y of the fringe (negative = up)
    hair_volume: float  # how far the hair sticks out of the skull
    fringe_tilt: float  # slope of the hairline across the forehead
    eye_colour: RGB
    eye_x: float  # half distance between the eyes
    eye_y: float
    eye_w: float
    eye_h: float
    brow_thickness: float
    brow_gap: float  # height of the brows above the eye centre
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float  # mouth half-width
    lip_t: float  # lip thickness
    clothes: RGB
    collar: RGB
    bg_top: RGB
    bg_bottom: RGB
    bg_diagonal: bool


@lru_cache(maxsize=4096)
def make_identity(identity_id: int) -> Identity:
    """Derive identity ``identity_id`` (0 <= id < N_IDENTITIES) deterministically."""
    if not 0 <= int(identity_id) < N_IDENTITIES:
        raise MidasError(f"identity {identity_id}: must be in [0, {N_IDENTITIES})")
    rng = np.random.default_rng(np.random.SeedSequence([0x1D, int(identity_id)]))
    u = rng.uniform

    skin_base = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    skin = skin_base * u(0.92, 1.06) + rng.normal(0, 6, 3)
    lips = skin * np.array([0.85, 0.55, 0.55]) + np.array([30, 0, 5])
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * u(0.85, 1.1) + rng.normal(0, 8, 3)
    eye = _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.normal(0, 10, 3)
    style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P))]

    clothes = _hsv(u(), u(0.25, 0.85), u(0.3, 0.9))
    collar = _hsv(u(), u(0.0, 0.3), u(0.75, 1.0))
    hue = u()
    bg_top = _hsv(hue, u(0.05, 0.5), u(0.55, 0.95))
    bg_bottom = _hsv(hue + u(-0.15, 0.15), u(0.05, 0.6), u(0.25, 0.7))

    return Identity(
        id=int(identity_id),
        face_w=float(u(0.68, 0.86)),
        face_depth=float(u(0.80, 0.95)),
        skin=_rgb(skin),
        lips=_rgb(lips),
        hair=_rgb(hair),
        hair_style=style,
        hairline=float(u(-0.78, -0.58)),
        hair_volume=float(u(1.04, 1.16)),
        fringe_tilt=float(u(-0.25, 0.25)),
        eye_colour=_rgb(eye),
        eye_x=float(u(0.27, 0.35)),
        eye_y=float(u(-0.14, -0.04)),
        eye_w=float(u(0.11, 0.145)),
        eye_h=float(u(0.060, 0.080)),
        brow_thickness=float(u(0.035, 0.06)),
        brow_gap=float(u(0.15, 0.20)),
        nose_len=float(u(0.20, 0.30)),
        nose_w=float(u(0.06, 0.09)),
        mouth_y=float(u(0.46, 0.54)),
        mouth_w=float(u(0.17, 0.22)),
        lip_t=float(u(0.035, 0.055)),
        clothes=clothes,
        collar=collar,
        bg_top=bg_top,
        bg_bottom=bg_bottom,
        bg_diagonal=bool(rng.random() < 0.4),
    )


def as_identity(identity: "int | Identity") -> Identity:
    """Accept an id or an Identity (the renderer's public functions take either)."""
    return identity if isinstance(identity, Identity) else make_identity(int(identity))
