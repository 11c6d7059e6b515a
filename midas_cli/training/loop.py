"""`midas train`: the autoencoder first, then the autoregressive model, from one recipe.

Plain, visible loops (torchtune's habit). State — phase, step, model, optimizer, every RNG —
is written atomically to `OUTPUT/train_state.pt` every `checkpoint_every` steps, and a run
started again with the same recipe continues from it. A loadable checkpoint folder is written
to `OUTPUT/checkpoint/` at the same time. Under `torchrun` the model phase is data-parallel
(DDP): each rank draws its own batches, gradients are averaged, rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from midas_cli.errors import MidasError
from midas_cli.training.history import resample_history
from midas_cli.training.objective import sequence_loss
from midas_cli.training.recipe import TrainRecipe, load_recipe


def _dist():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _rng_state() -> dict:
    # plain types only, so train_state.pt loads with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def load_train_state(path: Path) -> dict:
    """`train_state.pt` without unpickling arbitrary objects."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        raise MidasError(f"{path}: not a readable training state ({str(e).splitlines()[0][:120]}); "
                         "delete it to start the run over") from None


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, z: torch.Tensor, edge_weight: float = 0.0):
    """L1 (sharp edges) + MSE, weighted up near image edges, + a small latent-magnitude penalty
    that keeps tokens near unit scale."""
    err = rec.float() - x
    if edge_weight > 0:
        gx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs().mean(1, keepdim=True), (0, 1))
        gy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs().mean(1, keepdim=True), (0, 0, 0, 1))
        w = 1 + edge_weight * F.max_pool2d(gx + gy, 3, 1, 1)
        w = w / w.mean()
    else:
        w = torch.ones_like(x[:, :1])
    return (w * err.abs()).mean() + 0.5 * (w * err.pow(2)).mean() + 1e-4 * z.float().pow(2).mean()


