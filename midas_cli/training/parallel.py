"""Data parallelism for the model phase: DDP for small models, FSDP2 (`fully_shard`) for the paper's.

The paper config (~3.5B trainable parameters) cannot train with DDP: fp32 weights, gradients and
AdamW's two moments are 16 bytes a parameter, ~56 GB on every GPU before one activation. FSDP2
shards all four over the ranks and all-gathers one decoder layer at a time.

What this module owns, so `training/loop.py` stays one plain loop whatever the parallelism:
- `wrap_for_training`: DDP, or `fully_shard` on each backbone decoder layer, each head block,
  the head and the root (the loss module, the one whose `forward` a step calls; `fsdp_units`). The frozen autoencoder
  and frozen encoders are `ignored_params`: never sharded, never reduced, replicated as today.
- `full_state_dicts` / `load_full_state_dicts`: the model and optimizer state as plain, unsharded,
  FQN-keyed CPU tensors (torch.distributed.checkpoint.state_dict), the same format for one
  process, DDP and FSDP, so `train_state.pt` and the checkpoint folder do not depend on how the
  run was launched, and a run can resume under another world size or mode.
- `clip_grad_norm`: works on FSDP's DTensor gradients (their norm is a DTensor; the clip
  coefficient must be the global one).
- `micro_step`: gradient accumulation without a needless all-reduce (DDP).
- `memory_estimate`: per-GPU peak memory, DDP vs FSDP, from a config (benchmarks/fsdp_memory.py).

Order matters with FSDP: wrap first, then build the optimizer (its parameters must be the
sharded DTensors `fully_shard` put in their place), then load a saved state into both.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from midas_cli.errors import MidasError

MODES = ("ddp", "fsdp")
GB = 1024 ** 3


# ---- which parameters train ----------------------------------------------------------------


def frozen_parameters(model) -> set[nn.Parameter]:
    """The autoencoder and every parameter that does not require a gradient: kept whole on each rank."""
    return set(model.autoencoder.parameters()) | {p for p in model.parameters() if not p.requires_grad}


def trainable_parameters(model) -> list[nn.Parameter]:
    """What the optimizer steps (as the loop chooses today). Call it after wrapping: FSDP replaces
    each parameter with a sharded DTensor, and the optimizer must hold those."""
    frozen = frozen_parameters(model)
    return [p for p in model.parameters() if p not in frozen]


# ---- activation checkpointing --------------------------------------------------------------


def enable_activation_checkpointing(model) -> None:
    """Recompute each backbone decoder layer and head block in backward instead of keeping its
    activations; only while training with gradients on, so eval, `resample_history` (no_grad)
    and cached inference run exactly as before.

    The backbone uses transformers' own switch: Qwen2's decoder layers are
    `GradientCheckpointingLayer`s that (5.24) checkpoint `forward`, leaving module hooks, FSDP2's
    all-gather among them, outside the recomputed region; non-reentrant `torch.utils.checkpoint`
    is the variant that composes with DDP's `find_unused_parameters` and with FSDP2. The state
    dict keys do not change (torch's `checkpoint_wrapper` would insert `_checkpoint_wrapped_module`
    into every parameter name and checkpoint inference too).
    """
    qwen = model.backbone.qwen
    kwargs = {"use_reentrant": False}
    if hasattr(qwen, "activation_checkpointing_enable"):  # transformers ≥ 5.24
        qwen.activation_checkpointing_enable(kwargs)
    else:
        qwen.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for block in getattr(model.head, "blocks", []):
        _checkpoint_forward(block)


def _checkpoint_forward(module: nn.Module) -> None:
    # the instance's `forward`, not `__call__`, so hooks (FSDP's) stay outside, as transformers does
    if getattr(module, "_midas_checkpointed", False):
        return
    forward = module.forward

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        if module.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    module.forward = checkpointed
    module._midas_checkpointed = True


# ---- wrapping ------------------------------------------------------------------------------


def wrap_for_training(loss_module: nn.Module, model, *, parallel: str, device: torch.device, world: int,
                      bf16: bool = False, activation_checkpointing: bool = False) -> nn.Module:
    """The module a training step calls: `loss_module` itself (one process), DDP around it, or it
    with FSDP2 applied in place (`parallel="fsdp"`). `model` is the MidasModel inside it.

    bf16 (FSDP, GPU only): parameters all-gathered and computed in bf16, gradients reduced in fp32
    (the sharded master weights and AdamW state stay fp32). On CPU the policy stays fp32.
    """
    if parallel not in MODES:
        raise MidasError(f"parallel: must be one of {', '.join(MODES)}, not {parallel!r}")
    if activation_checkpointing:
        enable_activation_checkpointing(model)
    if world == 1:
        return loss_module
    if parallel == "ddp":
        return nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    return _fully_shard(loss_module, model, device, world, bf16 and device.type != "cpu")


def fsdp_units(model, loss_module: nn.Module | None = None) -> list[nn.Module]:
    """The modules `fully_shard` is applied to, bottom-up; each holds the parameters of its
    subtree not claimed by an earlier one and is all-gathered in one collective.

    A unit's parameters are only unsharded inside its own `forward` (hooks on `__call__`), so
    units follow how the code calls modules: each decoder layer; in the head, each block's
    `adaLN_modulation` (the head calls it directly, for all blocks, before any block runs) and
    then each block (its attention and MLP); then the head (embedders, final layer); then the
    root, the module whose forward a step calls, with what is left (projectors, embeddings,
    text embedding, the backbone's final norm).
    """
    units = list(model.backbone.qwen.layers)
    for block in getattr(model.head, "blocks", []):
        if hasattr(block, "adaLN_modulation"):
            units.append(block.adaLN_modulation)
        units.append(block)
    units.append(model.head)
    return units + [loss_module if loss_module is not None else model]


def _fully_shard(loss_module, model, device, world: int, bf16: bool):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    frozen = frozen_parameters(model)
    for unit in fsdp_units(model, loss_module):
        fully_shard(unit, mesh=mesh, mp_policy=mp, ignored_params=frozen)
    return loss_module


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


# ---- gradients -----------------------------------------------------------------------------


def clip_grad_norm(parameters, max_norm: float) -> float:
    """`clip_grad_norm_` that is right for DTensor gradients too; returns the global norm.

    torch 2.13's `torch.nn.utils.clip_grad_norm_` already gives the same (replicated DTensor)
    norm on every rank; going through `get_total_norm` + `full_tensor` makes the reduction
    explicit and returns a float the loop can log.
    """
    from torch.distributed.tensor import DTensor

    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return 0.0
    total = torch.nn.utils.get_total_norm([p.grad for p in parameters], 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)


@contextlib.contextmanager
def micro_step(wrapped: nn.Module, sync: bool):
    """Around one micro-batch's forward and backward when accumulating gradients; `sync` on the last.

    DDP: skip the all-reduce until the last micro-batch (`no_sync`). FSDP: gradients are still
    reduce-scattered every micro-batch: `set_requires_gradient_sync(False)` would keep every
    layer's unsharded gradient until the last one, the whole model's worth per GPU, which is
    what sharding is for. One process: nothing to do.
    """
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not sync:
        with wrapped.no_sync():
            yield
    else:
        yield


# ---- state ---------------------------------------------------------------------------------


def full_state_dicts(model, optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state: whole CPU tensors, optimizer state keyed by parameter name.

    Collective under FSDP (every rank must call it); only rank 0 gets the tensors (others get
    empty dicts), so only rank 0 should save. `model` is the MidasModel, not the DDP wrapper.
    Both dicts hold only tensors and plain types: `torch.load(weights_only=True)` reads them.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    # cpu_offload gathers to rank 0 only; without a process group it would still work, but
    # asking for it there is pointless
    options = StateDictOptions(full_state_dict=True, cpu_offload=distributed)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    if not distributed:
        model_sd = {k: v.detach().cpu() for k, v in model_sd.items()}
        optim_sd = _to_cpu(optim_sd)
    return model_sd, optim_sd


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_full_state_dicts(model, optimizer, model_sd: dict | None, optim_sd: dict | None) -> None:
    """Load `full_state_dicts`' output back, into any parallel layout (or one process).

    Under a process group only rank 0 needs the dicts (others may pass None): rank 0's tensors
    are broadcast and each rank keeps its shard (`broadcast_from_rank0`), so 8 ranks of a node do
    not each hold a full copy of the paper model's state in host memory. The dicts are consumed.
    The optimizer load is not strict: a parameter that never had a gradient has no AdamW state,
    as `Optimizer.load_state_dict` allows. An optimizer state from before this module (integer
    parameter ids) loads in one process only.
    """
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    _check_keys(model, model_sd if rank == 0 else None, distributed)
    if optim_sd is not None and rank == 0 and _legacy_optimizer_state(optim_sd):
        if distributed:
            raise MidasError("train_state.pt: its optimizer state predates sharded training (integer ids); "
                             "resume it in one process, or delete it to start the run over")
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(optim_sd)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed)
    set_model_state_dict(model, model_sd if rank == 0 else {}, options=options)
    if optim_sd is not None or distributed:
        set_optimizer_state_dict(model, optimizer, optim_sd if rank == 0 else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed,
                                                          strict=False))


def _legacy_optimizer_state(optim_sd: dict) -> bool:
    params = [p for g in optim_sd.get("param_groups", []) for p in g.get("params", [])]
    return bool(params) and isinstance(params[0], int)


def _check_keys(model, model_sd: dict | None, distributed: bool) -> None:
    """Rank 0 checks the names; every rank gets the verdict, so a bad file fails everywhere
    instead of leaving the other ranks waiting in a broadcast."""
    problem = None
    if model_sd is not None:
        expected, found = set(model.state_dict()), set(model_sd)
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        if missing or unexpected:
            problem = (f"the saved model state does not match this model (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}); delete train_state.pt to start the run over")
    if distributed:
        box = [problem]
        torch.distributed.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem:
        raise MidasError(problem)


# ---- memory ----------------------------------------------------------------------------------


def parameter_counts(cfg) -> dict:
    """Trainable / frozen parameter counts and the largest FSDP unit, from a model built on meta."""
    from midas_cli.model.checkpoint import build_model

    with torch.device("meta"):
        model = build_model(cfg, load_pretrained=False)
    model.autoencoder.requires_grad_(False)  # as the model phase has it
    frozen = frozen_parameters(model)
    seen, units = set(frozen), []
    for unit in fsdp_units(model):
        mine = [p for p in unit.parameters() if p not in seen]
        seen.update(mine)
        units.append(sum(p.numel() for p in mine))
    return {"trainable": sum(p.numel() for p in model.parameters() if p not in frozen),
            "frozen": sum(p.numel() for p in frozen), "units": len(units), "largest_unit": max(units),
            "root_unit": units[-1]}


def memory_estimate(cfg, world: int, *, parallel: str = "fsdp", bf16: bool = True,
                    activation_checkpointing: bool = True, batch_size: int = 1, chunks: int | None = None,
                    head_repeats: int = 1, counts: dict | None = None) -> dict:
    """Per-GPU peak memory of one model-phase step, in GB (GiB), with the formula spelled out.

    P = trainable parameters, W = world, B = batch per GPU, L = sequence length
    (N reference tokens + chunks × tokens per chunk), H/I/Hkv = backbone hidden/MLP/KV widths,
    D = backbone layers; the head sees T·N tokens (T = chunks × 6 frames) of width w, depth d.

    state    FSDP: 16·P / W  (fp32 weights 4 + fp32 grads 4 + AdamW exp_avg 4 + exp_avg_sq 4)
             DDP:  20·P (+2·P in bf16)  (the same, unsharded, + DDP's fp32 gradient buckets 4;
                   autocast keeps its bf16 copy of every weight from forward to backward)
    gathered FSDP only: 2 × largest unit × (2 bf16 | 4 fp32)   (the unit in use + the prefetched one)
             + 1 × largest unit × (2 + 4) bytes               (its unsharded grad, then fp32 for reduce)
    frozen   4·(autoencoder + Whisper + T5): replicated fp32, as the loop keeps them
    activations (bytes a = 2 in bf16, 4 in fp32)
             checkpointed: D · B·L·H·a (each layer's input) + one layer's full set
                           + d · B·T·N·w·a + one head block's full set
             not:          D × one layer's full set + d × one head block's full set
             one layer  ≈ B·L·(a·(8H + 2·Hkv + 4I) + 4·2H)   (q,o,norms,residuals; k,v; gate,up,act,
                          act·up; RMSNorm's fp32 upcasts); attention by SDPA's memory-efficient
                          kernel, so no L×L scores are kept (the L×L additive mask is counted)
             one block  ≈ B·T·N·a·((11 + 2·r)·w)   (r = head MLP ratio)
    Not counted: the CUDA context and NCCL buffers (~1–2 GB, outside max_memory_allocated),
    allocator fragmentation (~10 %), the data batch and conditions (MBs); `usable_gb` leaves
    room for them.
    """
    if parallel not in MODES:
        raise MidasError(f"parallel: must be one of {', '.join(MODES)}, not {parallel!r}")
    counts = counts or parameter_counts(cfg)
    bb, hd = cfg.backbone, cfg.head
    chunks = chunks or cfg.window_chunks + 1
    n, f = cfg.tokens_per_frame, cfg.frames_per_chunk
    seq = n + chunks * cfg.tokens_per_chunk
    head_tokens = chunks * f * n * head_repeats
    a = 2 if bf16 else 4
    p = counts["trainable"]
    shards = world if parallel == "fsdp" else 1
    state = 16 * p / shards + ((4 + (2 if bf16 else 0)) * p if parallel == "ddp" else 0)
    gathered = (2 * counts["largest_unit"] * a + counts["largest_unit"] * (2 + 4)) if parallel == "fsdp" else 0
    frozen = 4 * counts["frozen"]
    kv_width = bb.hidden_size // bb.num_heads * bb.num_kv_heads
    layer_full = batch_size * seq * (a * (8 * bb.hidden_size + 2 * kv_width + 4 * bb.intermediate_size)
                                     + 4 * 2 * bb.hidden_size)
    block_full = batch_size * head_tokens * a * (11 + 2 * hd.mlp_ratio) * hd.width
    if activation_checkpointing:
        acts = (bb.num_layers * batch_size * seq * bb.hidden_size * a + layer_full
                + hd.depth * batch_size * head_tokens * hd.width * a + block_full)
    else:
        acts = bb.num_layers * layer_full + hd.depth * block_full
    acts += seq * seq * a  # the additive chunk-causal mask (one, broadcast over the batch)
    parts = {"state": state, "gathered": gathered, "frozen": frozen, "activations": acts}
    out = {k + "_gb": v / GB for k, v in parts.items()}
    out["total_gb"] = sum(parts.values()) / GB
    out.update(parallel=parallel, world=world, bf16=bf16, activation_checkpointing=activation_checkpointing,
               batch_size=batch_size, chunks=chunks, sequence_tokens=seq,
               trainable_params=p, frozen_params=counts["frozen"], largest_unit_params=counts["largest_unit"])
    return out


def fsdp_memory_estimate(cfg, world: int, **kwargs) -> dict:
    return memory_estimate(cfg, world, parallel="fsdp", **kwargs)


def usable_gb(gpu_gb: float) -> float:
    """What an estimate may use of a GPU: 2 GB for the CUDA context and NCCL, 10 % fragmentation."""
    return (gpu_gb - 2.0) / 1.1


def max_batch_for(cfg, world: int, gpu_gb: float, counts: dict | None = None, **kwargs) -> int:
    """The largest per-GPU batch (of 1, 2, 4, … 64) whose estimate fits `usable_gb(gpu_gb)`; 0: none."""
    counts = counts or parameter_counts(cfg)
    fits = 0
    for b in (1, 2, 4, 8, 16, 32, 64):
        if memory_estimate(cfg, world, batch_size=b, counts=counts, **kwargs)["total_gb"] > usable_gb(gpu_gb):
            break
        fits = b
    return fits
