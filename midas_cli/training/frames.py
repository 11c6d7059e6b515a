"""Frames for the autoencoder phase, decoded lazily in DataLoader workers instead of pooled in RAM.

`frame_pool` decodes every clip and keeps every frame: fine for the synthetic demo, impossible
for 20,000 hours. Here training draws in *blocks* of `block_steps` steps: block b decodes
`clips_per_block` clips picked by `np.random.default_rng([seed, rank, b])` (this rank's share of
the manifest), pools their frames and references (as `frame_pool` includes references) and draws
every batch of the block from that pool. Memory is one pool per worker in flight, whatever the
dataset size; batch s depends only on (seed, rank, s), so a resumed run gets the same batches.
With `with_pose`, each frame comes with its clip's head pose (`load_pose`; a reference is pose 0),
which places the mouth for `reconstruction_loss`'s `mouth_weight`. With `rollouts` (a folder of
`training/rollouts.py`), each frame also comes with the model's rollout tokens of it, and a share
`rollout_share` of a batch's frames (never a reference, which has no rollout) is marked to be
decoded from those instead of from its encoding.

The price is locality: a block's batches come from `clips_per_block` clips, not from all of
them. Raise it (and `block_steps` with it, to amortise decoding) until that stops mattering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midas_cli.errors import MidasError


@dataclass
class FrameStream(torch.utils.data.IterableDataset):
    """Yields (block, uint8 (block_steps, batch_size, H, W, 3)) for blocks start_block, +1, ...
    (split across DataLoader workers by block number, so the order is the same for any count)."""

    data_dir: Path
    width: int
    height: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    start_block: int = 0
    blocks: int | None = None  # None: endless
    clips_per_block: int = 8
    block_steps: int = 16
    max_clips: int | None = None
    with_pose: bool = False
    rollouts: Path | None = None
    rollout_share: float = 0.0

    def __post_init__(self):
        from midas_cli.training.data import read_manifest

        super().__init__()
        self.data_dir = Path(self.data_dir)
        entries = read_manifest(self.data_dir)[:self.max_clips]
        self.entries = [e for i, e in enumerate(entries) if i % self.world == self.rank]
        if not self.entries:
            raise MidasError(f"{self.data_dir}: {len(entries)} clips for {self.world} ranks; every rank needs one")

    def pool(self, block: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Block `block`'s frames and references, their poses (N, 6) (zeros without `with_pose`),
        and the generator that then draws its batches."""
        frames, poses, _, rng = self._pool(block)
        return frames, poses, rng

    def _pool(self, block: int):
        """`pool`, and with `rollouts` each frame's rollout tokens (None for a reference)."""
        from midas_cli.media.image import load_reference
        from midas_cli.media.pose import load_pose
        from midas_cli.media.video_in import read_frames
        from midas_cli.training.rollouts import load_rollout

        rng = np.random.default_rng([self.seed, self.rank, block])
        k = min(self.clips_per_block, len(self.entries))
        picks = rng.choice(len(self.entries), size=k, replace=False)
        frames, poses, refs, tokens = [], [], [], []
        for p in picks:
            e = self.entries[p]
            clip = list(read_frames(self.data_dir / e["video"], width=self.width, height=self.height))
            frames += clip
            if self.rollouts is not None:
                tokens += list(load_rollout(self.rollouts, e["id"], len(clip)))
            if self.with_pose and e.get("pose"):
                poses.append(load_pose(self.data_dir / e["pose"], len(clip)))
            else:
                poses.append(np.zeros((len(clip), 6), np.float32))
            refs.append(load_reference(self.data_dir / e["ref"], self.width, self.height))
        poses.append(np.zeros((len(refs), 6), np.float32))  # the reference photo is pose 0
        if self.rollouts is not None:
            tokens = np.stack(tokens + [np.zeros_like(tokens[0])] * len(refs))
        return np.stack(frames + refs), np.concatenate(poses), (tokens if self.rollouts is not None else None), rng

    def block(self, block: int):
        """(frames, poses) of the block's steps, each (block_steps, batch_size, ...); with
        `rollouts` also (tokens, use): the frames' rollout tokens and which are decoded from them."""
        pool, poses, tokens, rng = self._pool(block)
        picks = rng.integers(0, len(pool), (self.block_steps, self.batch_size))
        if tokens is None:
            return pool[picks], poses[picks]
        refs_from = len(pool) - min(self.clips_per_block, len(self.entries))  # the references come last
        use = (rng.random(picks.shape) < self.rollout_share) & (picks < refs_from)
        return pool[picks], poses[picks], tokens[picks], use

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        b = self.start_block + w
        while self.blocks is None or b < self.start_block + self.blocks:
            yield b, *(torch.from_numpy(a) for a in self.block(b))
            b += n


class FrameLoader:
    """uint8 (batch, H, W, 3) tensors, one per autoencoder step, from step `start_step` on;
    `images_to_tensor(batch, device)` turns one into the model's input. With the stream's
    `with_pose`, (frames, poses (batch, 6)) pairs instead; with its `rollouts`, (frames, poses,
    tokens (batch, N, C), use (batch,) bool). `wait_s`: time blocked."""

    def __init__(self, stream: FrameStream, loader, start_step: int, steps: int | None):
        self.stream, self.loader, self.start_step, self.steps = stream, loader, start_step, steps
        self.wait_s = 0.0

    def __iter__(self):
        step = self.start_step
        it = iter(self.loader)
        while self.steps is None or step < self.steps:
            t0 = time.perf_counter()
            try:
                b, *block = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - t0
            for i in range(step - b * self.stream.block_steps, self.stream.block_steps):
                if self.steps is not None and step >= self.steps:
                    return
                if self.stream.rollouts is not None:
                    yield tuple(a[i] for a in block)
                else:
                    yield (block[0][i], block[1][i]) if self.stream.with_pose else block[0][i]
                step += 1


def frame_loader(data_dir: Path | str, *, width: int, height: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, start_step: int = 0, steps: int | None = None, clips_per_block: int = 8,
                 block_steps: int = 16, num_workers: int = 2, prefetch_factor: int = 2,
                 max_clips: int | None = None, with_pose: bool = False, rollouts: Path | None = None,
                 rollout_share: float = 0.0) -> FrameLoader:
    """Autoencoder batches decoded ahead by `num_workers` processes; batch s is the same for any
    `num_workers`, and `start_step=s` starts at it (exact resume)."""
    first = start_step // block_steps
    blocks = None if steps is None else max(0, -(-steps // block_steps) - first)
    stream = FrameStream(Path(data_dir), width, height, batch_size, seed, rank, world, first, blocks,
                         clips_per_block, block_steps, max_clips, with_pose, rollouts, rollout_share)
    extra = dict(persistent_workers=True, prefetch_factor=prefetch_factor) if num_workers > 0 else {}
    # its own generator: starting workers must not draw from the training's torch RNG (exact resume)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(seed), **extra)
    return FrameLoader(stream, loader, start_step, steps)
