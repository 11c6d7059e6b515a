"""Per-GPU memory of training the paper config: DDP vs FSDP2, estimated and (on a GPU) measured.

The estimate is `midas_cli.training.parallel.memory_estimate` (its docstring has the formula):
sharded fp32 weights + grads + AdamW moments, the all-gathered units in flight, the frozen
autoencoder and encoders replicated, and activations with or without checkpointing. Parameter
counts come from the model built on the meta device, so this runs anywhere in seconds.

    python benchmarks/fsdp_memory.py [--config paper] [--gpu-gb 80] [--json]
    torchrun --nproc_per_node 8 benchmarks/fsdp_memory.py --measure [--steps 3] [--batch 1]

--measure (CUDA only) builds the model with random weights (nothing downloaded), wraps it
with FSDP2 (bf16, activation checkpointing), runs a few optimizer steps on random batches of
the real shapes and reports `torch.cuda.max_memory_allocated` next to the estimate. The peak
is reset after wrapping: building every parameter unsharded on each GPU first (16 bytes a
parameter would not fit; 4 do) is a start-up cost this does not measure.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from midas_cli.model.config import preset
from midas_cli.training.parallel import GB, max_batch_for, memory_estimate, parameter_counts, usable_gb

WORLDS = (1, 2, 4, 8, 16)


def estimates(cfg, gpu_gb: float, batch: int, chunks: int | None) -> list[dict]:
    counts = parameter_counts(cfg)
    rows = []
    for parallel in ("ddp", "fsdp"):
        for world in WORLDS:
            est = memory_estimate(cfg, world, parallel=parallel, batch_size=batch, chunks=chunks, counts=counts)
            est["fits"] = est["total_gb"] <= usable_gb(gpu_gb)
            est["max_batch"] = max_batch_for(cfg, world, gpu_gb, counts, parallel=parallel, chunks=chunks)
            rows.append(est)
    return rows


def print_table(rows: list[dict], gpu_gb: float) -> None:
    r0 = rows[0]
    print(f"trainable {r0['trainable_params'] / 1e9:.2f}B, frozen {r0['frozen_params'] / 1e9:.2f}B, "
          f"sequence {r0['sequence_tokens']} tokens ({r0['chunks']} chunks), batch {r0['batch_size']}/GPU, "
          f"bf16 + activation checkpointing; GB per GPU")
    print(f"{'mode':>5} {'GPUs':>4} {'state':>7} {'gathered':>8} {'frozen':>6} {'acts':>6} {'total':>7}  "
          f"fits {gpu_gb:g} GB  max batch   (fits: total ≤ {usable_gb(gpu_gb):.1f}, room for context/NCCL/fragmentation)")
    for r in rows:
        print(f"{r['parallel']:>5} {r['world']:>4} {r['state_gb']:7.1f} {r['gathered_gb']:8.2f} {r['frozen_gb']:6.2f} "
              f"{r['activations_gb']:6.2f} {r['total_gb']:7.1f}  {'yes' if r['fits'] else 'no':>4}  {r['max_batch']:>9}")


def measure(cfg, steps: int, batch: int, chunks: int | None) -> dict:
    """Peak allocated memory of `steps` FSDP2 steps on this rank's GPU (torchrun or one GPU)."""
    from midas_cli.model.checkpoint import build_model
    from midas_cli.model.midas import ChunkFeatures
    from midas_cli.training.objective import sequence_loss
    from midas_cli.training.parallel import clip_grad_norm, trainable_parameters, wrap_for_training

    if "RANK" not in os.environ:  # one GPU without torchrun: a one-rank group, so FSDP2 still shards (to 1)
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    torch.distributed.init_process_group("nccl")
    world, local = torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    with device:  # parameters initialised on the GPU: minutes faster than on the CPU
        model = build_model(cfg, load_pretrained=False)
    model.autoencoder.requires_grad_(False).eval()

    class Loss(torch.nn.Module):  # the loop's objective (noise drawn inside), conditions given
        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, ref, frames, prev, feats):
            return sequence_loss(self.model, ref, frames, prev, feats)

    wrapped = wrap_for_training(Loss(model), model, parallel="fsdp", device=device, world=world, bf16=True,
                                activation_checkpointing=True)
    params = trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
    k = chunks or cfg.window_chunks + 1
    f, n, c = cfg.frames_per_chunk, cfg.tokens_per_frame, cfg.latent_channels
    a, text = model.audio_features.dim, model.projector.text[0].in_features
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    after_wrap = torch.cuda.memory_allocated(device) / GB
    model.train()
    model.autoencoder.eval()
    for _ in range(steps):
        ref = torch.randn(batch, n, c, device=device)
        frames = torch.randn(batch, k * f, n, c, device=device)
        prev = torch.cat([ref[:, None], frames[:, :-1]], dim=1)
        feats = ChunkFeatures(torch.randn(batch, k, f, a, device=device), torch.randn(batch, k, f, cfg.pose_dim, device=device),
                              torch.randn(batch, k, text, device=device),
                              torch.randn(batch, k, f, a, device=device) if cfg.audio.duplex else None)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = wrapped(ref, frames, prev, feats)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    peak = torch.tensor(torch.cuda.max_memory_allocated(device) / GB, device=device)
    torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    est = memory_estimate(cfg, world, parallel="fsdp", batch_size=batch, chunks=chunks)
    torch.distributed.destroy_process_group()
    return {"world": world, "batch_size": batch, "chunks": k, "steps": steps, "after_wrap_gb": after_wrap,
            "measured_peak_gb": float(peak), "estimated_gb": est["total_gb"], "last_loss": float(loss),
            "rank": local}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--gpu-gb", type=float, default=80.0)
    ap.add_argument("--batch", type=int, default=1, help="sequences per GPU")
    ap.add_argument("--chunks", type=int, default=None, help="chunks per training sequence (default window + 1)")
    ap.add_argument("--measure", action="store_true", help="also run FSDP steps on CUDA and report the peak")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = preset(args.config)
    out = {"config": args.config, "gpu_gb": args.gpu_gb, "estimates": estimates(cfg, args.gpu_gb, args.batch, args.chunks)}
    if args.measure:
        if not torch.cuda.is_available():
            raise SystemExit("--measure needs a CUDA device")
        out["measured"] = measure(cfg, args.steps, args.batch, args.chunks)
        if out["measured"]["rank"] != 0:
            return
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print_table(out["estimates"], args.gpu_gb)
    if "measured" in out:
        m = out["measured"]
        print(f"measured on {m['world']} GPU(s), {m['steps']} FSDP steps: peak {m['measured_peak_gb']:.1f} GB "
              f"(estimate {m['estimated_gb']:.1f} GB; {m['after_wrap_gb']:.1f} GB resident after wrapping)")


if __name__ == "__main__":
    main()
