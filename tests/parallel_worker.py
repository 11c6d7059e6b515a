"""A few training steps of the tiny model under one parallel mode (tests/test_parallel.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/parallel_worker.py \\
        --mode fsdp --steps 6 --out DIR [--accum 2] [--save-at 3] [--activation-checkpointing]

Every rank builds the same global batch for a step from a generator seeded by the step, and
takes its rows; every random draw of the loss (context-noise buckets and noise, flow times and
noise) is part of that batch. So one process on the whole batch, DDP and FSDP compute the same
math, and their loss curves can be compared tightly: only float summation order differs.
Writes DIR/result-<rank>.json (losses, gradient norms, a digest of the full model state) and,
on rank 0, DIR/state-<step>.pt (full model + optimizer state, as `train_state.pt` would hold)
and DIR/checkpoint/ (a checkpoint folder written from the sharded model) at the last step.
With --save-at K it then trains again from scratch-initialised weights resumed from state-K.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

GLOBAL_BATCH, CHUNKS, LR, CLIP = 4, 2, 3e-3, 0.05  # CLIP is below the gradient norm: clipping acts
WORDS = ["smile", "frown", "look left", "neutral", ""]


def make_model(seed: int = 0):
    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.config import preset
    from midas_cli.model.midas import MidasModel

    torch.manual_seed(seed)
    model = MidasModel(preset("tiny"), tokenizer=build_word_tokenizer(WORDS, 128))
    model.autoencoder.requires_grad_(False).eval()
    return model


class SeededLoss(nn.Module):
    """`sequence_loss` (objective.py) with its noise passed in instead of drawn."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ref, frames, prev, feats, texts, noise):
        m = self.model
        b, k = len(texts), len(texts[0])
        feats.text = m.encode_texts([t for row in texts for t in row]).reshape(b, k, -1)
        context = m.noise.corrupt(prev, noise["buckets"], eps=noise["context"])
        cond = m.slot_hidden(ref, context, feats, noise["buckets"]).flatten(0, 1)  # (B*T, N, H)
        x0, t, eps = frames.flatten(0, 1), noise["t"], noise["eps"]
        x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * eps
        return F.mse_loss(m.head(x_t, t, cond), eps - x0)


def global_batch(model, step: int):
    """The whole step's batch, the same on every rank: (ref, frames, prev, feats, texts, noise)."""
    from midas_cli.model.midas import ChunkFeatures

    g = torch.Generator().manual_seed(1000 + step)
    cfg, b = model.cfg, GLOBAL_BATCH
    f, n, c, a = cfg.frames_per_chunk, cfg.tokens_per_frame, cfg.latent_channels, model.audio_features.dim
    t = CHUNKS * f
    ref = torch.randn(b, n, c, generator=g)
    frames = torch.randn(b, t, n, c, generator=g)
    prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
    feats = ChunkFeatures(audio=torch.randn(b, CHUNKS, f, a, generator=g),
                          pose=torch.randn(b, CHUNKS, f, cfg.pose_dim, generator=g), text=None,
                          listen=torch.randn(b, CHUNKS, f, a, generator=g))
    texts = [[WORDS[int(i)] for i in torch.randint(len(WORDS), (CHUNKS,), generator=g)] for _ in range(b)]
    noise = {"buckets": torch.randint(cfg.noise.num_buckets, (b, t), generator=g),
             "context": torch.randn(b, t, n, c, generator=g),
             "t": torch.rand(b * t, generator=g), "eps": torch.randn(b * t, n, c, generator=g)}
    return ref, frames, prev, feats, texts, noise


def rows(batch, lo: int, hi: int):
    """Rows lo:hi of a batch (the flow noise is per frame: T rows per sequence)."""
    from midas_cli.model.midas import ChunkFeatures

    ref, frames, prev, feats, texts, noise = batch
    t = frames.shape[1]
    sel = ChunkFeatures(feats.audio[lo:hi], feats.pose[lo:hi], None, feats.listen[lo:hi])
    return (ref[lo:hi], frames[lo:hi], prev[lo:hi], sel, texts[lo:hi],
            {"buckets": noise["buckets"][lo:hi], "context": noise["context"][lo:hi],
             "t": noise["t"][lo * t:hi * t], "eps": noise["eps"][lo * t:hi * t]})


