"""A strip of frames from one held-out case: the truth above, a checkpoint's rollout below.

    python benchmarks/frame_strip.py --checkpoint C --seconds 240 --at 1,10,30,60,240 --out strip.png

`--autoencoder` adds a row of the true frames through the first checkpoint's autoencoder (what
any model in its latent can reach), between the truth and the rollouts. Frames are taken at the
given seconds (the last frame when a time is the clip's end). The case comes from `midas_cli.evaluation.make_eval_cases` (test split), so it is one `midas eval` scores.
`--each-autoencoder` adds such a row for every checkpoint instead; `--mouth` shows each frame's
mouth, cut around where the renderer draws it for the case's pose and enlarged, and
`--listening N` picks N times, evenly spread, at which the case listens with its mouth closed.

    python benchmarks/frame_strip.py --checkpoint A --label new --checkpoint B --label old \
        --each-autoencoder --mouth --listening 6 --case 1 --out mouths.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw


def mouth_crops(frames: np.ndarray, poses: np.ndarray, zoom: int = 3) -> np.ndarray:
    """Each frame cut around its mouth (by its pose) and enlarged `zoom` times."""
    from midas_cli.synth.geometry import mouth_centre

    H, W = frames.shape[1:3]
    out = []
    for frame, pose in zip(frames, poses):
        cx, cy, S = mouth_centre(pose, H, W)
        hw, hh = 0.6 * S, 0.4 * S
        box = (int(round(cx - hw)), int(round(cy - hh)), int(round(cx + hw)), int(round(cy + hh)))
        size = (int(round(2 * hw)) * zoom, int(round(2 * hh)) * zoom)
        out.append(np.asarray(Image.fromarray(frame).crop(box).resize(size, Image.NEAREST)))
    h, w = min(o.shape[0] for o in out), min(o.shape[1] for o in out)
    return np.stack([o[:h, :w] for o in out])


def strip(rows: list[tuple[str, np.ndarray]], at: list[float], fps: float) -> Image.Image:
    """rows: (label, frames (T, H, W, 3)) → one image, a row per label, a column per time."""
    h, w = rows[0][1].shape[1:3]
    label_w, top = 90, 18
    img = Image.new("RGB", (label_w + w * len(at), top + h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    for j, t in enumerate(at):
        d.text((label_w + j * w + 4, 3), f"{t:g} s", fill="black")
    for i, (label, frames) in enumerate(rows):
        d.multiline_text((4, top + i * h + h // 2 - 12), label.replace(" ", "\n", 1), fill="black")
        for j, t in enumerate(at):
            k = min(len(frames) - 1, max(0, int(round(t * fps)) - 1))
            img.paste(Image.fromarray(frames[k]), (label_w + j * w, top + i * h))
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="checkpoint folder (repeat for more rows; default: the shipped demo)")
    ap.add_argument("--label", action="append", default=None, help="row label per --checkpoint")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--at", default="1,10,30,60")
    ap.add_argument("--seed", type=int, default=0, help="held-out case seed")
    ap.add_argument("--case", type=int, default=0, help="which case of that seed")
    ap.add_argument("--context-noise", type=float, default=None)
    ap.add_argument("--autoencoder", action="store_true",
                    help="add the true frames through the first checkpoint's autoencoder as a row")
    ap.add_argument("--each-autoencoder", action="store_true",
                    help="a row of the true frames through every checkpoint's autoencoder")
    ap.add_argument("--no-rollout", action="store_true",
                    help="leave the rollout rows out: compare autoencoders (e.g. one whose model is untrained)")
    ap.add_argument("--mouth", action="store_true", help="show the mouth of each frame, enlarged")
    ap.add_argument("--listening", type=int, default=0,
                    help="take N times at which the case listens with its mouth closed (overrides --at)")
    ap.add_argument("--out", default="strip.png")
    args = ap.parse_args()

    from midas_cli.evaluation import make_eval_cases
    from midas_cli.pipeline import make_eval_generator

    case = make_eval_cases(args.case + 1, args.seconds, seed=args.seed)[args.case]
    at = [float(x) for x in args.at.split(",")]
    if args.listening:
        closed = np.nonzero(case.listening & (case.mouth == 0))[0]
        if not len(closed):
            raise SystemExit(f"case {args.case} of seed {args.seed} has no listening frame with a closed mouth")
        picks = closed[np.linspace(0, len(closed) - 1, args.listening).round().astype(int)]
        at = [float((k + 1) / case.fps) for k in picks]
    rows = [("truth", case.frames)]
    checkpoints = args.checkpoint or [None]
    labels = args.label or [c or "demo" for c in checkpoints]
    if args.autoencoder and not args.each_autoencoder:
        rows.append(("autoencoder", make_eval_generator(checkpoints[0], reconstruct=True)(case)))
    if args.each_autoencoder:
        rows += [(f"autoencoder, {label}", make_eval_generator(ckpt, reconstruct=True)(case))
                 for ckpt, label in zip(checkpoints, labels)]
    if not args.no_rollout:
        for ckpt, label in zip(checkpoints, labels):
            generate = make_eval_generator(ckpt, seed=args.seed, context_sigma=args.context_noise)
            rows.append((label, generate(case)))
    if args.mouth:
        rows = [(label, mouth_crops(frames, case.pose[:len(frames)])) for label, frames in rows]
    strip(rows, at, case.fps).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
