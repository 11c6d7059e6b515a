"""Before/after timings of the CPU speed levers, measured in one process, rounds interleaved.

    python benchmarks/levers.py --seconds 60 --rounds 2 [--checkpoint C] [--threads 2]

Each variant renders the same clip through the real path (conditions → backbone → head →
decode → ffmpeg) with the same seed, and its frames are compared with the first variant's
(the largest pixel difference is printed: 0 or 1 level of 255, from float rounding), so a
lever can only change the speed. Rounds alternate the variants, so a machine
that slows down mid-run slows every variant alike. Prints per-stage seconds and each
variant's real-time factor ÷ the first variant's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch


@contextmanager
def plain_head_steps():
    """The head called once per Euler step (what the sampler replaced)."""
    from midas_cli.model.diffusion_head import DiffusionHead

    sampler = DiffusionHead.sampler
    del DiffusionHead.sampler
    try:
        yield
    finally:
        DiffusionHead.sampler = sampler


@contextmanager
def grad_mode_engine():
    """Generation under no_grad (what inference mode replaced)."""
    from midas_cli.engine.streaming import StreamingEngine

    saved = StreamingEngine.start, StreamingEngine.generate_chunk
    StreamingEngine.start = torch.no_grad()(saved[0].__wrapped__)
    StreamingEngine.generate_chunk = torch.no_grad()(saved[1].__wrapped__)
    try:
        yield
    finally:
        StreamingEngine.start, StreamingEngine.generate_chunk = saved


VARIANTS = {
    "before (serial, head per step)": dict(pipeline=False, channels_last=False, plain_head=True, no_grad=True),
    "+ batched head time work": dict(pipeline=False, channels_last=False, no_grad=True),
    "+ decode/mux thread (half the torch threads each)": dict(pipeline=True, channels_last=False, no_grad=True),
    "+ channels-last decoder": dict(pipeline=True, channels_last=True, no_grad=True),
    "+ inference mode for generation (all on: the default)": dict(pipeline=True, channels_last=True),
}


def run_variant(model, inputs, opts: dict, seed: int):
    from midas_cli.media.video_out import VideoWriter
    from midas_cli.model.config import FPS
    from midas_cli.pipeline import render

    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        head = plain_head_steps() if opts.get("plain_head") else nullcontext()
        grad = grad_mode_engine() if opts.get("no_grad") else nullcontext()
        with head, grad, VideoWriter(Path(tmp) / "a.mp4", model.cfg.autoencoder.width,
                                       model.cfg.autoencoder.height, fps=FPS) as writer:
            def sink(img):
                frames.append(img)
                writer.write(img)

            stats = render(model, inputs, sink, seed=seed, pipeline=opts["pipeline"],
                           channels_last=opts["channels_last"])
    return stats, np.stack(frames)


def main():
    from midas_cli.model.checkpoint import load_model
    from midas_cli.pipeline import RenderInputs, n_frames_for, synthetic_speech

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="default: the shipped demo checkpoint")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", action="append", default=None,
                    help="run only the variants whose name contains this text (repeatable)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device=torch.device("cpu"), dtype=torch.float32)
    cfg = model.cfg
    n = n_frames_for(args.seconds)
    rng = np.random.default_rng(0)
    inputs = RenderInputs(ref=rng.integers(0, 255, (cfg.autoencoder.height, cfg.autoencoder.width, 3), dtype=np.uint8),
                          audio=synthetic_speech(args.seconds), n_frames=n,
                          listen_audio=synthetic_speech(args.seconds, 1) * 0.5, pose=np.zeros((n, 6), np.float32),
                          prompts=[(0.0, "a calm, neutral face")])
    variants = {k: v for k, v in VARIANTS.items() if not args.only or any(o in k for o in args.only)}
    results = {name: [] for name in variants}
    reference = None
    for _ in range(args.rounds):
        for name, opts in variants.items():
            stats, frames = run_variant(model, inputs, opts, seed=0)
            if reference is None:
                reference = frames
            diff = int(np.abs(frames.astype(int) - reference.astype(int)).max())
            results[name].append(dict(rtf=stats.rtf, first_chunk_s=stats.first_chunk_s, stages=stats.stages,
                                      max_pixel_diff=diff))
    summary = {}
    base = None
    for name, runs in results.items():
        rtf = float(np.median([r["rtf"] for r in runs]))
        base = base or rtf
        stages = {k: round(float(np.median([r["stages"][k] for r in runs])), 2) for k in runs[0]["stages"]}
        summary[name] = dict(rtf=round(rtf, 3), vs_before=round(rtf / base, 3),
                             first_chunk_s=round(float(np.median([r["first_chunk_s"] for r in runs])), 3),
                             stages_s=stages, max_pixel_diff=max(r["max_pixel_diff"] for r in runs))
    meta = dict(seconds=args.seconds, rounds=args.rounds, torch_threads=torch.get_num_threads())
    if args.json:
        print(json.dumps(dict(meta=meta, variants=summary), indent=1))
        return
    print(f"{args.seconds:g} s clip, {args.rounds} rounds, {torch.get_num_threads()} torch threads (medians)")
    for name, r in summary.items():
        st = " ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
        print(f"{name:50s} rtf {r['rtf']:.3f} ({r['vs_before']:.2f}x)  first {r['first_chunk_s']:.2f} s  "
              f"[{st}]  max pixel diff {r['max_pixel_diff']}")


if __name__ == "__main__":
    main()
