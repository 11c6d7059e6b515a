"""MIDAS toolkit: a talking digital human from a voice and one photo, in real time.

Data flow, one sub-package per stage:
media (audio, image, pose, prompts in) → conditions → model (autoencoder, backbone + mask,
diffusion head, noise) → engine (the streaming loop) → media (ffmpeg out) → cli.
Beside it: synth (the synthetic world), evaluation (the judge), training, bench.
"""

__version__ = "0.1.0"
