"""Train the judges on true rendered frames and write them into the package.

Run:  python -m midas_cli.evaluation.train_judges [recipes/judges.yaml] [--out DIR]

Training frames use train-split identities with uniformly random mouth, expression and pose;
held-out accuracy is measured on test-split identities and on the frames of real test clips
(``make_eval_cases``), the distribution the benchmark scores. Augmentation (down/up-sampling,
blur, noise, colour jitter) keeps the judges fair to generated frames, which are never as
crisp as the renderer's.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from midas_cli.evaluation.judges import (POSE_OUT, WEIGHTS_DIR, CropConfig, JudgeNet,
                                         JudgeNetConfig, Judges, face_crops, frames_to_tensor,
                                         n_params, save_judges)
from midas_cli.errors import MidasError
from midas_cli.evaluation.recipe import JudgeRecipe, NetRecipe, load_judge_recipe
from midas_cli.synth.constants import N_MOUTH
from midas_cli.synth.expressions import N_EXPRESSION
from midas_cli.synth.identity import N_IDENTITIES
from midas_cli.synth.render import render_frame
from midas_cli.synth.splits import PURPOSE_JUDGE, draw_id, stream


def render_samples(rng: np.random.Generator, n: int, split: str, size: int,
                   half_ranges: list[float]) -> dict[str, np.ndarray]:
    """``n`` frames of random people/mouths/expressions/poses with their labels."""
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    mouth = rng.integers(0, N_MOUTH, n)
    expression = rng.integers(0, N_EXPRESSION, n)
    pose = (rng.uniform(-1, 1, (n, POSE_OUT)) * np.array(half_ranges)).astype(np.float32)
    pose[rng.random(n) < 0.1] = 0.0  # the reference pose is common in clips: cover it exactly
    for i in range(n):
        ident = draw_id(rng, split, N_IDENTITIES)
        frames[i] = render_frame(ident, int(mouth[i]), int(expression[i]), pose[i], size)
    return {"frames": frames, "mouth": mouth, "expression": expression, "pose": pose}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random degradations, per batch: resample, blur, colour jitter, noise."""
    B, _, H, W = x.shape

    def coin(p: float) -> bool:
        return bool(torch.rand((), generator=gen) < p)

    if coin(0.5):
        f = float(torch.empty(()).uniform_(0.4, 0.8, generator=gen))
        small = (max(16, int(H * f)), max(16, int(W * f)))
        x = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
        x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    if coin(0.25):
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    gain = torch.empty(B, 1, 1, 1).uniform_(0.85, 1.15, generator=gen)
    bias = torch.empty(B, 3, 1, 1).uniform_(-0.06, 0.06, generator=gen)
    x = x * gain + bias
    if coin(0.5):
        x = x + torch.randn(x.shape, generator=gen) * float(
            torch.empty(()).uniform_(0.0, 0.04, generator=gen))
    return x.clamp(0.0, 1.0)


def _net(cfg: NetRecipe, out_dim: int) -> JudgeNet:
    return JudgeNet(JudgeNetConfig(out_dim=out_dim, in_size=cfg.in_size,
                                   widths=tuple(cfg.widths), head=cfg.head, hidden=cfg.hidden))


