"""Dataclass configs for the whole MIDAS model, and the size presets (`tiny`, `demo`, `paper`).

A `MidasConfig` is the complete description of a model: it is written to a checkpoint's
`config.json` and read back with `MidasConfig.from_dict`, which fails with the dotted name of
the field when a value is wrong (recipes are validated the same way).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midas_cli.errors import MidasError

FPS = 12.5  # latent/video frames per second: 6 frames per 480 ms chunk
SAMPLE_RATE = 16000


@dataclass
class AutoencoderConfig:
    """The deep-compression autoencoder (diffusers `AutoencoderDC`)."""

    pretrained: str | None = None  # diffusers-format DC-AE folder, Hub id, or a checkpoint sub-folder name
    architecture: dict = field(default_factory=dict)  # AutoencoderDC kwargs: builds it from scratch / on meta
    height: int = 64  # frame size in pixels; multiples of the spatial compression ratio
    width: int = 64
    # A token is a patch_size × patch_size square of latent pixels (as DiT patchifies): a shallow,
    # quick-to-train f16 autoencoder with patch 2 gives the backbone as few tokens as an f32 one.
    patch_size: int = 1


@dataclass
class AudioConfig:
    """Audio features, pooled to one vector per video frame using audio up to that frame's end."""

    kind: str = "logmel"  # "logmel" (librosa, no weights) or "whisper" (transformers Whisper encoder)
    n_mels: int = 40  # logmel: mel bands; a frame's feature is its 8 mel columns (10 ms hop) stacked
    pretrained: str | None = None  # whisper: folder, Hub id or checkpoint sub-folder name
    architecture: dict = field(default_factory=dict)  # whisper: WhisperConfig kwargs (random init / meta)
    duplex: bool = True  # a second stream: the interlocutor, so the avatar can listen


@dataclass
class TextConfig:
    """Text prompts: one pooled vector per chunk, from the prompt active at the chunk's start."""

    kind: str = "learned"  # "learned" (word embedding, tokenizer saved in the checkpoint) or "t5"
    dim: int = 32  # learned: embedding width
    vocab_size: int = 512  # learned: maximum vocabulary (word-level)
    pretrained: str | None = None  # t5: folder, Hub id or checkpoint sub-folder name
    architecture: dict = field(default_factory=dict)  # t5: T5Config kwargs (random init / meta)


@dataclass
class BackboneConfig:
    """Qwen2 decoder fed with `inputs_embeds` (no token vocabulary of its own)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention
    intermediate_size: int = 256
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    attn_implementation: str = "sdpa"  # "sdpa" or "eager"; both get the same additive float mask
    pretrained: str | None = None  # Qwen2/Qwen2.5 weights to start from (dims must match); used at init only


@dataclass
class HeadConfig:
    """The flow-matching diffusion head that renders one frame's tokens."""

    kind: str = "transformer"  # "transformer" (DiT-style, adaLN-Zero) or "mlp" (MAR-style per-token)
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    steps: int = 4  # Euler steps at inference
    time_shift: float = 1.0  # >1 spends more steps at high noise (SD3-style shift); 1 = uniform
    # Classifier-free guidance scale on the head's text input (`MidasConfig.text_in_head`) at
    # inference: velocity v_u + s·(v_c − v_u); 1 is no guidance (one head pass, not two).
    guidance: float = 1.0
    # Scale of the head's starting noise at inference (MAR's sampling temperature): below 1 the
    # Euler path starts nearer the mean, trading the spread of samples for fidelity; 0 makes the
    # head deterministic. Training never sees it, so it can be changed on a finished checkpoint.
    temperature: float = 1.0


@dataclass
class NoiseConfig:
    """Noise injection on context latents against exposure bias (GameNGen's recipe)."""

    num_buckets: int = 20  # discrete levels, linspace(0, sigma_max, num_buckets); bucket 0 is clean
    sigma_max: float = 0.5  # 0 switches noise injection off in training
    inference_sigma: float = 0.1  # level given to generated context frames at inference


