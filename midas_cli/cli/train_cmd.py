"""`midas train RECIPE [key=value ...]`: train the autoencoder, then the model, from a recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from midas_cli.cli.common import console_err


def train_cmd(
    recipe: Annotated[str, typer.Argument(help="A recipe YAML, or the name of a shipped one (demo, demo_no_noise).")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Recipe fields to override, e.g. train.steps=100 output=runs/try model_overrides.noise.sigma_max=0",
        show_default=False)] = None,
    validate: Annotated[bool, typer.Option("--validate", help="Only check the recipe and exit.")] = False,
):
    """Train from a recipe: synthesise data if needed, train the autoencoder, then the model.

    Checkpoints go to OUTPUT/checkpoint (loadable by every command); running the same recipe
    again resumes from OUTPUT/train_state.pt. Under torchrun it trains data-parallel.
    """
    from midas_cli.training.loop import train
    from midas_cli.training.recipe import load_recipe

    r = load_recipe(recipe, overrides or [])
    if validate:
        console_err.print(f"{recipe}: valid", highlight=False)
        return
    out = train(r, log=lambda msg: console_err.print(msg, highlight=False))
    console_err.print(f"checkpoint: {out / 'checkpoint'}", highlight=False)
