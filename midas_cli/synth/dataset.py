"""Write a synthetic dataset: media files + ``manifest.jsonl`` exactly as docs/formats.md says.

Clip ``i`` of split ``s`` with seed ``k`` is drawn from its own stream
``stream(PURPOSE_DATASET, s, k, i)``, so a dataset can be extended or regenerated clip by
clip, and train/test never share a stream. References are written once per identity.
"""

from __future__ import annotations

import json
import os
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import soundfile as sf
from PIL import Image

from midas_cli.errors import MidasError
from midas_cli.synth.clip import SynthClip, make_clip
from midas_cli.synth.constants import DEFAULT_SIZE, FPS, SAMPLE_RATE
from midas_cli.synth.expressions import prompts_json
from midas_cli.synth.mp4 import write_mp4
from midas_cli.synth.pose import pose_json
from midas_cli.synth.progress import progress_bar
from midas_cli.synth.render import check_size
from midas_cli.synth.splits import PURPOSE_DATASET, check_split, stream


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def write_clip(out_dir: Path, clip_id: str, clip: SynthClip, size: int) -> dict:
    """Write one clip's files under ``out_dir`` and return its manifest entry."""
    clips, refs = out_dir / "clips", out_dir / "refs"
    clips.mkdir(parents=True, exist_ok=True)
    refs.mkdir(parents=True, exist_ok=True)
    ref = f"refs/id-{clip.identity:04d}.png"
    if not (out_dir / ref).exists():
        # via a temporary name: a reference cut off mid-write would be reused as it is; one per
        # process, since workers writing clips of one identity may both write its reference
        tmp = out_dir / f"refs/.id-{clip.identity:04d}.{os.getpid()}.partial.png"
        Image.fromarray(clip.reference(size)).save(tmp)
        tmp.replace(out_dir / ref)
    entry = {"id": clip_id, "video": f"clips/{clip_id}.mp4", "audio": f"clips/{clip_id}.wav"}
    write_mp4(out_dir / entry["video"], clip.render(size))
    sf.write(out_dir / entry["audio"], clip.audio, SAMPLE_RATE, subtype="PCM_16")
    if clip.listen_audio is not None:
        entry["listen_audio"] = f"clips/{clip_id}.listen.wav"
        sf.write(out_dir / entry["listen_audio"], clip.listen_audio, SAMPLE_RATE,
                 subtype="PCM_16")
    entry["ref"] = ref
    entry["pose"] = f"clips/{clip_id}.pose.json"
    _write_json(out_dir / entry["pose"], pose_json(clip.pose_keyframes))
    entry["prompts"] = f"clips/{clip_id}.prompts.json"
    _write_json(out_dir / entry["prompts"], prompts_json(clip.prompts))
    entry.update({"fps": FPS, "seconds": clip.seconds, "width": size, "height": size,
                  "identity": clip.identity, "split": clip.split,
                  "truth": f"clips/{clip_id}.truth.json"})
    _write_json(out_dir / entry["truth"], clip.truth_json())
    return entry


def _draw_and_write(i: int, out_dir: Path, seconds: float, seed: int, split: str, size: int) -> dict:
    clip = make_clip(stream(PURPOSE_DATASET, split, seed, i), seconds, split)
    return write_clip(out_dir, f"{split}-{i:06d}", clip, size)


def write_dataset(out_dir: Path | str, clips: int, seconds: float, seed: int,
                  split: str = "train", size: int = DEFAULT_SIZE,
                  progress: bool = True, workers: int = 1) -> Path:
    """Generate ``clips`` clips of ``seconds`` each into ``out_dir``; return the manifest path.

    The manifest is rewritten from scratch and appears only when every clip is written: it
    goes to ``.manifest.jsonl.partial`` and is renamed at the end, so an interrupted run never
    leaves a short manifest that training would take for the whole dataset.

    ``workers`` > 1 draws and writes clips in that many processes; each clip comes from its own
    stream, so the files are the same for any count (240 clips of 16 s: 5 min on one core).
    """
    check_split(split)
    size = check_size(size)
    if clips < 1:
        raise MidasError(f"--clips {clips}: need at least one clip")
    if not seconds > 0:
        raise MidasError(f"--seconds {seconds}: must be positive")
    if workers < 1:
        raise MidasError(f"--workers {workers}: need at least one")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MidasError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MidasError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from e
    manifest = out_dir / "manifest.jsonl"
    tmp = out_dir / ".manifest.jsonl.partial"
    one = partial(_draw_and_write, out_dir=out_dir, seconds=seconds, seed=seed, split=split, size=size)
    pool = get_context("spawn").Pool(min(workers, clips)) if workers > 1 else None
    try:
        entries = pool.imap(one, range(clips)) if pool else map(one, range(clips))  # in clip order
        with tmp.open("w") as fh, progress_bar(progress) as p:
            task = p.add_task(f"synth {split}", total=clips)
            for entry in entries:
                fh.write(json.dumps(entry) + "\n")
                p.advance(task)
    finally:
        if pool:
            pool.terminate()
    tmp.replace(manifest)
    return manifest
