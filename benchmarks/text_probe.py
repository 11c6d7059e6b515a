"""Does a checkpoint's face follow the prompt? A teacher-forced probe on training clips.

    python benchmarks/text_probe.py [--checkpoint C] [--data data/synth-train] [--sigma 2] [--json]

Like `audio_probe.py` for the mouth: random windows of training clips (as `midas train` samples
them), every frame slot given its true previous frame as context, but every context frame at one
noise level (`--sigma`, default the checkpoint's σ_max), so the window shows as little of the face
as training ever hid. Every frame is sampled with the head's steps, decoded, and read by the
shipped expression judge: once with the true prompts (accuracy against the prompt's class), then
with every prompt replaced by one class's phrasing, for each class (the share of frames judged
that class). A model that follows its text moves each share toward 1; one that ignores it draws
the same faces whatever the prompt. Needs a manifest folder (`midas synth --out DIR ...`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from probe_windows import add_probe_args, judge_latents, load_windows, sample_frames


def probe(checkpoint: str | None, data_dir: Path, clips: int, sequences: int, sigma: float | None,
          seed: int) -> dict:
    from midas_cli.evaluation.judges import load_judges
    from midas_cli.synth.expressions import EXPRESSION_NAMES, EXPRESSION_PROMPTS, expression_of_prompt

    model, (ref, frames, prev, feats, texts) = load_windows(checkpoint, data_dir, clips, sequences, seed)
    cfg = model.cfg
    sigma = cfg.noise.sigma_max if sigma is None else sigma
    b, k = len(texts), len(texts[0])
    truth = np.array([[expression_of_prompt(t) for t in row for _ in range(cfg.frames_per_chunk)] for row in texts])
    judges = load_judges()

    def judge(latents: torch.Tensor) -> np.ndarray:
        return judge_latents(model, judges, latents, "expression").reshape(truth.shape)

    with torch.inference_mode():
        buckets = torch.full(prev.shape[:2], model.noise.bucket_for(sigma), dtype=torch.long)
        context = model.noise.corrupt(prev, buckets, torch.Generator().manual_seed(seed + 1))

        def sample(prompts: list[list[str]]) -> np.ndarray:
            feats.text = model.encode_texts([t for row in prompts for t in row]).reshape(b, k, -1)
            return judge(sample_frames(model, ref, context, feats, buckets, seed + 2))

        result = {"judge_on_true_frames": float((judge(frames) == truth).mean()),
                  "true_prompts": float((sample(texts) == truth).mean())}
        for c, name in enumerate(EXPRESSION_NAMES):
            result[f"every_prompt_{name}"] = float((sample([[EXPRESSION_PROMPTS[c][0]] * k] * b) == c).mean())
    return {"checkpoint": checkpoint or "demo", "context_sigma": float(model.noise.levels[buckets[0, 0]]),
            "frames": int(truth.size), "expression": result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_probe_args(ap)
    ap.add_argument("--sigma", type=float, default=None, help="context noise level (default: σ_max)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    r = probe(args.checkpoint, args.data, args.clips, args.sequences, args.sigma, args.seed)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['checkpoint']}: expression judge over {r['frames']} frames, every context frame at "
          f"σ {r['context_sigma']:.2f} (chance 0.25)")
    for name, v in r["expression"].items():
        print(f"  {name:24s} {v:.3f}")


if __name__ == "__main__":
    main()
