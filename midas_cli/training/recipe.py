"""Training recipes: YAML validated into dataclasses, any field overridable as `key=value`.

Sizes and paths live only here (and in the model presets or config files a recipe names). A
wrong field fails with its dotted name, e.g. `recipes/demo.yaml: train.batch_size: expected an
integer, got 'x'`. Relative paths in a recipe (`data.dir`, `model`, `base`, `output`, `init_from`)
are relative to the current directory, not to the recipe file, as on the command line.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from midas_cli.errors import MidasError
from midas_cli.model.config import PRESETS, MidasConfig, dataclass_from_dict, preset


@dataclass
class SynthData:
    """Generate the data with `midas synth` first when the folder has no manifest."""

    clips: int = 64
    seconds: float = 12.0
    seed: int = 0
    size: int = 128


@dataclass
class DataRecipe:
    dir: str = "data/synth-train"  # a folder with manifest.jsonl (docs/formats.md)
    synth: SynthData | None = None
    max_clips: int | None = None
    # DataLoader worker processes reading shards (0: in the training process); also the processes
    # that write `synth` when the folder has no manifest yet
    workers: int = 2
    shard_mb: float = 256.0  # size bound of one shard of encoded latents


@dataclass
class AutoencoderTraining:
    # 0 keeps the autoencoder as built or loaded. On a `base` (or with `init_from`) the steps
    # fine-tune that autoencoder, encoder included: the latents move, so the data is encoded
    # anew and the model phases that follow must adapt the base's model to them.
    steps: int = 2000
    init_from: str | None = None  # a checkpoint whose autoencoder to start from (e.g. to share one across ablations)
    # On a `base`: false trains this autoencoder from scratch instead of the base's, e.g. one with
    # a wider latent (`model_overrides`), that the base's model then moves to (`train.init_resized`).
    from_base: bool = True
    batch_size: int = 16
    lr: float = 1e-3
    # Extra loss weight on edges (eyes, lips, outlines): a uniform pixel loss spends its early
    # steps on large flat areas and leaves the small features that carry lip sync for last.
    edge_weight: float = 0.0
    # Extra loss weight on the mouth (a soft patch placed by each frame's head pose): the lip gap
    # that tells a closed mouth from a slightly open one is a few pixels of a 128-pixel frame.
    mouth_weight: float = 0.0
    crop: int | None = None  # train on random crops of this size (cheaper steps; the AE is convolutional)
    log_every: int = 50


@dataclass
class DecoderTraining:
    """The autoencoder's decoder alone, fine-tuned after the model phases (phase "decoder"). The
    encoder is frozen, so the latents — and the model trained on them — stay exactly as they are,
    while what the model draws is decoded sharper: the ceiling every score shares rises without
    retraining the model. 0 steps: no such phase."""

    steps: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 50
    edge_weight: float = 0.0  # as autoencoder.edge_weight
    mouth_weight: float = 0.0  # as autoencoder.mouth_weight
    # Gaussian noise added to the latents the decoder sees, in units of the model's (unit-variance)
    # latents: a decoder that meets only exact encodings may decode a generated latent worse.
    latent_noise: float = 0.0
    # Share of frames decoded from the model's own rollout of their clip instead of their encoding
    # (training/rollouts.py; each clip rolled out once, before the phase, into OUTPUT/rollouts):
    # what the decoder meets at inference is the model's latents, not the encoder's.
    rollout_share: float = 0.0
    log_every: int = 50


@dataclass
class ModelTraining:
    steps: int = 3000
    batch_size: int = 8
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    chunks: int | None = None  # chunks per training sequence; default window_chunks + 1
    # Extra loss weight on the tokens that changed since the previous frame (0: uniform): the
    # mouth and brows are a few percent of a frame, yet they are what audio and text decide.
    change_weight: float = 0.0
    # Fade that extra weight out as the context's noise rises (full at σ 0, none at σ_max): with
    # a context too noisy to copy the whole face, the still expression included, is the model's
    # to draw from the conditions (training/objective.py).
    change_fade: bool = False
    # Share of sequences whose context frames all get one noise level (drawn per sequence) instead
    # of one each: a whole window too noisy to copy the expression from leaves it to the text.
    sequence_noise: float = 0.0
    # Share of sequences whose context frames come from another stretch of the same clip (same
    # face, other expression, pose and mouth): where the context disagrees with the target, the
    # expression has to come from the text and the motion from audio and pose, as after a prompt
    # change at inference, where the history still shows the old expression.
    foreign_context: float = 0.0
    # Share of sequences whose history is re-made by the model itself before the loss
    # (Resampling Forcing, training/history.py); 0 is pure teacher forcing.
    rollout: float = 0.0
    rollout_passes: int = 2  # parallel re-making passes: the first p frames are exact rollouts
    rollout_shift: float = 0.6  # bends the LogitNormal noise level of a re-made frame (< 1: lighter)
    head_repeats: int = 1  # flow-loss draws per backbone output (MAR's diffusion_batch_mul)
    # Extra loss weight on the mouth's tokens (placed by each frame's head pose, as the decoder's
    # `mouth_weight`): a closed mouth is still, so the change weight alone barely counts it.
    mouth_weight: float = 0.0
    # Extra loss weight on every token of the frames where the avatar listens (its own track
    # silent, the interlocutor's voiced; log-mel models): such a frame counts (1 + L)×, and its
    # still closed mouth no longer ~1/17 of a token (training/objective.py, `listening_frames`).
    listening_weight: float = 0.0
    # Share of frames whose diffusion-head condition leaves the text out (`text_in_head` models):
    # the text-free velocity that classifier-free guidance (`head.guidance`) needs.
    head_text_dropout: float = 0.0
    init_from: str | None = None  # start this phase from a checkpoint's model weights
    # With init_from: tensors of another shape there keep their initialisation instead of failing
    # (the latent's in- and output layers, when the model moves to a wider autoencoder latent).
    init_resized: bool = False
    # Under torchrun: "ddp" (every rank holds the whole model and optimizer; small models) or
    # "fsdp" (PyTorch's fully_shard: parameters, gradients and optimizer state sharded over ranks).
    parallel: str = "ddp"
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step (per rank)
    activation_checkpointing: bool = False  # recompute backbone blocks in backward: less memory, ~30 % more compute
    log_every: int = 25


@dataclass
class EvalDuringTraining:
    """A small `midas eval` at every checkpoint. Its cases and judges are the synthetic world's, so
    its scores mean something only for a model trained on synthetic data."""

    cases: int = 2
    seconds: float = 8.0
    seed: int = 1234


@dataclass
class TrainRecipe:
    # A recipe trained first (into its own output folder; resumed, or skipped when done), whose
    # checkpoint this one starts from: its autoencoder, and its model unless train.init_from says otherwise.
    base: str | None = None
    # A preset name (tiny, demo, paper), or else a model config file: a config.json, or a checkpoint
    # folder holding one (its autoencoder/encoder sub-folders then come with it). A preset name wins
    # over a folder of that name; write ./demo for the folder.
    model: str = "demo"
    model_overrides: dict = field(default_factory=dict)  # dotted config fields, e.g. {"noise.sigma_max": 0}
    # Inference settings (dotted, SAMPLING_FIELDS only) written into every saved checkpoint's
    # config.json. Training, its rollouts and its evaluations run without them, so they can be
    # chosen on a finished model without changing how it was made.
    sampling: dict = field(default_factory=dict)
    data: DataRecipe = field(default_factory=DataRecipe)
    autoencoder: AutoencoderTraining = field(default_factory=AutoencoderTraining)
    train: ModelTraining = field(default_factory=ModelTraining)
    # Further model phases after `train`, in order: each continues from the weights the one
    # before it left, with its own optimizer, schedule and random stream.
    finetune: list = field(default_factory=list)
    decoder: DecoderTraining = field(default_factory=DecoderTraining)  # after the model phases
    # "auto" (the default): on when the data is synthetic (data.synth is set), off otherwise, since
    # the judges score against the synthetic world's truth. null: off; a section: on. Resolved when
    # the recipe is built, so a TrainRecipe's eval is always a section or None.
    eval: EvalDuringTraining | Literal["auto"] | None = "auto"
    output: str = "runs/demo"
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = None  # torch CPU threads (None: torch's default)
    keep_checkpoints: bool = False  # also keep every saved checkpoint as OUTPUT/checkpoints/PHASE-STEP

    def __post_init__(self):
        if self.eval == "auto":
            self.eval = EvalDuringTraining() if self.data.synth is not None else None

    def phases(self) -> list[tuple[str, ModelTraining]]:
        """The model phases in order: ("model", train), ("finetune1", …), …"""
        return [("model", self.train)] + [(f"finetune{i + 1}", ft) for i, ft in enumerate(self.finetune)]

    def model_config(self) -> MidasConfig:
        """The preset or config file `model` names, with `model_overrides` applied on top."""
        return MidasConfig.from_dict(_set_dotted(_base_model_config(self.model), self.model_overrides,
                                                 "model_overrides"), "model_overrides")

    def sampled_config(self, cfg: MidasConfig) -> MidasConfig:
        """`cfg` with the recipe's `sampling` settings: the config a saved checkpoint carries."""
        if not self.sampling:
            return cfg
        return MidasConfig.from_dict(_set_dotted(cfg.to_dict(), self.sampling, "sampling"), "sampling")


