"""`OUTPUT/train_state.pt`: where a run stands (phase, step, weights, optimizer, every RNG).

Written atomically and read with `torch.load(weights_only=True)`, so a state file is never
half-written and loading one never unpickles arbitrary objects. Only plain types go in.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from midas_cli.errors import MidasError


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def load_train_state(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        raise MidasError(f"{path}: not a readable training state ({str(e).splitlines()[0][:120]}); "
                         "delete it to start the run over") from None


def save_train_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine down to a tenth of `base`."""
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