def _lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _LossModule(torch.nn.Module):
    """DDP wraps `forward`, so one training step's loss is this module's forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ref, frames, prev, feats, texts, tr):
        b, k = len(texts), len(texts[0])
        flat = [t for row in texts for t in row]
        feats.text = self.model.encode_texts(flat).reshape(b, k, -1)
        true_prev = prev
        if tr.rollout > 0:
            use = torch.rand(b, device=frames.device) < tr.rollout
            if bool(use.any()):
                prev = prev.clone()
                prev[use] = resample_history(self.model, ref[use], frames[use], prev[use], feats.select(use),
                                             tr.rollout_passes, tr.rollout_shift)
        return sequence_loss(self.model, ref, frames, prev, feats, change_weight=tr.change_weight,
                             weight_from=true_prev, head_repeats=tr.head_repeats)


def train(recipe: TrainRecipe, log=print, progress_factory=None) -> Path:
    """Run (or resume) a recipe; returns the output folder with `checkpoint/` in it."""
    from midas_cli.devices import pick_device, pick_dtype
    from midas_cli.conditions.text import build_word_tokenizer
    from midas_cli.model.checkpoint import build_model, save_checkpoint
    from midas_cli.training.data import LatentDataset, frame_pool, load_clips

    if recipe.base:
        recipe = _on_base(recipe, train(load_recipe(recipe.base), log, progress_factory), log)
    rank, world = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = pick_device(recipe.device)
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    amp = pick_dtype(recipe.dtype, device) == torch.bfloat16
    out = Path(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    state_path = out / "train_state.pt"
    torch.manual_seed(recipe.seed + rank)
    np.random.seed(recipe.seed + rank)
    random.seed(recipe.seed + rank)

    # ---- data ---------------------------------------------------------------------------
    cfg = recipe.model_config()
    data_dir = Path(recipe.data.dir)
    if not (data_dir / "manifest.jsonl").exists():
        if recipe.data.synth is None:
            raise MidasError(f"{data_dir}: no manifest.jsonl and no data.synth section to make one")
        if rank == 0:
            from midas_cli.synth.dataset import write_dataset

            s = recipe.data.synth
            log(f"synthesising {s.clips} clips of {s.seconds} s into {data_dir}")
            write_dataset(data_dir, s.clips, s.seconds, s.seed, split="train", size=s.size)
        if world > 1:
            torch.distributed.barrier()
    t0 = time.perf_counter()
    clips = load_clips(data_dir, cfg.autoencoder.width, cfg.autoencoder.height, recipe.data.max_clips)
    log(f"loaded {len(clips)} clips ({sum(len(c.frames) for c in clips)} frames) in {time.perf_counter() - t0:.1f} s")
    tokenizer = build_word_tokenizer([p for c in clips for _, p in c.prompts], cfg.text.vocab_size)
    model = build_model(cfg, tokenizer=tokenizer).to(device)

    if recipe.autoencoder.init_from:
        from midas_cli.model.autoencoder import FrameAutoencoder, build_dcae
        from midas_cli.model.checkpoint import resolve_checkpoint

        src = resolve_checkpoint(recipe.autoencoder.init_from) / "autoencoder"
        if not src.is_dir():
            raise MidasError(f"autoencoder.init_from: {src} is not an autoencoder folder")
        model.autoencoder = FrameAutoencoder(build_dcae(cfg.autoencoder, str(src)),
                                             cfg.autoencoder.patch_size).to(device)
        log(f"autoencoder from {src} (scaling_factor {model.autoencoder.scaling_factor:.4f})")
    state = load_train_state(state_path) if state_path.exists() else None
    if state is not None:
        model.load_state_dict(state["model"])
        log(f"resuming: phase {state['phase']}, step {state['step']}")
    phase = state["phase"] if state else "autoencoder"

    # ---- phase 1: the autoencoder ----------------------------------------------------------
    ae_cfg = recipe.autoencoder
    r = int(model.autoencoder.dcae.spatial_compression_ratio)
    if ae_cfg.crop is not None and (ae_cfg.crop % r or not r <= ae_cfg.crop <= min(cfg.autoencoder.height,
                                                                                   cfg.autoencoder.width)):
        raise MidasError(f"autoencoder.crop: {ae_cfg.crop} must be a multiple of {r} and fit in the frame")
    if phase == "autoencoder" and ae_cfg.steps > 0:
        pool = frame_pool(clips)
        ae = model.autoencoder
        opt = torch.optim.AdamW(ae.parameters(), lr=ae_cfg.lr, weight_decay=0.0)
        step = 0
        if state is not None and state["phase"] == "autoencoder":
            opt.load_state_dict(state["optimizer"])
            _set_rng_state(state["rng"])
            step = state["step"]
        ae.train()
        rng = np.random.default_rng(recipe.seed + 17)
        if state is not None and state.get("data_rng"):
            rng.bit_generator.state = state["data_rng"]
        while step < ae_cfg.steps:
            from midas_cli.model.autoencoder import images_to_tensor

            idx = rng.integers(0, len(pool), ae_cfg.batch_size)
            x = images_to_tensor(pool[idx], device)
            if rng.random() < 0.5:  # mirrored faces are faces too
                x = x.flip(-1)
            if ae_cfg.crop:
                i, j = rng.integers(0, x.shape[-2] - ae_cfg.crop + 1), rng.integers(0, x.shape[-1] - ae_cfg.crop + 1)
                x = x[..., i:i + ae_cfg.crop, j:j + ae_cfg.crop]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                z = ae.dcae.encode(x, return_dict=False)[0]
                rec = ae.dcae.decode(z, return_dict=False)[0]
                loss = reconstruction_loss(rec, x, z, ae_cfg.edge_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = _lr(step, ae_cfg.steps, 50, ae_cfg.lr)
            opt.step()
            step += 1
            if step % ae_cfg.log_every == 0 or step == ae_cfg.steps:
                with torch.no_grad():
                    psnr = 10 * torch.log10(4.0 / F.mse_loss(rec.float().clamp(-1, 1), x)).item()
                log(f"autoencoder step {step}/{ae_cfg.steps} loss {loss.item():.4f} psnr {psnr:.2f} dB")
            if rank == 0 and (step % recipe.checkpoint_every == 0 or step == ae_cfg.steps):
                _save_state(state_path, {"phase": "autoencoder", "step": step, "model": model.state_dict(),
                                         "optimizer": opt.state_dict(), "rng": _rng_state(),
                                         "data_rng": rng.bit_generator.state})
        ae.eval()
        # unit-variance latents: set the scaling factor from the data (as DC-AE's release does)
        with torch.no_grad():
            from midas_cli.model.autoencoder import images_to_tensor

            sample = pool[np.random.default_rng(0).integers(0, len(pool), 256)]
            z = torch.cat([ae.dcae.encode(images_to_tensor(sample[i:i + 32], device), return_dict=False)[0]
                           for i in range(0, len(sample), 32)])
            ae.dcae.register_to_config(scaling_factor=float(1.0 / z.std()))
        log(f"autoencoder scaling_factor {ae.scaling_factor:.4f}")
        phase, state = "model", None
        if rank == 0:
            _save_state(state_path, {"phase": "model", "step": 0, "model": model.state_dict(), "optimizer": None,
                                     "rng": _rng_state(), "scaling_factor": ae.scaling_factor})
    elif ae_cfg.steps == 0 and state is None and rank == 0:
        phase = "model"
    elif state is not None and "scaling_factor" in state:
        model.autoencoder.dcae.register_to_config(scaling_factor=state["scaling_factor"])

    # ---- phase 2 (and fine-tuning phases): the autoregressive model ----------------------------
    model.autoencoder.requires_grad_(False).eval()
    datasets: dict[int, LatentDataset] = {}
    phases = recipe.phases()
    names = [name for name, _ in phases]
    for index, (name, tr) in enumerate(phases):
        if phase in names and names.index(phase) > index:
            continue  # finished in an earlier run
        resuming = state is not None and state["phase"] == name and bool(state.get("optimizer"))
        chunks = tr.chunks or cfg.window_chunks + 1
        if chunks not in datasets:
            t0 = time.perf_counter()
            datasets[chunks] = LatentDataset(model, clips, chunks, cache_dir=data_dir / ".midas-cache", log=log)
            log(f"latents and conditions ready in {time.perf_counter() - t0:.1f} s")
        if not resuming and tr.init_from:
            load_model_weights(model, tr.init_from, log)
            log(f"{name}: model weights from {tr.init_from}")
        _train_model_phase(recipe, name, index, tr, model, datasets[chunks], state if resuming else None,
                           device, amp, rank, world, log)
        phase, state = name, None
    del clips
    if rank == 0:
        done = out / "checkpoint"
        if not done.exists():
            model.eval()
            save_checkpoint(model, done)
    if world > 1:
        torch.distributed.barrier()
    return out


def _on_base(recipe: TrainRecipe, base_output: Path, log) -> TrainRecipe:
    """The recipe, set to start from its base's checkpoint."""
    from dataclasses import replace

    ckpt = str(base_output / "checkpoint")
    log(f"starting from the base recipe's checkpoint {ckpt}")
    return replace(recipe, base=None,
                   autoencoder=replace(recipe.autoencoder, init_from=recipe.autoencoder.init_from or ckpt),
                   train=replace(recipe.train, init_from=recipe.train.init_from or ckpt))


