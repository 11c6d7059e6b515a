"""`midas encode-dataset DATA_DIR`: a manifest's clips → latent shards for training.

Under torchrun each rank encodes its share of the clips; rank 0 writes the index after a barrier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err


def encode_dataset_cmd(
    data_dir: Annotated[Path, typer.Argument(help="A folder with manifest.jsonl (docs/formats.md).")],
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Checkpoint whose autoencoder to use "
                                                   "(default: the shipped demo).")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help="Encode with the autoencoder this training "
                                               "recipe's model phases use (its output's, once trained).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Recipe fields to override (with --recipe), e.g. model=tiny output=runs/try", show_default=False)] = None,
    shard_mb: Annotated[float, typer.Option("--shard-mb", min=0.001, help="Largest shard, in MB.")] = 256.0,
    batch: Annotated[int, typer.Option(min=1, help="Frames per autoencoder call.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
):
    """Encode every clip's frames, reference, audio, pose and prompts into safetensors shards under
    DATA_DIR/.midas-cache/shards/KEY/, resumable; training reads them a window at a time."""
    from midas_cli.errors import MidasError
    from midas_cli.training.data import read_manifest
    from midas_cli.training.shards import encode_dataset, write_index

    if not data_dir.is_dir():
        raise MidasError(f"{data_dir}: no such folder")
    read_manifest(data_dir)  # a missing or empty manifest is named before any model loads
    if checkpoint and recipe:
        raise MidasError("give --checkpoint or --recipe, not both")
    if overrides and not recipe:
        raise MidasError(f"{overrides[0]}: recipe overrides need --recipe")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and device == "auto":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    model, max_clips = _model(checkpoint, recipe, overrides or [], device)
    log = (lambda msg: console_err.print(msg, highlight=False, soft_wrap=True)) if rank == 0 else None
    from midas_cli.cli.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task("encode", total=None)
        folder = encode_dataset(model, data_dir, shard_mb=shard_mb, rank=rank, world=world, batch_encode=batch,
                                max_clips=max_clips, log=log,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # only for the barrier: every rank's shards before the index
        dist.barrier()
        if rank == 0:
            write_index(folder, data_dir, max_clips)
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        console_err.print(f"shards: {folder}", highlight=False)


def _model(checkpoint, recipe, overrides, device):
    if recipe:
        from midas_cli.training.recipe import load_recipe
        from midas_cli.training.shards import recipe_encoder

        r = load_recipe(recipe, overrides)
        return recipe_encoder(r, device), r.data.max_clips
    from midas_cli.model.checkpoint import load_model

    from midas_cli.devices import pick_device

    return load_model(checkpoint, device=pick_device(device)).requires_grad_(False), None
