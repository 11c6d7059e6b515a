"""The prompt timeline (docs/formats.md): text prompts with start times."""

from __future__ import annotations

import os
from dataclasses import dataclass

from midas_cli.errors import MidasError
from midas_cli.media.jsonfile import check_times, read_validated


@dataclass(frozen=True)
class Prompt:
    t: float
    text: str


def load_prompts(path: str | os.PathLike, duration: float | None = None) -> list[Prompt]:
    data = read_validated(path, "prompts")
    items = data["prompts"]
    check_times(path, items, "prompts", duration)
    return [Prompt(float(p["t"]), p["text"].strip()) for p in items]


def prompts_from_text(text: str) -> list[Prompt]:
    """`--prompt TEXT`: one prompt from the start."""
    if not text.strip():
        raise MidasError("--prompt: the prompt is empty")
    return [Prompt(0.0, text.strip())]


def prompt_at(prompts: list[Prompt], t: float) -> str:
    """The prompt active at time t ("" before the first)."""
    text = ""
    for p in prompts:
        if p.t <= t + 1e-9:
            text = p.text
        else:
            break
    return text
