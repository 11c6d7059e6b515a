"""The prompt timeline (docs/formats.md): text prompts with start times.

A chunk uses the prompt active at its start; before the first entry the prompt is "".
The schema `schemas/prompts.schema.json` checks types and non-blank text; times increasing
and inside the clip are checked here.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from midas_cli.errors import MidasError
from midas_cli.media.jsonfile import check_times, read_validated


@dataclass(frozen=True)
class Prompt:
    t: float  # start time, seconds from the start of the clip
    text: str


def load_prompts(path: str | os.PathLike, duration: float | None = None) -> list[Prompt]:
    """The timeline in `path`, sorted by time; `duration` (s) bounds the times."""
    data = read_validated(path, "prompts")
    items = data["prompts"]
    check_times(path, items, "prompts", duration)
    return [Prompt(float(p["t"]), p["text"].strip()) for p in items]


def prompts_from_text(text: str) -> list[Prompt]:
    """`--prompt TEXT`: the same as one entry at t = 0."""
    if not text or not text.strip():
        raise MidasError("--prompt: the prompt is empty")
    return [Prompt(0.0, text.strip())]


def prompt_at(prompts: list[Prompt], t: float) -> str:
    """The prompt active at time t ("" before the first); `prompts` sorted by time."""
    i = bisect.bisect_right([p.t for p in prompts], t + 1e-9)
    return prompts[i - 1].text if i else ""
