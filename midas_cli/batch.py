"""Batch rendering (`midas batch RECIPE.yaml`): many renders with one model load, resumable, rank-sharded.

A recipe is data: shared `defaults` plus a list of `jobs`, each the options of `midas
generate`. Relative paths are relative to the current directory. A job whose output exists is
skipped (so a crashed batch resumes where it stopped); a failing job is reported and the
rest go on. Under `torchrun`, rank r of w renders jobs r, r+w, r+2w, ...
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from midas_cli.console import console_err
from midas_cli.devices import pick_device, pick_dtype
from midas_cli.errors import MidasError
from midas_cli.model.config import dataclass_from_dict


@dataclass
class RenderJob:
    audio: str
    ref: str
    out: str
    listen_audio: str | None = None
    pose: str | None = None
    prompt: str | None = None
    prompts: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    steps: int | None = None
    duration: float | None = None
    context_noise: float | None = None
    name: str | None = None


def load_batch_recipe(path: Path) -> list[RenderJob]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise MidasError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise MidasError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise MidasError(f"{path}: a batch recipe needs a non-empty `jobs` list")
    unknown = set(data) - {"defaults", "jobs"}
    if unknown:
        raise MidasError(f"{path}: unknown top-level field {sorted(unknown)[0]!r} (known: defaults, jobs)")
    defaults = data.get("defaults") or {}
    jobs = []
    for i, job in enumerate(data["jobs"]):
        if not isinstance(job, dict):
            raise MidasError(f"{path}: jobs[{i}]: expected a mapping")
        jobs.append(dataclass_from_dict(RenderJob, {**defaults, **job}, f"{path}: jobs[{i}]"))
    return jobs


def run_batch(recipe: Path, device: str = "auto", rank: int | None = None, world: int | None = None) -> list[dict]:
    from midas_cli.model.checkpoint import load_model
    from midas_cli.render import generate_video

    jobs = load_batch_recipe(recipe)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    if world > 1 and os.environ.get("LOCAL_RANK") and device == "auto":
        device = f"cuda:{os.environ['LOCAL_RANK']}" if pick_device("auto").type == "cuda" else "cpu"
    mine = jobs[rank::world]
    models: dict = {}
    results = []
    for job in mine:
        label = job.name or Path(job.out).stem
        out = Path(job.out)
        if out.exists():
            results.append({"job": label, "status": "skipped (exists)", "out": job.out})
            console_err.print(f"[{len(results)}/{len(mine)}] {label}: skipped (exists)", highlight=False)
            continue
        t0 = time.perf_counter()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if job.checkpoint not in models:
                dev = pick_device(device)
                models[job.checkpoint] = load_model(job.checkpoint, device=dev, dtype=pick_dtype("auto", dev))
            kw = {k: v for k, v in asdict(job).items() if k not in ("name", "out", "audio", "ref", "checkpoint")}
            for key in ("listen_audio", "pose", "prompts"):
                kw[key] = Path(kw[key]) if kw[key] else None
            stats = generate_video(Path(job.audio), Path(job.ref), out, model=models[job.checkpoint],
                                   progress=False, **kw)
            results.append({"job": label, "status": "ok", "out": job.out, "frames": stats.frames,
                            "seconds": round(time.perf_counter() - t0, 2)})
        except MidasError as e:
            results.append({"job": label, "status": f"failed: {e}", "out": job.out})
        console_err.print(f"[{len(results)}/{len(mine)}] {label}: {results[-1]['status']}", highlight=False,
                          markup=False, soft_wrap=True)  # one line, whatever the path length or brackets in it
    return results
