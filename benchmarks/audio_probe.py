"""Does a checkpoint's next frame follow the audio? A teacher-forced probe on training clips.

    python benchmarks/audio_probe.py [--checkpoint C] [--data data/synth-train] [--json]

Held-out rollouts mix two failures: not using the audio, and drifting off the true trajectory.
This probe isolates the first. It takes random windows of training clips (as `midas train`
samples them), gives every frame slot its true previous frame as context (at the inference
noise level), samples every frame with the head's steps, decodes it and asks the shipped mouth
judge what it sees, against the judge's reading of the true frame decoded the same way. Then
it does the same with the audio of another window (shuffled across the batch), and both again
with the reference photo as every frame's context, so nothing can be copied. A model that uses
the audio scores clearly higher with the true audio than with the shuffled one; one that
ignores it scores the same. "copy previous" is the score of just repeating the context frame.
Needs a manifest folder (`midas synth --out DIR ...`); it reads the latent shards training reads.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from probe_windows import add_probe_args, judge_latents, load_windows, sample_frames


def balanced(pred: np.ndarray, truth: np.ndarray, classes: int = 4) -> float:
    return float(np.mean([(pred[truth == c] == c).mean() for c in range(classes) if (truth == c).any()]))


def probe(checkpoint: str | None, data_dir: Path, clips: int, sequences: int, seed: int) -> dict:
    from midas_cli.evaluation.judges import load_judges

    model, (ref, frames, prev, feats, texts) = load_windows(checkpoint, data_dir, clips, sequences, seed)
    b, k = len(texts), len(texts[0])
    judges = load_judges()

    def judge(latents: torch.Tensor) -> np.ndarray:
        return judge_latents(model, judges, latents, "mouth")

    with torch.inference_mode():
        feats.text = model.encode_texts([t for row in texts for t in row]).reshape(b, k, -1)
        truth = judge(frames)

        def sample(f, context) -> np.ndarray:
            buckets = torch.full(context.shape[:2], model.noise.bucket_for(model.cfg.noise.inference_sigma),
                                 dtype=torch.long)
            ctx = model.noise.corrupt(context, buckets, torch.Generator().manual_seed(seed + 1))
            return judge(sample_frames(model, ref, ctx, f, buckets, seed + 2))

        shuffled = copy.copy(feats)
        shuffled.audio = feats.audio[torch.randperm(b, generator=torch.Generator().manual_seed(seed + 3))]
        reference = ref[:, None].expand_as(prev)
        result = {"copy_previous": balanced(judge(prev), truth)}
        for name, f, context in (("true_audio", feats, prev), ("shuffled_audio", shuffled, prev),
                                 ("reference_context_true_audio", feats, reference),
                                 ("reference_context_shuffled_audio", shuffled, reference)):
            result[name] = balanced(sample(f, context), truth)
    return {"checkpoint": checkpoint or "demo", "frames": int(truth.size), "mouth_balanced_acc": result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_probe_args(ap)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    r = probe(args.checkpoint, args.data, args.clips, args.sequences, args.seed)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['checkpoint']}: mouth balanced accuracy over {r['frames']} frames (chance 0.25)")
    for name, v in r["mouth_balanced_acc"].items():
        print(f"  {name:34s} {v:.3f}")


if __name__ == "__main__":
    main()
