"""`midas train RECIPE [key=value ...]`: train the autoencoder, the model (and the decoder), from a recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from midas_cli.cli.common import console_err
from midas_cli.training.recipe import shipped_training_recipes


def train_cmd(
    recipe: Annotated[str, typer.Argument(
        help=f"A recipe YAML, or the name of a shipped one ({', '.join(shipped_training_recipes())}).")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Recipe fields to override, e.g. train.steps=100 output=runs/try model_overrides.noise.sigma_max=0",
        show_default=False)] = None,
    validate: Annotated[bool, typer.Option("--validate", help="Only check the recipe and exit.")] = False,
):
    """Train from a recipe: synthesise data if needed, train the autoencoder, encode the latents
    into shards on disk (as `midas encode-dataset` does), then train the model, and last (with
    decoder.steps) fine-tune the autoencoder's decoder alone, its encoder and the model unchanged.

    Checkpoints go to OUTPUT/checkpoint (loadable by every command); running the same recipe
    again resumes from OUTPUT/train_state.pt. Metrics go to OUTPUT/metrics.jsonl (and TensorBoard
    with the [tensorboard] extra). Under torchrun each rank reads its own shards and the model is
    data-parallel (train.parallel=ddp) or sharded (train.parallel=fsdp); see docs/training.md.
    """
    from midas_cli.training.loop import train
    from midas_cli.training.recipe import load_recipe

    r = load_recipe(recipe, overrides or [])
    if validate:
        console_err.print(f"{recipe}: valid", highlight=False)
        return
    from midas_cli.console import progress_bar

    out = train(r, log=lambda msg: console_err.print(msg, highlight=False, markup=False, soft_wrap=True),
                progress_factory=progress_bar)
    console_err.print(f"checkpoint: {out / 'checkpoint'}", highlight=False)
