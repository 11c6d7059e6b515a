"""Expressions: the classes the text prompts control, their phrasings, and their timelines.

A clip's expression is driven by a prompt timeline (docs/formats.md). Each class has several
phrasings so a text encoder has to map different sentences to the same face; the truth keeps
the class. Prompt changes sit on chunk starts (multiples of 0.48 s) because "a chunk uses the
prompt active at its start": then the per-frame truth is the same whether one reads the
timeline per frame or per chunk.
"""

from __future__ import annotations

import re

import numpy as np

from midas_cli.synth.constants import CHUNK_FRAMES, FPS

EXPRESSION_NAMES = ("neutral", "smiling", "surprised", "frowning")  # classes 0..3
N_EXPRESSION = len(EXPRESSION_NAMES)

EXPRESSION_PROMPTS: dict[int, list[str]] = {
    0: ["a calm, neutral face", "a relaxed expression", "she looks neutral and composed",
        "he keeps a straight face", "an even, expressionless look"],
    1: ["she smiles warmly", "a happy, smiling face", "he grins with joy",
        "a cheerful smile", "smiling and pleased"],
    2: ["a surprised face", "she looks astonished", "he raises his eyebrows in surprise",
        "wide eyes, amazed", "a shocked expression"],
    3: ["a frowning face", "she frowns, displeased", "he looks stern and annoyed",
        "an angry frown", "a grumpy, serious look"],
}

_LOOKUP = {text.lower(): cls for cls, texts in EXPRESSION_PROMPTS.items() for text in texts}
# Keyword fallback for texts outside the list (users' own prompts); first match wins.
_KEYWORDS = (
    (1, ("smil", "grin", "happy", "joy", "cheer", "laugh", "pleased")),
    (2, ("surpris", "astonish", "amaz", "shock", "wide eyes", "raises his eyebrows",
         "raises her eyebrows")),
    (3, ("frown", "angry", "stern", "annoy", "grump", "displeas", "sad", "upset")),
    (0, ("neutral", "calm", "relax", "straight", "composed", "expressionless")),
)


def expression_of_prompt(text: str) -> int:
    """Class of a prompt text: exact phrasing first, keywords next, neutral otherwise."""
    key = re.sub(r"\s+", " ", text.strip().lower())
    if key in _LOOKUP:
        return _LOOKUP[key]
    for cls, words in _KEYWORDS:
        if any(w in key for w in words):
            return cls
    return 0


def random_prompt_timeline(rng: np.random.Generator, seconds: float,
                           mean_segment_s: float = 4.0) -> list[tuple[float, str]]:
    """A prompt timeline: first entry at t=0, then a change every few seconds on chunk starts.

    Consecutive entries always change class, so every change is visible.
    """
    n_chunks = max(1, int(np.floor(seconds * FPS / CHUNK_FRAMES)))
    chunk_s = CHUNK_FRAMES / FPS
    min_chunks = 4  # >= 1.92 s between changes
    prompts: list[tuple[float, str]] = []
    cls = int(rng.integers(N_EXPRESSION))
    chunk = 0
    while chunk < n_chunks:
        prompts.append((round(chunk * chunk_s, 2), str(rng.choice(EXPRESSION_PROMPTS[cls]))))
        max_chunks = max(int(2 * mean_segment_s / chunk_s) - min_chunks, min_chunks + 1)
        gap = int(rng.integers(min_chunks, max_chunks))  # mean ~ mean_segment_s
        chunk += gap
        cls = (cls + int(rng.integers(1, N_EXPRESSION))) % N_EXPRESSION
    return prompts


def expression_per_frame(prompts: list[tuple[float, str]], n_frames: int) -> np.ndarray:
    """Per-frame expression class: the prompt active at the start of the frame's chunk."""
    out = np.zeros(n_frames, dtype=np.int64)
    times = [t for t, _ in prompts]
    classes = [expression_of_prompt(text) for _, text in prompts]
    for f in range(n_frames):
        chunk_start = (f // CHUNK_FRAMES) * CHUNK_FRAMES / FPS
        active = [c for t, c in zip(times, classes) if t <= chunk_start + 1e-9]
        out[f] = active[-1] if active else 0
    return out


def prompts_json(prompts: list[tuple[float, str]]) -> dict:
    """The prompt timeline as the JSON object of docs/formats.md."""
    return {"version": 1, "prompts": [{"t": float(t), "text": text} for t, text in prompts]}