def global_grad_norm(params) -> float:
    """The gradient norm over all ranks' shards, summed by hand (not through the code under test)."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    sq = sum(float(g.to_local().double().pow(2).sum()) if isinstance(g, DTensor) else float(g.double().pow(2).sum())
             for g in grads)
    if grads and isinstance(grads[0], DTensor):  # shards: add the other ranks' parts
        box = torch.tensor(sq, dtype=torch.float64)
        torch.distributed.all_reduce(box)
        sq = float(box)
    return sq ** 0.5


def state_digest(model) -> str:
    """sha256 of the full (gathered) model state, computed on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(mode: str, steps: int, out: Path, *, accum: int = 1, start: int = 0, init_seed: int = 0,
          resume_from: Path | None = None, save_at: int | None = None, checkpointing: bool = False) -> dict:
    from midas_cli.training.parallel import (clip_grad_norm, full_state_dicts, load_full_state_dicts, micro_step,
                                             trainable_parameters, wrap_for_training)

    dist = torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
    model = make_model(init_seed)
    wrapped = wrap_for_training(SeededLoss(model), model, parallel=mode, device=torch.device("cpu"), world=world,
                                activation_checkpointing=checkpointing)
    params = trainable_parameters(model)  # after wrapping: FSDP's DTensors
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    if resume_from is not None:
        state = torch.load(resume_from, weights_only=True) if rank == 0 else None
        load_full_state_dicts(model, opt, state and state["model"], state and state["optimizer"])
        start = torch.tensor(state["step"] if rank == 0 else 0)
        if dist:
            torch.distributed.broadcast(start, 0)
        start = int(start)
    model.train()
    model.autoencoder.eval()
    losses, norms, clipped = [], [], []
    per = GLOBAL_BATCH // world
    for step in range(start, steps):
        local = rows(global_batch(model, step), rank * per, (rank + 1) * per)
        total = torch.zeros(())
        for i in range(accum):
            lo, hi = i * per // accum, (i + 1) * per // accum
            with micro_step(wrapped, sync=i == accum - 1):
                loss = wrapped(*rows(local, lo, hi)) / accum
                loss.backward()
            total += loss.detach()
        norms.append(clip_grad_norm(params, CLIP))
        clipped.append(global_grad_norm(params))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dist:
            torch.distributed.all_reduce(total)
        losses.append(float(total) / world)
        if save_at is not None and step + 1 in (save_at, steps):
            model_sd, optim_sd = full_state_dicts(model, opt)  # collective: every rank calls it
            if rank == 0:
                torch.save({"step": step + 1, "model": model_sd, "optimizer": optim_sd}, out / f"state-{step + 1}.pt")
                if step + 1 == steps:  # a loadable folder from the (sharded) model, as the loop writes it
                    from midas_cli.model.checkpoint import save_checkpoint

                    model.eval()
                    save_checkpoint(model, out / "checkpoint", state_dict=model_sd)
                    model.train()
                    model.autoencoder.eval()
    return {"losses": losses, "grad_norms": norms, "clipped_norms": clipped, "digest": state_digest(model), "rank": rank, "world": world}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["ddp", "fsdp"], required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--save-at", type=int)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if "RANK" in os.environ:
        torch.distributed.init_process_group("gloo")
    a.out.mkdir(parents=True, exist_ok=True)
    result = train(a.mode, a.steps, a.out, accum=a.accum, save_at=a.save_at, checkpointing=a.activation_checkpointing)
    if a.save_at is not None:  # a fresh model (other init) resumed from the saved step
        resumed = train(a.mode, a.steps, a.out, accum=a.accum, init_seed=1, resume_from=a.out / f"state-{a.save_at}.pt",
                        checkpointing=a.activation_checkpointing)
        result["resumed_losses"], result["resumed_digest"] = resumed["losses"], resumed["digest"]
    (a.out / f"result-{result['rank']}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
