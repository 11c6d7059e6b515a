"""How each mouth class and expression class looks, as a few numbers the renderer reads.

Kept apart from the drawing code so the visual vocabulary of the world (what "round mouth"
or "surprised" means) can be read and tuned in one place. Lengths are in head half-heights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MouthShape:
    width: float  # multiplier of the identity's mouth half-width
    open_up: float  # opening above the lip line
    open_lo: float  # opening below the lip line
    teeth: float  # visible upper-teeth height
    lip_scale: float  # lip thickness multiplier (rounded lips look fuller)


MOUTH_SHAPES = {
    0: MouthShape(width=1.00, open_up=0.000, open_lo=0.000, teeth=0.000, lip_scale=1.0),  # closed
    1: MouthShape(width=0.80, open_up=0.060, open_lo=0.170, teeth=0.035, lip_scale=0.9),  # "a"
    2: MouthShape(width=0.48, open_up=0.075, open_lo=0.085, teeth=0.000, lip_scale=1.5),  # "o/u"
    3: MouthShape(width=1.18, open_up=0.035, open_lo=0.040, teeth=0.030, lip_scale=0.8),  # "i/e"
}


@dataclass(frozen=True)
class ExpressionShape:
    brow_raise: float  # brows move up by this much
    brow_inner: float  # inner brow ends drop by this much (a V: anger)
    brow_arch: float  # extra arch in the brow middle
    eye_open: float  # eye height multiplier
    corner: float  # mouth-corner offset (negative = corners up)
    mouth_width: float  # closed-mouth width multiplier
    blush: float  # cheek colour strength (smile)


EXPRESSION_SHAPES = {
    0: ExpressionShape(0.00, 0.00, 0.02, 1.00, 0.000, 1.00, 0.0),  # neutral
    1: ExpressionShape(0.02, -0.01, 0.03, 0.65, -0.080, 1.12, 0.35),  # smiling
    2: ExpressionShape(0.13, -0.03, 0.06, 1.55, 0.000, 0.78, 0.0),  # surprised
    3: ExpressionShape(-0.05, 0.08, -0.01, 0.80, 0.075, 0.95, 0.0),  # frowning
}
