"""How fast the latent shards are made and read, and whether reading them stays flat in memory.

    python benchmarks/data_throughput.py [--model demo] [--clips 4] [--seconds 4] [--json]
    python benchmarks/data_throughput.py --model tiny --clips 2 --seconds 2 --batches 5 --train-steps 3  # smoke

(a) `encode_dataset` frames/s on a synthetic dataset; (b) `window_loader` batches/s reading the
shards (mmap, worker processes) against `preload=True` (the rank's shards in memory), and the
model phase's training steps fed from the shards against fed from memory, alternated in one run
(sequences/s ratio, and the share of step time spent waiting on the loader); (c) peak resident
memory of those training steps over the dataset and over the dataset listed 4× (the same files
under new ids, so 4× the shards), each in a fresh process: streaming should stay flat (ratio
≈ 1) while the preloaded one grows. RSS counts the main process and its DataLoader workers;
`anon` leaves out file pages (mapped shards), which the kernel can drop at any time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _model(name: str, seed: int = 0):
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(seed)
    return MidasModel(preset(name)).eval().requires_grad_(False)


def make_data(root: Path, clips: int, seconds: float, size: int, copies: int) -> tuple[Path, Path]:
    """A synthetic dataset, and a folder whose manifest lists its clips `copies` times."""
    from midas_cli.synth.dataset import write_dataset
    from midas_cli.training.data import read_manifest

    data = root / "data"
    write_dataset(data, clips=clips, seconds=seconds, seed=0, size=size, progress=False)
    many = root / f"data-x{copies}"
    many.mkdir()
    lines = []
    for c in range(copies):
        for e in read_manifest(data):
            e = {k: (f"../data/{v}" if k in ("video", "audio", "listen_audio", "ref", "pose", "prompts", "truth")
                     and isinstance(v, str) else v) for k, v in e.items()}
            lines.append(json.dumps({**e, "id": f"{e['id']}-copy{c}"}))
    (many / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return data, many


def bench_encode(model, data: Path, shard_mb: float) -> dict:
    from midas_cli.training.shards import ShardIndex, encode_dataset

    t0 = time.perf_counter()
    folder = encode_dataset(model, data, shard_mb=shard_mb)
    dt = time.perf_counter() - t0
    frames = int(ShardIndex.load(folder).clip_frames.sum())
    return {"folder": str(folder), "frames": frames, "seconds": dt, "frames_per_s": frames / dt}


def bench_loader(folder: Path, model, args, preload: bool) -> dict:
    from midas_cli.training.shards import window_loader

    chunks = model.cfg.window_chunks + 1
    t0 = time.perf_counter()
    loader = window_loader(folder, chunks=chunks, frames_per_chunk=model.cfg.frames_per_chunk,
                           batch_size=args.batch_size, seed=0, steps=args.batches + 1, num_workers=args.workers,
                           preload=preload)
    it = iter(loader)
    next(it)  # the first batch pays for starting the workers
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = sum(1 for _ in it)
    dt = time.perf_counter() - t1
    return {"preload": preload, "first_batch_s": first, "batches": n, "batches_per_s": n / dt}


def bench_training(folder: Path, model, args, preload: bool, steps: int) -> dict:
    """A training loop as the model phase runs it (forward, backward, AdamW) fed by the loader
    reading the shards (`preload=False`) or the same shards held in memory: sequences/s and the
    time blocked in next()."""
    from midas_cli.training.objective import sequence_loss
    from midas_cli.training.shards import window_loader

    torch.manual_seed(0)
    model.train()
    model.autoencoder.eval()
    params = [p for n, p in model.named_parameters() if not n.startswith("autoencoder.")]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    loader = window_loader(folder, chunks=model.cfg.window_chunks + 1, frames_per_chunk=model.cfg.frames_per_chunk,
                           batch_size=args.batch_size, seed=0, steps=steps + 1, num_workers=args.workers,
                           preload=preload)
    it = iter(loader)
    next(it)  # worker start-up, not a per-step stall
    start_wait = loader.wait_s
    t0 = time.perf_counter()
    n = 0
    for ref, frames, prev, feats, texts in it:
        b, k = len(texts), len(texts[0])
        feats.text = model.encode_texts([t for row in texts for t in row]).reshape(b, k, -1)
        loss = sequence_loss(model, ref, frames, prev, feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    dt = time.perf_counter() - t0
    wait = loader.wait_s - start_wait
    model.eval().requires_grad_(False)
    return {"preload": preload, "steps": n, "step_s": dt / n, "sequences_per_s": n * args.batch_size / dt,
            "wait_per_step_ms": 1000 * wait / n, "wait_share": wait / dt}


def bench_training_ab(folder: Path, model, args) -> dict:
    """Shards against in-memory, alternated `rounds` times in this process (machines and loads
    differ from run to run; only the ratio within one run means something)."""
    runs = {False: [], True: []}
    for _ in range(args.rounds):
        for preload in (False, True):
            runs[preload].append(bench_training(folder, model, args, preload, args.train_steps))
    shards = sum(r["sequences_per_s"] for r in runs[False]) / args.rounds
    memory = sum(r["sequences_per_s"] for r in runs[True]) / args.rounds
    return {"shards": runs[False], "memory": runs[True], "shards_sequences_per_s": shards,
            "memory_sequences_per_s": memory, "ratio": shards / memory,
            "shards_wait_share": max(r["wait_share"] for r in runs[False])}


def _rss_tree() -> tuple[float, float]:
    """(rss, anon) MB of this process and its descendants, from /proc (Linux)."""
    def status(pid):
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                fields[k] = int(v.split()[0]) / 1024
        return fields

    def children(pid):
        out = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            for c in (task / "children").read_text().split():
                out += [int(c)] + children(int(c))
        return out

    rss = anon = 0.0
    for pid in [Path("/proc/self").resolve().name] + children(Path("/proc/self").resolve().name):
        try:
            s = status(pid)
        except OSError:
            continue
        rss, anon = rss + s.get("VmRSS", 0), anon + s.get("RssAnon", 0)
    return rss, anon


def rss_child(folder: str, args) -> dict:
    """Run in a fresh process: training steps fed by the loader, then the resident memory of the
    process and its workers, measured while the workers are alive (the model phase's footprint)."""
    import threading

    peak = [0.0, 0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss, anon = _rss_tree()
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    bench_training(Path(folder), _model(args.model), args, args.preload, args.batches)
    done.set()
    sampler.join()
    return {"rss_mb": peak[0], "anon_mb": peak[1]}


def bench_memory(one: Path, many: Path, args) -> dict:
    """(c) on two shard folders: the dataset and the dataset listed `copies` times."""
    out = {}
    for preload in (False, True):
        row = {}
        for name, folder in (("x1", one), ("xN", many)):
            cmd = [sys.executable, __file__, "--rss-child", str(folder), "--model", args.model, "--batches",
                   str(args.batches), "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
            if preload:
                cmd.append("--preload")
            row[name] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        row["rss_ratio"] = row["xN"]["rss_mb"] / row["x1"]["rss_mb"]
        row["anon_ratio"] = row["xN"]["anon_mb"] / row["x1"]["anon_mb"]
        out["preload" if preload else "shards"] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="preset whose autoencoder encodes and which trains")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", type=int, default=128, help="synthetic frame size")
    ap.add_argument("--copies", type=int, default=4, help="(c): the dataset listed this many times")
    ap.add_argument("--shard-mb", type=float, default=1.0)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=10, help="training steps per A/B round")
    ap.add_argument("--rounds", type=int, default=2, help="alternated shards / in-memory training rounds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--preload", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return

    with tempfile.TemporaryDirectory(prefix="midas-data-bench-") as tmp:
        one, many = make_data(Path(tmp), args.clips, args.seconds, args.size, args.copies)
        model = _model(args.model)
        enc = bench_encode(model, one, args.shard_mb)
        folder, folder_many = Path(enc["folder"]), Path(bench_encode(model, many, args.shard_mb)["folder"])
        loaders = [bench_loader(folder, model, args, preload) for preload in (False, True)]
        train = bench_training_ab(folder, model, args) if args.train_steps > 0 else None
        mem = bench_memory(folder, folder_many, args)
    result = {"model": args.model, "threads": torch.get_num_threads(), "workers": args.workers,
              "encode": {k: v for k, v in enc.items() if k != "folder"}, "loader": loaders, "training": train,
              "memory": mem, "copies": args.copies}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = [("encode", f"{enc['frames_per_s']:.1f} frames/s ({enc['frames']} frames in {enc['seconds']:.1f} s)")]
    for r in loaders:
        rows.append((f"loader {'preload' if r['preload'] else 'shards'}", f"{r['batches_per_s']:.1f} batches/s "
                     f"of {args.batch_size} (first batch {r['first_batch_s']:.2f} s)"))
    if train:
        rows.append(("training, shards/in-memory", f"{train['shards_sequences_per_s']:.2f} / "
                     f"{train['memory_sequences_per_s']:.2f} sequences/s = ×{train['ratio']:.3f} "
                     f"({args.rounds} alternated rounds of {args.train_steps} steps)"))
        rows.append(("training data wait", f"{100 * train['shards_wait_share']:.1f} % of step time "
                     "(worst round, shards)"))
    for name, row in mem.items():
        rows.append((f"memory {name} x1 → x{args.copies}",
                     f"RSS {row['x1']['rss_mb']:.0f} → {row['xN']['rss_mb']:.0f} MB (×{row['rss_ratio']:.3f}), "
                     f"anon ×{row['anon_ratio']:.3f}"))
    width = max(len(k) for k, _ in rows)
    print(f"data throughput: model {args.model}, {args.workers} workers, {torch.get_num_threads()} threads")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
