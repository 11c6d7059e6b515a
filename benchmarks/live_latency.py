"""Live latency: `midas serve` in a subprocess, one (or N concurrent) paced `midas stream` sessions.

    python benchmarks/live_latency.py --seconds 600            # one 10-minute session
    python benchmarks/live_latency.py --seconds 120 --sessions 2

Prints one JSON object: per session chunk latency p50/p95/max, first_frame_s, dropped chunks;
and the server's resident memory (RSS, sampled every second) in the first and last minute
(a shorter run compares its first and last fifth). Audio is speech-like noise at 1× real time,
with a listen stream and a prompt change every 30 s, as a conversation would send.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from midas_cli.live.client import stream, wait_for_server
    from midas_cli.media.audio import write_wav
    from midas_cli.pipeline import synthetic_speech

    port = _free_port()
    cmd = [sys.executable, "-m", "midas_cli", "serve", "--port", str(port), "--max-sessions", str(args.sessions),
           "--device", args.device] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, timeout_s=60)
        rss: list[tuple[float, int]] = []
        done = threading.Event()

        def sample():
            t0 = time.perf_counter()
            while not done.is_set():
                rss.append((time.perf_counter() - t0, _rss(server.pid)))
                done.wait(1.0)

        with tempfile.TemporaryDirectory() as tmp:
            prompts = Path(tmp) / "prompts.json"
            texts = ["a calm, neutral face", "she smiles warmly", "a surprised look"]
            prompts.write_text(json.dumps({"version": 1, "prompts": [
                {"t": t, "text": texts[k % 3]} for k, t in enumerate(np.arange(0, args.seconds, 30.0).tolist())]}))
            jobs = []
            for k in range(args.sessions):
                write_wav(Path(tmp) / f"speak{k}.wav", synthetic_speech(args.seconds, seed=k))
                write_wav(Path(tmp) / f"listen{k}.wav", synthetic_speech(args.seconds, seed=100 + k) * 0.5)
                jobs.append(dict(audio=Path(tmp) / f"speak{k}.wav", listen_audio=Path(tmp) / f"listen{k}.wav",
                                 prompts=prompts, out=Path(tmp) / f"out{k}.mp4"))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.sessions) as pool:
                results = list(pool.map(lambda j: stream(url, **j), jobs))
            wall = time.perf_counter() - t0
            done.set()
            sampler.join()
        span = min(60.0, args.seconds / 5)
        first = [m for t, m in rss if t <= span]
        last = [m for t, m in rss if t >= rss[-1][0] - span]
        keys = ("frames", "first_frame_s", "latency_p50_ms", "latency_p95_ms", "latency_max_ms", "gen_ms_p50",
                "dropped_chunks")
        report = {
            "seconds": args.seconds, "sessions": args.sessions, "wall_s": round(wall, 1), "cpu_count": os.cpu_count(),
            "results": [{k: (round(r[k], 3) if isinstance(r[k], float) else r[k]) for k in keys} for r in results],
            "rss_window_s": span, "rss_first_mb": round(np.mean(first) / 2**20, 1),
            "rss_last_mb": round(np.mean(last) / 2**20, 1), "rss_ratio": round(float(np.mean(last) / np.mean(first)), 4),
        }
        print(json.dumps(report))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