def load_model_weights(model, checkpoint: str, log=None) -> None:
    """A checkpoint's backbone, head and projector weights into `model` (same architecture, or one
    that only adds modules: those keep their initialisation, zero for `reference_in_slots`)."""
    from midas_cli.model.checkpoint import load_trainable_weights, resolve_checkpoint

    path = resolve_checkpoint(checkpoint) / "model.safetensors"
    new = load_trainable_weights(model, path, against="this recipe's model", allow_new=True)
    if new and log:
        log(f"not in {path}, kept as initialised: {', '.join(new)}")


def _train_model_phase(recipe: TrainRecipe, name: str, index: int, tr, model, data, state: dict | None,
                       device, amp: bool, rank: int, world: int, log) -> None:
    """One model phase: `tr.steps` optimizer steps from where the model is, resumable from `state`."""
    from midas_cli.model.checkpoint import save_checkpoint

    out, state_path = Path(recipe.output), Path(recipe.output) / "train_state.pt"
    if index > 0 and state is None:
        # a fine-tuning phase draws from its own stream: it gives the same weights whether it
        # follows its phase in one run or starts from a saved state (a resumed or seeded run)
        torch.manual_seed(recipe.seed * 1000 + 97 * index + rank)
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("autoencoder.")]
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay, betas=(0.9, 0.95))
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        step = state["step"]
    loss_module = _LossModule(model)
    if world > 1:
        loss_module = torch.nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    model.train()
    model.autoencoder.eval()
    seed = recipe.seed * 1000 + rank + 7919 * step + (0 if index == 0 else 104729 * index)
    rng = np.random.default_rng(seed)
    if state is not None and state.get("data_rng") and world == 1:
        rng.bit_generator.state = state["data_rng"]
    smooth, t_log, seen = None, time.perf_counter(), 0
    while step < tr.steps:
        ref, frames, prev, feats, texts = data.sample(tr.batch_size, rng)
        ref, frames, prev = ref.to(device), frames.to(device), prev.to(device)
        feats = feats.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_module(ref, frames, prev, feats, texts, tr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tr.grad_clip)
        for g in opt.param_groups:
            g["lr"] = _lr(step, tr.steps, tr.warmup, tr.lr)
        opt.step()
        step += 1
        seen += tr.batch_size * world
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % tr.log_every == 0 or step == tr.steps:
            dt = time.perf_counter() - t_log
            log(f"{name} step {step}/{tr.steps} loss {smooth:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{seen / dt:.1f} sequences/s")
            t_log, seen = time.perf_counter(), 0
        if rank == 0 and (step % recipe.checkpoint_every == 0 or step == tr.steps):
            _save_state(state_path, {"phase": name, "step": step, "model": model.state_dict(),
                                     "optimizer": opt.state_dict(), "rng": _rng_state(),
                                     "scaling_factor": model.autoencoder.scaling_factor, "loss": smooth,
                                     "data_rng": rng.bit_generator.state})
            model.eval()
            save_checkpoint(model, out / "checkpoint")
            if recipe.keep_checkpoints:
                save_checkpoint(model, out / "checkpoints" / f"{name}-{step}")
            if recipe.eval is not None:
                _validate(model, recipe, log, name, step)
            model.train()
            model.autoencoder.eval()


def _validate(model, recipe: TrainRecipe, log, phase: str, step: int) -> None:
    """A small `midas eval` on held-out cases, logged next to the loss."""
    from midas_cli.evaluation.cases import make_eval_cases
    from midas_cli.evaluation.evaluate import evaluate
    from midas_cli.pipeline import model_generator

    ev = recipe.eval
    cases = make_eval_cases(ev.cases, ev.seconds, ev.seed, model.cfg.autoencoder.width)
    with torch.random.fork_rng():  # evaluation must not move the training RNG (exact resume)
        scores = evaluate(model_generator(model, seed=ev.seed), cases, progress=False)
    keys = ("psnr_db", "ssim", "lip_sync_acc", "expression_acc", "pose_err", "drift_db")
    log(f"eval at {phase} step {step}: " + ", ".join(f"{k} {scores[k]:.3f}" for k in keys if k in scores))
    with open(Path(recipe.output) / "eval.jsonl", "a") as f:
        f.write(json.dumps({"phase": phase, "step": step, **{k: scores.get(k) for k in keys}}) + "\n")


def reset_run(output: str | Path) -> None:
    shutil.rmtree(output, ignore_errors=True)
