"""The synthetic talking-head world: procedurally drawn people, speech-like audio with known
mouth shapes, head-pose trajectories, text-controlled expressions and listening turns.

It is both the demo checkpoint's training data and the benchmark's ground truth: for any
inputs the true video is ``render_clip(...)`` of the per-frame truth.

Modules, one job each: ``constants`` (clock), ``splits`` (train/test partition),
``identity`` (faces from an id), ``script`` (who says which vowel when), ``audio``
(source-filter speech), ``pose`` (trajectories), ``expressions`` (prompts),
``shapes``/``geometry``/``render`` (drawing), ``clip`` (one random clip), ``mp4``,
``progress`` and ``dataset`` (files + manifest).
"""

from midas_cli.synth.clip import SynthClip, make_clip
from midas_cli.synth.constants import FPS, MOUTH_NAMES, SAMPLE_RATE, SAMPLES_PER_FRAME
from midas_cli.synth.dataset import write_dataset
from midas_cli.synth.expressions import (EXPRESSION_NAMES, EXPRESSION_PROMPTS,
                                         expression_of_prompt)
from midas_cli.synth.identity import N_IDENTITIES, Identity, make_identity
from midas_cli.synth.render import render_clip, render_frame, render_reference

__all__ = ["EXPRESSION_NAMES", "EXPRESSION_PROMPTS", "FPS", "Identity", "MOUTH_NAMES",
           "N_IDENTITIES", "SAMPLES_PER_FRAME", "SAMPLE_RATE", "SynthClip", "expression_of_prompt",
           "make_clip", "make_identity", "render_clip", "render_frame", "render_reference",
           "write_dataset"]
