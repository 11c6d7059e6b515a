"""A manifest folder (docs/formats.md) read clip by clip: the entries, one clip's decoded frames,
audio, pose and prompts. Training never holds the dataset: `shards.py` encodes it a clip at a
time into latent shards on disk, `frames.py` streams frames for the autoencoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    return [text for e in read_manifest(folder)[:max_clips] for _, text in entry_prompts(folder, e)]


def entry_prompts(folder: Path, entry: dict) -> list[tuple[float, str]]:
    """A manifest entry's prompt timeline as [(t, text)] (empty when it has none)."""
    from midas_cli.media.prompts import load_prompts

    return [(p.t, p.text) for p in load_prompts(folder / entry["prompts"])] if entry.get("prompts") else []


def entry_conditions(folder: Path, entry: dict, n_frames: int):
    """A manifest entry's audio, listen audio (None when absent), pose (n_frames, 6) and prompts."""
    from midas_cli.media.audio import load_audio
    from midas_cli.media.pose import load_pose

    audio = load_audio(folder / entry["audio"])
    listen = load_audio(folder / entry["listen_audio"]) if entry.get("listen_audio") else None
    pose = load_pose(folder / entry["pose"], n_frames) if entry.get("pose") else np.zeros((n_frames, 6), np.float32)
    return audio, listen, pose, entry_prompts(folder, entry)


def load_clip(folder: Path, entry: dict, width: int, height: int) -> Clip:
    from midas_cli.media.image import load_reference
    from midas_cli.media.video_in import read_frames

    frames = np.stack(list(read_frames(folder / entry["video"], width=width, height=height)))
    audio, listen, pose, prompts = entry_conditions(folder, entry, len(frames))
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