def score(judges: Judges, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Held-out accuracy of the classifiers and mean absolute error of the pose judge."""
    pred = judges.predict(data["frames"])
    err = np.abs(pred["pose"] - data["pose"]).mean(0)
    return {"mouth_acc": float((pred["mouth"] == data["mouth"]).mean()),
            "expression_acc": float((pred["expression"] == data["expression"]).mean()),
            "yaw_mae_deg": float(err[0]), "pitch_mae_deg": float(err[1]),
            "roll_mae_deg": float(err[2]), "xy_mae": float(err[3:5].mean()),
            "scale_mae": float(err[5])}


def clip_samples(n_cases: int = 4, seconds: float = 12.0, size: int = 128) -> dict[str, np.ndarray]:
    """True frames of held-out benchmark clips, labelled with what was actually drawn."""
    from midas_cli.evaluation.cases import make_eval_cases
    from midas_cli.synth.pose import nod_offsets

    cases = make_eval_cases(n_cases, seconds, seed=12345, size=size)
    poses = []
    for c in cases:
        p = c.pose.copy()
        p[:, 1] += nod_offsets(c.listening)
        poses.append(p)
    return {"frames": np.concatenate([c.frames for c in cases]),
            "mouth": np.concatenate([c.mouth for c in cases]),
            "expression": np.concatenate([c.expression for c in cases]),
            "pose": np.concatenate(poses).astype(np.float32)}


def train_judges(recipe: JudgeRecipe | Path | str | None = None, out_dir: Path | str = WEIGHTS_DIR,
                 progress: bool = True) -> dict:
    """Train the three judges per ``recipe``, save them to ``out_dir``, return held-out scores."""
    if not isinstance(recipe, JudgeRecipe):
        recipe = load_judge_recipe(recipe)
    torch.set_num_threads(max(1, int(recipe.threads)))
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    log = print if progress else (lambda *a, **k: None)

    t0 = time.time()
    half = recipe.pose_ranges.as_list()
    train = render_samples(stream(PURPOSE_JUDGE, "train", recipe.seed), recipe.train_frames,
                           "train", recipe.size, half)
    val = render_samples(stream(PURPOSE_JUDGE, "test", recipe.seed), recipe.val_frames,
                         "test", recipe.size, half)
    log(f"rendered {recipe.train_frames} + {recipe.val_frames} frames in {time.time() - t0:.1f}s")

    pose_scale = np.array(half, dtype=np.float32)
    crop = CropConfig(size=recipe.crop.size, half_extent=recipe.crop.half_extent,
                      centre_y=recipe.crop.centre_y)
    if recipe.mouth.in_size != crop.size or recipe.expression.in_size != crop.size:
        raise MidasError("judges recipe: mouth.in_size and expression.in_size must equal crop.size")
    judges = Judges(mouth=_net(recipe.mouth, N_MOUTH),
                    expression=_net(recipe.expression, N_EXPRESSION),
                    pose=_net(recipe.pose, POSE_OUT), pose_scale=pose_scale, crop=crop)
    jitter = torch.tensor([0, 0, *recipe.crop.jitter], dtype=torch.float32)  # no yaw/pitch use
    params = [p for net in judges.nets().values() for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / recipe.steps)))
    frames = train["frames"]
    mouth = torch.from_numpy(train["mouth"])
    expression = torch.from_numpy(train["expression"])
    true_pose = torch.from_numpy(train["pose"])
    pose = true_pose / torch.from_numpy(pose_scale)

    t1 = time.time()
    for net in judges.nets().values():
        net.train()
    for step in range(recipe.steps):
        idx = torch.randint(0, len(frames), (recipe.batch_size,), generator=gen)
        x = frames_to_tensor(frames[idx.numpy()])
        if recipe.augment:
            x = augment(x, gen)
        crop_pose = true_pose[idx] + jitter * (2 * torch.rand(len(idx), 6, generator=gen) - 1)
        face = face_crops(x, crop_pose, crop)
        loss_m = F.cross_entropy(judges.mouth(face), mouth[idx])
        loss_e = F.cross_entropy(judges.expression(face), expression[idx])
        loss_p = F.smooth_l1_loss(judges.pose(x), pose[idx], beta=0.05)
        loss = loss_m + loss_e + 4.0 * loss_p
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step % 100 == 0 or step == recipe.steps - 1):
            log(f"step {step:5d}  mouth {loss_m.item():.3f}  expr {loss_e.item():.3f}  "
                f"pose {loss_p.item():.4f}  ({time.time() - t1:.0f}s)")
    train_s = time.time() - t1

    heldout = score(judges, val)
    clips = score(judges, clip_samples(size=recipe.size))
    judges.info = {
        "recipe": recipe.to_dict(),
        "heldout_test_identities": heldout,
        "heldout_test_clips": clips,
        "params": {name: n_params(net) for name, net in judges.nets().items()},
        "train_seconds": round(train_s, 1),
        "render_seconds": round(t1 - t0, 1),
    }
    save_judges(judges, Path(out_dir))
    log(f"held-out (test identities, random frames): {heldout}")
    log(f"held-out (test clips): {clips}")
    return judges.info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default=None, help="judge recipe YAML")
    ap.add_argument("--out", default=str(WEIGHTS_DIR), help="output folder for the weights")
    ap.add_argument("--steps", type=int, default=None, help="override recipe steps")
    ap.add_argument("--train-frames", type=int, default=None, help="override train_frames")
    args = ap.parse_args(argv)
    recipe = load_judge_recipe(args.recipe)
    if args.steps is not None:
        recipe.steps = args.steps
    if args.train_frames is not None:
        recipe.train_frames = args.train_frames
    train_judges(recipe, args.out)


if __name__ == "__main__":
    main()
