"""Training data from a manifest folder (docs/formats.md): clips → frames, latents, conditions.

Everything a training step needs is computed once and kept in memory: the DC-AE latents of
every frame (after the autoencoder is trained), per-frame audio/listen/pose features and the
prompt active at every frame. A step then samples windows of whole chunks from random clips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midas_cli.errors import MidasError
from midas_cli.model.config import FPS


@dataclass
class Clip:
    id: str
    frames: np.ndarray  # uint8 (T, H, W, 3)
    ref: np.ndarray  # uint8 (H, W, 3)
    audio: np.ndarray  # float32 16 kHz
    listen: np.ndarray | None
    pose: np.ndarray  # (T, 6)
    prompts: list  # [(t, text)]


def read_manifest(folder: Path) -> list[dict]:
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        raise MidasError(f"{folder}: no manifest.jsonl (make one with `midas synth --out {folder}`)")
    entries = []
    for i, line in enumerate(manifest.read_text().splitlines()):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise MidasError(f"{manifest}: line {i + 1}: not JSON ({e.msg})") from None
    if not entries:
        raise MidasError(f"{manifest}: no clips")
    return entries


def manifest_prompts(folder: Path, max_clips: int | None = None) -> list[str]:
    """Every prompt text of the folder's clips (what the word tokenizer is fitted on), read
    without decoding any video."""
    from midas_cli.media.prompts import load_prompts

    return [p.text for e in read_manifest(folder)[:max_clips] if e.get("prompts")
            for p in load_prompts(folder / e["prompts"])]


def load_clip(folder: Path, entry: dict, width: int, height: int) -> Clip:
    from midas_cli.media.audio import load_audio
    from midas_cli.media.image import load_reference
    from midas_cli.media.pose import load_pose
    from midas_cli.media.prompts import load_prompts
    from midas_cli.media.video_in import read_frames

    frames = np.stack(list(read_frames(folder / entry["video"], width=width, height=height)))
    n = len(frames)
    audio = load_audio(folder / entry["audio"])
    listen = load_audio(folder / entry["listen_audio"]) if entry.get("listen_audio") else None
    pose = load_pose(folder / entry["pose"], n) if entry.get("pose") else np.zeros((n, 6), np.float32)
    prompts = [(p.t, p.text) for p in load_prompts(folder / entry["prompts"])] if entry.get("prompts") else []
    ref = load_reference(folder / entry["ref"], width, height)
    return Clip(entry["id"], frames, ref, audio, listen, pose, prompts)


def load_clips(folder: Path, width: int, height: int, max_clips: int | None = None, progress=None) -> list[Clip]:
    entries = read_manifest(folder)[:max_clips]
    clips = []
    for e in entries:
        clips.append(load_clip(folder, e, width, height))
        if progress:
            progress()
    return clips


def prompt_per_frame(prompts, n_frames: int) -> list[str]:
    out, j, cur = [], 0, ""
    for i in range(n_frames):
        t = i / FPS
        while j < len(prompts) and prompts[j][0] <= t + 1e-9:
            cur = prompts[j][1]
            j += 1
        out.append(cur)
    return out


class LatentDataset:
    """Precomputed per-clip tensors; `sample()` draws teacher-forcing windows of whole chunks.

    Encoding every frame is the slowest part of starting the model phase (minutes on a CPU),
    so the result is kept in `cache_dir` under a key of everything it depends on (autoencoder
    weights, audio feature config, the frames and audio themselves): a resumed run, or a second
    run sharing the autoencoder (an ablation), loads it in seconds.
    """

    TENSORS = ("latents", "ref", "audio", "listen", "pose")

    def __init__(self, model, clips: list[Clip], chunks: int, batch_encode: int = 32,
                 cache_dir: Path | None = None, log=None):
        self.chunks, self.f = chunks, model.cfg.frames_per_chunk
        cache = Path(cache_dir) / f"latents-{cache_key(model, clips)}.safetensors" if cache_dir else None
        if cache is not None and cache.exists():
            self.items = _load_items(cache)
            if log:
                log(f"latents from cache {cache}")
        else:
            self.items = [self._encode(model, clip, batch_encode) for clip in clips]
            if cache is not None:
                try:
                    _save_items(cache, self.items)
                except OSError as e:  # a read-only data folder only costs the next run the time
                    if log:
                        log(f"latents not cached ({cache.parent}: {e.strerror})")
        self.items = [it for it in self.items if len(it["latents"]) >= chunks * self.f]
        if not self.items:
            raise MidasError(f"every clip is shorter than {chunks} chunks ({chunks * self.f / FPS:.2f} s)")

    @staticmethod
    def _encode(model, clip: Clip, batch_encode: int) -> dict:
        from midas_cli.conditions.pose import pose_features
        from midas_cli.model.autoencoder import images_to_tensor

        ae, n = model.autoencoder, len(clip.frames)
        with torch.no_grad():
            lat = torch.cat([ae.encode(images_to_tensor(clip.frames[i:i + batch_encode], model.device, model.dtype))
                             for i in range(0, n, batch_encode)]).cpu()
            ref = ae.encode(images_to_tensor(clip.ref[None], model.device, model.dtype)).cpu()[0]
        listen = clip.listen if clip.listen is not None else np.zeros(1, np.float32)
        return dict(latents=lat, ref=ref, audio=model.audio_features(clip.audio, n).cpu(),
                    listen=model.audio_features(listen, n).cpu(), pose=pose_features(clip.pose[:n]),
                    prompts=prompt_per_frame(clip.prompts, n))

    def sample(self, batch: int, rng: np.random.Generator):
        from midas_cli.model.midas import ChunkFeatures

        k, f = self.chunks, self.f
        length = k * f
        refs, frames, prev, audio, listen, pose, texts = [], [], [], [], [], [], []
        for _ in range(batch):
            it = self.items[rng.integers(len(self.items))]
            n = len(it["latents"])
            # windows start on chunk boundaries, as generation does
            start = f * int(rng.integers(0, (n - length) // f + 1))
            lat = it["latents"]
            refs.append(it["ref"])
            frames.append(lat[start:start + length])
            before = it["ref"][None] if start == 0 else lat[start - 1:start]
            prev.append(torch.cat([before, lat[start:start + length - 1]]))
            audio.append(it["audio"][start:start + length].reshape(k, f, -1))
            listen.append(it["listen"][start:start + length].reshape(k, f, -1))
            pose.append(it["pose"][start:start + length].reshape(k, f, -1))
            texts.append([it["prompts"][start + c * f] for c in range(k)])
        feats = ChunkFeatures(audio=torch.stack(audio), pose=torch.stack(pose), text=None, listen=torch.stack(listen))
        return torch.stack(refs), torch.stack(frames), torch.stack(prev), feats, texts


def frame_pool(clips: list[Clip]) -> np.ndarray:
    """All frames and references, for autoencoder training."""
    return np.concatenate([c.frames for c in clips] + [np.stack([c.ref for c in clips])])


def cache_key(model, clips: list[Clip]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(model.autoencoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps([model.cfg.audio.__dict__, model.autoencoder.scaling_factor, model.cfg.autoencoder.patch_size],
                        sort_keys=True, default=str).encode())
    for c in clips:
        for part in (c.frames, c.ref, c.audio, c.listen, c.pose):
            if part is not None:
                h.update(np.ascontiguousarray(part).data)
        h.update(json.dumps(c.prompts).encode())
    return h.hexdigest()


def _save_items(path: Path, items: list[dict]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}.{k}": it[k].contiguous() for i, it in enumerate(items) for k in LatentDataset.TENSORS}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={"prompts": json.dumps([it["prompts"] for it in items])})
    tmp.replace(path)


def _load_items(path: Path) -> list[dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        return [{**{k: f.get_tensor(f"{i}.{k}") for k in LatentDataset.TENSORS}, "prompts": p}
                for i, p in enumerate(prompts)]
