"""The judge-training recipe: a YAML file (recipes/judges.yaml) validated into dataclasses.

Sizes, steps and the seed live only in the recipe; the trained weights' ``judges.json``
records the recipe they came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from midas_cli.errors import MidasError

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "judges.yaml"


@dataclass
class NetRecipe:
    in_size: int = 96
    widths: list[int] = field(default_factory=lambda: [12, 24, 32, 48, 48])
    head: str = "pool"
    hidden: int = 64


@dataclass
class CropRecipe:
    """Face crop fed to the mouth and expression judges (see judges.CropConfig)."""

    size: int = 64
    half_extent: float = 0.95
    centre_y: float = 0.05
    jitter: list[float] = field(default_factory=lambda: [3.0, 0.01, 0.01, 0.04])
    # training-time crop error: roll (deg), x, y (frame fractions), scale: the pose judge's slack


@dataclass
class PoseRangeRecipe:
    """Half-ranges of the poses drawn for training frames (a bit wider than clips use)."""

    yaw: float = 36.0
    pitch: float = 20.0
    roll: float = 14.0
    x: float = 0.09
    y: float = 0.06
    scale: float = 0.14

    def as_list(self) -> list[float]:
        return [self.yaw, self.pitch, self.roll, self.x, self.y, self.scale]


@dataclass
class JudgeRecipe:
    seed: int = 0
    size: int = 128  # render size of training frames
    train_frames: int = 12000
    val_frames: int = 1000
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 1  # torch threads: leave the other core free
    augment: bool = True
    mouth: NetRecipe = field(default_factory=lambda: NetRecipe(in_size=64, widths=[16, 32, 48, 64]))
    expression: NetRecipe = field(default_factory=lambda: NetRecipe(
        in_size=64, widths=[16, 32, 48, 64]))
    pose: NetRecipe = field(default_factory=lambda: NetRecipe(
        in_size=64, widths=[16, 32, 48, 48], head="flatten", hidden=32))
    crop: CropRecipe = field(default_factory=CropRecipe)
    pose_ranges: PoseRangeRecipe = field(default_factory=PoseRangeRecipe)

    def to_dict(self) -> dict:
        return asdict(self)


_NESTED = {"mouth": NetRecipe, "expression": NetRecipe, "pose": NetRecipe,
           "crop": CropRecipe, "pose_ranges": PoseRangeRecipe}


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise MidasError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise MidasError(f"{where}.{key}: unknown field (known: {', '.join(known)})")
        if key in _NESTED and cls is JudgeRecipe:
            kwargs[key] = _build(_NESTED[key], value, f"{where}.{key}")
        else:
            kwargs[key] = value
    obj = cls(**kwargs)
    for f in fields(obj):
        default = getattr(cls(), f.name)
        value = getattr(obj, f.name)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise MidasError(f"{where}.{f.name}: expected true/false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise MidasError(f"{where}.{f.name}: expected a number, got {value!r}")
            if value < 0:
                raise MidasError(f"{where}.{f.name}: must not be negative, got {value!r}")
    return obj


def load_judge_recipe(path: Path | str | None = None) -> JudgeRecipe:
    """Read and validate a judge recipe; no path = recipes/judges.yaml, or the defaults."""
    path = Path(path) if path is not None else DEFAULT_RECIPE
    if not path.is_file():
        if path == DEFAULT_RECIPE:
            return JudgeRecipe()
        raise MidasError(f"{path}: judge recipe not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MidasError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    recipe = _build(JudgeRecipe, data, path.name)
    for name in ("mouth", "expression", "pose"):
        net = getattr(recipe, name)
        if net.head not in ("pool", "flatten"):
            raise MidasError(f"{path.name}.{name}.head: 'pool' or 'flatten', got {net.head!r}")
    if recipe.steps < 1 or recipe.batch_size < 1 or recipe.train_frames < recipe.batch_size:
        raise MidasError(f"{path.name}: need steps >= 1 and train_frames >= batch_size >= 1")
    return recipe
