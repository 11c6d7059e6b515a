"""Train/test partition of everything that is drawn at random: identities, voices, seeds.

An id belongs to the test split when ``id % 10 == 9`` and to train otherwise, for identities
and voices alike, so a test clip shows a face and a voice that training never saw. Random
streams (trajectories, scripts, timelines) are keyed by a *purpose code* plus the split, so
the generators for train data, test data and evaluation cases never share a seed.
"""

from __future__ import annotations

import numpy as np

from midas_cli.errors import MidasError

SPLITS = ("train", "test")
TEST_RESIDUE = 9  # id % 10 == TEST_RESIDUE -> test split

# Purpose codes mixed into every SeedSequence; distinct purposes never share a stream.
PURPOSE_DATASET = 1
PURPOSE_EVAL = 2
PURPOSE_JUDGE = 3
_SPLIT_CODE = {"train": 0, "test": 1}


def check_split(split: str, option: str = "--split") -> str:
    """Return ``split`` if it is a known split, else raise a MidasError naming ``option``."""
    if split not in SPLITS:
        raise MidasError(f"{option}: unknown split {split!r}; choose 'train' or 'test'")
    return split


def split_of(index: int) -> str:
    """The split an identity or voice id belongs to."""
    return "test" if index % 10 == TEST_RESIDUE else "train"


def draw_id(rng: np.random.Generator, split: str, n_total: int) -> int:
    """Draw a uniformly random id in ``[0, n_total)`` that belongs to ``split``."""
    check_split(split)
    block = int(rng.integers(0, n_total // 10))
    if split == "test":
        return block * 10 + TEST_RESIDUE
    return block * 10 + int(rng.integers(0, 9))


def stream(purpose: int, split: str, *keys: int) -> np.random.Generator:
    """A numpy Generator for one purpose/split/key tuple (e.g. a clip's seed and index)."""
    check_split(split)
    entropy = [int(purpose), _SPLIT_CODE[split], *[int(k) % (1 << 64) for k in keys]]
    return np.random.default_rng(np.random.SeedSequence(entropy))
