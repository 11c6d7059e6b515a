"""Generation, composed: media in → conditions → streaming engine → decoded frames → a sink.

`render()` is what `midas generate`, `midas batch`, `midas eval` and `midas bench` all run; it
owns no model code, only the order of stages and their timings (conditions, backbone, head,
decode, mux). Conditions are computed chunk by chunk from the audio available so far, so the
same loop serves a file and a live stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from midas_cli.conditions.pose import pose_features
from midas_cli.engine.streaming import StreamingEngine
from midas_cli.errors import MidasError
from midas_cli.model.autoencoder import images_to_tensor, tensor_to_images
from midas_cli.model.config import FPS, SAMPLE_RATE
from midas_cli.model.midas import ChunkFeatures, MidasModel


@dataclass
class RenderInputs:
    """Everything one clip needs, already loaded (see midas_cli.media for the loaders)."""

    ref: np.ndarray  # uint8 (H, W, 3) at the model's resolution
    audio: np.ndarray  # float32 16 kHz mono
    n_frames: int
    listen_audio: np.ndarray | None = None
    pose: np.ndarray | None = None  # (n_frames, 6); None = the reference pose throughout
    prompts: list = field(default_factory=list)  # [(t, text)] sorted by t


@dataclass
class RenderStats:
    frames: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    first_chunk_s: float = 0.0
    stages: dict = field(default_factory=lambda: dict(conditions=0.0, backbone=0.0, head=0.0, decode=0.0, mux=0.0))
    chunk_times: list = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.wall_s / max(self.seconds, 1e-9)


def n_frames_for(seconds: float) -> int:
    return max(1, int(round(seconds * FPS)))


def _prompt_at(prompts, t: float) -> str:
    text = ""
    for start, p in prompts:
        if start <= t + 1e-9:
            text = p
        else:
            break
    return text


def chunk_conditions(model: MidasModel, inputs: RenderInputs) -> Iterator[ChunkFeatures]:
    """Per-chunk condition features; chunk c uses audio up to its end and the prompt at its start."""
    f = model.cfg.frames_per_chunk
    n_chunks = math.ceil(inputs.n_frames / f)
    pose = inputs.pose if inputs.pose is not None else np.zeros((inputs.n_frames, 6), np.float32)
    pad = n_chunks * f - len(pose)
    if pad > 0:  # the last chunk runs past the clip: hold the last pose
        pose = np.concatenate([pose, np.repeat(pose[-1:], pad, axis=0)])
    pose_feats = pose_features(pose)
    listen = inputs.listen_audio if inputs.listen_audio is not None else np.zeros(1, np.float32)
    texts = TextFeatures(model)
    for c in range(n_chunks):
        yield chunk_features(model, inputs.audio, listen, c * f, pose_feats[c * f:(c + 1) * f],
                             texts(_prompt_at(inputs.prompts, c * f / FPS)))


class TextFeatures:
    """Prompt text → its pooled feature (D,), cached: a prompt is encoded once, not per chunk.

    The cache keeps the `size` most recent prompts, so a live session that is sent a new
    prompt every few seconds for hours does not grow.
    """

    def __init__(self, model: MidasModel, size: int = 64):
        self.model, self.size = model, size
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, text: str) -> torch.Tensor:
        if text in self.cache:
            self.cache[text] = self.cache.pop(text)  # most recently used last
        else:
            with torch.no_grad():
                self.cache[text] = self.model.encode_texts([text])[0].float().cpu()
            while len(self.cache) > self.size:
                self.cache.pop(next(iter(self.cache)))
        return self.cache[text]


def chunk_features(model: MidasModel, audio: np.ndarray, listen: np.ndarray, start_frame: int,
                   pose_feats: torch.Tensor, text: torch.Tensor) -> ChunkFeatures:
    """The conditions of the chunk whose first frame is `start_frame` of `audio`/`listen`.

    Only audio up to the chunk's end is read (the audio encoders' contract), so `audio` may be
    the whole clip or, live, a window ending at the chunk's end that starts a whole number of
    chunks earlier. pose_feats: (F, 12) from `pose_features`; text: (D,) from `TextFeatures`.
    """
    f = model.cfg.frames_per_chunk
    return ChunkFeatures(
        audio=model.audio_features(audio, f, start_frame)[None, None].float().cpu(),
        pose=pose_feats[None, None],
        text=text[None, None],
        listen=model.audio_features(listen, f, start_frame)[None, None].float().cpu() if model.cfg.audio.duplex else None,
    )


def encode_reference(model: MidasModel, ref: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        x = images_to_tensor(ref[None], device=model.device, dtype=model.dtype)
        return model.autoencoder.encode(x)  # (1, N, C)


def render(model: MidasModel, inputs: RenderInputs, sink: Callable[[np.ndarray], None], *, seed: int = 0,
           steps: int | None = None, context_sigma: float | None = None, on_chunk: Callable[[int, int], None] | None = None,
           on_chunk_stats: Callable[[int, float], None] | None = None, pipeline: bool = True,
           channels_last: bool = True, guidance: float | None = None,
           temperature: float | None = None) -> RenderStats:
    """Generate `inputs.n_frames` frames, handing each uint8 (H, W, 3) frame to `sink` as it is decoded.

    With `pipeline` (the default) chunk c is decoded and handed to the sink on a worker thread
    while chunk c+1 is generated; at most one chunk waits, so memory stays flat, and frames
    reach the sink in order. Stage times are then busy times that overlap, and a chunk's time
    is the gap between two chunks' frames reaching the sink. The frames are the same either way.
    On a CPU the two threads get half of torch's threads each for the render (restored after):
    sharing all of them oversubscribes the cores, and generation's small ops gain little from
    a second thread anyway (measured in benchmarks/README.md).
    With `channels_last` the autoencoder's convolutions run on channels-last tensors, the
    layout oneDNN and cuDNN are fastest with (the decoder is mostly convolutions).
    """
    set_conv_layout(model.autoencoder, torch.channels_last if channels_last else torch.contiguous_format)
    torch.manual_seed(seed)
    stats = RenderStats(frames=0, seconds=inputs.n_frames / FPS)
    engine = StreamingEngine(model, context_sigma=context_sigma, steps=steps, seed=seed, guidance=guidance,
                             temperature=temperature)
    grid = model.cfg.latent_grid
    f = model.cfg.frames_per_chunk
    n_chunks = math.ceil(inputs.n_frames / f)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    done_at: list[float] = []

    def decode_and_write(latents: torch.Tensor, keep: int) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = tensor_to_images(model.autoencoder.decode(latents[0, :keep], grid))
        sync()
        t1 = time.perf_counter()
        for img in images:
            sink(img)
        t2 = time.perf_counter()
        stats.stages["decode"] += t1 - t0
        stats.stages["mux"] += t2 - t1
        stats.frames += keep
        done_at.append(t2)

    def finished(c: int) -> None:
        gap = done_at[c] - (done_at[c - 1] if c else t_start)
        if c == 0:
            stats.first_chunk_s = gap
        stats.chunk_times.append(gap)
        if on_chunk is not None:
            on_chunk(c + 1, n_chunks)
        if on_chunk_stats is not None:
            on_chunk_stats(c, gap)

    t_start = time.perf_counter()
    cond_iter = chunk_conditions(model, inputs)
    engine.start(encode_reference(model, inputs.ref))
    pending: Future | None = None
    split = pipeline and model.device.type == "cpu" and torch.get_num_threads() > 1
    with _torch_threads(torch.get_num_threads() // 2) if split else nullcontext(), \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="midas-decode") if pipeline else nullcontext() as pool:
        for c in range(n_chunks):
            t0 = time.perf_counter()
            feats = next(cond_iter)
            stats.stages["conditions"] += time.perf_counter() - t0
            latents = engine.generate_chunk(feats)  # (1, F, N, C)
            keep = min(f, inputs.n_frames - c * f)
            if pending is not None:
                pending.result()  # one chunk in flight at most; re-raises a sink's error here
                finished(c - 1)
                pending = None
            if pool is None:
                decode_and_write(latents, keep)
                finished(c)
            else:
                pending = pool.submit(decode_and_write, latents, keep)
        if pending is not None:
            pending.result()
            finished(n_chunks - 1)
    stats.stages["backbone"] = engine.timings["backbone"]
    stats.stages["head"] = engine.timings["head"]
    stats.wall_s = time.perf_counter() - t_start
    return stats


def set_conv_layout(module: torch.nn.Module, layout: torch.memory_format) -> None:
    conv = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is not None and not conv.weight.is_contiguous(memory_format=layout):
        module.to(memory_format=layout)


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like noise bursts for benchmarks (speed does not depend on what is said)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.3).astype(np.float32)
    voice = np.sin(2 * np.pi * 140 * t) * 0.3 + rng.normal(0, 0.05, n)
    return (voice * envelope).astype(np.float32)


def check_guidance(model: MidasModel, guidance: float | None, checkpoint: str | None = None) -> None:
    """A clear error for a guidance scale the model cannot take (before any work)."""
    if guidance is None:
        return
    if guidance < 0:
        raise MidasError(f"--guidance {guidance:g}: must be ≥ 0 (1 = no guidance)")
    if guidance != 1 and model.head_text is None:
        raise MidasError(f"--guidance {guidance:g}: {checkpoint or 'the demo checkpoint'} has no text input in its "
                         "diffusion head (text_in_head), so there is nothing to guide; only 1 applies")


def model_generator(model: MidasModel, seed: int = 0, context_sigma: float | None = None,
                    steps: int | None = None, guidance: float | None = None, temperature: float | None = None):
    """A `generate(case) -> uint8 (T, H, W, 3)` callable for `midas_cli.evaluation.evaluate`;
    `steps`: the head's Euler steps per frame (None: the checkpoint's); `guidance`: the head's
    text guidance scale (None: the checkpoint's `head.guidance`); `temperature`: the head's
    starting noise scale (None: the checkpoint's `head.temperature`)."""

    def generate(case) -> np.ndarray:
        inputs = RenderInputs(ref=case.ref, audio=case.audio, n_frames=case.n_frames, listen_audio=case.listen_audio,
                              pose=case.pose, prompts=list(case.prompts))
        frames: list[np.ndarray] = []
        render(model, inputs, frames.append, seed=seed, context_sigma=context_sigma, steps=steps, guidance=guidance,
               temperature=temperature)
        return np.stack(frames)

    return generate


def reconstruction_generator(model: MidasModel, batch: int = 32):
    """The autoencoder's ceiling: every TRUE frame encoded and decoded by the model's autoencoder.

    No generator working in that latent space can score better than its own autoencoder does
    on the true video, so this row tells a weak score of the model apart from one the latent
    already loses (a lip opening or a brow the decoder blurs away).
    """
    ae_cfg, grid = model.cfg.autoencoder, model.cfg.latent_grid

    def generate(case) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, case.n_frames, batch):
                x = images_to_tensor(case.frames[i:i + batch], device=model.device, dtype=model.dtype)
                if x.shape[-2:] != (ae_cfg.height, ae_cfg.width):
                    x = torch.nn.functional.interpolate(x, size=(ae_cfg.height, ae_cfg.width), mode="bilinear",
                                                        antialias=True, align_corners=False)
                out.append(tensor_to_images(model.autoencoder.decode(model.autoencoder.encode(x), grid)))
        return np.concatenate(out)

    return generate


def make_eval_generator(checkpoint: str | None = None, noise_injection: bool = True, seed: int = 0,
                        device: str = "auto", reconstruct: bool = False, context_sigma: float | None = None,
                        steps: int | None = None, guidance: float | None = None,
                        temperature: float | None = None):
    """Load a checkpoint (None: the shipped demo) and wrap it for evaluation.

    `noise_injection=False` feeds generated context frames clean (σ = 0) at inference, and
    `context_sigma` gives them that level instead of the checkpoint's `noise.inference_sigma`;
    `reconstruct=True` scores its autoencoder on the true frames instead (`reconstruction_generator`);
    `steps`: the head's Euler steps per frame (None: the checkpoint's); `guidance`: the head's
    text guidance scale (None: the checkpoint's); `temperature`: the head's starting noise scale
    (None: the checkpoint's).
    """
    from midas_cli.devices import pick_device, pick_dtype
    from midas_cli.model.checkpoint import load_model

    dev = pick_device(device)
    model = load_model(checkpoint, device=dev, dtype=pick_dtype("auto", dev))
    if reconstruct:
        return reconstruction_generator(model)
    check_guidance(model, guidance, checkpoint)
    return model_generator(model, seed, context_sigma=context_sigma if noise_injection else 0.0, steps=steps,
                           guidance=guidance, temperature=temperature)
