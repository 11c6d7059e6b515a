"""`midas batch RECIPE.yaml`: many renders with one model load, resumable, rank-sharded
(`midas_cli.batch` does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.batch import RenderJob, load_batch_recipe, run_batch  # noqa: F401  (importable from here, as before)
from midas_cli.cli.common import console_out


def batch(
    recipe: Annotated[Path, typer.Argument(help="A batch recipe YAML (see recipes/render_examples.yaml).",
                                           exists=True, dir_okay=False)],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (under torchrun: each rank its own GPU).")] = "auto",
):
    """Render every job of a recipe with one model load; skips finished outputs, keeps going on failures."""
    from rich.table import Table

    results = run_batch(recipe, device)
    t = Table(title=f"midas batch: {recipe}")
    for col in ("job", "status", "out"):
        t.add_column(col)
    for r in results:
        t.add_row(r["job"], r["status"], r["out"])
    console_out.print(t)
    failed = [r for r in results if r["status"].startswith("failed")]
    if failed:
        raise typer.Exit(1)

