"""`midas train`: a recipe's run as a visible layer of small steps (torchtune's recipe classes).

    TrainingRun.setup()              distributed, device, output folder, seeds, model, resume state
    TrainingRun.train_autoencoder()  phase "autoencoder": the DC-AE on frames of the data
    TrainingRun.encode_dataset()     latents and condition features into shards on disk
    TrainingRun.train_model()        phases "model", "finetune1", …: the autoregressive model
    TrainingRun.train_decoder()      phase "decoder": the DC-AE's decoder alone (encoder frozen)
    TrainingRun.save_checkpoint()    OUTPUT/checkpoint/, loadable by every command

State — phase, step, model, optimizer, every RNG — is written atomically to
`OUTPUT/train_state.pt` every `checkpoint_every` steps; a run started again with the same
recipe continues from it. Under `torchrun` the model phases are data-parallel (`train.parallel`:
DDP, or FSDP for models whose optimizer state does not fit one device): each rank reads its own
shards, and rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from midas_cli.errors import MidasError
from midas_cli.model.autoencoder import images_to_tensor
from midas_cli.training.frames import frame_loader
from midas_cli.training.objective import ReconstructionLoss, SequenceLoss, mouth_weight_map
from midas_cli.training.recipe import TrainRecipe, load_recipe
from midas_cli.training.state import (cosine_lr, load_train_state, rng_state, save_train_state, seed_everything,
                                      set_rng_state)


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def train(recipe: TrainRecipe, log=print, progress_factory=None) -> Path:
    """Run (or resume) a recipe, its base first; returns the output folder with `checkpoint/` in it."""
    if recipe.base:
        base_output = train(load_recipe(recipe.base), log, progress_factory)
        recipe = _on_base(recipe, base_output, log)
    return TrainingRun(recipe, log, progress_factory).run()


def _on_base(recipe: TrainRecipe, base_output: Path, log) -> TrainRecipe:
    """The recipe, set to start from its base's checkpoint."""
    ckpt = str(base_output / "checkpoint")
    log(f"starting from the base recipe's checkpoint {ckpt}")
    ae = recipe.autoencoder
    return replace(recipe, base=None,
                   autoencoder=replace(ae, init_from=ae.init_from or (ckpt if ae.from_base else None)),
                   train=replace(recipe.train, init_from=recipe.train.init_from or ckpt))


