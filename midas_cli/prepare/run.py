"""`prepare()`: videos in, a training folder out; resumable, and split across ranks.

Per source: probe → audio at 16 kHz mono → pass 1 over the 12.5 fps frames (shots, the
tracked face, landmarks) → clip plans → pass 2 over the frames (each clip's fixed crop,
its pose, its files and manifest line) → `done/<key>.json`. Two passes keep memory flat
whatever the video's length: only landmarks are kept between them, never frames.
Rank r of WORLD_SIZE (torchrun's variables, or set by hand for plain processes) takes
sources r, r + W, ...; rank 0 then waits for every source's done marker and writes the
report, `rejected.jsonl` and the preview.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midas_cli.errors import MidasError
from midas_cli.prepare import manifest as mf
from midas_cli.prepare.probe import Rejected, expand_inputs, probe_source

FPS, SAMPLE_RATE = 12.5, 16000
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 1280


@dataclass
class PrepareOptions:
    clip_seconds: float = 8.0  # clips are cut to this length; a shorter tail is kept if >= min_seconds
    min_seconds: float = 2.0
    size: int = 128  # output frames are size × size
    prompt: str | None = None
    face_backend: str = "auto"
    test_fraction: float = 0.05
    preview: bool = False
    min_crop_fraction: float = 0.75  # reject faces whose crop would be upscaled more than 1 / this
    rank: int | None = None  # None: from RANK / WORLD_SIZE (torchrun), else 0 of 1
    world_size: int | None = None
    wait_s: float = 24 * 3600.0  # how long rank 0 waits for the other ranks' sources


@dataclass
class SourceResult:
    key: str
    path: str
    seconds_in: float = 0.0
    clips: list[dict] = field(default_factory=list)  # id, seconds, face_px, crop_px, pose_min, pose_max
    rejected: list[dict] = field(default_factory=list)  # start, end, reason, detail
    timings: dict = field(default_factory=dict)


def _check(opts: PrepareOptions) -> None:
    if opts.size < 32 or opts.size % 2:
        raise MidasError(f"--size {opts.size}: must be an even number >= 32")
    if not opts.clip_seconds > 0:
        raise MidasError(f"--clip-seconds {opts.clip_seconds}: must be positive")
    if not 0 <= opts.test_fraction <= 1:
        raise MidasError(f"--test-fraction {opts.test_fraction}: must be between 0 and 1")


def _rank(opts: PrepareOptions) -> tuple[int, int]:
    rank = opts.rank if opts.rank is not None else int(os.environ.get("RANK", "0"))
    world = opts.world_size if opts.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise MidasError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, world


def prepare(inputs: list[Path], out: Path, opts: PrepareOptions = PrepareOptions(), progress=None) -> dict | None:
    """Prepare every input into `out`; return the report (rank 0) or None (other ranks).

    `progress(event, **info)`, if given, is called with "source" (path, frames) and "frame".
    """
    from midas_cli.prepare.faces import face_backend

    _check(opts)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MidasError(f"--out {out}: exists and is not a folder")
    sources = [p for p in expand_inputs([Path(p) for p in inputs])
               if not p.resolve().is_relative_to(out.resolve())]  # never our own clips
    if not sources:
        raise MidasError(f"{', '.join(map(str, inputs))}: no video files found")
    backend = face_backend(opts.face_backend)  # fail before any output when the extra is missing
    rank, world = _rank(opts)
    (out / "done").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    keys = [mf.source_key(p) for p in sources]
    if world == 1:
        mf.keep_done_lines(manifest, mf.done_keys(out))
    done = mf.done_keys(out)
    for i in range(rank, len(sources), world):
        if keys[i] in done:
            continue  # resumed: finished by an earlier run
        result = prepare_source(sources[i], keys[i], out, opts, backend, progress)
        mf.write_json(out / "done" / f"{keys[i]}.json", result.__dict__)
    if rank != 0:
        return None
    _wait_for(out, set(keys), opts.wait_s)
    return finish(out, set(keys), opts)


def _wait_for(out: Path, keys: set[str], wait_s: float) -> None:
    t0 = time.monotonic()
    while not keys <= mf.done_keys(out):
        if time.monotonic() - t0 > wait_s:
            missing = sorted(keys - mf.done_keys(out))
            raise MidasError(f"{out}: {len(missing)} sources not finished by other ranks after {wait_s:.0f} s "
                             f"(first: {missing[0]}); rerun to resume")
        time.sleep(2.0)


def _reject(result: SourceResult, start: float, end: float, reason: str, detail: str) -> None:
    result.rejected.append({"start": round(start, 3), "end": round(end, 3), "reason": reason, "detail": detail})


def prepare_source(path: Path, key: str, out: Path, opts: PrepareOptions, backend, progress=None) -> SourceResult:
    """One input → its clips in `out` (manifest lines appended) and what was rejected."""
    from midas_cli.media.audio import _read_with_ffmpeg
    from midas_cli.media.video_in import read_frames
    from midas_cli.prepare.track import Tracker, face_free_spans, plan_clips, stretches

    result = SourceResult(key=key, path=str(path))
    t0 = time.perf_counter()
    try:
        src = probe_source(path, opts.min_seconds)
        audio = _read_with_ffmpeg(path, SAMPLE_RATE)
    except Rejected as r:
        _reject(result, 0.0, 0.0, r.reason, r.detail)
        return result
    except RuntimeError as e:  # the audio track does not decode
        _reject(result, 0.0, 0.0, "corrupt or not a video", f"audio: {e}")
        return result
    n_frames = int(min(src.seconds, len(audio) / SAMPLE_RATE) * FPS)
    result.seconds_in = n_frames / FPS
    result.timings["probe_audio_s"] = time.perf_counter() - t0
    if progress:
        progress("source", path=path, frames=2 * n_frames)

    t1 = time.perf_counter()
    tracker = Tracker(backend)
    width = height = None
    try:
        for i, frame in enumerate(read_frames(path, fps=FPS)):
            if i >= n_frames:
                break
            height, width = frame.shape[:2]
            tracker.step(frame)
            if progress:
                progress("frame")
    except MidasError as e:
        _reject(result, 0.0, result.seconds_in, "corrupt or not a video", str(e).split(": ", 1)[-1])
        return result
    n_frames = len(tracker.frames)
    result.timings["analyse_s"] = time.perf_counter() - t1

    clip_frames = max(1, round(opts.clip_seconds * FPS))
    min_frames = max(1, round(min(opts.min_seconds, opts.clip_seconds) * FPS))
    plans = []
    for s in stretches(tracker.frames):
        p, rej = plan_clips(s, width, height, clip_frames, min_frames, opts.min_crop_fraction * opts.size)
        plans += p
        for a, b, reason, detail in rej:
            _reject(result, a / FPS, b / FPS, reason, detail)
    for a, b in face_free_spans(tracker.frames):
        _reject(result, a / FPS, b / FPS, "no face", "no face detected")
    if plans:
        _write_clips(path, key, out, opts, plans, audio, n_frames, result, progress)
    result.timings["total_s"] = time.perf_counter() - t0
    return result


def _write_clips(path, key, out, opts, plans, audio, n_frames, result, progress) -> None:
    from midas_cli.media.video_in import read_frames

    t2 = time.perf_counter()
    split, identity = mf.split_of(key, opts.test_fraction), mf.identity_of(key)
    by_start = {p.start: k for k, p in enumerate(plans)}
    current, buf = None, []
    for i, frame in enumerate(read_frames(path, fps=FPS)):
        if i >= n_frames:
            break
        if progress:
            progress("frame")
        if current is None and i in by_start:
            current, buf = plans[by_start[i]], []
        if current is None:
            continue
        buf.append(current.crop.apply(frame, opts.size))
        if i + 1 == current.stop:
            k = by_start[current.start]
            clip_id = f"{key}-{k:03d}"
            pose = current.pose()
            sound = audio[current.start * SAMPLES_PER_FRAME:current.stop * SAMPLES_PER_FRAME]
            sound = np.pad(sound, (0, (current.stop - current.start) * SAMPLES_PER_FRAME - len(sound)))
            entry = mf.write_clip(out, clip_id, np.stack(buf), sound, pose, opts.prompt, identity, split, key,
                                  {"start": round(current.start / FPS, 3)})
            mf.append_line(out / "manifest.jsonl", entry)
            result.clips.append({"id": clip_id, "seconds": entry["seconds"], "face_px": round(current.face_size, 1),
                                 "crop_px": round(current.crop.side, 1),
                                 "pose_min": pose.min(0).round(4).tolist(), "pose_max": pose.max(0).round(4).tolist()})
            current, buf = None, []
    result.timings["write_s"] = time.perf_counter() - t2


def finish(out: Path, keys: set[str], opts: PrepareOptions) -> dict:
    """Rank 0, after every source is done: clean the manifest, write the report and rejections."""
    results = [r for r in mf.read_done(out) if r["key"] in keys]
    done = {r["key"] for r in results}
    manifest = out / "manifest.jsonl"
    _clean_manifest(manifest, done)
    rejected = [{"source": r["path"], **x} for r in results for x in r["rejected"]]
    mf._atomic(out / "rejected.jsonl", lambda p: p.write_text("".join(json.dumps(x) + "\n" for x in rejected)))
    report = build_report(results)
    mf.write_json(out / "prepare_report.json", report)
    if opts.preview:
        write_preview(out, out / "preview.png")
    return report


def _clean_manifest(manifest: Path, done: set[str]) -> None:
    """Only lines of finished sources, one per clip id (a redone source rewrote the same ids)."""
    if not manifest.exists():
        manifest.touch()
        return
    by_id = {}
    for ln in manifest.read_text().splitlines():
        try:
            e = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if e.get("source") in done:
            by_id[e["id"]] = e
    text = "".join(json.dumps(e) + "\n" for e in by_id.values())
    if text != manifest.read_text():
        mf._atomic(manifest, lambda p: p.write_text(text))


def build_report(results: list[dict]) -> dict:
    from midas_cli.media.pose import POSE_FIELDS

    clips = [c for r in results for c in r["clips"]]
    reasons: dict[str, int] = {}
    for r in results:
        for x in r["rejected"]:
            reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r["timings"].items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    seconds_in = sum(r["seconds_in"] for r in results)
    pose_range = {}
    if clips:
        lo, hi = np.min([c["pose_min"] for c in clips], 0), np.max([c["pose_max"] for c in clips], 0)
        pose_range = {f: [round(float(a), 4), round(float(b), 4)] for f, a, b in zip(POSE_FIELDS, lo, hi)}
    return {
        "version": 1, "sources": len(results),
        "sources_with_clips": sum(1 for r in results if r["clips"]),
        "hours_in": round(seconds_in / 3600, 6), "seconds_in": round(seconds_in, 3),
        "clips": len(clips), "hours_kept": round(sum(c["seconds"] for c in clips) / 3600, 6),
        "seconds_kept": round(sum(c["seconds"] for c in clips), 3),
        "rejections": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "median_face_px": float(np.median([c["face_px"] for c in clips])) if clips else None,
        "median_crop_px": float(np.median([c["crop_px"] for c in clips])) if clips else None,
        "pose_range": pose_range, "timings_s": timings,
    }


def write_preview(out: Path, path: Path, cols: int = 8, cell: int = 96, limit: int = 64) -> None:
    """A contact sheet of the clips' reference crops (first frames), in manifest order."""
    from PIL import Image

    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines() if ln.strip()][:limit]
    cols = max(1, min(cols, len(lines)))
    rows = max(1, -(-len(lines) // cols))
    sheet = Image.new("RGB", (cols * cell, rows * cell), (32, 32, 32))
    for k, e in enumerate(lines):
        with Image.open(out / e["ref"]) as im:
            sheet.paste(im.convert("RGB").resize((cell, cell)), ((k % cols) * cell, (k // cols) * cell))
    mf._atomic(path, lambda p: sheet.save(p, format="PNG"))


def summary_lines(report: dict) -> list[str]:
    """The end-of-run summary a person reads (the CLI prints these on stderr)."""
    rej = ", ".join(f"{k} {v}" for k, v in report["rejections"].items()) or "none"
    pose = report["pose_range"]
    lines = [f"in: {report['sources']} sources, {report['hours_in']:.3f} h",
             f"kept: {report['clips']} clips, {report['hours_kept']:.3f} h "
             f"from {report['sources_with_clips']} sources",
             f"rejected: {rej}"]
    if report["median_face_px"] is not None:
        lines.append(f"median face: {report['median_face_px']:.0f} px eye-to-mouth, crop {report['median_crop_px']:.0f} px")
        lines.append("pose range: " + ", ".join(
            f"{k} {a:+.1f}..{b:+.1f}" if k in ("yaw", "pitch", "roll") else f"{k} {a:+.2f}..{b:+.2f}"
            for k, (a, b) in pose.items()))
    return lines
