"""The judges: small CNNs that read mouth state, expression and head pose off a frame.

They are trained on true frames of the synthetic world (``train_judges``) and shipped inside
the package (``weights/judges.safetensors`` + ``weights/judges.json``), so scoring a generator
needs no training and no network. Each judge resizes its input to its own ``in_size``
(anti-aliased), so it scores frames of any size (64x64 demo output, 128x128 truth, ...).

Two stages: the pose judge reads (yaw, pitch, roll, x, y, scale) off the whole frame; its
x, y, scale and roll then cut an upright, size-normalised face crop (``face_crops``) on which
the mouth and expression judges work. Aligning first lets tiny nets see the small cues (lip
opening, brow height) at a fixed place and scale. The pose judge flattens its last feature
map (where the head is matters); the crop judges pool globally.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from midas_cli.errors import MidasError
from midas_cli.synth.geometry import head_frame

WEIGHTS_DIR = Path(__file__).parent / "weights"
JUDGE_NAMES = ("mouth", "expression", "pose")
POSE_OUT = 6  # yaw, pitch, roll, x, y, scale


@dataclass(frozen=True)
class JudgeNetConfig:
    out_dim: int
    in_size: int = 128  # frames are resized to in_size x in_size
    widths: tuple[int, ...] = (12, 24, 32, 48, 48)  # one stride-2 conv block per width
    head: str = "pool"  # "pool": global avg+max; "flatten": keep the final map's layout
    hidden: int = 64

    @property
    def final_map(self) -> int:
        s = self.in_size
        for _ in self.widths:
            s = (s + 1) // 2
        return s


class JudgeNet(nn.Module):
    """conv(3x3, stride 2) + BN + ReLU blocks, then a two-layer head."""

    def __init__(self, cfg: JudgeNetConfig):
        super().__init__()
        self.cfg = cfg
        blocks, c = [], 3
        for i, w in enumerate(cfg.widths):
            blocks += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True)]
            if i >= 1:  # one extra stride-1 conv at each coarser scale: cheap depth
                blocks += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*blocks)
        feat = 2 * c if cfg.head == "pool" else c * cfg.final_map**2
        self.head = nn.Sequential(nn.Linear(feat, cfg.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.hidden, cfg.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float in [0, 1] -> (B, out_dim)."""
        if x.shape[-1] != self.cfg.in_size or x.shape[-2] != self.cfg.in_size:
            x = F.interpolate(x, size=(self.cfg.in_size, self.cfg.in_size), mode="bilinear",
                              antialias=True, align_corners=False)
        h = self.features(x - 0.5)  # (B, C, s, s)
        if self.cfg.head == "pool":
            h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        else:
            h = h.flatten(1)
        return self.head(h)


@dataclass(frozen=True)
class CropConfig:
    """The face crop in head half-heights: centred at (0, centre_y), +-half_extent wide."""

    size: int = 64
    half_extent: float = 0.95
    centre_y: float = 0.05


def face_crops(x: torch.Tensor, pose: torch.Tensor, crop: CropConfig) -> torch.Tensor:
    """Upright face crops (B, 3, crop.size, crop.size) from frames x (B, 3, H, W) in [0, 1].

    ``pose`` (B, 6) in physical units; uses x, y, scale (where and how big the head is, the
    renderer's geometry) and roll (undone, so the face is upright).
    """
    B, _, H, W = x.shape
    roll = torch.deg2rad(pose[:, 2])
    cx, cy, S = head_frame(pose[:, 3], pose[:, 4], pose[:, 5], H, W)  # S: pixels per head half-height
    cos, sin = torch.cos(roll), torch.sin(roll)
    R, v0 = crop.half_extent, crop.centre_y
    theta = torch.zeros(B, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = 2 * S * R * cos / W, -2 * S * R * sin / W
    theta[:, 1, 0], theta[:, 1, 1] = 2 * S * R * sin / H, 2 * S * R * cos / H
    theta[:, 0, 2] = 2 * (cx - S * sin * v0) / W - 1
    theta[:, 1, 2] = 2 * (cy + S * cos * v0) / H - 1
    grid = F.affine_grid(theta, [B, 3, crop.size, crop.size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class Judges:
    """The three trained judges plus the pose normalisation they were trained with."""

    mouth: JudgeNet
    expression: JudgeNet
    pose: JudgeNet
    pose_scale: np.ndarray  # network output * pose_scale = (yaw, pitch, roll, x, y, scale)
    crop: CropConfig = CropConfig()
    info: dict = field(default_factory=dict)  # recipe and held-out accuracies

    def nets(self) -> dict[str, JudgeNet]:
        return {"mouth": self.mouth, "expression": self.expression, "pose": self.pose}

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 128) -> dict[str, np.ndarray]:
        """frames uint8 (N, H, W, 3) -> mouth (N,), expression (N,), pose (N, 6)."""
        for net in self.nets().values():
            net.eval()
        out = {"mouth": [], "expression": [], "pose": []}
        scale = torch.as_tensor(self.pose_scale, dtype=torch.float32)
        for i in range(0, len(frames), batch):
            x = frames_to_tensor(frames[i:i + batch])
            pose = self.pose(x) * scale
            face = face_crops(x, pose, self.crop)
            out["mouth"].append(self.mouth(face).argmax(1))
            out["expression"].append(self.expression(face).argmax(1))
            out["pose"].append(pose)
        return {k: torch.cat(v).numpy() if v else np.zeros((0,)) for k, v in out.items()}


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.tensor(np.asarray(frames, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def save_judges(judges: Judges, directory: Path = WEIGHTS_DIR) -> Path:
    """Write ``judges.safetensors`` (keys ``<judge>.<param>``) and ``judges.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().contiguous().clone()
               for name, net in judges.nets().items() for k, v in net.state_dict().items()}
    save_file(tensors, str(directory / "judges.safetensors"))
    (directory / "judges.safetensors").chmod(0o644)  # safetensors writes 0600; ship readable
    meta = {"version": 1,
            "configs": {name: asdict(net.cfg) for name, net in judges.nets().items()},
            "pose_scale": [float(v) for v in judges.pose_scale], "crop": asdict(judges.crop),
            **judges.info}
    (directory / "judges.json").write_text(json.dumps(meta, indent=2))
    return directory / "judges.safetensors"


def load_judges(directory: Path | str | None = None) -> Judges:
    """Load judges from ``directory`` (default: the weights shipped in the package)."""
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    if directory == WEIGHTS_DIR:
        return _load_shipped()
    return _load(directory)


@lru_cache(maxsize=1)
def _load_shipped() -> Judges:
    return _load(WEIGHTS_DIR)


def _load(directory: Path) -> Judges:
    weights, meta_path = directory / "judges.safetensors", directory / "judges.json"
    if not weights.is_file() or not meta_path.is_file():
        raise MidasError(f"{directory}: no judges.safetensors + judges.json here "
                         "(train them with midas_cli.evaluation.train_judges)")
    meta = json.loads(meta_path.read_text())
    state = load_file(str(weights))
    nets = {}
    for name in JUDGE_NAMES:
        cfg = meta["configs"][name]
        cfg = JudgeNetConfig(**{**cfg, "widths": tuple(cfg["widths"])})
        net = JudgeNet(cfg)
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                             if k.startswith(prefix)})
        nets[name] = net.eval()
    info = {k: v for k, v in meta.items()
            if k not in ("configs", "pose_scale", "crop", "version")}
    return Judges(**nets, pose_scale=np.array(meta["pose_scale"], dtype=np.float32),
                  crop=CropConfig(**meta["crop"]), info=info)