# the config fields only inference reads, which `sampling` may set on a trained model
SAMPLING_FIELDS = ("head.temperature", "head.steps", "head.guidance", "noise.inference_sigma")


def _set_dotted(cfg: dict, overrides: dict, where: str) -> dict:
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise MidasError(f"{where}: {key}: no such model config field")
            node = node[p]
        if leaf not in node:
            raise MidasError(f"{where}: {key}: no such model config field")
        node[leaf] = value
    return cfg


def _base_model_config(model: str) -> dict:
    if model in PRESETS:
        return preset(model).to_dict()
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise MidasError(f"model: {model}: not a preset ({', '.join(PRESETS)}), a config.json or a checkpoint "
                         "folder with one")
    cfg = MidasConfig.load(path)  # names the file when it is unreadable or a field is wrong
    # A checkpoint's config names its own components by sub-folder (autoencoder/, ...); they are
    # relative to the checkpoint, as load_model reads them, so they must not be read against the
    # current directory by the training run.
    for part in (cfg.autoencoder, cfg.audio, cfg.text):
        if part.pretrained and (path.parent / part.pretrained).is_dir():
            part.pretrained = str(path.parent / part.pretrained)
    return cfg.to_dict()


def _warn_eval_on_real_data(recipe: TrainRecipe, path: Path) -> None:
    if recipe.eval is None or recipe.data.synth is not None or os.environ.get("RANK", "0") != "0":
        return
    from midas_cli.console import console_err

    console_err.print(f"{path}: warning: eval is on but the data is not synthetic (no data.synth): its synthetic "
                      "judges say little about a model of real footage", highlight=False, soft_wrap=True)


