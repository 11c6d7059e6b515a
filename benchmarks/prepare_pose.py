"""Head pose that `midas prepare` recovers from synth clips, against the synth world's truth.

    python benchmarks/prepare_pose.py --seeds 3 4 5 --clips 3 --backend mediapipe dlib

Each synth clip (256², 4 s) is muxed with its audio and run through `prepare`; the pose JSON
written is compared with the truth the renderer drew (listening nods included), relative to the
clip's first frame as `prepare` writes it. Prints, per backend, the median |error| per frame of
yaw, pitch, roll (degrees), x, y, scale (fractions), the correlation of each angle with the truth,
and how many synth clips came out as clips. Choose settings on some seeds, report on others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def truth_of(synth: Path, entry: dict, start: int, n: int) -> np.ndarray:
    from midas_cli.prepare.headpose import angles
    from midas_cli.synth.geometry import rotation
    from midas_cli.synth.pose import nod_offsets

    t = json.loads((synth / entry["truth"]).read_text())
    drawn = np.array(t["pose"])
    drawn[:, 1] += nod_offsets(np.array(t["listening"]))  # the video shows the listening nod
    drawn = drawn[start:start + n]
    truth = np.zeros_like(drawn)
    R0 = rotation(*drawn[0, :3])
    for i in range(n):
        truth[i, :3] = angles(rotation(*drawn[i, :3]) @ R0.T)
    truth[:, 3:] = drawn[:, 3:] - drawn[0, 3:]
    return truth


def run(seeds: list[int], clips: int, backend: str, seconds: float) -> dict:
    import imageio_ffmpeg

    from midas_cli.media.pose import load_pose
    from midas_cli.prepare.run import PrepareOptions, prepare
    from midas_cli.synth.dataset import write_dataset

    est_all, truth_all, kept, total = [], [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in seeds:
            synth = tmp / f"synth{seed}"
            write_dataset(synth, clips=clips, seconds=seconds, seed=seed, size=256, progress=False)
            entries = [json.loads(line) for line in (synth / "manifest.jsonl").read_text().splitlines()]
            for k, e in enumerate(entries):
                total += 1
                src = tmp / f"in{seed}-{k}" / "synth.mp4"
                src.parent.mkdir()
                subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
                                "-i", str(synth / e["video"]), "-i", str(synth / e["audio"]),
                                "-c:v", "copy", "-c:a", "aac", str(src)], check=True)
                out = tmp / f"out{seed}-{k}-{backend}"
                prepare([src], out, PrepareOptions(clip_seconds=seconds, min_seconds=1.0, face_backend=backend))
                for line in (out / "manifest.jsonl").read_text().splitlines():
                    got = json.loads(line)
                    n, start = round(got["seconds"] * 12.5), round(got["start"] * 12.5)
                    est_all.append(load_pose(out / got["pose"], n))
                    truth_all.append(truth_of(synth, e, start, n))
                    kept += 1
    est, truth = np.concatenate(est_all), np.concatenate(truth_all)
    err = np.median(np.abs(est - truth), 0)
    corr = [float(np.corrcoef(est[:, j], truth[:, j])[0, 1]) for j in range(3)]
    return {"backend": backend, "clips_kept": kept, "clips": total, "frames": len(est),
            "median_abs_error": dict(zip(("yaw", "pitch", "roll", "x", "y", "scale"), err.round(4).tolist())),
            "angle_correlation": dict(zip(("yaw", "pitch", "roll"), np.round(corr, 3).tolist()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--clips", type=int, default=3, help="synth clips per seed")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--backend", nargs="+", default=["mediapipe", "dlib"])
    args = ap.parse_args(argv)
    for backend in args.backend:
        print(json.dumps(run(args.seeds, args.clips, backend, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
