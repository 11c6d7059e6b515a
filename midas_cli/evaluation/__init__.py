"""The judge: scores generated talking-head video against the synthetic world's truth.

- ``make_eval_cases(n, seconds, seed, size)``: held-out test-split cases (``EvalCase``).
- ``evaluate(generate, cases)``: PSNR/SSIM (+ per second, drift) and judge-based lip-sync,
  expression, pose and listening scores.
- ``truth_generator`` / ``static_generator``: the upper and lower baselines.
- ``load_judges()`` / ``train_judges(recipe)``: the small CNN judges shipped in ``weights/``.
"""

from midas_cli.evaluation.cases import EvalCase, make_eval_cases
from midas_cli.evaluation.evaluate import (BASELINES, evaluate, static_generator,
                                           truth_generator)
from midas_cli.evaluation.judges import Judges, load_judges
from midas_cli.evaluation.metrics import per_second, psnr_frames, ssim_frames
from midas_cli.evaluation.recipe import JudgeRecipe, load_judge_recipe


def train_judges(*args, **kwargs):
    """Train the judges (see ``midas_cli.evaluation.train_judges.train_judges``)."""
    from midas_cli.evaluation.train_judges import train_judges as _train

    return _train(*args, **kwargs)


__all__ = ["BASELINES", "EvalCase", "JudgeRecipe", "Judges", "evaluate", "load_judge_recipe",
           "load_judges", "make_eval_cases", "per_second", "psnr_frames", "ssim_frames",
           "static_generator", "train_judges", "truth_generator"]