def _shipped_recipes_dir() -> Path:
    return Path(str(resources.files("midas_cli"))) / "recipes"


def shipped_recipe(name: str) -> Path | None:
    """`demo` → the recipe shipped inside the package (so an installed wheel finds it)."""
    path = _shipped_recipes_dir() / f"{name}.yaml"
    return path if path.exists() else None


def shipped_training_recipes() -> list[str]:
    """Names of the shipped training recipes (those naming a `model`; the judge and batch recipes
    are other kinds), `demo` first: help texts and tests list them from here, not by hand."""
    names = [p.stem for p in _shipped_recipes_dir().glob("*.yaml")
             if "model" in (yaml.safe_load(p.read_text()) or {})]
    return sorted(names, key=lambda n: (n != "demo", n))


def load_recipe(path_or_name: str | Path, overrides: list[str] = ()) -> TrainRecipe:
    path = Path(path_or_name)
    if not path.exists():
        shipped = shipped_recipe(str(path_or_name))
        if shipped is None:
            raise MidasError(f"{path_or_name}: no such recipe file")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MidasError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise MidasError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if isinstance(node, list):  # finetune.0.steps=…: a phase by its index
                if not p.isdigit() or int(p) >= len(node):
                    raise MidasError(f"override {key}: {p} is not an index of that list (0..{len(node) - 1})")
                node = node[int(p)]
            else:
                node = node.setdefault(p, {})
            if not isinstance(node, (dict, list)):
                raise MidasError(f"override {key}: {p} is not a section")
        if isinstance(node, list):
            raise MidasError(f"override {key}: give a field of one list item, e.g. {key}.0.steps=…")
        node[leaf] = value
    recipe = dataclass_from_dict(TrainRecipe, data, str(path))
    if recipe.data.workers < 0 or recipe.data.shard_mb <= 0:
        raise MidasError(f"{path}: data.workers must be >= 0 and data.shard_mb > 0")
    model_cfg = recipe.model_config()  # fail now, with the field's name, if an override is wrong
    text_in_head = model_cfg.text_in_head
    for key in recipe.sampling:
        if key not in SAMPLING_FIELDS:
            raise MidasError(f"{path}: sampling: {key}: not an inference setting (sampling takes "
                             f"{', '.join(SAMPLING_FIELDS)}; the rest belongs in model_overrides)")
    recipe.sampled_config(model_cfg)  # and a bad value here
    _warn_eval_on_real_data(recipe, path)
    dec = recipe.decoder
    if dec.steps < 0 or dec.batch_size < 1 or dec.lr <= 0 or min(dec.latent_noise, dec.edge_weight,
                                                                   dec.mouth_weight) < 0:
        raise MidasError(f"{path}: decoder: steps must be >= 0, batch_size >= 1, lr > 0, latent_noise, "
                         "edge_weight and mouth_weight >= 0")
    if not 0 <= dec.rollout_share <= 1:
        raise MidasError(f"{path}: decoder.rollout_share: {dec.rollout_share} must be in [0, 1]")
    if recipe.base and not recipe.autoencoder.from_base and not recipe.autoencoder.init_from \
            and recipe.autoencoder.steps == 0:
        raise MidasError(f"{path}: autoencoder.from_base: false leaves the autoencoder untrained: give it steps "
                         "(or an init_from)")
    if min(recipe.autoencoder.edge_weight, recipe.autoencoder.mouth_weight) < 0:
        raise MidasError(f"{path}: autoencoder: edge_weight and mouth_weight must be >= 0")
    recipe.finetune = [dataclass_from_dict(ModelTraining, ft, f"{path}: finetune[{i}]")
                       for i, ft in enumerate(recipe.finetune)]
    for i, (_, tr) in enumerate(recipe.phases()):
        where = "train" if i == 0 else f"finetune[{i - 1}]"
        if not 0.0 <= tr.rollout <= 1.0:
            raise MidasError(f"{path}: {where}.rollout: a share from 0 to 1, got {tr.rollout}")
        if tr.rollout_passes < 1:
            raise MidasError(f"{path}: {where}.rollout_passes: must be at least 1, got {tr.rollout_passes}")
        if tr.rollout_shift <= 0:
            raise MidasError(f"{path}: {where}.rollout_shift: must be > 0, got {tr.rollout_shift}")
        if tr.head_repeats < 1:
            raise MidasError(f"{path}: {where}.head_repeats: must be at least 1, got {tr.head_repeats}")
        if tr.parallel not in ("ddp", "fsdp"):
            raise MidasError(f"{path}: {where}.parallel: ddp or fsdp, got {tr.parallel!r}")
        if i > 0 and (tr.parallel, tr.activation_checkpointing) != (recipe.train.parallel,
                                                                     recipe.train.activation_checkpointing):
            raise MidasError(f"{path}: {where}: parallel and activation_checkpointing are the run's "
                             "(FSDP shards the model once): leave them as in train")
        if tr.grad_accum < 1:
            raise MidasError(f"{path}: {where}.grad_accum: must be at least 1, got {tr.grad_accum}")
        if not 0 <= tr.sequence_noise <= 1:
            raise MidasError(f"{path}: {where}.sequence_noise: must be in [0, 1], got {tr.sequence_noise}")
        if not 0 <= tr.head_text_dropout < 1:
            raise MidasError(f"{path}: {where}.head_text_dropout: must be in [0, 1), got {tr.head_text_dropout}")
        if tr.head_text_dropout and not text_in_head:
            raise MidasError(f"{path}: {where}.head_text_dropout: needs a model with text_in_head: true "
                             "(model_overrides); without it the head has no text to leave out")
        if not 0 <= tr.foreign_context <= 1:
            raise MidasError(f"{path}: {where}.foreign_context: must be in [0, 1], got {tr.foreign_context}")
        if tr.change_weight < 0:
            raise MidasError(f"{path}: {where}.change_weight: must be >= 0, got {tr.change_weight}")
        if tr.mouth_weight < 0:
            raise MidasError(f"{path}: {where}.mouth_weight: must be >= 0, got {tr.mouth_weight}")
        if tr.listening_weight < 0:
            raise MidasError(f"{path}: {where}.listening_weight: must be >= 0, got {tr.listening_weight}")
        if tr.listening_weight and model_cfg.audio.kind != "logmel":
            raise MidasError(f"{path}: {where}.listening_weight: finds listening frames by the log-mel "
                             f"features' loudness; this model's audio features are {model_cfg.audio.kind!r}")
    return recipe


def recipe_to_dict(recipe: TrainRecipe) -> dict:
    return asdict(recipe)