class TrainingRun:
    def __init__(self, recipe: TrainRecipe, log=print, progress_factory=None):
        """`progress_factory()`: a rich Progress context (`midas_cli.console.progress_bar`) for
        the long steps that are not training steps (encoding the dataset), or None."""
        self.recipe, self.log, self.progress_factory = recipe, log, progress_factory
        self.out = Path(recipe.output)
        self.state_path = self.out / "train_state.pt"

    def run(self) -> Path:
        self.setup()
        with self.metrics:
            self.train_autoencoder()
            self.train_model()
            self.train_decoder()
        if self.rank == 0 and not (self.out / "checkpoint").exists():
            self.save_checkpoint()
        if self.world > 1:
            torch.distributed.barrier()
        return self.out

    # ---- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        from midas_cli.devices import pick_device, pick_dtype
        from midas_cli.model.checkpoint import build_model

        recipe = self.recipe
        self.rank, self.world = _dist()
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if self.rank != 0:  # one log for the run: rank 0's (errors still stop every rank)
            self.log = lambda msg: None
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        device = pick_device(recipe.device)
        if self.world > 1 and device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            torch.cuda.set_device(device)
        self.device = device
        self.amp = pick_dtype(recipe.dtype, device) == torch.bfloat16
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            (self.out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))

        self.cfg = recipe.model_config()
        self._setup_data()
        seed_everything(recipe.seed)  # every rank builds the same model
        self.model = build_model(self.cfg, tokenizer=self.tokenizer).to(device)
        seed_everything(recipe.seed + self.rank)  # and then draws its own noise
        if recipe.autoencoder.init_from:
            self._autoencoder_from(recipe.autoencoder.init_from)
        self.state = load_train_state(self.state_path) if self.state_path.exists() else None
        if self.state is not None:
            self.model.load_state_dict(self.state["model"])
            if "scaling_factor" in self.state:
                self.model.autoencoder.dcae.register_to_config(scaling_factor=self.state["scaling_factor"])
            self.log(f"resuming: phase {self.state['phase']}, step {self.state['step']}")
        self.phase = self.state["phase"] if self.state else "autoencoder"
        from midas_cli.training.metrics import MetricsLogger

        resume = (self.state["phase"], self.state["step"]) if self.state else None
        self.metrics = MetricsLogger(self.out, enabled=self.rank == 0, resume=resume, log=self.log)

    def _setup_data(self) -> None:
        """The manifest folder (synthesised first when the recipe says so) and the prompt
        tokenizer; frames are decoded only as they are encoded or streamed."""
        from midas_cli.conditions.text import build_word_tokenizer
        from midas_cli.training.data import manifest_prompts

        recipe = self.recipe
        self.data_dir = Path(recipe.data.dir)
        if not (self.data_dir / "manifest.jsonl").exists():
            if recipe.data.synth is None:
                raise MidasError(f"{self.data_dir}: no manifest.jsonl and no data.synth section to make one")
            if self.rank == 0:
                from midas_cli.synth.dataset import write_dataset

                s = recipe.data.synth
                self.log(f"synthesising {s.clips} clips of {s.seconds} s into {self.data_dir}")
                write_dataset(self.data_dir, s.clips, s.seconds, s.seed, split="train", size=s.size,
                              workers=max(1, recipe.data.workers))
            if self.world > 1:
                torch.distributed.barrier()
        self.tokenizer = build_word_tokenizer(manifest_prompts(self.data_dir, recipe.data.max_clips),
                                              self.cfg.text.vocab_size)

    def _autoencoder_from(self, checkpoint: str) -> None:
        from midas_cli.model.checkpoint import checkpoint_autoencoder

        self.model.autoencoder = checkpoint_autoencoder(self.cfg, checkpoint).to(self.device)
        self.log(f"autoencoder from {checkpoint} (scaling_factor {self.model.autoencoder.scaling_factor:.4f})")

    # ---- phase "autoencoder" ----------------------------------------------------------------
    def train_autoencoder(self) -> None:
        ae_cfg, ae = self.recipe.autoencoder, self.model.autoencoder
        r = int(ae.dcae.spatial_compression_ratio)
        if ae_cfg.crop is not None and (ae_cfg.crop % r or not r <= ae_cfg.crop <= min(self.cfg.autoencoder.height,
                                                                                       self.cfg.autoencoder.width)):
            raise MidasError(f"autoencoder.crop: {ae_cfg.crop} must be a multiple of {r} and fit in the frame")
        if self.phase != "autoencoder":
            return
        if ae_cfg.steps == 0:
            self.phase = "model"
            return
        ae.train()
        self._reconstruction_steps("autoencoder", ae_cfg, list(ae.parameters()),
                                   ReconstructionLoss(ae, ae_cfg.edge_weight, mouth_weight=ae_cfg.mouth_weight),
                                   seed=self.recipe.seed + 17,
                                   warmup=50, crop=ae_cfg.crop)
        ae.eval()
        self._set_latent_scale(frame_loader(self.data_dir, **self._frame_size(), batch_size=32, seed=0, steps=8,
                                            num_workers=0, max_clips=self.recipe.data.max_clips))
        self.phase, self.state = "model", None
        rng = self._rng_states()
        if self.rank == 0:
            save_train_state(self.state_path, {"phase": "model", "step": 0, "model": self.model.state_dict(),
                                               "optimizer": None, **rng, "scaling_factor": ae.scaling_factor})

    # ---- phase "decoder" --------------------------------------------------------------------
    def train_decoder(self) -> None:
        """The decoder alone on the data's frames, after the model phases; the encoder, the latent
        scale and the model stay as they are (`DecoderTraining`)."""
        dec, ae = self.recipe.decoder, self.model.autoencoder
        if dec.steps == 0:
            return
        if self.state is None or self.state["phase"] != "decoder":
            # a stream of its own: the same decoder whether the phase follows the model phases in
            # one run or is added to a finished run later
            torch.manual_seed(self.recipe.seed * 1000 + 89 + self.rank)
        ae.eval()
        ae.dcae.decoder.train()  # the encoder's layers stay in eval mode: its latents must not move
        params = list(ae.dcae.decoder.parameters())
        for p in params:
            p.requires_grad_(True)
        rollouts = self.write_rollouts() if dec.rollout_share > 0 else None
        loss = ReconstructionLoss(ae, dec.edge_weight, frozen_encoder=True, latent_noise=dec.latent_noise,
                                  mouth_weight=dec.mouth_weight)
        self._reconstruction_steps("decoder", dec, params, loss, seed=self.recipe.seed + 23, warmup=dec.warmup,
                                   write_checkpoints=True, rollouts=rollouts, rollout_share=dec.rollout_share)
        ae.requires_grad_(False).eval()
        self.phase, self.state = "decoder", None

    def write_rollouts(self) -> Path:
        """OUTPUT/rollouts/: every training clip rolled out by the finished model (each rank its
        share), for the decoder phase's `rollout_share`; clips already there are kept."""
        from midas_cli.training.rollouts import write_rollouts

        folder, t0 = self.out / "rollouts", time.perf_counter()
        kw = dict(seed=self.recipe.seed, rank=self.rank, world=self.world, max_clips=self.recipe.data.max_clips,
                  log=self.log)
        if self.progress_factory is not None and self.rank == 0:
            with self.progress_factory() as bar:
                task = bar.add_task("rolling out the training clips", total=None)
                write_rollouts(self.model, self.data_dir, folder,
                               progress=lambda done, total: bar.update(task, completed=done, total=total), **kw)
        else:
            write_rollouts(self.model, self.data_dir, folder, **kw)
        if self.world > 1:
            torch.distributed.barrier()
        self.log(f"rollouts in {folder} ({time.perf_counter() - t0:.1f} s)")
        return folder

    def _reconstruction_steps(self, phase: str, cfg, params: list, step_loss, seed: int, warmup: int,
                              crop: int | None = None, write_checkpoints: bool = False,
                              rollouts: Path | None = None, rollout_share: float = 0.0) -> None:
        """`cfg.steps` optimizer steps of `params` on the pixel loss of `step_loss` (frames →
        (loss, reconstruction)), resumable; the autoencoder phase's and the decoder phase's.
        `write_checkpoints`: every save also writes OUTPUT/checkpoint (and a kept copy with
        `keep_checkpoints`), as the model phases do. `rollouts`: the decoder phase's folder of
        the model's rollouts, a share `rollout_share` of frames decoded from them."""
        recipe, device = self.recipe, self.device
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        step, state = 0, self.state
        if state is not None and state["phase"] == phase:
            opt.load_state_dict(state["optimizer"])
            self._restore_rng(state)
            step = state["step"]
        if self.world > 1:  # each rank its own frames, gradients averaged
            step_loss = torch.nn.parallel.DistributedDataParallel(
                step_loss, device_ids=[device.index] if device.type == "cuda" else None)
        frames = frame_loader(self.data_dir, **self._frame_size(), batch_size=cfg.batch_size, seed=seed,
                              rank=self.rank, world=self.world, start_step=step, steps=cfg.steps,
                              num_workers=recipe.data.workers, max_clips=recipe.data.max_clips,
                              with_pose=cfg.mouth_weight > 0, rollouts=rollouts,
                              rollout_share=rollout_share)
        for batch in frames:
            # augmentation drawn per step, so a resumed run flips and crops as an unbroken one
            aug = np.random.default_rng([seed, self.rank, step])
            mouth = tokens = use = None
            if rollouts is not None:
                batch, poses, tokens, use = batch
            elif cfg.mouth_weight > 0:
                batch, poses = batch
            if cfg.mouth_weight > 0:
                mouth = mouth_weight_map(poses, *batch.shape[1:3]).to(device)
            x = images_to_tensor(batch, device)
            if aug.random() < 0.5:  # mirrored faces are faces too
                # but a rollout's latent cannot be mirrored: its frame (and mouth) stay as they are
                flip = torch.ones(len(x), dtype=torch.bool) if use is None else ~use
                x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
                mouth = None if mouth is None else torch.where(flip.to(device)[:, None, None, None],
                                                               mouth.flip(-1), mouth)
            if crop:
                i, j = aug.integers(0, x.shape[-2] - crop + 1), aug.integers(0, x.shape[-1] - crop + 1)
                x = x[..., i:i + crop, j:j + crop]
                mouth = None if mouth is None else mouth[..., i:i + crop, j:j + crop]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, rec = step_loss(x, mouth) if use is None else step_loss(x, mouth, tokens.to(device), use.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, cfg.steps, warmup, cfg.lr)
            opt.step()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                with torch.no_grad():
                    psnr = 10 * torch.log10(4.0 / F.mse_loss(rec.float().clamp(-1, 1), x)).item()
                self.log(f"{phase} step {step}/{cfg.steps} loss {loss.item():.4f} psnr {psnr:.2f} dB")
                self.metrics.log(phase, step, loss=loss.item(), psnr_db=psnr, lr=opt.param_groups[0]["lr"])
            if step % recipe.checkpoint_every == 0 or step == cfg.steps:
                rng = self._rng_states()  # every rank takes part
                if self.rank == 0:
                    save_train_state(self.state_path, {"phase": phase, "step": step,
                                                       "model": self.model.state_dict(),
                                                       "optimizer": opt.state_dict(), **rng,
                                                       "scaling_factor": self.model.autoencoder.scaling_factor})
                    if write_checkpoints:
                        self.save_checkpoint(f"{phase}-{step}" if recipe.keep_checkpoints else None)
                if self.world > 1:
                    torch.distributed.barrier()

    def _frame_size(self) -> dict:
        return {"width": self.cfg.autoencoder.width, "height": self.cfg.autoencoder.height}

    def _set_latent_scale(self, frames) -> None:
        """Unit-variance latents: the scaling factor from the data, as DC-AE's release does."""
        from midas_cli.model.autoencoder import images_to_tensor

        ae = self.model.autoencoder
        with torch.no_grad():  # every rank the same 256 frames, so the same factor
            z = torch.cat([ae.dcae.encode(images_to_tensor(batch, self.device), return_dict=False)[0]
                           for batch in frames])
            ae.dcae.register_to_config(scaling_factor=float(1.0 / z.std()))
        self.log(f"autoencoder scaling_factor {ae.scaling_factor:.4f}")

    # ---- latents on disk --------------------------------------------------------------------
    def encode_dataset(self) -> Path:
        """The shards of this autoencoder's latents: encoded now (each rank its share of the clips)
        unless they are already there and current."""
        from midas_cli.training.shards import encode_dataset, write_index

        t0 = time.perf_counter()
        self.model.autoencoder.eval()
        data = self.recipe.data
        def encode(progress=None):
            return encode_dataset(self.model, self.data_dir, shard_mb=data.shard_mb, rank=self.rank,
                                  world=self.world, max_clips=data.max_clips, log=self.log, progress=progress)

        if self.progress_factory is not None and self.rank == 0:
            with self.progress_factory() as bar:
                task = bar.add_task("encoding latents", total=None)
                folder = encode(lambda done, total: bar.update(task, completed=done, total=total))
        else:
            folder = encode()
        if self.world > 1:
            torch.distributed.barrier()
            if self.rank == 0:
                write_index(folder, self.data_dir, data.max_clips)
            torch.distributed.barrier()
        self.log(f"latents and conditions in {folder} ({time.perf_counter() - t0:.1f} s)")
        return folder

    # ---- phases "model", "finetune1", … ------------------------------------------------------
    def train_model(self) -> None:
        self.model.autoencoder.requires_grad_(False).eval()
        phases = self.recipe.phases()
        (last, last_tr), state = phases[-1], self.state
        if state is not None and (state["phase"] == "decoder" or (state["phase"] == last and
                                                                  state["step"] >= last_tr.steps)):
            return  # every model phase finished in an earlier run: nothing to encode the data for
        shards = self.encode_dataset()
        names = [name for name, _ in phases]
        for index, (name, tr) in enumerate(phases):
            if self.phase in names and names.index(self.phase) > index:
                continue  # finished in an earlier run
            state = self.state
            resuming = state is not None and state["phase"] == name and bool(state.get("optimizer"))
            if not resuming and tr.init_from:
                load_model_weights(self.model, tr.init_from, self.log, allow_resized=tr.init_resized)
                self.log(f"{name}: model weights from {tr.init_from}")
            self._train_phase(name, index, tr, shards, state if resuming else None)
            self.phase, self.state = name, None

    def _train_phase(self, name: str, index: int, tr, shards: Path, state: dict | None) -> None:
        """One model phase: `tr.steps` optimizer steps from where the model is, resumable from `state`."""
        from midas_cli.training.metrics import IntervalMeter
        from midas_cli.training.parallel import (clip_grad_norm, full_state_dicts, load_full_state_dicts,
                                                 micro_step, trainable_parameters)
        from midas_cli.training.shards import window_loader

        recipe, model, device = self.recipe, self.model, self.device
        if tr.steps == 0:
            return
        if index > 0 and state is None:
            # a fine-tuning phase draws from its own stream: it gives the same weights whether it
            # follows its phase in one run or starts from a saved state (a resumed or seeded run)
            torch.manual_seed(recipe.seed * 1000 + 97 * index + self.rank)
        step_loss = self._step_loss(tr)
        params = trainable_parameters(model)
        opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay, betas=(0.9, 0.95))
        step = 0
        if state is not None:
            load_full_state_dicts(model, opt, state["model"], state["optimizer"])
            self._restore_rng(state)
            step = state["step"]
        model.train()
        model.autoencoder.eval()
        chunks = tr.chunks or self.cfg.window_chunks + 1
        # one micro-batch per loader step: batch s of the sampler is micro-batch s, whatever the rank count
        batches = iter(window_loader(shards, chunks=chunks, frames_per_chunk=self.cfg.frames_per_chunk,
                                     batch_size=tr.batch_size, seed=recipe.seed * 1000 + 104729 * index,
                                     rank=self.rank, world=self.world, start_step=step * tr.grad_accum,
                                     steps=tr.steps * tr.grad_accum, num_workers=recipe.data.workers,
                                     foreign_context=tr.foreign_context))
        meter, smooth = IntervalMeter(), None
        tokens = chunks * self.cfg.tokens_per_chunk
        while step < tr.steps:
            total = 0.0
            for micro in range(tr.grad_accum):
                with meter.waiting():
                    ref, frames, prev, feats, texts = next(batches)
                    ref, frames, prev, feats = ref.to(device), frames.to(device), prev.to(device), feats.to(device)
                with micro_step(step_loss, sync=micro == tr.grad_accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                        loss = step_loss(ref, frames, prev, feats, texts, tr) / tr.grad_accum
                    loss.backward()
                total += loss.item()
            clip_grad_norm(params, tr.grad_clip)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, tr.steps, tr.warmup, tr.lr)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            sequences = tr.batch_size * tr.grad_accum * self.world
            meter.count(sequences=sequences, tokens=sequences * tokens)
            smooth = total if smooth is None else 0.95 * smooth + 0.05 * total
            if step % tr.log_every == 0 or step == tr.steps:
                rates, lr = meter.read(), opt.param_groups[0]["lr"]
                self.log(f"{name} step {step}/{tr.steps} loss {smooth:.4f} lr {lr:.2e} "
                         f"{rates['sequences_per_s']:.1f} sequences/s, data wait {100 * rates['data_wait_share']:.1f} %")
                self.metrics.log(name, step, loss=smooth, lr=lr, **rates)
            if step % recipe.checkpoint_every == 0 or step == tr.steps:
                # every rank takes part in gathering the full (unsharded) state; rank 0 writes
                model_sd, optim_sd = full_state_dicts(model, opt)
                rng = self._rng_states()
                if self.rank == 0:
                    save_train_state(self.state_path, {"phase": name, "step": step, "model": model_sd,
                                                       "optimizer": optim_sd, **rng, "loss": smooth,
                                                       "scaling_factor": model.autoencoder.scaling_factor})
                    self.save_checkpoint(f"{name}-{step}" if recipe.keep_checkpoints else None, model_sd)
                    if recipe.eval is not None and tr.parallel == "ddp":  # a whole model on rank 0
                        self._validate(name, step)
                if self.world > 1:
                    torch.distributed.barrier()
                model.train()
                model.autoencoder.eval()

    def _step_loss(self, tr):
        """The module a model-phase step calls, wrapped for the run's parallel layout once (FSDP
        shards the model in place, so every phase of the run shares the layout: `train`'s)."""
        from midas_cli.training.parallel import wrap_for_training

        if getattr(self, "step_loss", None) is None:
            self.model.autoencoder.requires_grad_(False)
            self.step_loss = wrap_for_training(SequenceLoss(self.model), self.model, parallel=tr.parallel,
                                               device=self.device, world=self.world, bf16=self.amp,
                                               activation_checkpointing=tr.activation_checkpointing)
        return self.step_loss

    # ---- state ------------------------------------------------------------------------------
    def _rng_states(self) -> dict:
        """Every rank's RNG state (gathered to rank 0, which writes): a resumed rank draws on
        exactly where it stopped, not from rank 0's stream."""
        states = [rng_state()]
        if self.world > 1:
            states = [None] * self.world
            torch.distributed.all_gather_object(states, rng_state())
        return {"rng": states[0], "rng_ranks": states}

    def _restore_rng(self, state: dict) -> None:
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[self.rank] if len(ranks) == self.world else state["rng"])

    # ---- outputs ----------------------------------------------------------------------------
    def save_checkpoint(self, keep_as: str | None = None, state_dict: dict | None = None) -> None:
        """OUTPUT/checkpoint/ (and OUTPUT/checkpoints/KEEP_AS/ when asked); `state_dict`: the
        gathered full weights, when the model itself is sharded."""
        from midas_cli.model.checkpoint import save_checkpoint

        self.model.eval()
        cfg = self.recipe.sampled_config(self.model.cfg)
        save_checkpoint(self.model, self.out / "checkpoint", state_dict=state_dict, config=cfg)
        if keep_as:
            save_checkpoint(self.model, self.out / "checkpoints" / keep_as, state_dict=state_dict, config=cfg)

    def _validate(self, phase: str, step: int) -> None:
        """A small `midas eval` on held-out synthetic cases, logged next to the loss."""
        from midas_cli.evaluation.cases import make_eval_cases
        from midas_cli.evaluation.evaluate import evaluate
        from midas_cli.pipeline import model_generator

        ev = self.recipe.eval
        cases = make_eval_cases(ev.cases, ev.seconds, ev.seed, self.model.cfg.autoencoder.width)
        with torch.random.fork_rng():  # evaluation must not move the training RNG (exact resume)
            scores = evaluate(model_generator(self.model, seed=ev.seed), cases, progress=False)
        keys = ("psnr_db", "ssim", "lip_sync_acc", "expression_acc", "pose_err", "drift_db")
        self.log(f"eval at {phase} step {step}: " + ", ".join(f"{k} {scores[k]:.3f}" for k in keys if k in scores))
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(json.dumps({"phase": phase, "step": step, **{k: scores.get(k) for k in keys}}) + "\n")


def load_model_weights(model, checkpoint: str, log=None, allow_resized: bool = False) -> None:
    """A checkpoint's backbone, head and projector weights into `model` (same architecture, or one
    that only adds modules: those keep their initialisation, zero for `reference_in_slots`; with
    `allow_resized`, also tensors of another shape)."""
    from midas_cli.model.checkpoint import load_trainable_weights, resolve_checkpoint

    path = resolve_checkpoint(checkpoint) / "model.safetensors"
    new = load_trainable_weights(model, path, against="this recipe's model", allow_new=True,
                                 allow_resized=allow_resized)
    if new and log:
        log(f"not in {path} (or of another shape there), kept as initialised: {', '.join(new)}")


def reset_run(output: str | Path) -> None:
    shutil.rmtree(output, ignore_errors=True)