@dataclass
class MidasConfig:
    """The whole model. Token layout per chunk: [audio F][listen F][pose F][text 1] then F frames of N."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    frames_per_chunk: int = 6  # 480 ms at 12.5 fps
    window_chunks: int = 3  # chunks kept in the KV cache besides the current one (and the reference)
    pose_dim: int = 12  # pose features per frame: 6 velocities + 6 absolute values
    # Also add frame t's own audio / listen / pose features to slot t's input. The condition
    # tokens alone leave the slot to find its frame's token among the chunk's F by position.
    frame_conditions: bool = False
    # Also add the reference frame's token at each position to every frame slot's input: the
    # identity then reaches a slot as directly as its context frame does, so a noisy or drifting
    # context can be ignored without first learning to find the reference by attention.
    reference_in_slots: bool = False
    # Also add the chunk's text vector to every frame slot's input (needs `frame_conditions`):
    # the prompt then reaches each slot as directly as its audio and pose do, instead of as one
    # token per chunk that the slot must find by attention over a context it can copy.
    text_in_slots: bool = False
    # Also add the chunk's text vector to the diffusion head's condition at every token (a
    # zero-initialised linear): the prompt then reaches the renderer itself, and a head trained
    # with that input sometimes dropped (`train.head_text_dropout`) can be guided on it.
    text_in_head: bool = False

    # ---- derived numbers -------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return FPS

    @property
    def spatial_compression(self) -> int:
        """Pixels per token side: the autoencoder's downsampling times the token patch size."""
        stages = len(self.autoencoder.architecture.get("encoder_block_out_channels", (0,)))
        return 2 ** (stages - 1) * self.autoencoder.patch_size

    @property
    def latent_grid(self) -> tuple[int, int]:
        r = self.spatial_compression
        return self.autoencoder.height // r, self.autoencoder.width // r

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_grid
        return h * w

    @property
    def latent_channels(self) -> int:
        """Channels of one frame token (latent channels × patch area)."""
        return int(self.autoencoder.architecture.get("latent_channels", 32)) * self.autoencoder.patch_size ** 2

    @property
    def cond_tokens_per_chunk(self) -> int:
        f = self.frames_per_chunk
        return f * (2 if self.audio.duplex else 1) + f + 1

    @property
    def tokens_per_chunk(self) -> int:
        return self.cond_tokens_per_chunk + self.frames_per_chunk * self.tokens_per_frame

    # ---- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "MidasConfig":
        cfg = dataclass_from_dict(cls, data, source)
        cfg.validate(source)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "MidasConfig":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise MidasError(f"{path}: cannot read model config ({e})") from None
        except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for a binary file
            raise MidasError(f"{path}: cannot read model config: not valid JSON, the file is corrupt or "
                             f"truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        return cls.from_dict(data, str(path))

    def validate(self, source: str = "config") -> None:
        def bad(name: str, why: str):
            raise MidasError(f"{source}: {name}: {why}")

        if self.autoencoder.patch_size < 1:
            bad("autoencoder.patch_size", "must be at least 1")
        r = self.spatial_compression
        if self.autoencoder.height % r or self.autoencoder.width % r:
            bad("autoencoder.height/width", f"must be multiples of the compression ratio {r}")
        if self.audio.kind not in ("logmel", "whisper"):
            bad("audio.kind", f"must be 'logmel' or 'whisper', not {self.audio.kind!r}")
        if self.text.kind not in ("learned", "t5"):
            bad("text.kind", f"must be 'learned' or 't5', not {self.text.kind!r}")
        if self.head.kind not in ("transformer", "mlp"):
            bad("head.kind", f"must be 'transformer' or 'mlp', not {self.head.kind!r}")
        if self.head.steps < 1:
            bad("head.steps", "must be at least 1")
        if self.backbone.hidden_size % self.backbone.num_heads:
            bad("backbone.hidden_size", "must be divisible by backbone.num_heads")
        if self.backbone.num_heads % self.backbone.num_kv_heads:
            bad("backbone.num_kv_heads", "must divide backbone.num_heads")
        if not 0 <= self.noise.sigma_max <= 5 or self.noise.num_buckets < 1:
            bad("noise", "sigma_max must be in [0, 5] and num_buckets ≥ 1")
        if self.window_chunks < 1:
            bad("window_chunks", "must be at least 1")
        if self.head.guidance < 0 or (self.head.guidance != 1 and not self.text_in_head):
            bad("head.guidance", "must be ≥ 0, and 1 unless text_in_head: true")
        if not 0 <= self.head.temperature <= 10:
            bad("head.temperature", "must be in [0, 10]")
        if self.text_in_slots and not self.frame_conditions:
            bad("text_in_slots", "needs frame_conditions: true")
        longest = self.tokens_per_frame + (self.window_chunks + 1) * self.tokens_per_chunk
        if longest > self.backbone.max_position_embeddings:
            bad("backbone.max_position_embeddings", f"must cover the streaming window ({longest} tokens)")


def dataclass_from_dict(cls, data: Any, path: str = ""):
    """Build a (nested) dataclass from plain data, naming the field on any wrong key or type."""
    if not isinstance(data, dict):
        raise MidasError(f"{path}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MidasError(f"{path}: unknown field {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(hint, value, path):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, path)
    if origin is typing.Literal:  # a fixed word, e.g. a recipe's `eval: auto`
        if value not in typing.get_args(hint):
            raise MidasError(f"{path}: expected one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except MidasError:
                continue
        raise MidasError(f"{path}: expected {' or '.join(map(_describe, args))}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise MidasError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MidasError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MidasError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MidasError(f"{path}: expected a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MidasError(f"{path}: expected a mapping, got {value!r}")
        return value
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise MidasError(f"{path}: expected a list, got {value!r}")
        return value
    return value


def _describe(hint) -> str:
    """A type as a recipe writer reads it: `a section (EvalDuringTraining)`, `'auto'`, `null`."""
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return f"a section ({hint.__name__})"
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


# ---- presets (DiT-style: small functions collected in a dict) -------------------------------


def _dcae_arch(widths, layers, latent_channels, *, efficientvit_from=None, in_mix_norms=False, **extra):
    """AutoencoderDC kwargs for a stack of stages with the given widths."""
    n = len(widths)
    types_ = tuple("EfficientViTBlock" if efficientvit_from is not None and i >= efficientvit_from else "ResBlock"
                   for i in range(n))
    arch = dict(
        in_channels=3, latent_channels=latent_channels, attention_head_dim=32,
        encoder_block_types=types_, decoder_block_types=types_,
        encoder_block_out_channels=tuple(widths), decoder_block_out_channels=tuple(widths),
        encoder_layers_per_block=tuple(layers[0]), decoder_layers_per_block=tuple(layers[1]),
        encoder_qkv_multiscales=((),) * n, decoder_qkv_multiscales=((),) * n,
        downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=1.0,
    )
    arch.update(extra)
    return arch


def tiny() -> MidasConfig:
    """Unit tests: 64×64 frames, 16 tokens of 8 channels, a ~0.6M backbone."""
    return MidasConfig(
        autoencoder=AutoencoderConfig(
            architecture=_dcae_arch((8, 8, 16, 16, 16), ((1, 1, 1, 1, 1), (1, 1, 1, 1, 1)), 8),
            height=64, width=64),
        audio=AudioConfig(kind="logmel", n_mels=16),
        text=TextConfig(kind="learned", dim=16, vocab_size=128),
        backbone=BackboneConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                intermediate_size=128, max_position_embeddings=2048),
        head=HeadConfig(kind="transformer", width=32, depth=2, num_heads=4),
        window_chunks=2,
    )


def demo() -> MidasConfig:
    """Ships in the package: 128×128 frames, 16 tokens of 32 channels, trained on a 2-core CPU.

    Sized for the CPU budget (an hour of training on 2 cores): a 3.2M backbone, a 1M head. The
    autoencoder is f16 with 8 latent channels and 2×2 token patches: the same 16 tokens × 32
    channels as an f32 one, but it learns eyes and lips in far fewer steps. Its stages are
    narrow (1.0M parameters): the decoder runs beside generation on one core, and at the
    earlier 1.9M it set the render's pace; it reconstructs as well after the same steps.
    Each frame slot also gets its own frame's conditions (`frame_conditions`).
    """
    return MidasConfig(
        autoencoder=AutoencoderConfig(
            architecture=_dcae_arch((8, 16, 32, 64, 128), ((0, 1, 1, 1, 1), (0, 1, 1, 1, 1)), 8),
            height=128, width=128, patch_size=2),
        audio=AudioConfig(kind="logmel", n_mels=40),
        text=TextConfig(kind="learned", dim=64, vocab_size=512),
        backbone=BackboneConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                                intermediate_size=768, max_position_embeddings=4096),
        head=HeadConfig(kind="transformer", width=160, depth=2, num_heads=4),
        window_chunks=2,
        frame_conditions=True,
    )


def paper() -> MidasConfig:
    """arXiv 2508.19320 scale: Qwen2.5-3B dims, a ~0.5B DiT head, DC-AE f64c128 at 384×640 (60 tokens)."""
    arch = dict(
        in_channels=3, latent_channels=128, attention_head_dim=32,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 4,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 4,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024, 2048),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024, 2048),
        encoder_layers_per_block=(0, 4, 8, 2, 2, 2, 2), decoder_layers_per_block=(0, 5, 10, 2, 2, 2, 2),
        encoder_qkv_multiscales=((),) * 7, decoder_qkv_multiscales=((),) * 7,
        downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle",
        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 4,
        decoder_act_fns=("relu",) * 3 + ("silu",) * 4, scaling_factor=0.2889,
    )
    return MidasConfig(
        autoencoder=AutoencoderConfig(pretrained="mit-han-lab/dc-ae-f64c128-in-1.0-diffusers",
                                      architecture=arch, height=384, width=640),
        audio=AudioConfig(kind="whisper", pretrained="openai/whisper-small", architecture=dict(
            num_mel_bins=80, d_model=768, encoder_layers=12, encoder_attention_heads=12,
            encoder_ffn_dim=3072, max_source_positions=1500, decoder_layers=1,
            decoder_attention_heads=12, decoder_ffn_dim=3072, vocab_size=51865)),
        text=TextConfig(kind="t5", pretrained="google-t5/t5-base", architecture=dict(
            vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)),
        backbone=BackboneConfig(hidden_size=2048, num_layers=36, num_heads=16, num_kv_heads=2,
                                intermediate_size=11008, rope_theta=1e6, max_position_embeddings=32768,
                                pretrained=None),
        head=HeadConfig(kind="transformer", width=1152, depth=20, num_heads=16),
        window_chunks=8,
    )


PRESETS = {"tiny": tiny, "demo": demo, "paper": paper}


def preset(name: str) -> MidasConfig:
    if name not in PRESETS:
        raise MidasError(f"unknown config {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]()
