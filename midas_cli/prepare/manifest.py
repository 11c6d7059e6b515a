"""The output folder: clip files, manifest lines (docs/formats.md), per-source done markers.

Layout as `midas synth` writes it: `clips/<id>.mp4|.wav|.pose.json|.prompts.json`,
`refs/<id>.png`, `manifest.jsonl`. Each source gets a stable key (its file name and size
hashed), from which its identity number and its split come, so one source never lands in
both train and test, whichever machine or rank prepares it. Every file is written under a
temporary name and renamed, and a source's `done/<key>.json` is written last: a source
without one is redone on resume and its earlier lines dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

FPS = 12.5
SAMPLE_RATE = 16000


def source_key(path: Path) -> str:
    """`<name>-<8 hex>`: readable, and stable for the same file wherever it lies."""
    h = hashlib.sha1(f"{path.name}\0{path.stat().st_size}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:40].strip("_") or "source"
    return f"{stem}-{h}"


def split_of(key: str, test_fraction: float) -> str:
    """'test' for a stable `test_fraction` of sources (by hash), else 'train'."""
    u = int(hashlib.sha1(f"split\0{key}".encode()).hexdigest()[:12], 16) / 16 ** 12
    return "test" if u < test_fraction else "train"


def identity_of(key: str) -> int:
    return int(hashlib.sha1(f"identity\0{key}".encode()).hexdigest()[:7], 16)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(obj, separators=(",", ":"))))


def write_clip(out: Path, clip_id: str, frames: np.ndarray, audio: np.ndarray, pose: np.ndarray,
               prompt: str | None, identity: int, split: str, source: str, extra: dict) -> dict:
    """Write one clip's files; return its manifest entry (not yet appended)."""
    from PIL import Image

    from midas_cli.media.audio import write_wav
    from midas_cli.media.pose import pose_to_json
    from midas_cli.synth.mp4 import write_mp4

    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "refs").mkdir(parents=True, exist_ok=True)
    e = {"id": clip_id, "video": f"clips/{clip_id}.mp4", "audio": f"clips/{clip_id}.wav",
         "ref": f"refs/{clip_id}.png", "pose": f"clips/{clip_id}.pose.json"}
    _atomic(out / e["video"], lambda p: write_mp4(p, frames))
    write_wav(out / e["audio"], audio, SAMPLE_RATE)
    _atomic(out / e["ref"], lambda p: Image.fromarray(frames[0]).save(p, format="PNG"))
    write_json(out / e["pose"], pose_to_json(pose, FPS))
    if prompt:
        e["prompts"] = f"clips/{clip_id}.prompts.json"
        write_json(out / e["prompts"], {"version": 1, "prompts": [{"t": 0.0, "text": prompt}]})
    n, size = len(frames), frames.shape[1]
    e.update({"fps": FPS, "seconds": n / FPS, "width": size, "height": size, "identity": identity,
              "split": split, "source": source, **extra})
    return e


def append_line(manifest: Path, entry: dict) -> None:
    """One line, one write with O_APPEND: concurrent writers never interleave inside a line."""
    fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def done_keys(out: Path) -> set[str]:
    d = out / "done"
    return {p.stem for p in d.glob("*.json")} if d.is_dir() else set()


def read_done(out: Path) -> list[dict]:
    d = out / "done"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def keep_done_lines(manifest: Path, done: set[str]) -> int:
    """Drop lines of sources that never finished (an interrupted run); returns how many."""
    if not manifest.exists():
        return 0
    lines = [ln for ln in manifest.read_text().splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln).get("source") in done:
                keep.append(ln)
        except json.JSONDecodeError:
            pass  # a line cut by a kill mid-write
    if len(keep) != len(lines):
        _atomic(manifest, lambda p: p.write_text("".join(k + "\n" for k in keep)))
    return len(lines) - len(keep)
