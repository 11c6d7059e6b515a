"""Score a generator on held-out cases: pixels against the true video, judges for the rest.

``generate(case) -> uint8 (T, H, W, 3)`` gets a case's inputs (ref, audio, listen_audio,
pose, prompts) and returns frames; T may differ from the truth by one frame (the common
prefix is scored). Frames of another size are resized to the truth's size first.

Metrics (all frames of all cases pooled unless stated):
- ``psnr_db``, ``ssim``: against the true frames; ``psnr_per_second``: mean over cases.
- ``drift_db``: per case, mean PSNR of the first fifth minus the last fifth, averaged.
  Positive = quality decays over the clip.
- ``lip_sync_acc``: mouth judge on generated frames == true mouth class (all frames);
  ``lip_sync_balanced_acc`` averages the per-class recalls (a closed-mouth generator scores
  0.25 there whatever the share of silence); ``speaking_lip_sync_acc``: frames where the
  avatar's own audio is voiced.
- ``expression_acc``: expression judge == the class of the active prompt.
- ``pose_err``: mean |judged - input| over yaw, pitch, roll (degrees); per axis in
  ``pose_err_yaw_pitch_roll``. The judge's own error on true frames is ~1.7 degrees.
- ``listening_acc``: share of listening frames (only the interlocutor speaks) judged closed.
- ``per_minute`` (clips of two minutes or more): the metrics above for each minute of the clips,
  pooled over cases, with ``listening_frames`` (how many frames the listening score rests on),
  so a score over minutes can be told apart from a score that falls with time.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from midas_cli.errors import MidasError
from midas_cli.evaluation.cases import EvalCase
from midas_cli.evaluation.judges import Judges, load_judges
from midas_cli.evaluation.metrics import per_second, psnr_frames, ssim_frames
from midas_cli.synth.constants import FPS, N_MOUTH
from midas_cli.synth.progress import progress_bar

Generator = Callable[[EvalCase], np.ndarray]


def truth_generator(case: EvalCase) -> np.ndarray:
    """Upper bound: the true frames."""
    return case.frames.copy()


def static_generator(case: EvalCase) -> np.ndarray:
    """Lower bound: the reference photo repeated (mouth always closed, never moves)."""
    return np.repeat(case.ref[None], case.n_frames, axis=0)


BASELINES: dict[str, Generator] = {"truth": truth_generator, "static": static_generator}


def _check_frames(frames, case: EvalCase) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise MidasError(f"{case.name}: generator returned shape {frames.shape}, "
                         "expected (T, H, W, 3)")
    if abs(len(frames) - case.n_frames) > 1:
        raise MidasError(f"{case.name}: generator returned {len(frames)} frames, "
                         f"expected {case.n_frames} (±1)")
    if frames.dtype != np.uint8:
        frames = np.clip(np.round(frames), 0, 255).astype(np.uint8)
    H, W = case.frames.shape[1:3]
    if frames.shape[1:3] != (H, W):
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(H, W), mode="bilinear", antialias=True, align_corners=False)
        frames = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return frames


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _case_metrics(gen: np.ndarray, case: EvalCase, judges: Judges) -> dict[str, np.ndarray]:
    T = min(len(gen), case.n_frames)
    gen, truth = gen[:T], case.frames[:T]
    pred = judges.predict(gen)
    voiced = (np.abs(case.audio[:T * 1280].reshape(T, -1)).max(1) > 0.01)
    return {
        "psnr": psnr_frames(gen, truth),
        "ssim": ssim_frames(gen, truth),
        "mouth_true": case.mouth[:T], "mouth_pred": pred["mouth"],
        "expr_ok": pred["expression"] == case.expression[:T],
        "pose_abs": np.abs(pred["pose"][:, :3] - case.pose[:T, :3]),
        "listening": case.listening[:T], "voiced": voiced,
    }


def _summarise(m: dict[str, np.ndarray]) -> dict:
    mouth_ok = m["mouth_pred"] == m["mouth_true"]
    recalls = [mouth_ok[m["mouth_true"] == k].mean() for k in range(N_MOUTH)
               if (m["mouth_true"] == k).any()]
    fifth = max(1, len(m["psnr"]) // 5)
    return {
        "psnr_db": _mean(m["psnr"]), "ssim": _mean(m["ssim"]),
        "lip_sync_acc": _mean(mouth_ok),
        "lip_sync_balanced_acc": float(np.mean(recalls)) if recalls else None,
        "speaking_lip_sync_acc": _mean(mouth_ok[m["voiced"]]),
        "expression_acc": _mean(m["expr_ok"]),
        "pose_err": _mean(m["pose_abs"].mean(1)),
        "pose_err_yaw_pitch_roll": [float(v) for v in m["pose_abs"].mean(0)],
        "listening_acc": _mean(m["mouth_pred"][m["listening"]] == 0),
        "drift_db": float(m["psnr"][:fifth].mean() - m["psnr"][-fifth:].mean()),
    }


_MINUTE_KEYS = ("psnr_db", "ssim", "lip_sync_balanced_acc", "expression_acc", "pose_err",
                "listening_acc")


def _per_minute(pooled: list[dict[str, np.ndarray]]) -> list[dict]:
    """Each minute's scores, pooled over cases; none for clips under two minutes."""
    n = int(round(60 * FPS))
    longest = max(len(m["psnr"]) for m in pooled)
    out = []
    for minute in range(math.ceil(longest / n) if longest >= 2 * n else 0):
        window = {k: np.concatenate([m[k][minute * n:(minute + 1) * n] for m in pooled])
                  for k in pooled[0]}
        summary = _summarise(window)
        out.append({"minute": minute + 1, **{k: summary[k] for k in _MINUTE_KEYS},
                    "listening_frames": int(window["listening"].sum())})
    return out


