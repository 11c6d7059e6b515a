"""The model phase's objective: the flow-matching loss of every frame of a sequence, and how it is
shaped. The model provides the forward pieces (`slot_hidden`, the head, the context noise);
what the loss weights and which context it sees are training decisions, so they live here.
The autoencoder phase's reconstruction loss is here too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from midas_cli.model.flow import flow_matching_loss
from midas_cli.model.midas import ChunkFeatures, MidasModel
from midas_cli.training.history import resample_history


def change_weights(frames: torch.Tensor, previous: torch.Tensor, change_weight: float,
                   fade: torch.Tensor | None = None) -> torch.Tensor | None:
    """(B*T, N) per-token loss weights, or None for a uniform loss.

    Each token is weighted by 1 + change_weight × (how much it changed from the true previous
    frame, relative to the frame's mean change), renormalised to mean 1 per frame. What moves
    (mouth, brows, the head) is what the conditions decide; the still rest can be copied from
    the context and would otherwise dominate the loss (a mouth change is ~2 % of it).

    fade (B, T) in [0, 1]: per frame, how much of change_weight applies (`change_fade`: 1 − the
    context's noise level over σ_max). A context too noisy to copy leaves the whole face to the
    conditions; weighting only what moved would then leave the still parts, the expression's
    eyes and brows among them, at ~1/17 of the loss.
    """
    if change_weight <= 0:
        return None
    change = (frames - previous).float().pow(2).mean(-1)  # (B, T, N)
    scale = change_weight if fade is None else change_weight * fade.float()[..., None]
    weight = 1 + scale * change / change.mean(-1, keepdim=True).clamp_min(1e-8)
    return (weight / weight.mean(-1, keepdim=True)).flatten(0, 1)


def listening_frames(feats: ChunkFeatures, threshold: float = 0.0, spread: int = 2) -> torch.Tensor:
    """(B, K·F) bool: the frames where the avatar listens — its own track silent, the
    interlocutor's voiced within `spread` frames (a listen turn has pauses of its own).

    Voice activity is read off the log-mel features the shards already hold: a frame is voiced
    where its loudest mel bin is above `threshold` on their (log10 + 4) / 4 scale. On the
    synthetic data silence and its noise floor stay below −0.37 and voiced frames sit near 1;
    with spread 2 this finds 99.7 % of the truth's listening frames, and 91 % of what it finds
    are listening frames (the rest are the silent gaps next to a listen turn, mouth closed too).
    """
    b, k, f = feats.audio.shape[:3]
    if feats.listen is None:
        return torch.zeros(b, k * f, dtype=torch.bool, device=feats.audio.device)
    own = feats.audio.flatten(1, 2).amax(-1) > threshold  # (B, K·F)
    other = (feats.listen.flatten(1, 2).amax(-1) > threshold).float()
    if spread > 0:
        other = F.max_pool1d(other[:, None], 2 * spread + 1, stride=1, padding=spread)[:, 0]
    return ~own & (other > 0)


def sequence_loss(model: MidasModel, ref_tokens: torch.Tensor, frames: torch.Tensor, previous: torch.Tensor,
                  feats: ChunkFeatures, generator: torch.Generator | None = None, change_weight: float = 0.0,
                  weight_from: torch.Tensor | None = None, head_repeats: int = 1,
                  change_fade: bool = False, sequence_noise: float = 0.0,
                  head_text_dropout: float = 0.0, mouth: torch.Tensor | None = None,
                  mouth_weight: float = 0.0, listening: torch.Tensor | None = None,
                  listening_weight: float = 0.0) -> torch.Tensor:
    """Flow-matching loss of every frame of a teacher-forced sequence.

    frames (B, T, N, C): targets; previous (B, T, N, C): each slot's context frame (the true
    frame before each target, or the model's re-made one). Context noise is drawn here.
    weight_from: the true previous frames the change weights are measured against (default
    `previous`; pass the true ones when the context was re-made).
    head_repeats: flow-loss draws (time, noise) per backbone output (MAR's diffusion_batch_mul):
    the head is small, so more of its training signal per backbone pass is cheap.
    head_text_dropout: share of frames whose head condition leaves the text out (`text_in_head`
    models), so the head also learns the text-free velocity that guidance steers away from.
    mouth (B, T, N) in [0, 1]: where each target frame's mouth is (`frame_mouth_tokens`);
    `mouth_weight × mouth` is added to each token's weight (1, or its change weight), and the
    weights renormalised to mean 1 per frame.
    listening (B, T) bool: the frames where the avatar listens (`listening_frames`);
    `listening_weight` is added to every token of them after that renormalisation.
    """
    b, t = frames.shape[:2]
    buckets = model.noise.sample_buckets((b, t), frames.device, generator)
    if sequence_noise > 0:
        # one level for every context frame of a sequence: with each frame's level drawn on its
        # own, some frame of the window is nearly always clean enough to copy the face from
        # (its expression included), so nothing needs the text
        whole = torch.rand(b, device=frames.device, generator=generator) < sequence_noise
        buckets = torch.where(whole[:, None], buckets[:, :1].expand(b, t), buckets)
    fade = 1 - buckets.float() / max(model.cfg.noise.num_buckets - 1, 1) if change_fade else None
    weight = change_weights(frames, previous if weight_from is None else weight_from, change_weight, fade)
    if mouth is not None and mouth_weight > 0:
        # added, not multiplied: a closed mouth does not move, so the change weight leaves it at
        # ~1/17 of an average token, yet whether it is closed (listening) or a little open is
        # the lip-sync's call; a moving mouth, already weighted up, is left about as it was
        extra = mouth_weight * mouth.to(frames.device).float().flatten(0, 1)  # (B*T, N)
        weight = (1 if weight is None else weight) + extra
        weight = weight / weight.mean(-1, keepdim=True)
    if listening is not None and listening_weight > 0:
        # after the renormalisation, so a listening frame counts (1 + L)× as much as another, and
        # its still tokens (the closed mouth, which the change weight leaves at ~1/17 of a token)
        # get L each: what the interlocutor's voice should not do to the mouth is the lesson
        extra = listening_weight * listening.to(frames.device).float().flatten()[:, None]  # (B*T, 1)
        weight = (1 if weight is None else weight) + extra
    context = model.noise.corrupt(previous, buckets, generator)
    cond = model.slot_hidden(ref_tokens, context, feats, buckets)  # (B, T, N, H)
    if model.head_text is not None:
        keep = None
        if head_text_dropout > 0:
            keep = torch.rand(b, t, device=frames.device, generator=generator) >= head_text_dropout
        cond = model.head_condition(cond, model.slot_texts(feats), keep)
    cond = cond.flatten(0, 1)  # (B*T, N, H)
    targets = frames.flatten(0, 1)
    if head_repeats > 1:
        targets, cond = targets.repeat(head_repeats, 1, 1), cond.repeat(head_repeats, 1, 1)
        weight = None if weight is None else weight.repeat(head_repeats, 1)
    if weight is None:
        return flow_matching_loss(model.head, targets, cond, generator)
    per_token = flow_matching_loss(model.head, targets, cond, generator, reduction="none").mean(-1)  # (·, N)
    return (weight.detach() * per_token).mean()


class SequenceLoss(torch.nn.Module):
    """One model-phase step's loss as a module's forward, so DDP and FSDP can wrap it: the
    prompts are encoded, the history optionally re-made by the model, then `sequence_loss`."""

    def __init__(self, model: MidasModel):
        super().__init__()
        self.model = model

    def forward(self, ref, frames, prev, feats, texts, tr):
        b, k = len(texts), len(texts[0])
        flat = [t for row in texts for t in row]
        feats.text = self.model.encode_texts(flat).reshape(b, k, -1)
        # the true previous frames, which the change weights are measured against: `prev` itself
        # for a window's own context; not the frames a re-made or foreign context shows instead
        true_prev = torch.cat([prev[:, :1], frames[:, :-1]], dim=1)
        if tr.rollout > 0:
            use = torch.rand(b, device=frames.device) < tr.rollout
            if _distributed():
                # sharded layers are gathered collectively: every rank runs the same forwards,
                # so each re-makes its whole batch and keeps the drawn rows
                remade = resample_history(self.model, ref, frames, prev, feats, tr.rollout_passes, tr.rollout_shift)
                prev = torch.where(use[:, None, None, None], remade, prev)
            elif bool(use.any()):
                prev = prev.clone()
                prev[use] = resample_history(self.model, ref[use], frames[use], prev[use], feats.select(use),
                                             tr.rollout_passes, tr.rollout_shift)
        mouth = frame_mouth_tokens(feats.pose, self.model.cfg.latent_grid) if tr.mouth_weight > 0 else None
        listening = listening_frames(feats) if tr.listening_weight > 0 else None  # log-mel only (recipe.py)
        return sequence_loss(self.model, ref, frames, prev, feats, change_weight=tr.change_weight,
                             weight_from=true_prev, head_repeats=tr.head_repeats, change_fade=tr.change_fade,
                             sequence_noise=tr.sequence_noise, head_text_dropout=tr.head_text_dropout,
                             mouth=mouth, mouth_weight=tr.mouth_weight, listening=listening,
                             listening_weight=tr.listening_weight)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def mouth_weight_map(poses: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1]: a Gaussian over the mouth of each frame, placed by its head pose
    (B, 6) (`POSE_FIELDS`) through the synth renderer's geometry (the pose JSON's frame)."""
    from midas_cli.synth.geometry import mouth_centre

    maps = []
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    for pose in poses.detach().double().cpu().numpy():
        cx, cy, S = mouth_centre(pose, height, width)
        # wider than tall, as the mouth is; roll is small enough to ignore for a soft weight
        maps.append(torch.exp(-0.5 * (((xs - cx) / (0.32 * S)) ** 2 + ((ys - cy) / (0.2 * S)) ** 2)))
    return torch.stack(maps)[:, None]


def frame_mouth_tokens(pose_features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pose features (B, K, F, 12) (`pose_features`) → (B, K·F, N): `mouth_weight_map` of each
    frame on the latent grid, one value per token (tokens run row by row, as `encode` lays them)."""
    from midas_cli.conditions.pose import POSE_SCALE

    b = pose_features.shape[0]
    poses = pose_features[..., 6:].reshape(-1, 6).float().cpu() * torch.from_numpy(POSE_SCALE)
    return mouth_weight_map(poses, *grid).reshape(b, -1, grid[0] * grid[1])


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, z: torch.Tensor, edge_weight: float = 0.0,
                        mouth: torch.Tensor | None = None, mouth_weight: float = 0.0):
    """The autoencoder's loss: L1 (sharp edges) + MSE, weighted up near image edges (and by
    `1 + mouth_weight * mouth` where a mouth map (B, 1, H, W) is given), + a small
    latent-magnitude penalty that keeps tokens near unit scale."""
    err = rec.float() - x
    w = torch.ones_like(x[:, :1])
    if edge_weight > 0:
        gx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs().mean(1, keepdim=True), (0, 1))
        gy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs().mean(1, keepdim=True), (0, 0, 0, 1))
        w = 1 + edge_weight * F.max_pool2d(gx + gy, 3, 1, 1)
    if mouth is not None and mouth_weight > 0:
        w = w * (1 + mouth_weight * mouth.to(w))
    w = w / w.mean()
    return (w * err.abs()).mean() + 0.5 * (w * err.pow(2)).mean() + 1e-4 * z.float().pow(2).mean()


class ReconstructionLoss(torch.nn.Module):
    """The autoencoder phase's step as a module's forward (for DDP): frames → (loss, reconstruction).

    `frozen_encoder`: the decoder phase's step — the latents are computed without gradients (the
    encoder stays exactly as it is) and get `latent_noise` (in units of the scaled, unit-variance
    latents the model draws) before they are decoded. `forward`'s `tokens` (B, N, C) and `use`
    (B,) bool: the frames marked in `use` are decoded from these tokens (the model's rollout of
    them, `decoder.rollout_share`) instead of from their encoding, against the same true frame."""

    def __init__(self, autoencoder, edge_weight: float = 0.0, frozen_encoder: bool = False,
                 latent_noise: float = 0.0, mouth_weight: float = 0.0):
        super().__init__()
        self.autoencoder, self.edge_weight = autoencoder, edge_weight
        self.frozen_encoder, self.latent_noise = frozen_encoder, latent_noise
        self.mouth_weight = mouth_weight

    def forward(self, x, mouth=None, tokens=None, use=None):
        dcae = self.autoencoder.dcae
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            z = dcae.encode(x, return_dict=False)[0]
        if use is not None and bool(use.any()):
            p = self.autoencoder.patch_size
            rolled = self.autoencoder.tokens_to_latent(tokens.to(z), (z.shape[-2] // p, z.shape[-1] // p))
            z = torch.where(use.to(z.device)[:, None, None, None], rolled, z)
        if self.latent_noise > 0:
            z = z + (self.latent_noise / self.autoencoder.scaling_factor) * torch.randn_like(z)
        rec = dcae.decode(z, return_dict=False)[0]
        return reconstruction_loss(rec, x, z, self.edge_weight, mouth, self.mouth_weight), rec
