"""`midas bench`: the real streaming path, timed per stage and per chunk over a long clip.

Speed does not depend on the weights, so a preset config runs with random weights (and says
so). Flatness compares the last fifth of the clip with the first fifth: per-chunk wall time
and resident memory (RSS on CPU, peak allocated on CUDA).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from midas_cli.model.config import FPS


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fifths_ratio(values: list[float]) -> float:
    k = max(1, len(values) // 5)
    first, last = np.mean(values[:k]), np.mean(values[-k:])
    return float(last / first) if first > 0 else float("nan")


def _guidance(model, guidance: float | None) -> float:
    return model.cfg.head.guidance if guidance is None else float(guidance)


def run_bench(name: str | None = None, seconds: float = 60.0, device: str = "cpu", dtype: str = "float32",
              mux: bool = True, seed: int = 0, progress=None, pipeline: bool = True,
              guidance: float | None = None) -> dict:
    """`guidance`: the head's text guidance scale (None: the model's `head.guidance`), so its
    second head pass is timed like the rest."""
    from midas_cli.devices import pick_device, pick_dtype
    from midas_cli.model.checkpoint import build_model, config_or_checkpoint, load_model
    from midas_cli.model.config import PRESETS
    from midas_cli.pipeline import RenderInputs, check_guidance, n_frames_for, render, synthetic_speech

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    random_weights = name in PRESETS
    if random_weights:
        cfg, _ = config_or_checkpoint(name)
        torch.manual_seed(seed)
        model = build_model(cfg, load_pretrained=False).to(dev, dt).eval()
    else:
        model = load_model(name, device=dev, dtype=dt)
    cfg = model.cfg
    check_guidance(model, guidance, name)
    n_frames = n_frames_for(seconds)
    rng = np.random.default_rng(seed)
    inputs = RenderInputs(
        ref=rng.integers(0, 255, (cfg.autoencoder.height, cfg.autoencoder.width, 3), dtype=np.uint8),
        audio=synthetic_speech(seconds, seed), n_frames=n_frames,
        listen_audio=synthetic_speech(seconds, seed + 1) * 0.5,
        pose=np.zeros((n_frames, 6), np.float32), prompts=[(0.0, "a calm, neutral face")])
    memory: list[int] = []

    def on_chunk_stats(c, dt_chunk):
        memory.append(torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else rss_bytes())
        if progress is not None:
            progress(c + 1)

    with tempfile.TemporaryDirectory() as tmp:
        if mux:
            from midas_cli.media.video_out import VideoWriter

            out = Path(tmp) / "bench.mp4"
            with VideoWriter(out, cfg.autoencoder.width, cfg.autoencoder.height, fps=FPS) as writer:
                stats = render(model, inputs, writer.write, seed=seed, on_chunk_stats=on_chunk_stats,
                               pipeline=pipeline, guidance=guidance)
        else:
            stats = render(model, inputs, lambda frame: None, seed=seed, on_chunk_stats=on_chunk_stats,
                           pipeline=pipeline, guidance=guidance)
    times = stats.chunk_times
    return {
        "name": name or "demo checkpoint",
        "random_weights": random_weights,
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "pipeline": pipeline,
        "guidance": _guidance(model, guidance),
        "temperature": model.cfg.head.temperature,
        "seconds": stats.seconds,
        "frames": stats.frames,
        "chunks": len(times),
        "wall_s": stats.wall_s,
        "rtf": stats.rtf,
        "first_chunk_s": stats.first_chunk_s,
        "stages": stats.stages,
        "chunk_s_first": times[0],
        "chunk_s_mean": float(np.mean(times)),
        "chunk_time_ratio": _fifths_ratio(times),
        "rss_ratio": _fifths_ratio([float(m) for m in memory]),
        "memory_first_mb": memory[0] / 2**20,
        "memory_last_mb": memory[-1] / 2**20,
        "chunk_times": [round(t, 5) for t in times],
        "memory_mb": [round(m / 2**20, 2) for m in memory],
    }