def evaluate(generate: Generator, cases: list[EvalCase], progress: bool = True,
             judges: Judges | None = None) -> dict:
    """Run ``generate`` on every case and return the metrics (see the module docstring)."""
    if not cases:
        raise MidasError("evaluate: no cases")
    judges = judges or load_judges()
    per_case, pooled, gen_seconds = [], [], 0.0
    with progress_bar(progress) as bar:
        task = bar.add_task("evaluate", total=len(cases))
        for case in cases:
            t0 = time.perf_counter()
            frames = generate(case)
            gen_seconds += time.perf_counter() - t0
            m = _case_metrics(_check_frames(frames, case), case, judges)
            pooled.append(m)
            per_case.append({"name": case.name, "identity": case.identity,
                             **_summarise(m)})
            bar.advance(task)

    allm = {k: np.concatenate([m[k] for m in pooled]) for k in pooled[0]}
    result = _summarise(allm)
    result["drift_db"] = float(np.mean([c["drift_db"] for c in per_case]))
    n_sec = max(len(per_second(m["psnr"])) for m in pooled)
    sec_lists = [per_second(m["psnr"]) for m in pooled]
    result["psnr_per_second"] = [
        float(np.mean([s[i] for s in sec_lists if i < len(s)])) for i in range(n_sec)]
    if minutes := _per_minute(pooled):
        result["per_minute"] = minutes
    media_s = sum(len(m["psnr"]) for m in pooled) / FPS
    result.update({
        "cases": len(cases), "seconds": float(np.mean([c.seconds for c in cases])),
        "frames": int(sum(len(m["psnr"]) for m in pooled)),
        "generate_seconds": round(gen_seconds, 3),
        "realtime_factor": round(gen_seconds / media_s, 4) if media_s else None,
        "per_case": per_case,
    })
    return _json_safe(result)


def _json_safe(x):
    """NaN/inf -> None, numpy scalars -> Python, recursively (so json.dumps is strict-valid)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
